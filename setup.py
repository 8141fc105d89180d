"""Build of the optional compiled extensions.

All package metadata lives in pyproject.toml; this file only declares two C
extensions: ``fracbnn.deploy._fastkernels`` (the fast CPU inference engine)
and ``fracbnn.nn._trainops`` (fused CPU kernels for training FracBNN
layers). Both are optional: when no C compiler is available the build prints
a warning and fracbnn installs without them (the golden engine and the
plain-PyTorch training path still work; ``FastEngine`` then says how to
build it). OpenMP is used when the compiler supports ``-fopenmp``; the
kernels pick AVX2/POPCNT code at run time, so no ``-march=native`` is needed
and the built wheel runs on any CPU of its architecture.
"""

import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = os.path.join("src", "fracbnn", "deploy", "_kernels")
TRAIN_KERNELS = os.path.join("src", "fracbnn", "nn", "_kernels")
#: fracbnn_int.h, the scalar integer primitives shared with the generated HLS kernel
CSRC = os.path.join("src", "fracbnn", "_csrc")


def _compiles(compiler, flags) -> bool:
    """True if a small OpenMP program compiles and links with ``flags``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "omp_probe"), extra_postargs=flags)
        except Exception:  # any compiler/linker failure means "not supported"
            return False
    return True


class BuildFastKernels(build_ext):
    """Adds optimisation and (when it works) OpenMP flags for the compiler in use."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            base, omp = ["/O2"], ["/openmp"]
        else:
            base, omp = ["-O3"], ["-fopenmp"]
        use_omp = os.environ.get("FRACBNN_NO_OPENMP", "") == "" and _compiles(self.compiler, omp)
        if not use_omp:
            print("fracbnn: building the fast engine WITHOUT OpenMP (single-threaded)", file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = base + (omp if use_omp else [])
            if ext.name == "fracbnn.nn._trainops" and ctype != "msvc":
                # -fno-trapping-math lets gcc/clang vectorise the compare-and-select loops (only FP
                # exception flags are not preserved); -ffp-contract=off forbids fused multiply-adds,
                # which would round differently from PyTorch. No fast-math, no reassociation.
                ext.extra_compile_args += ["-fno-trapping-math", "-ffp-contract=off"]
            ext.extra_link_args = (omp if use_omp and ctype != "msvc" else [])
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "fracbnn.deploy._fastkernels",
            sources=[os.path.join(KERNELS, "fastkernels.c")],
            depends=[os.path.join(KERNELS, "fast_impl.h"), os.path.join(CSRC, "fracbnn_int.h")],
            include_dirs=[CSRC],
            optional=True,
        ),
        Extension(
            "fracbnn.nn._trainops",
            sources=[os.path.join(TRAIN_KERNELS, "trainops.c")],
            depends=[os.path.join(TRAIN_KERNELS, "train_impl.h")],
            optional=True,
        ),
    ],
    cmdclass={"build_ext": BuildFastKernels},
)
