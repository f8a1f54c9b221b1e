/* The loop: run modes, posts from other threads, stop, embedding through
 * rp_loop_fd in a host's epoll, and a full submission queue. */
#include "fixture.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

TestSuite(loop, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

static rp_loop *loop;

#define TEST_MIN(a, b) ((a) < (b) ? (a) : (b))

/* The test's loop, with a pool on it. */
static rp_pool *open_loop_and_pool(const rp_loop_options *loop_opts, const rp_pool_options *opts)
{
    cr_assert_eq(rp_loop_new(&loop, loop_opts), 0);
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, opts), 0);
    return pool;
}

Test(loop, default_run_returns_when_nothing_is_pending)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    uint64_t start = fx_now_ms();
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(rp_loop_run(loop, RP_RUN_ONCE), 0);
    cr_expect_eq(rp_loop_run(loop, RP_RUN_NOWAIT), 0);
    cr_expect_lt(fx_now_ms() - start, 100);
    cr_expect_eq(rp_loop_run(loop, (rp_run_mode)7), -EINVAL);
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(loop, bad_arguments_are_einval)
{
    cr_expect_eq(rp_loop_new(NULL, NULL), -EINVAL);
    cr_expect_eq(rp_loop_free(NULL), -EINVAL);
    cr_expect_eq(rp_loop_fd(NULL), -EINVAL);
    cr_expect_eq(rp_loop_post(NULL, NULL, NULL), -EINVAL);
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_expect_eq(rp_loop_post(loop, NULL, NULL), -EINVAL);
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(loop, strerror_names_every_code)
{
    cr_expect_str_eq(rp_strerror(RP_ECLOSED), "pool or loop closed");
    cr_expect_str_eq(rp_strerror(RP_EPOOLTIMEOUT), "timed out waiting for a free connection");
    cr_expect_str_eq(rp_strerror(RP_EPOOLEXHAUSTED), "max_active_conns reached");
    cr_expect_str_eq(rp_strerror(RP_EBADCONN), "connection went bad");
    cr_expect_str_eq(rp_strerror(-ECONNREFUSED), strerror(ECONNREFUSED));
    cr_expect_str_eq(rp_strerror(0), "success");
    cr_expect(RP_ECLOSED < -4096, "library codes must not collide with errno values");
}

Test(loop, free_is_ebusy_while_a_pool_is_open)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    rp_pool *pool = open_loop_and_pool(NULL, &opts);
    cr_expect_eq(rp_loop_free(loop), -EBUSY);
    fx_close_and_free(loop, pool);
}

/* A pool whose one connection is held, with a get waiting 10 s for it:
 * pending work that keeps the loop alive. */
typedef struct waiting_pool {
    rp_pool *pool;
    rp_conn *held;
    fx_got waiter;
} waiting_pool;

static void open_waiting_pool(waiting_pool *w)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.pool_timeout_ms = 10000;
    cr_assert_eq(rp_pool_new(&w->pool, loop, &opts), 0);
    w->held = fx_get_conn(loop, w->pool);
    cr_assert_gt(rp_pool_get(w->pool, fx_get_cb, &w->waiter), 0);
}

/* The held connection goes to the waiter; then everything closes. */
static void finish_waiting_pool(waiting_pool *w)
{
    rp_pool_put(w->pool, w->held);
    cr_assert(fx_run_until_count(loop, &w->waiter.calls, 1, 1000));
    rp_pool_put(w->pool, w->waiter.conn);
    fx_close_and_free(loop, w->pool);
}

static atomic_int posted_count;
static pthread_t loop_thread;
static atomic_bool wrong_thread;

static void count_post(void *arg)
{
    (void)arg;
    if (!pthread_equal(pthread_self(), loop_thread))
        atomic_store(&wrong_thread, true);
    atomic_fetch_add(&posted_count, 1);
}

static void *post_many(void *arg)
{
    for (int i = 0; i < 5000; i++)
        cr_assert_eq(rp_loop_post(arg, count_post, NULL), 0);
    return NULL;
}

static void *post_one(void *arg)
{
    cr_assert_eq(rp_loop_post(arg, count_post, NULL), 0);
    return NULL;
}

