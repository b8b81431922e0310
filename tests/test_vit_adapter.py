"""S3's pixel encoder: key parity with the official state dict, shapes, errors, determinism, the
position-embedding interpolation, deformable attention against a slow bilinear reference, the
DepthAnything weight conversion and the ablation switches."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import STATE_DICTS
from s3rt.model.config import PRESETS
from s3rt.model.deform_attn import MSDeformAttn, ms_deform_attn_sample
from s3rt.model.vit import (
    Attention,
    DinoVisionTransformer,
    bicubic_matrix,
    convert_depthanything_vit,
    interpolate_pos_embed,
)
from s3rt.model.vit_adapter import ViTAdapterEncoder, reference_points

KEYS_FILE = STATE_DICTS / "s3_depthanybase_state_dict_keys.txt"
TEST_CFG = PRESETS["s3-test"]


def _official_pixel_encoder_keys(path: Path) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, shape = line.split(" ", 1)
        if key.startswith("pixel_encoder."):
            keys[key[len("pixel_encoder."):]] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return keys


def _build(cfg=TEST_CFG, seed=0, **overrides):
    torch.manual_seed(seed)
    return ViTAdapterEncoder(cfg.replace(**overrides) if overrides else cfg).eval()


def _randomise_norm_stats(module: torch.nn.Module, seed: int = 1) -> None:
    """BatchNorm running stats / affine params away from the identity, so tests see them."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


# --------------------------------------------------------------------------------------------
# (a) key parity


def test_state_dict_matches_official_keys_and_shapes():
    if not KEYS_FILE.exists():
        pytest.skip(f"official key list not found at {KEYS_FILE}")
    official = _official_pixel_encoder_keys(KEYS_FILE)
    assert len(official) > 300
    with torch.device("meta"):
        enc = ViTAdapterEncoder(PRESETS["s3-base"])
    ours = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    missing = sorted(set(official) - set(ours))
    unexpected = sorted(set(ours) - set(official))
    misshaped = {k: (ours[k], official[k]) for k in set(ours) & set(official) if ours[k] != official[k]}
    assert not missing, f"missing: {missing[:10]}"
    assert not unexpected, f"unexpected: {unexpected[:10]}"
    assert not misshaped, f"mis-shaped: {misshaped}"
    # same order as the official module registration, too
    assert list(ours) == list(official)


# --------------------------------------------------------------------------------------------
# (b) forward shapes, (c) size errors, (d) determinism


