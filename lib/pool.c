/* The connection pool: go-redis ConnPool's state machine on the loop.
 *
 * A get takes a turn (pool_size of them) or waits for one in a strict FIFO
 * queue. With a turn it pops an idle connection (checked first when idle
 * longer than the health window) or, failing that, waits for a dial. Dials
 * are not owned by requests: a finished dial goes to the oldest request
 * that needs one, or to the idle list, so a waiter's timeout or cancel
 * never wastes a dial under way.
 *
 * The turn travels with the connection handed out (conn->holds_turn) and
 * comes back when the holder puts or removes it, whatever becomes of the
 * connection. Hand-offs that may chain (a freed turn served at once, a
 * failed dial failing the next request) run in loops guarded against
 * re-entry, never by recursion, so no queue length can exhaust the stack.
 */
#include "pool_conn.h"
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const rp__pool_vtable conn_pool_vtable;
static const rp__conn_events conn_events;
static void serve(rp__conn_pool *cp, rp__req *req);
static void pump_dials(rp__conn_pool *cp);

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
 * request until the callback runs (rp__conn_claim). */
static void req_deliver(rp__conn_pool *cp, rp__req *req, rp_conn *conn)
{
    conn->holds_turn = req->holds_turn;
    req->holds_turn = false;
    conn->used_ns = rp__cp_now(cp);
    conn->state = RP__CONN_HANDING_OUT;
    rp__req_complete(&cp->reqs, req, conn, 0);
}

/* -------------------------------------------------------- checks, watches */

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
    pump_dials(cp);
}

/* The protocol layer's watch saw FIN, RST or stray bytes. A held
 * connection is removed when its holder puts it. */
static void conn_broke(rp_conn *conn)
{
    rp__conn_pool *cp = rp__cp_of(conn);
    if (conn->state != RP__CONN_IDLE)
        return;
    rp__cp_conn_discard(cp, conn, RP_CLOSE_UNHEALTHY);
    pump_dials(cp);
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
    pump_dials(cp);
}

/* ------------------------------------------------------------------ dial */

/* The request a failed dial was for, or else the oldest waiting for one,
 * gets its error. False when nobody took it. */
static bool dial_failed_for(rp__conn_pool *cp, rp__req *for_req, int status)
{
    rp__req *req = for_req ? for_req : rp__req_queue_pop(&cp->needs_conn);
    if (req)
        req_fail(cp, req, status);
    return req != NULL;
}

/* Hands a dial's outcome to its request or whoever waits. */
static void dial_finish(rp__conn_pool *cp, rp_conn *conn, int status, bool in_setup)
{
    rp__req *for_req = conn->for_req;
    conn->for_req = NULL;
    if (!rp__cp_dial_settle(cp, conn, status, in_setup))
        return;
    if (status != 0)
        dial_failed_for(cp, for_req, status);
    else if (for_req)
        req_deliver(cp, for_req, conn);
    else
        conn_available(cp, conn);
    pump_dials(cp);
}

