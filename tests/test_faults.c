/* Faults: refused, unanswered and failing dials, servers that restart or
 * close idle clients, and peers that send FIN, RST or stray bytes. */
#define _GNU_SOURCE /* memmem */
#include "fixture.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

TestSuite(faults, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

static rp_loop *loop;
static rp_pool *pool;
static char addr[64];

static void open_pool_at(int port, rp_pool_options *opts)
{
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    opts->addr = addr;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&pool, loop, opts), 0);
}

static rp_stats stats(void)
{
    rp_stats st;
    rp_pool_stats(pool, &st);
    return st;
}

/* A listener whose backlog is full: a connect to it never answers. */
typedef struct unanswered {
    int listener, port, fillers[2];
} unanswered;

static unanswered unanswered_open(void)
{
    unanswered u;
    u.listener = fx_listener(0, &u.port);
    fx_fill_backlog(u.port, u.fillers, 2);
    return u;
}

static void unanswered_close(unanswered *u)
{
    close(u->fillers[0]);
    close(u->fillers[1]);
    close(u->listener);
}

static fx_got get_and_wait(unsigned timeout_ms)
{
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, timeout_ms), "get never completed");
    return got;
}

Test(faults, dial_refused_reports_econnrefused)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    open_pool_at(fx_closed_port(), &opts);
    fx_got got = get_and_wait(3000);
    cr_expect_eq(got.status, -ECONNREFUSED, "got %s", rp_strerror(got.status));
    cr_expect_null(got.conn);
    cr_expect_eq(stats().dial_errors, 1);
    cr_expect_eq(stats().last_dial_error, -ECONNREFUSED);
    cr_expect_eq(stats().misses, 1);
    fx_close_and_free(loop, pool);
}

Test(faults, dial_to_missing_unix_socket_reports_enoent)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.addr = "unix:/nonexistent/ringpool-test.sock";
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    fx_got got = get_and_wait(3000);
    cr_expect_eq(got.status, -ENOENT, "got %s", rp_strerror(got.status));
    fx_close_and_free(loop, pool);
}

Test(faults, dial_timeout_fires_on_time)
{
    unanswered u = unanswered_open();
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.dial_timeout_ms = 200;
    open_pool_at(u.port, &opts);
    uint64_t start = fx_now_ms();
    fx_got got = get_and_wait(3000);
    uint64_t waited = fx_now_ms() - start;
    cr_expect_eq(got.status, -ETIMEDOUT, "got %s", rp_strerror(got.status));
    cr_expect(waited >= 200 && waited <= 300, "dial timed out after %lu ms", (unsigned long)waited);
    fx_close_and_free(loop, pool);
    unanswered_close(&u);
}

Test(faults, consecutive_dial_failures_fail_fast_then_probe_recovers)
{
    int port = fx_closed_port();
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    open_pool_at(port, &opts);
    for (int i = 0; i < 2; i++)
        cr_expect_eq(get_and_wait(3000).status, -ECONNREFUSED);
    cr_expect_eq(stats().dial_errors, 2);
    fx_got fast = get_and_wait(3000);
    cr_expect_eq(fast.status, -ECONNREFUSED, "fail-fast must carry the last dial error");
    cr_expect_eq(stats().dial_errors, 2, "a dial was made while failing fast");
    int listener = fx_listen_at(port, 16); /* the server is back */
    fx_run_for(loop, 1300);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "the background probe did not reconnect");
    fx_got ok = get_and_wait(3000);
    cr_expect_eq(ok.status, 0);
    rp_pool_put(pool, ok.conn);
    fx_close_and_free(loop, pool);
    close(listener);
}

Test(faults, a_success_resets_the_consecutive_count)
{
    int port = fx_closed_port();
    rp_pool_options opts;
    fx_pool_options(&opts, 3);
    open_pool_at(port, &opts);
    for (int i = 0; i < 2; i++)
        cr_expect_eq(get_and_wait(3000).status, -ECONNREFUSED);
    int listener = fx_listen_at(port, 16);
    fx_got ok = get_and_wait(3000);
    cr_assert_eq(ok.status, 0);
    rp_pool_remove(pool, ok.conn, 0);
    close(listener);
    for (int i = 0; i < 2; i++)
        cr_expect_eq(get_and_wait(3000).status, -ECONNREFUSED);
    cr_expect_eq(stats().dial_errors, 4, "failures before the success still counted");
    fx_close_and_free(loop, pool);
}

Test(faults, waiter_cancel_never_cancels_a_dial_under_way)
{
    unanswered u = unanswered_open();
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.dial_timeout_ms = 5000;
    open_pool_at(u.port, &opts);
    fx_got got = {0};
    int64_t id = rp_pool_get(pool, fx_get_cb, &got);
    fx_run_for(loop, 50);
    cr_expect_eq(stats().dials_in_flight, 1);
    cr_assert_eq(rp_pool_cancel(pool, id), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 1000));
    cr_expect_eq(got.status, -ECANCELED);
    cr_expect_eq(stats().dials_in_flight, 1, "the cancel stopped the dial");
    /* Make room in the backlog: the retransmitted SYN now completes. */
    for (int i = 0; i < 2; i++)
        close(accept(u.listener, NULL, NULL));
    uint64_t deadline = fx_now_ms() + 4000;
    while (rp_pool_idle_len(pool) < 1 && fx_now_ms() < deadline)
        fx_run_for(loop, 20);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "the finished dial did not reach the idle list");
    cr_expect_eq(stats().dial_errors, 0);
    fx_close_and_free(loop, pool);
    unanswered_close(&u);
}

Test(faults, max_concurrent_dials_caps_dials_in_flight)
{
    unanswered u = unanswered_open();
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.max_concurrent_dials = 1;
    opts.dial_timeout_ms = 300;
    open_pool_at(u.port, &opts);
    fx_got got[3] = {0};
    for (int i = 0; i < 3; i++)
        cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got[i]), 0);
    fx_run_for(loop, 50);
    cr_expect_eq(stats().dials_in_flight, 1);
    cr_assert(fx_run_until_count(loop, &got[2].calls, 1, 3000));
    for (int i = 0; i < 3; i++)
        cr_expect_eq(got[i].status, -ETIMEDOUT);
    cr_expect(got[0].order < got[1].order && got[1].order < got[2].order, "dial errors out of FIFO order");
    fx_close_and_free(loop, pool);
    unanswered_close(&u);
}

