"""LeNet's Triton kernels (lenet_triton.py, tail_triton.py) compiled ahead of time for an NVIDIA GPU, without
one: what the interpreter cannot check (bench/triton_aot.py and tests/test_lenet_step.py use it)."""

from __future__ import annotations

import os

from deeptut.accel.cuda import lenet_triton as lt
from deeptut.accel.cuda import tail_triton


def compile_for_gpu(kernel: str, in_maps: int, side: int, out_maps: int, config: tuple[int, ...],
                    precision: str = "ieee", arch: int = 90) -> tuple[int, int]:
    """Compile one kernel ahead of time for an NVIDIA GPU of compute capability `arch` (90: H100/H200) --
    no GPU needed, only Triton's bundled ptxas -- and return (registers per thread, stack bytes per thread;
    > 0 means registers spilled). For bench/triton_aot.py and the tests: the interpreter checks what the
    kernels compute, this checks that they compile for the hardware and how heavy they are."""
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    p, k = (side - lt.FILTER + 1) // 2, in_maps * lt.FILTER * lt.FILTER
    consts = {"IC": in_maps, "H": side, "OC": out_maps, "P": p, "K": k, "ACT": 0, "PREC": precision,
              "BLOCK_R": config[0], "BLOCK_OC": lt._pow2(out_maps), "BLOCK_K": config[1]}
    if kernel == "fold":  # config: (BLOCK, num_warps)
        consts = {"IC": in_maps, "H": side, "O": side - lt.FILTER + 1, "BLOCK": config[0]}
        fn, sig = lt._fold_kernel, {"cols_ptr": "*fp32", "dx_ptr": "*fp32", "total": "i32"}
    elif kernel == "tail":  # tail_triton.py; in_maps = hidden units, out_maps = classes; config:
        # (BLOCK_R, BLOCK_H, num_warps)
        consts = {"H": in_maps, "C": out_maps, "ACT": 0, "PREC": precision, "BLOCK_R": config[0],
                  "BLOCK_H": config[1], "BLOCK_C": 16}
        fn, sig = tail_triton._tail_kernel, {
            "pre_ptr": "*fp32", "w_ptr": "*fp32", "b_ptr": "*fp32", "y_ptr": "*i64", "h_ptr": "*fp32",
            "dz_ptr": "*fp32", "dpre_ptr": "*fp32", "nll_ptr": "*fp32", "n": "i32", "inv_n": "fp32"}
    elif kernel == "forward":
        fn, sig = lt._forward_kernel, {"x_ptr": "*fp32", "w_ptr": "*fp32", "b_ptr": "*fp32", "y_ptr": "*fp32",
                                    "pos_ptr": "*u8", "R": "i32"}
    else:
        fn, sig = lt._weight_grad_kernel, {"gy_ptr": "*fp32", "y_ptr": "*fp32", "pos_ptr": "*u8", "x_ptr": "*fp32",
                                        "pw_ptr": "*fp32", "pb_ptr": "*fp32", "R": "i32"}
        consts["ROWS_PER"] = 8 * config[0]  # a typical slice (the tutorial LeNet's layer 1: 256 rows)
    src = ASTSource(fn=fn, signature={**sig, **{c: "constexpr" for c in consts}}, constexprs=consts)
    compiled = lt.triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": config[-1]})
    tool = os.path.join(os.path.dirname(lt.triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    if m is None:
        raise RuntimeError(f"cuobjdump printed no resource usage: {out[-300:]}")
    return int(m.group(1)), int(m.group(2))
