/* The loop: the one owner of the io_uring. It hands out SQEs, dispatches
 * each CQE to the operation record named by its user_data, keeps the timer
 * heap behind one kernel timeout, runs deferred callbacks and takes work
 * posted from other threads. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define RP__DEFAULT_ENTRIES 256u

typedef struct rp__posted {
    struct rp__posted *next;
    void (*fn)(void *arg);
    void *arg;
} rp__posted;

struct rp_loop {
    struct io_uring ring;
    unsigned entries;
    uint64_t now_ns;
    uint64_t random_state;
    unsigned refs;          /* ref'd timers and ops in flight */
    unsigned handles_open;  /* pools and rp_timers not yet closed */
    bool in_run;
    bool in_timers;         /* run_timers is firing timers */
    bool in_wake;           /* host_wake is running */
    bool woke;              /* the host was told since the run began */
    unsigned handled;       /* CQEs, timers and callbacks this run handled */
    rp_loop_stats stats;
    uint64_t busy_poll_ns;  /* spin this long for completions before sleeping */
    rp__recv_ring *recv_ring; /* set up on first use, unless off */
    bool recv_ring_off;     /* disabled, or it could not be set up */
    uint8_t send_zc;        /* RP__SEND_ZC_*: how large sends go (conn.c) */
    void *spares;           /* rp__loop_spares */
    void (*spares_free)(void *);

    rp__deferred_queue deferred;
    unsigned defer_budget;  /* items left in this iteration's snapshot */
    rp__deferred_queue prepared; /* run just before a submit */

    rp__timer_heap timers;
    rp__op ktimer_op;       /* the one kernel timeout, for the earliest timer */
    struct __kernel_timespec ktimer_ts;
    uint64_t ktimer_deadline;

    int host_fd;            /* eventfd behind rp_loop_fd */
    bool host_registered;   /* signalled by the ring: only once someone asked */
    bool host_asks;         /* the host calls rp_loop_timeout before it sleeps */
    bool kernel_woke;       /* the kernel had work for us when the run began */
    bool idle_drained;      /* drained for nothing; no signal came since */
    unsigned tail_at_rest;  /* CQ tail when the last run ended */
    rp__op drain_op;        /* a non-blocking read of host_fd */
    uint64_t drain_buf;
    void (*host_wake)(void *host);
    void *host;

    /* Other threads' work: a locked queue, off the get/put path, and an
     * eventfd whose read is always armed in the ring. */
    int post_fd;
    rp__op post_op;
    uint64_t post_buf;
    pthread_mutex_t post_lock;
    rp__posted *post_head, *post_tail;
    atomic_bool stop;
    atomic_uint posts_queued; /* posted functions not yet taken to run: pending work */
};

static uint64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t rp__loop_now_fresh(rp_loop *loop) { return loop->now_ns = clock_now_ns(); }
/* Callbacks use the iteration's cached time; a call from outside the loop
 * (an embedding host's handler) may come long after it, so it reads the
 * clock. */
uint64_t rp__loop_iterations(const rp_loop *loop) { return loop->stats.iterations; }
uint64_t rp__loop_now(rp_loop *loop) { return loop->in_run ? loop->now_ns : rp__loop_now_fresh(loop); }
uint64_t rp_loop_now(const rp_loop *loop) { return loop->now_ns; }
static void poke_host(rp_loop *loop);
/* Whether the loop is alive is the host's to see (an adapter holds its
 * own loop only while this one has work): a change made outside a run
 * reaches it. */
static void loop_ref(rp_loop *loop)
{
    if (loop->refs++ == 0)
        poke_host(loop);
}

static void loop_unref(rp_loop *loop)
{
    if (--loop->refs == 0)
        poke_host(loop);
}

void rp__loop_ref(rp_loop *loop) { loop_ref(loop); }
void rp__loop_unref(rp_loop *loop) { loop_unref(loop); }
void rp__loop_handle_opened(rp_loop *loop) { loop->handles_open++; }
void rp__loop_handle_closed(rp_loop *loop) { loop->handles_open--; }

uint32_t rp__loop_random(rp_loop *loop)
{
    uint64_t x = loop->random_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    loop->random_state = x;
    return (uint32_t)(x >> 32);
}

static bool kernel_has_work(const rp_loop *loop)
{
    return io_uring_sq_ready(&loop->ring) ||
           (IO_URING_READ_ONCE(*loop->ring.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW));
}

static bool work_visible(const rp_loop *loop) { return io_uring_cq_ready(&loop->ring) || kernel_has_work(loop); }

/* The kernel timeout is behind the earliest timer: the next run moves it
 * (ktimer_sync), and a host must run the loop before it sleeps. */
