/* ConnPool behaviour against a real redis-server. */
#include "fixture.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

TestSuite(pool, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

static rp_loop *loop;
static rp_pool *pool;

static void open_pool(rp_pool_options *opts)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&pool, loop, opts), 0);
}

static void open_default_pool(int pool_size)
{
    rp_pool_options opts;
    fx_pool_options(&opts, pool_size);
    open_pool(&opts);
}

static rp_stats stats(void)
{
    rp_stats st;
    rp_pool_stats(pool, &st);
    return st;
}

Test(pool, get_dials_then_reuses_idle_connection)
{
    open_default_pool(4);
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_assert(fx_ping(loop, conn));
    cr_expect_eq(stats().misses, 1);
    cr_expect_eq(stats().hits, 0);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_idle_len(pool), 1);
    rp_conn *again = fx_get_conn(loop, pool);
    cr_expect_eq(again, conn, "the idle connection was not reused");
    cr_expect_eq(stats().hits, 1);
    cr_expect_eq(stats().total_conns, 1);
    cr_expect_eq(rp_pool_len(pool), 1);
    rp_pool_put(pool, again);
    fx_close_and_free(loop, pool);
}

Test(pool, callback_never_runs_inside_get)
{
    open_default_pool(2);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_expect_eq(got.calls, 0, "the callback ran inside rp_pool_get");
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(got.calls, 1);
    rp_pool_put(pool, got.conn);
    fx_close_and_free(loop, pool);
}

static void get_three_then_put(rp_conn *conns[3])
{
    for (int i = 0; i < 3; i++)
        conns[i] = fx_get_conn(loop, pool);
    for (int i = 0; i < 3; i++)
        rp_pool_put(pool, conns[i]);
}

Test(pool, idle_connections_pop_lifo_by_default)
{
    open_default_pool(4);
    rp_conn *conns[3];
    get_three_then_put(conns);
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_expect_eq(conn, conns[2], "LIFO should hand out the last one put");
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

Test(pool, idle_connections_pop_fifo_with_pool_fifo)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.pool_fifo = true;
    open_pool(&opts);
    rp_conn *conns[3];
    get_three_then_put(conns);
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_expect_eq(conn, conns[0], "FIFO should hand out the first one put");
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

Test(pool, waiters_are_served_in_strict_fifo_order)
{
    open_default_pool(1);
    rp_conn *held = fx_get_conn(loop, pool);
    fx_got waiters[5] = {0};
    for (int i = 0; i < 5; i++)
        cr_assert_gt(rp_pool_get(pool, fx_get_cb, &waiters[i]), 0);
    for (int i = 0; i < 5; i++) {
        rp_pool_put(pool, held);
        cr_assert(fx_run_until_count(loop, &waiters[i].calls, 1, 2000));
        cr_expect_eq(waiters[i].status, 0);
        for (int j = i + 1; j < 5; j++)
            cr_expect_eq(waiters[j].calls, 0, "waiter %d served before waiter %d", j, i);
        held = waiters[i].conn;
    }
    rp_stats st = stats();
    cr_expect_eq(st.wait_count, 5);
    cr_expect_gt(st.wait_duration_ns, 0);
    rp_pool_put(pool, held);
    fx_close_and_free(loop, pool);
}

Test(pool, pool_timeout_fires_on_time)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.pool_timeout_ms = 200;
    open_pool(&opts);
    rp_conn *held = fx_get_conn(loop, pool);
    fx_got got = {0};
    uint64_t start = fx_now_ms();
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 3000));
    uint64_t waited = fx_now_ms() - start;
    cr_expect_eq(got.status, RP_EPOOLTIMEOUT);
    cr_expect_null(got.conn);
    cr_expect_geq(waited, 200, "timed out early: %lu ms", (unsigned long)waited);
    cr_expect_leq(waited, 1500, "timed out late: %lu ms", (unsigned long)waited); /* slack for a loaded machine */
    cr_expect_eq(stats().timeouts, 1);
    rp_pool_put(pool, held);
    fx_close_and_free(loop, pool);
}

Test(pool, cancel_queued_waiter_gets_ecanceled_later)
{
    open_default_pool(1);
    rp_conn *held = fx_get_conn(loop, pool);
    fx_got got = {0};
    int64_t id = rp_pool_get(pool, fx_get_cb, &got);
    cr_assert_gt(id, 0);
    cr_assert_eq(rp_pool_cancel(pool, id), 0);
    cr_expect_eq(got.calls, 0, "cancel ran the callback inside the call");
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 1000));
    cr_expect_eq(got.status, -ECANCELED);
    cr_expect_eq(rp_pool_cancel(pool, id), -ENOENT);
    rp_pool_put(pool, held);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "the put connection went to a cancelled waiter");
    fx_close_and_free(loop, pool);
}

Test(pool, cancel_ready_result_returns_connection_to_pool)
{
    open_default_pool(2);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    fx_got got = {0};
    int64_t id = rp_pool_get(pool, fx_get_cb, &got);
    cr_assert_eq(rp_pool_cancel(pool, id), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 1000));
    cr_expect_eq(got.status, -ECANCELED);
    cr_expect_null(got.conn);
    cr_expect_eq(rp_pool_idle_len(pool), 1);
    fx_close_and_free(loop, pool);
}

Test(pool, cancel_completed_or_unknown_request_is_enoent)
{
    open_default_pool(2);
    fx_got got = {0};
    int64_t id = rp_pool_get(pool, fx_get_cb, &got);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 3000));
    cr_expect_eq(rp_pool_cancel(pool, id), -ENOENT);
    cr_expect_eq(rp_pool_cancel(pool, 12345678), -ENOENT);
    cr_expect_eq(rp_pool_cancel(pool, -1), -ENOENT);
    rp_pool_put(pool, got.conn);
    fx_close_and_free(loop, pool);
}

typedef struct close_ctx {
    bool closed;
    int close_calls;
} close_ctx;

static void count_close(rp_pool *p, void *data)
{
    (void)p;
    close_ctx *ctx = data;
    ctx->closed = true;
    ctx->close_calls++;
}

Test(pool, close_fails_waiters_and_waits_for_connections_in_use)
{
    open_default_pool(1);
    rp_conn *held = fx_get_conn(loop, pool);
    fx_got waiter = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &waiter), 0);
    close_ctx ctx = {0};
    cr_assert_eq(rp_pool_close(pool, count_close, &ctx), 0);
    cr_expect_eq(waiter.calls, 0);
    cr_expect_eq(rp_pool_get(pool, fx_get_cb, &waiter), RP_ECLOSED);
    cr_expect_eq(rp_pool_close(pool, count_close, &ctx), RP_ECLOSED);
    cr_expect_eq(rp_loop_free(loop), -EBUSY);
    fx_run_for(loop, 50);
    cr_expect_eq(waiter.calls, 1);
    cr_expect_eq(waiter.status, RP_ECLOSED);
    cr_expect_not(ctx.closed, "closed while a connection was still in use");
    rp_pool_put(pool, held);
    cr_assert(fx_run_until(loop, &ctx.closed, 2000));
    cr_expect_eq(ctx.close_calls, 1);
    cr_expect_eq(rp_loop_free(loop), 0);
}

static void close_from_callback(rp_pool *p, rp_conn *conn, int status, void *data)
{
    close_ctx *ctx = data;
    cr_assert_eq(status, 0);
    rp_pool_put(p, conn);
    cr_assert_eq(rp_pool_close(p, count_close, ctx), 0);
}

Test(pool, close_from_inside_a_get_callback)
{
    open_default_pool(2);
    close_ctx ctx = {0};
    cr_assert_gt(rp_pool_get(pool, close_from_callback, &ctx), 0);
    cr_assert(fx_run_until(loop, &ctx.closed, 3000));
    cr_expect_eq(ctx.close_calls, 1);
    cr_expect_eq(rp_loop_free(loop), 0);
}

typedef struct chain_ctx {
    int remaining;
    int completed;
    rp_conn *first;
    bool same_conn;
} chain_ctx;

