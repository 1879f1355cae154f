#!/usr/bin/env bash
# Prefill attention against PyTorch, for one device call on the GPU machine (from the repo root):
#   bash bench/run_attention.sh [--tokens 512,2K,16K] [--keys 4K,16K,64K] [--reps 20] ...
# Builds bench_attention (Release), prints the tensor-core kernel's registers and
# shared memory, runs bench_attention (ltri's tensor-core and fp32 kernels) and
# tools/bench_sdpa.py (PyTorch SDPA's flash, efficient and cuDNN backends) on the
# same shapes (the arguments go to both), then the two side by side. Results
# under $OUT: ltri_attention.md / .jsonl, sdpa.md / .jsonl.
set -uo pipefail
OUT=${OUT:-/tmp/ltri-attention-out}
mkdir -p "$OUT"
. tools/gpu-build.sh && ltri_gpu_build "$OUT/attention-build.log" bench_attention || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "== tensor-core kernel: registers and spills (dynamic shared memory: 102 KiB at head_dim 128, 54 KiB at 64)"
cuobjdump -res-usage "$BUILD/bench_attention" 2>&1 | grep -A1 'attention_prefill_tc_kernel' | grep -v '^--' || true
echo "== ltri (bench_attention)"
"$BUILD/bench_attention" --json "$OUT/ltri_attention.jsonl" "$@" | tee "$OUT/ltri_attention.md"
echo "== PyTorch SDPA (tools/bench_sdpa.py)"
PYTHONUNBUFFERED=1 python3 tools/bench_sdpa.py --json "$OUT/sdpa.jsonl" --ltri "$OUT/ltri_attention.jsonl" "$@" |
    tee "$OUT/sdpa.md"
