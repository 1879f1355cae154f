# Sourced by the GPU-machine scripts (tools/gpu-check.sh, bench/run.sh,
# bench/run_attention.sh, bench/big_context.sh) from the repo root:
#   . tools/gpu-build.sh && ltri_gpu_build LOG [TARGET...] || exit 1
# Sets up the build dependencies (tools/gpu-deps.sh), configures a Release
# build with CUDA in $BUILD (default /tmp/ltri-build) and builds the targets
# named (every target when none), the output in LOG. On failure it prints the
# log's tail and returns 1.
ltri_gpu_build() {
    local log=$1
    shift
    . tools/gpu-deps.sh || return 1
    BUILD=${BUILD:-/tmp/ltri-build}
    local targets=() t
    for t in "$@"; do targets+=(--target "$t"); done
    if ! { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLTRI_CUDA=ON &&
        cmake --build "$BUILD" -j"$(nproc)" "${targets[@]}"; } >"$log" 2>&1; then
        tail -30 "$log"
        echo "ltri_gpu_build: the build failed (log: $log)" >&2
        return 1
    fi
}