static inline bool ktimer_stale(const rp_loop *loop)
{
    const rp__timer *min = rp__heap_min(&loop->timers);
    return min && (!loop->ktimer_op.pending || loop->ktimer_deadline > min->deadline_ns);
}

/* Something rp_loop_run(RP_RUN_NOWAIT) would handle right away. */
static bool ready_now(const rp_loop *loop)
{
    return loop->deferred.head || loop->prepared.head || work_visible(loop) || ktimer_stale(loop);
}

/* What changes outside rp_loop_run must reach a host that embeds the
 * loop: work queued, the loop's liveness, its next deadline. The host is
 * told once until it runs the loop, after which it looks at all of them
 * again. An adapter is told in user space; it must not run the loop from
 * its hook (rp_loop_run refuses): the call that told it has not finished.
 * A host that asks rp_loop_timeout before it sleeps sees the change
 * itself. Only a host that watches nothing but the fd pays for an eventfd
 * write, once between two runs: whether the fd still holds the last one
 * cannot be known (the host may read the fd itself, or watch it
 * edge-triggered, which needs a write per signal). */
static void poke_host(rp_loop *loop)
{
    if (loop->in_run || loop->woke)
        return;
    if (loop->host_wake) {
        loop->woke = true;
        loop->in_wake = true;
        loop->host_wake(loop->host);
        loop->in_wake = false;
    } else if (loop->host_registered && !loop->host_asks) {
        loop->woke = true;
        loop->idle_drained = false;
        loop->stats.syscalls++;
        eventfd_write(loop->host_fd, 1);
    }
}

/* ------------------------------------------------------------ SQEs, ops */

static struct io_uring_sqe *take_sqe(rp_loop *loop)
{
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&loop->ring)))
        rp__loop_submit(loop);
    loop->stats.sqes++;
    return sqe;
}

/* The host hears of an SQE before it is taken: nothing the host's hook
 * does can then submit one its caller has not filled yet. */
struct io_uring_sqe *rp__loop_sqe(rp_loop *loop)
{
    poke_host(loop);
    return take_sqe(loop);
}

/* Room for both is made first, so taking the second never submits the
 * first unfilled (rp_loop_new refuses a ring of fewer than 2 entries). */
void rp__loop_sqe_room(rp_loop *loop, unsigned n)
{
    while (io_uring_sq_space_left(&loop->ring) < n)
        rp__loop_submit(loop);
}

void rp__loop_sqe_pair(rp_loop *loop, struct io_uring_sqe **first, struct io_uring_sqe **second)
{
    poke_host(loop);
    rp__loop_sqe_room(loop, 2);
    *first = take_sqe(loop);
    *second = take_sqe(loop);
}

struct io_uring_sqe *rp__loop_prev_sqe(rp_loop *loop, const struct io_uring_sqe *sqe)
{
    struct io_uring_sq *sq = &loop->ring.sq;
    unsigned tail = sq->sqe_tail;
    if (tail - sq->sqe_head < 2 || sqe != &sq->sqes[(tail - 1) & sq->ring_mask])
        return NULL;
    return &sq->sqes[(tail - 2) & sq->ring_mask];
}

void rp__loop_submit(rp_loop *loop)
{
    if (io_uring_sq_ready(&loop->ring)) {
        loop->stats.enters++;
        io_uring_submit(&loop->ring);
    }
}

void rp__loop_count_syscalls(rp_loop *loop, unsigned n) { loop->stats.syscalls += n; }

void rp_loop_stats_get(const rp_loop *loop, rp_loop_stats *out)
{
    *out = loop->stats;
    out->syscalls += out->enters;
    rp__recv_ring_stats ring;
    rp__recv_ring_stats_get(loop->recv_ring, &ring);
    out->recv_ring_bytes = ring.bytes;
    out->recv_ring_bytes_in_use = ring.bytes_in_use;
    out->recv_ring_fallbacks = ring.fallbacks;
}

/* Zero-copy sends: off by option, by RINGPOOL_SEND_ZC=0 in the
 * environment (to run a program, or the test suite, on the plain path),
 * or once the kernel refused one; RINGPOOL_SEND_ZC=always keeps them on a
 * connection whose bytes the kernel reports copied (tests: loopback
 * always copies). */
static uint8_t send_zc_mode(const rp_loop_options *opts)
{
    const char *env = getenv("RINGPOOL_SEND_ZC");
    if ((opts && opts->no_send_zc) || (env && !strcmp(env, "0")))
        return RP__SEND_ZC_OFF;
    return env && !strcmp(env, "always") ? RP__SEND_ZC_ALWAYS : RP__SEND_ZC_ON;
}