static void conn_dialed(rp_conn *conn, int status)
{
    rp__conn_pool *cp = rp__cp_of(conn);
    if (status < 0 || conn->state == RP__CONN_CLOSED || !cp->opts.on_connect) {
        dial_finish(cp, conn, status, false);
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
    dial_finish(rp__cp_of(conn), conn, status < 0 ? status : 0, true);
    return 0;
}

/* The lookup ended: the dials that waited for it connect, or fail with its
 * error. Those a failure makes pump_dials start wait behind them for the
 * next lookup; a hook that closes the pool empties the list. */
static void addrs_resolved(void *data, rp__addrs *answer, int status, const char *error)
{
    rp__conn_pool *cp = data;
    if (status == RP_EADDRINFO)
        cp->resolve_error = error;
    for (unsigned n = cp->resolving.len; n; n--) {
        rp_conn *conn = rp__cp_link_conn(rp__list_pop(&cp->resolving, false));
        if (!conn)
            break;
        int rc = answer ? rp__conn_dial(conn, answer, cp->opts.dial_timeout_ms) : status;
        if (rc < 0)
            dial_finish(cp, conn, rc, false);
    }
}

/* Starts the dials that waiting requests and min_idle_conns call for. A
 * dial that cannot even start fails the oldest waiting request, so every
 * request ends; in fail-fast mode the requests no dial covers fail at once. */
static void pump_dials(rp__conn_pool *cp)
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
            pump_dials(cp);
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
        pump_dials(cp);
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

/* A holder gives a connection back: kept (put) when it is still good, or
 * closed (remove, or put of a broken, expired or non-pooled one, or of one
 * with bytes left unread). Its turn goes back to the pool either way, or
 * straight to the oldest waiter along with the connection. */
static void conn_return(rp__conn_pool *cp, rp_conn *conn, bool keep)
{
    bool turn = conn->holds_turn;
    conn->holds_turn = false;
    uint64_t now = rp__cp_now(cp);
    bool removed = !keep;
    keep = keep && conn->pooled && !conn->broken && !cp->closed && !rp__conn_busy(conn) &&
           !rp__cp_conn_expired(cp, conn, now);
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
    } else {
        rp__cp_conn_discard(cp, conn, return_close_reason(cp, conn, removed, now));
        pump_dials(cp);
    }
    if (turn)
        release_turn(cp);
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

/* ------------------------------------------------------------- creation */

/* Expired idle connections closed, min_idle_conns may call for dials. */
static void maintenance_fired(rp__timer *timer)
{
    rp__conn_pool *cp = RP__CONTAINER_OF(timer, rp__conn_pool, maintenance);
    rp__cp_idle_maintain(cp);
    pump_dials(cp);
}

static const rp__conn_events conn_events = {
    .dialed = conn_dialed,
    .watched = conn_watched,
    .released = rp__cp_conn_released,
    .broke = conn_broke,
};

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
    .close = rp__cp_close,
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
        .probe_interval_ms = 50,
        .probe_interval_max_ms = 1000,
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
    if (opts->probe_interval_ms == 0)
        opts->probe_interval_ms = defaults.probe_interval_ms;
    if (opts->probe_interval_max_ms == 0)
        opts->probe_interval_max_ms = defaults.probe_interval_max_ms;
    if (opts->probe_interval_max_ms < opts->probe_interval_ms)
        opts->probe_interval_max_ms = opts->probe_interval_ms; /* a fixed interval */
    return 0;
}

/* A numeric address or a path is the list every dial uses; a host name
 * gets a resolver, which starts no thread until a dial needs it. */
static int target_init(rp__conn_pool *cp, rp_loop *loop, const char *text)
{
    rp__addr addr;
    rp__hostport name;
    int rc = rp__addr_parse(text, &addr, &name);
    if (rc == RP__ADDR_NAME)
        return rp__resolver_new(&cp->resolver, loop, &name, addrs_resolved, cp);
    if (rc < 0)
        return rc;
    if (!(cp->addrs = rp__addrs_new(1)))
        return -ENOMEM;
    cp->addrs->addr[0] = addr;
    return 0;
}

