/* pool_bench: the cost of the pool's own paths, callbacks included.
 *
 *  idle:    C chains over C idle connections; each callback puts its
 *           connection back and asks for the next one (get+put cycles).
 *  handoff: W chains over C connections (W > C); every put hands the
 *           connection straight to the oldest waiter.
 *  embedded: one chain over one connection, driven by a host epoll loop
 *           with rp_loop_fd registered: the host asks rp_loop_timeout and
 *           runs RP_RUN_NOWAIT, sleeping in epoll_wait only when told to.
 *  ping, ping16: 1 and 16 chains of raw request/response cycles (get, PING
 *           with rp_conn_send, its reply with rp_conn_recv, put), a
 *           hundredth as many: what put costs for a protocol on the raw pool. */
#include <errno.h>
#include <ringpool.h>

#include "common.h"
#include "hosts.h"

static const char usage[] =
    "usage: pool_bench [-a ADDR] [-n CYCLES] [-c CONNS] [-w WAITERS]\n"
    "  Measures get+put cycles against a Redis server's connections.\n"
    "  -a ADDR     host:port or unix:/path (default 127.0.0.1:6379)\n"
    "  -n CYCLES   get+put cycles per benchmark (default 10000000)\n"
    "  -c CONNS    connections (default 64 for idle, 4 for handoff)\n"
    "  -w WAITERS  concurrent gets in the hand-off benchmark (default 1000)\n"
    "  Rows: idle, handoff, chained (one get per callback, standalone loop),\n"
    "  embedded (the same chain driven by a host epoll loop through rp_loop_fd\n"
    "  and rp_loop_timeout), and ping/ping16 (CYCLES/100 get, PING, reply, put\n"
    "  cycles on the raw pool, 1 and 16 at a time).\n";

typedef struct bench {
    rp_pool *pool;
    long remaining;
    int failed;
    char reply[8];
    size_t got;
} bench;

static void cycle(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    bench *b = data;
    if (status) {
        b->failed = status;
        return;
    }
    rp_pool_put(pool, conn);
    if (--b->remaining > 0 && rp_pool_get(pool, cycle, b) < 0)
        b->failed = 1;
}

static void ping_cycle(rp_pool *pool, rp_conn *conn, int status, void *data);

static void ping_fail(bench *b, rp_conn *conn, int status)
{
    b->failed = status;
    rp_pool_remove(b->pool, conn, status);
}

/* Reads exactly the 7 bytes of "+PONG\r\n", however they arrive. */
static void ping_read(rp_conn *conn, ssize_t result, void *data)
{
    bench *b = data;
    if (result <= 0) {
        ping_fail(b, conn, result ? (int)result : RP_EEOF);
        return;
    }
    b->got += (size_t)result;
    int rc = 0;
    if (b->got < 7)
        rc = rp_conn_recv(conn, b->reply + b->got, 7 - b->got, ping_read, b);
    else if (memcmp(b->reply, "+PONG\r\n", 7) != 0)
        rc = -EPROTO;
    if (rc < 0 || b->got < 7) {
        if (rc < 0)
            ping_fail(b, conn, rc);
        return;
    }
    rp_pool_put(b->pool, conn);
    if (--b->remaining > 0 && rp_pool_get(b->pool, ping_cycle, b) < 0)
        b->failed = 1;
}

static void ping_sent(rp_conn *conn, ssize_t result, void *data)
{
    bench *b = data;
    b->got = 0;
    int rc = result < 0 ? (int)result : rp_conn_recv(conn, b->reply, 7, ping_read, b);
    if (rc < 0)
        ping_fail(b, conn, rc);
}

static void ping_cycle(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    bench *b = data;
    (void)pool;
    int rc = status ? status : rp_conn_send(conn, "PING\r\n", 6, ping_sent, b);
    if (rc < 0 && conn)
        ping_fail(b, conn, rc);
    else if (rc < 0)
        b->failed = rc;
}

static void run_standalone(rp_loop *loop) { rp_loop_run(loop, RP_RUN_DEFAULT); }

static void run_embedded(rp_loop *loop) { example_host_epoll(loop); }

/* Runs `chains` concurrent get+put chains over `conns` dialled connections. */
static int run(const char *name, const char *addr, long cycles, long conns, long chains,
               void (*drive)(rp_loop *loop), rp_get_cb first)
{
    rp_loop *loop;
    rp_pool *pool;
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = addr;
    opts.pool_size = (int)conns;
    opts.min_idle_conns = (int)conns;
    opts.pool_timeout_ms = 60000;
    int rc = rp_loop_new(&loop, NULL);
    if (rc == 0)
        rc = rp_pool_new(&pool, loop, &opts);
    if (rc < 0) {
        fprintf(stderr, "pool_bench: %s\n", rp_strerror(rc));
        return 1;
    }
    rc = example_wait_idle(loop, pool, (int)conns);
    if (rc < 0) {
        fprintf(stderr, "pool_bench: %s: %s\n", addr, rp_strerror(rc));
        return 1;
    }
    bench *b = calloc((size_t)chains, sizeof *b);
    for (long i = 0; i < chains; i++) {
        b[i] = (bench){.pool = pool, .remaining = cycles / chains};
        rp_pool_get(pool, first, &b[i]);
    }
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    double start = example_seconds(), cpu_start = example_cpu_seconds();
    drive(loop);
    double elapsed = example_seconds() - start, cpu = example_cpu_seconds() - cpu_start;
    rp_loop_stats_get(loop, &after);
    long done = cycles / chains * chains;
    int failed = 0;
    for (long i = 0; i < chains; i++)
        failed |= b[i].failed;
    rp_stats st;
    rp_pool_stats(pool, &st);
    printf("%-8s %10ld cycles  %6.1f ns/op  %6.1f ns CPU/op  %5.2f M ops/s  %.4f syscalls/op  (conns %ld, "
           "concurrent gets %ld, hits %u, misses %u)\n",
           name, done, elapsed * 1e9 / (double)done, cpu * 1e9 / (double)done, (double)done / elapsed / 1e6,
           (double)(after.syscalls - before.syscalls) / (double)done, conns, chains, st.hits, st.misses);
    free(b);
    rp_pool_close(pool, NULL, NULL);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    rp_loop_free(loop);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:6379", .n = 10000000, .c = 0, .w = 1000};
    example_parse(argc, argv, &args, usage);
    int rc = run("idle", args.addr, args.n, args.c ? args.c : 64, args.c ? args.c : 64, run_standalone, cycle);
    rc |= run("handoff", args.addr, args.n, args.c ? args.c : 4, args.w, run_standalone, cycle);
    rc |= run("chained", args.addr, args.n, 1, 1, run_standalone, cycle);
    rc |= run("embedded", args.addr, args.n, 1, 1, run_embedded, cycle);
    long pings = args.n / 100 > 16 ? args.n / 100 : 16;
    rc |= run("ping", args.addr, pings, 1, 1, run_standalone, ping_cycle);
    rc |= run("ping16", args.addr, pings, 16, 16, run_standalone, ping_cycle);
    return rc;
}
