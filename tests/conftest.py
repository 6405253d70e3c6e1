import os

import pytest
import torch

# Small, deterministic CPU runs: the suite must stay fast on 2 cores. Under pytest-xdist each
# worker takes its share of the cores, so that workers do not fight over them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))


@pytest.fixture(autouse=True, scope="session")
def _tuning_cache_in_tmp(tmp_path_factory):
    # The fast path stores its timing decisions in a file under the user's cache by default; keep
    # the suite's decisions out of it (and away from decisions made under other loads).
    patch = pytest.MonkeyPatch()
    patch.setenv("PSPNET_TUNING_CACHE", str(tmp_path_factory.mktemp("tuning") / "tuning.json"))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
