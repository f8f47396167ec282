#!/bin/sh
# The RNN-RBM on music21's Bach chorales: the tutorial preset against the fast preset after the same
# training time (max_train_seconds), both started at once, one thread each, on the shared 2-core machine.
# Usage: sh bench/results/rnnrbm-20261206/run_bench.sh SECONDS
set -e
S=${1:-240}
B=bench/results/rnnrbm-20261206
R=/tmp/rr/bench
{ date -u; lscpu | grep 'Model name'; uptime; .venv/bin/python -c 'import torch; print("torch", torch.__version__)'; } > $B/machine-$S.txt
for p in rnnrbm-chorales rnnrbm-fast; do
  rm -rf $R/$p-$S
  .venv/bin/deeptut train $p --threads 1 --device cpu --max_train_seconds $S --run-dir $R/$p-$S > $B/$p-$S.log 2>&1 &
done
while [ "$(jobs -p | wc -l)" -gt 0 ]; do uptime >> $B/machine-$S.txt; sleep 30; done
wait
for p in rnnrbm-chorales rnnrbm-fast; do
  cp $R/$p-$S/summary.json $B/$p-$S.summary.json; cp $R/$p-$S/metrics.jsonl $B/$p-$S.metrics.jsonl
done
{ date -u; uptime; } >> $B/machine-$S.txt
