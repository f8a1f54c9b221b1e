/* The connection pool: go-redis ConnPool's state machine on the loop.
 *
 * A get takes a turn (pool_size of them) or waits for one in a strict FIFO
 * queue. With a turn it pops an idle connection (checked first when idle
 * longer than the health window) or, failing that, waits for a dial. Dials
 * are not owned by requests: a finished dial goes to the oldest request
 * that needs one, or to the idle list, so a waiter's timeout or cancel
 * never wastes a dial under way. */
#include "conn.h"
#include "pool.h"
#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RP__PROBE_INTERVAL_MS 1000u

enum {
    REQ_NEEDS_CONN = RP__REQ_OWN, /* holds a turn, waits for a dial */
    REQ_CHECKING,                 /* holds a turn, its connection is being checked */
    REQ_DIALING,                  /* rp_pool_new_conn: waits for its own dial */
};

struct rp__conn_pool {
    rp_pool base;
    rp_pool_options opts;
    rp__addr addr;
    bool closed;

    rp__reqs reqs;        /* every get, and the waiters for a turn */
    unsigned turns_used;
    rp__req_queue needs_conn; /* REQ_NEEDS_CONN, oldest first */
    rp_conn *idle_head, *idle_tail; /* put pushes at head */
    unsigned idle_len;
    unsigned pooled_open; /* pooled connections open (go-redis poolSize) */
    unsigned open_conns;  /* every open connection */
    rp_conn *all_conns;   /* every record not yet freed */
    unsigned records;
    unsigned dialing;     /* pooled dials in flight */
    unsigned consecutive_dial_errors;
    rp_stats stats;

    rp__timer maintenance; /* idle watches and expiry */
    rp__timer probe;       /* redials while dials fail fast */
};

static const rp__pool_vtable conn_pool_vtable;
static void serve(rp__conn_pool *cp, rp__req *req);
static void pump_dials(rp__conn_pool *cp);
static void conn_close(rp__conn_pool *cp, rp_conn *conn);
static void finish_close_if_done(rp__conn_pool *cp);

static rp_loop *pool_loop(const rp__conn_pool *cp) { return cp->base.loop; }
static uint64_t now_ns(const rp__conn_pool *cp) { return rp__loop_now(pool_loop(cp)); }
static uint64_t ms_ns(uint32_t ms) { return (uint64_t)ms * RP__NS_PER_MS; }
rp_loop *rp__conn_loop(const rp_conn *conn) { return conn->owner->base.loop; }

/* ------------------------------------------------------------ idle list */

static void idle_push(rp__conn_pool *cp, rp_conn *conn)
{
    conn->state = RP__CONN_IDLE;
    conn->prev = NULL;
    conn->next = cp->idle_head;
    if (cp->idle_head)
        cp->idle_head->prev = conn;
    else
        cp->idle_tail = conn;
    cp->idle_head = conn;
    cp->idle_len++;
}

static void idle_unlink(rp__conn_pool *cp, rp_conn *conn)
{
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        cp->idle_head = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    else
        cp->idle_tail = conn->prev;
    cp->idle_len--;
}

/* LIFO takes the most recently put connection, FIFO the oldest. */
static rp_conn *idle_pop(rp__conn_pool *cp)
{
    rp_conn *conn = cp->opts.pool_fifo ? cp->idle_tail : cp->idle_head;
    if (conn)
        idle_unlink(cp, conn);
    return conn;
}

/* -------------------------------------------------------------- requests */

static void req_complete(rp__conn_pool *cp, rp__req *req, rp_conn *conn, int status)
{
    rp__req_complete(&cp->reqs, req, conn, status);
}

static void release_turn(rp__conn_pool *cp)
{
    rp__req *waiter = rp__reqs_next_waiter(&cp->reqs);
    if (!waiter) {
        cp->turns_used--;
        return;
    }
    waiter->holds_turn = true;
    serve(cp, waiter);
}