static int pool_new(rp_pool **out, rp_loop *loop, const rp_pool_options *opts, bool targeted)
{
    if (!out || !loop || !opts)
        return -EINVAL;
    rp__conn_pool *cp = rp__calloc(1, sizeof *cp);
    if (!cp)
        return -ENOMEM;
    cp->opts = *opts;
    int rc = options_normalize(&cp->opts);
    if (rc == 0 && targeted)
        rc = target_init(cp, loop, opts->addr);
    if (rc == 0 && (rc = rp__tls_ctx_new(&cp->tls, &opts->tls, opts->addr)) < 0)
        rp__cp_target_release(cp);
    if (rc < 0) {
        rp__free(cp);
        return rc;
    }
    memset(&cp->opts.tls, 0, sizeof cp->opts.tls); /* built into cp->tls */
    snprintf(cp->addr_text, sizeof cp->addr_text, "%s", targeted ? opts->addr : "");
    cp->opts.addr = NULL; /* the caller's string may not outlive the call */
    cp->events = &conn_events;
    rp__pool_init(&cp->base, &conn_pool_vtable, loop, &cp->reqs);
    cp->base.pool_timeout_ms = cp->opts.pool_timeout_ms;
    rp__timer_init(&cp->maintenance, maintenance_fired, false);
    rp__timer_init(&cp->probe, rp__cp_probe_fired, false);
    rp__reqs_init(&cp->reqs, &cp->base, cp->opts.pool_timeout_ms, rp__cp_after_callback);
    pump_dials(cp);
    *out = &cp->base;
    return 0;
}

const char *rp_pool_tls_error(const rp_pool *pool)
{
    if (!pool || pool->vt != &conn_pool_vtable)
        return NULL;
    return rp__tls_ctx_error(((const rp__conn_pool *)pool)->tls);
}

int rp_pool_new(rp_pool **out, rp_loop *loop, const rp_pool_options *opts) { return pool_new(out, loop, opts, true); }

/* ------------------------------------------------------ target changes */

/* For sentinel.c: a pool whose dials wait for rp__pool_set_target. */
int rp__pool_new_untargeted(rp_pool **out, rp_loop *loop, const rp_pool_options *opts)
{
    return pool_new(out, loop, opts, false);
}

/* Future dials go to addr. Connections made for the old target are not
 * reused: idle ones close now, the others (in use, dialling, being set
 * up) close when they come back. Dials that waited for a target start. */
static void target_switch(rp__conn_pool *cp)
{
    rp__link *link = cp->all.head, *next;
    for (; link; link = next) {
        next = link->next;
        rp_conn *conn = RP__CONTAINER_OF(link, rp_conn, all_link);
        if (conn->state == RP__CONN_IDLE)
            rp__cp_conn_discard(cp, conn, RP_CLOSE_REMOVED);
        else if (conn->state != RP__CONN_RESOLVING && conn->state != RP__CONN_CLOSED)
            conn->broken = true;
    }
    for (unsigned n = cp->resolving.len; n; n--) {
        rp_conn *conn = rp__cp_link_conn(rp__list_pop(&cp->resolving, false));
        int rc = rp__cp_dial_connect(cp, conn);
        if (rc < 0)
            dial_finish(cp, conn, rc, false);
    }
    pump_dials(cp);
}

/* addr NULL: no target; with error 0 dials wait for one, with an error
 * they fail with it (those waiting now too). */
int rp__pool_set_target(rp_pool *pool, const char *addr, int error)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (!pool || pool->vt != &conn_pool_vtable || cp->closed)
        return -EINVAL;
    rp__addrs *old_addrs = cp->addrs;
    rp__resolver *old_resolver = cp->resolver;
    cp->addrs = NULL;
    cp->resolver = NULL;
    int rc = addr ? target_init(cp, rp__cp_loop(cp), addr) : 0;
    rp__addrs *new_addrs = cp->addrs;
    rp__resolver *new_resolver = cp->resolver;
    cp->addrs = old_addrs;
    cp->resolver = old_resolver;
    if (rc < 0)
        return rc;
    rp__cp_target_release(cp);
    cp->addrs = new_addrs;
    cp->resolver = new_resolver;
    cp->target_error = addr ? 0 : error;
    if (addr) /* the failures counted were the old target's */
        rp__cp_dial_connected(cp);
    snprintf(cp->addr_text, sizeof cp->addr_text, "%s", addr ? addr : "");
    target_switch(cp);
    return 0;
}

const char *rp_pool_resolve_error(const rp_pool *pool)
{
    if (!pool || pool->vt != &conn_pool_vtable)
        return NULL;
    return ((const rp__conn_pool *)pool)->resolve_error;
}