int rp__loop_send_zc(const rp_loop *loop) { return loop->send_zc; }

void rp__loop_send_zc_refused(rp_loop *loop, bool kernel_lacks)
{
    if (kernel_lacks)
        loop->send_zc = RP__SEND_ZC_OFF;
    loop->stats.send_zc_refused++;
}

void rp__loop_send_zc_count(rp_loop *loop, bool notification, bool copied)
{
    if (!notification)
        loop->stats.send_zc++;
    else
        loop->stats.send_zc_notifs++, loop->stats.send_zc_copied += copied;
}

/* Off by option, or by RINGPOOL_RECV_RING=0 in the environment (to run a
 * program, or the test suite, on the per-connection path). */
static bool recv_ring_disabled(const rp_loop_options *opts)
{
    const char *env = getenv("RINGPOOL_RECV_RING");
    return (opts && opts->no_recv_ring) || (env && !strcmp(env, "0"));
}

void **rp__loop_spares(rp_loop *loop, void (*free_fn)(void *))
{
    loop->spares_free = free_fn;
    return &loop->spares;
}

rp__recv_ring *rp__loop_recv_ring(rp_loop *loop)
{
    if (!loop->recv_ring && !loop->recv_ring_off) {
        loop->recv_ring = rp__recv_ring_new(loop, &loop->ring, RP__RECV_RING_BGID);
        loop->recv_ring_off = !loop->recv_ring;
    }
    return loop->recv_ring;
}

void rp__op_start(rp_loop *loop, rp__op *op, bool with_deadline, bool keeps_loop_alive)
{
    op->res = 0;
    op->has_deadline = with_deadline;
    op->timed_out = false;
    op->cancel_requested = false;
    op->pending = true;
    op->keeps_loop_alive = keeps_loop_alive;
    if (keeps_loop_alive)
        loop_ref(loop);
}

void rp__op_keep_loop_alive(rp_loop *loop, rp__op *op, bool keep)
{
    if (op->pending && op->keeps_loop_alive && !keep)
        loop_unref(loop);
    if (op->pending && !op->keeps_loop_alive && keep)
        loop_ref(loop);
    op->keeps_loop_alive = keep;
}

void rp__op_link_timeout(rp__op *op, struct io_uring_sqe *first, struct io_uring_sqe *second,
                         struct __kernel_timespec *ts, uint32_t ms)
{
    ts->tv_sec = ms / 1000;
    ts->tv_nsec = (long long)(ms % 1000) * 1000000;
    first->flags |= IOSQE_IO_LINK;
    io_uring_sqe_set_data64(first, (uint64_t)(uintptr_t)op);
    io_uring_prep_link_timeout(second, ts, 0);
    second->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(second, (uint64_t)(uintptr_t)op | 1u);
}

static void submit_cancel(rp_loop *loop, rp__op *op)
{
    struct io_uring_sqe *sqe = rp__loop_sqe(loop);
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op | (op->notifies ? RP__OP_NOTIFIES : 0), 0);
    io_uring_sqe_set_data64(sqe, 0);
}

void rp__op_expire(rp_loop *loop, rp__op *op) { submit_cancel(loop, op); }

void rp__op_cancel(rp_loop *loop, rp__op *op)
{
    submit_cancel(loop, op);
    op->cancel_requested = true;
    rp__op_keep_loop_alive(loop, op, true); /* whoever cancelled it waits for it */
}

int rp__op_result(const rp__op *op) { return op->timed_out ? -ETIMEDOUT : op->res; }

/* The loop's own ops are bookkeeping: what they bring (timers due, posted
 * functions) counts as handled when it runs. */
static bool loop_own_op(const rp_loop *loop, const rp__op *op)
{
    return op == &loop->ktimer_op || op == &loop->post_op || op == &loop->drain_op;
}

/* Inline in the reaping loop: every completion passes here. */
static inline void op_complete(rp_loop *loop, rp__op *op, int32_t res, uint32_t cflags)
{
    if (!loop_own_op(loop, op))
        loop->handled++;
    if (op->keeps_loop_alive)
        loop_unref(loop);
    op->res = res;
    op->cflags = cflags;
    op->pending = false;
    op->timed_out = op->has_deadline && !op->cancel_requested && (res == -ECANCELED || res == -EINTR);
    op->done(op);
}

void rp__op_complete(rp_loop *loop, rp__op *op, int32_t res, uint32_t cflags) { op_complete(loop, op, res, cflags); }

