import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    """../shared/datasets beside the repository, or $FRACBNN_DATASETS."""
    return Path(os.environ.get("FRACBNN_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
