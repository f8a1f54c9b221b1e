/* The loop's provided buffer ring (lib/recv_ring.c): more replies arrive
 * at once than its buffers hold (each recv that finds it empty reads into
 * a buffer of its own, all data exact), a ring that cannot grow, a server
 * that dies in the middle of a large value, the ring disabled by option,
 * the ring shrinking when idle or lightly loaded and growing again (no
 * reply lost or late), and the memory of ten thousand idle connections. Under
 * RINGPOOL_RECV_RING=0 (meson test --setup=noring) the same tests run on
 * the per-connection path and skip what only the ring does. */
#include "fixture.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(recv_ring, .init = fx_setup, .fini = fx_teardown, .timeout = 240);

static bool ring_on(rp_loop *loop)
{
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    return ls.recv_ring_bytes != 0;
}

/* A value of len bytes that differs for every seed and position. */
static char *pattern(int seed, size_t len)
{
    char *v = malloc(len);
    for (size_t i = 0; i < len; i++)
        v[i] = (char)('a' + (i * 7 + (size_t)seed * 3) % 26);
    return v;
}

typedef struct got {
    int calls, status;
    bool right;
    const char *want;
    size_t want_len;
} got;

static void check_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    got *g = data;
    g->calls++;
    g->status = status;
    g->right = reply && reply->type == REDIS_REPLY_STRING && reply->len == g->want_len &&
               memcmp(reply->str, g->want, g->want_len) == 0;
}

enum { CONNS = 24, VALUE = 16 * 1024 };

static void set_values(char **values, int n, size_t len)
{
    for (int i = 0; i < n; i++) {
        values[i] = pattern(i, len);
        char cmd[64];
        int head = snprintf(cmd, sizeof cmd, "*3\r\n$3\r\nSET\r\n$3\r\nk%02d\r\n$%zu\r\n", i, len);
        char *whole = malloc((size_t)head + len + 3);
        memcpy(whole, cmd, (size_t)head);
        memcpy(whole + head, values[i], len);
        memcpy(whole + head + len, "\r\n", 3);
        fx_redis_command(whole);
        free(whole);
    }
}

enum { SETTLE_MS = 150 };

/* n GETs on n connections of their own, all answered (settle_ms after
 * they were sent) before the loop looks: the kernel hands the replies'
 * bytes out of the ring in one go. */
static int get_all_at_once(rp_loop *loop, unsigned settle_ms, rp_conn **conns, got *g, char **values, int n,
                           size_t len)
{
    int accepted = 0;
    for (int i = 0; i < n; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%02d", i);
        g[i] = (got){.want = values[i], .want_len = len};
        if (conns[i] && rp_conn_command(conns[i], check_reply, &g[i], 2, (const char *[]){"GET", key}, NULL) == 0)
            accepted++;
        else
            g[i].calls = -1; /* not accepted: no callback due */
    }
    rp_loop_run(loop, RP_RUN_NOWAIT); /* sends them and posts the recvs */
    usleep(settle_ms * 1000);
    uint64_t deadline = fx_now_ms() + 5000;
    int done = 0;
    while (done < n && fx_now_ms() < deadline) {
        rp_loop_run(loop, RP_RUN_ONCE);
        for (done = 0; done < n && g[done].calls; done++)
            ;
    }
    return accepted;
}

/* A pool of CONNS connections on a new loop, all of them held. */
static rp_pool *pool_of_conns(rp_loop **loop, rp_conn *conns[CONNS])
{
    rp_pool_options opts;
    fx_pool_options(&opts, CONNS);
    rp_pool *pool = fx_open_pool(loop, &opts);
    for (int i = 0; i < CONNS; i++)
        conns[i] = fx_get_conn(*loop, pool);
    return pool;
}