static void dispatch_cqe(rp_loop *loop, uint64_t user_data, int32_t res, uint32_t cflags)
{
    if (user_data == 0)
        return; /* cancels and timer updates: their targets report */
    if (user_data & (1 | RP__OP_NOTIFIES)) {
        if (user_data & 1)
            return; /* a linked timeout that failed before its op ran: the op reports */
        rp__op *op = (rp__op *)(uintptr_t)(user_data & ~(uint64_t)RP__OP_NOTIFIES);
        if (cflags & IORING_CQE_F_NOTIF)
            op->notified(op, res);
        else
            op_complete(loop, op, res, cflags);
        return;
    }
    op_complete(loop, (rp__op *)(uintptr_t)user_data, res, cflags);
}

static unsigned reap_cqes(rp_loop *loop)
{
    struct io_uring_cqe *cqe;
    unsigned handled = 0;
    /* Only what is already in the CQ: a peek on an empty ring may enter the
     * kernel to run task work, which the iteration does (and counts) itself. */
    while (io_uring_cq_ready(&loop->ring) && io_uring_peek_cqe(&loop->ring, &cqe) == 0) {
        uint64_t user_data = cqe->user_data;
        int32_t res = cqe->res;
        uint32_t cflags = cqe->flags;
        io_uring_cqe_seen(&loop->ring, cqe);
        dispatch_cqe(loop, user_data, res, cflags);
        handled++;
    }
    return handled;
}

/* ---------------------------------------------------------------- timers */

/* The kernel timeout follows the earliest timer only where the loop may
 * sleep next: before an iteration's wait and at a run's end. A timer armed
 * (and often disarmed again) between those costs no SQE, and takes none
 * from between two SQEs that must stay together (a round trip's). */
static void ktimer_move(rp_loop *loop)
{
    rp__timer *min = rp__heap_min(&loop->timers);
    loop->ktimer_ts.tv_sec = (long long)(min->deadline_ns / 1000000000ull);
    loop->ktimer_ts.tv_nsec = (long long)(min->deadline_ns % 1000000000ull);
    struct io_uring_sqe *sqe = rp__loop_sqe(loop);
    if (loop->ktimer_op.pending) {
        io_uring_prep_timeout_update(sqe, &loop->ktimer_ts, (uint64_t)(uintptr_t)&loop->ktimer_op,
                                     IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, 0);
    } else {
        io_uring_prep_timeout(sqe, &loop->ktimer_ts, 0, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)&loop->ktimer_op);
        rp__op_start(loop, &loop->ktimer_op, false, false);
    }
    loop->ktimer_deadline = min->deadline_ns;
}

/* Called on every pass: the check is inline, the move out of line. */
static inline void ktimer_sync(rp_loop *loop)
{
    if (ktimer_stale(loop))
        ktimer_move(loop);
}

/* Expired timers run in the iteration; the CQE only wakes the loop. */
static void ktimer_done(rp__op *op) { (void)op; }
/* The drain of host_fd has done its work by completing. */
static void drain_done(rp__op *op) { (void)op; }

void rp__timer_init(rp__timer *timer, void (*fire)(rp__timer *), bool keeps_loop_alive)
{
    timer->fire = fire;
    timer->deadline_ns = 0;
    timer->armed = false;
    timer->keeps_loop_alive = keeps_loop_alive;
}

void rp__timer_arm(rp_loop *loop, rp__timer *timer, uint64_t deadline_ns)
{
    rp__timer_disarm(loop, timer);
    /* A timer armed for "now" by a timer callback waits for the next
     * iteration: re-arming in a callback must not spin run_timers. */
    if (loop->in_timers && deadline_ns <= loop->now_ns)
        deadline_ns = loop->now_ns + 1;
    timer->deadline_ns = deadline_ns;
    rp__heap_push(&loop->timers, timer);
    if (timer->keeps_loop_alive)
        loop_ref(loop);
    if (rp__heap_min(&loop->timers) == timer)
        poke_host(loop); /* the next deadline moved earlier */
}

/* The kernel timeout stays where it is: at worst it wakes the loop early
 * once, which costs less than an SQE to move it on every disarm. */
void rp__timer_disarm(rp_loop *loop, rp__timer *timer)
{
    if (!rp__timer_armed(timer))
        return;
    bool was_next = rp__heap_min(&loop->timers) == timer;
    rp__heap_remove(&loop->timers, timer);
    if (timer->keeps_loop_alive)
        loop_unref(loop);
    if (was_next)
        poke_host(loop); /* the next deadline moved later */
}

static void run_timers(rp_loop *loop)
{
    rp__timer *timer;
    loop->in_timers = true;
    while ((timer = rp__heap_min(&loop->timers)) && timer->deadline_ns <= loop->now_ns) {
        rp__timer_disarm(loop, timer);
        loop->handled++;
        timer->fire(timer);
    }
    loop->in_timers = false;
    ktimer_sync(loop);
}