static void req_fail(rp__conn_pool *cp, rp__req *req, int status)
{
    if (req->holds_turn) {
        req->holds_turn = false;
        release_turn(cp);
    }
    req_complete(cp, req, NULL, status);
}

/* The turn, if any, now travels with the connection. */
static void req_deliver(rp__conn_pool *cp, rp__req *req, rp_conn *conn)
{
    req->holds_turn = false;
    conn->used_ns = now_ns(cp);
    conn->state = RP__CONN_IN_USE;
    req_complete(cp, req, conn, 0);
}

/* ----------------------------------------------------------- connections */

static bool conn_expired(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now)
{
    if (now >= conn->expires_ns)
        return true;
    return cp->opts.conn_max_idle_time_ms && now - conn->used_ns >= ms_ns(cp->opts.conn_max_idle_time_ms);
}

/* Used within the health window: handed out with no check. */
static bool conn_recently_used(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now)
{
    return now - conn->used_ns < ms_ns(cp->opts.health_check_idle_ms);
}

static void conn_free_if_drained(rp__conn_pool *cp, rp_conn *conn)
{
    if (conn->state != RP__CONN_CLOSED || !rp__conn_releasable(conn))
        return;
    if (conn->all_prev)
        conn->all_prev->all_next = conn->all_next;
    else
        cp->all_conns = conn->all_next;
    if (conn->all_next)
        conn->all_next->all_prev = conn->all_prev;
    if (conn->ext_free)
        conn->ext_free(conn->ext);
    free(conn);
    cp->records--;
    if (cp->closed)
        finish_close_if_done(cp);
}

void rp__conn_op_finished(rp_conn *conn) { conn_free_if_drained(conn->owner, conn); }

/* Pending ops are cancelled and the socket shut down first, so the peer
 * sees FIN now rather than when the kernel drops its last reference. */
static void conn_close(rp__conn_pool *cp, rp_conn *conn)
{
    if (conn->state == RP__CONN_IDLE)
        idle_unlink(cp, conn);
    if (conn->state != RP__CONN_DIALING && conn->state != RP__CONN_SETUP) {
        cp->open_conns--;
        if (conn->pooled)
            cp->pooled_open--;
    }
    conn->state = RP__CONN_CLOSED;
    rp__op *ops[] = {&conn->watch_op, &conn->dial_op, &conn->send.op, &conn->recv.op};
    bool any_pending = false;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (ops[i]->pending) {
            rp__op_cancel(pool_loop(cp), ops[i]);
            any_pending = true;
        }
    }
    if (any_pending) {
        /* Queued SQEs must take their file reference before the fd
         * number is closed and perhaps reused by the next socket. */
        rp__loop_submit(pool_loop(cp));
        shutdown(conn->fd, SHUT_RDWR);
        rp__loop_count_syscalls(pool_loop(cp), 1);
    }
    close(conn->fd);
    rp__loop_count_syscalls(pool_loop(cp), 1);
    conn->fd = -1;
    conn_free_if_drained(cp, conn);
}

static void conn_close_stale(rp__conn_pool *cp, rp_conn *conn)
{
    cp->stats.stale_conns++;
    conn_close(cp, conn);
}

static void maintenance_arm(rp__conn_pool *cp, uint64_t deadline)
{
    if (deadline == UINT64_MAX || cp->closed)
        return;
    if (!rp__timer_armed(&cp->maintenance) || deadline < cp->maintenance.deadline_ns)
        rp__timer_arm(pool_loop(cp), &cp->maintenance, deadline);
}

static uint64_t conn_next_event(const rp__conn_pool *cp, const rp_conn *conn)
{
    uint64_t next = conn->expires_ns;
    if (cp->opts.conn_max_idle_time_ms)
        next = RP__MIN(next, conn->used_ns + ms_ns(cp->opts.conn_max_idle_time_ms));
    if (!conn->watching)
        next = RP__MIN(next, conn->used_ns + ms_ns(cp->opts.health_check_idle_ms));
    return next;
}

