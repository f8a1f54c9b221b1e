/* Embedding without pokes: rp_loop_timeout, the host wake hook, a host
 * that drives NOWAIT runs at no syscall per turn, and rp_timer. */
#include "fixture.h"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

TestSuite(embed, .init = fx_setup, .fini = fx_teardown);

static rp_loop *loop;

#define TEST_MIN(a, b) ((a) < (b) ? (a) : (b))

static void count_timer(rp_timer *timer, void *data)
{
    (void)timer;
    (*(int *)data)++;
}

Test(embed, timeout_is_minus_one_when_idle_zero_when_ready_and_the_timer_distance)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_expect_eq(rp_loop_timeout(NULL), -EINVAL);
    cr_expect_eq(rp_loop_timeout(loop), -1);

    rp_timer *timer;
    int fired = 0;
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    cr_assert_eq(rp_timer_start(timer, count_timer, &fired, 3000, 0), 0);
    cr_expect_eq(rp_loop_timeout(loop), 0, "the kernel timeout's SQE waits to be submitted");
    rp_loop_run(loop, RP_RUN_NOWAIT);
    int t = rp_loop_timeout(loop);
    cr_expect(t > 2900 && t <= 3000, "3 s timer: timeout %d ms", t);

    /* A ready callback queued from outside a run: 0. */
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    rp_conn *conn = fx_get_conn(loop, pool);
    rp_pool_put(pool, conn);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_expect_eq(rp_loop_timeout(loop), 0);
    cr_expect_eq(got.calls, 0, "never inside the call that asked");
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(got.calls, 1);
    rp_pool_put(pool, got.conn);

    rp_timer_free(timer);
    cr_expect_eq(fired, 0);
    fx_close_and_free(loop, pool);
}

static void count_io(rp_conn *conn, ssize_t result, void *data)
{
    (void)conn;
    (void)result;
    (*(int *)data)++;
}

Test(embed, timeout_is_zero_while_a_completion_waits)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    rp_conn *conn = fx_get_conn(loop, pool);
    static const char ping[] = "PING\r\n";
    char reply[16];
    int sent = 0, received = 0;
    cr_assert_eq(rp_conn_send(conn, ping, sizeof ping - 1, count_io, &sent), 0);
    cr_assert_eq(rp_conn_recv(conn, reply, sizeof reply, count_io, &received), 0);
    cr_expect_eq(rp_loop_timeout(loop), 0, "SQEs wait to be submitted");
    rp_loop_run(loop, RP_RUN_NOWAIT);
    /* The reply arrives while the loop is not running. */
    uint64_t deadline = fx_now_ms() + 2000;
    while (received == 0 && rp_loop_timeout(loop) != 0 && fx_now_ms() < deadline)
        usleep(100);
    cr_expect_eq(rp_loop_timeout(loop), 0, "a completion must show as ready work");
    cr_assert(fx_run_until_count(loop, &received, 1, 2000));
    cr_expect_eq(sent, 1);
    cr_expect_eq(rp_loop_timeout(loop), -1, "nothing left: only the fd can bring work");
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

/* The test's loop with rp_loop_fd in a host epoll set (*epfd), and a pool
 * of one connection on it. */
static rp_pool *open_embedded(int *epfd)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    *epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    cr_assert_eq(epoll_ctl(*epfd, EPOLL_CTL_ADD, rp_loop_fd(loop), &ev), 0);
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    return pool;
}

/* A host that asks rp_loop_timeout before each sleep, as a libuv host does. */
typedef struct chain {
    rp_pool *pool;
    long remaining;
    int failed;
} chain;

static void chain_next(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    chain *c = data;
    if (status) {
        c->failed = status;
        return;
    }
    rp_pool_put(pool, conn);
    if (--c->remaining > 0 && rp_pool_get(pool, chain_next, c) < 0)
        c->failed = 1;
}

static void host_turns(int epfd, const long *remaining, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    while (*remaining > 0 && fx_now_ms() < deadline) {
        int t = rp_loop_timeout(loop);
        struct epoll_event ev;
        if (t != 0)
            epoll_wait(epfd, &ev, 1, t < 0 || t > 100 ? 100 : t);
        rp_loop_run(loop, RP_RUN_NOWAIT);
    }
}