/* ------------------------------------------------------------- deferred */

static void queue_push(rp__deferred_queue *q, rp__deferred *item, void (*run)(rp__deferred *))
{
    item->run = run;
    item->next = NULL;
    item->queued = true;
    if (q->tail)
        q->tail->next = item;
    else
        q->head = item;
    q->tail = item;
    q->len++;
}

static rp__deferred *queue_pop(rp__deferred_queue *q)
{
    rp__deferred *item = q->head;
    if (!item)
        return NULL;
    q->head = item->next;
    if (!q->head)
        q->tail = NULL;
    q->len--;
    item->queued = false;
    return item;
}

void rp__defer(rp_loop *loop, rp__deferred *item, void (*run)(rp__deferred *))
{
    queue_push(&loop->deferred, item, run);
    poke_host(loop);
}

void rp__loop_before_submit(rp_loop *loop, rp__deferred *item, void (*run)(rp__deferred *))
{
    queue_push(&loop->prepared, item, run);
    poke_host(loop);
}

/* Position of item in q, which then no longer holds it; -1 if absent. */
static long queue_unlink(rp__deferred_queue *q, rp__deferred *item)
{
    rp__deferred *prev = NULL;
    long position = 0;
    for (rp__deferred *it = q->head; it != item; it = it->next, position++) {
        if (!it)
            return -1;
        prev = it;
    }
    if (prev)
        prev->next = item->next;
    else
        q->head = item->next;
    if (q->tail == item)
        q->tail = prev;
    q->len--;
    item->queued = false;
    return position;
}

bool rp__undefer(rp_loop *loop, rp__deferred *item)
{
    if (!item->queued)
        return false;
    long position = queue_unlink(&loop->deferred, item);
    if (position < 0)
        return queue_unlink(&loop->prepared, item) >= 0;
    if ((unsigned long)position < loop->defer_budget)
        loop->defer_budget--;
    return true;
}

static void run_prepared(rp_loop *loop)
{
    rp__deferred *item;
    while ((item = queue_pop(&loop->prepared))) {
        loop->handled++;
        item->run(item);
    }
}

/* Runs what was queued when the pass began; what those callbacks queue
 * waits for the next iteration, so a callback chain cannot starve I/O. */
static void run_deferred(rp_loop *loop)
{
    loop->defer_budget = loop->deferred.len;
    while (loop->defer_budget) {
        loop->defer_budget--; /* before the run: rp__undefer counts on it */
        rp__deferred *item = queue_pop(&loop->deferred);
        loop->handled++;
        item->run(item);
    }
}

/* ----------------------------------------------------------------- posts */

static void post_arm(rp_loop *loop)
{
    struct io_uring_sqe *sqe = rp__loop_sqe(loop);
    io_uring_prep_read(sqe, loop->post_fd, &loop->post_buf, sizeof loop->post_buf, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)&loop->post_op);
    rp__op_start(loop, &loop->post_op, false, false);
}

static void run_posted(rp_loop *loop)
{
    pthread_mutex_lock(&loop->post_lock);
    rp__posted *list = loop->post_head;
    loop->post_head = loop->post_tail = NULL;
    atomic_store_explicit(&loop->posts_queued, 0, memory_order_relaxed);
    pthread_mutex_unlock(&loop->post_lock);
    while (list) {
        rp__posted *next = list->next;
        loop->handled++;
        list->fn(list->arg);
        rp__free(list);
        list = next;
    }
}

static void post_done(rp__op *op)
{
    rp_loop *loop = RP__CONTAINER_OF(op, rp_loop, post_op);
    post_arm(loop);
    run_posted(loop);
}

int rp_loop_post(rp_loop *loop, void (*fn)(void *arg), void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    rp__posted *item = rp__malloc(sizeof *item);
    if (!item)
        return -ENOMEM;
    item->next = NULL;
    item->fn = fn;
    item->arg = arg;
    pthread_mutex_lock(&loop->post_lock);
    bool was_empty = !loop->post_head;
    if (loop->post_tail)
        loop->post_tail->next = item;
    else
        loop->post_head = item;
    loop->post_tail = item;
    atomic_fetch_add_explicit(&loop->posts_queued, 1, memory_order_relaxed);
    /* Under the lock: once the loop thread has taken the queue, this
     * thread no longer touches the loop, which may then be freed. */
    if (was_empty)
        eventfd_write(loop->post_fd, 1);
    pthread_mutex_unlock(&loop->post_lock);
    return 0;
}

void rp_loop_stop(rp_loop *loop)
{
    atomic_store(&loop->stop, true);
    eventfd_write(loop->post_fd, 1);
}