Test(faults, server_restart_then_pool_reconnects)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.health_check_idle_ms = 50;
    open_pool_at(fx_redis_port, &opts);
    rp_conn *conns[2] = {fx_get_conn(loop, pool), fx_get_conn(loop, pool)};
    rp_pool_put(pool, conns[0]);
    rp_pool_put(pool, conns[1]);
    fx_run_for(loop, 100);
    fx_redis_restart();
    fx_run_for(loop, 50);
    cr_expect_eq(rp_pool_len(pool), 0, "dead connections stayed in the pool");
    cr_expect_eq(stats().stale_conns, 2);
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_expect(fx_ping(loop, conn));
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

Test(faults, server_killing_idle_clients_drops_total_conns_within_milliseconds)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.health_check_idle_ms = 50;
    open_pool_at(fx_redis_port, &opts);
    rp_conn *conns[3];
    for (int i = 0; i < 3; i++)
        conns[i] = fx_get_conn(loop, pool);
    for (int i = 0; i < 3; i++)
        rp_pool_put(pool, conns[i]);
    fx_run_for(loop, 100); /* past the window: the idle watches are armed */
    fx_redis_command("CLIENT KILL TYPE normal\r\n");
    uint64_t start = fx_now_ms();
    while (rp_pool_len(pool) > 0 && fx_now_ms() - start < 1000)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(rp_pool_len(pool), 0);
    cr_expect_leq(took, 50, "took %lu ms to notice", (unsigned long)took);
    cr_expect_eq(stats().stale_conns, 3);
    cr_expect_eq(stats().total_conns, 0);
    fx_close_and_free(loop, pool);
}

typedef enum { PEER_FIN, PEER_RST, PEER_STRAY_BYTES } peer_fault;

/* An idle, watched connection to our own listener; the peer then misbehaves. */
static void idle_connection_sees(peer_fault fault)
{
    int port;
    int listener = fx_listener(16, &port);
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.health_check_idle_ms = 30;
    open_pool_at(port, &opts);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    int peer = accept(listener, NULL, NULL);
    fx_run_for(loop, 80);
    cr_assert_eq(rp_pool_len(pool), 1, "closed before the fault");
    if (fault == PEER_RST) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    if (fault == PEER_STRAY_BYTES)
        cr_assert_eq(write(peer, "+junk\r\n", 7), 7);
    else
        close(peer);
    uint64_t start = fx_now_ms();
    while (rp_pool_len(pool) > 0 && fx_now_ms() - start < 1000)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(rp_pool_len(pool), 0);
    cr_expect_leq(fx_now_ms() - start, 50);
    cr_expect_eq(stats().stale_conns, 1);
    if (fault == PEER_STRAY_BYTES) {
        char buf[16];
        /* Unread bytes make the close an RST rather than a FIN. */
        cr_expect_leq(read(peer, buf, sizeof buf), 0, "the peer did not see the close");
        close(peer);
    }
    fx_close_and_free(loop, pool);
    close(listener);
}

Test(faults, idle_connection_closed_on_peer_fin) { idle_connection_sees(PEER_FIN); }
Test(faults, idle_connection_closed_on_peer_rst) { idle_connection_sees(PEER_RST); }
Test(faults, idle_connection_closed_on_stray_bytes) { idle_connection_sees(PEER_STRAY_BYTES); }

Test(faults, get_checks_a_connection_idle_past_the_window)
{
    int port;
    int listener = fx_listener(16, &port);
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.health_check_idle_ms = 100;
    open_pool_at(port, &opts);
    rp_conn *first = fx_get_conn(loop, pool);
    rp_pool_put(pool, first);
    int peer = accept(listener, NULL, NULL);
    close(peer);
    usleep(150000); /* idle past the window, the loop not running: no watch yet */
    fx_got got = get_and_wait(3000);
    cr_expect_eq(got.status, 0);
    cr_expect_eq(stats().stale_conns, 1, "the dead connection was not checked");
    cr_expect_eq(stats().misses, 2);
    cr_expect_eq(rp_pool_len(pool), 1);
    close(accept(listener, NULL, NULL));
    rp_pool_remove(pool, got.conn, 0);
    fx_close_and_free(loop, pool);
    close(listener);
}

Test(faults, connection_used_within_the_window_is_not_checked)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.health_check_idle_ms = 10000;
    open_pool_at(fx_redis_port, &opts);
    rp_conn *conn = fx_get_conn(loop, pool);
    rp_pool_put(pool, conn);
    fx_got got = get_and_wait(1000);
    /* Handed out in the same iteration: a check would need a CQE first. */
    cr_expect_eq(got.conn, conn);
    cr_expect_eq(stats().hits, 1);
    rp_pool_put(pool, got.conn);
    fx_close_and_free(loop, pool);
}

Test(faults, emfile_is_reported_as_the_dial_error)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    open_pool_at(fx_redis_port, &opts);
    struct rlimit saved, low;
    getrlimit(RLIMIT_NOFILE, &saved);
    int probe = dup(0);
    close(probe);
    low = saved;
    low.rlim_cur = (rlim_t)probe; /* no fd number at or above this one */
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    fx_got got = get_and_wait(3000);
    setrlimit(RLIMIT_NOFILE, &saved);
    cr_expect_eq(got.status, -EMFILE, "got %s", rp_strerror(got.status));
    cr_expect_eq(stats().dial_errors, 1);
    fx_got ok = get_and_wait(3000);
    cr_expect_eq(ok.status, 0, "the pool did not recover once fds were free");
    rp_pool_put(pool, ok.conn);
    fx_close_and_free(loop, pool);
}

static void record_send(rp_conn *conn, ssize_t result, void *data)
{
    (void)conn;
    *(ssize_t *)data = result;
}

/* A peer that never reads: the socket buffers fill and the send stalls
 * after partial writes. One deadline covers the whole send. */
