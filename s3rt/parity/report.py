"""Parity reports as text tables."""

from __future__ import annotations

import math

from s3rt.graphs import GRAPHS
from s3rt.runtime.latency import latency_stats


def _e(x) -> str:
    return "inf" if x is None or (isinstance(x, float) and math.isinf(x)) else f"{x:.2e}"


def _ms(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _table(header, rows) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _criteria(report: dict) -> str:
    c = report.get("criteria")
    if not c:
        return f"tolerance {report['tolerance']:.0e}"
    text = (f"{report['precision'].upper()} criteria: graph rel L2 <= {c['graph_rel_l2']:.0e}, mean mask IoU vs the "
            f"FP32 reference >= {c['mean_mask_iou']}")
    return text + (f", J&F drop <= {c['jf_drop']} points (with ground truth)" if c.get("jf_drop") is not None else "")


def format_report(report: dict) -> str:
    s = report["stream"]
    lines = [f"parity: {report['backend_description']}",
             f"   vs   {report['reference']}",
             f"{report['preset']} ({report['checkpoint']}), frames {report['frame_size'][0]}x{report['frame_size'][1]} "
             f"padded to {report['padded_size'][0]}x{report['padded_size'][1]}, {s['frames']} frames, objects "
             f"{report['objects']}, {_criteria(report)}", ""]
    rows = []
    for name, g in report["graphs"].items():
        for i, (out, v) in enumerate(g["outputs"].items()):
            label = f"sigmoid({out})" if v.get("compared_as") == "sigmoid" else out
            rows.append([name if i == 0 else "", report.get("precisions", {}).get(name, "") if i == 0 else "",
                         g["calls"] if i == 0 else "", label, _e(v["max_abs"]), _e(v["mean_abs"]), _e(v["max_rel"]),
                         _e(v.get("rel_l2")), "ok" if v["pass"] else "FAIL"])
    rule = f"|Δ| <= {report['graph_tolerance']:.0e} + {report['graph_tolerance']:.0e} * |ref|"
    if report.get("criteria"):
        rule = f"reduced-precision graphs: rel L2 <= {report['criteria']['graph_rel_l2']:.0e}; FP32 graphs: {rule}"
    lines.append(f"per graph, on inputs recorded from the first {report['capture_frames']} frames ({rule}; max rel = "
                 "max |Δ| / max |ref|, rel L2 = ||Δ|| / ||ref||):")
    lines.append(_table(["graph", "precision", "calls", "output", "max |Δ|", "mean |Δ|", "max rel", "rel L2", ""],
                        rows))
    if any(v.get("compared_as") == "sigmoid" for g in report["graphs"].values() for v in g["outputs"].values()):
        lines.append("(sigmoid(logits): the logits of certain pixels are log-odds of probabilities clamped at 1e-7, "
                     "where FP32 rounding moves them by whole units; the tracker uses prob)")
    lines += ["", f"per stream ({s['frames']} frames):",
              _table(["", "value"], [
                  ["max |Δ prob|", f"{_e(s['max_abs_prob'])} (frame {s['worst_frame']})"],
                  ["mean |Δ prob|", _e(s["mean_abs_prob"])],
                  ["mask IoU between backends (min / mean)", f"{s['min_mask_iou']:.4f} / {s['mean_mask_iou']:.4f}"],
              ])]
    if report.get("jf"):
        lines += ["", _table(["J&F vs ground truth", "J&F", "J", "F"],
                             [[k, f"{v['J&F']:.3f}", f"{v['J']:.3f}", f"{v['F']:.3f}"]
                              for k, v in report["jf"].items()])]
    if report.get("jf_vs_reference"):
        v = report["jf_vs_reference"]
        lines.append(f"J&F of {report['backend']}'s masks against the FP32 reference's: {v['J&F']:.3f} "
                     f"(J {v['J']:.3f}, F {v['F']:.3f})")
    notes = [f"graph {name}: the reference alone moves by {g['reference_jitter']:.1e} when its inputs move by 1e-6 "
             f"relative ({'a discontinuity of the model' if g['explained'] else 'smooth: suspect the export'})"
             for name, g in report["graphs"].items() if "reference_jitter" in g]
    notes += [f"frame {dg['frame']}: {dg['verdict']}" for dg in s.get("diagnoses", [])]
    if notes:
        lines += [""] + notes
    lines.append("")
    lines.append("result: PASS" if report["passed"] else "result: FAIL\n  " + "\n  ".join(report["failures"]))
    if not report["passed"] and report.get("explained"):
        lines.append("  (every failure is explained by the reference's own discontinuity: hard thresholds near ties, "
                     "amplifying FP32 rounding; not an export error)")
    return "\n".join(lines)


def format_speed(speed: dict, title: str = "") -> str:
    """Per-frame and per-graph latency (ms, p50 / p99) for each backend, and the ratio
    (speed: {backend: s3rt.runtime.latency.summarize(...)})."""
    names = list(speed)
    header = ["graph"] + [f"{n} p50" for n in names] + [f"{n} p99" for n in names]
    rows = []
    empty = latency_stats([])
    for st in ("frame",) + tuple(GRAPHS):
        vals = [speed[n]["frame_ms"] if st == "frame" else speed[n]["graphs_ms"].get(st, empty) for n in names]
        if all(v["count"] == 0 for v in vals):
            continue
        rows.append([st] + [_ms(v["p50"]) for v in vals] + [_ms(v["p99"]) for v in vals])
    rows.append(["fps (p50)"] + [f"{speed[n]['fps']:.1f}" if speed[n]["fps"] else "-" for n in names]
                + [""] * len(names))
    out = (title + "\n" if title else "") + _table(header, rows)
    if len(names) == 2 and speed[names[0]]["frame_ms"]["p50"] and speed[names[1]]["frame_ms"]["p50"]:
        r = speed[names[0]]["frame_ms"]["p50"] / speed[names[1]]["frame_ms"]["p50"]
        out += f"\n{names[1]} is {r:.2f}x the speed of {names[0]} per frame (p50)"
    return out
