/* The connection pool's hand-out: go-redis ConnPool's turns and requests
 * on the loop. pool_conn.h says how the pool's files stand on each other.
 *
 * A get takes a turn (pool_size of them) or waits for one in a strict FIFO
 * queue (request.c: the pool timeout). With a turn it takes an idle
 * connection (checked first when idle longer than the health window:
 * pool_idle.c) or, failing that, waits for a dial (pool_dial.c). Dials
 * are not owned by requests: a finished dial goes to the oldest request
 * that needs one, or to the idle list, so a waiter's timeout or cancel
 * never wastes a dial under way.
 *
 * The turn travels with the connection handed out (conn->holds_turn) and
 * comes back when the holder puts or removes it, whatever becomes of the
 * connection. Hand-offs that may chain (a freed turn served at once, a
 * failed dial failing the next request) run in loops guarded against
 * re-entry, never by recursion, so no queue length can exhaust the stack.
 *
 * The connection layer's events (a dial ended, a watch answered, a
 * connection broke) arrive here, as each may hand out a connection, fail
 * a request or call for a dial. */
#include "pool_conn.h"

#include <errno.h>

static void serve(rp__conn_pool *cp, rp__req *req);

/* ----------------------------------------------------------------- turns */

/* Gives free turns to waiters, oldest first. A waiter that fails at once
 * frees its turn again: this loop, not a nested call, passes it on. */
static void hand_out_turns(rp__conn_pool *cp)
{
    if (cp->handing_out_turns || !cp->reqs.waiters.head)
        return;
    cp->handing_out_turns = true;
    rp__req *waiter;
    while (cp->turns_used < (unsigned)cp->opts.pool_size && (waiter = rp__reqs_next_waiter(&cp->reqs))) {
        cp->turns_used++;
        waiter->holds_turn = true;
        serve(cp, waiter);
    }
    cp->handing_out_turns = false;
}

static void release_turn(rp__conn_pool *cp)
{
    cp->turns_used--;
    hand_out_turns(cp);
}

static void req_fail(rp__conn_pool *cp, rp__req *req, int status)
{
    bool turn = req->holds_turn;
    req->holds_turn = false;
    rp__req_complete(&cp->reqs, req, NULL, status);
    if (turn)
        release_turn(cp);
}

/* The turn, if any, now travels with the connection. Its holder is the
 * request until the callback runs (rp__conn_claim). inline: most gets end
 * here, and once pool.c was split GCC no longer inlined it into serve on
 * its own (callgrind, pool_bench: 14 instructions more per get). */
static inline void req_deliver(rp__conn_pool *cp, rp__req *req, rp_conn *conn)
{
    conn->holds_turn = req->holds_turn;
    req->holds_turn = false;
    conn->used_ns = rp__cp_now(cp);
    conn->state = RP__CONN_HANDING_OUT;
    rp__req_complete(&cp->reqs, req, conn, 0);
}

/* A connection nobody holds: the oldest request waiting for a dial takes
 * it, else it joins the idle list. */
static void conn_available(rp__conn_pool *cp, rp_conn *conn)
{
    rp__req *req = rp__req_queue_pop(&cp->needs_conn);
    if (req)
        req_deliver(cp, req, conn);
    else
        rp__cp_idle_add(cp, conn);
}

/* ----------------------------------------------------------------- dials */

/* The request a failed dial was for, or else the oldest waiting for one,
 * gets its error. False when nobody took it. */
static bool dial_failed_for(rp__conn_pool *cp, rp__req *for_req, int status)
{
    rp__req *req = for_req ? for_req : rp__req_queue_pop(&cp->needs_conn);
    if (req)
        req_fail(cp, req, status);
    return req != NULL;
}

/* A dial that cannot even start fails the oldest waiting request, so every
 * request ends; in fail-fast mode the requests no dial covers fail at once. */
void rp__cp_pump_dials(rp__conn_pool *cp)
{
    if (cp->pumping) {
        cp->pump_again = true;
        return;
    }
    if (!rp__cp_want_dial(cp) && !rp__cp_fail_fast_pending(cp))
        return;
    cp->pumping = true;
    do {
        cp->pump_again = false;
        while (rp__cp_want_dial(cp)) {
            int rc = rp__cp_dial_start(cp, true, NULL);
            if (rc < 0) {
                rp__cp_count_dial_error(cp, rc);
                if (!dial_failed_for(cp, NULL, rc))
                    break; /* only min_idle_conns wanted it: try again later */
            }
        }
        /* Dial results go to the oldest: the newest are the uncovered. */
        while (rp__cp_fail_fast_pending(cp)) {
            req_fail(cp, rp__req_of(rp__list_pop(&cp->needs_conn, true)), cp->stats.last_dial_error);
        }
    } while (cp->pump_again);
    cp->pumping = false;
}