/* A connection nobody holds: the oldest request waiting for a dial takes
 * it, else it joins the idle list. */
static void conn_available(rp__conn_pool *cp, rp_conn *conn)
{
    rp__req *req = rp__req_queue_pop(&cp->needs_conn);
    if (req) {
        req_deliver(cp, req, conn);
        return;
    }
    idle_push(cp, conn);
    maintenance_arm(cp, conn_next_event(cp, conn));
}

/* The zero-length recv: pending (no MSG_DONTWAIT) it is the idle watch;
 * with MSG_DONTWAIT it is a check that answers at once. */
static void watch_submit(rp__conn_pool *cp, rp_conn *conn, int flags)
{
    struct io_uring_sqe *sqe = rp__loop_sqe(pool_loop(cp));
    io_uring_prep_recv(sqe, conn->fd, NULL, 0, flags);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)&conn->watch_op);
    rp__op_start(pool_loop(cp), &conn->watch_op, false, flags != 0);
}

static void check_start(rp__conn_pool *cp, rp_conn *conn, rp__req *req)
{
    req->state = REQ_CHECKING;
    req->conn = conn;
    conn->for_req = req;
    conn->state = RP__CONN_CHECKING;
    if (conn->watching)
        rp__op_cancel(pool_loop(cp), &conn->watch_op);
    else
        watch_submit(cp, conn, MSG_DONTWAIT);
}

static void check_done(rp__conn_pool *cp, rp_conn *conn, bool healthy)
{
    rp__req *req = conn->for_req;
    conn->for_req = NULL;
    if (!healthy) {
        conn_close_stale(cp, conn);
        if (req)
            serve(cp, req);
        pump_dials(cp);
        return;
    }
    if (req) {
        cp->stats.hits++;
        req_deliver(cp, req, conn);
    } else {
        conn_available(cp, conn);
    }
}

static void watch_done(rp__op *op)
{
    rp_conn *conn = RP__CONTAINER_OF(op, rp_conn, watch_op);
    rp__conn_pool *cp = conn->owner;
    bool was_watching = conn->watching;
    conn->watching = false;
    if (conn->state == RP__CONN_CLOSED) {
        conn_free_if_drained(cp, conn);
    } else if (conn->state == RP__CONN_CHECKING) {
        /* A cancelled watch or an empty non-blocking read: still healthy. */
        int want = was_watching ? -ECANCELED : -EAGAIN;
        check_done(cp, conn, op->res == want);
    } else {
        /* FIN, RST or stray bytes on an idle connection. */
        conn_close_stale(cp, conn);
        pump_dials(cp);
    }
}

/* ------------------------------------------------------------------ dial */

static void probe_arm(rp__conn_pool *cp)
{
    rp__timer_arm(pool_loop(cp), &cp->probe, now_ns(cp) + ms_ns(RP__PROBE_INTERVAL_MS));
}

static bool dials_fail_fast(const rp__conn_pool *cp)
{
    return cp->consecutive_dial_errors >= (unsigned)cp->opts.pool_size;
}

static void dial_failed(rp__conn_pool *cp, rp__req *for_req, int err)
{
    cp->stats.dial_errors++;
    cp->stats.last_dial_error = err;
    if (++cp->consecutive_dial_errors == (unsigned)cp->opts.pool_size)
        probe_arm(cp);
    rp__req *req = for_req ? for_req : rp__req_queue_pop(&cp->needs_conn);
    if (req)
        req_fail(cp, req, err);
}

