#!/bin/bash
# usage: ais.sh NAME  -- AIS (paper ladder, 100 runs) of the run logged in logs/NAME.log, then validation LL
name=$1; cd /work/wt/fastunsup; export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
dir=$(grep -o "run directory: [^ ]*" /tmp/fu/logs/$name.log | cut -d' ' -f3)
log=/tmp/fu/logs/$name.ais.log
{ echo "START $(date -u +%T) $(uptime) $dir"
  /usr/bin/time -f "WALL %e s USER %U s" timeout 900 /work/main/.venv/bin/python -m deeptut eval $dir --log-likelihood
  timeout 300 /work/main/.venv/bin/python /tmp/fu/valid_ll.py $dir
  echo "END $(date -u +%T) $(uptime)"; } > $log 2>&1