void rp__cp_dial_finish(rp__conn_pool *cp, rp_conn *conn, int status, bool in_setup)
{
    rp__req *for_req = conn->for_req;
    conn->for_req = NULL;
    if (!rp__cp_dial_settle(cp, conn, status, in_setup)) {
        if (!cp->closed) /* abandoned for a new target: its place is free */
            rp__cp_pump_dials(cp);
        return;
    }
    if (status != 0)
        dial_failed_for(cp, for_req, status);
    else if (for_req)
        req_deliver(cp, for_req, conn);
    else
        conn_available(cp, conn);
    rp__cp_pump_dials(cp);
}

static void conn_dialed(rp_conn *conn, int status)
{
    rp__conn_pool *cp = rp__cp_of(conn);
    if (status < 0 || conn->state == RP__CONN_CLOSED || !cp->opts.on_connect) {
        rp__cp_dial_finish(cp, conn, status, false);
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
    if (status >= 0 && rp__cp_unread_at_put(conn) == RP__UNREAD_YES)
        status = -EPROTO; /* its first holder would read what the set-up left */
    rp__cp_dial_finish(rp__cp_of(conn), conn, status < 0 ? status : 0, true);
    return 0;
}

/* -------------------------------------------------------- checks, watches */

static void check_done(rp__conn_pool *cp, rp_conn *conn, bool healthy)
{
    rp__req *req = conn->for_req;
    conn->for_req = NULL;
    if (!req)
        cp->orphan_checks--;
    if (healthy)
        conn->unread = RP__UNREAD_NONE; /* the kernel just said so */
    if (!healthy) {
        rp__cp_conn_discard(cp, conn, RP_CLOSE_UNHEALTHY);
        if (req)
            serve(cp, req);
    } else if (req) {
        cp->stats.hits++;
        req_deliver(cp, req, conn);
    } else if (rp__cp_idle_full(cp) && !cp->needs_conn.len) {
        rp__cp_conn_discard(cp, conn, RP_CLOSE_TRIMMED);
    } else {
        conn_available(cp, conn);
    }
    rp__cp_pump_dials(cp);
}

/* The protocol layer's watch saw FIN, RST or stray bytes. A held
 * connection is removed when its holder puts it; a parked one now,
 * unless its send was let go (it failed or timed out, and the reset that
 * makes the kernel give the memory back is what the watch saw): the
 * send's callback follows, and conn_settled removes it as broken. */
static void conn_broke(rp_conn *conn)
{
    rp__conn_pool *cp = rp__cp_of(conn);
    bool parked_watched = conn->state == RP__CONN_PARKED && rp__conn_settling(conn);
    if (conn->state != RP__CONN_IDLE && !parked_watched)
        return;
    rp__cp_conn_discard(cp, conn, RP_CLOSE_UNHEALTHY);
    rp__cp_pump_dials(cp);
}

static void conn_watched(rp_conn *conn, int result)
{
    rp__conn_pool *cp = rp__cp_of(conn);
    bool was_watching = conn->watching;
    conn->watching = false;
    if (conn->state == RP__CONN_CHECKING) {
        /* A cancelled watch or an empty non-blocking read: still healthy. */
        check_done(cp, conn, result == (was_watching ? -ECANCELED : -EAGAIN));
        return;
    }
    /* FIN, RST or stray bytes on an idle connection. */
    rp__cp_conn_discard(cp, conn, RP_CLOSE_UNHEALTHY);
    rp__cp_pump_dials(cp);
}

/* Expired idle connections closed, min_idle_conns may call for dials. */
void rp__cp_maintenance_fired(rp__timer *timer)
{
    rp__conn_pool *cp = RP__CONTAINER_OF(timer, rp__conn_pool, maintenance);
    rp__cp_idle_maintain(cp);
    rp__cp_pump_dials(cp);
}

/* ------------------------------------------------------------------ serve */

/* req holds a turn: give it an idle connection, or make it wait for a dial. */
static void serve(rp__conn_pool *cp, rp__req *req)
{
    uint64_t now = rp__cp_now(cp);
    rp_conn *conn = rp__cp_idle_take(cp, now);
    if (conn) {
        if (!rp__cp_conn_known_healthy(cp, conn, now)) {
            rp__cp_check_start(cp, conn, req);
        } else {
            cp->stats.hits++;
            req_deliver(cp, req, conn);
        }
        if (cp->opts.min_idle_conns)
            rp__cp_pump_dials(cp);
        return;
    }
    cp->stats.misses++;
    bool conn_coming = rp__cp_conns_coming(cp) > cp->needs_conn.len;
    if (!conn_coming && rp__cp_exhausted(cp)) {
        req_fail(cp, req, RP_EPOOLEXHAUSTED);
    } else if (!conn_coming && rp__cp_fail_fast(cp)) {
        req_fail(cp, req, cp->stats.last_dial_error);
    } else {
        req->state = RP__CP_REQ_NEEDS_CONN;
        rp__list_push_back(&cp->needs_conn, &req->link);
        rp__cp_pump_dials(cp);
    }
}

/* A get that can be answered at once, for layers that are themselves
 * asynchronous (rp_client): an idle connection used within the health
 * window, when nobody waits and a turn is free; NULL otherwise. */
rp_conn *rp__pool_try_get(rp_pool *pool)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (pool->vt != &rp__cp_vtable || cp->closed || cp->reqs.waiters.len ||
        cp->turns_used >= (unsigned)cp->opts.pool_size)
        return NULL;
    uint64_t now = rp__cp_now(cp);
    rp_conn *conn = rp__cp_idle_take_ready(cp, now);
    if (!conn)
        return NULL;
    cp->turns_used++;
    cp->stats.hits++;
    conn->holds_turn = true;
    conn->used_ns = now;
    conn->state = RP__CONN_IN_USE;
    if (cp->opts.min_idle_conns)
        rp__cp_pump_dials(cp);
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
    rp__reqs_wait(&cp->reqs, req);
    return id;
}