Test(loop, post_from_two_threads_runs_everything_on_the_loop_thread)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    loop_thread = pthread_self();
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, post_many, loop);
    uint64_t deadline = fx_now_ms() + 5000;
    while (atomic_load(&posted_count) < 10000 && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(atomic_load(&posted_count), 10000);
    cr_expect_not(atomic_load(&wrong_thread));
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(loop, posted_work_wakes_a_blocked_once_run)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    loop_thread = pthread_self();
    waiting_pool w = {0};
    open_waiting_pool(&w);
    pthread_t thread;
    pthread_create(&thread, NULL, post_many, loop);
    uint64_t start = fx_now_ms();
    while (atomic_load(&posted_count) < 5000 && fx_now_ms() - start < 5000)
        rp_loop_run(loop, RP_RUN_ONCE);
    pthread_join(thread, NULL);
    cr_expect_eq(atomic_load(&posted_count), 5000);
    cr_expect_lt(fx_now_ms() - start, 5000);
    finish_waiting_pool(&w);
}

/* Posted work is pending work: posted from another thread before the
 * run, it keeps RP_RUN_DEFAULT going until it ran, and rp_loop_alive says
 * 1 meanwhile. */
Test(loop, posted_work_keeps_a_default_run_going)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    loop_thread = pthread_self();
    for (int round = 0; round < 20; round++) {
        int before = atomic_load(&posted_count);
        pthread_t thread;
        pthread_create(&thread, NULL, post_one, loop);
        pthread_join(thread, NULL);
        cr_assert_eq(rp_loop_alive(loop), 1, "round %d: a queued post is not pending work", round);
        cr_assert_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
        cr_assert_eq(atomic_load(&posted_count), before + 1, "round %d: the run returned before the post ran", round);
        cr_assert_eq(rp_loop_alive(loop), 0);
    }
    cr_expect_eq(rp_loop_free(loop), 0);
}

static void *stop_later(void *arg)
{
    usleep(100000);
    rp_loop_stop(arg);
    return NULL;
}

static void check_stop_ends_a_default_run(const rp_loop_options *loop_opts)
{
    cr_assert_eq(rp_loop_new(&loop, loop_opts), 0);
    waiting_pool w = {0};
    open_waiting_pool(&w);
    pthread_t thread;
    pthread_create(&thread, NULL, stop_later, loop);
    uint64_t start = fx_now_ms();
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 1, "the waiter is still pending");
    uint64_t took = fx_now_ms() - start;
    pthread_join(thread, NULL);
    cr_expect(took >= 90 && took < 1000, "stopped after %lu ms", (unsigned long)took);
    cr_expect_eq(w.waiter.calls, 0);
    finish_waiting_pool(&w);
}

Test(loop, stop_from_another_thread_ends_a_default_run) { check_stop_ends_a_default_run(NULL); }

/* The spin watches the ring, so the stop's eventfd ends it at once. */
Test(loop, stop_ends_a_busy_poll)
{
    rp_loop_options opts = {.busy_poll_us = 5000000};
    check_stop_ends_a_default_run(&opts);
}

/* The fixture's helpers run NOWAIT, which never spins: these block. */
static void run_once_until(const int *count, int want)
{
    while (*count < want)
        rp_loop_run(loop, RP_RUN_ONCE);
}

static void count_ok(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    cr_expect_eq(status, 0);
    cr_expect(reply && reply->type == REDIS_REPLY_STATUS && !strcmp(reply->str, "OK"));
    ++*(int *)data;
}

/* Each reply is 5 ms away, so it can never complete inline with its send. */
static uint64_t busy_poll_hits_after_slow_replies(unsigned busy_poll_us)
{
    rp_loop_options loop_opts = {.busy_poll_us = busy_poll_us};
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    rp_pool *pool = open_loop_and_pool(&loop_opts, &opts);
    rp_conn *conn = fx_get_conn(loop, pool);
    const char *sleep_5ms[] = {"DEBUG", "SLEEP", "0.005"};
    int replies = 0;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(rp_conn_command(conn, count_ok, &replies, 3, sleep_5ms, NULL), 0);
        run_once_until(&replies, i + 1);
    }
    rp_pool_put(pool, conn);
    rp_loop_stats stats;
    rp_loop_stats_get(loop, &stats);
    fx_close_and_free(loop, pool);
    return stats.busy_poll_hits;
}

