#!/usr/bin/env bash
# The benchmark suite, for one device call on the GPU machine (from the repo root):
#   bash bench/run.sh [bench_decode args...]
# Builds with CUDA, then runs bench_decode on the Llama-3.1-8B shape (random
# weights) for every attention mode at 8K, 32K and 128K tokens, then
# bench_index (span scoring + top-k against the bytes floor) and bench_matmul
# (a decode step's linear layers against their weight bytes) and
# bench_attention --decode (the split-K decode attention against its K/V
# bytes). Results: markdown tables on stdout and under $OUT (bench_decode.md /
# .jsonl, bench_index.md, bench_matmul.md, bench_attention_decode.md).
set -uo pipefail
OUT=${OUT:-/tmp/ltri-bench-out}
mkdir -p "$OUT"
. tools/gpu-build.sh && ltri_gpu_build "$OUT/bench-build.log" bench_decode bench_index bench_matmul bench_attention ||
    exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# The device tool's copy of the tree may carry a stale .git: name the commit in LTRI_COMMIT when running there.
echo "commit ${LTRI_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}, $(date -u +%Y-%m-%dT%H:%MZ)"
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--contexts 8K,32K,128K --modes full,streaming,infllm,ltri --steps 16)
"$BUILD/bench_decode" --config bench/configs/llama-3.1-8b.json --backend cuda --json "$OUT/bench_decode.jsonl" \
    "${args[@]}" | tee "$OUT/bench_decode.md"
"$BUILD/bench_index" | tee "$OUT/bench_index.md"
"$BUILD/bench_matmul" | tee "$OUT/bench_matmul.md"
"$BUILD/bench_attention" --decode --tokens 1 --keys 32K,128K,512K 2>/dev/null | tee "$OUT/bench_attention_decode.md"