/* go-redis NewConn: outside the idle set, and within max_active_conns. */
static int cp_new_conn(rp_pool *pool, rp_get_cb cb, void *data)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (cp->closed)
        return RP_ECLOSED;
    if (rp__cp_exhausted(cp))
        return RP_EPOOLEXHAUSTED;
    rp__req *req = rp__req_new(&cp->reqs, cb, data);
    if (!req)
        return -ENOMEM;
    if (rp__cp_fail_fast(cp)) {
        rp__req_complete(&cp->reqs, req, NULL, cp->stats.last_dial_error);
        return 0;
    }
    int rc = rp__cp_dial_start(cp, false, req);
    if (rc < 0) {
        rp__cp_count_dial_error(cp, rc);
        rp__req_discard(&cp->reqs, req);
        return rc;
    }
    req->state = RP__CP_REQ_DIALING;
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
    else if (conn->state == RP__CONN_HANDING_OUT)
        why = "connection was already given to another get (double put?)";
    else if (conn->state != RP__CONN_IN_USE)
        why = "connection is not in use (double put or remove?)";
    if (why)
        rp__pool_misuse(&cp->base, op, why);
    return why != NULL;
}

/* A connection given back with bytes its holder may have left: checked
 * first (check_done then gives it to whoever waits), or removed. */
static void put_unread(rp__conn_pool *cp, rp_conn *conn, uint8_t unread, uint64_t now)
{
    if (unread == RP__UNREAD_MAYBE) {
        conn->used_ns = now;
        rp__cp_check_unheld(cp, conn);
    } else {
        rp__cp_conn_discard(cp, conn, RP_CLOSE_UNHEALTHY);
        rp__cp_pump_dials(cp);
    }
}

/* Why a connection given back closes, for the conn_close hook. */
static rp_close_reason return_close_reason(const rp__conn_pool *cp, const rp_conn *conn, bool removed, uint64_t now)
{
    if (removed)
        return RP_CLOSE_REMOVED;
    if (conn->broken || rp__conn_busy(conn))
        return RP_CLOSE_BROKEN;
    if (rp__cp_conn_expired(cp, conn, now))
        return RP_CLOSE_EXPIRED;
    return RP_CLOSE_TRIMMED; /* not pooled, or past max_idle_conns */
}

/* Good to keep, whatever is in flight: pooled, not broken or expired,
 * and the pool open. */
static inline __attribute__((always_inline)) bool conn_sound(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now)
{
    return conn->pooled && !conn->broken && !cp->closed && !rp__cp_conn_expired(cp, conn, now);
}

/* Sound, and nothing in flight but a finished send's notification: a
 * put parks it until the notification (not known to hold unread bytes). */
static bool conn_parkable(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now)
{
    return rp__conn_settling(conn) && !rp__conn_io_owed(conn) && conn_sound(cp, conn, now) &&
           rp__cp_unread_at_put(conn) != RP__UNREAD_YES;
}

/* Where a connection given back goes: kept when it is still good, parked
 * when it would be but for its send's notification, or closed (remove, or
 * put of a broken, expired or non-pooled one, or of one with bytes left
 * unread). turn, the holder's, goes straight to the
 * oldest waiter along with the connection, if it takes it; returns
 * whether the turn is still to be given back. */
