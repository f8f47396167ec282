#!/bin/bash
# The `rbm` preset (rbm.py: 15 epochs of PCD-15, batch 20) on grey pixels and on the fixed stochastic
# binarisation, trained side by side (one thread each, the machine's two cores), then each evaluated as
# pipeline2.sh evaluates rbm-fast: AIS under the binarisation it was trained on (100 runs, 14,500 steps,
# seed 0), the other protocol from the same log Z (xprotocol.py), log Z once more with a ten-times-longer
# ladder (145,000 steps, 20 runs, seed 1), check.py. Started 2026-12-07 by the lead.
here=$(cd "$(dirname "$0")" && pwd); runs=/tmp/rbb/runs; cd /work/main; py=/work/main/.venv/bin/python
mkdir -p $runs
export OMP_NUM_THREADS=1
"$here/run.sh" rbm-grey train rbm --threads 1 --run-dir $runs/rbm-grey --sample false &
"$here/run.sh" rbm-stoch train rbm --binarize stochastic --threads 1 --run-dir $runs/rbm-stoch --sample false &
wait
for m in rbm-grey rbm-stoch; do
  for f in config.json summary.json metrics.jsonl; do cp $runs/$m/$f "$here/$m.$f"; done
done
ev() {  # model protocol other source
  m=$1; p=$2; q=$3; src=$4
  "$here/run.sh" $m.eval-$p eval $runs/$m --log-likelihood --binarize $p
  cp $runs/$m/$src "$here/$m.$p.log_likelihood.json"
  $py "$here/xprotocol.py" $runs/$m "$here/$m.$p.log_likelihood.json" $q "$here/$m.$q.log_likelihood.json" > "$here/$m.xprotocol.log" 2>&1
}
long() {
  m=$1; p=$2; src=$3
  "$here/run.sh" $m.eval-long eval $runs/$m --log-likelihood --binarize $p --ais-steps 145000 --ais-runs 20 --seed 1
  cp $runs/$m/$src "$here/$m.long-ladder.log_likelihood.json"
}
ev rbm-grey round stochastic log_likelihood.json &
ev rbm-stoch stochastic round log_likelihood-stochastic.json &
wait
long rbm-grey round log_likelihood.json &
long rbm-stoch stochastic log_likelihood-stochastic.json &
wait
echo "PIPELINE3 DONE $(date -u '+%F %T') $(uptime)" > "$here/pipeline3.done"