Test(faults, write_timeout_bounds_a_stalled_send)
{
    int port;
    int listener = fx_listener(16, &port); /* never accepted, never read */
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.write_timeout_ms = 200;
    open_pool_at(port, &opts);
    rp_conn *conn = fx_get_conn(loop, pool);
    size_t len = 64u << 20;
    char *big = calloc(1, len);
    ssize_t result = 1;
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_conn_send(conn, big, len, record_send, &result), 0);
    while (result == 1 && fx_now_ms() - start < 5000)
        rp_loop_run(loop, RP_RUN_ONCE);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(result, -ETIMEDOUT, "send ended with %zd", result);
    cr_expect(took >= 200 && took < 700, "write timeout after %lu ms", (unsigned long)took);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0, "a timed-out connection went back to the pool");
    fx_close_and_free(loop, pool);
    free(big);
    close(listener);
}

/* ------------------------------------------------ regressions (review) */

enum { MANY_GETS = 200000 };
static unsigned char many_calls[MANY_GETS];
static int many_done, many_wrong_status;

static void count_many(rp_pool *p, rp_conn *conn, int status, void *data)
{
    (void)p;
    unsigned char *calls = data;
    (*calls)++;
    many_done++;
    if (status != -ECONNREFUSED || conn)
        many_wrong_status++;
}

Test(faults, many_queued_gets_against_a_refusing_server_each_fail_once)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.pool_timeout_ms = 30000;
    opts.dial_timeout_ms = 200;
    open_pool_at(fx_closed_port(), &opts);
    for (int i = 0; i < MANY_GETS; i++)
        cr_assert_gt(rp_pool_get(pool, count_many, &many_calls[i]), 0, "get %d refused", i);
    uint64_t deadline = fx_now_ms() + 20000;
    while (many_done < MANY_GETS && fx_now_ms() < deadline) {
        if (rp_loop_run(loop, RP_RUN_NOWAIT) == 0)
            usleep(200); /* no sleep while work is pending: failures may take an iteration each */
    }
    cr_assert_eq(many_done, MANY_GETS, "%d of %d callbacks ran", many_done, MANY_GETS);
    fx_run_for(loop, 10);
    cr_expect_eq(many_done, MANY_GETS);
    cr_expect_eq(many_wrong_status, 0, "%d gets did not fail with the dial's error", many_wrong_status);
    int not_once = 0;
    for (int i = 0; i < MANY_GETS; i++)
        not_once += many_calls[i] != 1;
    cr_expect_eq(not_once, 0, "%d callbacks did not run exactly once", not_once);
    fx_close_and_free(loop, pool);
}

/* Leaves exactly one fd number free: the next socket() works, the one
 * after fails with EMFILE. The caller asserts nothing until it restores
 * the limit (a report may need an fd of its own). */
static int leave_one_fd(struct rlimit *saved)
{
    getrlimit(RLIMIT_NOFILE, saved);
    int probe = dup(0);
    close(probe);
    struct rlimit low = *saved;
    low.rlim_cur = (rlim_t)probe + 1;
    return setrlimit(RLIMIT_NOFILE, &low);
}

Test(faults, socket_failure_with_gets_queued_for_dials_answers_every_get)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.max_concurrent_dials = 1; /* the other gets queue for a dial */
    opts.dial_timeout_ms = 200;
    open_pool_at(fx_redis_port, &opts);
    rp_conn *held = fx_get_conn(loop, pool);
    struct rlimit saved;
    int limited = leave_one_fd(&saved);
    fx_got got[3] = {0};
    int64_t ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = rp_pool_get(pool, fx_get_cb, &got[i]);
    rp_pool_put(pool, held); /* must go to a waiting get, not to the idle list */
    rp_loop_run(loop, RP_RUN_DEFAULT);
    setrlimit(RLIMIT_NOFILE, &saved);
    cr_assert_eq(limited, 0);
    for (int i = 0; i < 3; i++)
        cr_assert_gt(ids[i], 0, "get %d refused: %s", i, rp_strerror((int)ids[i]));
    bool held_handed_on = false;
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(got[i].calls, 1, "get %d: %d callbacks when rp_loop_run returned", i, got[i].calls);
        if (got[i].calls == 1 && got[i].status != 0)
            cr_expect_lt(got[i].status, 0);
        held_handed_on |= got[i].calls == 1 && got[i].status == 0 && got[i].conn == held;
    }
    cr_expect(held_handed_on, "the put connection went to the idle list (idle %d) while gets waited",
              rp_pool_idle_len(pool));
    fx_run_for(loop, 20);
    for (int i = 0; i < 3; i++) {
        cr_expect_leq(got[i].calls, 1, "get %d: callback ran %d times", i, got[i].calls);
        if (got[i].calls && got[i].status == 0)
            rp_pool_put(pool, got[i].conn);
    }
    fx_close_and_free(loop, pool);
}

/* ------------------------------------------------------- an honest put */

/* A connection put back must never hand bytes that came for its previous
 * holder to the next one. The peer is our own listener, which writes
 * exactly what the test says when it says it. */

typedef struct io_done {
    bool done;
    ssize_t result;
} io_done;

static void io_done_cb(rp_conn *conn, ssize_t result, void *data)
{
    (void)conn;
    io_done *d = data;
    d->done = true;
    d->result = result;
}

static ssize_t send_sync(rp_conn *conn, const char *text)
{
    io_done d = {0};
    cr_assert_eq(rp_conn_send(conn, text, strlen(text), io_done_cb, &d), 0);
    cr_assert(fx_run_until(loop, &d.done, 3000), "send never completed");
    return d.result;
}

static ssize_t recv_sync(rp_conn *conn, char *buf, size_t cap)
{
    io_done d = {0};
    cr_assert_eq(rp_conn_recv(conn, buf, cap, io_done_cb, &d), 0);
    cr_assert(fx_run_until(loop, &d.done, 3000), "recv never completed");
    return d.result;
}

static int close_reasons[RP_CLOSE_SETUP + 1];
static void count_close_reason(void *data, rp_conn *conn, rp_close_reason reason)
{
    (void)data, (void)conn;
    close_reasons[reason]++;
}

typedef struct peer_pool {
    int listener;
    int peer; /* the server side of the first connection */
} peer_pool;

/* A pool of one connection to our listener, held by the caller, whose
 * reads wait at most read_timeout_ms (0: for ever). */
