"""FP16 and INT8 versions of the exported graphs (installed as `s3rt.calibration`).

Not written yet: no issue has asked for it so far. The plan
(docs/architecture.md): FP16 graphs from an AutoCast-style conversion that keeps LayerNorm, softmax
statistics, the GRU, `aggregate`, the summarizer and the prediction conv in FP32; INT8 graphs
as explicit Q/DQ, calibrated on the inputs each graph sees while tracking real frames.
"""
