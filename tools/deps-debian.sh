#!/usr/bin/env bash
# Installs what ltri builds against from Debian/Ubuntu packages, if missing.
# The CUDA toolkit is not a Debian package here: when /usr/local/cuda exists the
# CUDA backend is built as well (it is optional; the CPU backend always is).
set -euo pipefail
pkgs=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libhiredis-dev redis-server
      libjansson-dev libpcre2-dev libunistring-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "deps-debian: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