static void dial_succeeded(rp__conn_pool *cp, rp_conn *conn, rp__req *for_req)
{
    bool was_failing = dials_fail_fast(cp);
    cp->consecutive_dial_errors = 0;
    cp->open_conns++;
    /* As go-redis: past pool_size a connection serves its caller once and
     * closes on put (a check for a cancelled get can leave one spare). */
    if (conn->pooled && cp->pooled_open >= (unsigned)cp->opts.pool_size)
        conn->pooled = false;
    if (conn->pooled)
        cp->pooled_open++;
    conn->created_ns = conn->used_ns = now_ns(cp);
    conn->expires_ns = UINT64_MAX;
    if (cp->opts.conn_max_lifetime_ms) {
        uint64_t jitter = cp->opts.conn_max_lifetime_jitter_ms
                              ? rp__loop_random(pool_loop(cp)) % (cp->opts.conn_max_lifetime_jitter_ms + 1)
                              : 0;
        uint64_t lifetime = ms_ns(cp->opts.conn_max_lifetime_ms);
        conn->expires_ns = conn->created_ns + lifetime - RP__MIN(ms_ns((uint32_t)jitter), lifetime);
    }
    if (for_req) {
        req_deliver(cp, for_req, conn);
    } else {
        conn_available(cp, conn);
    }
    if (was_failing)
        rp__timer_disarm(pool_loop(cp), &cp->probe);
}

/* A dial ends after its connect and, when the pool has on_connect, after
 * the set-up; until then it counts as a dial in flight. */
static void dial_finish(rp__conn_pool *cp, rp_conn *conn, int status)
{
    rp__req *for_req = conn->for_req;
    conn->for_req = NULL;
    if (conn->pooled)
        cp->dialing--;
    if (conn->state == RP__CONN_CLOSED) {
        conn_free_if_drained(cp, conn); /* the pool closed under it */
        return;
    }
    if (status < 0) {
        conn_close(cp, conn);
        dial_failed(cp, for_req, status);
    } else {
        dial_succeeded(cp, conn, for_req);
    }
    pump_dials(cp);
}

static void dial_done(rp__op *op)
{
    rp_conn *conn = RP__CONTAINER_OF(op, rp_conn, dial_op);
    rp__conn_pool *cp = conn->owner;
    int res = rp__op_result(op);
    if (res < 0 || conn->state == RP__CONN_CLOSED || !cp->opts.on_connect) {
        dial_finish(cp, conn, res);
        return;
    }
    conn->state = RP__CONN_SETUP;
    conn->in_setup = true;
    cp->opts.on_connect(conn, cp->opts.on_connect_data);
}

int rp_conn_setup_done(rp_conn *conn, int status)
{
    if (!conn || !conn->in_setup) {
        rp__log_misuse("rp_conn_setup_done: connection is not being set up");
        return -EINVAL;
    }
    conn->in_setup = false;
    if (conn->state == RP__CONN_SETUP)
        conn->state = RP__CONN_DIALING;
    dial_finish(conn->owner, conn, status);
    return 0;
}

/* Starts a dial; a request that must have this very connection passes
 * itself as for_req (rp_pool_new_conn), others let it go to whoever waits. */
