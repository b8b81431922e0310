"""Cutie's object transformer and object summarizer, and S3's discriminative query (DQ_CA).

Shapes: B' = batch * objects, Q queries, P = h*w pixels, C = embed_dim.
Attention masks use nn.MultiheadAttention's convention (True = blocked).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from s3rt.model.modules import CAResBlock, GConv2d
from s3rt.model.tensor_utils import aggregate


class PositionalEncoding(nn.Module):
    """2-D sine/cosine encoding over a normalised grid (positions scaled to [0, scale]).
    Output [h, w, 2*dim]: the first half encodes x, the second y, sin/cos interleaved.
    Depends only on (h, w), so an export at a fixed resolution folds it into a constant."""

    def __init__(self, dim: int, scale: float, temperature: float):
        super().__init__()
        self.dim = int(-(-dim // 4) * 2)  # ceil(dim / 4) * 2
        inv_freq = 1.0 / (temperature ** (torch.arange(0, self.dim, 2).float() / self.dim))
        self.register_buffer("inv_freq", inv_freq)
        self.scale = scale
        self.eps = 1e-6

    def grid(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        pos_y = torch.arange(h, device=device, dtype=self.inv_freq.dtype)
        pos_x = torch.arange(w, device=device, dtype=self.inv_freq.dtype)
        pos_y = pos_y / (pos_y[-1] + self.eps) * self.scale
        pos_x = pos_x / (pos_x[-1] + self.eps) * self.scale
        emb_y = self._emb(torch.outer(pos_y, self.inv_freq)).unsqueeze(1).expand(h, w, self.dim)
        emb_x = self._emb(torch.outer(pos_x, self.inv_freq)).unsqueeze(0).expand(h, w, self.dim)
        return torch.cat([emb_x, emb_y], dim=-1).to(dtype)

    @staticmethod
    def _emb(sin_inp: torch.Tensor) -> torch.Tensor:
        return torch.stack((sin_inp.sin(), sin_inp.cos()), dim=-1).flatten(-2, -1)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, pe):
        x = self.norm(x)
        q = k = x + pe
        return x + self.self_attn(q, k, x, need_weights=False)[0]


class CrossAttention(nn.Module):
    """x reads from mem: q = x + x_pe, k = mem + mem_pe, v = mem. The residual is the normalised x."""

    def __init__(self, dim: int, heads: int, norm: bool = True):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x, mem, x_pe, mem_pe, attn_mask=None):
        x = self.norm(x)
        out = self.cross_attn(x + x_pe, mem + mem_pe, mem, attn_mask=attn_mask, need_weights=False)[0]
        return x + out


class DiscriminativeQuery(nn.Module):
    """S3's DQ_CA: each query (per head) is refreshed from the single most similar pixel inside
    its foreground (first Q/2 queries) or background (last Q/2) region. Reproduces the
    official quirks: L2 normalisation over the full channel axis before the head split, and
    the output normalisation over the *query* axis (dim=1)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.final = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.heads = heads

    def forward(self, x, mem, x_pe, mem_pe, attn_mask=None):
        x = self.norm(x)
        res = x
        pixels = F.normalize(mem + mem_pe, dim=-1)  # [B',P,C]
        key = F.normalize(x + x_pe, dim=-1)  # [B',Q,C]
        b, p, c = pixels.shape
        q, d = key.shape[1], c // self.heads
        ph = pixels.view(b, p, self.heads, d).transpose(1, 2)  # [B',H,P,D]
        kh = key.view(b, q, self.heads, d).transpose(1, 2)  # [B',H,Q,D]
        sim = ph @ kh.transpose(-1, -2)  # [B',H,P,Q]
        if attn_mask is not None:
            blocked = attn_mask.view(b, self.heads, q, p).transpose(-1, -2)
            sim = sim.masked_fill(blocked, float("-inf"))
        idx = sim.argmax(dim=2)  # [B',H,Q]
        picked = torch.gather(ph, 2, idx.unsqueeze(-1).expand(-1, -1, -1, d))  # [B',H,Q,D]
        picked = picked.transpose(1, 2).reshape(b, q, c)
        out = F.normalize(self.proj(picked * key), dim=1) * self.alpha + picked
        return self.final(out) + res