/* ------------------------------------------------------------ lifecycle */

/* Standalone, the loop sleeps in its own io_uring_enter, which also runs
 * the task work completions wait in: DEFER_TASKRUN is the fastest setup
 * here. Embedded, it sleeps in the host's wait instead, and every wake-up
 * then cost a second enter just to run that task work; COOP_TASKRUN runs it
 * on the way back from the host's wait (measured under an epoll host at
 * -c 50: 0.32 -> 0.23 syscalls per request, standalone 0.26). */
static int ring_init(struct io_uring *ring, unsigned entries, bool hosted)
{
    static const unsigned chains[2][3] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
             IORING_SETUP_SUBMIT_ALL,
         IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, 0},
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
             IORING_SETUP_SUBMIT_ALL,
         IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, 0},
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < 3 && rc == -EINVAL; i++)
        rc = io_uring_queue_init(entries, ring, chains[hosted][i]);
    return rc;
}

int rp_loop_new(rp_loop **out, const rp_loop_options *opts)
{
    if (!out)
        return -EINVAL;
    rp_loop *loop = rp__calloc(1, sizeof *loop);
    if (!loop)
        return -ENOMEM;
    loop->entries = opts && opts->entries ? opts->entries : RP__DEFAULT_ENTRIES;
    if (loop->entries < 2) { /* a connect and its linked timeout go in together */
        rp__free(loop);
        return -EINVAL;
    }
    int rc = ring_init(&loop->ring, loop->entries, false);
    if (rc < 0) {
        rp__free(loop);
        return rc;
    }
    loop->host_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop->post_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->host_fd < 0 || loop->post_fd < 0)
        rc = -errno;
    if (rc < 0) {
        if (loop->host_fd >= 0)
            close(loop->host_fd);
        if (loop->post_fd >= 0)
            close(loop->post_fd);
        io_uring_queue_exit(&loop->ring);
        rp__free(loop);
        return rc;
    }
    pthread_mutex_init(&loop->post_lock, NULL);
    loop->now_ns = clock_now_ns();
    loop->busy_poll_ns = opts ? (uint64_t)opts->busy_poll_us * 1000u : 0;
    loop->recv_ring_off = recv_ring_disabled(opts);
    loop->send_zc = send_zc_mode(opts);
    loop->random_state = loop->now_ns ^ (uint64_t)(uintptr_t)loop ^ 0x9e3779b97f4a7c15ull;
    loop->ktimer_op.done = ktimer_done;
    loop->post_op.done = post_done;
    loop->drain_op.done = drain_done;
    post_arm(loop);
    rp__loop_submit(loop); /* an idle loop has nothing to submit later */
    *out = loop;
    return 0;
}

static bool loop_held(const rp_loop *loop) { return loop->handles_open || loop->host_wake || loop->in_run; }

/* The loop's own reads end with the ring and never write into it later:
 * the drain is non-blocking and completes as it is submitted, and the
 * post read, once its eventfd is signalled, completes as task work at the
 * loop thread's next syscall (teardown makes several) or is cancelled
 * with the ring (tests/test_loop.c checks freed memory stays untouched). */
int rp_loop_free(rp_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (loop_held(loop))
        return -EBUSY;
    /* Posted work that never ran still owns its queue records. It runs
     * now, and what it opens or posts holds the loop again. */
    run_posted(loop);
    if (loop_held(loop) || atomic_load(&loop->posts_queued))
        return -EBUSY;
    io_uring_queue_exit(&loop->ring);
    rp__recv_ring_free(loop->recv_ring, false);
    if (loop->spares_free)
        loop->spares_free(loop->spares);
    close(loop->host_fd);
    close(loop->post_fd);
    pthread_mutex_destroy(&loop->post_lock);
    rp__free(loop);
    return 0;
}

/* A loop asked for its fd before it has anything under way but its post
 * read moves to a ring set up for a host (ring_init); one that is already
 * busy keeps its ring, and works as well, at one more enter per wake-up. */
static void ring_for_host(rp_loop *loop)
{
    struct io_uring ring;
    if (loop->refs || loop->handles_open || loop->in_run)
        return;
    /* No connection reads from the buffer ring now; the next one sets it
     * up anew. It goes first: its trim timer does not hold the loop. */
    rp__recv_ring_free(loop->recv_ring, true);
    loop->recv_ring = NULL;
    /* A kernel timeout or drain still in flight would vanish with the old
     * ring, and its op would stay pending for ever. */
    if (rp__heap_min(&loop->timers) || ready_now(loop) || loop->ktimer_op.pending || loop->drain_op.pending ||
        ring_init(&ring, loop->entries, true) < 0)
        return;
    io_uring_queue_exit(&loop->ring); /* cancels the post read */
    loop->ring = ring;
    post_arm(loop);
    rp__loop_submit(loop);
    /* A post made while the rings changed may have been read by the old
     * ring's teardown: the new read must look at the queue anyway. */
    loop->stats.syscalls++;
    eventfd_write(loop->post_fd, 1);
}