static rp_conn *peer_pool_open_timeout(peer_pool *pp, uint32_t read_timeout_ms)
{
    int port;
    pp->listener = fx_listener(16, &port);
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.read_timeout_ms = read_timeout_ms;
    opts.write_timeout_ms = 0;
    open_pool_at(port, &opts);
    memset(close_reasons, 0, sizeof close_reasons);
    rp_hooks hooks = {.conn_close = count_close_reason};
    rp_pool_set_hooks(pool, &hooks);
    rp_conn *conn = fx_get_conn(loop, pool);
    pp->peer = accept(pp->listener, NULL, NULL);
    cr_assert_geq(pp->peer, 0);
    return conn;
}

static rp_conn *peer_pool_open(peer_pool *pp) { return peer_pool_open_timeout(pp, 0); }

static void peer_write(int fd, const char *text)
{
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    fx_run_for(loop, 20); /* arrived, whatever the loopback's timing */
}

/* Puts conn back and asks again at once: the get that follows must come
 * back with a connection whose first read is what the peer sends it now,
 * never the old bytes. Returns that connection's peer. */
static int put_and_get_again_at_once(peer_pool *pp, rp_conn *conn, rp_conn **next)
{
    rp_pool_put(pool, conn);
    fx_got got = get_and_wait(3000);
    cr_assert_eq(got.status, 0);
    *next = got.conn;
    int peer = pp->peer;
    if (stats().stale_conns) {
        peer = accept(pp->listener, NULL, NULL);
        cr_assert_geq(peer, 0);
    }
    char buf[32] = {0};
    peer_write(peer, "new\r\n");
    cr_expect_eq(recv_sync(got.conn, buf, sizeof buf - 1), 5, "read %s", buf);
    cr_expect_str_eq(buf, "new\r\n", "the next holder read bytes meant for the previous one");
    return peer;
}

static void peer_pool_close(peer_pool *pp, rp_conn *conn, int peer)
{
    if (conn)
        rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
    if (peer != pp->peer)
        close(peer);
    close(pp->peer);
    close(pp->listener);
}

Test(faults, bytes_left_by_a_partial_read_remove_the_connection_at_put)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp), *next;
    char buf[8] = {0};
    peer_write(pp.peer, "one\r\ntwo\r\n");
    cr_assert_eq(recv_sync(conn, buf, 5), 5);
    int peer = put_and_get_again_at_once(&pp, conn, &next);
    cr_expect_eq(stats().stale_conns, 1);
    cr_expect_eq(close_reasons[RP_CLOSE_UNHEALTHY], 1);
    peer_pool_close(&pp, next, peer);
}

Test(faults, bytes_that_came_after_the_last_send_remove_the_connection_at_put)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp), *next;
    cr_assert_eq(send_sync(conn, "req\r\n"), 5);
    peer_write(pp.peer, "old\r\n"); /* the reply nobody read */
    int peer = put_and_get_again_at_once(&pp, conn, &next);
    cr_expect_eq(stats().stale_conns, 1);
    cr_expect_eq(close_reasons[RP_CLOSE_UNHEALTHY], 1);
    peer_pool_close(&pp, next, peer);
}

Test(faults, a_connection_read_to_the_end_is_kept_and_handed_out_at_once)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    char buf[8] = {0};
    cr_assert_eq(send_sync(conn, "req\r\n"), 5);
    peer_write(pp.peer, "rep\r\n");
    cr_assert_eq(recv_sync(conn, buf, 5), 5); /* exactly what came: nothing left */
    rp_pool_put(pool, conn);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(got.calls, 1, "a get waited for a connection nothing was left on");
    cr_expect_eq(got.conn, conn);
    cr_expect_eq(stats().stale_conns, 0);
    cr_expect_eq(stats().hits, 1);
    peer_pool_close(&pp, got.conn, pp.peer);
}

Test(faults, a_get_waits_for_the_check_of_a_connection_put_after_a_send)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp), *next;
    cr_assert_eq(send_sync(conn, "req\r\n"), 5); /* no reply comes */
    int peer = put_and_get_again_at_once(&pp, conn, &next);
    cr_expect_eq(next, conn, "the checked connection was not the one handed out");
    cr_expect_eq(stats().stale_conns, 0);
    cr_expect_eq(rp_pool_len(pool), 1, "a second connection was dialled");
    peer_pool_close(&pp, next, peer);
}

/* ---------------------------------------------------- recovery pacing */

static int probe_dials;
static void count_dial(void *data, const char *dial_addr)
{
    (void)data, (void)dial_addr;
    probe_dials++;
}

/* pool_size refused dials start fail-fast; returns when it began. */
static uint64_t fail_fast_begins(int port, rp_pool_options *opts)
{
    open_pool_at(port, opts);
    rp_hooks hooks = {.dial_start = count_dial};
    rp_pool_set_hooks(pool, &hooks);
    for (int i = 0; i < opts->pool_size; i++)
        cr_expect_eq(get_and_wait(3000).status, -ECONNREFUSED);
    probe_dials = 0;
    return fx_now_ms();
}

Test(faults, a_server_back_soon_is_found_by_a_fast_first_probe)
{
    int port = fx_closed_port();
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    uint64_t start = fail_fast_begins(port, &opts);
    while (fx_now_ms() - start < 200)
        fx_run_for(loop, 5);
    int listener = fx_listen_at(port, 16); /* back after 200 ms */
    while (rp_pool_idle_len(pool) < 1 && fx_now_ms() - start < 2000)
        fx_run_for(loop, 5);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(rp_pool_idle_len(pool), 1, "no probe reconnected");
    /* Probes 50, 150, 350 ms after fail-fast began: the third finds it. */
    cr_expect_leq(took, 700, "the server was back at 200 ms, used again at %lu ms", (unsigned long)took);
    cr_expect_leq(probe_dials, 4, "%d probes: a dial storm", probe_dials);
    fx_got ok = get_and_wait(1000);
    cr_expect_eq(ok.status, 0);
    if (ok.conn)
        rp_pool_put(pool, ok.conn);
    fx_close_and_free(loop, pool);
    close(listener);
}

