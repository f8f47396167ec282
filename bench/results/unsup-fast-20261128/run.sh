#!/bin/bash
# usage: run.sh NAME TIMEOUT preset args...
name=$1; to=$2; shift 2
cd /work/wt/fastunsup; export PYTHONPATH=$PWD/src
log=/tmp/fu/logs/$name.log
{ echo "START $(date -u +%T) $(uptime)"; echo "ARGS $*"
  /usr/bin/time -f "WALL %e s USER %U s SYS %S s" timeout $to /work/main/.venv/bin/python -m deeptut train "$@" --runs-dir /tmp/fu/runs --threads 1
  echo "END $(date -u +%T) $(uptime)"; } > $log 2>&1