class FFN(nn.Module):
    def __init__(self, dim: int, ff_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return x + self.linear2(F.relu(self.linear1(self.norm(x))))


class PixelFFN(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = CAResBlock(dim, dim)

    def forward(self, pixel_flat, b: int, n: int, h: int, w: int):
        x = pixel_flat.view(b * n, h, w, -1).permute(0, 3, 1, 2).contiguous()
        x = self.conv(x)
        return x.view(b, n, -1, h, w)


class QueryTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ff_dim: int, discriminative_query: bool):
        super().__init__()
        self.read_from_pixel = DiscriminativeQuery(dim, heads) if discriminative_query else CrossAttention(dim, heads)
        self.self_attn = SelfAttention(dim, heads)
        self.ffn = FFN(dim, ff_dim)
        self.read_from_query = CrossAttention(dim, heads, norm=False)
        self.pixel_ffn = PixelFFN(dim)

    def forward(self, query, pixel, query_pe, pixel_pe, attn_mask):
        b, n, _, h, w = pixel.shape
        pixel_flat = pixel.flatten(3, 4).flatten(0, 1).transpose(1, 2).contiguous()
        query = self.read_from_pixel(query, pixel_flat, query_pe, pixel_pe, attn_mask=attn_mask)
        query = self.self_attn(query, query_pe)
        query = self.ffn(query)
        pixel_flat = self.read_from_query(pixel_flat, query, pixel_pe, query_pe)
        return query, self.pixel_ffn(pixel_flat, b, n, h, w)


class QueryTransformer(nn.Module):
    """Object queries (initialised from the object memory) and pixel features attend to each
    other for `num_blocks` blocks; masks predicted between blocks restrict the queries to
    foreground / background. Returns the refined pixel feature [B,N,C,h,w]."""

    def __init__(self, cfg):
        super().__init__()
        c = cfg.embed_dim
        self.num_queries, self.num_heads = cfg.num_queries, cfg.num_heads
        self.query_init = nn.Embedding(cfg.num_queries, c)
        self.query_emb = nn.Embedding(cfg.num_queries, c)
        self.summary_to_query_init = nn.Linear(c, c)
        self.summary_to_query_emb = nn.Linear(c, c)
        self.pixel_init_proj = GConv2d(c, c, kernel_size=1)
        self.pixel_emb_proj = GConv2d(c, c, kernel_size=1)
        self.spatial_pe = PositionalEncoding(c, cfg.pixel_pe_scale, cfg.pixel_pe_temperature)
        self.blocks = nn.ModuleList(
            QueryTransformerBlock(c, cfg.num_heads, cfg.ff_dim, cfg.discriminative_query)
            for _ in range(cfg.num_blocks))
        # One mask head per block plus the initial one; the last one's output is never used at
        # inference (the official condition that runs it is always true), so we skip it.
        self.mask_pred = nn.ModuleList(
            nn.Sequential(nn.ReLU(), GConv2d(c, 1, kernel_size=1)) for _ in range(cfg.num_blocks + 1))

    def forward(self, pixel, obj_memory):
        """pixel [B,N,C,h,w]; obj_memory [B,N,Q,C+1] (running sums of summaries and area)."""
        b, n, c, h, w = pixel.shape
        obj_memory = obj_memory.reshape(b * n, self.num_queries, c + 1)
        obj_values = obj_memory[..., :-1] / (obj_memory[..., -1:] + 1e-4)
        query = self.query_init.weight.unsqueeze(0) + self.summary_to_query_init(obj_values)
        query_emb = self.query_emb.weight.unsqueeze(0) + self.summary_to_query_emb(obj_values)

        pixel_emb = self.pixel_emb_proj(pixel).flatten(3, 4).flatten(0, 1).transpose(1, 2)
        pixel_pe = self.spatial_pe.grid(h, w, pixel.dtype, pixel.device).flatten(0, 1).unsqueeze(0) + pixel_emb
        pixel = self.pixel_init_proj(pixel)

        attn_mask = self._aux_mask(self.mask_pred[0](pixel).squeeze(2))
        for i, block in enumerate(self.blocks):
            query, pixel = block(query, pixel, query_emb, pixel_pe, attn_mask)
            if i < len(self.blocks) - 1:
                attn_mask = self._aux_mask(self.mask_pred[i + 1](pixel).squeeze(2))
        return pixel

    def _aux_mask(self, logits: torch.Tensor) -> torch.Tensor:
        """[B,N,h,w] logits -> [B*N*heads, Q, h*w] bool, True = blocked. Foreground queries see
        only the object's winning pixels, background queries only the rest; a query that would
        be blocked everywhere is unblocked."""
        logits = aggregate(logits.sigmoid(), dim=1)
        fg = (logits[:, 1:] >= logits.max(dim=1, keepdim=True)[0]).flatten(2)  # [B,N,P]
        half = self.num_queries // 2
        rep = (1, 1, self.num_heads, half, 1)
        blocked_fg = (~fg).unsqueeze(2).unsqueeze(2).repeat(*rep).flatten(0, 2)
        blocked_bg = fg.unsqueeze(2).unsqueeze(2).repeat(*rep).flatten(0, 2)
        mask = torch.cat([blocked_fg, blocked_bg], dim=1)  # [B*N*heads, Q, P]
        all_blocked = mask.all(dim=-1, keepdim=True)
        return mask & ~all_blocked


class ObjectSummarizer(nn.Module):
    """Q summaries per object (half weighted inside the mask, half outside) and their areas,
    pooled from the mask value. FP32. Output [B,N,Q,C+1]."""

    def __init__(self, cfg):
        super().__init__()
        c = cfg.embed_dim
        self.num_summaries = cfg.num_queries
        self.pos_enc = PositionalEncoding(c, cfg.pixel_pe_scale, cfg.pixel_pe_temperature)
        self.input_proj = nn.Linear(cfg.value_dim, c)
        self.feature_pred = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, c))
        self.weights_pred = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, self.num_summaries))

    def forward(self, masks, value):
        h, w = value.shape[-2:]
        masks = F.interpolate(masks, size=(h, w), mode="area").unsqueeze(-1)
        half = self.num_summaries // 2
        fgbg = torch.cat([masks.expand(-1, -1, -1, -1, half), (1 - masks).expand(-1, -1, -1, -1, half)], dim=-1)
        value = self.input_proj(value.permute(0, 1, 3, 4, 2))
        value = value + self.pos_enc.grid(h, w, value.dtype, value.device)
        with torch.autocast(device_type=value.device.type, enabled=False):
            value = value.float()
            feature = self.feature_pred(value)
            weights = self.weights_pred(value).sigmoid() * fgbg
            sums = torch.einsum("bnhwq,bnhwc->bnqc", weights, feature)
            area = weights.flatten(2, 3).sum(2).unsqueeze(-1)
        return torch.cat([sums, area], dim=-1)
