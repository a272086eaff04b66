"""Builds the optional C++ CPU backend ``nlfs._cpp`` (csrc/) with pybind11.

A failed compile never fails the install: ``import nlfs`` keeps working and the ``cpp`` backend
reports why it is unavailable (``nlfs.backends.available_backends()``). Environment:
``NLFS_NO_CPP=1`` skips the extension. The extension is built for the machine that builds it
(``-march=native``); ``NLFS_CPP_PORTABLE=1`` leaves that out (portable wheels). On x86-64 glibc the
generated loops call glibc's vector maths library libmvec (SIMD exp/log/sin...; documented error
<= 4 ulp); ``NLFS_CPP_NO_LIBMVEC=1`` keeps the scalar libm calls. ``NLFS_CPP_NO_FP32=1`` makes
float32 logits compute in double by default (``nlfs.backends._cpp.set_fp32_compute`` at run time).
"""

import os
import sys
import warnings

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

ext_modules = []
cmdclass = {}

if not os.environ.get("NLFS_NO_CPP"):
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError as err:  # pybind11 is a build requirement, but never fail the install
        warnings.warn(f"nlfs: pybind11 unavailable ({err}); building without the C++ backend", stacklevel=1)
    else:
        import ctypes.util
        import platform

        # -fno-math-errno lets GCC vectorise libm calls; no -ffast-math (finite-math and
        # reassociation would change the protected-domain results), no FMA contraction.
        flags = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-fvisibility=hidden"]
        libs = []
        if not os.environ.get("NLFS_CPP_PORTABLE"):
            flags.append("-march=native")
        if (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
                and not os.environ.get("NLFS_CPP_NO_LIBMVEC") and ctypes.util.find_library("mvec")):
            flags.append("-DNLFS_LIBMVEC=1")
            libs = ["mvec", "m"]
        if os.environ.get("NLFS_CPP_NO_FP32"):
            flags.append("-DNLFS_FP32_COMPUTE=0")
        if sys.platform == "win32":
            flags = ["/O2", "/fp:precise"]
        ext_modules.append(
            Pybind11Extension(
                "nlfs._cpp",
                ["csrc/nlfs_cpp.cpp"],
                include_dirs=["csrc"],
                depends=["csrc/ops_generated.h", "csrc/special.h"],
                cxx_std=17,
                extra_compile_args=flags,
                libraries=libs,
                extra_link_args=[] if sys.platform in ("win32", "darwin") else ["-pthread"],
            )
        )

        class OptionalBuildExt(build_ext):
            """Build the extension if possible; warn (never fail) when the compiler cannot."""

            def run(self):
                try:
                    super().run()
                except Exception as err:  # noqa: BLE001 - any build failure must not break the install
                    self._warn(err)

            def build_extension(self, ext):
                try:
                    super().build_extension(ext)
                except Exception as err:  # noqa: BLE001
                    self._warn(err)

            @staticmethod
            def _warn(err):
                msg = (f"nlfs: could not build the C++ backend nlfs._cpp ({err}); the 'cpp' backend is "
                       "unavailable and 'auto' falls back to 'torch'. Fix the compiler error and rerun "
                       "`pip install -e .`.")
                warnings.warn(msg, stacklevel=1)
                print(msg, file=sys.stderr)

        cmdclass["build_ext"] = OptionalBuildExt

# kernels/ (Triton special functions and templates) sits at the top level, as the project layout
# asks, and installs as nlfs.kernels.
setup(
    packages=find_packages(include=["nlfs", "nlfs.*"]) + ["nlfs.kernels"],
    package_dir={"nlfs.kernels": "kernels"},
    package_data={"nlfs": ["found_losses.json"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