Test(embed, a_chained_get_costs_no_syscall_when_the_host_asks_the_timeout)
{
    int epfd;
    rp_pool *pool = open_embedded(&epfd);
    rp_pool_put(pool, fx_get_conn(loop, pool));

    chain c = {.pool = pool, .remaining = 2};
    cr_assert_gt(rp_pool_get(pool, chain_next, &c), 0);
    host_turns(epfd, &c.remaining, 2000); /* settles the fd */
    c.remaining = 10000;
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    cr_assert_gt(rp_pool_get(pool, chain_next, &c), 0);
    host_turns(epfd, &c.remaining, 5000);
    rp_loop_stats_get(loop, &after);
    cr_expect_eq(c.remaining, 0);
    cr_expect_eq(c.failed, 0);
    cr_expect_leq(after.syscalls - before.syscalls, 2, "%lu syscalls for 10000 chained gets",
                  (unsigned long)(after.syscalls - before.syscalls));
    close(epfd);
    fx_close_and_free(loop, pool);
}

/* A host that only watches the fd still sees work queued outside a run. */
Test(embed, a_host_that_only_watches_the_fd_is_still_woken)
{
    int epfd;
    rp_pool *pool = open_embedded(&epfd);
    struct epoll_event ev;
    chain c = {.pool = pool, .remaining = 1000};
    cr_assert_gt(rp_pool_get(pool, chain_next, &c), 0);
    uint64_t deadline = fx_now_ms() + 5000;
    int idle_wakes = 0;
    while (fx_now_ms() < deadline && idle_wakes < 3) {
        if (epoll_wait(epfd, &ev, 1, c.remaining > 0 ? 2000 : 100) > 0)
            rp_loop_run(loop, RP_RUN_NOWAIT);
        else if (c.remaining == 0)
            idle_wakes++;
    }
    cr_expect_eq(c.remaining, 0, "the chain stalled with %ld gets to go", c.remaining);
    /* Once idle, the fd is drained: no busy loop. */
    cr_expect_eq(epoll_wait(epfd, &ev, 1, 0), 0, "the fd stays readable with nothing to do");
    close(epfd);
    fx_close_and_free(loop, pool);
}

/* A host that runs the loop on every turn of its own, for its own fds'
 * sake, pays nothing for runs that find nothing. */
Test(embed, runs_that_find_nothing_cost_no_syscall)
{
    int epfd;
    rp_pool *pool = open_embedded(&epfd);
    struct epoll_event ev;
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_assert(fx_ping(loop, conn));
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    for (int i = 0; i < 1000; i++)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    rp_loop_stats_get(loop, &after);
    cr_expect_leq(after.syscalls - before.syscalls, 1, "%lu syscalls for 1000 empty runs",
                  (unsigned long)(after.syscalls - before.syscalls));
    cr_expect_eq(epoll_wait(epfd, &ev, 1, 0), 0, "the fd stays readable with nothing to do");
    rp_pool_put(pool, conn);
    close(epfd);
    fx_close_and_free(loop, pool);
}

static int wakes;
static void count_wake(void *host) { (*(int *)host)++; }

Test(embed, the_wake_hook_replaces_the_poke_and_holds_the_loop)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_expect_eq(rp_loop_set_host(loop, NULL, &wakes), -EINVAL);
    cr_assert_eq(rp_loop_set_host(loop, count_wake, &wakes), 0);
    cr_expect_eq(rp_loop_set_host(loop, count_wake, &wakes), -EBUSY);
    cr_expect_eq(rp_loop_host(loop), &wakes);
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    rp_loop_run(loop, RP_RUN_NOWAIT);

    wakes = 0;
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_expect_eq(wakes, 1, "a get from the host's handler wakes the host");
    fx_got second = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &second), 0);
    cr_expect_eq(wakes, 1, "one wake until the next run");
    rp_loop_run(loop, RP_RUN_NOWAIT);
    rp_loop_stats_get(loop, &after);
    cr_expect_eq(got.calls, 1);
    cr_expect_eq(after.syscalls, before.syscalls);
    rp_pool_put(pool, got.conn);
    cr_assert(fx_run_until_count(loop, &second.calls, 1, 1000));
    rp_pool_put(pool, second.conn);

    cr_expect_eq(rp_loop_free(loop), -EBUSY, "a host is attached");
    cr_expect_eq(rp_loop_set_host(loop, NULL, NULL), 0);
    cr_expect_eq(rp_loop_host(loop), NULL);
    fx_close_and_free(loop, pool);
}

/* ---------------------------------------------------------------- timers */

typedef struct ticks {
    int count;
    int stop_after;
    uint64_t at_ms[8];
    bool free_in_callback;
} ticks;