static int dial_start(rp__conn_pool *cp, bool pooled, rp__req *for_req)
{
    rp_conn *conn = calloc(1, sizeof *conn);
    if (!conn)
        return -ENOMEM;
    conn->fd = socket(cp->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    rp__loop_count_syscalls(pool_loop(cp), 1);
    if (conn->fd < 0) {
        int err = -errno;
        free(conn);
        return err;
    }
    conn->owner = cp;
    conn->state = RP__CONN_DIALING;
    conn->pooled = pooled;
    conn->for_req = for_req;
    conn->read_timeout_ms = cp->opts.read_timeout_ms;
    conn->write_timeout_ms = cp->opts.write_timeout_ms;
    conn->watch_op.done = watch_done;
    conn->dial_op.done = dial_done;
    rp__conn_io_init(conn);
    conn->all_next = cp->all_conns;
    if (cp->all_conns)
        cp->all_conns->all_prev = conn;
    cp->all_conns = conn;
    cp->records++;
    if (pooled)
        cp->dialing++;

    struct io_uring_sqe *connect_sqe, *timeout_sqe;
    rp__loop_sqe_pair(pool_loop(cp), &connect_sqe, &timeout_sqe);
    io_uring_prep_connect(connect_sqe, conn->fd, (struct sockaddr *)&cp->addr.sa, cp->addr.len);
    rp__op_link_timeout(&conn->dial_op, connect_sqe, timeout_sqe, &conn->dial_ts, cp->opts.dial_timeout_ms);
    rp__op_start(pool_loop(cp), &conn->dial_op, true, true);
    return 0;
}

static bool want_dial(const rp__conn_pool *cp)
{
    if (cp->dialing >= (unsigned)cp->opts.max_concurrent_dials)
        return false;
    if (cp->needs_conn.len > cp->dialing)
        return true;
    unsigned spare = cp->dialing - cp->needs_conn.len;
    unsigned room = (unsigned)cp->opts.pool_size - RP__MIN((unsigned)cp->opts.pool_size, cp->pooled_open + cp->dialing);
    return room > 0 && cp->idle_len + spare < (unsigned)cp->opts.min_idle_conns;
}

/* Starts the dials that waiting requests and min_idle_conns call for. */
static void pump_dials(rp__conn_pool *cp)
{
    while (!cp->closed && !dials_fail_fast(cp) && want_dial(cp)) {
        int rc = dial_start(cp, true, NULL);
        if (rc < 0) {
            dial_failed(cp, NULL, rc);
            return;
        }
    }
    if (dials_fail_fast(cp)) {
        rp__req *req;
        while ((req = rp__req_queue_pop(&cp->needs_conn)))
            req_fail(cp, req, cp->stats.last_dial_error);
    }
}

static void probe_fired(rp__timer *timer)
{
    rp__conn_pool *cp = RP__CONTAINER_OF(timer, rp__conn_pool, probe);
    int rc = cp->dialing ? 0 : dial_start(cp, true, NULL);
    if (rc < 0)
        dial_failed(cp, NULL, rc);
    probe_arm(cp);
}

/* ------------------------------------------------------------------ serve */

static bool exhausted(const rp__conn_pool *cp)
{
    return cp->opts.max_active_conns && cp->needs_conn.len >= cp->dialing &&
           cp->pooled_open + cp->dialing >= (unsigned)cp->opts.max_active_conns;
}

/* req holds a turn: give it an idle connection, or make it wait for a dial. */
static void serve(rp__conn_pool *cp, rp__req *req)
{
    rp_conn *conn;
    uint64_t now = now_ns(cp);
    while ((conn = idle_pop(cp))) {
        if (conn_expired(cp, conn, now)) {
            conn_close_stale(cp, conn);
            continue;
        }
        if (!conn_recently_used(cp, conn, now)) {
            check_start(cp, conn, req);
            return;
        }
        cp->stats.hits++;
        req_deliver(cp, req, conn);
        if (cp->opts.min_idle_conns)
            pump_dials(cp);
        return;
    }
    cp->stats.misses++;
    bool spare_dial = cp->dialing > cp->needs_conn.len;
    if (exhausted(cp)) {
        req_fail(cp, req, RP_EPOOLEXHAUSTED);
    } else if (dials_fail_fast(cp) && !spare_dial) {
        req_fail(cp, req, cp->stats.last_dial_error);
    } else {
        req->state = REQ_NEEDS_CONN;
        rp__req_queue_push(&cp->needs_conn, req);
        pump_dials(cp);
    }
}

/* A get that can be answered at once, for layers that are themselves
 * asynchronous (rp_client): an idle connection used within the health
 * window, when nobody waits and a turn is free; NULL otherwise. */
rp_conn *rp__pool_try_get(rp_pool *pool)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (pool->vt != &conn_pool_vtable || cp->closed || cp->reqs.waiters.len ||
        cp->turns_used >= (unsigned)cp->opts.pool_size)
        return NULL;
    rp_conn *conn = cp->opts.pool_fifo ? cp->idle_tail : cp->idle_head;
    uint64_t now = now_ns(cp);
    if (!conn || conn_expired(cp, conn, now) || !conn_recently_used(cp, conn, now))
        return NULL;
    idle_unlink(cp, conn);
    cp->turns_used++;
    cp->stats.hits++;
    conn->used_ns = now;
    conn->state = RP__CONN_IN_USE;
    if (cp->opts.min_idle_conns)
        pump_dials(cp);
    return conn;
}

