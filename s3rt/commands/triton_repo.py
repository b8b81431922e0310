"""Write a Triton Inference Server model repository that serves many video streams: one Python-
backend model, `s3rt_stream`, with Triton's sequence batcher (oldest strategy; START, END, READY
and CORRID controls). Each stream (correlation id) stays on the instance that holds its state;
frames of several streams that arrive together run as one batched stream-pool step
(s3rt.serving.StreamPool). The instance frees a stream on END and when it was idle longer than
--idle-timeout (the server's max_sequence_idle_microseconds; the server does not tell the model).

Requests: IMAGE uint8 [1,H,W,3] RGB, optional MASK int32 [1,H,W] object ids (on START, and for
new objects or corrections). Responses: MASK_OUT uint8 [1,H,W], OBJECT_IDS int32 [1,K] and, with
--output-prob, PROB float32 [1,K+1,H,W].

The config.pbtxt written is checked with Triton's ModelConfig protobuf (needs tritonclient: the
[serving] extra). The graph or engine set is copied into the repository.

Triton itself: serve the repository from NVIDIA's container (tritonserver --model-repository REPO)
with torch, onnxruntime (or TensorRT) and s3rt installed in the Python backend's environment. On a
CPU machine without the container, `bash serving/triton_env.sh` makes a venv with the
tritonserver of nvidia-pytriton (numpy < 2, as its Python stub needs), tritonclient and s3rt;
tests/test_serving_triton.py (pytest -m triton) starts it and streams 8 clients through it.
"""

from __future__ import annotations

import argparse

from s3rt.commands import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--export", metavar="DIR", help="a graph set (s3rt export; --max-streams S batches S streams)")
    src.add_argument("--engines", metavar="DIR", help="an engine set (s3rt build; a GPU instance)")
    src.add_argument("--preset", help="the PyTorch reference of a preset (torch backend; random weights unless "
                                      "--checkpoint)")
    parser.add_argument("--checkpoint", metavar="PTH", help="weights for --preset")
    parser.add_argument("--out", required=True, metavar="REPO", help="the model repository folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing repository at --out")
    parser.add_argument("--model-name", default="s3rt_stream")
    parser.add_argument("--max-candidate-sequences", type=int, default=8, metavar="S",
                        help="streams one instance holds and batches (default 8)")
    parser.add_argument("--preferred-batch-size", type=int, action="append", metavar="B",
                        help="repeatable (default: S)")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000,
                        help="how long the batcher waits to fill a batch (default 2000 µs)")
    parser.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="a stream idle this long is dropped by the server and freed by the model (default 60)")
    parser.add_argument("--instance-kind", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--gpus", type=int, action="append", metavar="I",
                        help="with --instance-kind gpu: one instance per listed GPU (repeatable; default 0)")
    parser.add_argument("--output-prob", action="store_true", help="also return the probabilities")
    parser.add_argument("--size", type=int, default=480, help="the tracker's processing size (default 480)")
    parser.add_argument("--mem-every", type=int, default=5, help="the tracker's memory interval (default 5)")
    parser.add_argument("--no-validate", action="store_true",
                        help="skip the config.pbtxt check (for machines without tritonclient)")


def main(args: argparse.Namespace) -> int:
    from s3rt.serving.triton_repo import RepoError, RepoOptions, write_repository

    opts = RepoOptions(model_name=args.model_name, max_candidate_sequences=args.max_candidate_sequences,
                       preferred_batch_size=args.preferred_batch_size or [], max_queue_delay_us=args.max_queue_delay_us,
                       idle_timeout_s=args.idle_timeout, instance_kind=args.instance_kind, gpus=args.gpus or [],
                       output_prob=args.output_prob, tracker={"size": args.size, "mem_every": args.mem_every})
    if args.checkpoint and not args.preset:
        raise UserError("--checkpoint goes with --preset")
    try:
        out = write_repository(args.out, graphs=args.export, engines=args.engines, preset=args.preset,
                               checkpoint=args.checkpoint, options=opts, overwrite=args.overwrite,
                               validate=not args.no_validate)
    except RepoError as e:
        raise UserError(str(e)) from e
    print(f"wrote {out}/{opts.model_name} (config.pbtxt"
          + ("" if args.no_validate else ", checked with Triton's ModelConfig protobuf") + ")")
    print(f"serve it: tritonserver --model-repository {out}")
    return 0
