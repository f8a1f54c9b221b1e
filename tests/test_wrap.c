/* SingleConnPool and StickyConnPool: every state transition, against a
 * real redis-server through a parent ConnPool. */
#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

TestSuite(wrap, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

static rp_loop *loop;
static rp_pool *parent;

static void open_parent(int pool_size, uint32_t pool_timeout_ms)
{
    rp_pool_options opts;
    fx_pool_options(&opts, pool_size);
    opts.pool_timeout_ms = pool_timeout_ms;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&parent, loop, &opts), 0);
}

static rp_pool *open_sticky(int parent_size, uint32_t pool_timeout_ms)
{
    rp_pool *sticky;
    open_parent(parent_size, pool_timeout_ms);
    cr_assert_eq(rp_sticky_pool_new(&sticky, parent), 0);
    return sticky;
}

static fx_got get_and_wait(rp_pool *pool)
{
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 3000), "get never completed");
    return got;
}

typedef struct closed_flag {
    bool done;
    int calls;
} closed_flag;

static void on_closed(rp_pool *pool, void *data)
{
    (void)pool;
    closed_flag *flag = data;
    flag->done = true;
    flag->calls++;
}

static void close_and_wait(rp_pool *pool)
{
    closed_flag flag = {0};
    cr_assert_eq(rp_pool_close(pool, on_closed, &flag), 0);
    cr_assert(fx_run_until(loop, &flag.done, 3000));
    cr_expect_eq(flag.calls, 1);
}

/* ---------------------------------------------------------------- single */

Test(wrap, single_yields_its_one_connection)
{
    open_parent(2, 1000);
    rp_conn *conn = fx_get_conn(loop, parent);
    rp_pool *single;
    cr_assert_eq(rp_single_pool_new(&single, parent, conn), 0);
    for (int i = 0; i < 3; i++) {
        fx_got got = get_and_wait(single);
        cr_expect_eq(got.status, 0);
        cr_expect_eq(got.conn, conn);
        rp_pool_put(single, got.conn);
    }
    cr_expect(fx_ping(loop, conn));
    cr_expect_eq(rp_pool_len(single), 0, "go-redis reports 0");
    cr_expect_eq(rp_pool_idle_len(single), 0);
    close_and_wait(single);
    rp_pool_put(parent, conn);
    fx_close_and_free(loop, parent);
}

Test(wrap, single_remove_makes_later_gets_fail_with_badconn)
{
    open_parent(2, 1000);
    rp_conn *conn = fx_get_conn(loop, parent);
    rp_pool *single;
    cr_assert_eq(rp_single_pool_new(&single, parent, conn), 0);
    fx_got got = get_and_wait(single);
    rp_pool_remove(single, got.conn, -ECONNRESET);
    cr_expect_eq(rp_pool_get(single, fx_get_cb, &got), RP_EBADCONN);
    cr_expect_eq(rp_pool_bad_conn_reason(single), -ECONNRESET);
    close_and_wait(single);
    rp_pool_remove(parent, conn, -ECONNRESET);
    fx_close_and_free(loop, parent);
}

Test(wrap, single_after_close_is_eclosed_and_cancel_works)
{
    open_parent(2, 1000);
    rp_conn *conn = fx_get_conn(loop, parent);
    rp_pool *single;
    cr_assert_eq(rp_single_pool_new(&single, parent, conn), 0);
    fx_got got = {0};
    int64_t id = rp_pool_get(single, fx_get_cb, &got);
    cr_assert_eq(rp_pool_cancel(single, id), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 1000));
    cr_expect_eq(got.status, -ECANCELED);
    rp_pool_put(single, NULL);
    cr_expect_eq(rp_pool_misuse_count(single), 1);
    closed_flag flag = {0};
    cr_assert_eq(rp_pool_close(single, on_closed, &flag), 0);
    cr_expect_eq(rp_pool_get(single, fx_get_cb, &got), RP_ECLOSED);
    cr_expect_eq(rp_pool_close(single, on_closed, &flag), RP_ECLOSED);
    cr_assert(fx_run_until(loop, &flag.done, 1000));
    rp_pool_put(parent, conn);
    fx_close_and_free(loop, parent);
}

/* ---------------------------------------------------------------- sticky */