static void chain_cb(rp_pool *p, rp_conn *conn, int status, void *data)
{
    chain_ctx *ctx = data;
    cr_assert_eq(status, 0);
    if (!ctx->first)
        ctx->first = conn;
    ctx->same_conn = ctx->same_conn && conn == ctx->first;
    ctx->completed++;
    rp_pool_put(p, conn);
    if (--ctx->remaining > 0)
        cr_assert_gt(rp_pool_get(p, chain_cb, ctx), 0);
}

Test(pool, get_and_put_from_inside_callbacks)
{
    open_default_pool(1);
    chain_ctx ctx = {.remaining = 100, .same_conn = true};
    cr_assert_gt(rp_pool_get(pool, chain_cb, &ctx), 0);
    cr_assert(fx_run_until_count(loop, &ctx.completed, 100, 5000));
    cr_expect(ctx.same_conn);
    cr_expect_eq(stats().misses, 1);
    cr_expect_eq(stats().hits, 99);
    fx_close_and_free(loop, pool);
}

Test(pool, double_put_and_wrong_pool_are_detected)
{
    open_default_pool(2);
    rp_pool *other;
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    cr_assert_eq(rp_pool_new(&other, loop, &opts), 0);
    rp_conn *conn = fx_get_conn(loop, pool);
    rp_pool_put(other, conn);
    cr_expect_eq(rp_pool_misuse_count(other), 1);
    cr_expect_eq(rp_pool_idle_len(other), 0);
    rp_pool_put(pool, conn);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_misuse_count(pool), 1);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "a double put corrupted the idle list");
    rp_pool_put(pool, NULL);
    rp_pool_remove(pool, conn, 0);
    cr_expect_eq(rp_pool_misuse_count(pool), 3);
    rp_conn *again = fx_get_conn(loop, pool);
    cr_expect_eq(again, conn);
    rp_conn *second = fx_get_conn(loop, pool);
    cr_expect_neq(second, conn, "one connection handed out twice");
    rp_pool_put(pool, again);
    rp_pool_put(pool, second);
    cr_assert_eq(rp_pool_close(other, NULL, NULL), 0);
    fx_close_and_free(loop, pool);
}

Test(pool, null_callback_and_null_pool_are_einval)
{
    open_default_pool(2);
    cr_expect_eq(rp_pool_get(pool, NULL, NULL), -EINVAL);
    cr_expect_eq(rp_pool_get(NULL, fx_get_cb, NULL), -EINVAL);
    cr_expect_eq(rp_pool_new_conn(pool, NULL, NULL), -EINVAL);
    cr_expect_eq(rp_pool_close(NULL, NULL, NULL), -EINVAL);
    cr_expect_eq(rp_pool_len(NULL), -EINVAL);
    cr_expect_eq(rp_conn_send(NULL, "x", 1, NULL, NULL), -EINVAL);
    fx_close_and_free(loop, pool);
}

Test(pool, invalid_options_are_rejected)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_pool_options opts;
    fx_pool_options(&opts, -1);
    cr_expect_eq(rp_pool_new(&pool, loop, &opts), -EINVAL, "negative pool_size");
    fx_pool_options(&opts, 4);
    opts.min_idle_conns = 5;
    cr_expect_eq(rp_pool_new(&pool, loop, &opts), -EINVAL, "min idle > pool size");
    fx_pool_options(&opts, 4);
    opts.min_idle_conns = 3;
    opts.max_idle_conns = 2;
    cr_expect_eq(rp_pool_new(&pool, loop, &opts), -EINVAL, "max idle < min idle");
    fx_pool_options(&opts, 4);
    opts.max_active_conns = -1;
    cr_expect_eq(rp_pool_new(&pool, loop, &opts), -EINVAL, "negative max active");
    fx_pool_options(&opts, 4);
    opts.min_idle_conns = -1;
    cr_expect_eq(rp_pool_new(&pool, loop, &opts), -EINVAL, "negative min idle");
    cr_expect_eq(rp_pool_new(&pool, NULL, &opts), -EINVAL, "NULL loop");
    cr_expect_eq(rp_pool_new(&pool, loop, NULL), -EINVAL, "NULL options");
    cr_expect_eq(rp_loop_free(loop), 0, "a rejected pool stayed registered");
}

Test(pool, malformed_addresses_are_rejected)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    /* Names are checked as text only: none of these is looked up. */
    char long_host[300];
    memset(long_host, 'a', sizeof long_host);
    memcpy(long_host + sizeof long_host - 6, ":6379", 6);
    const char *bad[] = {NULL, "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                         "127.0.0.1:12x", ":6379", "::1:6379", "[::1]6379", "[::1", "unix:",
                         "localhost", "localhost:", "localhost:0", "localhost:+6379", "localhost: 6379",
                         "localhost:http", "[]:6379", long_host};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rp_pool_options opts;
        fx_pool_options(&opts, 2);
        opts.addr = bad[i];
        cr_expect_eq(rp_pool_new(&pool, loop, &opts), -EINVAL, "accepted \"%s\"", bad[i] ? bad[i] : "(null)");
    }
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(pool, addresses_with_spaces_around_them_are_einval)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    /* A name with a space would pass the text check and fail at the lookup. */
    const char *bad[] = {" 127.0.0.1:6379", "127.0.0.1:6379 ", " localhost:6379", "localhost:6379\n",
                         "\tlocalhost:6379", "localhost :6379", "local host:6379", "[ ::1]:6379",
                         "[::1 ]:6379", "unix: /tmp/redis.sock", "unix:/tmp/redis.sock ", " unix:/tmp/redis.sock"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rp_pool_options opts;
        fx_pool_options(&opts, 2);
        opts.addr = bad[i];
        cr_expect_eq(rp_pool_new(&pool, loop, &opts), -EINVAL, "accepted \"%s\"", bad[i]);
    }
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(pool, accepts_name_and_bracketed_v6_addresses)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    char addr[64];
    const char *hosts[] = {"localhost", "[::1]", "127.0.0.1"};
    for (size_t i = 0; i < 3; i++) {
        rp_pool_options opts;
        fx_pool_options(&opts, 2);
        snprintf(addr, sizeof addr, "%s:%d", hosts[i], fx_redis_port);
        opts.addr = addr;
        cr_expect_eq(rp_pool_new(&pool, loop, &opts), 0, "rejected %s", addr);
        rp_conn *conn = fx_get_conn(loop, pool);
        cr_expect(fx_ping(loop, conn), "no PONG through %s", addr);
        rp_pool_put(pool, conn);
        rp_pool_close(pool, NULL, NULL);
        fx_run_for(loop, 20);
    }
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(pool, max_idle_conns_trims_on_put)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.max_idle_conns = 1;
    open_pool(&opts);
    rp_conn *conns[3];
    get_three_then_put(conns);
    cr_expect_eq(rp_pool_idle_len(pool), 1);
    cr_expect_eq(rp_pool_len(pool), 1);
    fx_close_and_free(loop, pool);
}

Test(pool, min_idle_conns_are_filled_in_the_background)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.min_idle_conns = 3;
    open_pool(&opts);
    int idle = 0;
    uint64_t deadline = fx_now_ms() + 3000;
    while ((idle = rp_pool_idle_len(pool)) < 3 && fx_now_ms() < deadline)
        fx_run_for(loop, 5);
    cr_expect_eq(idle, 3);
    rp_conn *conn = fx_get_conn(loop, pool);
    fx_run_for(loop, 100);
    cr_expect_eq(rp_pool_idle_len(pool), 3, "the idle set was not refilled after a get");
    cr_expect_eq(rp_pool_len(pool), 4);
    rp_pool_remove(pool, conn, 0);
    fx_run_for(loop, 100);
    cr_expect_eq(rp_pool_len(pool), 3, "min idle grew beyond what was needed");
    fx_close_and_free(loop, pool);
}

Test(pool, max_active_conns_fails_with_exhausted)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.max_active_conns = 1;
    open_pool(&opts);
    rp_conn *held = fx_get_conn(loop, pool);
    fx_got got = fx_get_outcome(loop, pool, 2000);
    cr_expect_eq(got.status, RP_EPOOLEXHAUSTED);
    rp_pool_put(pool, held);
    rp_conn *again = fx_get_conn(loop, pool);
    cr_expect_eq(again, held, "a free turn after exhaustion must reuse the idle connection");
    rp_pool_put(pool, again);
    fx_close_and_free(loop, pool);
}

