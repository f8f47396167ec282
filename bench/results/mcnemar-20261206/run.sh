#!/bin/bash
# Early stopping by McNemar's test on the tutorial logistic regression (2026-12-06, one thread).
set -u
cd "$(dirname "$0")/../../.."
out=bench/results/mcnemar-20261206
lscpu | grep "Model name" > $out/lscpu.txt
d=/tmp/mcnemar-logistic; rm -rf $d
echo "START $(date -u +%H:%M:%S) $(uptime)" > $out/logistic.log
.venv/bin/deeptut train logistic --improvement mcnemar --threads 1 --run-dir $d >> $out/logistic.log 2>&1
echo "END $(date -u +%H:%M:%S) $(uptime)" >> $out/logistic.log
cp $d/summary.json $out/logistic.summary.json
