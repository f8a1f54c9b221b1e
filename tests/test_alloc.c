/* Allocation failure: each scenario runs once to count its allocations,
 * then once per N with the Nth allocation failing (rp_set_allocator).
 * Every run must end: each accepted request's callback exactly once, every
 * object closed and the loop freed, no crash, and (under ASan) no leak.
 * hiredis's reader allocates its own buffer, outside the sweep. */
#include "fixture.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

TestSuite(alloc, .init = fx_setup, .fini = fx_teardown, .timeout = 240);

static long allocations, fail_at;

static bool allocation_fails(void) { return ++allocations == fail_at; }
static void *test_malloc(size_t size) { return allocation_fails() ? NULL : malloc(size); }
static void *test_realloc(void *ptr, size_t size) { return allocation_fails() ? NULL : realloc(ptr, size); }
static void *test_calloc(size_t count, size_t size) { return allocation_fails() ? NULL : calloc(count, size); }

/* Callbacks counted per request: each must run exactly once. */
#define MAX_REQUESTS 32
typedef struct tally {
    int accepted;
    int calls[MAX_REQUESTS];
    int status[MAX_REQUESTS];
    rp_conn *conn[MAX_REQUESTS];
    rp_pool *put_back; /* gets after the first put their connection back at once */
    bool closed;
} tally;

static tally t;

static void expect_each_callback_once(const char *scenario)
{
    for (int i = 0; i < t.accepted; i++)
        cr_assert_eq(t.calls[i], 1, "%s, allocation %ld failing: request %d called back %d times", scenario,
                     fail_at, i, t.calls[i]);
}

static bool all_called(void)
{
    for (int i = 0; i < t.accepted; i++)
        if (!t.calls[i])
            return false;
    return true;
}