Test(recv_ring, more_replies_at_once_than_the_ring_holds_come_back_exact)
{
    char *values[CONNS];
    set_values(values, CONNS, VALUE);
    rp_loop *loop;
    rp_conn *conns[CONNS];
    rp_pool *pool = pool_of_conns(&loop, conns);
    got g[CONNS];
    rp_loop_stats before;
    rp_loop_stats_get(loop, &before);
    cr_assert_eq(get_all_at_once(loop, SETTLE_MS, conns, g, values, CONNS, VALUE), CONNS);
    for (int i = 0; i < CONNS; i++) {
        cr_expect_eq(g[i].calls, 1, "GET %d called back %d times", i, g[i].calls);
        cr_expect_eq(g[i].status, 0, "GET %d: %s", i, rp_strerror(g[i].status));
        cr_expect(g[i].right, "GET %d: its value is not the one set", i);
    }
    rp_loop_stats after;
    rp_loop_stats_get(loop, &after);
    if (ring_on(loop)) {
        /* 24 x 16 KiB at once: more than the first two 64 KiB buffers. */
        cr_expect_gt(after.recv_ring_fallbacks, before.recv_ring_fallbacks, "the ring never ran dry");
        cr_expect_gt(after.recv_ring_bytes, before.recv_ring_bytes, "the ring did not grow");
        cr_expect_eq(after.recv_ring_bytes_in_use, 0, "%llu bytes still taken",
                     (unsigned long long)after.recv_ring_bytes_in_use);
    }
    /* And again, on the grown ring: still exact. */
    cr_assert_eq(get_all_at_once(loop, SETTLE_MS, conns, g, values, CONNS, VALUE), CONNS);
    for (int i = 0; i < CONNS; i++)
        cr_expect(g[i].calls == 1 && g[i].status == 0 && g[i].right, "second round, GET %d", i);
    for (int i = 0; i < CONNS; i++) {
        rp_pool_put(pool, conns[i]);
        free(values[i]);
    }
    fx_close_and_free(loop, pool);
}

Test(recv_ring, disabled_by_option_each_connection_reads_into_its_own_buffer)
{
    rp_loop *loop;
    rp_client *client;
    rp_loop_options lo = {.no_recv_ring = true};
    cr_assert_eq(rp_loop_new(&loop, &lo), 0);
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = fx_redis_addr;
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    fx_result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 1, (const char *[]){"PING"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 5000));
    cr_expect_eq(r.status, 0);
    cr_expect_str_eq(r.str, "PONG");
    cr_expect(!ring_on(loop), "the ring was set up although disabled");
    cr_expect_geq(rp_client_buffer_bytes(client), 4096, "the idle connection keeps its small buffer");
    fx_client_close_and_free(loop, client);
}

/* Our own server: it answers the GET with the header and part of a large
 * value, then dies. */
Test(recv_ring, a_server_that_dies_in_the_middle_of_a_large_value_fails_the_command_once)
{
    int port, lfd = fx_listener(8, &port);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rp_loop *loop;
    rp_pool *pool;
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = addr;
    opts.pool_size = 1;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    rp_conn *conn = fx_get_conn(loop, pool);
    int sfd = accept(lfd, NULL, NULL);
    cr_assert_geq(sfd, 0);
    got g = {0};
    cr_assert_eq(rp_conn_command(conn, check_reply, &g, 2, (const char *[]){"GET", "k"}, NULL), 0);
    fx_run_for(loop, 30);
    char req[64];
    cr_assert_gt(recv(sfd, req, sizeof req, 0), 0);
    const char *head = "$1000000\r\n";
    cr_assert_eq(send(sfd, head, strlen(head), 0), (ssize_t)strlen(head));
    char *part = pattern(1, 300 * 1000);
    size_t sent = 0;
    while (sent < 300 * 1000) {
        ssize_t n = send(sfd, part + sent, 300 * 1000 - sent, MSG_DONTWAIT);
        if (n > 0)
            sent += (size_t)n;
        fx_run_for(loop, 5);
    }
    fx_run_for(loop, 30);
    cr_expect_eq(g.calls, 0, "called back before the server died");
    close(sfd);
    cr_assert(fx_run_until_count(loop, &g.calls, 1, 5000));
    fx_run_for(loop, 30);
    cr_expect_eq(g.calls, 1);
    cr_expect_eq(g.status, RP_EEOF, "%s", rp_strerror(g.status));
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    cr_expect_eq(ls.recv_ring_bytes_in_use, 0);
    rp_pool_remove(pool, conn, 0);
    fx_close_and_free(loop, pool);
    close(lfd);
    free(part);
}

/* The resident kilobytes of the ring's buffers: the mappings RING_ENTRIES
 * x 64 KiB long (16 MiB, or more if two rings merged) without huge pages
 * (lib/recv_ring.c); -1 if there is none. */
