"""CUDA accelerators: the graph step (graphs.py) and its updates (updates.py, lenet_manual.py), CUDA graph
capture (capture.py), LeNet's convolution choices (lenet_conv.py) and the Triton kernels (lenet_triton.py,
tail_triton.py). Everything here also runs, eagerly, on a CPU (the tests check it there). See
deeptut.accel for the glossary."""
