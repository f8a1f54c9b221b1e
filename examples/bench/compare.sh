#!/usr/bin/env bash
# Runs redis-benchmark and rp-bench alternately (A B A B, ROUNDS rounds) with
# the same flags against a redis-server of its own on a free loopback port,
# and prints the medians and their ratio for each test, and each tool's
# median peak RSS (the kernel's high-water mark, VmHWM, through GNU time),
# its own CPU time (user+sys, GNU time) per request and per KiB of values
# (-d bytes a request), and the server's CPU time per request under each
# tool (from /proc/<redis-server>/stat before and after each run).
#   examples/bench/compare.sh [-k] [-r ROUNDS] [-b RP_BENCH] [-e RP_FLAG]... -- [redis-benchmark flags]
# -e passes a flag to rp-bench only, e.g. -e --busy-poll=20.
# -k (--cluster) starts a throwaway Redis Cluster instead, 3 masters and 3
# replicas on free loopback ports, and runs both tools with --cluster and
# node 0 as their seed; the server CPU is then that of all six nodes.
# --tls makes a CA and a server certificate (SANs 127.0.0.1, localhost)
# with the openssl CLI, starts a TLS-only redis-server (with -k, a cluster
# whose every node takes TLS only, cluster bus and replication included),
# and passes --tls --cacert to both tools.
# Examples: examples/bench/compare.sh -- -c 50 -n 200000 -t set,get
#           examples/bench/compare.sh -k -e --autopipeline -- -c 50 -n 1000000 -t set,get
#           examples/bench/compare.sh --tls -- -c 50 -n 200000 -t set,get
#           examples/bench/compare.sh --tls -k -e --autopipeline -- -c 50 -n 1000000 -t set,get
set -euo pipefail
rounds=3
rp_bench=""
rp_only=()
cluster=()
tls=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
    -r) rounds=$2; shift 2 ;;
    -b) rp_bench=$2; shift 2 ;;
    -e) rp_only+=("$2"); shift 2 ;;
    -k | --cluster) cluster=(--cluster); shift ;;
    --tls) tls=(--tls); shift ;;
    -h | --help) sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "${1:-}" = "--" ] && shift
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(-c 50 -n 200000 -t set,get)
here=$(cd "$(dirname "$0")/../.." && pwd)
[ -n "$rp_bench" ] || rp_bench="$here/build/examples/rp-bench"
[ -x "$rp_bench" ] || { echo "compare.sh: build rp-bench first (meson compile -C build)" >&2; exit 1; }

# N free loopback ports, all held at once so that they differ.
free_ports() {
    python3 -c '
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))' "$1"
}