Test(pool, lifetime_expiry_closes_idle_connections_by_timer)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.conn_max_lifetime_ms = 150;
    open_pool(&opts);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    cr_expect_eq(rp_pool_len(pool), 1);
    fx_run_for(loop, 400);
    cr_expect_eq(rp_pool_len(pool), 0, "an expired connection stayed open without a get");
    cr_expect_eq(stats().stale_conns, 1);
    fx_close_and_free(loop, pool);
}

Test(pool, lifetime_jitter_spreads_expiry)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 8);
    opts.conn_max_lifetime_ms = 600;
    opts.conn_max_lifetime_jitter_ms = 500;
    open_pool(&opts);
    rp_conn *conns[8];
    for (int i = 0; i < 8; i++)
        conns[i] = fx_get_conn(loop, pool);
    for (int i = 0; i < 8; i++)
        rp_pool_put(pool, conns[i]);
    fx_run_for(loop, 350);
    int left = rp_pool_len(pool);
    cr_expect(left > 0 && left < 8, "jitter did not spread expiry: %d of 8 open at 350 ms", left);
    fx_run_for(loop, 400);
    cr_expect_eq(rp_pool_len(pool), 0);
    fx_close_and_free(loop, pool);
}

Test(pool, idle_time_expiry_is_stale_and_closed_by_timer)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.conn_max_idle_time_ms = 150;
    open_pool(&opts);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    fx_run_for(loop, 100);
    cr_expect_eq(rp_pool_len(pool), 1, "closed before its idle time");
    fx_run_for(loop, 250);
    cr_expect_eq(rp_pool_len(pool), 0);
    cr_expect_eq(stats().stale_conns, 1);
    fx_close_and_free(loop, pool);
}

Test(pool, new_conn_is_outside_the_idle_set)
{
    open_default_pool(2);
    fx_got got = {0};
    cr_assert_eq(rp_pool_new_conn(pool, fx_get_cb, &got), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 3000));
    cr_assert_eq(got.status, 0);
    cr_expect(fx_ping(loop, got.conn));
    cr_expect_eq(rp_pool_len(pool), 1);
    rp_pool_close_conn(pool, got.conn);
    cr_expect_eq(rp_pool_len(pool), 0);
    cr_expect_eq(rp_pool_idle_len(pool), 0);
    fx_close_and_free(loop, pool);
}

typedef struct io_seen {
    int calls;
    ssize_t result;
} io_seen;

static void count_io(rp_conn *conn, ssize_t result, void *data)
{
    (void)conn;
    io_seen *seen = data;
    seen->calls++;
    seen->result = result;
}

Test(pool, put_of_connection_that_saw_eof_removes_it)
{
    open_default_pool(2);
    rp_conn *conn = fx_get_conn(loop, pool);
    fx_redis_command("CLIENT KILL TYPE normal\r\n");
    char buf[16];
    io_seen seen = {0};
    cr_assert_eq(rp_conn_recv(conn, buf, sizeof buf, count_io, &seen), 0);
    cr_assert(fx_run_until_count(loop, &seen.calls, 1, 3000));
    cr_expect_eq(seen.result, 0, "expected end of stream, got %zd", seen.result);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0);
    cr_expect_eq(rp_pool_idle_len(pool), 0);
    fx_close_and_free(loop, pool);
}

Test(pool, put_with_recv_in_flight_removes_it)
{
    open_default_pool(2);
    rp_conn *conn = fx_get_conn(loop, pool);
    char buf[16];
    io_seen seen = {0};
    cr_assert_eq(rp_conn_recv(conn, buf, sizeof buf, count_io, &seen), 0);
    cr_expect_eq(rp_conn_recv(conn, buf, sizeof buf, count_io, &seen), -EBUSY);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0);
    cr_assert(fx_run_until_count(loop, &seen.calls, 1, 3000));
    cr_expect_eq(seen.result, -ECANCELED, "recv ended with %zd", seen.result);
    fx_close_and_free(loop, pool);
}

Test(pool, read_timeout_bounds_recv)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.read_timeout_ms = 150;
    open_pool(&opts);
    rp_conn *conn = fx_get_conn(loop, pool);
    char buf[16];
    io_seen seen = {0};
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_conn_recv(conn, buf, sizeof buf, count_io, &seen), 0);
    cr_assert(fx_run_until_count(loop, &seen.calls, 1, 3000));
    uint64_t waited = fx_now_ms() - start;
    cr_expect_eq(seen.result, -ETIMEDOUT);
    cr_expect(waited >= 150 && waited <= 250, "read timeout after %lu ms", (unsigned long)waited);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0, "a timed-out connection went back to the pool");
    fx_close_and_free(loop, pool);
}

Test(pool, send_and_recv_reject_bad_arguments)
{
    open_default_pool(2);
    rp_conn *conn = fx_get_conn(loop, pool);
    io_seen seen = {0};
    char buf[4];
    cr_expect_eq(rp_conn_send(conn, NULL, 4, count_io, &seen), -EINVAL);
    cr_expect_eq(rp_conn_send(conn, buf, 0, count_io, &seen), -EINVAL);
    cr_expect_eq(rp_conn_recv(conn, buf, sizeof buf, NULL, &seen), -EINVAL);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_conn_send(conn, "x", 1, count_io, &seen), RP_ECLOSED, "I/O on a connection not in use");
    fx_run_for(loop, 20);
    cr_expect_eq(seen.calls, 0);
    fx_close_and_free(loop, pool);
}

typedef struct remove_in_cb {
    rp_pool *pool;
    int calls;
    ssize_t result;
} remove_in_cb;

static void remove_from_io_callback(rp_conn *conn, ssize_t result, void *data)
{
    remove_in_cb *ctx = data;
    ctx->calls++;
    ctx->result = result;
    rp_pool_remove(ctx->pool, conn, (int)result);
}

Test(pool, remove_from_inside_an_io_callback)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.read_timeout_ms = 50;
    open_pool(&opts);
    rp_conn *conn = fx_get_conn(loop, pool);
    char buf[8];
    remove_in_cb ctx = {.pool = pool};
    cr_assert_eq(rp_conn_recv(conn, buf, sizeof buf, remove_from_io_callback, &ctx), 0);
    cr_assert(fx_run_until_count(loop, &ctx.calls, 1, 2000));
    cr_expect_eq(ctx.result, -ETIMEDOUT);
    cr_expect_eq(rp_pool_len(pool), 0);
    fx_close_and_free(loop, pool);
}

static void put_from_io_callback(rp_conn *conn, ssize_t result, void *data)
{
    remove_in_cb *ctx = data;
    ctx->calls++;
    ctx->result = result;
    rp_pool_put(ctx->pool, conn);
}

Test(pool, put_from_inside_an_io_callback_keeps_the_connection)
{
    open_default_pool(2);
    rp_conn *conn = fx_get_conn(loop, pool);
    io_seen sent = {0};
    remove_in_cb ctx = {.pool = pool};
    char reply[7];
    cr_assert_eq(rp_conn_send(conn, "PING\r\n", 6, count_io, &sent), 0);
    cr_assert_eq(rp_conn_recv(conn, reply, sizeof reply, put_from_io_callback, &ctx), 0);
    cr_assert(fx_run_until_count(loop, &ctx.calls, 1, 2000));
    cr_expect_eq(ctx.result, 7); /* the whole reply read: nothing left for the next holder */
    cr_expect_eq(rp_pool_idle_len(pool), 1);
    fx_close_and_free(loop, pool);
}

typedef struct setup_seen {
    int calls;
    int status;
} setup_seen;

static void refuse_setup(rp_conn *conn, void *data)
{
    setup_seen *seen = data;
    seen->calls++;
    cr_expect_geq(rp_conn_fd(conn), 0);
    rp_conn_setup_done(conn, seen->status);
}