Test(wrap, sticky_first_get_takes_from_parent_then_sticks)
{
    rp_pool *sticky = open_sticky(4, 1000);
    cr_expect_eq(rp_pool_len(sticky), 0, "default state holds nothing");
    fx_got first = get_and_wait(sticky);
    cr_assert_eq(first.status, 0);
    cr_expect_eq(rp_pool_len(sticky), 1);
    cr_expect_eq(rp_pool_idle_len(sticky), 0);
    rp_pool_put(sticky, first.conn);
    cr_expect_eq(rp_pool_idle_len(sticky), 1);
    cr_expect_eq(rp_pool_idle_len(parent), 0, "the connection went back to the parent");
    fx_got second = get_and_wait(sticky);
    cr_expect_eq(second.conn, first.conn);
    rp_pool_put(sticky, second.conn);
    close_and_wait(sticky);
    cr_expect_eq(rp_pool_idle_len(parent), 1, "close did not put the connection back");
    fx_close_and_free(loop, parent);
}

Test(wrap, sticky_get_waits_fifo_while_the_connection_is_out)
{
    rp_pool *sticky = open_sticky(4, 1000);
    fx_got first = get_and_wait(sticky);
    fx_got waiters[3] = {0};
    for (int i = 0; i < 3; i++)
        cr_assert_gt(rp_pool_get(sticky, fx_get_cb, &waiters[i]), 0);
    fx_run_for(loop, 20);
    cr_expect_eq(waiters[0].calls, 0, "a waiter got the connection while it was out");
    rp_conn *held = first.conn;
    for (int i = 0; i < 3; i++) {
        rp_pool_put(sticky, held);
        cr_assert(fx_run_until_count(loop, &waiters[i].calls, 1, 1000));
        cr_expect_eq(waiters[i].conn, first.conn);
        for (int j = i + 1; j < 3; j++)
            cr_expect_eq(waiters[j].calls, 0, "not FIFO");
        held = waiters[i].conn;
    }
    rp_pool_put(sticky, held);
    close_and_wait(sticky);
    fx_close_and_free(loop, parent);
}

Test(wrap, sticky_wait_times_out_with_the_parents_pool_timeout)
{
    rp_pool *sticky = open_sticky(4, 150);
    fx_got first = get_and_wait(sticky);
    uint64_t start = fx_now_ms();
    fx_got waiter = get_and_wait(sticky);
    uint64_t waited = fx_now_ms() - start;
    cr_expect_eq(waiter.status, RP_EPOOLTIMEOUT);
    cr_expect(waited >= 150 && waited < 300, "waited %lu ms", (unsigned long)waited);
    rp_stats st;
    rp_pool_stats(sticky, &st);
    cr_expect_eq(st.timeouts, 1);
    rp_pool_put(sticky, first.conn);
    close_and_wait(sticky);
    fx_close_and_free(loop, parent);
}

Test(wrap, sticky_remove_is_sticky_until_reset)
{
    rp_pool *sticky = open_sticky(4, 1000);
    fx_got first = get_and_wait(sticky);
    fx_got waiter = {0};
    cr_assert_gt(rp_pool_get(sticky, fx_get_cb, &waiter), 0);
    cr_expect_eq(rp_sticky_pool_reset(sticky), 0, "reset of a good pool is a no-op");
    rp_pool_remove(sticky, first.conn, -ECONNRESET);
    cr_assert(fx_run_until_count(loop, &waiter.calls, 1, 1000));
    cr_expect_eq(waiter.status, RP_EBADCONN);
    cr_expect_eq(rp_pool_get(sticky, fx_get_cb, &waiter), RP_EBADCONN);
    cr_expect_eq(rp_pool_bad_conn_reason(sticky), -ECONNRESET);
    int parent_conns = rp_pool_len(parent);
    cr_assert_eq(rp_sticky_pool_reset(sticky), 0);
    cr_expect_eq(rp_pool_len(parent), parent_conns - 1, "reset did not remove the bad connection");
    cr_expect_eq(rp_pool_len(sticky), 0, "reset did not go back to default");
    fx_got fresh = get_and_wait(sticky);
    cr_expect_eq(fresh.status, 0);
    cr_expect(fx_ping(loop, fresh.conn));
    rp_pool_put(sticky, fresh.conn);
    close_and_wait(sticky);
    fx_close_and_free(loop, parent);
}

