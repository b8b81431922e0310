"""The torch backend: runs the reference network's per-frame steps (FP32, or FP16 autocast on
CUDA). The readout uses the fused CUDA kernel when the tracker runs on CUDA and the library is
built, and the reference PyTorch readout otherwise; `readout_impl` says which."""

from __future__ import annotations

import contextlib

import torch

from s3rt.model.network import VOSNetwork
from s3rt.runtime.backends.base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: VOSNetwork, device="cpu", *, fp16: bool = False, top_k: int = 30,
                 readout: str = "auto"):
        super().__init__(device)
        if fp16 and self.device.type != "cuda":
            raise ValueError("fp16 autocast needs device='cuda'; on CPU the torch backend runs FP32")
        self.model = model.to(self.device).eval()
        self.fp16 = fp16
        self.top_k = top_k
        self.readout_impl = self._choose_readout(readout)

    def _choose_readout(self, readout: str) -> str:
        if readout not in ("auto", "torch", "cuda-kernel"):
            raise ValueError("readout must be 'auto', 'torch' or 'cuda-kernel'")
        if readout == "torch" or self.device.type != "cuda":
            if readout == "cuda-kernel":
                raise ValueError("the CUDA readout kernel needs device='cuda'")
            return "torch"
        from s3rt.runtime import readout_kernel
        ok, why = readout_kernel.is_available()
        if ok:
            return "cuda-kernel"
        if readout == "cuda-kernel":
            raise RuntimeError(f"CUDA readout kernel unavailable: {why}")
        return "torch"

    def describe(self) -> str:
        precision = "fp16 autocast" if self.fp16 else "fp32"
        return f"torch ({precision}) on {self.device}, readout: {self.readout_impl}"

    def _autocast(self):
        if self.fp16:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def run(self, graph, inputs):
        self.check_graph(graph)
        m = self.model
        with self._autocast():
            if graph == "encoder":
                out = m.encode_image(inputs["image"])
                return dict(zip(("f16", "f8", "f4", "pix_feat", "key", "shrinkage", "selection"), out))
            if graph == "readout":
                return self._readout(inputs)
            if graph == "fusion":
                fused = m.pixel_fusion(inputs["pix_feat"], inputs["readout"], inputs["sensory"], inputs["last_mask"])
                return {"memory_readout": m.readout_query(fused, inputs["obj_memory"])}
            if graph == "decoder":
                new_sensory, logits, prob = m.segment(inputs["f8"], inputs["f4"], inputs["memory_readout"],
                                                      inputs["sensory"])
                return {"logits": logits, "prob": prob, "new_sensory": new_sensory}
            values, new_sensory, summaries = m.encode_mask(inputs["image"], inputs["pix_feat"],
                                                           inputs["sensory"], inputs["masks"])
            return {"values": values, "new_sensory": new_sensory, "summaries": summaries}

    def _readout(self, x):
        key, sel = x["key"], x["selection"]
        b, _, h, w = key.shape
        if self.readout_impl == "cuda-kernel":
            from s3rt.runtime.readout_kernel import cuda_memory_readout
            n, v, m_ = x["mem_values"].shape[1:]
            usage = torch.zeros(b, m_, device=key.device, dtype=torch.float32)
            dt = x["mem_key"].dtype  # autocast may hand us FP16 query keys; the memory is FP32
            out = cuda_memory_readout(key.flatten(2).to(dt).contiguous(), sel.flatten(2).to(dt).contiguous(), x["mem_key"],
                                      x["mem_shrinkage"], x["mem_values"], x["mem_valid"], top_k=self.top_k,
                                      usage=usage)
            return {"readout": out.view(b, n, v, h, w).float(), "usage": usage}
        readout, usage = self.model.read_memory(key, sel, x["mem_key"], x["mem_shrinkage"], x["mem_values"],
                                                x["mem_valid"], top_k=self.top_k, return_usage=True)
        return {"readout": readout, "usage": usage}
