#!/bin/bash
# The rbm-fast part of issue 26 point 6, one command after the other at one thread (run.sh logs each):
# rbm-fast trained on grey pixels (the preset; run before this script: rbmfast-grey.log) and on one fixed
# stochastic binarisation (--binarize stochastic), each evaluated under both test protocols (100 AIS runs,
# the paper's 14,500 steps, seed 0), and log Z of each model once more with a ladder ten times longer
# (145,000 steps, 20 AIS runs, seed 1); check.py compares them.
here=$(cd "$(dirname "$0")" && pwd); runs=/tmp/rbb/runs; cd /work/main
while pgrep -f "run-dir $runs/rbmfast-grey " >/dev/null; do sleep 5; done
"$here/run.sh" rbmfast-stoch train rbm-fast --binarize stochastic --threads 1 --run-dir $runs/rbmfast-stoch --sample false
for m in rbmfast-grey rbmfast-stoch; do
  for f in config.json summary.json metrics.jsonl; do cp $runs/$m/$f "$here/$m.$f"; done
done
for m in rbmfast-grey rbmfast-stoch; do
  for p in round stochastic; do
    "$here/run.sh" $m.eval-$p eval $runs/$m --log-likelihood --binarize $p
  done
  cp $runs/$m/log_likelihood.json "$here/$m.round.log_likelihood.json"
  cp $runs/$m/log_likelihood-stochastic.json "$here/$m.stochastic.log_likelihood.json"
  p=$([ $m = rbmfast-grey ] && echo round || echo stochastic)
  "$here/run.sh" $m.eval-long eval $runs/$m --log-likelihood --binarize $p --ais-steps 145000 --ais-runs 20 --seed 1
  [ $p = round ] && src=log_likelihood.json || src=log_likelihood-stochastic.json
  cp $runs/$m/$src "$here/$m.long-ladder.log_likelihood.json"
done
/work/main/.venv/bin/python "$here/check.py" > "$here/check.txt" 2>&1
echo "PIPELINE DONE $(date -u '+%F %T') $(uptime)" >> "$here/check.txt"