static int64_t cp_get(rp_pool *pool, rp_get_cb cb, void *data)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (cp->closed)
        return RP_ECLOSED;
    rp__req *req = rp__req_new(&cp->reqs, cb, data);
    if (!req)
        return -ENOMEM;
    int64_t id = req->id;
    if (cp->turns_used < (unsigned)cp->opts.pool_size) {
        cp->turns_used++;
        req->holds_turn = true;
        serve(cp, req);
        return id;
    }
    int rc = rp__reqs_wait(&cp->reqs, req);
    if (rc < 0) {
        rp__req_discard(&cp->reqs, req);
        return rc;
    }
    return id;
}

static int cp_new_conn(rp_pool *pool, rp_get_cb cb, void *data)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (cp->closed)
        return RP_ECLOSED;
    rp__req *req = rp__req_new(&cp->reqs, cb, data);
    if (!req)
        return -ENOMEM;
    if (dials_fail_fast(cp)) {
        req_complete(cp, req, NULL, cp->stats.last_dial_error);
        return 0;
    }
    int rc = dial_start(cp, false, req);
    if (rc < 0) {
        rp__req_discard(&cp->reqs, req);
        return rc;
    }
    req->state = REQ_DIALING;
    return 0;
}

/* -------------------------------------------------------- cancel, put */

static bool conn_misused(rp__conn_pool *cp, const rp_conn *conn, const char *op)
{
    const char *why = NULL;
    if (!conn)
        why = "NULL connection";
    else if (conn->owner != cp)
        why = "connection belongs to another pool";
    else if (conn->state != RP__CONN_IN_USE)
        why = "connection is not in use (double put or remove?)";
    if (why)
        rp__pool_misuse(&cp->base, op, why);
    return why != NULL;
}

/* Gives back the turn a caller's connection held and closes the connection. */
static void conn_drop(rp__conn_pool *cp, rp_conn *conn, bool stale)
{
    bool pooled = conn->pooled;
    if (stale)
        cp->stats.stale_conns++;
    conn_close(cp, conn);
    if (pooled && !cp->closed)
        release_turn(cp);
    else if (pooled)
        cp->turns_used--;
    pump_dials(cp);
}

static void conn_return(rp__conn_pool *cp, rp_conn *conn)
{
    uint64_t now = now_ns(cp);
    bool reusable = conn->pooled && !conn->broken && !cp->closed && !rp__conn_busy(conn);
    if (!reusable || conn_expired(cp, conn, now)) {
        conn_drop(cp, conn, reusable);
        return;
    }
    conn->used_ns = now;
    rp__req *waiter = rp__reqs_next_waiter(&cp->reqs);
    if (waiter) {
        cp->stats.hits++;
        req_deliver(cp, waiter, conn);
        return;
    }
    if (cp->opts.max_idle_conns && cp->idle_len >= (unsigned)cp->opts.max_idle_conns) {
        conn_drop(cp, conn, false);
        return;
    }
    cp->turns_used--;
    idle_push(cp, conn);
    maintenance_arm(cp, conn_next_event(cp, conn));
}

static void cp_put(rp_pool *pool, rp_conn *conn)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (!conn_misused(cp, conn, "rp_pool_put"))
        conn_return(cp, conn);
}

