#!/bin/bash
# One device call (issues 15 and 16), each part under its own timeout, ~7 minutes on an H200:
#   the fast presets' grids on MNIST and Fashion-MNIST, 3 seeds, chosen by validation (bench/gpu_sweep.py;
#   lenet-fast and mlp-fast in IEEE float32, as on the CPU; lenet-fast-gpu as the preset runs, TF32), first
#   the tutorial LeNet under the 0.995 threshold and McNemar's rule (bench/mcnemar_rule.py).
# Fashion-MNIST does not travel with the checkout: copy /usr/share/datasets/fashion-mnist/*.gz into
# .gl/data/fashion-mnist/ (git-ignored) and carry .gl. Results: $OUT (or bench/results/ without a device tool).
set -u
out=${OUT:-bench/results}
export PYTHONUNBUFFERED=1 DEEPTUT_DATA=${DEEPTUT_DATA:-$PWD/.gl/data}
log=$out/gpu-robust.log
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } >"$log" 2>&1
two="--datasets mnist,fashion-mnist --seeds 3"
timeout 90 python3 bench/mcnemar_rule.py --preset lenet --device cuda --override conv=cudnn >>"$log" 2>&1
timeout 180 python3 bench/gpu_sweep.py --preset lenet-fast --ieee --set conv=cudnn $two --budget-s 120 >>"$log" 2>&1
timeout 100 python3 bench/gpu_sweep.py --preset mlp-fast --ieee $two --budget-s 60 >>"$log" 2>&1
timeout 200 python3 bench/gpu_sweep.py --preset lenet-fast-gpu $two --budget-s 130 >>"$log" 2>&1
echo "done $(date -u)" >>"$log"