Test(pool, on_connect_sets_up_each_new_connection_and_can_fail_the_dial)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    setup_seen seen = {.status = -EACCES};
    opts.on_connect = refuse_setup;
    opts.on_connect_data = &seen;
    open_pool(&opts);
    fx_got got = fx_get_outcome(loop, pool, 3000);
    cr_expect_eq(seen.calls, 1);
    cr_expect_eq(got.status, -EACCES, "the set-up's status did not reach the get");
    cr_expect_eq(rp_pool_len(pool), 0);
    cr_expect_eq(stats().dial_errors, 0, "a refused set-up counted as a dial error");
    cr_expect_eq(stats().stale_conns, 1);
    seen.status = 0;
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_expect_eq(seen.calls, 2);
    cr_expect_eq(rp_conn_setup_done(conn, 0), -EINVAL, "a second setup_done was accepted");
    cr_expect_eq(rp_conn_setup_done(NULL, 0), -EINVAL);
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

/* ------------------------------------------------ regressions (review) */

static void expect_cycles_succeed(int n)
{
    for (int i = 0; i < n; i++) {
        fx_got got = {0};
        cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
        cr_assert(fx_run_until_count(loop, &got.calls, 1, 2000), "get %d never completed", i);
        cr_assert_eq(got.status, 0, "get/put cycle %d failed: %s (idle %d, total %d)", i, rp_strerror(got.status),
                     rp_pool_idle_len(pool), rp_pool_len(pool));
        rp_pool_put(pool, got.conn);
        fx_run_for(loop, 2);
        cr_assert_eq(got.calls, 1);
    }
}

Test(pool, cancel_during_health_check_leaks_no_turn)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.health_check_idle_ms = 1;
    opts.pool_timeout_ms = 300;
    opts.pool_fifo = true; /* the cycles take any spare connection first */
    open_pool(&opts);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    usleep(5000); /* idle past the window: the next get checks it */
    fx_got cancelled = {0}, next = {0};
    int64_t id = rp_pool_get(pool, fx_get_cb, &cancelled);
    cr_assert_gt(id, 0);
    cr_assert_eq(rp_pool_cancel(pool, id), 0);
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &next), 0);
    cr_assert(fx_run_until_count(loop, &next.calls, 1, 2000));
    cr_expect_eq(cancelled.calls, 1);
    cr_expect_eq(cancelled.status, -ECANCELED);
    cr_assert_eq(next.status, 0, "%s", rp_strerror(next.status));
    rp_pool_put(pool, next.conn);
    fx_run_for(loop, 50); /* let every check and dial settle */
    cr_expect_eq(next.calls, 1);
    expect_cycles_succeed(5);
    cr_expect_leq(stats().total_conns, 1, "pool_size 1 but %u connections open", stats().total_conns);
    fx_close_and_free(loop, pool);
}

static void expect_same_stats(rp_stats a, rp_stats b, const char *what)
{
    cr_expect(a.hits == b.hits && a.misses == b.misses && a.timeouts == b.timeouts &&
                  a.total_conns == b.total_conns && a.idle_conns == b.idle_conns &&
                  a.stale_conns == b.stale_conns && a.wait_count == b.wait_count &&
                  a.dial_errors == b.dial_errors && a.dials_in_flight == b.dials_in_flight,
              "%s changed the stats", what);
}

Test(pool, double_put_after_the_first_put_closed_it_is_misuse)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.max_idle_conns = 1;
    open_pool(&opts);
    rp_conn *kept = fx_get_conn(loop, pool), *trimmed = fx_get_conn(loop, pool);
    rp_pool_put(pool, kept);
    rp_pool_put(pool, trimmed); /* over max_idle_conns: closed */
    cr_assert_eq(rp_pool_len(pool), 1);
    rp_stats before = stats();
    rp_pool_put(pool, trimmed);
    cr_expect_eq(rp_pool_misuse_count(pool), 1);
    expect_same_stats(before, stats(), "a put of a trimmed connection");
    rp_conn *removed = fx_get_conn(loop, pool);
    rp_pool_remove(pool, removed, 0);
    before = stats();
    rp_pool_put(pool, removed);
    cr_expect_eq(rp_pool_misuse_count(pool), 2);
    expect_same_stats(before, stats(), "a put of a removed connection");
    expect_cycles_succeed(2);
    fx_close_and_free(loop, pool);
}

Test(pool, double_put_after_a_handoff_is_misuse_and_never_hands_out_twice)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.pool_timeout_ms = 200;
    open_pool(&opts);
    rp_conn *held = fx_get_conn(loop, pool);
    fx_got waiter = {0}, third = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &waiter), 0);
    rp_pool_put(pool, held); /* straight to the waiter */
    rp_pool_put(pool, held); /* the caller no longer holds it */
    cr_expect_eq(rp_pool_misuse_count(pool), 1, "the second put was accepted");
    cr_assert(fx_run_until_count(loop, &waiter.calls, 1, 1000));
    cr_assert_eq(waiter.status, 0);
    cr_expect_eq(waiter.conn, held);
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &third), 0);
    cr_assert(fx_run_until_count(loop, &third.calls, 1, 1000));
    cr_expect_neq(third.conn, waiter.conn, "one connection handed out to two holders");
    cr_expect_eq(third.status, RP_EPOOLTIMEOUT, "%s", rp_strerror(third.status));
    fx_run_for(loop, 10);
    cr_expect_eq(waiter.calls, 1);
    cr_expect_eq(third.calls, 1);
    if (third.conn && third.conn != waiter.conn)
        rp_pool_put(pool, third.conn);
    rp_pool_put(pool, waiter.conn);
    fx_close_and_free(loop, pool);
}

typedef struct outcomes {
    int calls, ok, exhausted, other;
    rp_conn *conns[16];
} outcomes;

static void count_outcome(rp_pool *p, rp_conn *conn, int status, void *data)
{
    (void)p;
    outcomes *out = data;
    out->calls++;
    if (status == 0)
        out->conns[out->ok++] = conn;
    else if (status == RP_EPOOLEXHAUSTED)
        out->exhausted++;
    else
        out->other++;
}

#define MAX_OF(a, b) ((a) > (b) ? (a) : (b))

static unsigned active_conns(void)
{
    rp_stats st = stats();
    return st.total_conns + st.dials_in_flight;
}

Test(pool, max_active_conns_holds_with_dials_queued)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 10);
    opts.max_active_conns = 2;
    opts.max_concurrent_dials = 1;
    open_pool(&opts);
    outcomes out = {0};
    for (int i = 0; i < 6; i++)
        cr_assert_gt(rp_pool_get(pool, count_outcome, &out), 0);
    unsigned peak = active_conns();
    uint64_t deadline = fx_now_ms() + 3000;
    while (out.calls < 6 && fx_now_ms() < deadline) {
        rp_loop_run(loop, RP_RUN_NOWAIT);
        peak = MAX_OF(peak, active_conns());
        usleep(100);
    }
    fx_run_for(loop, 50);
    peak = MAX_OF(peak, active_conns());
    cr_expect_eq(out.calls, 6, "%d of 6 callbacks ran", out.calls);
    cr_expect_leq(peak, 2, "%u connections open or dialling with max_active_conns 2", peak);
    cr_expect_eq(out.ok, 2);
    cr_expect_eq(out.exhausted, 4);
    cr_expect_eq(out.other, 0);
    for (int i = 0; i < out.ok; i++)
        rp_pool_put(pool, out.conns[i]);
    fx_close_and_free(loop, pool);
}

Test(pool, new_conn_respects_max_active_conns)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.max_active_conns = 1;
    open_pool(&opts);
    rp_conn *held = fx_get_conn(loop, pool);
    fx_got got = {0};
    int rc = rp_pool_new_conn(pool, fx_get_cb, &got);
    fx_run_for(loop, 100);
    if (rc == 0) {
        cr_expect_eq(got.calls, 1);
        cr_expect_eq(got.status, RP_EPOOLEXHAUSTED, "got %s", rp_strerror(got.status));
    } else {
        cr_expect_eq(rc, RP_EPOOLEXHAUSTED, "returned %s", rp_strerror(rc));
        cr_expect_eq(got.calls, 0);
    }
    cr_expect_eq(rp_pool_len(pool), 1, "a connection past max_active_conns was dialled");
    cr_expect_eq(stats().dials_in_flight, 0);
    if (got.conn)
        rp_pool_close_conn(pool, got.conn);
    rp_pool_put(pool, held);
    fx_close_and_free(loop, pool);
}

static void wait_for_idle(int want, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    while (rp_pool_idle_len(pool) < want && fx_now_ms() < deadline)
        fx_run_for(loop, 5);
    cr_assert_eq(rp_pool_idle_len(pool), want, "the idle set never reached %d", want);
}