static long ring_resident_kib(void)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    long rss = -1, kib = 0;
    unsigned long lo, hi;
    bool sized = false;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
            sized = hi - lo >= 16ul << 20 && (hi - lo) % (16ul << 20) == 0;
        else if (sized && sscanf(line, "Rss: %ld kB", &kib) == 1)
            continue;
        else if (sized && !strncmp(line, "VmFlags:", 8) && strstr(line, " nh"))
            rss = (rss < 0 ? 0 : rss) + kib;
    }
    fclose(f);
    return rss;
}

static void get_each_once(rp_loop *loop, rp_conn **conns, char **values, int n, size_t len)
{
    got g[CONNS];
    cr_assert_eq(get_all_at_once(loop, SETTLE_MS, conns, g, values, n, len), n);
    for (int i = 0; i < n; i++)
        cr_assert(g[i].calls == 1 && g[i].status == 0 && g[i].right, "GET %d: %d calls, %s, %s", i, g[i].calls,
                  rp_strerror(g[i].status), g[i].right ? "right" : "wrong value");
}

/* A burst grows the ring; a second with nothing received gives it back to
 * its first two buffers, their pages dropped; the next burst grows it
 * again, every value exact. */
Test(recv_ring, a_grown_ring_shrinks_and_drops_its_pages_once_idle)
{
    char *values[CONNS];
    set_values(values, CONNS, VALUE);
    rp_loop *loop;
    rp_conn *conns[CONNS];
    rp_pool *pool = pool_of_conns(&loop, conns);
    for (int round = 0; round < 2; round++) {
        get_each_once(loop, conns, values, CONNS, VALUE);
        rp_loop_stats ls;
        rp_loop_stats_get(loop, &ls);
        if (!ring_on(loop))
            break; /* the per-connection path: nothing to shrink */
        cr_assert_gt(ls.recv_ring_bytes, 2 * 64 * 1024, "round %d: the burst did not grow the ring", round);
        long grown = ring_resident_kib();
        cr_assert_geq(grown, 64, "round %d: %ld KiB of the ring resident after the burst", round, grown);
        fx_run_for(loop, 2500); /* the idle connections wait in their idle watch */
        rp_loop_stats_get(loop, &ls);
        cr_expect_eq(ls.recv_ring_bytes, 2 * 64 * 1024, "round %d: %llu bytes of ring a second after the burst",
                     round, (unsigned long long)ls.recv_ring_bytes);
        cr_expect_eq(ls.recv_ring_bytes_in_use, 0);
        long idle = ring_resident_kib();
        cr_expect_leq(idle, 8, "round %d: %ld KiB of the ring still resident while idle (%ld after the burst)", round,
                      idle, grown);
    }
    /* The idle watches saw nothing: every connection is still good. */
    get_each_once(loop, conns, values, CONNS, VALUE);
    for (int i = 0; i < CONNS; i++) {
        rp_pool_put(pool, conns[i]);
        free(values[i]);
    }
    fx_close_and_free(loop, pool);
}

/* Under load the ring follows it: big replies all at once grow it, then a
 * steady trickle of small replies on a few connections for a few seconds
 * (the ring is registered anew under them, receives in flight) shrinks it,
 * and another burst grows it again. Every reply comes once and exact. */
typedef struct trickle {
    rp_conn *conn;
    int sent, answered, wrong;
    bool stop;
} trickle;

static void trickle_next(trickle *t);

static void trickle_cb(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    trickle *t = data;
    t->answered++;
    char want[32];
    snprintf(want, sizeof want, "%d", t->answered);
    if (status != 0 || !reply || reply->type != REDIS_REPLY_STRING || strcmp(reply->str, want) != 0)
        t->wrong++;
    if (!t->stop)
        trickle_next(t);
}

static void trickle_next(trickle *t)
{
    char n[32];
    snprintf(n, sizeof n, "%d", ++t->sent);
    if (rp_conn_command(t->conn, trickle_cb, t, 2, (const char *[]){"ECHO", n}, NULL) < 0)
        t->wrong++;
}

