"""Comparing a backend with the reference: tensors, masks, graphs on recorded inputs, and the
diagnosis of a frame beyond tolerance (an export error, or the model's own discontinuity)."""

from __future__ import annotations

import math

import numpy as np
import torch

from s3rt.graphs import GRAPHS
from s3rt.runtime.backends import Backend


# Outputs compared through a sigmoid: the decoder's `logits` are log-odds of probabilities clamped
# to [1e-7, 1 - 1e-7], so where an object is certain a 1e-7 change of its probability in FP32 moves
# its logit by whole units; in probability space the same change is 1e-7. The tracker uses `prob`.
SIGMOID_OUTPUTS = frozenset({"logits"})


def comparable(name: str, t: torch.Tensor) -> torch.Tensor:
    """An output as parity compares it (see SIGMOID_OUTPUTS)."""
    return torch.sigmoid(t.float()) if name in SIGMOID_OUTPUTS else t


def compare(ref: torch.Tensor, got: torch.Tensor, atol: float, rtol: float) -> dict:
    ref, got = ref.detach().float().cpu(), got.detach().float().cpu()
    if ref.shape != got.shape:
        return {"shape_ref": list(ref.shape), "shape_got": list(got.shape), "max_abs": math.inf,
                "mean_abs": math.inf, "max_rel": math.inf, "rel_l2": math.inf, "pass": False}
    if ref.numel() == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "max_rel": 0.0, "rel_l2": 0.0, "pass": True}
    d = (ref - got).abs()
    finite = bool(torch.isfinite(got).all())
    max_abs = float(d.max()) if finite else math.inf
    scale = float(ref.abs().max())
    norm = float(ref.norm())
    l2 = float(d.norm()) if finite else math.inf
    return {"max_abs": max_abs, "mean_abs": float(d.mean()) if finite else math.inf,
            "max_rel": max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf),
            "rel_l2": l2 / norm if norm > 0 else (0.0 if l2 == 0 else math.inf),
            "pass": finite and bool((d <= atol + rtol * ref.abs()).all())}


def mask_iou(a: np.ndarray, b: np.ndarray, ids) -> float:
    """Mean IoU over object ids between two id masks (an object absent from both counts 1)."""
    vals = []
    for i in ids:
        x, y = a == i, b == i
        union = np.logical_or(x, y).sum()
        vals.append(1.0 if union == 0 else float(np.logical_and(x, y).sum() / union))
    return float(np.mean(vals)) if vals else 1.0


def compare_graphs(records, other: Backend, tol: float, reference: Backend | None = None,
                   rel_l2: dict[str, float] | None = None) -> dict:
    """Run `other` on recorded (graph, inputs, reference outputs) and compare every output. With
    `reference`, a graph beyond tolerance is also checked for the reference's own sensitivity on
    its worst call (`reference_jitter`): `explained` says whether the reference itself moves as
    much when its inputs move by 1e-6 relative (a hard threshold near a tie, not an export error).

    rel_l2: graphs judged by their error relative to the output's scale (||Δ|| / ||ref|| per
    call, at most this) instead of atol = rtol = tol: the reduced-precision graphs, whose rounding
    is relative to their values by design."""
    rel_l2 = rel_l2 or {}
    graphs: dict[str, dict] = {}
    worst_call: dict[str, tuple[float, dict]] = {}
    for graph, inputs, ref_out in records:
        got = other.run(graph, inputs)
        g = graphs.setdefault(graph, {"calls": 0, "outputs": {}})
        g["calls"] += 1
        for name, ref in ref_out.items():
            c = compare(comparable(name, ref), comparable(name, got[name]), tol, tol)
            if graph in rel_l2:
                c["pass"] = c["rel_l2"] <= rel_l2[graph]  # (inf, hence False, when not finite)
            o = g["outputs"].setdefault(name, {"max_abs": 0.0, "mean_abs": 0.0, "max_rel": 0.0, "rel_l2": 0.0,
                                               "pass": True})
            if name in SIGMOID_OUTPUTS:
                o["compared_as"] = "sigmoid"
            for key in ("max_abs", "mean_abs", "max_rel", "rel_l2"):
                o[key] = max(o[key], c[key])
            o["pass"] = o["pass"] and c["pass"]
            if not c["pass"] and c["max_abs"] > worst_call.get(graph, (-1.0, None))[0]:
                worst_call[graph] = (c["max_abs"], inputs)
    for name, g in graphs.items():
        g["max_abs"] = max(o["max_abs"] for o in g["outputs"].values())
        g["max_rel"] = max(o["max_rel"] for o in g["outputs"].values())
        g["rel_l2"] = max(o["rel_l2"] for o in g["outputs"].values())
        g["pass"] = all(o["pass"] for o in g["outputs"].values())
        if name in rel_l2:
            g["rel_l2_limit"] = rel_l2[name]
        if not g["pass"] and reference is not None and name in worst_call and name not in rel_l2:
            g["reference_jitter"] = reference_jitter(reference, name, worst_call[name][1])
            g["explained"] = g["reference_jitter"] >= 0.5 * worst_call[name][0]
    return {k: graphs[k] for k in GRAPHS if k in graphs}


