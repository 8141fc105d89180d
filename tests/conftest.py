import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

#: CI sets FRACBNN_REQUIRE_C=1 (.ci/run): then a missing C build (fast engine, training kernels, g++ for
#: csim) FAILS the tests that need it instead of skipping them, so a broken C build cannot land green.
#: Without it, a user with no compiler gets skips and the pure-Python fallback.
REQUIRE_C = os.environ.get("FRACBNN_REQUIRE_C", "").strip() not in ("", "0")


def datasets_dir() -> Path:
    """../shared/datasets beside the repository, or $FRACBNN_DATASETS."""
    return Path(os.environ.get("FRACBNN_DATASETS", REPO.parent / "shared" / "datasets"))


def needs_c(available: bool, reason: str):
    """Mark a test (or module, as ``pytestmark``) that needs a C build: skipped without it, failed under CI."""
    return pytest.mark.needs_c(available=bool(available), reason=reason)


def skip_or_fail_without_c(reason: str) -> None:
    """Inside a test: skip for lack of a C build, or fail when FRACBNN_REQUIRE_C is set."""
    if REQUIRE_C:
        pytest.fail(f"{reason}; FRACBNN_REQUIRE_C is set, so a missing C build is a failure", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_c(available, reason): needs a C build (see tests/conftest.py)")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_c"):
        if not mark.kwargs["available"]:
            skip_or_fail_without_c(mark.kwargs["reason"])


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def restore_threads():
    """Put torch's thread count back after a test that lets the trainer choose it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
