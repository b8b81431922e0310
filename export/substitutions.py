"""Export-time substitutions: the same math in operators TensorRT runs better (for now, the
summarizer's einsum as MatMuls)."""

from __future__ import annotations

import contextlib
import math
from unittest import mock

import torch

_torch_einsum = torch.einsum


def einsum_as_matmul(equation: str, *operands):
    """A two-operand einsum (no ellipsis, no repeated letters) as permute / reshape / MatMul,
    so that the exported graph has no Einsum node. Anything else goes to torch.einsum."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    eq = equation.replace(" ", "")
    if len(operands) != 2 or "..." in eq or "->" not in eq:
        return _torch_einsum(equation, *operands)
    lhs, out_s = eq.split("->")
    parts = lhs.split(",")
    if len(parts) != 2:
        return _torch_einsum(equation, *operands)
    a_s, b_s = parts
    a, b = operands
    if any(len(set(s)) != len(s) for s in (a_s, b_s, out_s)) or a.dim() != len(a_s) or b.dim() != len(b_s):
        return _torch_einsum(equation, *operands)
    # Sum out letters that appear in one operand only and not in the output.
    for which in (0, 1):
        s, other, t = (a_s, b_s, a) if which == 0 else (b_s, a_s, b)
        drop = [i for i, c in enumerate(s) if c not in other and c not in out_s]
        if drop:
            t = t.sum(dim=drop)
            s = "".join(c for i, c in enumerate(s) if i not in drop)
        if which == 0:
            a_s, a = s, t
        else:
            b_s, b = s, t
    batch = [c for c in a_s if c in b_s and c in out_s]
    contracted = [c for c in a_s if c in b_s and c not in out_s]
    a_only = [c for c in a_s if c not in b_s]
    b_only = [c for c in b_s if c not in a_s]
    size = {**{c: a.shape[i] for i, c in enumerate(a_s)}, **{c: b.shape[i] for i, c in enumerate(b_s)}}

    def prod(letters):
        return math.prod(size[c] for c in letters) if letters else 1

    bs = [size[c] for c in batch]
    am = a.permute([a_s.index(c) for c in batch + a_only + contracted]).reshape(*bs, prod(a_only), prod(contracted))
    bm = b.permute([b_s.index(c) for c in batch + contracted + b_only]).reshape(*bs, prod(contracted), prod(b_only))
    res = (am @ bm).reshape(*bs, *[size[c] for c in a_only], *[size[c] for c in b_only])
    order = batch + a_only + b_only
    return res.permute([order.index(c) for c in out_s])


@contextlib.contextmanager
def export_substitutions():
    """Inside: torch.einsum is `einsum_as_matmul` (same math, MatMul nodes instead of Einsum)."""
    with mock.patch.object(torch, "einsum", einsum_as_matmul):
        yield