Test(wrap, sticky_close_removes_a_bad_connection)
{
    rp_pool *sticky = open_sticky(4, 1000);
    fx_got first = get_and_wait(sticky);
    rp_pool_remove(sticky, first.conn, -EPIPE);
    cr_expect_eq(rp_sticky_pool_reset(parent), -EINVAL, "reset of a ConnPool");
    cr_expect_eq(rp_pool_len(parent), 1, "remove on a sticky pool keeps the connection until reset or close");
    close_and_wait(sticky);
    cr_expect_eq(rp_pool_len(parent), 0, "close must remove a bad connection");
    fx_close_and_free(loop, parent);
}

Test(wrap, sticky_shared_closes_on_the_last_close)
{
    open_parent(4, 1000);
    rp_pool *sticky, *shared;
    cr_assert_eq(rp_sticky_pool_new(&sticky, parent), 0);
    cr_assert_eq(rp_sticky_pool_new(&shared, sticky), 0);
    cr_expect_eq(shared, sticky);
    fx_got first = get_and_wait(sticky);
    rp_pool_put(sticky, first.conn);
    close_and_wait(shared);
    fx_got still = get_and_wait(sticky);
    cr_expect_eq(still.status, 0, "the first close closed a shared pool");
    rp_pool_put(sticky, still.conn);
    close_and_wait(sticky);
    cr_expect_eq(rp_pool_idle_len(parent), 1);
    fx_close_and_free(loop, parent);
}

Test(wrap, sticky_close_with_waiters_and_connection_out)
{
    rp_pool *sticky = open_sticky(4, 1000);
    fx_got first = get_and_wait(sticky);
    fx_got waiter = {0};
    cr_assert_gt(rp_pool_get(sticky, fx_get_cb, &waiter), 0);
    closed_flag flag = {0};
    cr_assert_eq(rp_pool_close(sticky, on_closed, &flag), 0);
    cr_expect_eq(rp_pool_get(sticky, fx_get_cb, &waiter), RP_ECLOSED);
    cr_assert(fx_run_until_count(loop, &waiter.calls, 1, 1000));
    cr_expect_eq(waiter.status, RP_ECLOSED);
    fx_run_for(loop, 20);
    cr_expect_not(flag.done, "closed while its connection was out");
    rp_pool_put(sticky, first.conn);
    cr_assert(fx_run_until(loop, &flag.done, 1000));
    cr_expect_eq(rp_pool_idle_len(parent), 1);
    fx_close_and_free(loop, parent);
}

Test(wrap, sticky_parent_failure_reaches_the_caller_and_stays_default)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fx_closed_port());
    opts.addr = addr;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&parent, loop, &opts), 0);
    rp_pool *sticky;
    cr_assert_eq(rp_sticky_pool_new(&sticky, parent), 0);
    fx_got got = get_and_wait(sticky);
    cr_expect_eq(got.status, -ECONNREFUSED);
    cr_expect_eq(rp_pool_len(sticky), 0);
    close_and_wait(sticky);
    fx_close_and_free(loop, parent);
}

Test(wrap, sticky_first_get_is_cancellable)
{
    rp_pool *sticky = open_sticky(2, 1000);
    fx_got got = {0};
    int64_t id = rp_pool_get(sticky, fx_get_cb, &got);
    cr_assert_gt(id, 0);
    cr_expect_eq(rp_pool_cancel(sticky, id), 0, "cancel of the first get refused");
    fx_run_for(loop, 100);
    cr_expect_eq(got.calls, 1);
    cr_expect_eq(got.status, -ECANCELED, "got %s", rp_strerror(got.status));
    cr_expect_null(got.conn);
    if (got.conn)
        rp_pool_put(sticky, got.conn);
    cr_expect_eq(rp_pool_len(parent) - rp_pool_idle_len(parent), rp_pool_len(sticky),
                 "the parent has a connection out that the sticky pool does not hold");
    fx_got next = get_and_wait(sticky);
    cr_expect_eq(next.status, 0, "a get after the cancel failed: %s", rp_strerror(next.status));
    if (next.conn)
        rp_pool_put(sticky, next.conn);
    close_and_wait(sticky);
    cr_expect_eq(rp_pool_idle_len(parent), rp_pool_len(parent), "the parent leaked a connection");
    fx_close_and_free(loop, parent);
}

/* The cancelled first get ends with -ECANCELED within the loop iteration
 * that follows the cancel, and a close right after the cancel does not
 * turn that into RP_ECLOSED. */
