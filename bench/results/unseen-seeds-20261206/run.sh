#!/bin/bash
# usage: run.sh NAME CMD...  -- run one deeptut command at one thread, logged to this folder's NAME.log with
# the date, load (uptime), CPU model and torch version before and after, and /usr/bin/time's wall/user s.
here=$(cd "$(dirname "$0")" && pwd); name=$1; shift
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
py=/work/main/.venv/bin/python
{ echo "START $(date -u '+%F %T') UTC | $(uptime)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') | torch $($py -c 'import torch; print(torch.__version__)')"
  echo "cmd: deeptut $*"
  /usr/bin/time -f "WALL %e s USER %U s SYS %S s" $py -m deeptut "$@"
  echo "rc $?"
  echo "END $(date -u '+%F %T') UTC | $(uptime)"; } > "$here/$name.log" 2>&1