Test(recv_ring, the_ring_shrinks_and_grows_under_load_and_loses_nothing)
{
    char *values[CONNS];
    set_values(values, CONNS, VALUE);
    rp_loop *loop;
    rp_conn *conns[CONNS];
    rp_pool *pool = pool_of_conns(&loop, conns);
    enum { TRICKLES = 4 };
    uint64_t most_grown = 0;
    for (int round = 0; round < 2; round++) {
        get_each_once(loop, conns, values, CONNS, VALUE);
        rp_loop_stats grown, after;
        rp_loop_stats_get(loop, &grown);
        trickle t[TRICKLES];
        for (int i = 0; i < TRICKLES; i++) {
            t[i] = (trickle){.conn = conns[i]};
            trickle_next(&t[i]);
        }
        fx_run_for(loop, 3500); /* a whole trim period (1 s) after the burst's */
        rp_loop_stats_get(loop, &after); /* while the trickle still flows */
        for (int i = 0; i < TRICKLES; i++)
            t[i].stop = true;
        for (int i = 0; i < TRICKLES; i++)
            cr_assert(fx_run_until_count(loop, &t[i].answered, t[i].sent, 5000), "trickle %d: %d of %d answered",
                      i, t[i].answered, t[i].sent);
        for (int i = 0; i < TRICKLES; i++) {
            cr_expect_eq(t[i].wrong, 0, "round %d, trickle %d: %d of %d replies wrong", round, i, t[i].wrong,
                         t[i].answered);
            cr_expect_gt(t[i].answered, 100, "round %d, trickle %d: only %d replies in 3.5 s", round, i,
                         t[i].answered);
        }
        /* A trickle of small replies finishes a buffer now and then, one
         * at a time: the ring keeps at most twice one plus one. */
        if (ring_on(loop))
            cr_expect_leq(after.recv_ring_bytes, 4 * 64 * 1024,
                          "round %d: the ring kept %llu bytes under a trickle (%llu after the burst)", round,
                          (unsigned long long)after.recv_ring_bytes, (unsigned long long)grown.recv_ring_bytes);
        most_grown = grown.recv_ring_bytes > most_grown ? grown.recv_ring_bytes : most_grown;
    }
    if (ring_on(loop))
        cr_expect_gt(most_grown, 4 * 64 * 1024, "no burst grew the ring past what a trickle keeps");
    get_each_once(loop, conns, values, CONNS, VALUE);
    for (int i = 0; i < CONNS; i++) {
        rp_pool_put(pool, conns[i]);
        free(values[i]);
    }
    fx_close_and_free(loop, pool);
}

/* Allocation failure: the fallback buffers and everything else fail in
 * turn (the ring's growth allocates nothing: it cannot fail), and every GET still ends exactly once,
 * with its value or an error. */
static long allocations, fail_at;
static bool allocation_fails(void) { return ++allocations == fail_at; }
static void *test_malloc(size_t size) { return allocation_fails() ? NULL : malloc(size); }
static void *test_realloc(void *ptr, size_t size) { return allocation_fails() ? NULL : realloc(ptr, size); }
static void *test_calloc(size_t count, size_t size) { return allocation_fails() ? NULL : calloc(count, size); }

enum { SWEEP_CONNS = 12 };

static int gets_done;

static void get_cb(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    (void)status;
    *(rp_conn **)data = conn;
    gets_done++;
}

static void pool_closed(rp_pool *pool, void *data)
{
    (void)pool;
    *(bool *)data = true;
}

static bool dry_ring_scenario(char **values, unsigned settle_ms, int *fallbacks)
{
    rp_loop *loop;
    rp_pool *pool;
    rp_pool_options opts;
    fx_pool_options(&opts, SWEEP_CONNS);
    if (rp_loop_new(&loop, NULL) < 0)
        return false;
    if (rp_pool_new(&pool, loop, &opts) < 0) {
        rp_loop_free(loop);
        return false;
    }
    rp_conn *conns[SWEEP_CONNS] = {0};
    int asked = 0;
    gets_done = 0;
    for (int i = 0; i < SWEEP_CONNS; i++)
        asked += rp_pool_get(pool, get_cb, &conns[i]) > 0;
    cr_assert(fx_run_until_count(loop, &gets_done, asked, 3000), "allocation %ld failing: a get never ended", fail_at);
    got g[SWEEP_CONNS];
    get_all_at_once(loop, settle_ms, conns, g, values, SWEEP_CONNS, VALUE);
    bool all_right = true;
    for (int i = 0; i < SWEEP_CONNS; i++) {
        cr_assert(g[i].calls == -1 || g[i].calls == 1, "allocation %ld failing: GET %d called back %d times",
                  fail_at, i, g[i].calls);
        cr_assert(g[i].calls != 1 || g[i].status < 0 || g[i].right, "allocation %ld failing: GET %d wrong value",
                  fail_at, i);
        all_right = all_right && g[i].calls == 1 && g[i].status == 0;
    }
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    *fallbacks = (int)ls.recv_ring_fallbacks;
    for (int i = 0; i < SWEEP_CONNS; i++)
        if (conns[i])
            rp_pool_put(pool, conns[i]);
    bool closed = false;
    cr_assert_eq(rp_pool_close(pool, pool_closed, &closed), 0);
    cr_assert(fx_run_until(loop, &closed, 3000), "allocation %ld failing: the pool never closed", fail_at);
    cr_assert_eq(rp_loop_free(loop), 0);
    return all_right;
}