Test(faults, probes_back_off_while_the_server_stays_down)
{
    int port = fx_closed_port();
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    uint64_t start = fail_fast_begins(port, &opts);
    while (fx_now_ms() - start < 1700)
        fx_run_for(loop, 10);
    /* 50, 150, 350, 750, 1550 ms: doubling from 50 ms, then every second. */
    cr_expect(probe_dials >= 4 && probe_dials <= 6, "%d probes in 1.7 s", probe_dials);
    cr_expect_eq(get_and_wait(1000).status, -ECONNREFUSED, "fail-fast ended with the server down");
    fx_close_and_free(loop, pool);
}

Test(faults, probe_pacing_is_configurable)
{
    int port = fx_closed_port();
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.probe_interval_ms = 20;
    opts.probe_interval_max_ms = 40;
    uint64_t start = fail_fast_begins(port, &opts);
    while (fx_now_ms() - start < 500)
        fx_run_for(loop, 5);
    /* 20, 60, then every 40 ms: about 12 in 500 ms (a noisy machine may lose a few). */
    cr_expect(probe_dials >= 7 && probe_dials <= 14, "%d probes in 500 ms", probe_dials);
    fx_close_and_free(loop, pool);
}

/* ------------------------------------------------------------- SIGPIPE */

/* With SIGPIPE at its default (the process dies), sends to a peer that is
 * gone end with an error in their callback: ringpool sends with
 * MSG_NOSIGNAL and never raises the signal. */
Test(faults, a_send_to_a_vanished_peer_fails_without_sigpipe)
{
    signal(SIGPIPE, SIG_DFL);
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(pp.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(pp.peer); /* RST */
    fx_run_for(loop, 20);
    /* The reset is reported once; the sends after it meet a shut socket
     * (-EPIPE, the case that raises SIGPIPE without MSG_NOSIGNAL). */
    ssize_t result = 0;
    for (int i = 0; i < 5 && result != -EPIPE; i++) {
        io_done d = {0};
        cr_assert_eq(rp_conn_send(conn, "x\r\n", 3, io_done_cb, &d), 0);
        cr_assert(fx_run_until(loop, &d.done, 3000));
        result = d.result;
    }
    cr_expect_eq(result, -EPIPE, "send: %s", rp_strerror((int)result));
    rp_pool_put(pool, conn); /* broken: removed */
    cr_expect_eq(rp_pool_len(pool), 0);
    fx_close_and_free(loop, pool);
    close(pp.listener);
}

/* ------------------------------------------------------- vectored sends */

/* A put with a vectored send in flight (to a peer that reads nothing)
 * removes the connection, and the send ends once with -ECANCELED, as a
 * plain send's does. */
Test(faults, put_with_a_sendv_in_flight_removes_it)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    size_t len = 64 << 20;
    char *big = calloc(1, len);
    struct iovec iov[2] = {{(void *)"head\r\n", 6}, {big, len}};
    io_done d = {0};
    cr_assert_eq(rp_conn_sendv(conn, iov, 2, io_done_cb, &d), 0);
    fx_run_for(loop, 20);
    cr_expect(!d.done, "64 MiB went out to a peer that reads nothing");
    rp_pool_put(pool, conn);
    cr_assert(fx_run_until(loop, &d.done, 3000));
    cr_expect_eq(d.result, -ECANCELED);
    cr_expect_eq(rp_pool_len(pool), 0);
    cr_expect_eq(close_reasons[RP_CLOSE_BROKEN], 1);
    free(big);
    fx_close_and_free(loop, pool);
    close(pp.peer);
    close(pp.listener);
}

/* ------------------------------------------------------ framed receives */

typedef struct frame_seen {
    int calls;
    ssize_t len;
    char frame[256];
} frame_seen;

static void frame_cb(rp_conn *conn, const char *frame, ssize_t len, void *data)
{
    (void)conn;
    frame_seen *s = data;
    s->calls++;
    s->len = len;
    memset(s->frame, 0, sizeof s->frame);
    if (frame && len > 0)
        memcpy(s->frame, frame, (size_t)len < sizeof s->frame ? (size_t)len : sizeof s->frame - 1);
}

static frame_seen line_now(rp_conn *conn)
{
    frame_seen s = {0};
    cr_assert_eq(rp_conn_recv_until(conn, "\r\n", 2, 64, frame_cb, &s), 0);
    cr_expect_eq(s.calls, 0, "the callback ran inside the call");
    cr_assert(fx_run_until_count(loop, &s.calls, 1, 3000), "no line came");
    return s;
}

Test(faults, lines_split_across_reads_and_several_in_one_read)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    frame_seen s = {0};
    cr_assert_eq(rp_conn_recv_until(conn, "\r\n", 2, 64, frame_cb, &s), 0);
    peer_write(pp.peer, "he");
    cr_expect_eq(s.calls, 0, "half a line was handed out");
    peer_write(pp.peer, "llo\r");
    peer_write(pp.peer, "\nwor");
    cr_assert(fx_run_until_count(loop, &s.calls, 1, 3000));
    cr_expect_eq(s.len, 7);
    cr_expect_str_eq(s.frame, "hello\r\n");
    peer_write(pp.peer, "ld\r\nthird\r\n");
    s = line_now(conn);
    cr_expect_str_eq(s.frame, "world\r\n");
    /* The third is buffered already: handed out with no read. */
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    s = line_now(conn);
    rp_loop_stats_get(loop, &after);
    cr_expect_str_eq(s.frame, "third\r\n");
    cr_expect_eq(after.sqes, before.sqes, "a buffered line cost a read");
    fx_run_for(loop, 5);
    cr_expect_eq(s.calls, 1);
    rp_pool_put(pool, conn);
    cr_expect_eq(stats().stale_conns, 0, "a connection read to its last line was removed");
    peer_pool_close(&pp, NULL, pp.peer);
}

Test(faults, a_message_past_max_len_is_emsgsize_and_breaks_the_connection)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    char big[100];
    memset(big, 'x', sizeof big);
    cr_assert_eq(write(pp.peer, big, sizeof big), (ssize_t)sizeof big);
    frame_seen s = {0};
    cr_assert_eq(rp_conn_recv_until(conn, "\r\n", 2, 64, frame_cb, &s), 0);
    cr_assert(fx_run_until_count(loop, &s.calls, 1, 3000));
    cr_expect_eq(s.len, -EMSGSIZE);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0, "a connection that lost its framing was kept");
    fx_close_and_free(loop, pool);
    close(pp.peer);
    close(pp.listener);
}

