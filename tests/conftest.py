import os
import pathlib

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("S3RT_SHARED", REPO.parent / "shared"))
STATE_DICTS = SHARED / "reference" / "state_dicts"
DAVIS = SHARED / "data" / "davis"


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep torch from oversubscribing when pytest runs alongside other work.
    torch.set_num_threads(2)
    yield
