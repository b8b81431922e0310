"""The reference network: official keys and shapes, per-frame step shapes, checkpoints, determinism."""

import re

import pytest
import torch

from s3rt.model import CheckpointMismatchError, build_model, get_config
from s3rt.model.checkpoint import read_state_dict

from conftest import STATE_DICTS

OFFICIAL = {"cutie-base": "cutie_base", "cutie-small": "cutie_small", "s3-base": "s3_depthanybase"}


def official_shapes(preset):
    path = STATE_DICTS / f"{OFFICIAL[preset]}_state_dict_keys.txt"
    if not path.exists():
        pytest.skip(f"official key list {path} is absent (../shared not mounted)")
    shapes = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split(" ", 1)
        shapes[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return shapes


@pytest.mark.parametrize("preset", ["cutie-base", "cutie-small", "s3-base"])
def test_state_dict_matches_official(preset):
    ref = official_shapes(preset)
    with torch.device("meta"):
        model = build_model(preset)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ref) - set(ours)) == []
    assert sorted(set(ours) - set(ref)) == []
    assert {k: (ref[k], ours[k]) for k in ref if ref[k] != ours[k]} == {}


def run_steps(model, H, W, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    img = torch.rand(1, 3, H, W, generator=g)
    masks = torch.rand(1, N, H, W, generator=g)
    with torch.no_grad():
        f16, f8, f4, pix, key, shrinkage, selection = model.encode_image(img)
        sensory = torch.zeros(1, N, cfg.sensory_dim, H // 16, W // 16)
        values, sensory, summaries = model.encode_mask(img, pix, sensory, masks)
        readout = model.read_memory(key, selection, key.flatten(2), shrinkage.flatten(2), values.flatten(3))
        fused = model.pixel_fusion(pix, readout, sensory, masks)
        mem_readout = model.readout_query(fused, summaries)
        new_sensory, logits, prob = model.segment(f8, f4, mem_readout, sensory)
    return dict(f16=f16, f8=f8, f4=f4, pix=pix, key=key, shrinkage=shrinkage, selection=selection,
                values=values, sensory=sensory, summaries=summaries, readout=readout, fused=fused,
                mem_readout=mem_readout, new_sensory=new_sensory, logits=logits, prob=prob)


@pytest.mark.parametrize("preset", ["cutie-test", "s3-test"])
@pytest.mark.parametrize("H,W,N", [(64, 96, 1), (96, 64, 3), (128, 160, 2)])
def test_step_shapes(preset, H, W, N):
    model = build_model(preset)
    cfg = model.cfg
    out = run_steps(model, H, W, N)
    h, w = H // 16, W // 16
    assert out["f16"].shape == (1, cfg.ms_dims[0], h, w)
    assert out["f8"].shape == (1, cfg.ms_dims[1], 2 * h, 2 * w)
    assert out["f4"].shape == (1, cfg.ms_dims[2], 4 * h, 4 * w)
    assert out["pix"].shape == (1, cfg.pixel_dim, h, w)
    assert out["key"].shape == out["selection"].shape == (1, cfg.key_dim, h, w)
    assert out["shrinkage"].shape == (1, 1, h, w) and (out["shrinkage"] >= 1).all()
    assert ((out["selection"] > 0) & (out["selection"] < 1)).all()
    assert out["values"].shape == (1, N, cfg.value_dim, h, w)
    assert out["sensory"].shape == out["new_sensory"].shape == (1, N, cfg.sensory_dim, h, w)
    assert out["summaries"].shape == (1, N, cfg.num_queries, cfg.embed_dim + 1)
    assert out["mem_readout"].shape == (1, N, cfg.embed_dim, h, w)
    assert out["prob"].shape == out["logits"].shape == (1, N + 1, H, W)
    torch.testing.assert_close(out["prob"].sum(1), torch.ones(1, H, W))
    assert all(torch.isfinite(v).all() for v in out.values())


def test_padding_error_is_clear():
    with pytest.raises(ValueError, match="multiple of 32.*48x64"):
        build_model("s3-test").encode_image(torch.rand(1, 3, 48, 64))
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model("cutie-test").encode_image(torch.rand(1, 3, 40, 64))


@pytest.mark.parametrize("preset", ["cutie-test", "s3-test"])
def test_seeded_weights_are_deterministic(preset):
    a, b, c = build_model(preset, seed=3), build_model(preset, seed=3), build_model(preset, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    torch.testing.assert_close(run_steps(a, 64, 64, 2)["prob"], run_steps(b, 64, 64, 2)["prob"], rtol=0, atol=0)


def test_build_model_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("cutie-test")
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_round_trip(tmp_path):
    src = build_model("cutie-test", seed=1)
    path = tmp_path / "ckpt.pth"
    torch.save(src.state_dict(), path)
    dst = build_model("cutie-test", path, seed=2)
    torch.testing.assert_close(run_steps(src, 64, 96, 2)["prob"], run_steps(dst, 64, 96, 2)["prob"], rtol=0, atol=0)
    # nested under "model" and with a DataParallel prefix is still accepted
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    build_model("cutie-test", path)


def test_checkpoint_refusals_list_every_problem(tmp_path):
    state = build_model("cutie-test").state_dict()
    bad = dict(state)
    del bad["key_proj.key_proj.weight"]
    bad["something.extra"] = torch.zeros(1)
    bad["pix_feat_proj.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointMismatchError) as e:
        build_model("cutie-test", bad)
    msg = str(e.value)
    assert "key_proj.key_proj.weight" in msg and "something.extra" in msg and "pix_feat_proj.bias (7,)" in msg
    assert "1 missing" in msg and "1 unexpected" in msg and "1 mis-shaped" in msg
    # the loud opt-out loads what fits
    with pytest.warns(UserWarning, match="ONLY PART"):
        model = build_model("cutie-test", bad, strict=False)
    assert torch.equal(model.state_dict()["key_proj.e_proj.weight"], state["key_proj.e_proj.weight"])
    # another preset's checkpoint is refused
    with pytest.raises(CheckpointMismatchError, match="does not match preset 'cutie-small'"):
        build_model("cutie-small", state)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="cannot read"):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.pth")


def test_single_object_checkpoint_is_converted_with_zero_channels():
    src = build_model("cutie-test", seed=1)
    state = src.state_dict()
    single = dict(state)
    single["mask_encoder.conv1.weight"] = state["mask_encoder.conv1.weight"][:, :4].clone()
    sd = src.cfg.sensory_dim
    single["pixel_fuser.sensory_compress.weight"] = state["pixel_fuser.sensory_compress.weight"][:, :sd + 1].clone()
    model = build_model("cutie-test", single)
    own = model.state_dict()
    assert own["mask_encoder.conv1.weight"].shape[1] == 5
    assert torch.all(own["mask_encoder.conv1.weight"][:, 4] == 0)
    assert torch.all(own["pixel_fuser.sensory_compress.weight"][:, sd + 1] == 0)
    torch.testing.assert_close(own["mask_encoder.conv1.weight"][:, :4], single["mask_encoder.conv1.weight"])


def test_ablation_switches_build_and_differ():
    base = get_config("s3-test")
    assert not get_config("s3-test", ablation="cutie").is_s3_encoder
    assert get_config("s3-test", ablation="+dq").discriminative_query
    outs = {}
    for rung in ["cutie", "+dq", "+vit", "+spatial", "+semantic"]:
        model = build_model(base, ablation=rung) if rung not in ("cutie", "+dq") else \
            build_model(base, ablation=rung, **{k: getattr(get_config("cutie-test"), k) for k in ("ms_dims", "pixel_encoder")})
        outs[rung] = run_steps(model, 64, 64, 1)["prob"]
    assert not torch.allclose(outs["+spatial"], outs["+semantic"])
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("s4-huge")
    with pytest.raises(ValueError, match="ablation"):
        get_config("cutie-test", ablation="+vit")


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cutie-base", "cutie-small", "s3-base"])
def test_full_presets_at_480x864(preset):
    model = build_model(preset)
    out = run_steps(model, 480, 864, 2)
    assert out["prob"].shape == (1, 3, 480, 864)
    assert out["f16"].shape[-2:] == (30, 54) and out["f4"].shape[-2:] == (120, 216)