/* The eventfd is registered with the ring on first use: a loop nobody
 * embeds does not pay for a signal on every completion. */
int rp_loop_fd(const rp_loop *loop)
{
    if (!loop)
        return -EINVAL;
    rp_loop *mut = (rp_loop *)loop;
    if (!mut->host_registered) {
        ring_for_host(mut);
        int rc = io_uring_register_eventfd(&mut->ring, mut->host_fd);
        if (rc < 0)
            return rc;
        mut->host_registered = true;
        if (ready_now(mut))
            poke_host(mut);
    }
    return loop->host_fd;
}

/* ------------------------------------------------------------------ run */

/* Posted work keeps it alive too: its eventfd read completes soon. */
static bool loop_alive(const rp_loop *loop)
{
    return loop->refs || loop->deferred.head || loop->prepared.head ||
           atomic_load_explicit(&loop->posts_queued, memory_order_relaxed);
}

/* Tells the CPU this is a spin: a hyperthread sibling gets the core's
 * resources, and leaving the loop costs no pipeline flush. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Spins on the ring's shared memory until a completion (or task work that
 * will post one) shows up or the window closes: true if work arrived. The
 * submit goes first, so what the kernel finishes inline is seen at once
 * and is not counted as a sleep avoided. A due timer's kernel timeout ends
 * the spin like any completion. */
static bool busy_poll(rp_loop *loop)
{
    if (io_uring_sq_ready(&loop->ring)) {
        loop->stats.enters++;
        io_uring_submit(&loop->ring);
    }
    if (work_visible(loop))
        return true;
    uint64_t until = clock_now_ns() + loop->busy_poll_ns;
    do {
        if (work_visible(loop)) {
            loop->stats.busy_poll_hits++;
            return true;
        }
        cpu_relax();
    } while (clock_now_ns() < until);
    return false;
}

/* Completions the kernel holds back as task work (DEFER_TASKRUN) are
 * brought in before anything is sent: a connection whose server closed it,
 * or sent bytes unasked, while the loop was busy must be seen as such
 * before a command goes out on it, not after. */
static unsigned reap_before_sending(rp_loop *loop)
{
    unsigned handled = reap_cqes(loop);
    if (loop->prepared.head && (IO_URING_READ_ONCE(*loop->ring.sq.kflags) & IORING_SQ_TASKRUN)) {
        loop->stats.enters++;
        io_uring_get_events(&loop->ring);
        handled += reap_cqes(loop);
    }
    return handled;
}

/* What already sits in the CQ is handled before deciding to block, and the
 * work it queues is flushed first, so one io_uring_enter both submits and
 * waits; having handled something, the iteration does not block. */
static void loop_iteration(rp_loop *loop, bool may_block)
{
    bool handled = reap_before_sending(loop) != 0;
    may_block = may_block && !handled && loop_alive(loop);
    run_prepared(loop);
    ktimer_sync(loop);
    may_block = may_block && !loop->deferred.head && !loop->prepared.head && !io_uring_cq_ready(&loop->ring);
    if (may_block && loop->busy_poll_ns && busy_poll(loop))
        may_block = false;
    if (may_block) {
        loop->stats.enters++;
        io_uring_submit_and_wait(&loop->ring, 1);
    } else if (kernel_has_work(loop)) {
        loop->stats.enters++;
        io_uring_submit_and_get_events(&loop->ring);
    }
    loop->stats.iterations++;
    rp__loop_now_fresh(loop);
    reap_cqes(loop);
    run_timers(loop);
    run_deferred(loop);
}

/* host_fd, the eventfd behind rp_loop_fd, is signalled by the ring only
 * while no run is under way: what arrives during a run is handled by it.
 * Its count must be read back or a level-triggered host spins, and that
 * read rides in the run's last submit as a non-blocking READ, so it costs
 * no syscall of its own. It is needed when the kernel brought work while
 * the loop was out (a signal was sent), and once when the host ran the
 * loop for nothing (a signal may have lagged work already handled; a host
 * that runs the loop on every turn pays for that once per quiet spell). */
