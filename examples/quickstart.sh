#!/usr/bin/env bash
# Installs what ringpool needs (Debian), builds it, and runs the examples
# against a local redis-server: the one at 127.0.0.1:6379 if it answers,
# else a throwaway one on a unix socket; and the memcached example against
# a throwaway memcached on a unix socket.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(liburing-dev libhiredis-dev libcriterion-dev meson ninja-build redis-server memcached pkg-config libuv1-dev libevent-dev libssl-dev openssl)
if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q && $sudo apt-get install -y -q "${packages[@]}"
fi
[ -f build/build.ninja ] || meson setup build
meson compile -C build

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
addr=127.0.0.1:6379
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    redis-server --port 0 --unixsocket "$work/redis.sock" --save "" --logfile /dev/null &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$work/redis.sock" ] && break; sleep 0.05; done
    addr="unix:$work/redis.sock"
fi
# -u: memcached refuses to run as root without it.
memcached -s "$work/memcached.sock" -U 0 -u "$(id -un)" &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/memcached.sock" ] && break; sleep 0.05; done
echo "== build/examples/hello -a $addr"
build/examples/hello -a "$addr"
echo "== build/examples/pool_ping -a $addr"
build/examples/pool_ping -a "$addr"
echo "== build/examples/pool_bench -a $addr -n 2000000"
build/examples/pool_bench -a "$addr" -n 2000000
echo "== build/examples/memcached -a unix:$work/memcached.sock"
build/examples/memcached -a "unix:$work/memcached.sock"
