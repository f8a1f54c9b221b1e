/* Receive buffers follow the traffic: a thousand idle connections cost a
 * few KiB each, a large reply grows its connection's buffers, and the
 * memory goes back once nothing is owed, or once the replies that follow
 * are small. rp_client_buffer_bytes is the library's own count. */
#include "fixture.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

enum { CONNS = 1000, BIG = 10 * 1024 * 1024 };
#define IDLE_BOUND ((size_t)CONNS * 8 * 1024)

/* A thousand sockets here and as many in redis-server, which sizes its
 * maxclients by the fd limit it inherits: raise the soft limit first. */
static void setup(void)
{
    struct rlimit lim;
    rlim_t want = CONNS + 200;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < want && lim.rlim_max >= want) {
        lim.rlim_cur = want;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    fx_setup();
}

TestSuite(buffers, .init = setup, .fini = fx_teardown, .timeout = 120);

static rp_loop *loop;
static rp_client *client;

/* A client whose pool is filled with pool_size idle connections. */
static void open_client(int pool_size)
{
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = fx_redis_addr;
    opts.pool.pool_size = pool_size;
    opts.pool.min_idle_conns = pool_size;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    uint64_t deadline = fx_now_ms() + 30000;
    while (rp_pool_idle_len(rp_client_pool(client)) < pool_size && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_eq(rp_pool_idle_len(rp_client_pool(client)), pool_size);
}

/* SET big <10 MB of 'x'>, through the client. */
static void set_big_value(void)
{
    char *value = malloc(BIG);
    memset(value, 'x', BIG);
    fx_result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 3, (const char *[]){"SET", "big", value},
                                   (const size_t[]){3, 3, BIG}),
                 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000));
    cr_assert_eq(r.status, 0);
    free(value);
}

/* A reply's size, and the buffer bytes counted while its callback ran. */
typedef struct sample {
    int calls, status;
    size_t len, bytes;
} sample;

static void sample_reply(rp_client *c, const redisReply *reply, int status, void *data)
{
    sample *s = data;
    s->calls++;
    s->status = status;
    s->len = reply ? reply->len : 0;
    s->bytes = rp_client_buffer_bytes(c);
}