static void run_until_all_called(rp_loop *loop, const char *scenario)
{
    uint64_t deadline = fx_now_ms() + 3000;
    while (!all_called() && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    expect_each_callback_once(scenario);
}

static void closed_cb(rp_pool *pool, void *data)
{
    (void)pool;
    *(bool *)data = true;
}

static void client_closed_cb(rp_client *client, void *data)
{
    (void)client;
    *(bool *)data = true;
}

static void close_pool_and_loop(rp_loop *loop, rp_pool *pool)
{
    t.closed = false;
    cr_assert_eq(rp_pool_close(pool, closed_cb, &t.closed), 0);
    cr_assert(fx_run_until(loop, &t.closed, 3000), "allocation %ld failing: the pool never closed", fail_at);
    cr_assert_eq(rp_loop_free(loop), 0);
}

static void close_client_and_loop(rp_loop *loop, rp_client *client)
{
    t.closed = false;
    cr_assert_eq(rp_client_close(client, client_closed_cb, &t.closed), 0);
    cr_assert(fx_run_until(loop, &t.closed, 3000), "allocation %ld failing: the client never closed", fail_at);
    cr_assert_eq(rp_loop_free(loop), 0);
}

static void on_get(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    int i = (int)(intptr_t)data;
    t.calls[i]++;
    t.status[i] = status;
    t.conn[i] = conn;
    cr_assert(status == 0 ? conn != NULL : conn == NULL && status < 0);
    if (conn && i > 0 && t.put_back)
        rp_pool_put(t.put_back, conn);
}

static void on_reply(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    int i = (int)(intptr_t)data;
    t.calls[i]++;
    t.status[i] = status;
    cr_assert(status == 0 ? reply != NULL : reply == NULL && status < 0);
}

/* Accepts a request's id or count, and notes that a callback is owed. */
static bool accepted(int64_t rc)
{
    if (rc < 0) {
        cr_assert(rc == -ENOMEM || rc == RP_ECLOSED, "a refused request said %s", rp_strerror((int)rc));
        return false;
    }
    t.accepted++;
    return true;
}

static void pool_opts(rp_pool_options *opts)
{
    fx_pool_options(opts, 2);
    opts->min_idle_conns = 1;
    opts->pool_timeout_ms = 1000;
}

/* A fresh scenario's loop and pool; false if an allocation failed (and
 * then nothing is left open). */
static bool open_loop_and_pool(rp_loop **loop, rp_pool **pool, const rp_pool_options *opts)
{
    memset(&t, 0, sizeof t);
    if (rp_loop_new(loop, NULL) < 0)
        return false;
    if (rp_pool_new(pool, *loop, opts) < 0) {
        cr_assert_eq(rp_loop_free(*loop), 0);
        return false;
    }
    return true;
}

/* Gets with dials and a waiter, puts from the callbacks, a cancel, and a
 * close while a connection is out (put after the close). */
static bool pool_scenario(void)
{
    rp_loop *loop;
    rp_pool *pool;
    rp_pool_options opts;
    pool_opts(&opts);
    if (!open_loop_and_pool(&loop, &pool, &opts))
        return false;
    t.put_back = pool;
    for (int i = 0; i < 4; i++)
        accepted(rp_pool_get(pool, on_get, (void *)(intptr_t)t.accepted));
    int64_t id = rp_pool_get(pool, on_get, (void *)(intptr_t)t.accepted);
    if (accepted(id))
        cr_assert_eq(rp_pool_cancel(pool, id), 0);
    run_until_all_called(loop, "pool");
    bool all_ok = t.accepted == 5 && t.status[4] == -ECANCELED;
    for (int i = 0; i < t.accepted - 1; i++)
        all_ok = all_ok && t.status[i] == 0;
    t.closed = false;
    cr_assert_eq(rp_pool_close(pool, closed_cb, &t.closed), 0);
    if (t.conn[0])
        rp_pool_put(pool, t.conn[0]);
    cr_assert(fx_run_until(loop, &t.closed, 3000), "allocation %ld failing: the pool never closed", fail_at);
    cr_assert_eq(rp_loop_free(loop), 0);
    return all_ok;
}

/* A loop and a client whose idle connections are handed out unchecked,
 * as a busy client's are, auto-pipelined on lanes owing at most two when
 * lanes > 0; false if either could not be created. */
static bool open_client(rp_loop **loop, rp_client **client, int lanes)
{
    memset(&t, 0, sizeof t);
    if (rp_loop_new(loop, NULL) < 0)
        return false;
    rp_client_options opts;
    rp_client_options_init(&opts);
    pool_opts(&opts.pool);
    opts.pool.health_check_idle_ms = 60000;
    opts.pool.min_idle_conns = 0;
    opts.autopipeline_conns = lanes;
    opts.autopipeline_max_owed = 2;
    if (rp_client_new(client, *loop, &opts) < 0) {
        cr_assert_eq(rp_loop_free(*loop), 0);
        return false;
    }
    return true;
}

/* Pipelined commands, then retries: the server kills every connection
 * and the next batch meets them dead before its bytes are sent. */
static bool commands_and_retries(int lanes)
{
    rp_loop *loop;
    rp_client *client;
    if (!open_client(&loop, &client, lanes))
        return false;
    for (int batch = 0; batch < 2; batch++) {
        for (int i = 0; i < 5; i++)
            accepted(rp_client_command(client, on_reply, (void *)(intptr_t)t.accepted, 3,
                                       (const char *[]){"SET", "k", "v"}, NULL));
        run_until_all_called(loop, "client");
        if (batch == 0)
            fx_redis_command("*4\r\n$6\r\nCLIENT\r\n$4\r\nKILL\r\n$4\r\nTYPE\r\n$6\r\nnormal\r\n");
    }
    bool all_ok = t.accepted == 10;
    for (int i = 0; i < t.accepted; i++)
        all_ok = all_ok && t.status[i] == 0;
    close_client_and_loop(loop, client);
    return all_ok;
}

static bool client_scenario(void) { return commands_and_retries(0); }
/* Five commands on lanes of two: a lane, a spill to the second, waiting. */
static bool autopipeline_scenario(void) { return commands_and_retries(2); }

static void on_message(rp_conn *conn, const redisReply *msg, int status, void *data)
{
    (void)conn;
    (void)data;
    if (!msg)
        t.calls[MAX_REQUESTS - 1]++; /* the subscription's last call */
    else if (msg->type == REDIS_REPLY_ARRAY && msg->elements == 3 && !strcmp(msg->element[0]->str, "message"))
        t.status[MAX_REQUESTS - 1]++;
    (void)status;
}

/* A subscriber on its own connection, a message published to it, then an
 * unsubscribe that ends the subscription. */
static bool pubsub_scenario(void)
{
    rp_loop *loop;
    rp_pool *pool;
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    if (!open_loop_and_pool(&loop, &pool, &opts))
        return false;
    bool ok = accepted(rp_pool_new_conn(pool, on_get, (void *)(intptr_t)t.accepted));
    run_until_all_called(loop, "pubsub");
    rp_conn *sub = t.conn[0];
    ok = ok && sub && rp_conn_subscribe(sub, on_message, NULL, 2, (const char *[]){"SUBSCRIBE", "ch"}, NULL) == 0;
    if (ok) {
        fx_run_for(loop, 30);
        fx_redis_command("*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\nhi\r\n");
        uint64_t deadline = fx_now_ms() + 2000;
        while (!t.status[MAX_REQUESTS - 1] && !t.calls[MAX_REQUESTS - 1] && fx_now_ms() < deadline)
            rp_loop_run(loop, RP_RUN_ONCE);
        ok = t.status[MAX_REQUESTS - 1] == 1;
        if (!t.calls[MAX_REQUESTS - 1] && rp_conn_unsubscribe(sub, 1, (const char *[]){"UNSUBSCRIBE"}, NULL) == 0) {
            deadline = fx_now_ms() + 2000;
            while (!t.calls[MAX_REQUESTS - 1] && fx_now_ms() < deadline)
                rp_loop_run(loop, RP_RUN_ONCE);
        }
        cr_assert_leq(t.calls[MAX_REQUESTS - 1], 1, "the subscription's last call came twice");
    }
    if (sub)
        rp_pool_remove(pool, sub, 0);
    close_pool_and_loop(loop, pool);
    return ok;
}

/* Commands in flight when the client closes: sent ones complete, the rest
 * get RP_ECLOSED. */
static bool close_scenario(void)
{
    rp_loop *loop;
    rp_client *client;
    if (!open_client(&loop, &client, 0))
        return false;
    for (int i = 0; i < 6; i++)
        accepted(rp_client_command(client, on_reply, (void *)(intptr_t)t.accepted, 2,
                                   (const char *[]){"INCR", "n"}, NULL));
    rp_loop_run(loop, RP_RUN_NOWAIT);
    close_client_and_loop(loop, client);
    expect_each_callback_once("close");
    return t.accepted == 6;
}

/* A large reply: its connection's recv buffer grows while the reply is
 * read (a grow that fails leaves the reads in the buffer they had), and
 * goes back to the small one once nothing is owed. */
static bool large_reply_scenario(void)
{
    rp_loop *loop;
    rp_client *client;
    if (!open_client(&loop, &client, 0))
        return false;
    static char value[256 * 1024];
    memset(value, 'x', sizeof value);
    accepted(rp_client_command(client, on_reply, (void *)(intptr_t)t.accepted, 3,
                               (const char *[]){"SET", "big", value}, (const size_t[]){3, 3, sizeof value}));
    run_until_all_called(loop, "large reply");
    accepted(rp_client_command(client, on_reply, (void *)(intptr_t)t.accepted, 2, (const char *[]){"GET", "big"},
                               NULL));
    run_until_all_called(loop, "large reply");
    bool all_ok = t.accepted == 2 && t.status[0] == 0 && t.status[1] == 0;
    close_client_and_loop(loop, client);
    return all_ok;
}

/* Big values sent by reference from the commands' copies: several on a
 * lane (pieces of one send), one too large for the lane on a connection
 * of its own, then read back. A failure anywhere (a batch's pieces, the
 * vectored send's iovecs) leaves each callback called once, and every
 * value the server took is the value sent. */
static char big_read[4][64];
static void on_big_get(rp_client *client, const redisReply *reply, int status, void *data)
{
    int i = (int)(intptr_t)data;
    on_reply(client, reply, status, data);
    snprintf(big_read[i % 4], sizeof big_read[0], "%s",
             reply && reply->type == REDIS_REPLY_STRING && reply->len >= 8 ? reply->str + reply->len - 8 : "");
}

static bool big_values_scenario(void)
{
    rp_loop *loop;
    rp_client *client;
    if (!open_client(&loop, &client, 1))
        return false;
    static char values[4][1536 * 1024];
    static const size_t lens[4] = {40 * 1024, 48 * 1024, 64 * 1024 + 3, sizeof values[3]};
    const char *keys[4] = {"b0", "b1", "b2", "b3"};
    for (int i = 0; i < 4; i++) {
        memset(values[i], 'a' + i, lens[i]);
        char end[9];
        snprintf(end, sizeof end, "end:%04d", i);
        memcpy(values[i] + lens[i] - 8, end, 8);
        accepted(rp_client_command(client, on_reply, (void *)(intptr_t)t.accepted, 3,
                                   (const char *[]){"SET", keys[i], values[i]}, (const size_t[]){3, 2, lens[i]}));
    }
    run_until_all_called(loop, "big values");
    int sets = t.accepted;
    memset(big_read, 0, sizeof big_read);
    for (int i = 0; i < 4; i++)
        accepted(rp_client_command(client, on_big_get, (void *)(intptr_t)t.accepted, 2,
                                   (const char *[]){"GET", keys[i]}, NULL));
    run_until_all_called(loop, "big values");
    bool all_ok = t.accepted == 8;
    for (int i = 0; i < t.accepted; i++)
        all_ok = all_ok && t.status[i] == 0;
    for (int i = 0; all_ok && i < 4; i++) {
        char want[9];
        snprintf(want, sizeof want, "end:%04d", i);
        cr_assert_str_eq(big_read[(sets + i) % 4], want, "value %d read back wrong", i);
    }
    close_client_and_loop(loop, client);
    return all_ok;
}

/* The raw pool's own protocol helpers: each get's connection sends two
 * PINGs with rp_conn_roundtrip, which receives the first reply, and
 * rp_conn_recv_until the second; the connection then goes back (removed
 * after an error). Each step is a request whose callback is owed. */
static ssize_t line_frame(const char *data, size_t len, void *arg)
{
    (void)arg;
    const char *eol = memchr(data, '\n', len);
    return eol ? eol - data + 1 : 0;
}

static int pong_status(const char *frame, ssize_t len)
{
    return len < 0 ? (int)len : len == 7 && !memcmp(frame, "+PONG\r\n", 7) ? 0 : -EPROTO;
}

static void raw_done(rp_conn *conn, int status)
{
    if (status < 0)
        rp_pool_remove(rp_conn_pool(conn), conn, status);
    else
        rp_pool_put(rp_conn_pool(conn), conn);
}

static void on_second_pong(rp_conn *conn, const char *frame, ssize_t len, void *data)
{
    int i = (int)(intptr_t)data;
    t.calls[i]++;
    t.status[i] = pong_status(frame, len);
    raw_done(conn, t.status[i]);
}

static void on_first_pong(rp_conn *conn, const char *frame, ssize_t len, void *data)
{
    int i = (int)(intptr_t)data;
    t.calls[i]++;
    t.status[i] = pong_status(frame, len);
    void *next = (void *)(intptr_t)t.accepted;
    if (t.status[i] < 0 || !accepted(rp_conn_recv_until(conn, "\r\n", 2, 64, on_second_pong, next)))
        raw_done(conn, t.status[i] < 0 ? t.status[i] : -ENOMEM);
}

static void on_raw_get(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    int i = (int)(intptr_t)data;
    t.calls[i]++;
    t.status[i] = status;
    static const struct iovec pings[2] = {{(void *)"PING\r\n", 6}, {(void *)"PING\r\n", 6}};
    void *next = (void *)(intptr_t)t.accepted;
    if (conn && !accepted(rp_conn_roundtrip(conn, pings, 2, line_frame, NULL, 64, on_first_pong, next)))
        raw_done(conn, -ENOMEM);
}

static bool raw_scenario(void)
{
    rp_loop *loop;
    rp_pool *pool;
    rp_pool_options opts;
    pool_opts(&opts);
    if (!open_loop_and_pool(&loop, &pool, &opts))
        return false;
    for (int i = 0; i < 3; i++)
        accepted(rp_pool_get(pool, on_raw_get, (void *)(intptr_t)t.accepted));
    run_until_all_called(loop, "raw");
    bool all_ok = t.accepted == 9;
    for (int i = 0; i < t.accepted; i++)
        all_ok = all_ok && t.status[i] == 0;
    close_pool_and_loop(loop, pool);
    return all_ok;
}

/* Every allocation up to 300, then a spread of the rest (the client's
 * first connection reads the COMMAND table: thousands of small ones). */
static void sweep(const char *name, bool (*scenario)(void))
{
    cr_assert_eq(rp_set_allocator(test_malloc, test_realloc, test_calloc, free), 0);
    fail_at = 0;
    allocations = 0;
    cr_assert(scenario(), "%s does not succeed with every allocation succeeding", name);
    long total = allocations;
    cr_assert_gt(total, 0, "%s allocated nothing through the hooks", name);
    long step = total > 600 ? (total - 300) / 300 : 1;
    for (fail_at = 1; fail_at <= total; fail_at += fail_at < 300 ? 1 : step) {
        allocations = 0;
        scenario();
    }
    fail_at = 0;
}

Test(alloc, set_allocator_refuses_null_functions)
{
    cr_expect_eq(rp_set_allocator(NULL, realloc, calloc, free), -EINVAL);
    cr_expect_eq(rp_set_allocator(malloc, realloc, calloc, NULL), -EINVAL);
}

Test(alloc, pool_gets_puts_and_close_survive_each_failing_allocation) { sweep("pool", pool_scenario); }
Test(alloc, client_commands_and_retries_survive_each_failing_allocation) { sweep("client", client_scenario); }
Test(alloc, autopipelined_commands_and_retries_survive_each_failing_allocation)
{
    sweep("autopipeline", autopipeline_scenario);
}
Test(alloc, pubsub_survives_each_failing_allocation) { sweep("pubsub", pubsub_scenario); }
Test(alloc, close_with_commands_in_flight_survives_each_failing_allocation) { sweep("close", close_scenario); }
Test(alloc, a_large_reply_survives_each_failing_allocation) { sweep("large reply", large_reply_scenario); }
Test(alloc, raw_round_trips_survive_each_failing_allocation) { sweep("raw", raw_scenario); }
Test(alloc, big_values_sent_by_reference_survive_each_failing_allocation)
{
    sweep("big values", big_values_scenario);
}
