#!/usr/bin/env bash
# Runs redis-benchmark and rp-bench alternately (A B A B, ROUNDS rounds) with
# the same flags against a redis-server of its own on a free loopback port,
# and prints the medians and their ratio for each test, and each tool's
# median peak RSS (the kernel's high-water mark, VmHWM, through GNU time)
# and the server's CPU time per request under each tool (from
# /proc/<redis-server>/stat before and after each run).
#   examples/bench/compare.sh [-r ROUNDS] [-b RP_BENCH] [-e RP_FLAG]... -- [redis-benchmark flags]
# -e passes a flag to rp-bench only, e.g. -e --busy-poll=20.
# Example: examples/bench/compare.sh -- -c 50 -n 200000 -t set,get
set -euo pipefail
rounds=3
rp_bench=""
rp_only=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
    -r) rounds=$2; shift 2 ;;
    -b) rp_bench=$2; shift 2 ;;
    -e) rp_only+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "${1:-}" = "--" ] && shift
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(-c 50 -n 200000 -t set,get)
here=$(cd "$(dirname "$0")/../.." && pwd)
[ -n "$rp_bench" ] || rp_bench="$here/build/examples/rp-bench"
[ -x "$rp_bench" ] || { echo "compare.sh: build rp-bench first (meson compile -C build)" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --logfile "$work/redis.log" &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done

# Runs a command and appends its peak RSS in kB to the file $1. GNU time's
# own few hundred kB are the floor: a wrapper counts in what its forked
# child held before exec, so a python one would report its own 13 MB.
peak_rss() {
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f %M -a -o "$1" "${@:2}"
    else
        "${@:2}"
    fi
}

# The server's user+system CPU so far, in clock ticks.
server_ticks() { awk '{print $14 + $15}' "/proc/$redis_pid/stat"; }

# Runs one tool's benchmark ($1: its name, then the command), keeping its
# results, its peak RSS and the server CPU it cost.
measure() {
    local tool=$1 before
    shift
    before=$(server_ticks)
    peak_rss "$work/rss-$tool" "$@" --csv 2>/dev/null | tail -n +2 | sed "s/^/$tool,/" >> "$work/results"
    echo "$tool,$(($(server_ticks) - before))" >> "$work/server-ticks"
}

for round in $(seq "$rounds"); do
    measure redis-benchmark redis-benchmark -p "$port" "${flags[@]}"
    measure rp-bench "$rp_bench" -p "$port" "${flags[@]}" ${rp_only[@]+"${rp_only[@]}"}
    echo "round $round of $rounds done" >&2
done

# Medians of requests/s and p50/p99 latency per tool and test, then ratios.
python3 - "$work" "$(getconf CLK_TCK)" "$rounds" "${flags[@]}" <<'PY'
import csv, os, statistics, sys
flags = sys.argv[4:]
requests = int(flags[flags.index("-n") + 1]) if "-n" in flags else 100000
runs = {}
for row in csv.reader(open(os.path.join(sys.argv[1], "results"))):
    tool, test = row[0], row[1]
    test = "PING" if test.startswith("PING") else test
    runs.setdefault((test, tool), []).append((float(row[2]), float(row[5]), float(row[7])))
tests = sorted({t for t, _ in runs}, key=lambda t: ["PING", "SET", "GET", "INCR", "LPUSH"].index(t) if t in ["PING", "SET", "GET", "INCR", "LPUSH"] else 99)
print(f"{'test':<8}{'redis-benchmark rps':>21}{'rp-bench rps':>14}{'ratio':>7}{'p50 ms (rb / rp)':>19}{'p99 ms (rb / rp)':>19}")
for test in tests:
    rb, rp = runs.get((test, "redis-benchmark")), runs.get((test, "rp-bench"))
    if not rb or not rp:
        continue
    med = lambda rows, i: statistics.median(r[i] for r in rows)
    print(f"{test:<8}{med(rb,0):>21.0f}{med(rp,0):>14.0f}{med(rp,0)/med(rb,0):>7.2f}"
          f"{med(rb,1):>10.3f} / {med(rp,1):<6.3f}{med(rb,2):>10.3f} / {med(rp,2):<6.3f}")
rss = {}
for tool in ("redis-benchmark", "rp-bench"):
    path = os.path.join(sys.argv[1], "rss-" + tool)
    if os.path.exists(path):
        rss[tool] = statistics.median(int(line) for line in open(path)) / 1024
ticks = {}
for row in csv.reader(open(os.path.join(sys.argv[1], "server-ticks"))):
    ticks.setdefault(row[0], []).append(int(row[1]))
for tool, values in sorted(ticks.items()):
    tests_per_run = sum(1 for t, tl in runs if tl == tool)
    per_request = statistics.median(values) / int(sys.argv[2]) / (requests * max(tests_per_run, 1)) * 1e6
    print(f"server CPU per request (median): {tool} {per_request:.2f} us")
if len(rss) == 2:
    print(f"peak RSS (median): redis-benchmark {rss['redis-benchmark']:.1f} MiB, rp-bench {rss['rp-bench']:.1f} MiB")
else:
    print("peak RSS: not measured (it takes /usr/bin/time, Debian's time package)")
PY
