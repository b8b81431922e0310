"""A real Triton Inference Server on the CPU serving the repository `s3rt triton-repo` writes.

Marked `triton`. It runs when S3RT_TRITON_VENV names the separate venv made by
`bash serving/triton_env.sh` (nvidia-pytriton's tritonserver 2.51 with its Python backend, numpy
< 2, torch, s3rt); otherwise it skips and says so (with S3RT_REQUIRE_TRITON=1, as in CI, it fails
instead). `-m "not triton"` deselects it. `.ci/run` makes the venv and requires it (opt out with
S3RT_CI_TRITON=0). Under a minute on 2 cores (38 s at load 2, 48 s at load 5.4), plus under a
minute for the venv:

    bash serving/triton_env.sh .venv/triton
    S3RT_TRITON_VENV=.venv/triton python -m pytest -m "not slow" -q      # the default command, plus this test

It starts the server on loopback ports, runs the example client (examples/triton_client.py) on
a written clip, streams 8 concurrent gRPC clients of 60 frames each and checks: every stream's masks equal a solo Tracker run; frames of different streams were executed
together (the server's statistics); a request of an unknown stream without START, a wrong image
size, a mask with an id outside 1..255 and a stream idle past its timeout each get an error
response and leave the other streams untouched; the server shuts down cleanly (exit 0, its stub
processes gone, no shared-memory regions left).

Every torch computation here runs on one thread (the server's model instances and the solo
reference runs): cutie-test at 48x64 is tiny, and on a busy 2-core machine two threads per process
spend their time waiting for each other (the 480 reference steps took 107 s with 2 threads and 6 s
with 1 at load 4; with 2 threads the whole test took 12.7 min at load 11). One server serves every
check, and the references are computed once, while the server loads.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.triton

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ["S3RT_TRITON_VENV"]).resolve() if os.environ.get("S3RT_TRITON_VENV") else None
STREAMS, FRAMES, H, W = 8, 60, 48, 64


def _missing(why):
    msg = (f"{why}: make the Triton test venv with `bash serving/triton_env.sh .venv/triton` and run with "
           "S3RT_TRITON_VENV=.venv/triton")
    if os.environ.get("S3RT_REQUIRE_TRITON") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def _site(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    return found[0] if found else venv / "lib"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _one_thread():
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _solo_masks(frames, first_mask):
    """The masks of a solo Tracker run over `frames` (first mask on frame 0, END on the last)."""
    from s3rt.model import build_model
    from s3rt.runtime.tracker import Tracker

    solo = Tracker(build_model("cutie-test"), size=-1, mem_every=3)  # the repository's weights: the preset's seeds
    with _one_thread():
        return [solo.step(f, first_mask if t == 0 else None, end=t == len(frames) - 1).mask
                for t, f in enumerate(frames)]


@pytest.fixture(scope="module")
def streams():
    """The 8 streams' clips and their solo Tracker masks (computed once)."""
    from s3rt.synthetic import make_clip

    clips = [make_clip(FRAMES, H, W, 2, seed=200 + k) for k in range(STREAMS)]
    return [(frames, masks, _solo_masks(frames, masks[0])) for frames, masks in clips]


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    grpc = pytest.importorskip("tritonclient.grpc", reason="the client side needs tritonclient in this venv")
    if VENV is None:
        _missing("S3RT_TRITON_VENV is not set (the real-server test needs its own venv)")
    if not (VENV / "bin" / "python").exists():
        _missing(f"no Triton test venv at {VENV}")
    site = _site(VENV)
    triton = site / "pytriton" / "tritonserver"
    if not (triton / "bin" / "tritonserver").exists():
        _missing(f"{VENV} has no pytriton tritonserver")
    pyver = subprocess.run([str(VENV / "bin" / "python"), "-c", "import sys, sysconfig; print(f'{sys.version_info[0]}."
                            "{sys.version_info[1]}'); print(sysconfig.get_config_var('LIBDIR'))"],
                           capture_output=True, text=True, check=True).stdout.split()
    tmp = tmp_path_factory.mktemp("triton")
    # the Python backend, with the stub of the venv's Python (serving_notes.md)
    backends = tmp / "backends" / "python"
    backends.mkdir(parents=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(triton / "backends" / "python" / f, backends / f)
    shutil.copy2(triton / "python_backend_stubs" / pyver[0] / "triton_python_backend_stub",
                 backends / "triton_python_backend_stub")
    # the repository: the stream model, and a second one with a short idle timeout
    repo, short = tmp / "repo", tmp / "short"
    common = ["--preset", "cutie-test", "--size", "-1", "--mem-every", "3", "--max-queue-delay-us", "20000"]
    for out, extra in ((repo, ["--idle-timeout", "600"]),
                       (short, ["--idle-timeout", "2", "--model-name", "s3rt_short", "--max-candidate-sequences", "2"])):
        subprocess.run([sys.executable, "-m", "s3rt.cli", "triton-repo", *common, *extra, "--out", str(out)],
                       check=True, capture_output=True)
    shutil.move(str(short / "s3rt_short"), str(repo / "s3rt_short"))
    env = dict(os.environ, PATH=f"{VENV / 'bin'}:{os.environ['PATH']}",
               LD_LIBRARY_PATH=f"{pyver[1]}:{site / 'nvidia_pytriton.libs'}:{os.environ.get('LD_LIBRARY_PATH', '')}",
               OMP_NUM_THREADS="1")
    port = _free_port()
    shm_before = set(os.listdir("/dev/shm"))
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([str(triton / "bin" / "tritonserver"), "--model-repository", str(repo),
                             "--backend-directory", str(tmp / "backends"), "--allow-http", "false",
                             "--grpc-address", "127.0.0.1", "--grpc-port", str(port), "--allow-metrics", "false",
                             "--log-verbose", "0"], stdout=log, stderr=subprocess.STDOUT, env=env)
    request.getfixturevalue("streams")  # the references, while the server loads its models
    client = grpc.InferenceServerClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 300
    while True:
        try:
            if client.is_model_ready("s3rt_stream") and client.is_model_ready("s3rt_short"):
                break
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("tritonserver did not become ready:\n" + (tmp / "server.log").read_text()[-3000:])
        time.sleep(1)
    info = {"proc": proc, "port": port, "client": client, "log": tmp / "server.log", "shm": shm_before,
            "children": _children(proc.pid)}
    yield info
    if proc.poll() is None:  # (when the shutdown test did not run, e.g. with -k)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


def _infer(grpc, client, model, corrid, image, mask=None, start=False, end=False):
    inputs = [grpc.InferInput("IMAGE", [1, *image.shape], "UINT8")]
    inputs[0].set_data_from_numpy(image[None])
    if mask is not None:
        inputs.append(grpc.InferInput("MASK", [1, *mask.shape], "INT32"))
        inputs[1].set_data_from_numpy(mask[None].astype(np.int32))
    outputs = [grpc.InferRequestedOutput("MASK_OUT"), grpc.InferRequestedOutput("OBJECT_IDS")]
    r = client.infer(model, inputs, outputs=outputs, sequence_id=corrid, sequence_start=start, sequence_end=end)
    return r.as_numpy("MASK_OUT")[0]


def test_example_client_streams_a_folder(server, tmp_path):
    """examples/triton_client.py (runs first: the next test shuts the server down)."""
    import importlib.util

    from s3rt.io.frames import open_frames
    from s3rt.io.masks import read_mask
    from s3rt.synthetic import make_clip, write_clip

    frames, masks = make_clip(8, H, W, 2, seed=300)
    names = write_clip(tmp_path / "clip", frames, masks)
    spec = importlib.util.spec_from_file_location("triton_client", REPO_ROOT / "examples" / "triton_client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    assert client.main(["--url", f"127.0.0.1:{server['port']}", "--input", str(tmp_path / "clip" / "JPEGImages"),
                        "--mask", str(tmp_path / "clip" / "Annotations" / f"{names[0]}.png"),
                        "--out", str(tmp_path / "masks"), "--sequence-id", "4242"]) == 0
    decoded = [f for _, f in open_frames(tmp_path / "clip" / "JPEGImages")]  # the JPEG frames the client sent
    for name, want in zip(names, _solo_masks(decoded, masks[0]), strict=True):
        assert np.array_equal(read_mask(tmp_path / "masks" / f"{name}.png"), want), name


