"""State bytes per stream from a graph set's spec equal what a tracker allocates."""

import numpy as np
import pytest

from s3rt.graphs import GraphSetSpec
from s3rt.model import build_model
from s3rt.runtime.tracker import Tracker
from s3rt.serving.capacity import stream_state_bytes, streams_that_fit


@pytest.mark.parametrize("flip,long_term", [(False, False), (True, False), (False, True)])
def test_state_bytes_match_a_tracker(flip, long_term):
    model = build_model("cutie-test")
    h, w = 48, 64
    tracker = Tracker(model, size=-1, flip_aug=flip, use_long_term=long_term)
    mask = np.zeros((h, w), np.uint8)
    mask[5:20, 5:20], mask[25:40, 30:50] = 1, 2
    tracker.step(np.zeros((h, w, 3), np.uint8), mask)
    spec = GraphSetSpec.for_model(model.cfg, (h, w), max_mem_frames=tracker.max_mem_frames, flip_aug=flip,
                                  long_term_tokens=tracker.long_term.max_num_tokens if long_term else 0)
    assert stream_state_bytes(spec, model.cfg, 2) == tracker.state_nbytes()


def test_streams_that_fit():
    assert streams_that_fit(100, 30) == 3 and streams_that_fit(100, 30, reserve_bytes=20) == 2
    assert streams_that_fit(10, 30) == 0