/* "N:payload": the frame function knows the length from the prefix. */
static ssize_t length_prefixed(const char *data, size_t len, void *arg)
{
    int *calls = arg;
    ++*calls;
    const char *colon = memchr(data, ':', len);
    if (!colon)
        return len > 8 ? -EPROTO : 0;
    long n = strtol(data, NULL, 10);
    return n > 0 ? (ssize_t)(colon - data + 1 + n) : -EPROTO;
}

Test(faults, a_frame_function_that_knows_the_length_reads_until_it_is_in)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    int fn_calls = 0;
    frame_seen s = {0};
    cr_assert_eq(rp_conn_recv_frame(conn, length_prefixed, &fn_calls, 0, frame_cb, &s), 0);
    peer_write(pp.peer, "11:hel");
    peer_write(pp.peer, "lo ");
    peer_write(pp.peer, "world9:");
    cr_assert(fx_run_until_count(loop, &s.calls, 1, 3000));
    cr_expect_eq(s.len, 14);
    cr_expect_str_eq(s.frame, "11:hello world");
    cr_expect_leq(fn_calls, 3, "the length was known, yet the function ran %d times", fn_calls);
    frame_seen next = {0}, bad = {0};
    cr_assert_eq(rp_conn_recv_frame(conn, length_prefixed, &fn_calls, 0, frame_cb, &next), 0);
    peer_write(pp.peer, "abcdefghi"); /* after the "9:" the first read left */
    cr_assert(fx_run_until_count(loop, &next.calls, 1, 3000));
    cr_expect_str_eq(next.frame, "9:abcdefghi");
    cr_assert_eq(rp_conn_recv_frame(conn, length_prefixed, &fn_calls, 0, frame_cb, &bad), 0);
    peer_write(pp.peer, "oops");
    peer_write(pp.peer, "xxxxxxxx");
    cr_assert(fx_run_until_count(loop, &bad.calls, 1, 3000));
    cr_expect_eq(bad.len, -EPROTO, "the frame function's error: %zd", bad.len);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0, "a connection whose framing failed was kept");
    peer_pool_close(&pp, NULL, pp.peer);
}

Test(faults, end_of_stream_inside_a_message_is_eeof)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    peer_write(pp.peer, "half a li");
    shutdown(pp.peer, SHUT_WR);
    frame_seen s = {0};
    cr_assert_eq(rp_conn_recv_until(conn, "\r\n", 2, 0, frame_cb, &s), 0);
    cr_assert(fx_run_until_count(loop, &s.calls, 1, 3000));
    cr_expect_eq(s.len, RP_EEOF);
    peer_pool_close(&pp, conn, pp.peer);
}

Test(faults, a_line_left_in_the_buffer_never_reaches_the_next_holder)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp), *next;
    peer_write(pp.peer, "one\r\ntwo\r\n");
    frame_seen s = line_now(conn);
    cr_expect_str_eq(s.frame, "one\r\n");
    int peer = put_and_get_again_at_once(&pp, conn, &next);
    cr_expect_eq(stats().stale_conns, 1, "a connection with a line buffered was kept");
    peer_pool_close(&pp, next, peer);
}

Test(faults, framed_receives_refuse_what_they_cannot_do)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    frame_seen s = {0};
    char buf[8];
    io_done d = {0};
    cr_expect_eq(rp_conn_recv_until(NULL, "\n", 1, 0, frame_cb, &s), -EINVAL);
    cr_expect_eq(rp_conn_recv_until(conn, "", 0, 0, frame_cb, &s), -EINVAL);
    cr_expect_eq(rp_conn_recv_until(conn, "\n", 1, 0, NULL, &s), -EINVAL);
    cr_expect_eq(rp_conn_recv_frame(conn, NULL, NULL, 0, frame_cb, &s), -EINVAL);
    cr_expect_eq(rp_conn_recv_until(conn, "0123456789abcdef0123456789abcdef!", 33, 0, frame_cb, &s), -EINVAL);
    cr_assert_eq(rp_conn_recv(conn, buf, sizeof buf, io_done_cb, &d), 0);
    cr_expect_eq(rp_conn_recv_until(conn, "\n", 1, 0, frame_cb, &s), -EBUSY, "beside a recv");
    peer_write(pp.peer, "x");
    cr_assert(fx_run_until(loop, &d.done, 3000));
    cr_assert_eq(rp_conn_recv_until(conn, "\n", 1, 0, frame_cb, &s), 0);
    cr_expect_eq(rp_conn_recv_until(conn, "\n", 1, 0, frame_cb, &s), -EBUSY, "a second one");
    rp_pool_put(pool, conn); /* with a receive under way: removed */
    cr_assert(fx_run_until_count(loop, &s.calls, 1, 3000));
    cr_expect_eq(s.len, -ECANCELED);
    fx_run_for(loop, 5);
    cr_expect_eq(s.calls, 1);
    cr_expect_eq(rp_pool_len(pool), 0);
    fx_close_and_free(loop, pool);
    close(pp.peer);
    close(pp.listener);
}

static char *long_frame_copy;
typedef struct long_seen {
    int calls;
    ssize_t len;
} long_seen;
static void frame_cb_long(rp_conn *conn, const char *frame, ssize_t len, void *data)
{
    (void)conn;
    long_seen *s = data;
    s->calls++;
    s->len = len;
    if (len > 0) {
        long_frame_copy = malloc((size_t)len);
        memcpy(long_frame_copy, frame, (size_t)len);
    }
}

Test(faults, a_long_line_grows_the_buffer_and_the_next_fits_again)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    size_t len = 300 * 1024;
    char *line = malloc(len);
    for (size_t i = 0; i < len - 2; i++)
        line[i] = (char)('a' + i % 26);
    memcpy(line + len - 2, "\r\n", 2);
    long_seen seen = {0};
    cr_assert_eq(rp_conn_recv_until(conn, "\r\n", 2, 0, frame_cb_long, &seen), 0);
    for (size_t off = 0; off < len; off += 64 * 1024) {
        size_t n = len - off < 64 * 1024 ? len - off : 64 * 1024;
        cr_assert_eq(write(pp.peer, line + off, n), (ssize_t)n);
        fx_run_for(loop, 2);
    }
    cr_assert(fx_run_until_count(loop, &seen.calls, 1, 3000));
    cr_expect_eq(seen.len, (ssize_t)len);
    cr_expect(memcmp(long_frame_copy, line, len) == 0, "the long line came back changed");
    peer_write(pp.peer, "short\r\n");
    frame_seen s = line_now(conn);
    cr_expect_str_eq(s.frame, "short\r\n");
    free(line);
    free(long_frame_copy);
    long_frame_copy = NULL;
    peer_pool_close(&pp, conn, pp.peer);
}

