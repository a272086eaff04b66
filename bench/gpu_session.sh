#!/usr/bin/env bash
# Everything issues #3 and #25 need a GPU for, in one call on a lent GPU machine (device tool), sized to
# finish in under 9 minutes (the stage limits sum to 520 s) on an H100:
#
#   run(command="bash bench/gpu_session.sh", timeout_s=600)
#
# 1. kernel benchmark, fp32 (all providers, torch.compile at the target shapes) and bf16;
# 2. compile latency per new candidate, real first launches;
# 3. the Triton tests on the GPU (bf16 included), sweep size NLFS_TEST_SCALE (default 0.3);
# 4. packed training (issue #25): exactness of a pack against its members trained alone on the GPU
#    (digits, fp32 and bf16), then `bench.packed_training --quick` (trainings per hour, sequential vs
#    packed). Fashion-MNIST is read from $NLFS_DATA_ROOT (default data/: `mkdir -p data && cp -r
#    /usr/share/datasets/fashion-mnist data/` here, and carry=["data"]); without it the benchmark runs
#    on random images of its shape, said in the results.
# `bash bench/gpu_session.sh --packed` runs stage 4 alone (when 1-3 have their results already).
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
PACKED_ONLY=0
[ "${1:-}" = "--packed" ] && PACKED_ONLY=1
DATA_ROOT=${NLFS_DATA_ROOT:-data}

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
    stage packed_check 300 env -u TRITON_INTERPRET $PY -m bench.packed_training --check --steps 3 --device cpu \
        --data-root "$DATA_ROOT"
    stage packed_bench 300 env -u TRITON_INTERPRET $PY -m bench.packed_training --quick --device cpu --ks 1,2 \
        --amps off --regimes rung0 --steps 2 --data-root "$DATA_ROOT" --out "$OUT/results"
    exit 0
fi

if [ $PACKED_ONLY = 0 ]; then
    stage kernels_fp32 150 $PY -m bench.kernels_gpu --dtype float32
    stage kernels_bf16 60 $PY -m bench.kernels_gpu --dtype bfloat16 --no-compile
    stage compile_latency 45 $PY -m bench.compile_latency --random 15 --forms auto
    # the whole-row kernels of ops over classes (sum_classes, NCE+RCE) have only run under the interpreter
    stage tests 120 env NLFS_TEST_SCALE="${NLFS_TEST_SCALE:-0.3}" $PY -m pytest -q -x -p no:cacheprovider $XDIST \
        tests/backends/test_triton.py tests/backends/test_triton_special.py tests/backends/test_class_ops.py
fi
# packed training: the exactness check first (its result decides whether the timings count), then the
# quick benchmark, which stops starting runs after its --budget-s and keeps what it measured
stage packed_check 45 $PY -m bench.packed_training --check --steps 20 --data-root "$DATA_ROOT"
stage packed_bench 100 $PY -m bench.packed_training --quick --budget-s 75 --data-root "$DATA_ROOT"
tar -czf "$OUT/results.tgz" bench/results/kernels_gpu_* bench/results/compile_latency_gpu_* \
    bench/results/packed_training_gpu* 2>/dev/null
echo "results: bench/results/ and $OUT"
