"""The stream pool: each stream equals the same clip run alone through a Tracker (FP32, max |Δ prob|
<= 1e-5), whatever the other streams do, and the graph calls of several streams are batched."""

import numpy as np
import pytest
import torch

from s3rt.model import build_model
from s3rt.runtime.tracker import Tracker
from s3rt.serving import PoolStepError, StreamFrame, StreamPool
from s3rt.synthetic import make_clip

TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return build_model("cutie-test")


def _clip(seed, n, h=48, w=64, objects=3):
    frames, masks = make_clip(n, h, w, num_objects=objects, seed=seed)
    return frames, masks


def _only(mask, ids):
    return np.where(np.isin(mask, ids), mask, 0).astype(np.uint8)


def scenario():
    """stream id -> {pool step: event}; events: StreamFrame, ("delete", ids) before the frame, or
    "close" (after the step). Streams start at different steps, have different lengths, add and
    delete objects, give corrections, end with end=True, and one has another frame size."""
    out = {}
    f, m = _clip(1, 12)
    ev = {0: StreamFrame(f[0], _only(m[0], [1, 2]))}
    for t in range(1, 12):
        ev[t] = StreamFrame(f[t])
    ev[4] = StreamFrame(f[4], _only(m[4], [3]) if 3 in m[4] else m[4], objects=[3] if 3 in m[4] else None)
    ev[8] = ("delete", [1], StreamFrame(f[8]))
    out["a"] = ev
    f, m = _clip(2, 7)
    ev = {2 + t: StreamFrame(f[t], m[0] if t == 0 else None, end=t == 6) for t in range(7)}
    ev[9] = "close"
    out["b"] = ev
    f, m = _clip(3, 10, 64, 96, objects=2)  # another size: its own encoder calls
    out["c"] = {t: StreamFrame(f[t], m[0] if t == 0 else None) for t in range(10)}
    f, m = _clip(4, 9)
    ev = {1 + t: StreamFrame(f[t], m[0] if t == 0 else None) for t in range(9)}
    ev[6] = StreamFrame(f[5], _only(m[5], [1]), objects=[1])  # a correction lacking a known object
    out["d"] = ev
    f, m = _clip(5, 11)  # same size and objects as "d": batched with it in every graph
    out["e"] = {t: StreamFrame(f[t], m[0] if t == 0 else None) for t in range(11)}
    return out


def _apply(target, event):
    """Run one event on a Tracker-like target: returns the frame's result or None."""
    if event == "close":
        return None
    if isinstance(event, tuple):
        _, ids, event = event
        target.delete_objects(ids)
    return target.step(event.image, event.mask, event.objects, end=event.end)


def run_pool(model, events, **options):
    pool = StreamPool(model, size=-1, mem_every=3, **options)
    steps = max(t for ev in events.values() for t in ev) + 1
    got = {sid: [] for sid in events}
    for t in range(steps):
        frames = {}
        for sid, ev in events.items():
            e = ev.get(t)
            if e is None or e == "close":
                continue
            if sid not in pool:
                pool.open(sid)
            if isinstance(e, tuple):
                pool.delete_objects(sid, e[1])
                e = e[2]
            frames[sid] = e
        for sid, r in pool.step(frames).items():
            got[sid].append(r)
        for sid, ev in events.items():
            if ev.get(t) == "close":
                pool.close(sid)
    return pool, got


def run_solo(model, events, *, backend_of=None, **options):
    """Each stream alone in its own Tracker (on a fresh backend from `backend_of`, if given)."""
    want = {}
    for sid, ev in events.items():
        backend = {} if backend_of is None else {"backend": backend_of()}
        tracker = Tracker(model, size=-1, mem_every=3, **backend, **options)
        want[sid] = [r for t in sorted(ev) if (r := _apply(tracker, ev[t])) is not None]
    return want


def _assert_same(got, want):
    for sid in want:
        assert len(got[sid]) == len(want[sid]), sid
        for i, (g, w) in enumerate(zip(got[sid], want[sid])):
            assert g.object_ids == w.object_ids, (sid, i)
            assert g.memory_frame == w.memory_frame, (sid, i)
            d = float((g.prob - w.prob).abs().max())
            assert d <= TOL, f"stream {sid} frame {i}: max |Δ prob| {d:.2e}"
            assert (g.mask == w.mask).mean() > 0.999, (sid, i)