Test(recv_ring, a_ring_that_cannot_grow_and_fallbacks_that_fail_lose_nothing)
{
    char *values[SWEEP_CONNS];
    set_values(values, SWEEP_CONNS, VALUE);
    cr_assert_eq(rp_set_allocator(test_malloc, test_realloc, test_calloc, free), 0);
    fail_at = 0;
    allocations = 0;
    int fallbacks;
    cr_assert(dry_ring_scenario(values, SETTLE_MS, &fallbacks), "the scenario fails with every allocation succeeding");
    const char *ring = getenv("RINGPOOL_RECV_RING");
    if (!ring || strcmp(ring, "0"))
        cr_expect_gt(fallbacks, 0, "the ring never ran dry: no fallback was tried");
    long total = allocations;
    for (fail_at = 1; fail_at <= total; fail_at++) {
        allocations = 0;
        int f;
        dry_ring_scenario(values, 20, &f); /* short steps: dry most times, not always */
    }
    fail_at = 0;
    cr_assert_eq(rp_set_allocator(malloc, realloc, calloc, free), 0);
    for (int i = 0; i < SWEEP_CONNS; i++)
        free(values[i]);
}

/* Connections that always owe a reply (each callback sends the next GET,
 * as rp-bench does): the library's heap (counted by an allocator of our
 * own, so exactly) per busy connection is its record, its state, its ring
 * of commands owed, the command and its send buffers; its reader is
 * hiredis's (libc's), and that reader's buffer shows in the client's
 * buffer bytes. hiredis keeps the bytes it parsed until they reach 1 KiB,
 * the ring of commands owed began at 16 and each send buffer at 256 bytes:
 * 2.5 KiB more a connection than needed (at 1000 connections, 40% of
 * rp-bench's heap). */
enum { BUSY = 200, BUSY_ROUNDS = 150 };

static size_t counted_bytes;

static void *counted_malloc(size_t size)
{
    size_t *p = malloc(size + 16);
    if (!p)
        return NULL;
    *p = size;
    counted_bytes += size;
    return (char *)p + 16;
}

static void counted_free(void *ptr)
{
    if (!ptr)
        return;
    size_t *p = (size_t *)((char *)ptr - 16);
    counted_bytes -= *p;
    free(p);
}

