"""The streaming tracker: Cutie's schedule, object bookkeeping, fixed-capacity memory."""

import numpy as np
import pytest
import torch

from s3rt.model import build_model
from s3rt.model.memory_readout import memory_readout, similarity, topk_softmax_dense
from s3rt.runtime.backends.pytorch import TorchBackend
from s3rt.runtime.memory import LongTermConfig, MemoryBank
from s3rt.runtime.tracker import Tracker, stagger_steps


@pytest.fixture(scope="module")
def model():
    return build_model("cutie-test")


class Recorder(TorchBackend):
    """The torch backend, logging which graphs run on each frame."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls = []

    def run(self, graph, inputs):
        self.calls.append(graph)
        return super().run(graph, inputs)


def frames(n, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def first_mask(h=48, w=64, ids=(1, 2)):
    m = np.zeros((h, w), np.uint8)
    for k, i in enumerate(ids):
        m[5 + 12 * k:15 + 12 * k, 5:30] = i
    return m


def test_stagger_schedule_matches_cutie():
    assert stagger_steps(10, 5) == {1, 3, 6, 8, 10}
    assert stagger_steps(5, 5) == {1, 2, 3, 4, 5}
    assert stagger_steps(5, 2) == {1, 5}


def test_memory_frames_and_sensory_updates_follow_the_schedule(model):
    backend = Recorder(model)
    tracker = Tracker(backend=backend, model=model, size=-1, mem_every=3, stagger_updates=2)
    wrote, sensory_changed = [], []
    for i, img in enumerate(frames(10)):
        before = None if tracker.sensory is None else tracker.sensory.clone()
        backend.calls.clear()
        r = tracker.step(img, first_mask() if i == 0 else None)
        wrote.append(r.memory_frame)
        assert ("mask_encoder" in backend.calls) == r.memory_frame
        assert ("decoder" in backend.calls) == (i > 0)
        if before is not None:
            sensory_changed.append(not torch.equal(before, tracker.sensory))
    assert wrote == [True, False, False, True, False, False, True, False, False, True]
    # frames 1..9; stagger {1, 3}: since-last-memory 1 and 3 update, and memory frames deep-update
    assert sensory_changed == [True, False, True, True, False, True, True, False, True]


def test_end_skips_memory_and_sensory(model):
    tracker = Tracker(model, size=-1, mem_every=1)
    imgs = frames(3)
    tracker.step(imgs[0], first_mask())
    before = tracker.sensory.clone()
    r = tracker.step(imgs[1], end=True)
    assert not r.memory_frame and torch.equal(before, tracker.sensory)


def test_fifo_keeps_the_permanent_frame_and_the_most_recent(model):
    tracker = Tracker(model, size=-1, mem_every=1, max_mem_frames=3)
    keys = []
    for i, img in enumerate(frames(7)):
        tracker.step(img, first_mask() if i == 0 else None)
        keys.append(tracker.banks[0].key.clone())
    bank = tracker.banks[0]
    hw = bank.hw
    assert bank.capacity == 3 * hw and bank.valid.all()
    # the permanent slot still holds frame 0's key; the 2 working slots hold frames 5 and 6
    torch.testing.assert_close(bank.key[..., :hw], keys[0][..., :hw])
    enc = [TorchBackend(model).run("encoder", {"image": torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255})
           for f in frames(7)]
    stored = {tuple(bank.key[0, :, s * hw:(s + 1) * hw].flatten().tolist()[:4]) for s in (1, 2)}
    expect = {tuple(enc[i]["key"].flatten(2)[0].flatten().tolist()[:4]) for i in (5, 6)}
    assert stored == expect


class ConcatMemory:
    """Cutie's store as the official code keeps it: tensors concatenated per write, a
    permanent first frame, and FIFO trimming of the rest."""

    def __init__(self, max_work_frames):
        self.k = self.s = self.v = None
        self.perm = 0
        self.max_tokens = None
        self.max_work_frames = max_work_frames

    def add(self, k, s, v):
        hw = k.shape[-1]
        if self.k is None:
            self.k, self.s, self.v, self.perm = k, s, v, hw
            return
        self.k, self.s, self.v = torch.cat([self.k, k], -1), torch.cat([self.s, s], -1), torch.cat([self.v, v], -1)
        keep = self.max_work_frames * hw
        if self.k.shape[-1] - self.perm > keep:
            cut = self.k.shape[-1] - keep
            self.k, self.s, self.v = (torch.cat([t[..., :self.perm], t[..., cut:]], -1) for t in (self.k, self.s, self.v))

    def read(self, qk, qe, top_k):
        aff = topk_softmax_dense(similarity(self.k, self.s, qk, qe), top_k)
        b, n, v, m = self.v.shape
        return (self.v.reshape(b, n * v, m) @ aff).view(b, n, v, -1)


@pytest.mark.parametrize("hw,frames_written,objects", [(20, 9, 1), (35, 4, 3), (64, 12, 2)])
def test_fixed_capacity_bank_reads_like_the_concatenating_store(hw, frames_written, objects):
    g = torch.Generator().manual_seed(hw)
    bank = MemoryBank([1 + i for i in range(objects)], batch=1, hw=hw, key_dim=16, value_dim=8,
                      working_frames=4, long_term=None, device="cpu")
    ref = ConcatMemory(4)
    for _ in range(frames_written):
        k, s, v = torch.randn(1, 16, hw, generator=g), 1 + torch.rand(1, 1, hw, generator=g), \
            torch.randn(1, objects, 8, hw, generator=g)
        bank.add_frame(k.view(1, 16, hw, 1), s.view(1, 1, hw, 1), v.view(1, objects, 8, hw, 1))
        ref.add(k, s, v)
        qk, qe = torch.randn(1, 16, 50, generator=g), torch.rand(1, 16, 50, generator=g)
        ours = memory_readout(qk, qe, bank.key, bank.shrinkage, bank.values, bank.valid, top_k=30)
        torch.testing.assert_close(ours, ref.read(qk, qe, 30), rtol=1e-5, atol=1e-5)


def test_long_term_consolidation_matches_the_official_formula():
    lt = LongTermConfig(max_mem_frames=4, min_mem_frames=2, num_prototypes=8, max_num_tokens=40, buffer_tokens=8)
    hw, C, V = 10, 8, 4
    bank = MemoryBank([1], batch=1, hw=hw, key_dim=C, value_dim=V, working_frames=3, long_term=lt, device="cpu")
    g = torch.Generator().manual_seed(0)
    written = []
    for f in range(3):  # permanent + 2 working frames: nothing to consolidate yet
        k, s, e, v = (torch.randn(1, C, hw, 1, generator=g), 1 + torch.rand(1, 1, hw, 1, generator=g),
                      torch.rand(1, C, hw, 1, generator=g), torch.randn(1, 1, V, hw, 1, generator=g))
        bank.add_frame(k, s, v, e)
        written.append((k.flatten(2), s.flatten(2), e.flatten(2), v.flatten(3)))
        bank.update_usage(torch.rand(1, bank.capacity, generator=g))
    assert bank.num_long_term_tokens == 0 and bank.working_slots_used == 2
    usage = (bank.use_count / bank.life_count).clone()
    k, s, e, v = (torch.randn(1, C, hw, 1, generator=g), 1 + torch.rand(1, 1, hw, 1, generator=g),
                  torch.rand(1, C, hw, 1, generator=g), torch.randn(1, 1, V, hw, 1, generator=g))
    bank.add_frame(k, s, v, e)  # third working frame -> consolidate the oldest 3 - (2 - 1) = 2 frames
    # official: candidates = working frames 1 and 2 (all but the newest min_mem_frames - 1 = 1)
    ck = torch.cat([written[1][0], written[2][0]], -1)
    cs = torch.cat([written[1][1], written[2][1]], -1)
    ce = torch.cat([written[1][2], written[2][2]], -1)
    cv = torch.cat([written[1][3], written[2][3]], -1)
    cu = usage[:, hw:3 * hw]
    top = torch.topk(cu[0], k=8, sorted=True).indices
    aff = topk_softmax_dense(similarity(ck, cs, ck[:, :, top], ce[:, :, top]), None)
    proto_v = (cv.reshape(1, V, -1) @ aff)
    proto_s = cs @ aff
    lt_valid = bank.valid[0, bank.ltm_start:]
    assert int(lt_valid.sum()) == 8 and bank.working_slots_used == 1
    got_k = bank.key[0, :, bank.ltm_start:][:, lt_valid]
    torch.testing.assert_close(got_k, ck[0][:, top])
    torch.testing.assert_close(bank.values[0, 0, :, bank.ltm_start:][:, lt_valid], proto_v[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bank.shrinkage[0, :, bank.ltm_start:][:, lt_valid], proto_s[0], rtol=1e-5, atol=1e-5)
    # the permanent frame is untouched and the newest frame stays in working memory
    torch.testing.assert_close(bank.key[..., :hw], written[0][0])


def test_long_term_memory_stays_within_its_cap(model):
    lt = dict(max_mem_frames=3, min_mem_frames=2, num_prototypes=4, max_num_tokens=20, buffer_tokens=4)
    tracker = Tracker(model, size=-1, mem_every=1, use_long_term=True, long_term=lt)
    for i, img in enumerate(frames(25, 32, 48)):
        tracker.step(img, first_mask(32, 48, (1,)) if i == 0 else None)
        bank = tracker.banks[0]
        assert bank.num_long_term_tokens <= 20
    assert bank.num_long_term_tokens > 0


def test_objects_added_later_and_deleted(model):
    tracker = Tracker(model, size=-1, mem_every=2)
    imgs = frames(8)
    r = tracker.step(imgs[0], first_mask(ids=(4,)))
    assert r.object_ids == [4] and len(tracker.banks) == 1
    tracker.step(imgs[1])
    late = np.zeros((48, 64), np.uint8)
    late[30:40, 40:60] = 2
    r = tracker.step(imgs[2], late)  # a new object: segment the old one, add the new one
    assert r.object_ids == [2, 4] and r.prob.shape == (3, 48, 64)
    assert [b.object_ids for b in tracker.banks] == [[4], [2]]
    assert (r.mask[30:40, 40:60] == 2).all()
    r = tracker.step(imgs[3])
    assert r.prob.shape[0] == 3
    tracker.delete_objects([4])
    assert [b.object_ids for b in tracker.banks] == [[2]] and tracker.sensory.shape[1] == 1
    r = tracker.step(imgs[4])
    assert r.object_ids == [2] and set(np.unique(r.mask)) <= {0, 2}
    with pytest.raises(ValueError, match="unknown object ids"):
        tracker.delete_objects([9])


def test_partial_correction_keeps_other_objects(model):
    tracker = Tracker(model, size=-1)
    imgs = frames(3)
    tracker.step(imgs[0], first_mask(ids=(1, 2)))
    fix = np.zeros((48, 64), np.uint8)
    fix[40:46, 50:60] = 1  # correct object 1 only
    r = tracker.step(imgs[1], fix)
    assert r.object_ids == [1, 2] and (r.mask[40:46, 50:60] == 1).all()
    assert not (r.mask[5:15, 5:30] == 1).all()  # object 1's old region is overwritten as not-1


def test_resizing_and_output_size(model):
    tracker = Tracker(model, size=32)
    r = tracker.step(frames(1, 60, 90)[0], first_mask(60, 90))
    assert tracker.padded_size == (32, 48) and r.mask.shape == (60, 90) and r.prob.shape == (3, 60, 90)


def test_flip_augmentation_runs_a_batch_of_two(model):
    tracker = Tracker(model, size=-1, flip_aug=True)
    imgs = frames(3)
    tracker.step(imgs[0], first_mask())
    r = tracker.step(imgs[1])
    assert tracker.banks[0].key.shape[0] == 2 and r.prob.shape == (3, 48, 64)
    torch.testing.assert_close(r.prob.sum(0), torch.ones(48, 64))


def test_bad_inputs_are_refused_clearly(model):
    tracker = Tracker(model, size=-1)
    img = frames(1)[0]
    with pytest.raises(ValueError, match="uint8"):
        tracker.step(img.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[H,W,3\]"):
        tracker.step(img[..., :2])
    with pytest.raises(ValueError, match="does not match the frame size"):
        tracker.step(img, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="1..255"):
        tracker.step(img, np.full((48, 64), 300, np.int32))
    tracker.step(img, first_mask())
    with pytest.raises(ValueError, match="frame size changed"):
        tracker.step(frames(1, 32, 32)[0])


def test_object_ids_and_images_that_would_go_wrong_silently(model):
    tracker = Tracker(model, size=-1)
    img = frames(1)[0]
    # an id asked for but absent from the mask would become an empty object
    with pytest.raises(ValueError, match=r"objects \[5\] are not in the mask"):
        tracker.step(img, first_mask(), objects=[5])
    with pytest.raises(ValueError, match="at least one pixel"):
        tracker.step(np.zeros((0, 0, 3), np.uint8))
    # a flipped view (negative strides) is a valid mask
    r = tracker.step(img, first_mask()[::-1, ::-1])
    assert r.object_ids == [1, 2]
    with pytest.raises(TypeError, match="'12'"):
        tracker.delete_objects("12")  # not ids 1 and 2
    with pytest.raises(TypeError):
        tracker.delete_objects([1.5])
    tracker.delete_objects(1)  # one id is fine
    assert tracker.object_ids == [2]


@pytest.mark.parametrize("device, message", [("banana", "not a device"), ("cuda:7", "CUDA"), ("mps", "'cpu' or 'cuda")])
def test_devices_this_torch_cannot_use_are_one_clear_error(model, device, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 CUDA devices")
    with pytest.raises(ValueError, match=message):
        Tracker(model, device=device)


def test_processing_size_and_resize_follow_cutie(model):
    from s3rt.graphs import processing_size

    # Cutie's InferenceCore: int(w / min(h, w) * size); the other rounding gives 504 here
    assert processing_size(365, 511, 360) == (360, 503)
    assert processing_size(480, 854, 480) == (480, 854) and processing_size(100, 50, -1) == (100, 50)
    imgs = frames(2, 60, 90)
    a, b = Tracker(model, size=32), Tracker(model, size=32, resize_antialias=False)
    a.step(imgs[0], first_mask(60, 90)), b.step(imgs[0], first_mask(60, 90))
    ra, rb = a.step(imgs[1]), b.step(imgs[1])
    assert ra.prob.shape == rb.prob.shape and float((ra.prob - rb.prob).abs().max()) > 1e-4  # the option is used


def test_memory_is_flat_over_2000_frames(model):
    """Peak state after warm-up does not grow: fixed buffers, written in place."""
    import resource

    tracker = Tracker(model, size=-1, mem_every=1, max_mem_frames=3)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 8:20] = 1
    sizes, rss = [], []
    for i in range(2000):
        tracker.step(np.roll(base, i, axis=1), m if i == 0 else None)
        if i >= 100 and i % 100 == 0:
            sizes.append(tracker.state_nbytes())
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    assert len(set(sizes)) == 1
    assert rss[-1] - rss[0] < 20 * 1024  # kB: the peak does not creep up


@pytest.mark.parametrize("use_long_term", [False, True])
def test_reading_only_the_filled_memory_changes_nothing(model, use_long_term):
    """The torch backend reads the memory up to its last valid slot; the probabilities equal the
    fixed-capacity readout's over a clip that fills the memory (and consolidates long-term)."""
    lt = LongTermConfig(max_mem_frames=3, min_mem_frames=2, num_prototypes=8, max_num_tokens=64, buffer_tokens=8)
    opts = dict(size=-1, mem_every=2, use_long_term=use_long_term, long_term=lt if use_long_term else None)
    fast = Tracker(backend=TorchBackend(model), **opts)
    full = Tracker(backend=TorchBackend(model, filled_prefix=False), **opts)
    assert fast.backend.filled_prefix and "filled memory only" in fast.describe()
    for i, img in enumerate(frames(14)):
        a, b = fast.step(img, first_mask() if i == 0 else None), full.step(img, first_mask() if i == 0 else None)
        assert float((a.prob - b.prob).abs().max()) <= 1e-6, i
    if use_long_term:
        assert fast.banks[0].num_long_term_tokens > 0 and not fast.banks[0].valid.all()
    else:
        assert fast.banks[0].valid.all()  # the clip filled the memory


