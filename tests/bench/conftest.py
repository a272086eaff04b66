"""Run Triton kernels on CPU when there is no GPU.

``TRITON_INTERPRET=1`` must be set before any ``@triton.jit`` decoration (the interpreter is chosen
then), so it is set here, before the test modules import ``nlfs.kernels.special`` or compile kernels.
With a CUDA device the kernels are compiled for it instead.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
