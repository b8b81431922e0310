"""The training curve as a PNG, drawn with OpenCV (no plotting dependency)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from s3rt.io.atomic import atomic_write


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def write_curve(history: list[dict], path, *, title: str = "training loss", width: int = 900, height: int = 480) -> None:
    """Loss (raw, faint, and smoothed) over steps on a log axis; validation loss and IoU as
    markers when the history has them."""
    if not history:
        return
    steps = [r["step"] for r in history]
    loss = [max(r["total"], 1e-6) for r in history]
    smooth = _smooth(loss, max(1, len(loss) // 60))
    val = [(r["step"], r["val_loss"], r["val_iou"]) for r in history if "val_loss" in r]
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 70, 40, 50
    pw, ph = width - left - right, height - top - bottom
    ys = [math.log10(v) for v in loss + [max(v, 1e-6) for _, v, _ in val]]
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-3:
        hi = lo + 1
    s_max = max(steps[-1], 1)

    def xy(step, value):
        return (int(left + pw * step / s_max), int(top + ph * (1 - (math.log10(max(value, 1e-6)) - lo) / (hi - lo))))

    def xy_iou(step, iou):
        return (int(left + pw * step / s_max), int(top + ph * (1 - iou)))

    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** k
            if lo <= math.log10(v) <= hi:
                p = xy(0, v)
                cv2.line(img, (left - 4, p[1]), (left + pw, p[1]), (225, 225, 225), 1)
                cv2.putText(img, f"{v:g}", (5, p[1] + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(6):
        s = int(s_max * i / 5)
        x = xy(s, 1)[0]
        cv2.putText(img, str(s), (x - 12, top + ph + 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    pts = np.array([xy(s, v) for s, v in zip(steps, loss)], np.int32)
    cv2.polylines(img, [pts], False, (235, 200, 170), 1, cv2.LINE_AA)
    pts = np.array([xy(s, v) for s, v in zip(steps, smooth)], np.int32)
    cv2.polylines(img, [pts], False, (180, 90, 20), 2, cv2.LINE_AA)
    if val:
        vp = np.array([xy(s, v) for s, v, _ in val], np.int32)
        cv2.polylines(img, [vp], False, (40, 40, 200), 1, cv2.LINE_AA)
        for p in vp:
            cv2.circle(img, tuple(int(c) for c in p), 3, (40, 40, 200), -1, cv2.LINE_AA)
        ip = np.array([xy_iou(s, iou) for s, _, iou in val], np.int32)
        cv2.polylines(img, [ip], False, (40, 150, 40), 1, cv2.LINE_AA)
        for p in ip:
            cv2.drawMarker(img, tuple(int(c) for c in p), (40, 150, 40), cv2.MARKER_SQUARE, 6, 1)
        for i in range(0, 11, 2):
            y = xy_iou(0, i / 10)[1]
            cv2.putText(img, f"{i / 10:.1f}", (left + pw + 8, y + 4), font, 0.4, (40, 150, 40), 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 25), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "step", (left + pw // 2 - 15, height - 10), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    legend = [((180, 90, 20), "train loss (smoothed; log)"), ((40, 40, 200), "val loss (log)"),
              ((40, 150, 40), "val IoU (right axis)")]
    for i, (c, text) in enumerate(legend):
        y = top + 16 + 16 * i
        cv2.line(img, (left + pw - 210, y - 4), (left + pw - 190, y - 4), c, 2)
        cv2.putText(img, text, (left + pw - 185, y), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    with atomic_write(path) as tmp:
        cv2.imwrite(str(tmp), img)
