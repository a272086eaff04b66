#!/usr/bin/env bash
# Everything issue #3 needs a GPU for, in one call on a lent GPU machine (device tool), sized to
# finish in under 9 minutes (the stage limits sum to 510 s) on an H100:
#
#   run(command="bash bench/gpu_session.sh", timeout_s=600)
#
# 1. kernel benchmark, fp32 (all providers, torch.compile at the target shapes) and bf16;
# 2. compile latency per new candidate, real first launches;
# 3. the Triton tests on the GPU (bf16 included), sweep size NLFS_TEST_SCALE (default 0.3).
# Results land in bench/results/ and, packed as results.tgz beside the logs, in $OUT (unpack it here
# and commit). Each stage has its own
# time limit, so one slow stage cannot starve the rest. Uses the machine's python3 (torch, triton,
# pytest there); nlfs runs from the checkout. `--smoke` runs the same stages tiny on a CPU
# (TRITON_INTERPRET=1) to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nlfs_gpu_session}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export NLFS_CACHE_DIR=/tmp/nlfs_gpu_session_cache  # not under $OUT: at most 8 files come back
export TRITON_CACHE_DIR=/tmp/nlfs_gpu_session_triton  # cold: first calls include the compile
rm -rf "$NLFS_CACHE_DIR" "$TRITON_CACHE_DIR"
$PY -c "import torch, triton, numpy, pytest" || { echo "python3 lacks torch/triton/numpy/pytest"; exit 2; }
XDIST=""
$PY -c "import xdist" 2>/dev/null && XDIST="-n 8"  # pytest-xdist, where the machine has it
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1

stage() {  # stage NAME SECONDS CMD...: runs CMD with a time limit, log in $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc=$rc in $((SECONDS - t0)) s"
    tail -n 12 "$OUT/$name.log"
}

{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv 2>/dev/null;
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
    | tee "$OUT/machine.txt"

if [ $SMOKE = 1 ]; then
    export TRITON_INTERPRET=1
    stage kernels_smoke 300 $PY -m bench.kernels_gpu --smoke --losses CE,NGL --out "$OUT/results"
    stage compile_latency 300 env -u TRITON_INTERPRET $PY -m bench.compile_latency --random 1 \
        --elems-per-thread 4 --out "$OUT/results"
    stage tests 600 env NLFS_TEST_SCALE=0.02 $PY -m pytest -q -x -p no:cacheprovider \
        tests/backends/test_triton.py -k "catalogue_half or scale"
    exit 0
fi

stage kernels_fp32 210 $PY -m bench.kernels_gpu --dtype float32
stage kernels_bf16 80 $PY -m bench.kernels_gpu --dtype bfloat16 --no-compile
stage compile_latency 70 $PY -m bench.compile_latency --random 15 --forms auto
stage tests 150 env NLFS_TEST_SCALE="${NLFS_TEST_SCALE:-0.3}" $PY -m pytest -q -x -p no:cacheprovider $XDIST \
    tests/backends/test_triton.py tests/backends/test_triton_special.py
tar -czf "$OUT/results.tgz" bench/results/kernels_gpu_* bench/results/compile_latency_gpu_* 2>/dev/null
echo "results: bench/results/ and $OUT"
