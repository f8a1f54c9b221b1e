#!/usr/bin/env bash
# The test command: the suite in a warnings-as-errors build, again under
# ASan/UBSan, then programs outside the tree built with pkg-config against
# the installed libraries (the raw pool's without hiredis) and run against a
# throwaway redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."

suite() {
    local dir=$1
    shift
    [ -f "$dir/build.ninja" ] || meson setup "$dir" -Dwerror=true "$@"
    meson compile -C "$dir"
    meson test -C "$dir" --print-errorlogs
}

suite build-test
# The Redis layer's receives without the loop's buffer ring, as on a kernel
# without one (or rp_loop_options.no_recv_ring): the suites that read.
meson test -C build-test --setup=noring --print-errorlogs redis client autopipeline buffers recv_ring hostile
# The send path with every large send a zero-copy one (loopback copies, so
# by default a connection makes one); test_bigvalues runs all three ways.
meson test -C build-test --setup=zc --print-errorlogs redis faults client autopipeline
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    suite build-asan -Db_sanitize=address,undefined -Db_lundef=false
# Criterion reports a test before its worker exits, so a leak found at exit
# does not fail it: read the log instead.
if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" build-asan/meson-logs/testlog.txt; then
    echo "sanitizer reports in build-asan/meson-logs/testlog.txt" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'kill "${redis_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
DESTDIR="$work/root" meson install -C build-test --quiet
pc=$(dirname "$(find "$work/root" -name ringpool.pc)")
export PKG_CONFIG_PATH="$pc" PKG_CONFIG_SYSROOT_DIR="$work/root"
# The raw pool with ringpool-core alone, where any hiredis header is an
# error: neither its headers nor its library may need hiredis.
mkdir -p "$work/no-hiredis/hiredis"
for h in hiredis.h read.h sds.h alloc.h; do echo '#error "hiredis is hidden"' >"$work/no-hiredis/hiredis/$h"; done
! pkg-config --print-requires --print-requires-private ringpool-core | grep -q hiredis
cc -Wall -Werror -I"$work/no-hiredis" -o "$work/pool_ping" examples/pool_ping.c $(pkg-config --cflags --libs ringpool-core)
! readelf -d "$work/pool_ping" | grep -q hiredis
cc -Wall -Werror -o "$work/hello" examples/hello.c $(pkg-config --cflags --libs ringpool)
redis-server --port 0 --unixsocket "$work/redis.sock" --save "" --logfile /dev/null &
redis_pid=$!
for _ in $(seq 100); do [ -S "$work/redis.sock" ] && break; sleep 0.05; done
export LD_LIBRARY_PATH="$(dirname "$(find "$work/root" -name 'libringpool.so' | head -1)")"
"$work/pool_ping" -a "unix:$work/redis.sock"
"$work/hello" -a "unix:$work/redis.sock"
echo "all tests passed"