@pytest.mark.parametrize("hw", [(64, 96), (96, 128), (128, 64)])
def test_forward_shapes(hw):
    enc = _build()
    H, W = hw
    D = TEST_CFG.vit.embed_dim
    with torch.no_grad():
        f16, f8, f4 = enc(torch.randn(2, 3, H, W))
    assert f16.shape == (2, D, H // 16, W // 16)
    assert f8.shape == (2, D, H // 8, W // 8)
    assert f4.shape == (2, D, H // 4, W // 4)
    assert all(torch.isfinite(f).all() for f in (f16, f8, f4))


def test_size_not_multiple_of_32_is_a_clear_error():
    enc = _build()
    with pytest.raises(ValueError, match=r"multiple of 32.*48x64|48x64.*multiple of 32"):
        enc(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="3,H,W"):
        enc(torch.randn(1, 4, 64, 64))


def test_deterministic_under_seed():
    x = torch.randn(1, 3, 64, 96)
    a, b, c = _build(seed=3), _build(seed=3), _build(seed=4)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
        ya2 = a(x)
    for p, q, r in zip(ya, yb, ya2):
        assert torch.equal(p, q) and torch.equal(p, r)
    assert not torch.allclose(ya[0], yc[0])


def test_frozen_vit_eval_mode_and_gradients():
    enc = _build()
    enc.train()
    assert not enc.vit_module.training and enc.spm.training and enc.norm1.training
    assert not any(p.requires_grad for p in enc.vit_module.parameters())
    f16, f8, f4 = enc(torch.randn(2, 3, 64, 64))
    (f16.square().mean() + f8.mean() + f4.mean()).backward()
    assert enc.spm.stem[0].weight.grad is not None
    assert enc.interactions[0].read_from_cls.cross_attn.in_proj_weight.grad is not None
    assert enc.interactions[-1].extra_extractors[1].attn.value_proj.weight.grad is not None
    assert all(p.grad is None for p in enc.vit_module.parameters())


def test_export_mode_gives_the_same_features():
    enc = _build()
    with torch.no_grad():
        enc.vit_module.pos_embed.normal_()  # make the position embedding matter
        x = torch.randn(1, 3, 96, 64)
        ref = enc(x)
        got = enc.set_export_mode(True)(x)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=2e-5, rtol=1e-5)


def test_reference_points_are_pixel_centres():
    ref = reference_points([(4, 6), (2, 3)])
    assert ref.shape == (1, 24 + 6, 1, 2)
    # first token of the (4, 6) grid, then its last token, then the (2, 3) grid's first
    torch.testing.assert_close(ref[0, 0, 0], torch.tensor([0.5 / 6, 0.5 / 4]))
    torch.testing.assert_close(ref[0, 23, 0], torch.tensor([5.5 / 6, 3.5 / 4]))
    torch.testing.assert_close(ref[0, 24, 0], torch.tensor([0.5 / 3, 0.5 / 2]))
    # row-major: x runs fastest
    torch.testing.assert_close(ref[0, 1, 0], torch.tensor([1.5 / 6, 0.5 / 4]))


# --------------------------------------------------------------------------------------------
# (e) position embedding


def _official_pos_embed(pos_embed, gh, gw):
    """The official DINOv2 computation, written out (scale_factor with the +0.1 trick)."""
    n = pos_embed.shape[1] - 1
    g = math.sqrt(n)
    if gh * gw == n and gh == gw:
        return pos_embed
    dim = pos_embed.shape[-1]
    patch = pos_embed.float()[:, 1:].reshape(1, int(g), int(g), dim).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((gh + 0.1) / g, (gw + 0.1) / g), mode="bicubic")
    assert patch.shape[-2:] == (gh, gw)
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([pos_embed[:, :1], patch], dim=1)


@pytest.mark.parametrize("G", [37, 10])
def test_pos_embed_explicit_size_matches_scale_factor(G):
    torch.manual_seed(0)
    pe = torch.randn(1, 1 + G * G, 24)
    for gh, gw in [(30, 54), (2, 4), (4, 6), (6, 4), (G, G), (G, G + 2), (45, 80), (68, 120), (1, 1)]:
        official = _official_pos_embed(pe, gh, gw)
        ours = interpolate_pos_embed(pe, (gh, gw), "scale_factor")
        explicit = interpolate_pos_embed(pe, (gh, gw), "explicit")
        assert ours.shape == explicit.shape == (1, 1 + gh * gw, 24)
        torch.testing.assert_close(ours, official, atol=0, rtol=0)
        torch.testing.assert_close(explicit, official, atol=1e-5, rtol=1e-5)
        if (gh, gw) != (G, G):
            # the naive size= resize uses another coordinate mapping and is visibly different
            naive = F.interpolate(pe[:, 1:].reshape(1, G, G, 24).permute(0, 3, 1, 2), size=(gh, gw), mode="bicubic")
            naive = naive.permute(0, 2, 3, 1).reshape(1, -1, 24)
            assert (naive - official[:, 1:]).abs().max() > 1e-3


def test_bicubic_matrix_reproduces_interpolate():
    torch.manual_seed(0)
    v = torch.randn(1, 3, 11, 1)
    for out, scale in [(7, None), (20, None), (15, 11 / 15.1)]:
        kwargs = dict(size=(out, 1)) if scale is None else dict(scale_factor=(1 / scale, 1.0))
        ref = F.interpolate(v, mode="bicubic", **kwargs)[0, :, :, 0]
        got = torch.from_numpy(bicubic_matrix(11, out, scale)).float() @ v[0, :, :, 0].T
        torch.testing.assert_close(got.T, ref, atol=1e-5, rtol=1e-5)


def test_vit_attention_is_softmax_attention():
    torch.manual_seed(0)
    attn = Attention(48, 4)
    x = torch.randn(2, 7, 48)
    qkv = attn.qkv(x).reshape(2, 7, 3, 4, 12).permute(2, 0, 3, 1, 4)
    w = (qkv[0] @ qkv[1].transpose(-1, -2) / math.sqrt(12)).softmax(-1)
    ref = attn.proj((w @ qkv[2]).transpose(1, 2).reshape(2, 7, 48))
    torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# (f) deformable attention


def _bilinear_zero_pad(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """img [C,H,W]; (x, y) normalised in [0, 1] with pixel centres at (i + 0.5) / size."""
    _, H, W = img.shape
    px, py = x * W - 0.5, y * H - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = np.zeros(img.shape[0], dtype=np.float64)
    for yi, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xi, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yi < H and 0 <= xi < W:
                out += wy * wx * img[:, yi, xi]
    return out


def _slow_msdeform_attn(mod: MSDeformAttn, query, ref, value, shapes):
    n, lq, c = query.shape
    m, L, P = mod.n_heads, mod.n_levels, mod.n_points
    dh = c // m
    with torch.no_grad():
        v = mod.value_proj(value).double().numpy()
        off = mod.sampling_offsets(query).double().numpy().reshape(n, lq, m, L, P, 2)
        aw = mod.attention_weights(query).double().reshape(n, lq, m, L * P).softmax(-1).numpy().reshape(n, lq, m, L, P)
    ref = ref.double().numpy()
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    out = np.zeros((n, lq, c))
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                acc = np.zeros(dh)
                for lvl, (h, w) in enumerate(shapes):
                    img = v[b, starts[lvl]:starts[lvl + 1], head * dh:(head + 1) * dh].T.reshape(dh, h, w)
                    rx, ry = ref[min(b, ref.shape[0] - 1), q, lvl]
                    for p in range(P):
                        x = rx + off[b, q, head, lvl, p, 0] / w
                        y = ry + off[b, q, head, lvl, p, 1] / h
                        acc += aw[b, q, head, lvl, p] * _bilinear_zero_pad(img, x, y)
                out[b, q, head * dh:(head + 1) * dh] = acc
    with torch.no_grad():
        return mod.output_proj(torch.from_numpy(out).float())


@pytest.mark.parametrize("n_levels", [1, 2])
def test_msdeform_attn_matches_slow_bilinear(n_levels):
    torch.manual_seed(0)
    shapes = [(3, 5), (2, 4)][:n_levels]
    c, n, lq = 16, 2, 6
    mod = MSDeformAttn(d_model=c, n_levels=n_levels, n_heads=2, n_points=3, ratio=0.5)
    with torch.no_grad():  # random (not init) weights, large offsets: points land outside too
        for p in mod.parameters():
            p.normal_(0, 1.0)
    query = torch.randn(n, lq, c)
    value = torch.randn(n, sum(h * w for h, w in shapes), c)
    ref = torch.rand(1, lq, n_levels, 2)
    got = mod(query, ref, value, shapes)
    want = _slow_msdeform_attn(mod, query, ref, value, shapes)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_msdeform_attn_ignores_ratio_and_checks_shapes():
    mod = MSDeformAttn(d_model=32, n_levels=1, n_heads=4, n_points=4, ratio=0.5)
    assert mod.value_proj.weight.shape == (32, 32) and mod.output_proj.weight.shape == (32, 32)
    assert mod.sampling_offsets.weight.shape == (32, 4 * 1 * 4 * 2)
    with pytest.raises(ValueError):
        ms_deform_attn_sample(torch.zeros(1, 10, 4, 8), [(3, 3)], torch.zeros(1, 2, 4, 1, 4, 2), torch.zeros(1, 2, 4, 1, 4))


# --------------------------------------------------------------------------------------------
# (g) DepthAnything weight conversion


def _fake_depthanything(vit: DinoVisionTransformer, patch: int = 14) -> dict:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in vit.state_dict().items():
        shape = (v.shape[0], 3, patch, patch) if k == "patch_embed.proj.weight" else v.shape
        sd[f"pretrained.{k}"] = torch.randn(shape, generator=g)
    sd["depth_head.projects.0.weight"] = torch.randn(4, 8, 1, 1, generator=g)
    sd["depth_head.scratch.output_conv.bias"] = torch.randn(1, generator=g)
    return sd


@pytest.mark.parametrize("wrapped", [False, True])
def test_convert_depthanything_vit(wrapped):
    v = TEST_CFG.vit
    vit = DinoVisionTransformer(v.embed_dim, v.depth, v.num_heads, v.mlp_ratio, v.patch_size, v.pretrain_size)
    fake = _fake_depthanything(vit)
    converted = convert_depthanything_vit({"model": fake} if wrapped else fake)
    assert set(converted) == set(vit.state_dict())
    w14 = fake["pretrained.patch_embed.proj.weight"]
    w16 = converted["patch_embed.proj.weight"]
    assert w16.shape == (v.embed_dim, 3, 16, 16)
    torch.testing.assert_close(w16, F.interpolate(w14, size=(16, 16), mode="bilinear", align_corners=True))
    # align_corners=True keeps the corner taps and adds no magnitude rescaling
    torch.testing.assert_close(w16[..., 0, 0], w14[..., 0, 0])
    torch.testing.assert_close(w16[..., -1, -1], w14[..., -1, -1])
    torch.testing.assert_close(converted["blocks.1.ls2.gamma"], fake["pretrained.blocks.1.ls2.gamma"])
    vit.load_state_dict(converted, strict=True)
    # and it loads into the encoder's ViT as it stands in the official checkpoint
    enc = _build()
    enc.vit_module.load_state_dict(converted, strict=True)


def test_convert_rejects_a_non_vit_checkpoint():
    with pytest.raises(KeyError, match="patch_embed"):
        convert_depthanything_vit({"depth_head.x": torch.zeros(1)})


# --------------------------------------------------------------------------------------------
# (h) ablation switches


def test_ablation_switches_change_modules_and_outputs():
    full = _build()
    _randomise_norm_stats(full)
    no_sem = _build(semantic=False)
    vit_only = _build(spatial=False, semantic=False)

    full_keys = set(full.state_dict())
    res = no_sem.load_state_dict(full.state_dict(), strict=False)
    assert not res.missing_keys
    assert res.unexpected_keys and all(".read_from_cls." in k for k in res.unexpected_keys)
    res = vit_only.load_state_dict(full.state_dict(), strict=False)
    assert not res.missing_keys
    assert any(k.startswith("spm.") for k in res.unexpected_keys) and "level_embed" in res.unexpected_keys
    assert all(k.startswith(("spm.", "interactions.", "level_embed")) for k in res.unexpected_keys)
    assert {"up.weight", "norm1.running_mean"} <= set(vit_only.state_dict()) <= full_keys

    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y_full, y_nosem, y_vit = full(x), no_sem(x), vit_only(x)
    for a, b, c in zip(y_full, y_nosem, y_vit):
        assert a.shape == b.shape == c.shape
        assert not torch.allclose(a, b, atol=1e-4)
        assert not torch.allclose(a, c, atol=1e-4)

    # spatial=False is exactly the normalised ViT stage maps
    with torch.no_grad():
        tokens, h, w = vit_only.vit_module.prepare_tokens(x)
        maps = []
        for first, last in vit_only.interaction_indexes:
            for blk in vit_only.vit_module.blocks[first:last + 1]:
                tokens = blk(tokens)
            maps.append(tokens[:, 1:].transpose(1, 2).reshape(1, -1, h, w))
        want_f16 = vit_only.norm3(maps[2])
        want_f4 = vit_only.norm1(F.interpolate(maps[0], scale_factor=4, mode="bilinear", align_corners=False))
    torch.testing.assert_close(y_vit[0], want_f16)
    torch.testing.assert_close(y_vit[2], want_f4)


def test_semantic_without_spatial_is_rejected():
    cfg = TEST_CFG.replace(spatial=False, semantic=False)
    object.__setattr__(cfg, "semantic", True)  # ModelConfig refuses it too; the encoder re-checks
    with pytest.raises(ValueError, match="semantic=True needs spatial=True"):
        ViTAdapterEncoder(cfg)


# --------------------------------------------------------------------------------------------
# full size


@pytest.mark.slow
def test_s3_base_forward_480x864():
    torch.manual_seed(0)
    enc = ViTAdapterEncoder(PRESETS["s3-base"]).eval()
    with torch.no_grad():
        f16, f8, f4 = enc(torch.randn(1, 3, 480, 864))
    assert f16.shape == (1, 768, 30, 54)
    assert f8.shape == (1, 768, 60, 108)
    assert f4.shape == (1, 768, 120, 216)
    assert all(torch.isfinite(f).all() for f in (f16, f8, f4))