static void tick(rp_timer *timer, void *data)
{
    ticks *t = data;
    if (t->count < 8)
        t->at_ms[t->count] = fx_now_ms();
    t->count++;
    if (t->free_in_callback)
        rp_timer_free(timer);
    else if (t->count == t->stop_after)
        rp_timer_stop(timer);
}

Test(embed, a_timer_fires_once_on_time_and_keeps_the_loop_running)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_timer *timer;
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    ticks t = {0};
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_timer_start(timer, tick, &t, 50, 0), 0);
    cr_expect(rp_timer_active(timer));
    cr_expect_eq(rp_loop_free(loop), -EBUSY, "a timer holds the loop");
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(t.count, 1);
    cr_expect(t.at_ms[0] - start >= 50 && t.at_ms[0] - start < 1000, "fired after %lu ms",
              (unsigned long)(t.at_ms[0] - start));
    cr_expect(!rp_timer_active(timer));
    rp_timer_free(timer);
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(embed, a_repeating_timer_repeats_until_stopped)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_timer *timer;
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    ticks t = {.stop_after = 4};
    cr_assert_eq(rp_timer_start(timer, tick, &t, 10, 20), 0);
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(t.count, 4);
    for (int i = 1; i < 4; i++)
        cr_expect_geq(t.at_ms[i] - t.at_ms[i - 1], 19, "repeat %d came after %lu ms", i,
                      (unsigned long)(t.at_ms[i] - t.at_ms[i - 1]));
    rp_timer_free(timer);
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(embed, stop_again_and_free_in_the_callback)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_timer *timer;
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    cr_expect_eq(rp_timer_again(timer), -EINVAL, "never started");
    cr_expect_eq(rp_timer_start(timer, NULL, NULL, 1, 0), -EINVAL);
    cr_expect_eq(rp_timer_new(NULL, loop), -EINVAL);

    ticks t = {0};
    cr_assert_eq(rp_timer_start(timer, tick, &t, 10, 0), 0);
    cr_assert_eq(rp_timer_stop(timer), 0);
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0, "a stopped timer holds nothing");
    cr_expect_eq(t.count, 0);

    /* again restarts a repeating timer from now. */
    cr_assert_eq(rp_timer_start(timer, tick, &t, 5000, 30), 0);
    cr_assert_eq(rp_timer_again(timer), 0);
    t.free_in_callback = true;
    uint64_t start = fx_now_ms();
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(t.count, 1);
    cr_expect_lt(fx_now_ms() - start, 2000, "again used the repeat, not the 5 s timeout");
    cr_expect_eq(rp_loop_free(loop), 0, "the callback freed its timer");
}

/* A callback that restarts its timer at 0 ms must not spin the pass. */
static void restart_now(rp_timer *timer, void *data)
{
    if (++*(int *)data < 1000)
        rp_timer_start(timer, restart_now, data, 0, 0);
}

Test(embed, a_zero_timer_restarted_in_its_callback_waits_for_the_next_iteration)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_timer *timer;
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    int count = 0;
    cr_assert_eq(rp_timer_start(timer, restart_now, &count, 0, 0), 0);
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(count, 1, "one pass fired it %d times", count);
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(count, 1000);
    rp_timer_free(timer);
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* A loop whose last timer is gone still has that timer's kernel timeout in
 * flight: asking for the fd then must not move the loop to a new ring, or
 * the timeout would vanish with the old one and no later timer would ever
 * wake the loop (a blocking run, or a host watching the fd). */
Test(embed, a_timer_after_the_fd_was_asked_for_still_wakes_the_loop)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_timer *timer;
    int fired = 0;
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    cr_assert_eq(rp_timer_start(timer, count_timer, &fired, 10000, 0), 0);
    rp_loop_run(loop, RP_RUN_NOWAIT); /* submits the kernel timeout */
    rp_timer_free(timer);
    cr_assert_geq(rp_loop_fd(loop), 0);
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    cr_assert_eq(rp_timer_start(timer, count_timer, &fired, 20, 0), 0);
    rp_loop_run(loop, RP_RUN_NOWAIT);
    struct pollfd p = {.fd = rp_loop_fd(loop), .events = POLLIN};
    cr_expect_eq(poll(&p, 1, 2000), 1, "the fd never signalled the due timer");
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(fired, 1);
    rp_timer_free(timer);
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* After an adapter detaches, a host that only watches the fd is poked
 * again for work queued outside a run. */
static void no_wake(void *host) { (void)host; }

