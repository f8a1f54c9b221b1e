#!/usr/bin/env bash
# Runs examples/memcached.c's benchmark, the same benchmark with libmemcached
# (memcached_libmemcached, one thread a caller) and memaslap (Debian's
# memcaslap, if installed) alternately, ROUNDS rounds, at each caller count
# and for get and set, against a memcached of its own on a free loopback
# port. Each line is one run: requests/s, p50/p99, client CPU per request
# and peak RSS (memaslap: its TPS, and CPU and RSS from GNU time).
#   examples/bench/memcached_compare.sh [-r ROUNDS] [-c "1 50 500"] [-n N] [-d BYTES]
set -euo pipefail
rounds=3 callers="1 50 500" n=200000 d=32
while [ $# -gt 0 ]; do
    case "$1" in
    -r) rounds=$2; shift 2 ;;
    -c) callers=$2; shift 2 ;;
    -n) n=$2; shift 2 ;;
    -d) d=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "memcached_compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
build=$(cd "$(dirname "$0")/../.." && pwd)/build/examples
[ -x "$build/memcached" ] || { echo "build first: meson compile -C build" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
memcached -l 127.0.0.1 -p "$port" -U 0 -c 4096 -u "$(id -un)" &
mc_pid=$!
trap 'kill $mc_pid; rm -rf "$work"' EXIT
sleep 0.5
addr=127.0.0.1:$port
# memaslap: 16-byte keys, its least; the others use "k:<n>".
printf 'key\n16 16 1\nvalue\n%s %s 1\ncmd\n0 %s\n1 %s\n' "$d" "$d" 0 1 >"$work/get.cfg"
printf 'key\n16 16 1\nvalue\n%s %s 1\ncmd\n0 %s\n1 %s\n' "$d" "$d" 1 0 >"$work/set.cfg"
echo "memcached $(memcached -V | cut -d' ' -f2) on $addr; $rounds rounds; n=$n d=$d"
for round in $(seq "$rounds"); do
    for c in $callers; do
        for op in get set; do
            # n/4 at one caller: a round trip a request.
            reqs=$n
            [ "$c" -gt 1 ] || reqs=$((n / 4))
            "$build/memcached" -a "$addr" -b "$op" -c "$c" -n "$reqs" -d "$d"
            if [ -x "$build/memcached_libmemcached" ]; then
                "$build/memcached_libmemcached" -a "$addr" -b "$op" -c "$c" -n "$reqs" -d "$d"
            fi
            if command -v memcaslap >/dev/null; then
                threads=$((c < 2 ? 1 : 2))
                out=$(/usr/bin/time -f '%U %S %M' memcaslap -s "$addr" -T "$threads" -c "$c" -x "$reqs" \
                    -F "$work/$op.cfg" 2>&1)
                read -r user sys rss <<<"$(tail -1 <<<"$out")"
                tps=$(grep -o 'Ops: [0-9]* TPS: [0-9]*' <<<"$out" | tail -1)
                ops=$(cut -d' ' -f2 <<<"$tps")
                awk -v op="$op" -v c="$c" -v tps="$tps" -v u="$user" -v s="$sys" -v ops="$ops" -v rss="$rss" \
                    'BEGIN { printf "memaslap %s: c=%s: %s, cpu %.2f us/op, peak RSS %.1f MB\n", op, c, tps,
                             (u + s) * 1e6 / ops, rss / 1024 }'
            fi
        done
    done
done