def reference_jitter(reference: Backend, graph: str, inputs: dict, trials: int = 3, rel: float = 1e-6,
                     seed: int = 0) -> float:
    """How much the reference's own outputs move when its float inputs move by `rel` (relative
    to each input's largest magnitude): large where the graph holds a hard threshold near a tie."""
    g = torch.Generator().manual_seed(seed)
    base = reference.run(graph, inputs)
    worst = 0.0
    for _ in range(trials):
        noisy = {}
        for k, v in inputs.items():
            if v.is_floating_point():
                scale = float(v.abs().max()) if v.numel() else 0.0
                noisy[k] = v + rel * scale * torch.randn(v.shape, generator=g, dtype=v.dtype).to(v.device)
            else:
                noisy[k] = v
        out = reference.run(graph, noisy)
        worst = max(worst, max(float((comparable(k, base[k]) - comparable(k, out[k])).abs().max()) for k in base))
    return worst


def diagnose_frame(frame, records, other: Backend, tol: float, reference: Backend | None = None,
                   rel_l2: dict[str, float] | None = None) -> dict:
    """A frame beyond tolerance: do the graphs agree on that frame's own inputs? And where one
    does not, is the reference itself that sensitive there (a hard threshold near a tie)?"""
    graphs = compare_graphs(records, other, tol, reference, rel_l2)
    out = {"frame": frame, "graphs": {k: {key: g[key] for key in ("max_abs", "max_rel", "rel_l2", "pass",
                                                                   "reference_jitter",
                                                                   "explained") if key in g}
                                      for k, g in graphs.items()}}
    bad = [k for k, g in graphs.items() if not g["pass"]]
    if not graphs:
        out["verdict"], out["model_sensitivity"] = "no graph ran on this frame", False
    elif not bad:
        worst = max(graphs.items(), key=lambda kv: kv[1]["max_rel"])
        out["verdict"] = (f"on this frame's own inputs every graph agrees (worst: {worst[0]}, max |Δ| "
                          f"{worst[1]['max_abs']:.1e}): the difference comes from the recurrent state, where tiny "
                          "earlier differences flipped a hard decision on this frame")
        out["model_sensitivity"] = True
    else:
        notes = [f"{k} (max |Δ| {graphs[k]['max_abs']:.1e}"
                 + (f"; the reference alone moves by {graphs[k]['reference_jitter']:.1e} when its inputs move by "
                    "1e-6 relative)" if "reference_jitter" in graphs[k] else ")") for k in bad]
        out["model_sensitivity"] = all(graphs[k].get("explained", False) for k in bad)
        if out["model_sensitivity"]:
            out["verdict"] = ("on this frame's own inputs " + ", ".join(notes) + ": the reference is discontinuous "
                              "here (a hard threshold near a tie: top-k membership, the object transformer's "
                              "foreground mask or S3's argmax query), so this is rounding amplified by the model, "
                              "not an export error")
        else:
            out["verdict"] = ("on this frame's own inputs these graphs disagree while the reference is smooth there: "
                              + ", ".join(notes) + " (an export or runtime error: inspect that graph)")
    return out
