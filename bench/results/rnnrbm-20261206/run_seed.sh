#!/bin/sh
# Another pair, as run_bench.sh, with another seed. KIND=seed: [run] seed, which in the rnnrbm family sets only
# the validation cost's Gibbs noise and the frames AIS is run on (training is fixed by init_seed, as
# rnnrbm.py's one numpy seed 0xbeef fixes the weights, the shuffles and the Gibbs noise): the same models,
# other frames. KIND=init_seed: another initialisation, order of pieces and Gibbs noise: other models.
# Usage: sh bench/results/rnnrbm-20261206/run_seed.sh SECONDS SEED [seed|init_seed]
set -e
S=${1:-240}; SEED=${2:-2}; KIND=${3:-seed}
B=bench/results/rnnrbm-20261206
R=/tmp/rr/bench
T=$S-$KIND$SEED
[ "$KIND" = seed ] && T=$S-seed$SEED
{ date -u; lscpu | grep 'Model name'; uptime; } > $B/machine-$T.txt
for p in rnnrbm-chorales rnnrbm-fast; do
  rm -rf $R/$p-$T
  .venv/bin/deeptut train $p --threads 1 --device cpu --$KIND $SEED --max_train_seconds $S --run-dir $R/$p-$T > $B/$p-$T.log 2>&1 &
done
wait
for p in rnnrbm-chorales rnnrbm-fast; do
  cp $R/$p-$T/summary.json $B/$p-$T.summary.json; cp $R/$p-$T/metrics.jsonl $B/$p-$T.metrics.jsonl
done
{ date -u; uptime; } >> $B/machine-$T.txt
