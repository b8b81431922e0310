import os
import pathlib

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
# ../shared beside the checkout; CI may clone elsewhere on the same machine, so also try the
# workplace's fixed location. Tests that need it skip with the reason when neither exists.
_CANDIDATES = [REPO.parent / "shared", pathlib.Path("/work/shared")]
SHARED = pathlib.Path(os.environ.get("S3RT_SHARED") or next((p for p in _CANDIDATES if p.exists()), _CANDIDATES[0]))
STATE_DICTS = SHARED / "reference" / "state_dicts"
DAVIS = SHARED / "data" / "davis"


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep torch from oversubscribing when pytest runs alongside other work.
    torch.set_num_threads(2)
    yield


@pytest.fixture
def one_torch_thread():
    """cutie-test at tiny sizes is fastest on one thread; two threads on a busy 2-core machine run
    20x slower. Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# One small export per preset for the whole session, reused from disk by every test module.
EXPORT_SIZE = (64, 96)
EXPORT_MAX_OBJECTS = 3


def shared_export(tmp_path_factory, preset):
    from s3rt.export import export_graphs
    out = tmp_path_factory.getbasetemp() / f"export-{preset}-{EXPORT_SIZE[0]}x{EXPORT_SIZE[1]}"
    return export_graphs(preset, out, size=EXPORT_SIZE, max_objects=EXPORT_MAX_OBJECTS, progress=False, reuse=True)