static void host_fd_quiet(rp_loop *loop)
{
    io_uring_cq_eventfd_toggle(&loop->ring, false);
    loop->kernel_woke = (IO_URING_READ_ONCE(*loop->ring.sq.kflags) & IORING_SQ_TASKRUN) ||
                        io_uring_smp_load_acquire(loop->ring.cq.ktail) != loop->tail_at_rest;
}

static void host_fd_drain(rp_loop *loop)
{
    if (loop->drain_op.pending)
        return;
    if (loop->kernel_woke)
        loop->idle_drained = false;
    else if (loop->handled || loop->idle_drained)
        return;
    else
        loop->idle_drained = true;
    struct io_uring_sqe *sqe = rp__loop_sqe(loop);
    io_uring_prep_read(sqe, loop->host_fd, &loop->drain_buf, sizeof loop->drain_buf, 0);
    sqe->rw_flags = RWF_NOWAIT; /* an empty count completes at once, never waits */
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)&loop->drain_op);
    rp__op_start(loop, &loop->drain_op, false, false);
}

/* The drain's own completion, when nothing precedes it, is not work for
 * the host; signals are back on before the run's end looks for work left. */
static void host_fd_listen(rp_loop *loop)
{
    struct io_uring_cqe *cqe;
    if (io_uring_cq_ready(&loop->ring) && io_uring_peek_cqe(&loop->ring, &cqe) == 0 &&
        cqe->user_data == (uint64_t)(uintptr_t)&loop->drain_op) {
        io_uring_cqe_seen(&loop->ring, cqe);
        loop->drain_op.pending = false;
    }
    loop->tail_at_rest = io_uring_smp_load_acquire(loop->ring.cq.ktail);
    io_uring_cq_eventfd_toggle(&loop->ring, true);
}

int rp_loop_run(rp_loop *loop, rp_run_mode mode)
{
    if (!loop || mode < RP_RUN_DEFAULT || mode > RP_RUN_NOWAIT)
        return -EINVAL;
    if (loop->in_run || loop->in_wake)
        return -EBUSY;
    loop->in_run = true;
    loop->woke = false;
    loop->handled = 0;
    if (loop->host_registered)
        host_fd_quiet(loop);
    /* Callbacks run before the first wait see the time now, not the time
     * the last run ended. */
    rp__loop_now_fresh(loop);
    do {
        bool may_block = mode != RP_RUN_NOWAIT && loop_alive(loop) &&
                         !atomic_load_explicit(&loop->stop, memory_order_relaxed);
        loop_iteration(loop, may_block);
    } while ((mode == RP_RUN_DEFAULT || (mode == RP_RUN_ONCE && !loop->handled)) && loop_alive(loop) &&
             !atomic_load_explicit(&loop->stop, memory_order_relaxed));
    atomic_store_explicit(&loop->stop, false, memory_order_relaxed);
    if (loop->prepared.head)
        reap_before_sending(loop);
    run_prepared(loop);
    if (loop->host_registered)
        host_fd_drain(loop);
    ktimer_sync(loop);
    rp__loop_submit(loop);
    loop->in_run = false;
    if (loop->host_registered)
        host_fd_listen(loop);
    /* Work left for the next pass, or that arrived while signals were
     * off, must wake an embedding host again. */
    if (ready_now(loop))
        poke_host(loop);
    return loop_alive(loop);
}

static int ms_until(uint64_t deadline_ns, uint64_t now_ns)
{
    if (deadline_ns <= now_ns)
        return 0;
    uint64_t ms = (deadline_ns - now_ns + RP__NS_PER_MS - 1) / RP__NS_PER_MS;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

int rp_loop_alive(const rp_loop *loop) { return loop ? loop_alive(loop) : -EINVAL; }

int rp_loop_timeout(const rp_loop *loop)
{
    if (!loop)
        return -EINVAL;
    rp_loop *mut = (rp_loop *)loop;
    mut->host_asks = true;
    if (ready_now(loop))
        return 0;
    rp__timer *next = rp__heap_min(&loop->timers);
    return next ? ms_until(next->deadline_ns, clock_now_ns()) : -1;
}

int rp_loop_set_host(rp_loop *loop, void (*wake)(void *host), void *host)
{
    if (!loop || (!wake && host))
        return -EINVAL;
    if (wake && loop->host_wake)
        return -EBUSY;
    loop->host_wake = wake;
    loop->host = host;
    loop->host_asks = false; /* the next host may only watch the fd */
    /* The next host has been told nothing; work the last one was told of
     * and never ran reaches one that only watches the fd now. A new hook
     * is not called here: its host runs the loop once when it attaches. */
    loop->woke = false;
    if (!wake && ready_now(loop))
        poke_host(loop);
    return 0;
}

void *rp_loop_host(const rp_loop *loop) { return loop ? loop->host : NULL; }