Test(wrap, sticky_cancelled_first_get_ends_at_once_with_ecanceled)
{
    rp_pool *sticky = open_sticky(2, 1000);
    fx_got got = {0};
    int64_t id = rp_pool_get(sticky, fx_get_cb, &got);
    cr_assert_gt(id, 0);
    cr_assert_eq(rp_pool_cancel(sticky, id), 0);
    cr_expect_eq(rp_pool_cancel(sticky, id), -ENOENT, "a second cancel found something to cancel");
    cr_expect_eq(got.calls, 0, "the callback ran inside rp_pool_cancel");
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(got.calls, 1, "the cancelled get did not end in the next iteration");
    cr_expect_eq(got.status, -ECANCELED, "got %s", rp_strerror(got.status));

    fx_got closed_got = {0};
    id = rp_pool_get(sticky, fx_get_cb, &closed_got);
    cr_assert_gt(id, 0);
    cr_assert_eq(rp_pool_cancel(sticky, id), 0);
    closed_flag flag = {0};
    cr_assert_eq(rp_pool_close(sticky, on_closed, &flag), 0);
    cr_assert(fx_run_until(loop, &flag.done, 3000));
    cr_expect_eq(closed_got.calls, 1);
    cr_expect_eq(closed_got.status, -ECANCELED, "got %s", rp_strerror(closed_got.status));
    fx_run_for(loop, 50);
    cr_expect_eq(got.calls + closed_got.calls, 2, "a callback ran twice");
    cr_expect_eq(rp_pool_idle_len(parent), rp_pool_len(parent), "the parent has a connection out");
    fx_close_and_free(loop, parent);
}

/* Gets queued behind the first one wait for the same connection: when
 * the parent fails it, each of them gets the parent's error at once,
 * none waits for the pool timeout, and no dial is made per waiter. */
Test(wrap, sticky_waiters_all_get_the_parents_error)
{
    int port, fillers[8];
    int listener = fx_listener(0, &port);
    fx_fill_backlog(port, fillers, 8); /* connects to it never complete */
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    opts.addr = addr;
    opts.dial_timeout_ms = 200;
    opts.pool_timeout_ms = 3000;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&parent, loop, &opts), 0);
    rp_pool *sticky;
    cr_assert_eq(rp_sticky_pool_new(&sticky, parent), 0);
    fx_got got[5] = {{0}};
    uint64_t start = fx_now_ms();
    for (int i = 0; i < 5; i++)
        cr_assert_gt(rp_pool_get(sticky, fx_get_cb, &got[i]), 0);
    for (int i = 0; i < 5; i++)
        cr_assert(fx_run_until_count(loop, &got[i].calls, 1, 5000), "get %d never ended", i);
    uint64_t took = fx_now_ms() - start;
    for (int i = 0; i < 5; i++)
        cr_expect_eq(got[i].status, -ETIMEDOUT, "get %d: %s", i, rp_strerror(got[i].status));
    cr_expect_lt(took, 600, "the waiters took %lu ms", (unsigned long)took);
    rp_stats st;
    rp_pool_stats(parent, &st);
    cr_expect_leq(st.misses, 2, "%u dials for one sticky connection", st.misses);
    close_and_wait(sticky);
    fx_close_and_free(loop, parent);
    for (int i = 0; i < 8; i++)
        close(fillers[i]);
    close(listener);
}

/* ------------------------------------------------------- an honest put */

static void sent_cb(rp_conn *conn, ssize_t result, void *data)
{
    (void)conn;
    *(ssize_t *)data = result ? result : -1;
}

/* PING sent, its reply never read: it comes after the holder's last read. */
static void send_ping_unread(rp_conn *conn)
{
    ssize_t sent = 0;
    cr_assert_eq(rp_conn_send(conn, "PING\r\n", 6, sent_cb, &sent), 0);
    uint64_t until = fx_now_ms() + 3000;
    while (!sent && fx_now_ms() < until)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_assert_eq(sent, 6);
    fx_run_for(loop, 20); /* +PONG arrives, unread */
}

/* A single pool never hands its next holder the reply its last holder
 * left unread: the put marks the pool bad, as a remove does. */
Test(wrap, single_put_with_a_reply_unread_goes_bad)
{
    open_parent(2, 1000);
    rp_conn *conn = fx_get_conn(loop, parent);
    rp_pool *single;
    cr_assert_eq(rp_single_pool_new(&single, parent, conn), 0);
    fx_got got = get_and_wait(single);
    send_ping_unread(got.conn);
    rp_pool_put(single, got.conn);
    fx_got next = {0};
    cr_expect_eq(rp_pool_get(single, fx_get_cb, &next), RP_EBADCONN, "the next holder got the old reply");
    cr_expect_eq(rp_pool_bad_conn_reason(single), RP_EBADCONN);
    close_and_wait(single);
    rp_pool_remove(parent, conn, RP_EBADCONN);
    fx_close_and_free(loop, parent);
}