Test(buffers, a_thousand_idle_connections_hold_little_and_a_large_reply_gives_its_memory_back)
{
    open_client(CONNS);
    /* A thousand commands at once: each takes an idle connection of its
     * own, whose recv stays armed as its idle watch once the reply is read. */
    static fx_result pings[CONNS];
    memset(pings, 0, sizeof pings);
    int done = 0;
    for (int i = 0; i < CONNS; i++)
        cr_assert_eq(rp_client_command(client, fx_result_cb, &pings[i], 1, (const char *[]){"PING"}, NULL), 0);
    uint64_t deadline = fx_now_ms() + 30000;
    while (done < CONNS && fx_now_ms() < deadline) {
        rp_loop_run(loop, RP_RUN_ONCE);
        for (done = 0; done < CONNS && pings[done].calls; done++)
            ;
    }
    cr_assert_eq(done, CONNS, "only %d of %d PINGs answered", done, CONNS);
    cr_assert_eq(rp_pool_len(rp_client_pool(client)), CONNS);
    size_t idle = rp_client_buffer_bytes(client);
    cr_expect_leq(idle, IDLE_BOUND, "%d idle connections hold %zu bytes", CONNS, idle);
    /* Through the loop's buffer ring an idle connection holds no recv
     * buffer (only its reader's few bytes); without it, one of its own. */
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    if (ls.recv_ring_bytes)
        cr_expect_leq(idle, (size_t)CONNS * 128, "%d idle connections hold %zu bytes with the ring", CONNS, idle);
    else
        cr_expect_geq(idle, (size_t)CONNS * 1024, "each connection's recv buffer is counted");

    set_big_value();
    sample get = {0};
    cr_assert_eq(rp_client_command(client, sample_reply, &get, 2, (const char *[]){"GET", "big"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &get.calls, 1, 10000));
    cr_assert_eq(get.status, 0);
    cr_assert_eq(get.len, (size_t)BIG);
    cr_expect_geq(get.bytes, idle + BIG, "while its reply is read, a connection holds it: %zu bytes", get.bytes);
    size_t after = rp_client_buffer_bytes(client);
    cr_expect_leq(after, IDLE_BOUND, "after the reply %zu bytes are still held", after);
    fx_client_close_and_free(loop, client);
}

/* A held connection kept busy (each reply's callback sends the next
 * command, so something is always owed): after one large reply, the small
 * ones that follow shrink its buffers again. */
typedef struct chain {
    int left, status;
    size_t peak, last; /* bytes counted in the callbacks */
} chain;

static void next_ping(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    chain *c = data;
    c->last = rp_client_buffer_bytes(client);
    c->peak = c->last > c->peak ? c->last : c->peak;
    if (status < 0 || reply->type == REDIS_REPLY_ERROR)
        c->status = status < 0 ? status : -1;
    if (c->status == 0 && --c->left > 0)
        cr_assert_eq(rp_conn_command(conn, next_ping, c, 1, (const char *[]){"PING"}, NULL), 0);
}

Test(buffers, a_busy_connection_shrinks_its_buffers_once_replies_are_small)
{
    open_client(1);
    set_big_value();
    rp_conn *conn = fx_get_conn(loop, rp_client_pool(client));
    chain c = {.left = 32};
    cr_assert_eq(rp_conn_command(conn, next_ping, &c, 2, (const char *[]){"GET", "big"}, NULL), 0);
    uint64_t deadline = fx_now_ms() + 10000;
    while (c.left > 0 && c.status == 0 && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_eq(c.status, 0);
    cr_assert_eq(c.left, 0);
    cr_expect_geq(c.peak, (size_t)BIG, "the large reply was counted: peak %zu bytes", c.peak);
    /* Counted in the last reply's callback, while the connection still
     * owed it: going idle afterwards would release the buffers anyway. */
    cr_expect_leq(c.last, 8 * 1024, "after 31 small replies in a row the connection held %zu bytes", c.last);
    rp_pool_put(rp_client_pool(client), conn);
    fx_client_close_and_free(loop, client);
}

/* The body of a large bulk string is read straight into the reader's
 * buffer (redis.c, recv_target): values inside an array, one right after
 * another in one read, and small replies after them all come back exact,
 * whatever the reads' boundaries. */
enum { PART = 300 * 1000 };

static char *pattern(int seed, size_t len)
{
    char *v = malloc(len);
    for (size_t i = 0; i < len; i++)
        v[i] = (char)('a' + (i * 7 + (size_t)seed) % 26);
    return v;
}

typedef struct exact {
    int calls, status;
    bool right;
    const char *want[3];
    size_t want_len;
    int nwant;
} exact;

static void check_exact(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    exact *e = data;
    e->calls++;
    e->status = status;
    const redisReply *const *items = reply && reply->type == REDIS_REPLY_ARRAY ? (const redisReply *const *)reply->element
                                                                                : (const redisReply *const *)&reply;
    size_t n = reply && reply->type == REDIS_REPLY_ARRAY ? reply->elements : 1;
    e->right = reply && (int)n == e->nwant;
    for (size_t i = 0; e->right && i < n; i++)
        e->right = items[i]->type == REDIS_REPLY_STRING && items[i]->len == e->want_len &&
                   memcmp(items[i]->str, e->want[i], e->want_len) == 0;
}

Test(buffers, large_values_in_arrays_and_pipelines_come_back_exact)
{
    open_client(1);
    char *v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = pattern(i, PART);
        char key[8];
        snprintf(key, sizeof key, "v%d", i);
        fx_result r = {0};
        cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 3, (const char *[]){"SET", key, v[i]},
                                       (const size_t[]){3, strlen(key), PART}),
                     0);
        cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000));
        cr_assert_eq(r.status, 0);
    }
    rp_conn *conn = fx_get_conn(loop, rp_client_pool(client));
    exact all = {.want = {v[0], v[1], v[2]}, .want_len = PART, .nwant = 3};
    exact second = {.want = {v[1]}, .want_len = PART, .nwant = 1};
    exact small = {0};
    for (int round = 0; round < 3; round++) {
        all.calls = second.calls = small.calls = 0;
        cr_assert_eq(rp_conn_command(conn, check_exact, &all, 4, (const char *[]){"MGET", "v0", "v1", "v2"}, NULL),
                     0);
        cr_assert_eq(rp_conn_command(conn, check_exact, &second, 2, (const char *[]){"GET", "v1"}, NULL), 0);
        cr_assert_eq(rp_conn_command(conn, check_exact, &small, 2, (const char *[]){"STRLEN", "none"}, NULL), 0);
        cr_assert(fx_run_until_count(loop, &small.calls, 1, 10000));
        cr_expect(all.calls == 1 && all.status == 0 && all.right, "round %d: MGET came back wrong", round);
        cr_expect(second.calls == 1 && second.status == 0 && second.right, "round %d: GET came back wrong", round);
        cr_expect(small.calls == 1 && small.status == 0);
    }
    rp_pool_put(rp_client_pool(client), conn);
    for (int i = 0; i < 3; i++)
        free(v[i]);
    fx_client_close_and_free(loop, client);
}
