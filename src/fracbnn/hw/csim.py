"""Build and run a generated project's C testbench with g++ (no Xilinx tools needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import FracBNNError
from .generate import load_project

CXXFLAGS = ["-O2", "-std=c++14", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-variable", "-Wno-unused-label"]


class CsimError(FracBNNError):
    """The testbench could not be built or run."""


def run_csim(project_dir: str | Path, cxx: str | None = None, timeout: float = 1800.0) -> dict:
    """Compile and run the testbench; returns the parsed csim_result.json plus ``stdout`` and ``returncode``.

    A logit mismatch is reported through ``returncode`` 1 (not an exception):
    the caller decides how to fail. The testbench runs in the project
    directory and gets it as its second argument (the ImageNet testbench
    reads its weights and test data from .bin files there; the CIFAR one
    ignores it).
    """
    d = Path(project_dir)
    load_project(d)  # clear error for a wrong directory
    cxx = cxx or os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise CsimError(f"C++ compiler {cxx!r} not found; install g++ or set CXX")
    build = d / "build"
    _check_writable(d, build)
    exe = build / "csim"
    cmd = [cxx, *CXXFLAGS, "-I", str(d / "src"), "-o", str(exe), str(d / "src" / "fracbnn_kernel.cpp"),
           str(d / "src" / "tb.cpp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        errs = [l for l in r.stderr.splitlines() if "error" in l] or r.stderr.strip().splitlines() or ["?"]
        first = errs[0].strip()[:300]
        raise CsimError(f"building the testbench failed ({first}); see {cxx} output by running: {' '.join(cmd)}")
    result_path = d / "csim_result.json"
    result_path.unlink(missing_ok=True)
    r = subprocess.run([str(exe.resolve()), str(result_path.resolve()), str(d.resolve())], capture_output=True,
                       text=True, timeout=timeout, cwd=d)
    if r.returncode not in (0, 1) or not result_path.is_file():
        raise CsimError(f"the testbench crashed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[:200]}")
    result = json.loads(result_path.read_text())
    result["stdout"] = r.stdout
    result["returncode"] = r.returncode
    return result


def _check_writable(project: Path, build: Path) -> None:
    """csim writes build/csim and csim_result.json inside the project: say so when it cannot."""
    for folder in (project, build):
        try:
            folder.mkdir(exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise CsimError(f"cannot write to {folder} ({e.strerror or e}); csim builds the testbench and writes "
                            f"its results inside the project: copy it somewhere writable (cp -r {project} "
                            "/tmp/) and run csim there") from None
