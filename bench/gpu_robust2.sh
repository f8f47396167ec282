#!/bin/bash
# The second device call of 2026-11-28 (after bench/gpu_robust.sh): mlp-fast's leading settings and
# lenet-fast-gpu's, 3 seeds each on MNIST and Fashion-MNIST (the first call's budgets left them 1 and 2 seeds).
set -u
out=${OUT:-bench/results}
export PYTHONUNBUFFERED=1 DEEPTUT_DATA=${DEEPTUT_DATA:-$PWD/.gl/data}
log=$out/gpu-robust2.log
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } >"$log" 2>&1
two="--datasets mnist,fashion-mnist --seeds 3 --budget-s 1000"
timeout 150 python3 bench/gpu_sweep.py --preset mlp-fast --ieee $two --only "lr 0.05, std;lr 0.05, std, relu;lr 0.1, std, relu;lr 0.05, 24 ep, std;lr 0.1, 24 ep, std;lr 0.1, 24 ep, std, relu;lr 0.05, 24 ep, std, relu;lr 0.03, 24 ep, std, relu" >>"$log" 2>&1
timeout 160 python3 bench/gpu_sweep.py --preset lenet-fast-gpu $two --only "lr 0.1, std, relu;lr 0.05, std, relu, 32-64 kernels;lr 0.1, std, 16 epochs;lr 0.1, std;lr 0.1, std, moves 1;lr 0.1, std, relu, 16 epochs;lr 0.1, std, relu, moves 1, 16 epochs;lr 0.1, std, relu, moves 1, 32-64 kernels, 16 epochs" >>"$log" 2>&1
echo "done $(date -u)" >>"$log"