static void open_min_idle_pool(void)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 3);
    opts.min_idle_conns = 1;
    opts.health_check_idle_ms = 1;
    open_pool(&opts);
    wait_for_idle(1, 3000);
    fx_run_for(loop, 20); /* idle past the health window */
}

Test(pool, min_idle_conns_refilled_after_a_checked_get)
{
    open_min_idle_pool();
    rp_conn *conn = fx_get_conn(loop, pool); /* the idle one, checked first */
    fx_run_for(loop, 100);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "no replacement was dialled while the checked one is out");
    cr_expect_eq(rp_pool_len(pool), 2);
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

Test(pool, min_idle_conns_refilled_after_a_remove)
{
    open_min_idle_pool();
    rp_conn *conn = fx_get_conn(loop, pool);
    rp_pool_remove(pool, conn, 0);
    fx_run_for(loop, 100);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "the idle set was not refilled after a remove");
    cr_expect_eq(rp_pool_len(pool), 1);
    fx_close_and_free(loop, pool);
}

Test(pool, lifetime_jitter_at_uint32_max_is_not_a_division_by_zero)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.conn_max_lifetime_ms = 60000;
    opts.conn_max_lifetime_jitter_ms = UINT32_MAX;
    open_pool(&opts);
    fx_got got = fx_get_outcome(loop, pool, 3000);
    cr_expect_eq(got.status, 0, "%s", rp_strerror(got.status));
    if (got.conn)
        rp_pool_put(pool, got.conn);
    fx_run_for(loop, 10);
    cr_expect_eq(got.calls, 1);
    fx_close_and_free(loop, pool);
}

static bool closed_flag;
static void closed_cb_for_options(rp_pool *p, void *data)
{
    (void)p;
    *(bool *)data = true;
}

typedef enum { OPT_INT, OPT_U32 } opt_kind;
typedef struct opt_field {
    const char *name;
    size_t offset;
    opt_kind kind;
} opt_field;

#define INT_OPT(f) {#f, offsetof(rp_pool_options, f), OPT_INT}
#define U32_OPT(f) {#f, offsetof(rp_pool_options, f), OPT_U32}

Test(pool, every_option_at_zero_one_and_max_gets_and_puts)
{
    static const opt_field fields[] = {
        INT_OPT(pool_size), INT_OPT(min_idle_conns), INT_OPT(max_idle_conns), INT_OPT(max_active_conns),
        INT_OPT(max_concurrent_dials), U32_OPT(dial_timeout_ms), U32_OPT(pool_timeout_ms),
        U32_OPT(read_timeout_ms), U32_OPT(write_timeout_ms), U32_OPT(conn_max_idle_time_ms),
        U32_OPT(conn_max_lifetime_ms), U32_OPT(conn_max_lifetime_jitter_ms), U32_OPT(health_check_idle_ms),
        U32_OPT(probe_interval_ms), U32_OPT(probe_interval_max_ms),
    };
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        for (int v = 0; v < 3; v++) {
            rp_pool_options opts;
            fx_pool_options(&opts, 4);
            char *field = (char *)&opts + fields[f].offset;
            if (fields[f].kind == OPT_INT)
                *(int *)field = v == 2 ? INT_MAX : v;
            else
                *(uint32_t *)field = v == 2 ? UINT32_MAX : (uint32_t)v;
            const char *value = v == 2 ? "max" : v ? "1" : "0";
            int rc = rp_pool_new(&pool, loop, &opts);
            if (rc < 0) {
                cr_expect_eq(rc, -EINVAL, "%s = %s: %s", fields[f].name, value, rp_strerror(rc));
                continue;
            }
            fx_got got = {0};
            int64_t id = rp_pool_get(pool, fx_get_cb, &got);
            cr_expect_gt(id, 0, "%s = %s: get returned %s", fields[f].name, value, rp_strerror((int)id));
            if (id > 0)
                cr_expect(fx_run_until_count(loop, &got.calls, 1, 3000), "%s = %s: get never completed",
                          fields[f].name, value);
            if (got.status == 0 && got.conn) {
                fx_ping(loop, got.conn);
                rp_pool_put(pool, got.conn);
            } else {
                cr_expect_lt(got.status, 0, "%s = %s: no connection and no error", fields[f].name, value);
            }
            fx_run_for(loop, 5);
            cr_expect_leq(got.calls, 1, "%s = %s: callback ran %d times", fields[f].name, value, got.calls);
            closed_flag = false;
            cr_assert_eq(rp_pool_close(pool, closed_cb_for_options, &closed_flag), 0);
            cr_assert(fx_run_until(loop, &closed_flag, 3000), "%s = %s: close never finished", fields[f].name,
                      value);
        }
    }
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(pool, idle_time_counts_from_last_use_not_checkout)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.conn_max_idle_time_ms = 300;
    open_pool(&opts);
    rp_conn *conn = fx_get_conn(loop, pool);
    for (int i = 0; i < 12; i++) {
        cr_assert(fx_ping(loop, conn), "ping %d failed", i);
        fx_run_for(loop, 50);
    }
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "a connection in use for 600 ms was closed as idle");
    cr_expect_eq(stats().stale_conns, 0);
    fx_close_and_free(loop, pool);
}

Test(pool, refused_setup_is_not_a_dial_error)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    setup_seen seen = {.status = -EACCES};
    opts.on_connect = refuse_setup;
    opts.on_connect_data = &seen;
    open_pool(&opts);
    for (int i = 0; i < 5; i++) {
        fx_got got = fx_get_outcome(loop, pool, 3000);
        cr_expect_eq(got.status, -EACCES, "get %d: %s", i, rp_strerror(got.status));
        fx_run_for(loop, 2);
        cr_expect_eq(got.calls, 1);
    }
    cr_expect_eq(seen.calls, 5, "on_connect ran %d times for 5 gets: the pool failed fast", seen.calls);
    cr_expect_eq(stats().dial_errors, 0, "a refused set-up counted as a dial error");
    cr_expect_eq(rp_pool_len(pool), 0);
    fx_close_and_free(loop, pool);
}

typedef struct stale_at_close {
    uint32_t before;
    bool closed;
} stale_at_close;

static void expect_stale_unchanged_by_close(rp_pool *p, void *data)
{
    stale_at_close *ctx = data;
    rp_stats st;
    rp_pool_stats(p, &st);
    cr_expect_eq(st.stale_conns, ctx->before, "rp_pool_close counted its closes as stale");
    ctx->closed = true;
}

Test(pool, stale_conns_counts_removes_and_max_idle_trims)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.max_idle_conns = 1;
    open_pool(&opts);
    rp_conn *conns[3];
    for (int i = 0; i < 3; i++)
        conns[i] = fx_get_conn(loop, pool);
    rp_pool_remove(pool, conns[0], 0);
    cr_expect_eq(stats().stale_conns, 1, "rp_pool_remove was not counted");
    rp_pool_put(pool, conns[1]);
    rp_pool_put(pool, conns[2]); /* over max_idle_conns */
    cr_expect_eq(stats().total_conns, 1);
    cr_expect_eq(stats().stale_conns, 2, "the max_idle_conns trim was not counted");
    stale_at_close ctx = {.before = stats().stale_conns};
    cr_assert_eq(rp_pool_close(pool, expect_stale_unchanged_by_close, &ctx), 0);
    cr_assert(fx_run_until(loop, &ctx.closed, 3000));
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(pool, wait_count_ignores_waits_that_got_no_connection)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.pool_timeout_ms = 200;
    open_pool(&opts);
    rp_conn *held = fx_get_conn(loop, pool);
    fx_got timed_out = {0}, cancelled = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &timed_out), 0);
    cr_assert(fx_run_until_count(loop, &timed_out.calls, 1, 2000));
    cr_expect_eq(timed_out.status, RP_EPOOLTIMEOUT);
    int64_t id = rp_pool_get(pool, fx_get_cb, &cancelled);
    cr_assert_gt(id, 0);
    fx_run_for(loop, 10);
    cr_assert_eq(rp_pool_cancel(pool, id), 0);
    cr_assert(fx_run_until_count(loop, &cancelled.calls, 1, 1000));
    cr_expect_eq(cancelled.status, -ECANCELED);
    rp_stats st = stats();
    cr_expect_eq(st.timeouts, 1);
    cr_expect_eq(st.wait_count, 0, "wait_count counted %u waits that got no connection", st.wait_count);
    cr_expect_eq(st.wait_duration_ns, 0);
    fx_run_for(loop, 5);
    cr_expect_eq(timed_out.calls, 1);
    cr_expect_eq(cancelled.calls, 1);
    rp_pool_put(pool, held);
    fx_close_and_free(loop, pool);
}

