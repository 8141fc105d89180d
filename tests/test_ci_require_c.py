"""FRACBNN_REQUIRE_C=1 (set by .ci/run) turns 'C build missing' skips into failures (issue 13, item 13)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PROBE = '''
import pytest
from conftest import needs_c, skip_or_fail_without_c

@needs_c(False, "pretend extension not built")
def test_marked():
    pass

def test_inline():
    skip_or_fail_without_c("pretend kernels not built")

@needs_c(True, "built")
def test_built():
    pass
'''


def _run(tmp_path: Path, require: str | None) -> tuple[int, str]:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    # CI=true makes pytest print untruncated summaries; the probe run should look the same everywhere
    env = {k: v for k, v in os.environ.items() if k not in ("FRACBNN_REQUIRE_C", "CI")}
    if require is not None:
        env["FRACBNN_REQUIRE_C"] = require
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout


def test_missing_c_build_skips_for_users_and_fails_under_ci(tmp_path):
    rc, user = _run(tmp_path, None)
    assert rc == 0 and "1 passed, 2 skipped" in user and "pretend extension not built" in user
    rc, ci = _run(tmp_path, "1")  # the marked test errors in setup, the inline one fails: the run fails
    assert rc == 1 and "1 failed, 1 passed, 1 error" in ci and ci.count("FRACBNN_REQUIRE_C is set") == 2
    rc, off = _run(tmp_path, "0")
    assert rc == 0 and "1 passed, 2 skipped" in off


def test_ci_script_sets_the_variable_and_runs_the_readme_command():
    ci = (HERE.parent / ".ci" / "run").read_text()
    readme = (HERE.parent / "README.md").read_text()
    assert "export FRACBNN_REQUIRE_C=1" in ci
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert command in readme  # still exactly the README's test command