Test(loop, busy_poll_catches_replies_before_sleeping)
{
    cr_expect_eq(busy_poll_hits_after_slow_replies(0), 0);
    cr_expect_eq(busy_poll_hits_after_slow_replies(1000000), 5);
}

/* A spin longer than the pool timeout still ends when the timer is due. */
Test(loop, busy_poll_never_delays_a_timer)
{
    rp_loop_options loop_opts = {.busy_poll_us = 5000000};
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.pool_timeout_ms = 100;
    rp_pool *pool = open_loop_and_pool(&loop_opts, &opts);
    rp_conn *held = fx_get_conn(loop, pool);
    fx_got got = {0};
    uint64_t start = fx_now_ms();
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    run_once_until(&got.calls, 1);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(got.status, RP_EPOOLTIMEOUT);
    cr_expect(took >= 95 && took < 1000, "timed out after %lu ms", (unsigned long)took);
    rp_pool_put(pool, held);
    fx_close_and_free(loop, pool);
}

/* A host loop: epoll on rp_loop_fd, NOWAIT runs on each wake. */
static int host_wait_and_run(int epfd, const int *count, int want, unsigned timeout_ms, int *wakes)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    while (*count < want && fx_now_ms() < deadline) {
        struct epoll_event ev;
        int n = epoll_wait(epfd, &ev, 1, (int)(deadline - fx_now_ms()));
        if (n > 0) {
            (*wakes)++;
            rp_loop_run(loop, RP_RUN_NOWAIT);
        }
    }
    return *count;
}

Test(loop, embeds_in_a_host_epoll_loop)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    cr_assert_eq(epoll_ctl(epfd, EPOLL_CTL_ADD, rp_loop_fd(loop), &ev), 0);
    rp_pool *pool;
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.pool_timeout_ms = 150;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);

    /* A dial: the completion must wake the host. */
    fx_got first = {0};
    int wakes = 0;
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &first), 0);
    cr_assert_eq(host_wait_and_run(epfd, &first.calls, 1, 3000, &wakes), 1);
    cr_expect_eq(first.status, 0);

    /* A timer alone: the pool timeout must wake the host on time. */
    fx_got waiter = {0};
    wakes = 0;
    uint64_t start = fx_now_ms();
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &waiter), 0);
    cr_assert_eq(host_wait_and_run(epfd, &waiter.calls, 1, 3000, &wakes), 1);
    uint64_t waited = fx_now_ms() - start;
    cr_expect_eq(waiter.status, RP_EPOOLTIMEOUT);
    cr_expect(waited >= 150 && waited <= 250, "timer woke the host after %lu ms", (unsigned long)waited);
    cr_expect_leq(wakes, 5, "the host woke %d times: the fd is spinning", wakes);

    /* A ready result from outside the loop: delivered after a wake. */
    rp_pool_put(pool, first.conn);
    fx_got hit = {0};
    wakes = 0;
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &hit), 0);
    cr_assert_eq(host_wait_and_run(epfd, &hit.calls, 1, 1000, &wakes), 1);
    cr_expect_eq(hit.conn, first.conn);
    rp_pool_put(pool, hit.conn);

    close(epfd);
    fx_close_and_free(loop, pool);
}

Test(loop, a_full_submission_queue_drops_nothing)
{
    rp_loop_options lopts = {.entries = 4};
    rp_pool_options opts;
    fx_pool_options(&opts, 40);
    rp_pool *pool = open_loop_and_pool(&lopts, &opts);
    fx_got got[40] = {0};
    int done = 0;
    for (int i = 0; i < 40; i++)
        cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got[i]), 0);
    uint64_t deadline = fx_now_ms() + 5000;
    while (done < 40 && fx_now_ms() < deadline) {
        rp_loop_run(loop, RP_RUN_ONCE);
        done = 0;
        for (int i = 0; i < 40; i++)
            done += got[i].calls;
    }
    cr_expect_eq(done, 40);
    for (int i = 0; i < 40; i++) {
        cr_expect_eq(got[i].status, 0);
        if (got[i].conn)
            rp_pool_put(pool, got[i].conn);
    }
    cr_expect_eq(rp_pool_len(pool), 40);
    fx_close_and_free(loop, pool);
}

