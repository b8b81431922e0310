"""s3rt against the official Cutie code, side by side in one process, on one real clip.

The official code is not part of s3rt and is not downloaded: point --official-root (or
$OFFICIAL_CUTIE_ROOT) at a checkout of hkchengrex/Cutie, the folder that holds the `cutie`
package (cutie/model/cutie.py, cutie/inference/inference_core.py, cutie/config/...); it needs
`omegaconf` (pip install omegaconf). Nothing of it is copied into s3rt.

What runs, with the SAME weights (cutie-base, random, seed 0, loaded key for key into the official
CUTIE with strict=True), the same frames and Cutie's DAVIS settings (d17-val: mem_every 5,
max_mem_frames 5, top_k 30, stagger_updates 5, no long-term memory unless --long-term, chunk_size -1,
no flip, no resizing inside the tracker):
- official `InferenceCore.step` per frame (FP32, eager PyTorch);
- `s3rt.Tracker(model, backend="torch")` per frame (the default of `s3rt run` on a CPU);
- `s3rt.Tracker(backend="onnxruntime", graphs=--export)` per frame when --export is given (an FP32
  graph set from `s3rt export` made from the same weights, e.g.
  `s3rt export --preset cutie-base --size 480x864 --max-objects 2 --out DIR`).
The paths alternate, --repeats passes each; per path the pass with the lowest p50 is kept. Per
frame and per stage (encoder, readout, fusion, decoder, mask_encoder; the official code's stages
timed by wrapping its own methods) p50 / p90, memory frames apart from the others, and the
outputs compared frame by frame with the official ones (max |delta prob|, argmax agreement).
Then the ResNet-50 trunk alone (pixel encoder, same input), alternating.

    python benchmarks/bench_vs_official.py --official-root /path/to/Cutie \\
        --clip DAVIS/blackswan --frames 50 --repeats 2 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import shlex
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

STAGES = ("encoder", "readout", "fusion", "decoder", "mask_encoder")


# ---------------------------------------------------------------------------- inputs
def find_clip(clip: Path) -> tuple[list[Path], Path]:
    """Frames and first-frame annotation of a DAVIS-format clip: CLIP/JPEGImages[/480p/<name>]/*.jpg and
    CLIP/Annotations[/480p/<name>]/*.png, or a DAVIS root with JPEGImages/480p/<name> given as CLIP/<name>."""
    candidates = [(clip / "JPEGImages", clip / "Annotations"),
                  (clip / "JPEGImages" / "480p" / clip.name, clip / "Annotations" / "480p" / clip.name),
                  (clip.parent.parent / "JPEGImages" / "480p" / clip.name,
                   clip.parent.parent / "Annotations" / "480p" / clip.name)]
    for img_dir, ann_dir in candidates:
        frames = sorted(p for p in img_dir.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) \
            if img_dir.is_dir() else []
        if frames:
            ann = ann_dir / (frames[0].stem + ".png")
            if not ann.is_file():
                raise SystemExit(f"bench_vs_official: no first-frame annotation {ann}")
            return frames, ann
    raise SystemExit(f"bench_vs_official: {clip} is not a DAVIS-format clip (JPEGImages/ + Annotations/)")


def read_mask(path: Path) -> np.ndarray:
    img = Image.open(path)
    m = np.array(img)
    if img.mode != "P" and m.ndim == 2 and set(np.unique(m).tolist()) <= {0, 255}:
        m = (m > 0).astype(np.uint8)  # DAVIS-2016 0/255 masks: one object
    if m.ndim == 3:
        raise SystemExit(f"bench_vs_official: {path} is not an id mask")
    return m.astype(np.uint8)


# ---------------------------------------------------------------------------- the official code
def load_official(root: str | None):
    hint = ("get the official code (the GitHub repository hkchengrex/Cutie: clone it, or copy its `cutie` package) "
            "and pass --official-root DIR, DIR being the folder that holds `cutie/`, or set OFFICIAL_CUTIE_ROOT; "
            "it needs `pip install omegaconf`")
    if not root:
        raise SystemExit(f"bench_vs_official: no official Cutie code given: {hint}")
    root_p = Path(root).expanduser().resolve()
    if not (root_p / "cutie" / "inference" / "inference_core.py").is_file():
        raise SystemExit(f"bench_vs_official: {root_p} holds no cutie/inference/inference_core.py: {hint}")
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        raise SystemExit(f"bench_vs_official: the official code needs omegaconf: {hint}") from None
    sys.path.insert(0, str(root_p))
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"cutie\.")  # its torch.cuda.amp.autocast
    from cutie.model.utils import resnet as official_resnet

    # CUTIE's constructor loads ImageNet weights from the network; they are overwritten by ours anyway.
    official_resnet.load_weights_add_extra_dim = lambda *a, **k: None
    official_resnet.model_zoo = type("NoDownload", (), {"load_url": staticmethod(lambda *a, **k: None)})
    from cutie.inference.inference_core import InferenceCore
    from cutie.inference.memory_manager import MemoryManager
    from cutie.model.cutie import CUTIE
    return root_p, CUTIE, InferenceCore, MemoryManager


def official_config(root: Path, *, long_term: bool):
    """Cutie's eval config (eval_config.yaml + model/base.yaml = cutie-base) with DAVIS-2017 val's settings."""
    from omegaconf import OmegaConf

    cfg_dir = root / "cutie" / "config"
    base = OmegaConf.load(cfg_dir / "eval_config.yaml")
    base = OmegaConf.masked_copy(base, [k for k in base if k not in ("defaults", "hydra", "datasets")])
    cfg = OmegaConf.merge(base, {"model": OmegaConf.load(cfg_dir / "model" / "base.yaml")})
    # d17-val: size 480, use_long_term False, mem_every 5 (the dataset entry overrides the nulls)
    cfg.use_long_term = bool(long_term)
    cfg.mem_every = 5
    cfg.size = 480
    OmegaConf.resolve(cfg)
    return cfg


class StageClock:
    """Per-stage seconds of the current frame, from wrappers around the official methods."""

    def __init__(self):
        self.frame = defaultdict(float)
        self.inner = 0.0  # fusion time spent inside MemoryManager.read (subtracted from readout)

    def wrap(self, fn, stage, inside_read=False):
        @functools.wraps(fn)
        def timed(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            dt = time.perf_counter() - t0
            self.frame[stage] += dt
            if inside_read:
                self.inner += dt
            return out
        return timed

    def instrument(self, network, memory_manager_cls):
        for name, stage in (("encode_image", "encoder"), ("transform_key", "encoder"), ("segment", "decoder"),
                            ("encode_mask", "mask_encoder")):
            setattr(network, name, self.wrap(getattr(network, name), stage))
        for name in ("pixel_fusion", "readout_query"):
            setattr(network, name, self.wrap(getattr(network, name), "fusion", inside_read=True))
        read = memory_manager_cls.read
        clock = self

        def timed_read(self_mm, *a, **k):
            inner0 = clock.inner
            t0 = time.perf_counter()
            out = read(self_mm, *a, **k)
            clock.frame["readout"] += time.perf_counter() - t0 - (clock.inner - inner0)
            return out
        memory_manager_cls.read = timed_read

    def take(self) -> dict:
        out = {k: v * 1e3 for k, v in self.frame.items()}
        self.frame = defaultdict(float)
        return out


# ---------------------------------------------------------------------------- passes
def run_official(network, InferenceCore, cfg, clock, frames_t, first_mask_t, objects, keep=None):
    core = InferenceCore(network, cfg)
    rows = []
    for i, image in enumerate(frames_t):
        clock.take()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            if i == 0:
                prob = core.step(image, first_mask_t, objects)
            else:
                prob = core.step(image)
        dt, cpu = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
        t1 = time.perf_counter()
        torch.argmax(prob, dim=0).cpu().numpy().astype(np.uint8)  # the id mask, as Cutie's scripts make it
        mask_ms = (time.perf_counter() - t1) * 1e3
        rows.append({"ms": dt, "cpu": cpu, "mask_ms": mask_ms, "stages": clock.take(), "mem": i % cfg.mem_every == 0})
        if keep is not None:
            keep.append(prob.clone())
    return rows


def run_s3rt(make_tracker, frames_np, first_mask, compare=None):
    tracker = make_tracker()
    rows, diffs = [], []
    for i, frame in enumerate(frames_np):
        t0, c0 = time.perf_counter(), time.process_time()
        r = tracker.step(frame, first_mask if i == 0 else None)
        dt, cpu = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
        rows.append({"ms": dt, "cpu": cpu, "stages": {k: v * 1e3 for k, v in r.timings.items()}, "mem": bool(r.memory_frame)})
        if compare is not None:
            ref = compare[i]
            prob = r.prob.float().cpu()
            diffs.append((float((prob - ref).abs().max()), float((prob.argmax(0) == ref.argmax(0)).float().mean())))
    return rows, diffs


def pct(values, q):
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def summarize(rows, warmup):
    rows = rows[warmup:]
    ms = [r["ms"] for r in rows]
    out = {"p50": pct(ms, 50), "p90": pct(ms, 90), "n": len(ms), "cpu_p50": pct([r["cpu"] for r in rows], 50),
           "mem_p50": pct([r["ms"] for r in rows if r["mem"]], 50),
           "other_p50": pct([r["ms"] for r in rows if not r["mem"]], 50),
           "n_mem": sum(r["mem"] for r in rows)}
    for s in STAGES:
        vals = [r["stages"][s] for r in rows if s in r["stages"]]
        out[s] = pct(vals, 50)
    if rows and "mask_ms" in rows[0]:
        with_mask = [r["ms"] + r["mask_ms"] for r in rows]
        out["with_mask"] = (pct(with_mask, 50), pct(with_mask, 90))
    out["outside"] = pct([r["ms"] - sum(r["stages"].values()) for r in rows], 50)
    return out


# ---------------------------------------------------------------------------- the trunk
def time_trunks(trunks: dict, inputs: dict, repeats: int, calls: int):
    """Alternating (order reversed every other round): per round, `calls` calls of each trunk.
    Wall and process CPU time (all threads) per call, in ms."""
    wall, cpu = defaultdict(list), defaultdict(list)
    outs = {}
    with torch.inference_mode():
        for name, fn in trunks.items():  # warm up
            outs[name] = fn(inputs[name])
        for r in range(repeats):
            for name in (list(trunks) if r % 2 == 0 else list(trunks)[::-1]):
                for _ in range(calls):
                    t0, c0 = time.perf_counter(), time.process_time()
                    trunks[name](inputs[name])
                    wall[name].append((time.perf_counter() - t0) * 1e3)
                    cpu[name].append((time.process_time() - c0) * 1e3)
    return {k: (pct(wall[k], 50), pct(wall[k], 10), pct(cpu[k], 50), len(wall[k])) for k in trunks}, outs


def aten_signature(fn, x) -> list:
    """The aten ops a call runs, with their input shapes and counts (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn(x)
    return sorted((e.key, str(e.input_shapes), e.count) for e in prof.key_averages(group_by_input_shape=True)
                  if e.key.startswith("aten::"))


def folded_bn(module: torch.nn.Module) -> torch.nn.Module:
    """A copy with every BatchNorm2d that follows a Conv2d folded into it (an experiment only)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module = copy.deepcopy(module)

    def walk(m):
        names = list(m._modules)
        for i, n in enumerate(names):
            child = m._modules[n]
            prev = m._modules[names[i - 1]] if i else None
            if isinstance(child, torch.nn.BatchNorm2d) and isinstance(prev, torch.nn.Conv2d):
                m._modules[names[i - 1]] = fuse_conv_bn_eval(prev, child)
                m._modules[n] = torch.nn.Identity()
            else:
                walk(child)
    walk(module)
    return module


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-root", default=os.environ.get("OFFICIAL_CUTIE_ROOT"),
                   help="folder holding the official `cutie` package (default: $OFFICIAL_CUTIE_ROOT)")
    p.add_argument("--clip", required=True,
                   help="a DAVIS-format sequence folder (JPEGImages/ and Annotations/, or the 480p subfolders), "
                        "e.g. DAVIS 2017's blackswan, which the results in benchmarks/results/ used")
    p.add_argument("--frames", type=int, default=50, help="frames per pass (default 50; the clip's length at most)")
    p.add_argument("--repeats", type=int, default=2, help="alternating passes per path; the lowest p50 is kept")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--warmup", type=int, default=1, help="first frames left out of the statistics (default 1)")
    p.add_argument("--export", help="an FP32 cutie-base graph set from `s3rt export` (same weights) to add "
                                    "the ONNX Runtime backend")
    p.add_argument("--long-term", action="store_true", help="long-term memory on (both sides; Cutie's "
                                                            "'generic' setting), instead of DAVIS's off")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cutie-base weights (default 0)")
    p.add_argument("--trunk-repeats", type=int, default=3, help="alternating rounds of the trunk timing (0: skip)")
    p.add_argument("--trunk-calls", type=int, default=3, help="calls per trunk per round")
    p.add_argument("--no-check", action="store_true", help="do not compare outputs (timing only)")
    p.add_argument("--out", help="markdown table to write (default: print only)")
    args = p.parse_args(argv)

    load_start = loadavg()
    started = datetime.datetime.now().astimezone()
    root, CUTIE, InferenceCore, MemoryManager = load_official(args.official_root)
    torch.set_num_threads(args.threads)

    import s3rt
    from s3rt.runtime.tracker import Tracker

    frame_paths, ann_path = find_clip(Path(args.clip))
    frame_paths = frame_paths[:args.frames]
    frames_np = [np.array(Image.open(f).convert("RGB")) for f in frame_paths]
    first_mask = read_mask(ann_path)
    objects = sorted(int(o) for o in np.unique(first_mask) if o != 0)
    frames_t = [torch.from_numpy(f).permute(2, 0, 1).float().div(255) for f in frames_np]
    first_mask_t = torch.from_numpy(first_mask.astype(np.int64))
    h, w = frames_np[0].shape[:2]

    # the same weights in both networks
    model = s3rt.build_model("cutie-base", seed=args.seed)
    cfg = official_config(root, long_term=args.long_term)
    network = CUTIE(cfg).eval()
    missing, unexpected = network.load_state_dict(model.state_dict(), strict=True)
    assert not missing and not unexpected
    clock = StageClock()
    clock.instrument(network, MemoryManager)

    lt = {"use_long_term": True} if args.long_term else {}
    paths = {
        "official Cutie (InferenceCore, eager PyTorch)": None,
        "s3rt, torch backend": lambda: Tracker(model, backend="torch", size=-1, profile=True, **lt),
    }
    if args.export:
        paths["s3rt, ONNX Runtime backend (FP32)"] = (
            lambda: Tracker(backend="onnxruntime", graphs=args.export, size=-1, profile=True, threads=args.threads))
    off_name = next(iter(paths))

    runs = defaultdict(list)
    parity = {}
    for rep in range(args.repeats):
        ref = [] if rep == 0 and not args.no_check else None
        for name, make in paths.items():
            print(f"{name}: pass {rep + 1}/{args.repeats}", flush=True)
            # ONNX Runtime owns the cores; the tracker's light torch work between its calls gets one thread
            torch.set_num_threads(1 if "ONNX" in name else args.threads)
            if make is None:
                runs[name].append(run_official(network, InferenceCore, cfg, clock, frames_t, first_mask_t,
                                               objects, keep=ref))
            else:
                rows, diffs = run_s3rt(make, frames_np, first_mask, compare=ref)
                runs[name].append(rows)
                if diffs:
                    parity[name] = diffs
        torch.set_num_threads(args.threads)

    best = {k: min(v, key=lambda rows: summarize(rows, args.warmup)["p50"]) for k, v in runs.items()}
    stats = {k: summarize(v, args.warmup) for k, v in best.items()}
    all_p50 = {k: [round(summarize(r, args.warmup)["p50"], 1) for r in v] for k, v in runs.items()}

    # the trunk alone, and two experiments on ours that change its numerics
    trunk = None
    if args.trunk_repeats > 0:
        import copy

        from s3rt.model.tensor_utils import pad_divide_by

        x = model.normalize(pad_divide_by(frames_t[0].unsqueeze(0), 16)[0])
        trunks = {"official": network.pixel_encoder, "s3rt": model.pixel_encoder,
                  # A/A: how far two identical trunks differ on this machine (placement in memory, order)
                  "s3rt, a second copy (A/A)": copy.deepcopy(model.pixel_encoder),
                  "s3rt, BatchNorm folded into the convs (experiment)": folded_bn(model.pixel_encoder),
                  "s3rt, channels-last (experiment)":
                      copy.deepcopy(model.pixel_encoder).to(memory_format=torch.channels_last)}
        inputs = {k: x.contiguous(memory_format=torch.channels_last) if "channels-last" in k else x for k in trunks}
        trunk, outs = time_trunks(trunks, inputs, args.trunk_repeats, args.trunk_calls)
        trunk_diff = {k: max(float((a - b).abs().max()) for a, b in zip(outs[k], outs["s3rt"])) for k in trunks}
        same_ops = aten_signature(network.pixel_encoder, x) == aten_signature(model.pixel_encoder, x)

    # making the id mask from the probabilities, which Tracker.step does and InferenceCore.step does not
    from s3rt.runtime.tracker import id_mask

    probe = torch.rand(len(objects) + 1, h, w)
    mask_ms, argmax_ms = [], []
    ids = list(range(len(objects) + 1))
    for _ in range(5):
        t0 = time.perf_counter()
        id_mask(probe, ids)
        t1 = time.perf_counter()
        probe.argmax(0)
        mask_ms.append((t1 - t0) * 1e3)
        argmax_ms.append((time.perf_counter() - t1) * 1e3)
    load_end = loadavg()

    # ---- report
    off = stats[off_name]
    passes = ", ".join(f"{k.split(' (')[0]}: {v}" for k, v in all_p50.items())
    cmd = "python benchmarks/bench_vs_official.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = ["# s3rt vs the official Cutie code, one process, CPU", "",
             f"- command: `{cmd}`",
             f"- date: {started.isoformat(timespec='seconds')}; machine: {cpu_name()}, nproc {os.cpu_count()}; "
             f"load average (1/5/15 min) at start {load_start}, at end {load_end}",
             f"- torch {torch.__version__}, {args.threads} threads (ONNX Runtime path: ONNX Runtime "
             f"{args.threads} intra-op threads, the tracker's torch work 1 thread); Python {platform.python_version()}, s3rt {s3rt.__version__}",
             f"- cutie-base, random weights (seed {args.seed}) loaded into the official CUTIE with strict=True; clip "
             f"{Path(args.clip).name} ({len(frames_np)} frames {h}x{w}, objects {objects}); Cutie's DAVIS settings: "
             f"mem_every 5, max_mem_frames 5, top_k 30, stagger_updates 5, long-term "
             f"{'on' if args.long_term else 'off'}, chunk_size -1, no flip, no resizing in the trackers",
             f"- {args.repeats} alternating passes per path, the pass with the lowest p50 kept "
             f"(p50 of every pass: {passes}); "
             f"first {args.warmup} frame(s) left out ({off['n']} frames: {off['n_mem']} memory frames); stage times are "
             "wall time; CPU = process CPU time of all threads (less sensitive to other load on the machine)", "",
             "| tracker | p50 ms / frame | p90 ms / frame | vs official (p50) | vs official (p90) | CPU p50 ms / frame "
             "| memory frames / other frames (p50 ms) | " + " | ".join(f"{s} p50" for s in STAGES) + " | outside the stages p50 |",
             "|---|---|---|---|---|---|---|" + "---|" * (len(STAGES) + 1)]
    for name, s in stats.items():
        stage_cells = " | ".join(f"{s[g]:.1f}" if not np.isnan(s[g]) else "-" for g in STAGES)
        lines.append(f"| {name} | {s['p50']:.1f} | {s['p90']:.1f} | {off['p50'] / s['p50']:.2f}x | "
                     f"{off['p90'] / s['p90']:.2f}x | {s['cpu_p50']:.0f} | {s['mem_p50']:.1f} / {s['other_p50']:.1f} | {stage_cells} | {s['outside']:.1f} |")
    wm = off.get("with_mask")
    if wm:
        lines.append(f"| official Cutie + the id mask its scripts make (`torch.argmax(prob, dim=0)` after each step, as "
                     f"`Tracker.step` does) | {wm[0]:.1f} | {wm[1]:.1f} | | | | | | | | | | |")
    lines.append("")
    hw = ((h + 15) // 16) * ((w + 15) // 16)
    lines += ["Readout (p50 ms) by the memory it reads (frames held x tokens per frame; Cutie's working memory "
              f"fills by one frame every {cfg.mem_every} frames):", "",
              "| memory frames (tokens) | " + " | ".join(stats) + " |", "|---|" + "---|" * len(stats)]
    # Without long-term memory the working memory is a FIFO of max_mem_frames; with it, it grows to
    # long_term.max_mem_frames and is then consolidated (frames after that read a compressed memory: left out).
    cap = cfg.long_term.max_mem_frames if args.long_term else cfg.max_mem_frames
    last = cfg.mem_every * (cap - 1) if args.long_term else len(frames_np)
    for held in range(1, cap + 1):
        sel = [i for i in range(max(1, args.warmup), min(len(frames_np), last + 1))
               if min(cap, 1 + (i - 1) // cfg.mem_every) == held]
        if sel:
            cells = [pct([best[k][i]["stages"]["readout"] for i in sel if "readout" in best[k][i]["stages"]], 50)
                     for k in stats]
            lines.append(f"| {held} ({held * hw}) | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    lines.append("")
    if parity:
        lines += ["Outputs against the official code, every frame of the first pass (probabilities at the "
                  "input resolution, background first):", ""]
        for name, diffs in parity.items():
            d = np.array(diffs)
            lines.append(f"- {name}: max |delta prob| {d[:, 0].max():.2e} (median over frames {np.median(d[:, 0]):.1e}); "
                         f"argmax masks agree on {100 * d[:, 1].min():.4f}% of pixels in the worst frame "
                         f"({int((d[:, 1] == 1).sum())}/{len(d)} frames identical)")
        lines.append("")
    lines += [f"Of s3rt's time per frame, making the id mask (`id_mask` over {len(objects) + 1} x {h} x {w} in "
              f"`Tracker._result`; `InferenceCore.step` returns probabilities only) takes {pct(mask_ms, 50):.1f} ms "
              f"here; `prob.argmax(0)`, the same result, takes {pct(argmax_ms, 50):.1f} ms.", ""]
    if trunk:
        lines += [f"ResNet-50 trunk alone (pixel encoder to layer3, one {tuple(x.shape)} input, "
                  f"{args.trunk_repeats} alternating rounds of {args.trunk_calls} calls; CPU = process CPU time, "
                  "all threads):", "",
                  "| trunk | median ms | 10th percentile ms | median CPU ms | max abs diff vs s3rt | calls |",
                  "|---|---|---|---|---|---|"]
        for name, (med, p10, cpu_med, n) in trunk.items():
            lines.append(f"| {name} | {med:.1f} | {p10:.1f} | {cpu_med:.1f} | {trunk_diff[name]:.1e} | {n} |")
        lines += ["", f"The official and s3rt trunks run {'the same' if same_ops else 'DIFFERENT'} aten ops with the "
                  "same input shapes and counts (torch.profiler).", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        from s3rt.io import atomic_write

        with atomic_write(Path(args.out), "w") as f:
            f.write(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