static void *counted_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size - 16)
        return NULL;
    void *p = counted_malloc(count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

static void *counted_realloc(void *ptr, size_t size)
{
    void *p = counted_malloc(size);
    if (p && ptr) {
        size_t old = *(size_t *)((char *)ptr - 16);
        memcpy(p, ptr, old < size ? old : size);
        counted_free(ptr);
    }
    return p;
}

typedef struct busy {
    rp_client *client;
    int rounds, wrong;
    size_t heap, buffers; /* sampled in the last connection's last round */
} busy;

static busy busy_conns[BUSY];

static void busy_next(busy *b);

static void busy_cb(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    busy *b = data;
    if (status != 0 || !reply || reply->type != REDIS_REPLY_STRING || strcmp(reply->str, "abc") != 0)
        b->wrong++;
    if (++b->rounds == BUSY_ROUNDS - 1 && b == &busy_conns[BUSY - 1]) {
        b->heap = counted_bytes; /* every connection still owes one */
        b->buffers = rp_client_buffer_bytes(b->client);
    }
    if (b->rounds < BUSY_ROUNDS)
        busy_next(b);
}

static void busy_next(busy *b)
{
    if (rp_client_command(b->client, busy_cb, b, 2, (const char *[]){"GET", "busy"}, NULL) < 0)
        b->wrong++;
}

Test(recv_ring, a_connection_that_always_owes_a_reply_holds_little)
{
    fx_redis_command("*3\r\n$3\r\nSET\r\n$4\r\nbusy\r\n$3\r\nabc\r\n");
    cr_assert_eq(rp_set_allocator(counted_malloc, counted_realloc, counted_calloc, counted_free), 0);
    rp_loop *loop;
    rp_client *client;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = fx_redis_addr;
    opts.pool.pool_size = BUSY;
    opts.pool.min_idle_conns = BUSY;
    opts.max_retries = 0; /* no COMMAND table: the heap is the connections' */
    size_t before = counted_bytes;
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    uint64_t deadline = fx_now_ms() + 20000;
    while (rp_pool_idle_len(rp_client_pool(client)) < BUSY && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_eq(rp_pool_idle_len(rp_client_pool(client)), BUSY);
    for (int i = 0; i < BUSY; i++) {
        busy_conns[i] = (busy){.client = client};
        busy_next(&busy_conns[i]);
    }
    for (int i = 0; i < BUSY; i++)
        cr_assert(fx_run_until_count(loop, &busy_conns[i].rounds, BUSY_ROUNDS, 20000), "connection %d: %d rounds",
                  i, busy_conns[i].rounds);
    for (int i = 0; i < BUSY; i++)
        cr_expect_eq(busy_conns[i].wrong, 0, "connection %d: %d wrong replies", i, busy_conns[i].wrong);
    busy *last = &busy_conns[BUSY - 1];
    size_t per_conn = (last->heap - before) / BUSY;
    fprintf(stderr, "busy: %zu bytes of library heap per connection, buffer bytes %zu\n", per_conn, last->buffers);
    /* Without the ring each connection also reads into its own 4 KiB. */
    size_t own = ring_on(loop) ? 0 : 4096;
    cr_expect_leq(per_conn, 2048 + own, "%zu bytes of library heap per busy connection", per_conn);
    cr_expect_leq(last->buffers, BUSY * (256 + own), "%zu bytes of receive buffers for %d busy connections",
                  last->buffers, BUSY);
    fx_client_close_and_free(loop, client);
    cr_expect_eq(counted_bytes, 0, "%zu bytes of the library's still allocated", counted_bytes);
    cr_assert_eq(rp_set_allocator(malloc, realloc, calloc, free), 0);
}

/* Ten thousand connections, each used once and idle since: the library's
 * heap (mallinfo2: the process's whole malloc heap, hiredis's readers
 * included, measured from before the client opened to after they all went
 * idle, so every record, reader and buffer a connection keeps) must grow
 * by no more than 1.5 KiB a connection. redis-server needs as many
 * clients and fds: the fd limit is raised, or the test is skipped. */
enum { IDLE = 10000 };

Test(recv_ring, ten_thousand_idle_connections_cost_at_most_1536_bytes_each, .timeout = 240)
{
    struct rlimit lim;
    rlim_t want = IDLE + 512;
    if (getrlimit(RLIMIT_NOFILE, &lim) < 0 || lim.rlim_max < want) {
        cr_skip_test("the fd limit (%llu) is below %llu", (unsigned long long)lim.rlim_max, (unsigned long long)want);
    }
    lim.rlim_cur = want;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    fx_redis_stop();
    static const char *const extra[] = {"--maxclients", "10100", NULL};
    fx_redis_start_with(extra);
    rp_loop *loop;
    rp_client *client;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = fx_redis_addr;
    opts.pool.pool_size = IDLE;
    opts.pool.min_idle_conns = IDLE;
    opts.pool.max_concurrent_dials = 256;
    size_t before = mallinfo2().uordblks;
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    uint64_t deadline = fx_now_ms() + 120000;
    while (rp_pool_idle_len(rp_client_pool(client)) < IDLE && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_eq(rp_pool_idle_len(rp_client_pool(client)), IDLE);
    static fx_result pings[IDLE];
    memset(pings, 0, sizeof pings);
    for (int i = 0; i < IDLE; i++)
        cr_assert_eq(rp_client_command(client, fx_result_cb, &pings[i], 1, (const char *[]){"PING"}, NULL), 0);
    int done = 0;
    while (done < IDLE && fx_now_ms() < deadline) {
        rp_loop_run(loop, RP_RUN_ONCE);
        while (done < IDLE && pings[done].calls)
            done++;
    }
    cr_assert_eq(done, IDLE, "only %d of %d PINGs answered", done, IDLE);
    fx_run_for(loop, 50);
    cr_assert_eq(rp_pool_idle_len(rp_client_pool(client)), IDLE, "%d idle", rp_pool_idle_len(rp_client_pool(client)));
    size_t after = mallinfo2().uordblks;
    size_t per_conn = (after - before) / IDLE;
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    cr_log_info("%d idle connections: %zu bytes of heap each, %zu in receive buffers in all, ring %llu bytes", IDLE,
                per_conn, rp_client_buffer_bytes(client), (unsigned long long)ls.recv_ring_bytes);
    fprintf(stderr, "idle: %zu bytes of heap per connection, buffer bytes %zu, ring %llu\n", per_conn,
            rp_client_buffer_bytes(client), (unsigned long long)ls.recv_ring_bytes);
    if (ring_on(loop))
        cr_expect_leq(per_conn, 1536, "%zu bytes of heap per idle connection", per_conn);
    fx_client_close_and_free(loop, client);
    fx_redis_stop();
    fx_redis_start();
}

/* ------------------------------------------- big bulk replies (reply.c) */

/* Replies of 32 KiB strings and more take the reader's buffer (reply.c
 * take_buffer) and give it back after their callback (give_back): a
 * callback that sends more big reads from inside, big strings inside
 * arrays (the last one of a few, several big ones), small replies between
 * them in one read, a reply over the size limit (-EMSGSIZE, once, the
 * connection closed), all exact, under ASan too. */
enum { BIG = 100 * 1000, MID = 40 * 1000 };

typedef struct big_check {
    int calls, status;
    bool right;
    int type;
    size_t elements;
    const char *const *want; /* one value, or an array's elements */
    const size_t *want_len;
    rp_conn *then_conn;      /* sends then_argv on it from the callback */
    const char *const *then_argv;
    struct big_check *then;
    rp_pool *remove_from; /* the callback removes its connection */
} big_check;

static void big_cb(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    big_check *c = data;
    c->calls++;
    c->status = status;
    c->type = reply ? reply->type : -1;
    c->right = reply != NULL;
    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        c->elements = reply->elements;
        for (size_t i = 0; i < reply->elements; i++)
            c->right = c->right && reply->element[i]->len == c->want_len[i] &&
                       !memcmp(reply->element[i]->str, c->want[i], c->want_len[i]);
    } else if (reply) {
        c->right = reply->type == REDIS_REPLY_STRING && reply->len == c->want_len[0] &&
                   !memcmp(reply->str, c->want[0], c->want_len[0]) && reply->str[reply->len] == '\0';
    }
    if (c->then_argv)
        cr_assert_eq(rp_conn_command(conn, big_cb, c->then, 2, c->then_argv, NULL), 0);
    if (c->remove_from)
        rp_pool_remove(c->remove_from, conn, -ECANCELED);
}

static void set_value(const char *key, const char *value, size_t len)
{
    char head[128];
    int n = snprintf(head, sizeof head, "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(key), key, len);
    char *whole = malloc((size_t)n + len + 3);
    memcpy(whole, head, (size_t)n);
    memcpy(whole + n, value, len);
    memcpy(whole + n + len, "\r\n", 3);
    fx_redis_command(whole);
    free(whole);
}

Test(recv_ring, big_strings_taking_the_readers_buffer_come_back_exact)
{
    rp_pool_options po;
    fx_pool_options(&po, 2);
    rp_loop *loop;
    rp_pool *pool = fx_open_pool(&loop, &po);
    char *b1 = pattern(1, BIG), *b2 = pattern(2, BIG), *m1 = pattern(3, MID), *m2 = pattern(4, MID),
         *m3 = pattern(5, MID);
    set_value("b1", b1, BIG);
    set_value("b2", b2, BIG);
    set_value("m1", m1, MID);
    fx_redis_command("DEL big:list\r\n");
    const char *const l[] = {m1, m2, m3};
    for (int i = 0; i < 3; i++) {
        char head[128];
        int n = snprintf(head, sizeof head, "*3\r\n$5\r\nRPUSH\r\n$8\r\nbig:list\r\n$%d\r\n", MID);
        char *whole = malloc((size_t)n + MID + 3);
        memcpy(whole, head, (size_t)n);
        memcpy(whole + n, l[i], MID);
        memcpy(whole + n + MID, "\r\n", 3);
        fx_redis_command(whole);
        free(whole);
    }
    const size_t big_len[] = {BIG, BIG, MID, BIG}, mid_len[] = {MID, MID, MID};
    const char *const b1v[] = {b1}, *const b2v[] = {b2}, *const mget[] = {b1, b2, m1, b2}, *const smallv[] = {""};
    const size_t small_len[] = {0};
    big_check inner = {.want = b2v, .want_len = big_len}, first = {.want = b1v, .want_len = big_len, .then = &inner,
                                                                    .then_argv = (const char *[]){"GET", "b2"}};
    big_check small = {.want = smallv, .want_len = small_len}, multi = {.want = mget, .want_len = big_len},
              range = {.want = l, .want_len = mid_len}, last = {.want = b2v, .want_len = big_len};
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_assert_eq(rp_conn_command(conn, big_cb, &first, 2, (const char *[]){"GET", "b1"}, NULL), 0);
    cr_assert_eq(rp_conn_command(conn, big_cb, &small, 2, (const char *[]){"GET", "nothing:here"}, NULL), 0);
    cr_assert_eq(rp_conn_command(conn, big_cb, &multi, 5, (const char *[]){"MGET", "b1", "b2", "m1", "b2"}, NULL), 0);
    cr_assert_eq(rp_conn_command(conn, big_cb, &range, 4, (const char *[]){"LRANGE", "big:list", "0", "-1"}, NULL), 0);
    cr_assert_eq(rp_conn_command(conn, big_cb, &last, 2, (const char *[]){"GET", "b2"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &inner.calls, 1, 5000));
    cr_assert(fx_run_until_count(loop, &last.calls, 1, 5000));
    fx_run_for(loop, 20);
    cr_expect(first.calls == 1 && first.status == 0 && first.right, "GET b1");
    cr_expect(small.calls == 1 && small.status == 0 && small.type == REDIS_REPLY_NIL, "GET of no key");
    cr_expect(multi.calls == 1 && multi.right && multi.elements == 4, "MGET");
    cr_expect(range.calls == 1 && range.right && range.elements == 3, "LRANGE");
    cr_expect(last.calls == 1 && last.right, "GET b2");
    cr_expect(inner.calls == 1 && inner.status == 0 && inner.right, "the GET sent from a callback");

    /* Over the limit: -EMSGSIZE once, for the big reply and after. */
    cr_assert_eq(rp_conn_set_max_reply_bytes(conn, BIG / 2), 0);
    big_check over = {.want = b1v, .want_len = big_len}, after = {.want = b2v, .want_len = big_len};
    cr_assert_eq(rp_conn_command(conn, big_cb, &over, 2, (const char *[]){"GET", "b1"}, NULL), 0);
    cr_assert_eq(rp_conn_command(conn, big_cb, &after, 2, (const char *[]){"GET", "b2"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &after.calls, 1, 5000));
    fx_run_for(loop, 20);
    cr_expect(over.calls == 1 && over.status == -EMSGSIZE, "over the limit: %d calls, status %d", over.calls,
              over.status);
    cr_expect(after.calls == 1 && after.status < 0, "after it: %d calls, status %d", after.calls, after.status);
    rp_pool_put(pool, conn);

    /* Another connection reads them whole. */
    conn = fx_get_conn(loop, pool);
    big_check again = {.want = mget, .want_len = big_len};
    cr_assert_eq(rp_conn_command(conn, big_cb, &again, 5, (const char *[]){"MGET", "b1", "b2", "m1", "b2"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &again.calls, 1, 5000));
    cr_expect(again.right && again.elements == 4);

    /* The first of three big replies read together removes the connection
     * from its callback: the others end once, -ECANCELED. */
    big_check gone[3] = {{.want = b1v, .want_len = big_len, .remove_from = pool}, {.want = b2v, .want_len = big_len},
                         {.want = b1v, .want_len = big_len}};
    const char *keys[] = {"b1", "b2", "b1"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rp_conn_command(conn, big_cb, &gone[i], 2, (const char *[]){"GET", keys[i]}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &gone[2].calls, 1, 5000));
    fx_run_for(loop, 20);
    cr_expect(gone[0].calls == 1 && gone[0].right);
    for (int i = 1; i < 3; i++)
        cr_expect(gone[i].calls == 1 && gone[i].status == -ECANCELED, "read %d: %d calls, status %d", i,
                  gone[i].calls, gone[i].status);
    fx_close_and_free(loop, pool);
    free(b1), free(b2), free(m1), free(m2), free(m3);
}