def test_eight_streams_through_a_real_server(server, streams):
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    got = {k: [] for k in range(STREAMS)}
    failures = []
    errors = {}
    barrier = threading.Barrier(STREAMS + 1)

    def stream(k):
        client = grpc.InferenceServerClient(f"127.0.0.1:{server['port']}")
        frames, masks, _ = streams[k]
        try:
            for t in range(FRAMES):
                if t == 20:
                    barrier.wait(timeout=600)  # the bad requests go in while every stream is open
                    barrier.wait(timeout=600)
                got[k].append(_infer(grpc, client, "s3rt_stream", 1000 + k, frames[t], masks[0] if t == 0 else None,
                                     start=t == 0, end=t == FRAMES - 1))
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append((k, e))
            barrier.abort()

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(STREAMS)]
    for t in threads:
        t.start()
    barrier.wait(timeout=600)
    client = server["client"]
    f0, m0, _ = streams[0]
    bad = {
        "unknown stream without START": lambda: _infer(grpc, client, "s3rt_stream", 77, f0[0]),
        "wrong image size": lambda: _infer(grpc, client, "s3rt_stream", 1000, f0[20][:32]),
        "mask with an id outside 1..255": lambda: _infer(grpc, client, "s3rt_stream", 1001, f0[20],
                                                         np.full((H, W), 300)),
    }
    for what, call in bad.items():
        try:
            call()
        except InferenceServerException as e:
            errors[what] = str(e)
    # the idle timeout (2 s on s3rt_short): start a stream, let the 8 streams go on, wait past it, continue
    _infer(grpc, client, "s3rt_short", 5, f0[0], m0[0], start=True)
    barrier.wait(timeout=600)
    time.sleep(3)
    try:
        _infer(grpc, client, "s3rt_short", 5, f0[1])
    except InferenceServerException as e:
        errors["idle past the timeout"] = str(e)
    for t in threads:
        t.join(timeout=1200)
    assert not failures, failures
    assert set(errors) == {*bad, "idle past the timeout"}, errors
    assert "START" in errors["unknown stream without START"]
    assert "frame size changed" in errors["wrong image size"]
    assert "1..255" in errors["mask with an id outside 1..255"]

    for k, (_, _, want) in enumerate(streams):
        for t in range(FRAMES):
            assert np.array_equal(got[k][t], want[t]), (k, t)

    stats = client.get_inference_statistics("s3rt_stream").model_stats[0]
    # the two frames the model refused reached it; whether Triton counts them depends on its version
    assert STREAMS * FRAMES <= stats.inference_count - 8 <= STREAMS * FRAMES + 2  # (8: the example client's)
    batches = {b.batch_size: b.compute_infer.count for b in stats.batch_stats}
    assert stats.execution_count < stats.inference_count, batches  # frames of several streams in one execute
    assert max(batches) >= 2, batches

    proc = server["proc"]
    children = server["children"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, server["log"].read_text()[-3000:]
    time.sleep(1)
    assert not [c for c in children if Path(f"/proc/{c}").exists()], "stub processes left behind"
    left = {n for n in set(os.listdir("/dev/shm")) - server["shm"] if "triton" in n}
    assert not left, left
