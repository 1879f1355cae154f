#!/usr/bin/env bash
# A/B on the GPU machine, in one device call: this tree against a base, both
# built the same way, each command run on base, change, base, change (so that
# a drift of the machine shows as a difference between the two base runs).
#   here:   rm -rf build-ab && mkdir build-ab && git archive BASE | tar -x -C build-ab
#   device: bash bench/ab.sh build-ab 'TARGETS' 'CMD' ['CMD' ...]   (carry .deps and build-ab)
# In each CMD, $B is the build folder of the side being run. Output: stdout
# and $OUT/ab.log.
set -uo pipefail
base_src=$1 targets=$2
shift 2
OUT=${OUT:-/tmp/ltri-ab-out}
mkdir -p "$OUT"
. tools/gpu-build.sh || exit 1
ln -sfn "$PWD/.deps" "$base_src/.deps" # the base tree builds against the same unpacked packages
# One after the other: both would unpack .deps into the same folder.
BUILD=/tmp/ltri-ab-change ltri_gpu_build "$OUT/build-change.log" $targets || exit 1
(cd "$base_src" && BUILD=/tmp/ltri-ab-base ltri_gpu_build "$OUT/build-base.log" $targets) || exit 1
for cmd in "$@"; do
    for side in base change base change; do
        echo "== $side: $cmd"
        B=/tmp/ltri-ab-$side bash -c "$cmd" 2>&1
    done
done | tee "$OUT/ab.log"
