"""Test-session setup shared by all test modules."""

import os

import torch

# Without CUDA, the fused Triton kernels of LeNet (accel/cuda/lenet_triton.py) run in Triton's interpreter.
# It is chosen when Triton's kernels are defined, i.e. before deeptut.accel.cuda.lenet_triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