/* ---------------------------------------------------------- round trips */

static ssize_t one_line(const char *data, size_t len, void *arg)
{
    (void)arg;
    const char *eol = memmem(data, len, "\r\n", 2);
    return eol ? eol - data + 2 : 0;
}

/* The peer's side: answers each "ping\r\n" with "pong\r\n" until EOF. */
static void *pong_peer(void *arg)
{
    int fd = *(int *)arg;
    char buf[6];
    size_t have = 0;
    ssize_t n;
    while ((n = read(fd, buf + have, sizeof buf - have)) > 0) {
        have += (size_t)n;
        if (have == sizeof buf) {
            have = 0;
            if (write(fd, "pong\r\n", 6) != 6)
                break;
        }
    }
    return NULL;
}

typedef struct pinger {
    rp_conn *conn;
    int want, answered, bad;
    ssize_t error;
} pinger;

static void ponged(rp_conn *conn, const char *frame, ssize_t len, void *data)
{
    (void)conn;
    pinger *p = data;
    if (len < 0) {
        p->error = len;
        return;
    }
    p->answered++;
    p->bad += len != 6 || memcmp(frame, "pong\r\n", 6) != 0;
    struct iovec iov = {(void *)"ping\r\n", 6};
    /* The next one from inside this callback: the buffer it reads into
     * is the one this frame is in. */
    if (p->answered < p->want)
        p->bad += rp_conn_roundtrip(p->conn, &iov, 1, one_line, NULL, 64, ponged, p) != 0;
}

/* The reply's recv rides behind the request's send: the loop wakes once
 * per round trip, not once for the send and again for the reply. */
Test(faults, a_round_trip_wakes_the_loop_once)
{
    peer_pool pp;
    pinger p = {.conn = peer_pool_open(&pp), .want = 200};
    pthread_t peer;
    cr_assert_eq(pthread_create(&peer, NULL, pong_peer, &pp.peer), 0);
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    struct iovec iov = {(void *)"ping\r\n", 6};
    cr_assert_eq(rp_conn_roundtrip(p.conn, &iov, 1, one_line, NULL, 64, ponged, &p), 0);
    cr_expect_eq(p.answered, 0, "the callback ran inside the call");
    rp_loop_run(loop, RP_RUN_DEFAULT); /* alive while a reply is owed */
    rp_loop_stats_get(loop, &after);
    cr_expect_eq(p.answered, p.want, "answered %d of %d (error %zd)", p.answered, p.want, p.error);
    cr_expect_eq(p.bad, 0);
    uint64_t iterations = after.iterations - before.iterations;
    cr_expect_leq(iterations, (uint64_t)p.want + p.want / 4, "%llu loop iterations for %d round trips",
                  (unsigned long long)iterations, p.want);
    rp_pool_put(pool, p.conn);
    cr_expect_eq(stats().stale_conns, 0);
    shutdown(pp.peer, SHUT_RDWR);
    pthread_join(peer, NULL);
    peer_pool_close(&pp, NULL, pp.peer);
}

static frame_seen round_trip_and_wait(rp_conn *conn, const struct iovec *iov, int iovcnt, unsigned timeout_ms)
{
    frame_seen s = {0};
    cr_assert_eq(rp_conn_roundtrip(conn, iov, iovcnt, one_line, NULL, 64, frame_cb, &s), 0);
    cr_expect_eq(s.calls, 0, "the callback ran inside the call");
    cr_assert(fx_run_until_count(loop, &s.calls, 1, timeout_ms), "the round trip never ended");
    fx_run_for(loop, 20);
    cr_expect_eq(s.calls, 1, "the callback ran %d times", s.calls);
    return s;
}

/* A request that fails to go out ends the round trip with the send's
 * error, at once: no reply can come to it. */
Test(faults, a_round_trip_whose_send_fails_ends_with_the_sends_error)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(pp.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(pp.peer); /* RST */
    fx_run_for(loop, 20);
    struct iovec iov = {(void *)"ping\r\n", 6};
    frame_seen s = round_trip_and_wait(conn, &iov, 1, 3000);
    cr_expect(s.len == -ECONNRESET || s.len == -EPIPE, "ended with %s", rp_strerror((int)s.len));
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0, "a connection whose send failed was kept");
    fx_close_and_free(loop, pool);
    close(pp.listener);
}

typedef struct slow_reader {
    int fd;
    size_t want, got;
} slow_reader;

/* Reads every byte of a request, in small bites, then answers it. */
static void *slow_reader_run(void *arg)
{
    slow_reader *r = arg;
    char buf[4096];
    ssize_t n;
    while (r->got < r->want && (n = read(r->fd, buf, sizeof buf)) > 0)
        r->got += (size_t)n;
    if (write(r->fd, "done\r\n", 6) != 6)
        r->got = 0;
    return NULL;
}

/* A request far larger than the socket buffers goes out in many writes;
 * its reply still comes to the same callback, once. */
Test(faults, a_round_trip_larger_than_the_socket_buffers_gets_its_reply)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    size_t len = 8 << 20;
    char *big = malloc(len);
    memset(big, 'v', len);
    struct iovec iov[2] = {{(void *)"big\r\n", 5}, {big, len}};
    slow_reader r = {.fd = pp.peer, .want = len + 5};
    pthread_t reader;
    cr_assert_eq(pthread_create(&reader, NULL, slow_reader_run, &r), 0);
    frame_seen s = round_trip_and_wait(conn, iov, 2, 10000);
    pthread_join(reader, NULL);
    cr_expect_eq(r.got, len + 5);
    cr_expect_str_eq(s.frame, "done\r\n");
    free(big);
    peer_pool_close(&pp, conn, pp.peer);
}

/* A peer that reads nothing: the request never goes out whole, and the
 * round trip ends once with -ETIMEDOUT after read_timeout_ms (the reply's
 * deadline also bounds the request it waits behind). */
