"""Stream a video to the Triton model written by `s3rt triton-repo` and write its masks.

    python examples/triton_client.py --url 127.0.0.1:8001 --input video.mp4 --mask first.png --out masks/
    python examples/triton_client.py ... --sequence-id 42          # one id per stream; run several at once

Each frame is one gRPC request of the stream's sequence (START on the first, with the mask; END
on the last); the server's sequence batcher batches the frames of concurrent streams. Masks are
written as DAVIS palette PNGs named after the frames. Needs tritonclient[grpc] (s3rt's [serving]
extra); frames are sent at the model's processing size as given (the model resizes, as the tracker).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address")
    p.add_argument("--model", default="s3rt_stream")
    p.add_argument("--input", required=True, help="a video file or an image folder")
    p.add_argument("--mask", required=True, help="the first frame's id mask (palette PNG)")
    p.add_argument("--out", required=True, help="folder for the masks")
    p.add_argument("--sequence-id", type=int, default=1, help="this stream's correlation id (non-zero)")
    args = p.parse_args(argv)

    import tritonclient.grpc as grpc

    from s3rt.io.frames import open_frames
    from s3rt.io.masks import read_mask, write_mask

    source = open_frames(args.input)
    mask = read_mask(args.mask)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    client = grpc.InferenceServerClient(args.url)
    frames = list(source)  # (name, frame); read ahead so the last request can carry END
    for i, (name, frame) in enumerate(frames):
        inputs = [grpc.InferInput("IMAGE", [1, *frame.shape], "UINT8")]
        inputs[0].set_data_from_numpy(frame[None])
        if i == 0:
            inputs.append(grpc.InferInput("MASK", [1, *mask.shape], "INT32"))
            inputs[1].set_data_from_numpy(mask[None].astype(np.int32))
        result = client.infer(args.model, inputs, outputs=[grpc.InferRequestedOutput("MASK_OUT")],
                              sequence_id=args.sequence_id, sequence_start=i == 0, sequence_end=i == len(frames) - 1)
        write_mask(out / f"{Path(name).stem}.png", result.as_numpy("MASK_OUT")[0])
    print(f"wrote {len(frames)} masks to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