Test(embed, a_detached_adapter_leaves_the_fd_to_a_host_that_only_watches_it)
{
    int epfd;
    rp_pool *pool = open_embedded(&epfd);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    cr_assert_eq(rp_loop_set_host(loop, no_wake, NULL), 0);
    rp_loop_timeout(loop); /* as an adapter does */
    cr_assert_eq(rp_loop_set_host(loop, NULL, NULL), 0);
    rp_loop_run(loop, RP_RUN_NOWAIT);
    struct epoll_event ev;
    while (epoll_wait(epfd, &ev, 1, 0) > 0)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_expect_eq(epoll_wait(epfd, &ev, 1, 1000), 1, "a get from the host's handler did not wake it");
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(got.calls, 1);
    rp_pool_put(pool, got.conn);
    close(epfd);
    fx_close_and_free(loop, pool);
}

/* Timers due at the same moment fire in the order they were started, as
 * libuv's do; rp_timer_again starts its timer anew, so it goes last. */
static rp_timer *same_time[5];
static char fired_order[8];
static int fired_count;

static void record_order(rp_timer *timer, void *data)
{
    if (fired_count < 7)
        fired_order[fired_count++] = *(const char *)data;
    rp_timer_stop(timer); /* the repeating one */
}

static void start_five(rp_timer *timer, void *data)
{
    (void)timer;
    (void)data;
    static const char names[] = "ABCDE";
    /* A callback sees one cached time: the five deadlines are equal. */
    for (int i = 0; i < 5; i++)
        cr_assert_eq(rp_timer_start(same_time[i], record_order, (void *)&names[i], 20, i == 1 ? 20 : 0), 0);
    if (*(bool *)data)
        cr_assert_eq(rp_timer_again(same_time[1]), 0);
}

static void check_start_order(bool again, const char *want)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(rp_timer_new(&same_time[i], loop), 0);
    rp_timer *starter;
    cr_assert_eq(rp_timer_new(&starter, loop), 0);
    cr_assert_eq(rp_timer_start(starter, start_five, &again, 0, 0), 0);
    memset(fired_order, 0, sizeof fired_order);
    fired_count = 0;
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_str_eq(fired_order, want);
    rp_timer_free(starter);
    for (int i = 0; i < 5; i++)
        rp_timer_free(same_time[i]);
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(embed, timers_due_together_fire_in_start_order)
{
    check_start_order(false, "ABCDE");
    check_start_order(true, "ACDEB");
}

/* A host set after another one detached is woken like the first. */
static int wakes_second;

Test(embed, a_host_set_after_another_detached_is_woken)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    rp_conn *a = fx_get_conn(loop, pool), *b = fx_get_conn(loop, pool);
    rp_pool_put(pool, a);
    rp_pool_put(pool, b);
    rp_loop_run(loop, RP_RUN_NOWAIT);

    wakes = 0;
    cr_assert_eq(rp_loop_set_host(loop, count_wake, &wakes), 0);
    fx_got first = {0}, second = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &first), 0);
    cr_expect_eq(wakes, 1);
    /* Detached before it ran the loop; the next host must still hear. */
    cr_assert_eq(rp_loop_set_host(loop, NULL, NULL), 0);
    cr_assert_eq(rp_loop_set_host(loop, count_wake, &wakes_second), 0);
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &second), 0);
    cr_expect_eq(wakes_second, 1, "the second host was never woken");
    cr_expect_eq(wakes, 1);
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(first.calls, 1);
    cr_expect_eq(second.calls, 1);
    rp_pool_put(pool, first.conn);
    rp_pool_put(pool, second.conn);
    cr_assert_eq(rp_loop_set_host(loop, NULL, NULL), 0);
    fx_close_and_free(loop, pool);
}

/* The wake hook runs inside the call that queued the work, before that
 * call is done with it: it may only arrange a run, never run the loop
 * (a callback would run inside the call that made its request, and an
 * SQE the call took but had not filled yet would be submitted). */
static int run_in_wake_rc = 1;
static int run_in_wake_calls;

static void run_in_wake(void *host)
{
    (void)host;
    run_in_wake_calls++;
    run_in_wake_rc = rp_loop_run(loop, RP_RUN_NOWAIT);
}