/* Read to the end, the same connection is handed out again. */
Test(wrap, single_put_after_reading_the_reply_keeps_the_connection)
{
    open_parent(2, 1000);
    rp_conn *conn = fx_get_conn(loop, parent);
    rp_pool *single;
    cr_assert_eq(rp_single_pool_new(&single, parent, conn), 0);
    for (int i = 0; i < 3; i++) {
        fx_got got = get_and_wait(single);
        cr_assert_eq(got.status, 0, "round %d: %s", i, rp_strerror(got.status));
        cr_expect(fx_ping(loop, got.conn));
        rp_pool_put(single, got.conn);
    }
    cr_expect_eq(rp_pool_bad_conn_reason(single), 0);
    close_and_wait(single);
    rp_pool_put(parent, conn);
    fx_close_and_free(loop, parent);
}

/* A sticky pool's waiter is not handed the connection with the reply its
 * holder left: it gets RP_EBADCONN, and a reset gives the connection back
 * to the parent as removed. */
Test(wrap, sticky_put_with_a_reply_unread_goes_bad_until_reset)
{
    rp_pool *sticky = open_sticky(4, 1000);
    fx_got first = get_and_wait(sticky);
    fx_got waiter = {0};
    cr_assert_gt(rp_pool_get(sticky, fx_get_cb, &waiter), 0);
    send_ping_unread(first.conn);
    rp_pool_put(sticky, first.conn);
    cr_assert(fx_run_until_count(loop, &waiter.calls, 1, 1000));
    cr_expect_eq(waiter.status, RP_EBADCONN, "the waiter got %s", rp_strerror(waiter.status));
    int parent_conns = rp_pool_len(parent);
    cr_assert_eq(rp_sticky_pool_reset(sticky), 0);
    cr_expect_eq(rp_pool_len(parent), parent_conns - 1, "reset kept the connection with the old reply");
    fx_got fresh = get_and_wait(sticky);
    cr_expect_eq(fresh.status, 0);
    cr_expect(fx_ping(loop, fresh.conn));
    rp_pool_put(sticky, fresh.conn);
    close_and_wait(sticky);
    fx_close_and_free(loop, parent);
}

static void conn_result_cb(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    fx_result_record(data, reply, status);
}

/* Replies the Redis layer still owes are not bytes a holder left: each
 * reaches its own command whoever holds the connection, so a put before
 * they came keeps the sticky connection good. */
Test(wrap, sticky_put_with_redis_replies_owed_stays_good)
{
    rp_pool *sticky = open_sticky(4, 1000);
    fx_got first = get_and_wait(sticky);
    fx_got waiter = {0};
    cr_assert_gt(rp_pool_get(sticky, fx_get_cb, &waiter), 0);
    fx_result blpop = {0}, incr = {0};
    cr_assert_eq(rp_conn_command(first.conn, conn_result_cb, &blpop, 3, (const char *[]){"BLPOP", "wrap:none", "0.3"},
                                 NULL),
                 0);
    cr_assert_eq(rp_conn_command(first.conn, conn_result_cb, &incr, 2, (const char *[]){"INCR", "wrap:owed"}, NULL), 0);
    fx_run_for(loop, 50); /* sent; the server answers in 300 ms */
    cr_assert_eq(blpop.calls, 0);
    rp_pool_put(sticky, first.conn); /* before the replies came */
    cr_assert(fx_run_until_count(loop, &waiter.calls, 1, 3000));
    cr_expect_eq(waiter.status, 0, "the next holder got %s", rp_strerror(waiter.status));
    cr_expect_eq(waiter.conn, first.conn);
    cr_assert(fx_run_until_count(loop, &incr.calls, 1, 3000));
    cr_expect_eq(blpop.status, 0);
    cr_expect_eq(blpop.type, REDIS_REPLY_NIL);
    cr_expect_eq(incr.status, 0);
    cr_expect_eq(rp_pool_bad_conn_reason(sticky), 0);
    rp_pool_put(sticky, waiter.conn);
    close_and_wait(sticky);
    fx_close_and_free(loop, parent);
}