Test(loop, stats_count_kernel_work_and_a_reused_connection_costs_none)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    rp_pool *pool = open_loop_and_pool(NULL, &opts);
    rp_pool_put(pool, fx_get_conn(loop, pool)); /* a dial: SQEs and enters */
    fx_run_for(loop, 20);                        /* its last task work */
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    cr_expect_gt(before.sqes, 0);
    cr_expect_gt(before.enters, 0);
    cr_expect_geq(before.syscalls, before.enters + 1, "socket() was not counted");
    for (int i = 0; i < 100; i++)
        rp_pool_put(pool, fx_get_conn(loop, pool));
    rp_loop_stats_get(loop, &after);
    cr_expect_eq(after.sqes, before.sqes, "a get+put within the health window prepared an SQE");
    cr_expect_eq(after.syscalls, before.syscalls, "a get+put within the health window made a syscall");
    cr_expect_gt(after.iterations, before.iterations);
    fx_close_and_free(loop, pool);
}

/* A connect and its linked timeout go into the ring together. A ring too
 * small for that pair is refused; any ring accepted, the smallest
 * included, still bounds a dial to a server that never answers. */
static void dial_is_bounded_with_entries(unsigned entries)
{
    rp_loop_options lopts = {.entries = entries};
    int rc = rp_loop_new(&loop, &lopts);
    cr_assert(rc == 0 || (rc == -EINVAL && entries < 2), "entries %u: %s", entries, rp_strerror(rc));
    if (rc < 0)
        return;
    int port, fillers[2];
    int listener = fx_listener(0, &port);
    fx_fill_backlog(port, fillers, 2);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.addr = addr;
    opts.dial_timeout_ms = 200;
    opts.pool_timeout_ms = 2000;
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    fx_got got = {0};
    uint64_t start = fx_now_ms();
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 4000), "entries %u: the dial never ended", entries);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(got.status, -ETIMEDOUT, "entries %u: %s", entries, rp_strerror(got.status));
    cr_expect(took >= 190 && took < 1500, "entries %u: the dial ended after %lu ms", entries, (unsigned long)took);
    fx_close_and_free(loop, pool);
    close(fillers[0]);
    close(fillers[1]);
    close(listener);
}

Test(loop, a_ring_too_small_for_a_linked_pair_is_refused_and_the_smallest_bounds_a_dial)
{
    dial_is_bounded_with_entries(1);
    dial_is_bounded_with_entries(2);
    dial_is_bounded_with_entries(3);
}

/* rp_loop_free runs the posts still queued; what they open or queue
 * makes the loop busy again, so -EBUSY is decided after they ran. */
static rp_timer *posted_timer;

static void ignore_timer(rp_timer *timer, void *data)
{
    (void)timer;
    (void)data;
}

static void start_timer_in_post(void *arg)
{
    cr_assert_eq(rp_timer_new(&posted_timer, arg), 0);
    cr_assert_eq(rp_timer_start(posted_timer, ignore_timer, NULL, 10000, 0), 0);
}

static void post_again(void *arg) { cr_assert_eq(rp_loop_post(arg, count_post, NULL), 0); }

Test(loop, free_is_ebusy_when_a_post_it_ran_made_the_loop_busy)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    loop_thread = pthread_self();
    cr_assert_eq(rp_loop_post(loop, start_timer_in_post, loop), 0);
    cr_assert_eq(rp_loop_free(loop), -EBUSY, "freed the loop under the timer a post started");
    cr_expect(rp_timer_active(posted_timer));
    rp_timer_free(posted_timer);

    cr_assert_eq(rp_loop_post(loop, post_again, loop), 0);
    cr_assert_eq(rp_loop_free(loop), -EBUSY, "freed the loop with a post queued by a post");
    cr_expect_eq(atomic_load(&posted_count), 0);
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_expect_eq(atomic_load(&posted_count), 1, "the post queued by a post never ran");
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* RP_RUN_ONCE returns once it handled work a caller waits for, not a
 * completion that is the loop's own bookkeeping: the update that moves
 * the kernel timeout earlier (it completes at once), or the kernel
 * timeout left by a timer that was stopped. */
static void count_fired(rp_timer *timer, void *data)
{
    (void)timer;
    ++*(int *)data;
}

