import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


# Under pytest-xdist (scripts/test.sh runs `-n auto`), the workers share the cores: each worker and
# the subprocesses its tests start get an equal share instead of all of them.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(min(THREADS, torch.get_num_threads()))
    yield
