# Sourced by the GPU-machine scripts. The GPU machine (Ubuntu 24.04, no network)
# lacks the -dev packages ltri builds against; tools/fetch-gpu-deps.sh downloads
# Debian's .debs into .deps/ here, the device call carries that folder, and this
# unpacks them under /tmp/ltri-deps (never into /) and points pkg-config, CMake
# and the loader at them. Where the machine has the packages, it does nothing.
LTRI_DEPS_PREFIX=/tmp/ltri-deps
if [ ! -f /usr/include/uninorm.h ] || ! pkg-config --exists jansson libpcre2-8 2>/dev/null; then
    if ! ls .deps/*.deb >/dev/null 2>&1; then
        echo "gpu-deps: missing jansson/pcre2/unistring headers and no .deps/*.deb to unpack" >&2
        echo "gpu-deps: run tools/fetch-gpu-deps.sh here first and carry .deps" >&2
        return 1 2>/dev/null || exit 1
    fi
    mkdir -p "$LTRI_DEPS_PREFIX"
    for f in .deps/*.deb; do dpkg -x "$f" "$LTRI_DEPS_PREFIX"; done
    for pc in "$LTRI_DEPS_PREFIX"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc; do
        # prefix=/usr, and the absolute paths some packages write (hiredis:
        # includedir=/usr/include/hiredis, and libdir=/usr/lib where the .deb
        # holds the library in usr/lib/x86_64-linux-gnu)
        sed -i -E -e "s#^libdir=/usr/lib\$#libdir=$LTRI_DEPS_PREFIX/usr/lib/x86_64-linux-gnu#" \
            -e "s#^(prefix|libdir|includedir)=/usr#\1=$LTRI_DEPS_PREFIX/usr#" "$pc"
    done
    export PKG_CONFIG_PATH="$LTRI_DEPS_PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    export CMAKE_PREFIX_PATH="$LTRI_DEPS_PREFIX/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    export LD_LIBRARY_PATH="$LTRI_DEPS_PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# NVLink multicast stays off on the shared multi-GPU hosts (device README).
export NCCL_NVLS_ENABLE=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