work=$(mktemp -d)
server_pids=()
# The servers are gone before their directory is: a node writes its
# nodes.conf as it shuts down.
cleanup() {
    if [ ${#server_pids[@]} -gt 0 ]; then
        kill "${server_pids[@]}" 2>/dev/null || true
        wait "${server_pids[@]}" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a command ($2 on) until it succeeds, for up to $1 seconds.
wait_for() {
    local deadline=$((SECONDS + $1))
    until "${@:2}" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

start_server() {
    port=$(free_ports 1)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --logfile "$work/redis.log" &
    server_pids=($!)
    wait_for 5 redis-cli -p "$port" ping || { echo "compare.sh: redis-server did not start" >&2; exit 1; }
}

# A CA and a server certificate for 127.0.0.1 and localhost; both tools,
# and redis-cli here, trust the CA.
cli=(redis-cli)
make_certs() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout "$work/ca.key" \
        -out "$work/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$work/server.key" -out "$work/server.csr" \
        2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$work/san.ext"
    openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
        -extfile "$work/san.ext" -out "$work/server.crt" 2>/dev/null
    tls+=(--cacert "$work/ca.crt")
    cli+=(--tls --cacert "$work/ca.crt")
}

# A redis-server that takes TLS only.
start_tls_server() {
    make_certs
    port=$(free_ports 1)
    redis-server --port 0 --tls-port "$port" --tls-cert-file "$work/server.crt" --tls-key-file "$work/server.key" \
        --tls-ca-cert-file "$work/ca.crt" --tls-auth-clients no --bind 127.0.0.1 --save "" --appendonly no \
        --logfile "$work/redis.log" &
    server_pids=($!)
    wait_for 5 "${cli[@]}" -p "$port" ping ||
        { echo "compare.sh: the TLS redis-server did not start" >&2; exit 1; }
}

# Every node says cluster_state:ok, and every replica's link to its master
# is up: before that, redirects and a replica's full sync would be timed.
cluster_ready() {
    local p state replication
    for p in "${ports[@]}"; do
        state=$("${cli[@]}" -p "$p" cluster info) && replication=$("${cli[@]}" -p "$p" info replication) || return 1
        [[ $state == *cluster_state:ok* ]] || return 1
        [[ $replication == *role:master* || $replication == *master_link_status:up* ]] || return 1
    done
}

# Six nodes, each with its cluster bus on a port of its own (a free port
# plus 10000, the default, may be past 65535), joined by redis-cli. With
# --tls each node's port is its TLS port, and it has no plaintext one.
start_cluster() {
    local all i listen=()
    read -r -a all <<<"$(free_ports 12)"
    ports=("${all[@]:0:6}")
    [ ${#tls[@]} -eq 0 ] || make_certs
    for i in 0 1 2 3 4 5; do
        if [ ${#tls[@]} -gt 0 ]; then
            listen=(--port 0 --tls-port "${ports[$i]}" --tls-cluster yes --tls-replication yes
                --tls-cert-file "$work/server.crt" --tls-key-file "$work/server.key"
                --tls-ca-cert-file "$work/ca.crt" --tls-auth-clients no)
        else
            listen=(--port "${ports[$i]}")
        fi
        redis-server "${listen[@]}" --cluster-port "${all[$((i + 6))]}" --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-config-file "nodes-$i.conf" --cluster-node-timeout 1000 \
            --save "" --appendonly no --dir "$work" --logfile "$work/node-$i.log" &
        server_pids+=($!)
    done
    for i in 0 1 2 3 4 5; do
        wait_for 5 "${cli[@]}" -p "${ports[$i]}" ping || { echo "compare.sh: node $i did not start" >&2; exit 1; }
    done
    "${cli[@]}" --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 1 --cluster-yes \
        >"$work/create.log" 2>&1 || { cat "$work/create.log" >&2; exit 1; }
    wait_for 30 cluster_ready || { echo "compare.sh: the cluster did not come up" >&2; exit 1; }
    port=${ports[0]}
    echo "cluster: 3 masters + 3 replicas on 127.0.0.1 ports ${ports[*]}, seed $port" >&2
}

# The masters as node 0 sees them: a change during the runs is a failover.
cluster_masters() { "${cli[@]}" -p "$port" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ {print $2}' | sort; }

if [ ${#cluster[@]} -gt 0 ]; then
    start_cluster
    masters=$(cluster_masters)
elif [ ${#tls[@]} -gt 0 ]; then
    start_tls_server
else
    start_server
fi

# Runs a command and appends its peak RSS in kB and its user and system
# CPU seconds to the file $1. GNU time's own few hundred kB are the floor:
# a wrapper counts in what its forked child held before exec, so a python
# one would report its own 13 MB.
peak_rss() {
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f "%M %U %S" -a -o "$1" "${@:2}"
    else
        "${@:2}"
    fi
}

# The servers' user+system CPU so far, in clock ticks: all the nodes of a
# cluster, replicas included.
server_ticks() {
    local pid stats=()
    for pid in "${server_pids[@]}"; do stats+=("/proc/$pid/stat"); done
    awk '{sum += $14 + $15} END {print sum}' "${stats[@]}"
}

# Runs one tool's benchmark ($1: its name, then the command), keeping its
# results, its peak RSS and the server CPU it cost. Only the quoted rows
# after the header are results: redis-benchmark --cluster first prints
# the masters it found.
measure() {
    local tool=$1 before
    shift
    before=$(server_ticks)
    peak_rss "$work/rss-$tool" "$@" --csv 2>/dev/null | sed -n "/^\"test\"/d; s/^\"/$tool,\"/p" >> "$work/results"
    echo "$tool,$(($(server_ticks) - before))" >> "$work/server-ticks"
}

for round in $(seq "$rounds"); do
    measure redis-benchmark redis-benchmark ${cluster[@]+"${cluster[@]}"} ${tls[@]+"${tls[@]}"} -p "$port" "${flags[@]}"
    measure rp-bench "$rp_bench" ${cluster[@]+"${cluster[@]}"} ${tls[@]+"${tls[@]}"} -p "$port" "${flags[@]}" \
        ${rp_only[@]+"${rp_only[@]}"}
    echo "round $round of $rounds done" >&2
done
if [ ${#cluster[@]} -gt 0 ] && [ "$(cluster_masters)" != "$masters" ]; then
    echo "compare.sh: warning: the masters changed during the runs (a failover): the figures are suspect" >&2
fi
servers="server"
[ ${#cluster[@]} -eq 0 ] || servers="cluster (6 nodes)"

# Medians of requests/s and p50/p99 latency per tool and test, then ratios.
python3 - "$work" "$(getconf CLK_TCK)" "$rounds" "$servers" "${flags[@]}" <<'PY'
import csv, os, statistics, sys
servers = sys.argv[4]
flags = sys.argv[5:]
requests = int(flags[flags.index("-n") + 1]) if "-n" in flags else 100000
value_bytes = int(flags[flags.index("-d") + 1]) if "-d" in flags else 3
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
rss, cpu = {}, {}
for tool in ("redis-benchmark", "rp-bench"):
    path = os.path.join(sys.argv[1], "rss-" + tool)
    if os.path.exists(path):
        lines = [line.split() for line in open(path) if line.split() and line.split()[0].isdigit()]
        rss[tool] = statistics.median(int(f[0]) for f in lines) / 1024
        cpu[tool] = statistics.median(float(f[1]) + float(f[2]) for f in lines)
ticks = {}
for row in csv.reader(open(os.path.join(sys.argv[1], "server-ticks"))):
    ticks.setdefault(row[0], []).append(int(row[1]))
for tool, values in sorted(ticks.items()):
    tests_per_run = sum(1 for t, tl in runs if tl == tool)
    per_request = statistics.median(values) / int(sys.argv[2]) / (requests * max(tests_per_run, 1)) * 1e6
    print(f"{servers} CPU per request (median): {tool} {per_request:.2f} us")
if len(rss) == 2:
    print(f"peak RSS (median): redis-benchmark {rss['redis-benchmark']:.1f} MiB, rp-bench {rss['rp-bench']:.1f} MiB")
    # The whole process (connects included) over every request of its run:
    # -d bytes of value moved by each SET or GET.
    moved = {tool: requests * max(sum(1 for t, tl in runs if tl == tool), 1) for tool in cpu}
    print("client CPU, user+sys (median): " + ", ".join(
        f"{tool} {cpu[tool] / moved[tool] * 1e6:.2f} us per request, "
        f"{cpu[tool] / (moved[tool] * value_bytes) * 1e9 * 1024:.0f} ns per KiB of values" for tool in sorted(cpu)))
else:
    print("peak RSS: not measured (it takes /usr/bin/time, Debian's time package)")
PY
