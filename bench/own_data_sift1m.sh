#!/usr/bin/env bash
# The index commands on the 1.23M-vector dense-SIFT set (deepcodes data sift1m-cifar), exactly as a
# user runs them on their own files: build from the .bvecs base, then `deepcodes bench` against the
# faiss index of the same code bytes, one thread on both sides. Writes OUT/{ivf,vlq,itq}.dcx and
# OUT/bench-{ivf,vlq,itq}/ (bench.md, bench.json, recall_qps.png).
#
#   OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 bash bench/own_data_sift1m.sh [OUT]   # default bench/results/sift1m
set -euo pipefail
OUT=${1:-bench/results/sift1m}
DATA=${DEEPCODES_CACHE:-$HOME/.cache/deepcodes}/sift1m-cifar
mkdir -p "$OUT"
deepcodes data sift1m-cifar --no-progress > /dev/null
uptime
deepcodes build IVF1024,PQ16 --train "$DATA/base.bvecs" -o "$OUT/ivf.dcx" --no-progress
deepcodes bench "$OUT/ivf.dcx" --queries "$DATA/queries.bvecs" --gt "$DATA/groundtruth.ivecs" \
    --sweep nprobe=1,2,4,8,16,32,64 --against-faiss IVF1024,PQ16 --threads 1 --out "$OUT/bench-ivf" --no-progress
uptime
deepcodes build VLQ1024x64,PQ15 --train "$DATA/base.bvecs" -o "$OUT/vlq.dcx" --no-progress
deepcodes bench "$OUT/vlq.dcx" --queries "$DATA/queries.bvecs" --gt "$DATA/groundtruth.ivecs" \
    --sweep nprobe=1,2,4,8,16,32,64 --against-faiss IVF1024,PQ16 --threads 1 --out "$OUT/bench-vlq" --no-progress
uptime
deepcodes build ITQ64,MIH --train "$DATA/base.bvecs" -o "$OUT/itq.dcx" --no-progress
deepcodes bench "$OUT/itq.dcx" --queries "$DATA/queries.bvecs" --gt "$DATA/groundtruth.ivecs" \
    --against-faiss ITQ64,LSH --threads 1 --out "$OUT/bench-itq" --no-progress
uptime
