#!/bin/bash
# The tutorial MLP's and LeNet's first epoch on the CPU, one thread (2026-12-06): their printed validation and
# test errors, to set beside the published logs (mlp.py: 9.62 % / 10.09 %; convolutional_mlp.py: 9.23 % / 9.54 %).
set -u
cd "$(dirname "$0")/../../.."
out=bench/results/cpu-first-epochs-20261206
lscpu | grep "Model name" > $out/lscpu.txt
.venv/bin/python -c "import torch; print(torch.__version__)" > $out/torch.txt
for m in mlp lenet; do
  d=/tmp/first-epoch-$m; rm -rf $d
  echo "START $(date -u +%H:%M:%S) $(uptime)" > $out/$m.log
  /usr/bin/time -v .venv/bin/deeptut train $m --n_epochs 1 --threads 1 --run-dir $d >> $out/$m.log 2> $out/$m.time-v.txt
  echo "END $(date -u +%H:%M:%S) $(uptime)" >> $out/$m.log
  cp $d/summary.json $out/$m.summary.json
done
