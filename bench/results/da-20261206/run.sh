#!/bin/bash
# The `da` preset whole, at 0 % and 30 % corruption, one thread, one after the other (2026-12-06).
# Each: uptime at start/end, /usr/bin/time -v, stdout; summary.json and metrics.jsonl copied from the run dir.
set -u
cd "$(dirname "$0")/../../.."
out=bench/results/da-20261206
lscpu | grep "Model name" > $out/lscpu.txt
.venv/bin/python -c "import torch; print(torch.__version__)" > $out/torch.txt
for c in 0 0.3; do
  d=/tmp/da-run-$c; rm -rf $d
  echo "START $(date -u +%H:%M:%S) $(uptime)" > $out/da-c$c.log
  /usr/bin/time -v .venv/bin/deeptut train da --corruption_level $c --threads 1 --run-dir $d >> $out/da-c$c.log 2> $out/da-c$c.time-v.txt
  echo "END $(date -u +%H:%M:%S) $(uptime)" >> $out/da-c$c.log
  cp $d/summary.json $out/da-c$c.summary.json; cp $d/metrics.jsonl $out/da-c$c.metrics.jsonl
done
