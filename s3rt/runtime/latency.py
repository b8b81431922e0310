"""Latency summaries: one helper for `s3rt run`, parity reports and the benchmarks.

`summarize(frame_seconds, graph_seconds)` turns per-frame wall times and the tracker's per-graph
timings (`TrackResult.timings` with profile=True) into p50 / p90 / p99 / mean in milliseconds.
"""

from __future__ import annotations

import numpy as np

from s3rt.graphs import GRAPHS


def latency_stats(values_ms) -> dict:
    """p50, p90, p99, mean and count of a list of milliseconds (None values when empty)."""
    v = np.asarray(list(values_ms), dtype=np.float64)
    if v.size == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "count": 0}
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(v.mean()), "count": int(v.size)}


def summarize(frame_seconds, graph_seconds=(), skip: int = 1) -> dict:
    """Per-frame and per-graph latency in ms after `skip` warm-up frames (all frames if that
    leaves none). graph_seconds: one {graph: seconds} dict per frame."""
    frames = list(frame_seconds)
    per_graph = list(graph_seconds)
    if len(frames) > skip:
        frames, per_graph = frames[skip:], per_graph[skip:]
    out = {"frame_ms": latency_stats(t * 1e3 for t in frames), "graphs_ms": {}}
    p50 = out["frame_ms"]["p50"]
    out["fps"] = 1e3 / p50 if p50 else None
    for g in GRAPHS:
        calls = [t[g] * 1e3 for t in per_graph if g in t]
        if calls:
            out["graphs_ms"][g] = latency_stats(calls)
    return out


def format_summary(summary: dict) -> str:
    """A few lines for a terminal: per frame, then per graph."""
    f = summary["frame_ms"]
    if not f["count"]:
        return "no frames timed"
    lines = [f"per frame: p50 {f['p50']:.1f} ms, p90 {f['p90']:.1f} ms, p99 {f['p99']:.1f} ms, mean {f['mean']:.1f} ms "
             f"({1000 / f['mean']:.2f} fps) over {f['count']} frames"]
    for g, s in summary["graphs_ms"].items():
        lines.append(f"  {g:<12} p50 {s['p50']:8.1f} ms  p99 {s['p99']:8.1f} ms  ({s['count']} frames)")
    return "\n".join(lines)
