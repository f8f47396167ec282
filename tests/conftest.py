"""Test-session setup shared by all test modules."""

import os

import pytest
import torch

# Without CUDA, the fused Triton kernels of LeNet (accel/cuda/lenet_triton.py) run in Triton's interpreter.
# It is chosen when Triton's kernels are defined, i.e. before deeptut.accel.cuda.lenet_triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread():
    """One torch thread for a test module's tiny tensors (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    on the shared 2-core machine one thread is ~40x faster than two for them (thread hand-offs); results
    that depend on the thread count are then pinned too."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