static void once_returns_after_the_timer(rp_timer *timer, int *fired, uint64_t ms)
{
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_timer_start(timer, count_fired, fired, ms, 0), 0);
    int alive = rp_loop_run(loop, RP_RUN_ONCE);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(*fired, 1, "ONCE returned %d after %lu ms having fired nothing", alive, (unsigned long)took);
    cr_expect(took >= ms - 10 && took < ms + 1000, "ONCE returned after %lu ms", (unsigned long)took);
}

Test(loop, once_returns_only_after_handling_work_not_bookkeeping)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_timer *later, *timer;
    cr_assert_eq(rp_timer_new(&later, loop), 0);
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    int later_fired = 0, fired = 0;
    cr_assert_eq(rp_timer_start(later, count_fired, &later_fired, 10000, 0), 0);
    rp_loop_run(loop, RP_RUN_NOWAIT); /* the kernel timeout, at 10 s */
    once_returns_after_the_timer(timer, &fired, 200);

    /* A kernel timeout at 100 ms whose timer is stopped before it fires. */
    cr_assert_eq(rp_timer_start(timer, count_fired, &fired, 100, 0), 0);
    rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_assert_eq(rp_timer_stop(timer), 0);
    fired = 0;
    once_returns_after_the_timer(timer, &fired, 300);
    cr_expect_eq(later_fired, 0);
    rp_timer_free(later);
    rp_timer_free(timer);
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* rp_loop_free leaves nothing in flight that could still write into the
 * loop's memory: its own reads (the posts' eventfd read, the drain of
 * rp_loop_fd) end with the ring. Freed blocks are kept, filled with a
 * pattern, and checked after the kernel had every chance to write. */
#define QUARANTINE_MAX 4096
#define QUARANTINE_BYTE 0x5a
typedef struct quarantined {
    size_t size;
    unsigned char bytes[];
} quarantined;
static quarantined *quarantine[QUARANTINE_MAX];
static int quarantine_len;

static void *q_malloc(size_t size)
{
    quarantined *q = malloc(sizeof *q + size);
    q->size = size;
    return q->bytes;
}

static void q_free(void *ptr)
{
    if (!ptr)
        return;
    quarantined *q = (quarantined *)((char *)ptr - offsetof(quarantined, bytes));
    memset(q->bytes, QUARANTINE_BYTE, q->size);
    cr_assert_lt(quarantine_len, QUARANTINE_MAX);
    quarantine[quarantine_len++] = q;
}

static void *q_calloc(size_t count, size_t size)
{
    void *p = q_malloc(count * size);
    memset(p, 0, count * size);
    return p;
}

static void *q_realloc(void *ptr, size_t size)
{
    void *p = q_malloc(size);
    if (ptr) {
        quarantined *old = (quarantined *)((char *)ptr - offsetof(quarantined, bytes));
        memcpy(p, ptr, TEST_MIN(old->size, size));
        q_free(ptr);
    }
    return p;
}

static void noop_post(void *arg) { (void)arg; }

static void *post_then_stop(void *arg)
{
    rp_loop_post(arg, noop_post, NULL);
    return NULL;
}

Test(loop, free_leaves_no_read_writing_into_the_loop)
{
    cr_assert_eq(rp_set_allocator(q_malloc, q_realloc, q_calloc, q_free), 0);
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(rp_loop_new(&loop, NULL), 0);
        int fd = -1;
        if (i % 2)
            fd = rp_loop_fd(loop); /* a ring set up for a host */
        rp_loop_run(loop, RP_RUN_NOWAIT);
        /* A post from another thread arms the post read's completion;
         * a signal on the fd makes the next run queue a drain. */
        pthread_t thread;
        pthread_create(&thread, NULL, post_then_stop, loop);
        pthread_join(thread, NULL);
        if (fd >= 0)
            eventfd_write(fd, 1);
        rp_loop_run(loop, RP_RUN_NOWAIT);
        rp_loop_post(loop, noop_post, NULL);
        cr_assert_eq(rp_loop_free(loop), 0);
    }
    usleep(20000);
    for (int i = 0; i < quarantine_len; i++)
        for (size_t b = 0; b < quarantine[i]->size; b++)
            cr_assert_eq(quarantine[i]->bytes[b], QUARANTINE_BYTE, "byte %zu of a %zu-byte block changed after its free",
                         b, quarantine[i]->size);
    for (int i = 0; i < quarantine_len; i++)
        free(quarantine[i]);
}