static void cp_remove(rp_pool *pool, rp_conn *conn, int reason)
{
    (void)reason;
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (!conn_misused(cp, conn, "rp_pool_remove"))
        conn_drop(cp, conn, false);
}

static int cp_cancel(rp_pool *pool, int64_t id)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    rp__req *req = rp__req_find(&cp->reqs, id);
    if (!req)
        return -ENOENT;
    switch (req->state) {
    case RP__REQ_QUEUED:
        rp__reqs_unwait(&cp->reqs, req);
        break;
    case REQ_NEEDS_CONN:
        rp__req_queue_unlink(&cp->needs_conn, req);
        break;
    case REQ_CHECKING:
        /* The check goes on; a healthy connection returns to the pool. */
        req->conn->for_req = NULL;
        req->conn = NULL;
        break;
    case RP__REQ_READY: {
        rp_conn *conn = rp__req_undeliver(&cp->reqs, req);
        if (conn)
            conn_return(cp, conn);
        break;
    }
    default:
        return -ENOENT; /* rp_pool_new_conn has no id */
    }
    req_fail(cp, req, -ECANCELED);
    return 0;
}

static void cp_close_conn(rp_pool *pool, rp_conn *conn)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (!conn_misused(cp, conn, "rp_pool_close_conn"))
        conn_drop(cp, conn, false);
}

/* ----------------------------------------------------------- inspection */

static int cp_len(const rp_pool *pool) { return (int)((const rp__conn_pool *)pool)->open_conns; }
static int cp_idle_len(const rp_pool *pool) { return (int)((const rp__conn_pool *)pool)->idle_len; }

static void cp_stats(const rp_pool *pool, rp_stats *out)
{
    const rp__conn_pool *cp = (const rp__conn_pool *)pool;
    *out = cp->stats;
    out->timeouts = cp->reqs.timeouts;
    out->wait_count = cp->reqs.wait_count;
    out->wait_duration_ns = cp->reqs.wait_duration_ns;
    out->total_conns = cp->open_conns;
    out->idle_conns = cp->idle_len;
    out->dials_in_flight = cp->dialing;
}

/* ---------------------------------------------------------------- close */

/* The close callback runs once the last socket is closed and every
 * request has had its callback. */
static void finish_close_if_done(rp__conn_pool *cp)
{
    if (!cp->records && !cp->reqs.outstanding)
        rp__pool_finish_close(&cp->base);
}

static void after_callback(rp__reqs *reqs)
{
    rp__conn_pool *cp = RP__CONTAINER_OF(reqs, rp__conn_pool, reqs);
    if (cp->closed)
        finish_close_if_done(cp);
}

static int cp_close(rp_pool *pool, rp_close_cb cb, void *data)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (cp->closed)
        return RP_ECLOSED;
    cp->closed = true;
    cp->base.close_cb = cb;
    cp->base.close_data = data;
    rp__timer_disarm(pool_loop(cp), &cp->maintenance);
    rp__timer_disarm(pool_loop(cp), &cp->probe);
    /* Callbacks run later, and nothing they do can add to the queues of
     * a closed pool. */
    rp__reqs_fail_waiters(&cp->reqs, RP_ECLOSED);
    rp__req *req;
    while ((req = rp__req_queue_pop(&cp->needs_conn)))
        req_complete(cp, req, NULL, RP_ECLOSED);
    rp_conn *conn = cp->all_conns, *next;
    for (; conn; conn = next) {
        next = conn->all_next;
        if (conn->state == RP__CONN_IN_USE || conn->state == RP__CONN_CLOSED)
            continue; /* in use: closes when it comes back */
        if (conn->for_req) {
            req_complete(cp, conn->for_req, NULL, RP_ECLOSED);
            conn->for_req = NULL;
        }
        conn_close(cp, conn);
    }
    finish_close_if_done(cp);
    return 0;
}