static rp_conn *first_conn;
static fx_got second_get;

static void get_again_from_callback(rp_pool *p, rp_conn *conn, int status, void *data)
{
    (void)status;
    (void)data;
    first_conn = conn;
    cr_assert_gt(rp_pool_get(p, fx_get_cb, &second_get), 0);
}

/* The second get finds a watched idle connection and cancels its watch:
 * the run must wait for that cancel, and so for the get's callback. */
Test(pool, a_default_run_waits_for_a_get_served_by_cancelling_a_watch)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.health_check_idle_ms = 20;
    open_pool(&opts);
    rp_conn *a = fx_get_conn(loop, pool), *b = fx_get_conn(loop, pool);
    rp_pool_put(pool, b);
    usleep(60000);
    rp_loop_run(loop, RP_RUN_NOWAIT); /* the maintenance timer arms b's idle watch */
    rp_pool_put(pool, a);
    cr_assert_gt(rp_pool_get(pool, get_again_from_callback, NULL), 0);
    cr_assert_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(second_get.calls, 1, "RP_RUN_DEFAULT returned before the second get's callback");
    cr_expect_eq(second_get.status, 0);
    rp_pool_put(pool, first_conn);
    if (second_get.conn)
        rp_pool_put(pool, second_get.conn);
    fx_close_and_free(loop, pool);
}

Test(pool, user_data_stays_with_the_connection_across_put_and_get)
{
    open_default_pool(1);
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_expect_null(rp_conn_data(conn));
    int mine;
    rp_conn_set_data(conn, &mine);
    rp_pool_put(pool, conn);
    rp_conn *again = fx_get_conn(loop, pool);
    cr_assert_eq(again, conn);
    cr_expect_eq(rp_conn_data(again), &mine, "the slot was not kept across put and get");
    rp_pool_remove(pool, again, 0);
    rp_conn *fresh = fx_get_conn(loop, pool);
    cr_expect_null(rp_conn_data(fresh), "a new connection carried an old slot");
    rp_pool_put(pool, fresh);
    fx_close_and_free(loop, pool);
}

/* ------------------------------------------------------------------ hooks */

typedef struct hook_log {
    int dial_starts, dial_ends, gets, closes, logs;
    int last_dial_status, last_get_status;
    rp_close_reason last_close;
    uint64_t last_dial_ns, last_get_ns;
    char addr[64], message[160];
} hook_log;

static void on_dial_start(void *data, const char *addr)
{
    hook_log *log = data;
    log->dial_starts++;
    snprintf(log->addr, sizeof log->addr, "%s", addr);
}

static void on_dial_end(void *data, const char *addr, uint64_t duration_ns, int status)
{
    (void)addr;
    hook_log *log = data;
    log->dial_ends++;
    log->last_dial_status = status;
    log->last_dial_ns = duration_ns;
}

static void on_get_end(void *data, uint64_t duration_ns, int status)
{
    hook_log *log = data;
    log->gets++;
    log->last_get_status = status;
    log->last_get_ns = duration_ns;
}

static void on_conn_close(void *data, rp_conn *conn, rp_close_reason reason)
{
    (void)conn;
    hook_log *log = data;
    log->closes++;
    log->last_close = reason;
}

static void on_log(void *data, const char *message)
{
    hook_log *log = data;
    log->logs++;
    snprintf(log->message, sizeof log->message, "%s", message);
}

static void set_hooks(hook_log *log)
{
    rp_hooks hooks = {.data = log, .dial_start = on_dial_start, .dial_end = on_dial_end, .get_end = on_get_end,
                      .conn_close = on_conn_close, .log = on_log};
    cr_assert_eq(rp_pool_set_hooks(pool, &hooks), 0);
}

Test(pool, hooks_see_dials_gets_closes_and_misuse)
{
    open_default_pool(2);
    hook_log log = {0};
    set_hooks(&log);
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_expect_eq(log.dial_starts, 1);
    cr_expect_eq(log.dial_ends, 1);
    cr_expect_eq(log.last_dial_status, 0);
    cr_expect_gt(log.last_dial_ns, 0);
    cr_expect_str_eq(log.addr, fx_redis_addr);
    cr_expect_eq(log.gets, 1);
    cr_expect_eq(log.last_get_status, 0);
    cr_expect_geq(log.last_get_ns, log.last_dial_ns, "the get took less than its dial");
    rp_pool_remove(pool, conn, 0);
    cr_expect_eq(log.closes, 1);
    cr_expect_eq(log.last_close, RP_CLOSE_REMOVED);
    rp_pool_put(pool, conn); /* a double put: logged through the hook */
    cr_expect_eq(log.logs, 1);
    cr_expect(strstr(log.message, "rp_pool_put") != NULL, "%s", log.message);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    fx_close_and_free(loop, pool);
    cr_expect_eq(log.closes, 2);
    cr_expect_eq(log.last_close, RP_CLOSE_POOL);
}

Test(pool, hooks_see_a_refused_dial_and_an_expired_connection)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.conn_max_lifetime_ms = 50;
    open_pool(&opts);
    hook_log log = {0};
    set_hooks(&log);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    fx_run_for(loop, 150);
    cr_expect_eq(log.closes, 1);
    cr_expect_eq(log.last_close, RP_CLOSE_EXPIRED);
    cr_expect_eq(rp_pool_set_hooks(pool, NULL), 0);
    fx_close_and_free(loop, pool);
    cr_expect_eq(log.closes, 1, "a cleared hook still ran");

    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fx_closed_port());
    fx_pool_options(&opts, 2);
    opts.addr = addr;
    open_pool(&opts);
    set_hooks(&log);
    fx_get_outcome(loop, pool, 3000);
    cr_expect_eq(log.last_dial_status, -ECONNREFUSED);
    cr_expect_eq(log.last_get_status, -ECONNREFUSED);
    fx_close_and_free(loop, pool);
}

/* ------------------------------------------------------ socket options */

static int sockopt_int(int fd, int level, int name)
{
    int value = -1;
    socklen_t len = sizeof value;
    cr_assert_eq(getsockopt(fd, level, name, &value, &len), 0, "getsockopt: %s", strerror(errno));
    return value;
}

/* A pooled connection's socket options: nodelay and keep-alive as set. */
static void expect_tcp_options(rp_pool_options *opts, bool nodelay, bool keepalive)
{
    open_pool(opts);
    rp_conn *conn = fx_get_conn(loop, pool);
    int fd = rp_conn_fd(conn);
    cr_assert_geq(fd, 0);
    cr_expect_eq(sockopt_int(fd, IPPROTO_TCP, TCP_NODELAY) != 0, nodelay);
    cr_expect_eq(sockopt_int(fd, SOL_SOCKET, SO_KEEPALIVE) != 0, keepalive);
    if (keepalive) { /* go-redis's dialer: probes after 30 s idle, every 5 s, 3 of them */
        cr_expect_eq(sockopt_int(fd, IPPROTO_TCP, TCP_KEEPIDLE), 30);
        cr_expect_eq(sockopt_int(fd, IPPROTO_TCP, TCP_KEEPINTVL), 5);
        cr_expect_eq(sockopt_int(fd, IPPROTO_TCP, TCP_KEEPCNT), 3);
    }
    cr_expect(fx_ping(loop, conn));
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

Test(pool, tcp_connections_get_nodelay_and_keepalive_by_default)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    expect_tcp_options(&opts, true, true);
}

Test(pool, tcp_options_default_on_when_the_options_are_zeroed)
{
    rp_pool_options opts = {.addr = fx_redis_addr};
    expect_tcp_options(&opts, true, true);
}