def test_filled_prefix_readout_pads_usage_and_handles_scattered_slots():
    from s3rt.runtime.backends.pytorch.runner import FilledPrefix

    net = build_model("cutie-test")
    ref = TorchBackend(net, filled_prefix=False).modules["readout"]
    fast = FilledPrefix(ref)
    g = torch.Generator().manual_seed(0)
    M = 200
    x = [torch.randn(1, 64, 3, 4, generator=g), torch.rand(1, 64, 3, 4, generator=g),
         torch.randn(1, 64, M, generator=g), 1 + torch.rand(1, 1, M, generator=g),
         torch.randn(1, 2, 64, M, generator=g)]
    for valid_slots in (list(range(40)), [0, 5, 77], list(range(M))):
        valid = torch.zeros(1, M, dtype=torch.bool)
        valid[0, valid_slots] = True
        (r1, u1), (r2, u2) = ref(*x, valid), fast(*x, valid)
        assert u2.shape == (1, M) and torch.equal(u1, u2)
        torch.testing.assert_close(r1, r2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("use_long_term", [False, True])
def test_dense_readout_equals_the_gathering_reference(model, use_long_term):
    """The torch backend's default CPU readout (the official dense formulation) against the
    reference readout, over a clip that fills the memory (and consolidates long-term)."""
    lt = LongTermConfig(max_mem_frames=3, min_mem_frames=2, num_prototypes=8, max_num_tokens=64, buffer_tokens=8)
    opts = dict(size=-1, mem_every=2, use_long_term=use_long_term, long_term=lt if use_long_term else None)
    dense = Tracker(backend=TorchBackend(model), **opts)
    ref = Tracker(backend=TorchBackend(model, readout="reference"), **opts)
    assert dense.backend.readout_impl == "dense" and ref.backend.readout_impl == "reference"
    for i, img in enumerate(frames(14)):
        a, b = dense.step(img, first_mask() if i == 0 else None), ref.step(img, first_mask() if i == 0 else None)
        assert float((a.prob - b.prob).abs().max()) <= 1e-6, i
    if use_long_term:  # usage drives consolidation: the same tokens were kept
        assert torch.equal(dense.banks[0].valid, ref.banks[0].valid)


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 17])
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (48, 64)])
def test_id_mask_is_argmax(channels, size):
    """The channel-by-channel id mask equals ids[argmax] exactly: random probabilities, ties (the
    first channel wins, as argmax), quantised values with many ties, and NaN."""
    from s3rt.runtime.tracker import id_mask

    g = torch.Generator().manual_seed(channels * 100 + size[0])
    ids = [0] + [int(i) for i in torch.randperm(255, generator=g)[: channels - 1] + 1]
    lut = torch.tensor(ids, dtype=torch.uint8)
    cases = [torch.rand(channels, *size, generator=g).softmax(0),
             (torch.rand(channels, *size, generator=g) * 3).round() / 3]  # many exact ties
    tie = torch.rand(channels, *size, generator=g)
    tie[-1] = tie[0]  # the last channel ties the first everywhere
    cases.append(tie)
    nan = torch.rand(channels, *size, generator=g)
    nan[channels // 2, 0, 0] = float("nan")
    cases.append(nan)
    for p in cases:
        assert torch.equal(id_mask(p, ids), lut[p.argmax(0)])
