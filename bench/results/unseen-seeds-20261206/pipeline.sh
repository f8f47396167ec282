#!/bin/bash
# Issue 26 point 2: lenet-fast on seeds that played no part in choosing it (6, 7: no run of the preset or of
# its candidates used them; it was chosen over seeds 1-3, earlier versions ran at 1-5), MNIST then
# Fashion-MNIST, one run at a time after the RBM runs (rbm-binarize-20261206/pipeline2.sh), one thread
# (run.sh logs date, load, CPU, torch). dbn-fast: see README.md here (seeds 2, 3 of 2026-11-28 are unseen).
here=$(cd "$(dirname "$0")" && pwd); runs=/tmp/rbb/unseen; cd /work/main; mkdir -p $runs
while pgrep -f "rbm-binarize-20261206/pipeline" >/dev/null; do sleep 5; done
for s in ${1:-6 7}; do
  for ds in mnist fashion-mnist; do
    name=lenet-fast-$ds-seed$s
    "$here/run.sh" $name train lenet-fast --seed $s --dataset $ds --threads 1 --run-dir $runs/$name
    for f in config.json summary.json; do cp $runs/$name/$f "$here/$name.$f"; done
  done
done
echo "PIPELINE DONE $(date -u '+%F %T') $(uptime)" >> "$here/pipeline.done"
