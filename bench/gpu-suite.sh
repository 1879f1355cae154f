#!/usr/bin/env bash
# One device call's worth of GPU work (from the repo root, via the device tool):
#   1. build + gpu tests + compute-sanitizer (tools/gpu-check.sh)
#   2. the accuracy grid of every attention mode on ltri-tiny (ltri-eval, CUDA)
#   3. the span store's host tier against all-on-GPU (bench_decode, 8B shape)
# Everything lands under $OUT; the eval reports as eval.tar.gz.
set -uo pipefail
OUT=${OUT:-/tmp/ltri-suite-out}
mkdir -p "$OUT"
BUILD=${BUILD:-/tmp/ltri-build}
export BUILD
echo "== gpu-check"
bash tools/gpu-check.sh 2>&1 | tail -8
echo "== ltri-eval"
EVAL_ARGS=${EVAL_ARGS:---tasks passkey,niah_single,niah_multikey --lengths 1K,2K,4K,8K,16K,32K --depths 0,0.5,1 --samples 3}
timeout 260 "$BUILD/ltri-eval" --backend cuda --quiet --out /tmp/ltri-eval-out $EVAL_ARGS >"$OUT/eval.log" 2>&1
echo "ltri-eval exit $?"
cat /tmp/ltri-eval-out/summary.md 2>/dev/null | head -60
tar czf "$OUT/eval.tar.gz" -C /tmp ltri-eval-out 2>/dev/null
echo "== host tier"
cmake --build "$BUILD" -j"$(nproc)" --target bench_decode >/dev/null 2>&1
TIER_ARGS=${TIER_ARGS:---contexts 128K --modes ltri --steps 16}
timeout 200 "$BUILD/bench_decode" --config bench/configs/llama-3.1-8b.json --backend cuda $TIER_ARGS | tail -3 | tee "$OUT/tier.md"
timeout 200 "$BUILD/bench_decode" --config bench/configs/llama-3.1-8b.json --backend cuda $TIER_ARGS --device-pages 256 | tail -1 | tee -a "$OUT/tier.md"
