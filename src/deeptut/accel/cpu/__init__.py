"""CPU accelerators: C kernels (csrc/, built and loaded by ckernels.py), packed splits, the fused and
nonzero-pixel steps, numpy's BLAS products and the CPU evaluator. See deeptut.accel for the glossary."""