Test(pool, tcp_nodelay_can_be_turned_off)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.disable_tcp_nodelay = true;
    expect_tcp_options(&opts, false, true);
}

Test(pool, tcp_keepalive_can_be_turned_off)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.disable_tcp_keepalive = true;
    expect_tcp_options(&opts, true, false);
}

Test(pool, unix_socket_connections_are_unaffected_by_tcp_options)
{
    char path[108], addr[120];
    snprintf(path, sizeof path, "/tmp/ringpool-test-%d.sock", (int)getpid());
    unlink(path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sun, sizeof sun), 0);
    cr_assert_eq(listen(lfd, 8), 0);
    snprintf(addr, sizeof addr, "unix:%s", path);
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.addr = addr;
    open_pool(&opts);
    rp_conn *conn = fx_get_conn(loop, pool);
    int fd = rp_conn_fd(conn);
    cr_expect_eq(sockopt_int(fd, SOL_SOCKET, SO_DOMAIN), AF_UNIX);
    cr_expect_eq(sockopt_int(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    int value;
    socklen_t len = sizeof value;
    cr_expect_neq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &len), 0, "a unix socket has no TCP_NODELAY");
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
    close(lfd);
    unlink(path);
}

/* ------------------------------------------------------- an honest put */

/* Reads until want bytes came (or an error). */
static ssize_t recv_exactly(rp_conn *conn, char *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        io_seen d = {0};
        cr_assert_eq(rp_conn_recv(conn, buf + got, want - got, count_io, &d), 0);
        cr_assert(fx_run_until_count(loop, &d.calls, 1, 3000), "recv never completed");
        if (d.result <= 0)
            return d.result;
        got += (size_t)d.result;
    }
    return (ssize_t)got;
}

static void send_text(rp_conn *conn, const char *text)
{
    io_seen d = {0};
    cr_assert_eq(rp_conn_send(conn, text, strlen(text), count_io, &d), 0);
    cr_assert(fx_run_until_count(loop, &d.calls, 1, 3000));
    cr_assert_eq(d.result, (ssize_t)strlen(text));
}

Test(pool, a_reply_left_unread_never_reaches_the_next_holder)
{
    open_default_pool(1);
    rp_conn *conn = fx_get_conn(loop, pool);
    char buf[32] = {0};
    send_text(conn, "PING\r\nPING\r\n");
    fx_run_for(loop, 20); /* both replies are in */
    cr_assert_eq(recv_exactly(conn, buf, 7), 7);
    rp_pool_put(pool, conn);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0); /* again, at once */
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 3000));
    cr_assert_eq(got.status, 0);
    send_text(got.conn, "ECHO fresh\r\n");
    memset(buf, 0, sizeof buf);
    cr_expect_eq(recv_exactly(got.conn, buf, 11), 11);
    cr_expect_str_eq(buf, "$5\r\nfresh\r\n", "the next holder read the old reply");
    cr_expect_eq(stats().stale_conns, 1);
    cr_expect_eq(stats().total_conns, 1);
    rp_pool_put(pool, got.conn);
    fx_close_and_free(loop, pool);
}

/* The common path costs nothing: a holder that read its reply to the end
 * puts the connection back with no check (it is idle at once, where a
 * checked one waits for its answer), and the next get takes it in the
 * same iteration with no SQE. */
Test(pool, raw_request_reply_cycles_need_no_check_at_put)
{
    open_default_pool(1);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    rp_loop_run(loop, RP_RUN_NOWAIT); /* the kernel timeout follows the timers the put armed */
    for (int i = 0; i < 200; i++) {
        fx_got got = {0};
        cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
        rp_loop_stats before, after;
        rp_loop_stats_get(loop, &before);
        rp_loop_run(loop, RP_RUN_NOWAIT);
        rp_loop_stats_get(loop, &after);
        cr_assert_eq(got.calls, 1, "cycle %d: the get waited", i);
        cr_assert_eq(after.sqes, before.sqes, "cycle %d: the get cost an SQE", i);
        char buf[8];
        send_text(got.conn, "PING\r\n");
        cr_assert_eq(recv_exactly(got.conn, buf, 7), 7);
        rp_pool_put(pool, got.conn);
        cr_assert_eq(rp_pool_idle_len(pool), 1, "cycle %d: the connection was checked", i);
    }
    cr_expect_eq(stats().stale_conns, 0);
    cr_expect_eq(stats().hits, 200);
    fx_close_and_free(loop, pool);
}

/* on_connect that sends two PINGs and reads only the first reply. */
typedef struct sloppy_setup {
    char reply[7];
    int calls;
} sloppy_setup;

static void sloppy_read(rp_conn *conn, ssize_t result, void *data)
{
    (void)result;
    (void)data;
    rp_conn_setup_done(conn, 0);
}

static void sloppy_sent(rp_conn *conn, ssize_t result, void *data)
{
    sloppy_setup *s = data;
    (void)result;
    usleep(20000); /* both replies are in before the read */
    cr_assert_eq(rp_conn_recv(conn, s->reply, sizeof s->reply, sloppy_read, s), 0);
}

static void sloppy_connect(rp_conn *conn, void *data)
{
    sloppy_setup *s = data;
    s->calls++;
    cr_assert_eq(rp_conn_send(conn, "PING\r\nPING\r\n", 12, sloppy_sent, s), 0);
}

Test(pool, a_set_up_that_leaves_a_reply_unread_fails_the_dial)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    sloppy_setup s = {0};
    opts.on_connect = sloppy_connect;
    opts.on_connect_data = &s;
    open_pool(&opts);
    fx_got got = fx_get_outcome(loop, pool, 3000);
    cr_expect_eq(s.calls, 1);
    cr_expect_eq(got.status, -EPROTO, "got %s", rp_strerror(got.status));
    cr_expect_eq(stats().stale_conns, 1);
    cr_expect_eq(rp_pool_len(pool), 0);
    fx_close_and_free(loop, pool);
}

/* ----------------------------------------------------------------- stats */

/* go-redis counts a miss for every get that, holding its turn, found no
 * free connection, whatever then serves it: here a connection put back
 * while its dial was under way. Dials are counted apart. */
Test(pool, misses_count_gets_that_found_no_free_connection_as_go_redis_does)
{
    open_default_pool(4);
    rp_conn *a = fx_get_conn(loop, pool); /* miss, dial 1 */
    fx_got b = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &b), 0); /* miss, dial 2 */
    cr_expect_eq(stats().dials_in_flight, 1);
    rp_pool_put(pool, a); /* b takes a before its dial ends */
    cr_assert(fx_run_until_count(loop, &b.calls, 1, 3000));
    cr_expect_eq(b.conn, a);
    cr_expect_eq(stats().misses, 2);
    cr_expect_eq(stats().hits, 0);
    for (int i = 0; i < 100 && stats().dials_in_flight; i++)
        fx_run_for(loop, 5);
    cr_expect_eq(stats().dials, 2);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "the second dial did not reach the idle list");
    rp_conn *c = fx_get_conn(loop, pool); /* hit: the second dial's connection */
    cr_expect_eq(stats().hits, 1);
    cr_expect_eq(stats().misses, 2);
    cr_expect_eq(stats().dials, 2);
    rp_pool_put(pool, b.conn);
    rp_pool_put(pool, c);
    fx_close_and_free(loop, pool);
}

/* ------------------------------------------- per-connection data, owner */

/* Each connection's state, with the order its destructor ran in. */
typedef struct conn_state {
    int frees;
    int order;
} conn_state;
static int frees_so_far;
static void conn_state_free(void *data)
{
    conn_state *s = data;
    s->frees++;
    s->order = ++frees_so_far;
}

static int close_order;
static void record_close_order(rp_pool *p, void *data)
{
    (void)p, (void)data;
    close_order = ++frees_so_far;
}

static rp_conn *get_with_state(conn_state *s)
{
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_assert_eq(rp_conn_set_data_full(conn, s, conn_state_free), 0);
    cr_expect_eq(rp_conn_data(conn), s);
    return conn;
}