/* ------------------------------------------------------------- creation */

static void maintenance_fired(rp__timer *timer)
{
    rp__conn_pool *cp = RP__CONTAINER_OF(timer, rp__conn_pool, maintenance);
    uint64_t now = now_ns(cp), next = UINT64_MAX;
    rp_conn *conn = cp->idle_head, *following;
    for (; conn; conn = following) {
        following = conn->next;
        if (conn_expired(cp, conn, now)) {
            conn_close_stale(cp, conn);
            continue;
        }
        if (!conn->watching && !conn_recently_used(cp, conn, now)) {
            conn->watching = true;
            watch_submit(cp, conn, 0);
        }
        next = RP__MIN(next, conn_next_event(cp, conn));
    }
    maintenance_arm(cp, next);
    pump_dials(cp);
}

static const rp__pool_vtable conn_pool_vtable = {
    .get = cp_get,
    .cancel = cp_cancel,
    .put = cp_put,
    .remove = cp_remove,
    .new_conn = cp_new_conn,
    .close_conn = cp_close_conn,
    .len = cp_len,
    .idle_len = cp_idle_len,
    .stats = cp_stats,
    .close = cp_close,
};

void rp_pool_options_init(rp_pool_options *opts)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *opts = (rp_pool_options){
        .pool_size = 10 * (int)(cpus > 0 ? cpus : 1),
        .dial_timeout_ms = 5000,
        .pool_timeout_ms = 4000,
        .read_timeout_ms = 3000,
        .write_timeout_ms = 3000,
        .conn_max_idle_time_ms = 30 * 60 * 1000,
        .health_check_idle_ms = 500,
    };
}

/* Zero means "the default" for sizes and waits, as in go-redis. */
static int options_normalize(rp_pool_options *opts)
{
    rp_pool_options defaults;
    rp_pool_options_init(&defaults);
    if (opts->pool_size < 0 || opts->min_idle_conns < 0 || opts->max_idle_conns < 0 ||
        opts->max_active_conns < 0 || opts->max_concurrent_dials < 0)
        return -EINVAL;
    if (opts->pool_size == 0)
        opts->pool_size = defaults.pool_size;
    if (opts->min_idle_conns > opts->pool_size)
        return -EINVAL;
    if (opts->max_idle_conns && opts->max_idle_conns < opts->min_idle_conns)
        return -EINVAL;
    if (opts->max_concurrent_dials == 0)
        opts->max_concurrent_dials = opts->pool_size;
    if (opts->dial_timeout_ms == 0)
        opts->dial_timeout_ms = defaults.dial_timeout_ms;
    if (opts->pool_timeout_ms == 0)
        opts->pool_timeout_ms = defaults.pool_timeout_ms;
    return 0;
}

int rp_pool_new(rp_pool **out, rp_loop *loop, const rp_pool_options *opts)
{
    if (!out || !loop || !opts)
        return -EINVAL;
    rp__conn_pool *cp = calloc(1, sizeof *cp);
    if (!cp)
        return -ENOMEM;
    cp->opts = *opts;
    int rc = options_normalize(&cp->opts);
    if (rc == 0)
        rc = rp__addr_parse(&cp->addr, opts->addr);
    if (rc < 0) {
        free(cp);
        return rc;
    }
    cp->opts.addr = NULL; /* the caller's string may not outlive the call */
    rp__pool_init(&cp->base, &conn_pool_vtable, loop, &cp->reqs);
    cp->base.pool_timeout_ms = cp->opts.pool_timeout_ms;
    rp__timer_init(&cp->maintenance, maintenance_fired, false);
    rp__timer_init(&cp->probe, probe_fired, false);
    rp__reqs_init(&cp->reqs, &cp->base, cp->opts.pool_timeout_ms, after_callback);
    pump_dials(cp);
    *out = &cp->base;
    return 0;
}