static inline __attribute__((always_inline)) bool conn_place(rp__conn_pool *cp, rp_conn *conn, bool keep, bool turn)
{
    uint64_t now = rp__cp_now(cp);
    bool removed = !keep;
    keep = keep && !rp__conn_busy(conn) && conn_sound(cp, conn, now);
    uint8_t unread = keep ? rp__cp_unread_at_put(conn) : RP__UNREAD_NONE;
    rp__req *waiter;
    if (unread != RP__UNREAD_NONE) {
        put_unread(cp, conn, unread, now);
    } else if (keep && cp->needs_conn.len) {
        req_deliver(cp, rp__req_queue_pop(&cp->needs_conn), conn);
    } else if (keep && turn && cp->reqs.waiters.head && (waiter = rp__reqs_next_waiter(&cp->reqs))) {
        waiter->holds_turn = true;
        turn = false;
        cp->stats.hits++;
        req_deliver(cp, waiter, conn);
    } else if (keep && !rp__cp_idle_full(cp)) {
        conn->used_ns = now;
        rp__cp_idle_add(cp, conn);
    } else if (!removed && conn_parkable(cp, conn, now)) {
        rp__cp_park(cp, conn);
    } else {
        rp__cp_conn_discard(cp, conn, return_close_reason(cp, conn, removed, now));
        rp__cp_pump_dials(cp);
    }
    return turn;
}

/* A holder gives a connection back. One that would be kept but for its
 * send's notification waits for it, parked, and is placed then
 * (conn_settled); gets meanwhile wait for it as for one on its way. Its
 * turn goes back to the pool at once: its holder is done. */
static void conn_return(rp__conn_pool *cp, rp_conn *conn, bool keep)
{
    bool turn = conn->holds_turn;
    conn->holds_turn = false;
    if (conn_place(cp, conn, keep, turn))
        release_turn(cp);
}

/* The parked connection's send called back: placed as a put would place
 * it, now (it may have broken, expired, or been read meanwhile). */
static void conn_settled(rp_conn *conn)
{
    rp__conn_pool *cp = rp__cp_of(conn);
    rp__cp_unpark(cp, conn);
    conn_place(cp, conn, true, false); /* its holder's turn went back at the put */
}

static void cp_put(rp_pool *pool, rp_conn *conn)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (!conn_misused(cp, conn, "rp_pool_put"))
        conn_return(cp, conn, true);
}

static void cp_remove(rp_pool *pool, rp_conn *conn, int reason)
{
    (void)reason;
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (!conn_misused(cp, conn, "rp_pool_remove"))
        conn_return(cp, conn, false);
}

static void cp_close_conn(rp_pool *pool, rp_conn *conn)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (!conn_misused(cp, conn, "rp_pool_close_conn"))
        conn_return(cp, conn, false);
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
    case RP__CP_REQ_NEEDS_CONN:
        rp__list_unlink(&cp->needs_conn, &req->link);
        break;
    case RP__CP_REQ_CHECKING:
        /* The check goes on; a healthy connection returns to the pool. */
        req->conn->for_req = NULL;
        req->conn = NULL;
        cp->orphan_checks++;
        break;
    case RP__REQ_READY: {
        if (req->status == -ECANCELED)
            return -ENOENT;
        rp_conn *conn = rp__req_undeliver(&cp->reqs, req);
        if (conn) {
            conn->state = RP__CONN_IN_USE;
            conn_return(cp, conn, true);
        }
        break;
    }
    default:
        return -ENOENT; /* rp_pool_new_conn has no id */
    }
    req_fail(cp, req, -ECANCELED);
    return 0;
}

/* ----------------------------------------------------------- inspection */

static int cp_len(const rp_pool *pool) { return (int)((const rp__conn_pool *)pool)->open_conns; }
static int cp_idle_len(const rp_pool *pool) { return (int)((const rp__conn_pool *)pool)->idle.len; }

static void cp_stats(const rp_pool *pool, rp_stats *out)
{
    const rp__conn_pool *cp = (const rp__conn_pool *)pool;
    *out = cp->stats;
    out->timeouts = cp->reqs.timeouts;
    out->wait_count = cp->reqs.wait_count;
    out->wait_duration_ns = cp->reqs.wait_duration_ns;
    out->total_conns = cp->open_conns;
    out->idle_conns = cp->idle.len;
    out->dials_in_flight = cp->dialing;
}

/* ---------------------------------------------------------------- tables */

const rp__conn_events rp__cp_events = {
    .dialed = conn_dialed,
    .watched = conn_watched,
    .released = rp__cp_conn_released,
    .broke = conn_broke,
    .settled = conn_settled,
};

const rp__pool_vtable rp__cp_vtable = {
    .get = cp_get,
    .cancel = cp_cancel,
    .put = cp_put,
    .remove = cp_remove,
    .new_conn = cp_new_conn,
    .close_conn = cp_close_conn,
    .len = cp_len,
    .idle_len = cp_idle_len,
    .stats = cp_stats,
    .close = rp__cp_close,
};
