#!/usr/bin/env bash
# A context larger than the GPU's memory on one GPU: the Llama-3.1-8B shape with
# random weights and ltri attention, its spans' K/V in pinned host memory and
# --device-pages per layer on the GPU. Run from the repo root through the
# device tool after bench/run.sh or gpu-check.sh has built (or let it build).
set -uo pipefail
OUT=${OUT:-/tmp/ltri-big-out}
mkdir -p "$OUT"
. tools/gpu-build.sh && ltri_gpu_build "$OUT/big-build.log" bench_decode || exit 1
CTX=${CTX:-512K}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
free -g | head -2
"$BUILD/bench_decode" --config bench/configs/llama-3.1-8b.json --backend cuda --contexts "$CTX" --modes ltri \
    --steps 8 --span-min 32 --device-pages ${DEVICE_PAGES:-512} "$@" | tee "$OUT/big_context.md"
nvidia-smi --query-gpu=memory.used --format=csv,noheader
