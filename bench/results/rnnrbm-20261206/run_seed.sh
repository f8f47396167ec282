#!/bin/sh
# A second pair (seed 2 for the data order's Gibbs noise and evaluation; same initialisation), as run_bench.sh.
set -e
S=${1:-240}; SEED=${2:-2}
B=bench/results/rnnrbm-20261206
R=/tmp/rr/bench
{ date -u; lscpu | grep 'Model name'; uptime; } > $B/machine-$S-seed$SEED.txt
for p in rnnrbm-chorales rnnrbm-fast; do
  rm -rf $R/$p-$S-seed$SEED
  .venv/bin/deeptut train $p --threads 1 --device cpu --seed $SEED --max_train_seconds $S --run-dir $R/$p-$S-seed$SEED > $B/$p-$S-seed$SEED.log 2>&1 &
done
wait
for p in rnnrbm-chorales rnnrbm-fast; do
  cp $R/$p-$S-seed$SEED/summary.json $B/$p-$S-seed$SEED.summary.json; cp $R/$p-$S-seed$SEED/metrics.jsonl $B/$p-$S-seed$SEED.metrics.jsonl
done
{ date -u; uptime; } >> $B/machine-$S-seed$SEED.txt