Test(faults, a_round_trip_to_a_peer_that_reads_nothing_times_out)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open_timeout(&pp, 200);
    size_t len = 64 << 20;
    char *big = calloc(1, len);
    struct iovec iov = {big, len};
    uint64_t t0 = fx_now_ms();
    frame_seen s = round_trip_and_wait(conn, &iov, 1, 5000);
    uint64_t took = fx_now_ms() - t0;
    cr_expect_eq(s.len, -ETIMEDOUT, "ended with %s", rp_strerror((int)s.len));
    cr_expect(took >= 190 && took < 3000, "timed out after %llu ms", (unsigned long long)took);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0);
    free(big);
    peer_pool_close(&pp, NULL, pp.peer);
}

/* Removing the connection while its request is stuck ends the round trip
 * once, with -ECANCELED, and frees everything (ASan). */
Test(faults, removing_a_connection_under_a_round_trip_ends_it_once)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    size_t len = 64 << 20;
    char *big = calloc(1, len);
    struct iovec iov = {big, len};
    frame_seen s = {0};
    cr_assert_eq(rp_conn_roundtrip(conn, &iov, 1, one_line, NULL, 64, frame_cb, &s), 0);
    fx_run_for(loop, 20);
    cr_expect_eq(s.calls, 0, "64 MiB went out to a peer that reads nothing");
    rp_pool_remove(pool, conn, -ECANCELED);
    cr_assert(fx_run_until_count(loop, &s.calls, 1, 3000));
    fx_run_for(loop, 20);
    cr_expect_eq(s.calls, 1);
    cr_expect_eq(s.len, -ECANCELED, "ended with %s", rp_strerror((int)s.len));
    cr_expect_eq(rp_pool_len(pool), 0);
    free(big);
    peer_pool_close(&pp, NULL, pp.peer);
}

/* Only a round trip links: a send's callback never waits for a reply, so
 * a request sent in pieces, with its reply's recv armed after the first
 * piece, goes on. */
Test(faults, a_send_completes_before_the_reply_of_a_recv_armed_after_it)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    io_done sent = {0}, got = {0};
    char buf[16] = {0};
    cr_assert_eq(rp_conn_send(conn, "head ", 5, io_done_cb, &sent), 0);
    cr_assert_eq(rp_conn_recv(conn, buf, sizeof buf - 1, io_done_cb, &got), 0);
    cr_assert(fx_run_until(loop, &sent.done, 3000), "the send waited for a reply");
    cr_expect_eq(sent.result, 5);
    cr_expect(!got.done);
    cr_assert_eq(send_sync(conn, "body\r\n"), 6);
    peer_write(pp.peer, "ok\r\n");
    cr_assert(fx_run_until(loop, &got.done, 3000));
    cr_expect_str_eq(buf, "ok\r\n");
    peer_pool_close(&pp, conn, pp.peer);
}

/* Replies that came together: the first ends the round trip, the second
 * waits in the buffer for the next receive, which reads nothing. */
Test(faults, pipelined_requests_get_their_replies_in_order)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    struct iovec iov[2] = {{(void *)"a\r\n", 3}, {(void *)"b\r\n", 3}};
    frame_seen s = {0};
    cr_assert_eq(write(pp.peer, "", 0), 0);
    cr_assert_eq(rp_conn_roundtrip(conn, iov, 2, one_line, NULL, 64, frame_cb, &s), 0);
    fx_run_for(loop, 20);
    char req[8] = {0};
    cr_expect_eq(read(pp.peer, req, sizeof req - 1), 6);
    cr_expect_str_eq(req, "a\r\nb\r\n");
    peer_write(pp.peer, "A\r\nB\r\n");
    cr_assert(fx_run_until_count(loop, &s.calls, 1, 3000));
    cr_expect_str_eq(s.frame, "A\r\n");
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    s = line_now(conn);
    rp_loop_stats_get(loop, &after);
    cr_expect_str_eq(s.frame, "B\r\n");
    cr_expect_eq(after.sqes, before.sqes, "a buffered reply cost a read");
    peer_pool_close(&pp, conn, pp.peer);
}

Test(faults, round_trips_refuse_what_they_cannot_do)
{
    peer_pool pp;
    rp_conn *conn = peer_pool_open(&pp);
    struct iovec iov = {(void *)"x\r\n", 3};
    frame_seen s = {0};
    char buf[8];
    io_done d = {0};
    cr_expect_eq(rp_conn_roundtrip(NULL, &iov, 1, one_line, NULL, 0, frame_cb, &s), -EINVAL);
    cr_expect_eq(rp_conn_roundtrip(conn, &iov, 1, NULL, NULL, 0, frame_cb, &s), -EINVAL);
    cr_expect_eq(rp_conn_roundtrip(conn, &iov, 1, one_line, NULL, 0, NULL, &s), -EINVAL);
    cr_expect_eq(rp_conn_roundtrip(conn, NULL, 1, one_line, NULL, 0, frame_cb, &s), -EINVAL);
    cr_expect_eq(rp_conn_roundtrip(conn, &iov, 0, one_line, NULL, 0, frame_cb, &s), -EINVAL);
    cr_assert_eq(rp_conn_recv(conn, buf, sizeof buf, io_done_cb, &d), 0);
    cr_expect_eq(rp_conn_roundtrip(conn, &iov, 1, one_line, NULL, 0, frame_cb, &s), -EBUSY, "beside a recv");
    peer_write(pp.peer, "x");
    cr_assert(fx_run_until(loop, &d.done, 3000));
    d.done = false;
    cr_assert_eq(rp_conn_send(conn, "y", 1, io_done_cb, &d), 0);
    cr_expect_eq(rp_conn_roundtrip(conn, &iov, 1, one_line, NULL, 0, frame_cb, &s), -EBUSY, "beside a send");
    cr_assert(fx_run_until(loop, &d.done, 3000));
    char got[8] = {0};
    cr_expect_eq(read(pp.peer, got, sizeof got - 1), 1, "a refused round trip sent something: %s", got);
    fx_run_for(loop, 5);
    cr_expect_eq(s.calls, 0, "a refused call ran its callback");
    peer_pool_close(&pp, conn, pp.peer);
}
