"""Cutie's training step on s3rt's reference network (model_notes: 'Cutie's training step').

The reference network (`s3rt.model.VOSNetwork`) has the per-frame steps the tracker uses; the
training-only parts live here, built from the network's own modules, so its state-dict keys
and inference numerics stay exactly as they are:
- the memory read with the full softmax over all memory pixels (no top-k), in FP32;
- the object transformer run with the mask logits of every level kept (the auxiliary query
  losses; the last level's head, unused at inference, is trained here as in Cutie);
- the sensory auxiliary head (`aux_computer.sensory_aux`: a linear predictor on the pixel
  feature from the sensory memory).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from s3rt.model.memory_readout import similarity
from s3rt.model.network import VOSNetwork
from s3rt.model.tensor_utils import aggregate


def prepare_for_training(model: VOSNetwork) -> VOSNetwork:
    """Make every parameter trainable. S3's ViT is frozen in the official recipe because it
    starts from DepthAnything weights; none are available here, so ours trains from scratch."""
    enc = model.pixel_encoder
    if hasattr(enc, "freeze_vit"):
        enc.freeze_vit = False
    model.requires_grad_(True)
    return model


def batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_train_mode(model: VOSNetwork, bn_frozen: bool = True) -> None:
    """Train mode with every BatchNorm in eval mode (frozen running statistics), as Cutie."""
    model.train()
    if bn_frozen:
        for m in batchnorms(model):
            m.eval()


def read_memory_full(query_key, query_selection, mem_key, mem_shrinkage, mem_values):
    """Training readout: full softmax over every memory pixel, FP32.
    query_key / selection [B,Ck,h,w]; mem_key [B,Ck,M]; mem_shrinkage [B,1,M]; mem_values [B,N,V,M]
    -> [B,N,V,h,w]."""
    b, _, h, w = query_key.shape
    sim = similarity(mem_key.float(), mem_shrinkage.float(), query_key.flatten(2).float(),
                     query_selection.flatten(2).float())  # [B,M,P]
    affinity = torch.softmax(sim, dim=1)
    n, v, m = mem_values.shape[1:]
    out = torch.bmm(mem_values.float().reshape(b, n * v, m), affinity)  # [B,N*V,P]
    return out.view(b, n, v, h, w)


def query_transformer_with_aux(qt, pixel, obj_memory):
    """`QueryTransformer.forward`, step for step, also returning the mask logits of every level
    (the initial one, one after each block; [B,N,L,h,w])."""
    b, n, c, h, w = pixel.shape
    obj_memory = obj_memory.reshape(b * n, qt.num_queries, c + 1)
    obj_values = obj_memory[..., :-1] / (obj_memory[..., -1:] + 1e-4)
    query = qt.query_init.weight.unsqueeze(0) + qt.summary_to_query_init(obj_values)
    query_emb = qt.query_emb.weight.unsqueeze(0) + qt.summary_to_query_emb(obj_values)
    pixel_emb = qt.pixel_emb_proj(pixel).flatten(3, 4).flatten(0, 1).transpose(1, 2)
    pixel_pe = qt.spatial_pe.grid(h, w, pixel.dtype, pixel.device).flatten(0, 1).unsqueeze(0) + pixel_emb
    pixel = qt.pixel_init_proj(pixel)
    logits = [qt.mask_pred[0](pixel).squeeze(2)]
    for i, block in enumerate(qt.blocks):
        query, pixel = block(query, pixel, query_emb, pixel_pe, qt._aux_mask(logits[-1]))
        logits.append(qt.mask_pred[i + 1](pixel).squeeze(2))
    return pixel, torch.stack(logits, dim=2)


def sensory_aux_logits(model: VOSNetwork, pix_feat, sensory):
    """Cutie's LinearPredictor: per object, a 1x1 projection of the sensory memory gives
    weights and a bias that are dotted with the pixel feature -> [B,N,h,w]."""
    x = model.aux_computer.sensory_aux.projection(sensory)  # [B,N,C+1,h,w]
    return (pix_feat.unsqueeze(1) * x[:, :, :-1]).sum(dim=2) + x[:, :, -1]


def clip_forward(model: VOSNetwork, frames: torch.Tensor, gt: torch.Tensor, *, num_ref_frames: int = 3,
                 deep_update_prob: float = 0.2, generator: torch.Generator | None = None) -> dict:
    """Run one batch of clips as Cutie's training wrapper does.

    frames [B,T,3,H,W] in [0,1] (H, W multiples of the preset's pad); gt [B,T,N,H,W] one-hot
    object masks (only frame 0 is read here). Returns {'logits': [B,T-1,N+1,H,W],
    'sensory_aux': [B,T-1,N+1,h,w], 'query_aux': [B,T-1,L,N+1,h,w]} for frames 1..T-1.
    """
    b, t_len = frames.shape[:2]
    n = gt.shape[2]
    f16, f8, f4, pix_feat, key, shrinkage, selection = model.encode_image(frames.flatten(0, 1))

    def per_frame(x):
        return x.view(b, t_len, *x.shape[1:])

    f8, f4, pix_feat, key, shrinkage, selection = map(per_frame, (f8, f4, pix_feat, key, shrinkage, selection))
    h, w = pix_feat.shape[-2:]
    sensory = pix_feat.new_zeros(b, n, model.cfg.sensory_dim, h, w)
    values, sensory, summaries = model.encode_mask(frames[:, 0], pix_feat[:, 0], sensory, gt[:, 0], deep_update=True)
    mem_values, mem_summaries = [values], [summaries]
    last_mask = gt[:, 0]
    logits_all, sensory_aux_all, query_aux_all = [], [], []
    for t in range(1, t_len):
        if t <= num_ref_frames:
            ref = torch.arange(t).expand(b, t)
        else:  # frame 0 and num_ref_frames - 1 other earlier frames, drawn per sample
            ref = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long),
                                          torch.randperm(t - 1, generator=generator)[:num_ref_frames - 1] + 1])
                               for _ in range(b)])
        bi = torch.arange(b)[:, None]
        mk = key[bi, ref].transpose(1, 2).flatten(2)  # [B,Ck,R*h*w]
        ms = shrinkage[bi, ref].transpose(1, 2).flatten(2)
        mv = torch.stack(mem_values, dim=1)[bi, ref]  # [B,R,N,V,h,w]
        mv = mv.permute(0, 2, 3, 1, 4, 5).flatten(3)  # [B,N,V,R*h*w]
        obj_memory = torch.stack(mem_summaries, dim=1)[bi, ref].sum(1)  # [B,N,Q,C+1]
        readout = read_memory_full(key[:, t], selection[:, t], mk, ms, mv)
        fused = model.pixel_fusion(pix_feat[:, t], readout, sensory, last_mask)
        sensory_aux_all.append(aggregate(torch.sigmoid(sensory_aux_logits(model, pix_feat[:, t], sensory)), dim=1))
        pixel, q_logits = query_transformer_with_aux(model.object_transformer, fused, obj_memory)
        query_aux_all.append(aggregate(torch.sigmoid(q_logits), dim=1).transpose(1, 2))  # [B,L,N+1,h,w]
        sensory, logits, prob = model.segment(f8[:, t], f4[:, t], pixel, sensory)
        logits_all.append(logits)
        masks = prob[:, 1:]
        if t < t_len - 1:
            deep = bool(torch.rand((), generator=generator) < deep_update_prob)
            values, sensory, summaries = model.encode_mask(frames[:, t], pix_feat[:, t], sensory, masks,
                                                           deep_update=deep)
            mem_values.append(values)
            mem_summaries.append(summaries)
        last_mask = masks
    return {"logits": torch.stack(logits_all, 1), "sensory_aux": torch.stack(sensory_aux_all, 1),
            "query_aux": torch.stack(query_aux_all, 1)}
