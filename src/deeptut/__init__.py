"""deeptut: the classic Deep Learning Tutorials on PyTorch."""

__version__ = "0.1.0"
