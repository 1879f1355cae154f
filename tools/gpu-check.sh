#!/usr/bin/env bash
# Configure, build and run the gpu-labelled tests (and the rest) on the GPU
# machine; logs under $OUT. Run through the device tool from the repo root:
#   bash tools/gpu-check.sh            (carry .deps: see tools/gpu-deps.sh)
# Extra arguments are passed to ctest (e.g. -R test_golden).
set -uo pipefail
OUT=${OUT:-/tmp/ltri-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
. tools/gpu-build.sh && ltri_gpu_build "$OUT/build.log" || exit 1
grep -E "warning" "$OUT/build.log" | head -20
ctest --test-dir "$BUILD" -L gpu --output-on-failure "$@" 2>&1 | tee "$OUT/ctest-gpu.log"
rc=${PIPESTATUS[0]}
if command -v compute-sanitizer >/dev/null && [ -x "$BUILD/tests/test_kernels_cuda" ]; then
    compute-sanitizer --error-exitcode 9 "$BUILD/tests/test_kernels_cuda" >"$OUT/sanitizer.log" 2>&1
    echo "compute-sanitizer memcheck on test_kernels_cuda: exit $? (log: sanitizer.log)" | tee -a "$OUT/ctest-gpu.log"
fi
exit $rc
