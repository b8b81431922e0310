"""Serving many streams: the in-process stream pool and the Triton Inference Server model
repository that runs it (docs/serving.md).

    from s3rt.serving import StreamPool
    pool = StreamPool(model)                     # or backend="onnxruntime", graphs=DIR (exported with --max-streams)
    pool.open("cam1"); pool.open("cam2")
    out = pool.step({"cam1": StreamFrame(img1, mask=m1), "cam2": StreamFrame(img2, mask=m2)})
    out["cam1"].mask

Above the runtime: it imports s3rt.runtime, s3rt.graphs, s3rt.model and s3rt.io; nothing below
imports it.
"""

from s3rt.serving.pool import PoolStepError, StreamFrame, StreamPool

__all__ = ["StreamPool", "StreamFrame", "PoolStepError"]
