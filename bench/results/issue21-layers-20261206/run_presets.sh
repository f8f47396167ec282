#!/bin/bash
# usage: runall.sh SRC OUTDIR
SRC=$1; OUT=$2; mkdir -p $OUT
cd /tmp/h21
PY=/work/main/.venv/bin/python
export PYTHONPATH=$SRC
D=/work/main/data/mnist
$PY -c 'import deeptut; print(deeptut.__file__)' > $OUT/which.txt
run() { name=$1; shift; timeout 900 $PY -m deeptut train "$@" --data-dir $D --threads 1 --runs-dir $OUT/runs > $OUT/$name.log 2>&1; echo "rc=$?" >> $OUT/$name.log; }
s=$(date +%s); run logistic logistic --n_epochs 1; echo "$(( $(date +%s)-s ))s" >> $OUT/times.txt
s=$(date +%s); run mlp mlp --n_epochs 1; echo "$(( $(date +%s)-s ))s" >> $OUT/times.txt
s=$(date +%s); run da da --n_epochs 1; echo "$(( $(date +%s)-s ))s" >> $OUT/times.txt
s=$(date +%s); run rbm rbm --n_epochs 1 --sample false; echo "$(( $(date +%s)-s ))s" >> $OUT/times.txt
s=$(date +%s); run ca ca --n_epochs 1; echo "$(( $(date +%s)-s ))s" >> $OUT/times.txt
s=$(date +%s); run sda sda --pretraining_epochs 1 --n_epochs 1; echo "$(( $(date +%s)-s ))s" >> $OUT/times.txt
s=$(date +%s); run dbn dbn --pretraining_epochs 1 --n_epochs 1; echo "$(( $(date +%s)-s ))s" >> $OUT/times.txt
s=$(date +%s); run lenet lenet --n_epochs 1; echo "$(( $(date +%s)-s ))s" >> $OUT/times.txt