def test_every_stream_equals_its_solo_tracker_and_calls_are_batched(model):
    events = scenario()
    pool, got = run_pool(model, events)
    _assert_same(got, run_solo(model, events))
    batched = {g: max(b for (gg, b) in pool.calls if gg == g) for g in ("encoder", "readout", "fusion", "decoder",
                                                                         "mask_encoder")}
    assert batched["encoder"] >= 3, pool.calls  # a, b, d, e share one size
    for g in ("readout", "fusion", "decoder", "mask_encoder"):
        assert batched[g] >= 2, (g, pool.calls)
    summary = pool.batching_summary()
    assert summary["encoder"]["streams_per_call"] > 1.5
    assert "b" not in pool and len(pool) == 4


def test_flip_augmented_streams_are_batched_in_pairs(model):
    f1, m1 = _clip(7, 6)
    f2, m2 = _clip(8, 6)
    events = {"x": {t: StreamFrame(f1[t], m1[0] if t == 0 else None) for t in range(6)},
              "y": {t: StreamFrame(f2[t], m2[0] if t == 0 else None) for t in range(6)}}
    pool, got = run_pool(model, events, flip_aug=True)
    _assert_same(got, run_solo(model, events, flip_aug=True))
    assert pool.calls[("encoder", 4)] == 6


def test_a_refused_frame_leaves_its_stream_and_the_others_untouched(model):
    f1, m1 = _clip(9, 5)
    f2, m2 = _clip(10, 5)
    pool = StreamPool(model, size=-1, mem_every=3)
    solo = {s: Tracker(model, size=-1, mem_every=3) for s in "xy"}
    for s in "xy":
        pool.open(s)
    pool.step({"x": StreamFrame(f1[0], m1[0]), "y": StreamFrame(f2[0], m2[0])})
    solo["x"].step(f1[0], m1[0])
    solo["y"].step(f2[0], m2[0])
    bad = {"x": StreamFrame(f1[1][:32]),  # another frame size
           "y": StreamFrame(f2[1], np.full(m2[1].shape, 300, np.int32)),  # an id outside 1..255
           "z": StreamFrame(f2[1])}  # a stream never opened
    with pytest.raises(PoolStepError) as e:
        pool.step(bad)
    assert set(e.value.errors) == {"x", "y", "z"} and not e.value.results
    assert "frame size changed" in str(e.value.errors["x"])
    assert "1..255" in str(e.value.errors["y"])
    assert "unknown stream" in str(e.value.errors["z"])
    for t in range(1, 5):
        got = pool.step({"x": f1[t], "y": f2[t]})
        for s, f in (("x", f1), ("y", f2)):
            want = solo[s].step(f[t])
            assert float((got[s].prob - want.prob).abs().max()) <= TOL


def test_one_failed_stream_does_not_stop_the_others(model):
    f1, m1 = _clip(11, 3)
    pool = StreamPool(model, size=-1)
    pool.open(1)
    pool.open(2)
    with pytest.raises(PoolStepError) as e:
        pool.step({1: StreamFrame(f1[0], m1[0]), 2: StreamFrame(f1[0].astype(np.float32))})
    assert set(e.value.results) == {1} and set(e.value.errors) == {2}
    assert pool.streams[1].frame_index == 0 and pool.streams[2].frame_index == -1


def test_open_close_limits_and_idle_eviction(model):
    pool = StreamPool(model, max_streams=2)
    pool.open("a")
    with pytest.raises(KeyError, match="already open"):
        pool.open("a")
    pool.open("b")
    with pytest.raises(RuntimeError, match="max_streams=2"):
        pool.open("c")
    pool.last_used["a"] -= 100
    assert pool.close_idle(50) == ["a"]
    assert "a" not in pool and "b" in pool
    with pytest.raises(KeyError, match="unknown stream"):
        pool.close("a")
    with pytest.raises(ValueError):
        StreamPool(model, max_streams=0)


def test_pool_splits_calls_at_max_batch(model):
    clips = [_clip(20 + i, 4) for i in range(3)]
    pool = StreamPool(model, size=-1, max_batch=2)
    for i in range(3):
        pool.open(i)
    for t in range(4):
        pool.step({i: StreamFrame(f[t], m[0] if t == 0 else None) for i, (f, m) in enumerate(clips)})
    assert max(b for (_, b) in pool.calls) == 2
    assert pool.calls[("encoder", 2)] == 4 and pool.calls[("encoder", 1)] == 4


def test_tracker_step_graphs_is_step(model):
    f, m = _clip(30, 4)
    a, b = Tracker(model, size=-1), Tracker(model, size=-1)
    backend = a.backend
    for t in range(4):
        ra = a.step(f[t], m[0] if t == 0 else None)
        with torch.inference_mode():
            gen = b.step_graphs(f[t], m[0] if t == 0 else None)
            try:
                call = next(gen)
                while True:
                    call = gen.send(backend.run(*call))
            except StopIteration as done:
                rb = done.value
        assert torch.equal(ra.prob, rb.prob)
