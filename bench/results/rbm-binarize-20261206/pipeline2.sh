#!/bin/bash
# What ran (replacing pipeline.sh's evaluation part after its first step, the rbmfast-stoch training, when
# AIS turned out to take ~6.5 min and the long ladder ~17 min each at one thread on this loaded machine):
# each rbm-fast model evaluated once by `deeptut eval --log-likelihood` under the binarisation it was trained
# on (grey -> round, stochastic -> stochastic; 100 AIS runs, 14,500 steps, seed 0), the other protocol from
# that same log Z (xprotocol.py), then log Z once more with a ladder ten times longer (145,000 steps, 20 AIS
# runs, seed 1), and check.py.
here=$(cd "$(dirname "$0")" && pwd); runs=/tmp/rbb/runs; cd /work/main; py=/work/main/.venv/bin/python
export OMP_NUM_THREADS=1
while pgrep -f "run-dir $runs/rbmfast-stoch " >/dev/null; do sleep 5; done
for m in rbmfast-grey rbmfast-stoch; do
  for f in config.json summary.json metrics.jsonl; do cp $runs/$m/$f "$here/$m.$f"; done
done
for m in rbmfast-grey rbmfast-stoch; do
  if [ $m = rbmfast-grey ]; then p=round; q=stochastic; src=log_likelihood.json
  else p=stochastic; q=round; src=log_likelihood-stochastic.json; fi
  "$here/run.sh" $m.eval-$p eval $runs/$m --log-likelihood --binarize $p
  cp $runs/$m/$src "$here/$m.$p.log_likelihood.json"
  $py "$here/xprotocol.py" $runs/$m "$here/$m.$p.log_likelihood.json" $q "$here/$m.$q.log_likelihood.json" > "$here/$m.xprotocol.log" 2>&1
done
for m in rbmfast-grey rbmfast-stoch; do
  if [ $m = rbmfast-grey ]; then p=round; src=log_likelihood.json; else p=stochastic; src=log_likelihood-stochastic.json; fi
  "$here/run.sh" $m.eval-long eval $runs/$m --log-likelihood --binarize $p --ais-steps 145000 --ais-runs 20 --seed 1
  cp $runs/$m/$src "$here/$m.long-ladder.log_likelihood.json"
  $py "$here/check.py" > "$here/check.txt" 2>&1
done
echo "PIPELINE2 DONE $(date -u '+%F %T') $(uptime)" >> "$here/check.txt"