Test(embed, a_wake_hook_cannot_run_the_loop)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_loop_set_host(loop, run_in_wake, NULL), 0);
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.pool_timeout_ms = 3000;
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0); /* a dial: a connect and its timeout */
    cr_expect_eq(got.calls, 0, "called back inside rp_pool_get");
    cr_expect_geq(run_in_wake_calls, 1);
    cr_expect_eq(run_in_wake_rc, -EBUSY, "the hook ran the loop: %d", run_in_wake_rc);
    cr_assert_eq(rp_loop_set_host(loop, NULL, NULL), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 5000));
    cr_expect_eq(got.status, 0, "the dial: %s", rp_strerror(got.status));
    cr_expect(got.conn && fx_ping(loop, got.conn));
    rp_pool_put(pool, got.conn);
    fx_close_and_free(loop, pool);
}

/* epoll_wait for one event, again after EINTR: a hosted ring's task work
 * may interrupt the wait on the way back to user space. */
static int wait_one(int epfd, struct epoll_event *ev, int timeout_ms)
{
    uint64_t deadline = fx_now_ms() + (uint64_t)timeout_ms;
    int n;
    do
        n = epoll_wait(epfd, ev, 1, (int)(deadline - TEST_MIN(deadline, fx_now_ms())));
    while (n < 0 && errno == EINTR);
    return n;
}

/* A host that only watches the fd, edge-triggered or reading the fd
 * itself, must still see every signal: the loop cannot know the fd still
 * holds its last one. */
static void fd_only_host_sees_every_get(uint32_t events, bool reads_fd)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    int fd = rp_loop_fd(loop);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = events};
    cr_assert_eq(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev), 0);
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    /* Gets and puts then touch no kernel op: only the loop's own signal
     * can wake the host. */
    opts.health_check_idle_ms = 600000;
    opts.conn_max_idle_time_ms = 0;
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    rp_pool_put(pool, fx_get_conn(loop, pool));
    uint64_t count;
    while (epoll_wait(epfd, &ev, 1, 50) > 0) {
        if (reads_fd)
            (void)!read(fd, &count, sizeof count);
        rp_loop_run(loop, RP_RUN_NOWAIT);
    }
    for (int i = 0; i < 20; i++) {
        fx_got got = {0};
        cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0); /* from the host's handler */
        for (int turn = 0; got.calls == 0 && turn < 10; turn++) {
            cr_assert_eq(wait_one(epfd, &ev, 1000), 1, "get %d: the host was never woken", i);
            if (reads_fd)
                (void)!read(fd, &count, sizeof count);
            rp_loop_run(loop, RP_RUN_NOWAIT);
        }
        cr_assert_eq(got.calls, 1);
        rp_pool_put(pool, got.conn);
    }
    close(epfd);
    fx_close_and_free(loop, pool);
}

Test(embed, an_edge_triggered_host_sees_every_signal) { fd_only_host_sees_every_get(EPOLLIN | EPOLLET, false); }
Test(embed, a_host_that_reads_the_fd_sees_every_signal) { fd_only_host_sees_every_get(EPOLLIN, true); }

/* A host that only watches the fd runs the loop when it fires, and stops
 * when rp_loop_run says nothing is pending. A handler of its own that
 * stops the only timer (3 s, at 20 ms) changes that: the fd must say so,
 * not the kernel timeout 3 s later. */
Test(embed, a_timer_stopped_by_a_handler_reaches_a_host_that_only_watches_the_fd)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    int fd = rp_loop_fd(loop);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    cr_assert_eq(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev), 0);
    ev.data.fd = tfd;
    cr_assert_eq(epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev), 0);
    rp_timer *timer;
    int fired = 0;
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    cr_assert_eq(rp_timer_start(timer, count_timer, &fired, 3000, 0), 0);
    int alive = rp_loop_run(loop, RP_RUN_NOWAIT);
    struct itimerspec at_20ms = {.it_value = {0, 20000000}};
    timerfd_settime(tfd, 0, &at_20ms, NULL);
    uint64_t start = fx_now_ms();
    while (alive > 0 && fx_now_ms() - start < 5000) {
        cr_assert_eq(wait_one(epfd, &ev, 5000), 1);
        if (ev.data.fd == tfd) {
            uint64_t expirations;
            cr_assert_eq(read(tfd, &expirations, sizeof expirations), (ssize_t)sizeof expirations);
            cr_assert_eq(rp_timer_stop(timer), 0); /* the host's own handler */
        } else {
            alive = rp_loop_run(loop, RP_RUN_NOWAIT);
        }
    }
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(alive, 0);
    cr_expect(took < 1000, "the host learnt after %lu ms that nothing is pending", (unsigned long)took);
    cr_expect_eq(fired, 0);
    rp_timer_free(timer);
    close(tfd);
    close(epfd);
    cr_expect_eq(rp_loop_free(loop), 0);
}
