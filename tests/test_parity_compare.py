"""Parity's comparison of graph outputs: logits are compared where they are well conditioned."""

import torch

from s3rt.parity.compare import compare_graphs


class Fixed:
    """A stand-in backend that returns given outputs."""

    def __init__(self, out):
        self.out = out

    def run(self, graph, inputs):
        return self.out


def test_saturated_logits_are_compared_through_a_sigmoid_and_real_errors_still_fail():
    p = torch.tensor([1 - 1e-7, 0.5, 1e-3])
    ref_logits = torch.log(p / (1 - p))
    p2 = (p - torch.tensor([6e-8, 0.0, 0.0]))  # FP32 rounding at the clamp: the logit moves by 0.4
    got_logits = torch.log(p2 / (1 - p2))
    assert float((ref_logits - got_logits).abs().max()) > 0.3
    records = [("decoder", {}, {"logits": ref_logits, "prob": p})]
    ok = compare_graphs(records, Fixed({"logits": got_logits, "prob": p}), 1e-4)
    assert ok["decoder"]["pass"] and ok["decoder"]["outputs"]["logits"]["compared_as"] == "sigmoid"
    bad = compare_graphs(records, Fixed({"logits": ref_logits + torch.tensor([0.0, 0.01, 0.0]), "prob": p}), 1e-4)
    assert not bad["decoder"]["pass"]  # a logit off by 0.01 where the pixel is uncertain is an error
