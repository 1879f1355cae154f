#!/usr/bin/env bash
# Downloads (on a Debian machine with apt) the -dev packages that the GPU machine
# lacks into .deps/, which the device call carries; tools/gpu-deps.sh unpacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps
cd .deps
apt-get download libjansson-dev libjansson4 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 \
    libpcre2-posix3 libunistring-dev libunistring2 libhiredis-dev libhiredis0.14