Test(pool, conn_data_destructor_runs_once_whatever_closes_the_connection)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 8);
    opts.conn_max_idle_time_ms = 100;
    open_pool(&opts);
    frees_so_far = 0;
    conn_state removed = {0}, broken = {0}, expired = {0}, idle = {0}, held = {0}, replaced = {0}, kept = {0};
    rp_pool_remove(pool, get_with_state(&removed), -EPROTO);
    fx_run_for(loop, 5);
    cr_expect_eq(removed.frees, 1, "remove");

    rp_conn *conn = get_with_state(&broken);
    fx_redis_command("CLIENT KILL TYPE normal\r\n");
    char buf[8];
    cr_expect_eq(recv_exactly(conn, buf, 1), 0); /* end of stream: broken */
    rp_pool_put(pool, conn);
    fx_run_for(loop, 5);
    cr_expect_eq(broken.frees, 1, "put of a broken connection");

    rp_pool_put(pool, get_with_state(&expired));
    fx_run_for(loop, 250);
    cr_expect_eq(expired.frees, 1, "idle past conn_max_idle_time_ms");

    /* Data set, then replaced: the destructor gets what the slot holds. */
    conn = get_with_state(&replaced);
    rp_conn_set_data(conn, &kept);
    rp_conn *other = get_with_state(&held);
    rp_conn *third = get_with_state(&idle);
    rp_pool_put(pool, conn);
    rp_pool_put(pool, third);
    fx_run_for(loop, 5);
    cr_expect_eq(idle.frees + kept.frees + held.frees, 0, "freed while the connection lived");

    closed_flag = false;
    cr_assert_eq(rp_pool_close(pool, record_close_order, NULL), 0);
    fx_run_for(loop, 5);
    cr_expect_eq(idle.frees, 1, "idle connection at pool close");
    cr_expect_eq(kept.frees, 1, "the slot's data at close");
    cr_expect_eq(replaced.frees, 0, "the replaced data was freed");
    cr_expect_eq(held.frees, 0, "freed while still held");
    cr_expect_eq(close_order, 0, "the pool closed with a connection held");
    rp_pool_put(pool, other); /* closes it, then the pool */
    for (int i = 0; i < 100 && !close_order; i++)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(held.frees, 1, "held connection put after the close");
    cr_expect_lt(held.order, close_order, "the destructor ran after the pool's close callback");
    cr_expect_eq(rp_loop_free(loop), 0);
    conn_state *all[] = {&removed, &broken, &expired, &idle, &held, &kept};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        cr_expect_eq(all[i]->frees, 1, "state %zu freed %d times", i, all[i]->frees);
}

static void state_on_connect(rp_conn *conn, void *data)
{
    conn_state *s = data;
    cr_assert_eq(rp_conn_set_data_full(conn, s, conn_state_free), 0);
    rp_conn_setup_done(conn, s->order < 0 ? -EACCES : 0);
}

Test(pool, conn_data_set_in_on_connect_is_freed_when_the_set_up_fails)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    conn_state s = {.order = -1};
    opts.on_connect = state_on_connect;
    opts.on_connect_data = &s;
    open_pool(&opts);
    fx_got got = fx_get_outcome(loop, pool, 3000);
    cr_expect_eq(got.status, -EACCES);
    fx_run_for(loop, 5);
    cr_expect_eq(s.frees, 1);
    fx_close_and_free(loop, pool);
    cr_expect_eq(s.frees, 1);
}

Test(pool, conn_data_full_rejects_null_and_can_drop_its_destructor)
{
    open_default_pool(2);
    cr_expect_eq(rp_conn_set_data_full(NULL, NULL, free), -EINVAL);
    conn_state s = {0};
    rp_conn *conn = get_with_state(&s);
    cr_assert_eq(rp_conn_set_data_full(conn, &s, NULL), 0);
    rp_pool_remove(pool, conn, 0);
    fx_run_for(loop, 5);
    cr_expect_eq(s.frees, 0, "a dropped destructor ran");
    fx_close_and_free(loop, pool);
}

Test(pool, conn_pool_leads_back_to_the_connection_pool)
{
    open_default_pool(2);
    cr_expect_null(rp_conn_pool(NULL));
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_expect_eq(rp_conn_pool(conn), pool);
    rp_pool_put(pool, conn);
    rp_pool *sticky;
    cr_assert_eq(rp_sticky_pool_new(&sticky, pool), 0);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(sticky, fx_get_cb, &got), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 3000));
    cr_expect_eq(rp_conn_pool(got.conn), pool, "a sticky pool's connection belongs to its parent");
    rp_pool_put(sticky, got.conn);
    rp_pool_close(sticky, NULL, NULL);
    fx_run_for(loop, 5);
    fx_close_and_free(loop, pool);
}

/* ------------------------------------------------------- vectored sends */

/* SET key value in three pieces, the value big enough for partial writes;
 * the iovec array is the caller's and changes right after the call. */
Test(pool, sendv_sends_every_piece_with_one_completion)
{
    open_default_pool(1);
    rp_conn *conn = fx_get_conn(loop, pool);
    size_t value_len = 8 << 20;
    char *value = malloc(value_len + 2);
    memset(value, 'v', value_len);
    memcpy(value + value_len, "\r\n", 2);
    char head[64];
    int head_len = snprintf(head, sizeof head, "*3\r\n$3\r\nSET\r\n$5\r\nsendv\r\n$%zu\r\n", value_len);
    struct iovec iov[3] = {{head, (size_t)head_len}, {value, value_len / 3}, {value + value_len / 3,
                                                                             value_len - value_len / 3 + 2}};
    io_seen seen = {0};
    cr_assert_eq(rp_conn_sendv(conn, iov, 3, count_io, &seen), 0);
    memset(iov, 0, sizeof iov);
    cr_expect_eq(seen.calls, 0, "the callback ran inside the call");
    cr_assert(fx_run_until_count(loop, &seen.calls, 1, 10000));
    cr_expect_eq(seen.result, (ssize_t)(head_len + value_len + 2));
    char buf[32] = {0};
    cr_expect_eq(recv_exactly(conn, buf, 5), 5);
    cr_expect_str_eq(buf, "+OK\r\n");
    send_text(conn, "STRLEN sendv\r\n");
    memset(buf, 0, sizeof buf);
    cr_expect_eq(recv_exactly(conn, buf, 10), 10);
    cr_expect_str_eq(buf, ":8388608\r\n");
    fx_run_for(loop, 5);
    cr_expect_eq(seen.calls, 1);
    rp_pool_put(pool, conn);
    free(value);
    fx_close_and_free(loop, pool);
}

Test(pool, sendv_rejects_bad_arguments_and_a_second_send)
{
    open_default_pool(1);
    rp_conn *conn = fx_get_conn(loop, pool);
    io_seen seen = {0};
    struct iovec iov[2] = {{(void *)"PING\r\n", 6}, {(void *)"", 0}};
    cr_expect_eq(rp_conn_sendv(NULL, iov, 1, count_io, &seen), -EINVAL);
    cr_expect_eq(rp_conn_sendv(conn, NULL, 1, count_io, &seen), -EINVAL);
    cr_expect_eq(rp_conn_sendv(conn, iov, 0, count_io, &seen), -EINVAL);
    cr_expect_eq(rp_conn_sendv(conn, iov, -1, count_io, &seen), -EINVAL);
    cr_expect_eq(rp_conn_sendv(conn, iov, 1, NULL, &seen), -EINVAL);
    cr_expect_eq(rp_conn_sendv(conn, iov + 1, 1, count_io, &seen), -EINVAL, "nothing to send");
    cr_expect_eq(rp_conn_sendv(conn, iov, 1025, count_io, &seen), -EINVAL, "past IOV_MAX");
    cr_assert_eq(rp_conn_sendv(conn, iov, 2, count_io, &seen), 0);
    cr_expect_eq(rp_conn_send(conn, "PING\r\n", 6, count_io, &seen), -EBUSY);
    cr_expect_eq(rp_conn_sendv(conn, iov, 1, count_io, &seen), -EBUSY);
    cr_assert(fx_run_until_count(loop, &seen.calls, 1, 3000));
    cr_expect_eq(seen.result, 6);
    char buf[8] = {0};
    cr_expect_eq(recv_exactly(conn, buf, 7), 7);
    cr_expect_str_eq(buf, "+PONG\r\n");
    rp_pool_put(pool, conn);
    cr_expect_eq(stats().stale_conns, 0);
    fx_close_and_free(loop, pool);
}
