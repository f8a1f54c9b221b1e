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
 *
 * A put is honest: what the holder left unread never reaches the next one.
 * The connection layer tracks it from the kernel's word on each recv; a
 * put removes a connection known to hold bytes and checks one that may
 * (unread_at_put), so a connection read to the end costs nothing. */
#include "conn.h"
#include "pool.h"
#include "request.h"
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    REQ_NEEDS_CONN = RP__REQ_OWN, /* holds a turn, waits for a dial */
    REQ_CHECKING,                 /* holds a turn, its connection is being checked */
    REQ_DIALING,                  /* rp_pool_new_conn: waits for its own dial */
};

typedef struct rp__conn_pool rp__conn_pool;
struct rp__conn_pool {
    rp_pool base;
    rp_pool_options opts;
    rp__addrs *addrs;         /* a numeric address or a path: every dial's */
    rp__resolver *resolver;   /* a host name instead (both NULL once closed) */
    rp__list resolving;       /* dials waiting for the resolver, oldest first */
    const char *resolve_error; /* the last failed lookup's message */
    struct rp__tls_ctx *tls;  /* TLS: one context for every dial; NULL: off */
    int target_error;     /* no target (rp__pool_set_target): 0, dials wait; < 0, they fail */
    char addr_text[128];  /* as given, for the dial hooks */
    bool closed;
    bool handing_out_turns;
    bool pumping, pump_again; /* pump_dials runs; it was asked again meanwhile */

    rp__reqs reqs;        /* every get, and the waiters for a turn */
    unsigned turns_used;
    rp__list needs_conn;  /* REQ_NEEDS_CONN, oldest first */
    rp__list idle;        /* put pushes at the front */
    unsigned pooled_open; /* pooled connections open (go-redis poolSize) */
    unsigned open_conns;  /* every open connection */
    unsigned dialing;     /* pooled dials in flight, set-up included */
    unsigned new_conn_dials;
    unsigned orphan_checks; /* checks whose get was cancelled: a connection on its way */
    unsigned consecutive_dial_errors;
    uint32_t probe_interval_ms; /* until the next probe: doubles after each that fails */
    rp__list all;         /* every record in use */
    rp__list spare;       /* released records, reused oldest first */
    rp_stats stats;

    rp__timer maintenance; /* idle watches and expiry */
    rp__timer probe;       /* redials while dials fail fast */
};

static const rp__pool_vtable conn_pool_vtable;
static const rp__conn_events conn_events;
static void serve(rp__conn_pool *cp, rp__req *req);
static void pump_dials(rp__conn_pool *cp);
static void finish_close_if_done(rp__conn_pool *cp);

static rp_loop *pool_loop(const rp__conn_pool *cp) { return cp->base.loop; }
static uint64_t now_ns(const rp__conn_pool *cp) { return rp__loop_now(pool_loop(cp)); }
static uint64_t ms_ns(uint32_t ms) { return (uint64_t)ms * RP__NS_PER_MS; }
static rp__conn_pool *owner_of(const rp_conn *conn) { return conn->owner; }
static rp_conn *idle_conn(rp__link *link) { return link ? RP__CONTAINER_OF(link, rp_conn, idle_link) : NULL; }

/* ------------------------------------------------------------- records */

/* Records are kept for the pool's life and reused oldest first, so a
 * stale pointer (a double put) still reads a record of this pool, which
 * says it is not in use, rather than freed memory. */
static rp_conn *record_take(rp__conn_pool *cp)
{
    rp_conn *conn = idle_conn(rp__list_pop(&cp->spare, false));
    if (!conn && !(conn = rp__malloc(sizeof *conn)))
        return NULL;
    rp__conn_init(conn, pool_loop(cp), cp, &conn_events);
    return conn;
}

static void record_spare(rp__conn_pool *cp, rp_conn *conn)
{
    conn->state = RP__CONN_CLOSED;
    rp__list_push_back(&cp->spare, &conn->idle_link);
}

/* The record is drained: no op, reply or callback refers to it, so the
 * caller's data (a buffer the kernel wrote into, say) may go now. */
static void conn_released(rp_conn *conn)
{
    rp__conn_pool *cp = owner_of(conn);
    void (*user_free)(void *data) = conn->user_free;
    conn->user_free = NULL; /* once, whatever it calls */
    if (user_free)
        user_free(conn->user_data);
    rp__frames_free(conn->frames);
    conn->frames = NULL;
    rp__list_unlink(&cp->all, &conn->all_link);
    record_spare(cp, conn);
    if (cp->closed)
        finish_close_if_done(cp);
}

/* ------------------------------------------------------------ idle list */

static void idle_push(rp__conn_pool *cp, rp_conn *conn)
{
    conn->state = RP__CONN_IDLE;
    rp__list_push_front(&cp->idle, &conn->idle_link);
}

static void idle_unlink(rp__conn_pool *cp, rp_conn *conn) { rp__list_unlink(&cp->idle, &conn->idle_link); }

/* LIFO takes the most recently put connection, FIFO the oldest. */
static rp_conn *idle_next(const rp__conn_pool *cp)
{
    return idle_conn(cp->opts.pool_fifo ? cp->idle.tail : cp->idle.head);
}

static rp_conn *idle_pop(rp__conn_pool *cp) { return idle_conn(rp__list_pop(&cp->idle, cp->opts.pool_fifo)); }

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
    conn->used_ns = now_ns(cp);
    conn->state = RP__CONN_HANDING_OUT;
    rp__req_complete(&cp->reqs, req, conn, 0);
}

/* ----------------------------------------------------------- connections */

static uint64_t idle_ns(const rp_conn *conn, uint64_t now) { return now > conn->used_ns ? now - conn->used_ns : 0; }

static bool conn_expired(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now)
{
    if (now >= conn->expires_ns)
        return true;
    return cp->opts.conn_max_idle_time_ms && idle_ns(conn, now) >= ms_ns(cp->opts.conn_max_idle_time_ms);
}

/* Handed out with no check: used within the health window, or watched by
 * the protocol layer's own recv, which FIN, RST or stray bytes complete. */
static bool conn_known_healthy(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now)
{
    return conn->recv_watch || idle_ns(conn, now) < ms_ns(cp->opts.health_check_idle_ms);
}

/* A dial ends, whatever its outcome: its hook, and one dial less in flight. */
static void dial_ended(rp__conn_pool *cp, rp_conn *conn, int status)
{
    /* created_ns holds the dial's start until it succeeds; 0: not timed */
    if (cp->base.hooks.dial_end && conn->created_ns)
        cp->base.hooks.dial_end(cp->base.hooks.data, cp->addr_text, rp__loop_now_fresh(pool_loop(cp)) - conn->created_ns,
                                status);
    if (conn->pooled)
        cp->dialing--;
    else
        cp->new_conn_dials--;
}

/* Counted in open_conns: past its dial and set-up. */
static bool conn_open(const rp_conn *conn)
{
    return conn->state != RP__CONN_DIALING && conn->state != RP__CONN_RESOLVING && conn->state != RP__CONN_SETUP;
}

/* Takes the connection out of the pool's books and closes it. A dial that
 * waits for addresses has nothing in flight to report its end later. */
static void conn_remove(rp__conn_pool *cp, rp_conn *conn, rp_close_reason reason)
{
    if (conn->state == RP__CONN_IDLE)
        idle_unlink(cp, conn);
    if (conn->state == RP__CONN_RESOLVING) {
        rp__list_unlink(&cp->resolving, &conn->idle_link);
        dial_ended(cp, conn, -ECANCELED);
    }
    if (conn_open(conn)) {
        cp->open_conns--;
        if (conn->pooled)
            cp->pooled_open--;
        if (cp->base.hooks.conn_close)
            cp->base.hooks.conn_close(cp->base.hooks.data, conn, reason);
    }
    rp__conn_close(conn);
}

/* As go-redis's StaleConns: every connection removed while the pool is
 * open, whatever the reason; not those closed with the pool. */
static void conn_discard(rp__conn_pool *cp, rp_conn *conn, rp_close_reason reason)
{
    if (!cp->closed)
        cp->stats.stale_conns++;
    conn_remove(cp, conn, cp->closed ? RP_CLOSE_POOL : reason);
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
    if (!conn->watching && !conn->recv_watch)
        next = RP__MIN(next, conn->used_ns + ms_ns(cp->opts.health_check_idle_ms));
    return next;
}

static void idle_add(rp__conn_pool *cp, rp_conn *conn)
{
    idle_push(cp, conn);
    maintenance_arm(cp, conn_next_event(cp, conn));
}

/* A connection nobody holds: the oldest request waiting for a dial takes
 * it, else it joins the idle list. */
static void conn_available(rp__conn_pool *cp, rp_conn *conn)
{
    rp__req *req = rp__req_queue_pop(&cp->needs_conn);
    if (req)
        req_deliver(cp, req, conn);
    else
        idle_add(cp, conn);
}

/* What a connection given back may hold that its holder did not read:
 * bytes a framed receive buffered, or what the socket may hold. The
 * protocol layer's own recv (recv_watch) reads whatever comes, and fails
 * the connection for bytes nobody asked for: nothing to learn. */
static uint8_t unread_at_put(const rp_conn *conn)
{
    if (conn->frames && rp__frames_buffered(conn->frames))
        return RP__UNREAD_YES; /* read from the socket, never handed to the holder */
    uint8_t unread = conn->unread;
    return unread != RP__UNREAD_NONE && conn->recv_watch ? RP__UNREAD_NONE : unread;
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
        rp__conn_watch(conn, true);
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
        conn_discard(cp, conn, RP_CLOSE_UNHEALTHY);
        if (req)
            serve(cp, req);
    } else if (req) {
        cp->stats.hits++;
        req_deliver(cp, req, conn);
    } else if (cp->opts.max_idle_conns && cp->idle.len >= (unsigned)cp->opts.max_idle_conns &&
               !cp->needs_conn.len) {
        conn_discard(cp, conn, RP_CLOSE_TRIMMED);
    } else {
        conn_available(cp, conn);
    }
    pump_dials(cp);
}

/* A connection put back right after a send (its reply may have come) is
 * checked before anyone gets it: a zero-length non-blocking recv, which
 * rides in the loop's next submit and answers inside it. Until then it is
 * a connection on its way, as one whose get was cancelled mid-check: a get
 * takes another idle one or waits for this one, and dials nothing. */
static void check_unheld(rp__conn_pool *cp, rp_conn *conn)
{
    cp->orphan_checks++;
    conn->for_req = NULL;
    conn->state = RP__CONN_CHECKING;
    rp__conn_watch(conn, true);
}

/* The protocol layer's watch saw FIN, RST or stray bytes. A held
 * connection is removed when its holder puts it. */
static void conn_broke(rp_conn *conn)
{
    rp__conn_pool *cp = owner_of(conn);
    if (conn->state != RP__CONN_IDLE)
        return;
    conn_discard(cp, conn, RP_CLOSE_UNHEALTHY);
    pump_dials(cp);
}

static void conn_watched(rp_conn *conn, int result)
{
    rp__conn_pool *cp = owner_of(conn);
    bool was_watching = conn->watching;
    conn->watching = false;
    if (conn->state == RP__CONN_CHECKING) {
        /* A cancelled watch or an empty non-blocking read: still healthy. */
        check_done(cp, conn, result == (was_watching ? -ECANCELED : -EAGAIN));
        return;
    }
    /* FIN, RST or stray bytes on an idle connection. */
    conn_discard(cp, conn, RP_CLOSE_UNHEALTHY);
    pump_dials(cp);
}

/* ------------------------------------------------------------------ dial */

/* Fail-fast began: the first probe comes soon, as a server restarting is
 * often back within a few hundred milliseconds. */
static void probe_first(rp__conn_pool *cp)
{
    cp->probe_interval_ms = cp->opts.probe_interval_ms;
    rp__timer_arm(pool_loop(cp), &cp->probe, now_ns(cp) + ms_ns(cp->probe_interval_ms));
}

/* A probe went out: the next one waits twice as long, up to the maximum,
 * so a server down for long sees one dial a second, not a storm. */
static void probe_next(rp__conn_pool *cp)
{
    uint64_t doubled = 2 * (uint64_t)cp->probe_interval_ms;
    cp->probe_interval_ms = (uint32_t)RP__MIN(doubled, (uint64_t)cp->opts.probe_interval_max_ms);
    rp__timer_arm(pool_loop(cp), &cp->probe, now_ns(cp) + ms_ns(cp->probe_interval_ms));
}

static bool dials_fail_fast(const rp__conn_pool *cp)
{
    return cp->consecutive_dial_errors >= (unsigned)cp->opts.pool_size;
}

/* Connections due to become free for requests waiting for one. */
static unsigned conns_coming(const rp__conn_pool *cp) { return cp->dialing + cp->orphan_checks; }

static unsigned requests_uncovered(const rp__conn_pool *cp)
{
    unsigned coming = conns_coming(cp);
    return cp->needs_conn.len > coming ? cp->needs_conn.len - coming : 0;
}

/* Open, being dialled, or promised to a waiting request by a dial that
 * max_concurrent_dials holds back: what max_active_conns bounds. */
static unsigned conns_committed(const rp__conn_pool *cp)
{
    return cp->open_conns + cp->dialing + cp->new_conn_dials + requests_uncovered(cp);
}

static bool exhausted(const rp__conn_pool *cp)
{
    return cp->opts.max_active_conns && conns_committed(cp) >= (unsigned)cp->opts.max_active_conns;
}

static void count_dial_error(rp__conn_pool *cp, int status)
{
    cp->stats.dial_errors++;
    cp->stats.last_dial_error = status;
    if (++cp->consecutive_dial_errors == (unsigned)cp->opts.pool_size)
        probe_first(cp);
}

/* The server answered: fail-fast ends. */
static void dial_connected(rp__conn_pool *cp)
{
    if (dials_fail_fast(cp))
        rp__timer_disarm(pool_loop(cp), &cp->probe);
    cp->consecutive_dial_errors = 0;
}

/* The request a failed dial was for, or else the oldest waiting for one,
 * gets its error. False when nobody took it. */
static bool dial_failed_for(rp__conn_pool *cp, rp__req *for_req, int status)
{
    rp__req *req = for_req ? for_req : rp__req_queue_pop(&cp->needs_conn);
    if (req)
        req_fail(cp, req, status);
    return req != NULL;
}

static void dial_succeeded(rp__conn_pool *cp, rp_conn *conn, rp__req *for_req)
{
    dial_connected(cp);
    cp->open_conns++;
    /* As go-redis: past pool_size a connection serves its caller once and
     * closes on put. */
    if (conn->pooled && cp->pooled_open >= (unsigned)cp->opts.pool_size)
        conn->pooled = false;
    if (conn->pooled)
        cp->pooled_open++;
    conn->created_ns = conn->used_ns = now_ns(cp);
    conn->expires_ns = UINT64_MAX;
    if (cp->opts.conn_max_lifetime_ms) {
        uint64_t jitter_range = (uint64_t)cp->opts.conn_max_lifetime_jitter_ms + 1;
        uint64_t jitter = ms_ns((uint32_t)(rp__loop_random(pool_loop(cp)) % jitter_range));
        uint64_t lifetime = ms_ns(cp->opts.conn_max_lifetime_ms);
        conn->expires_ns = conn->created_ns + lifetime - RP__MIN(jitter, lifetime);
    }
    if (for_req)
        req_deliver(cp, for_req, conn);
    else
        conn_available(cp, conn);
}

/* A dial ends after its connect and, when the pool has on_connect, after
 * the set-up; until then it counts as a dial in flight. Only a failed
 * connect counts toward fail-fast: a refused set-up (go-redis: a failed
 * init) just removes the connection. */
static void dial_finish(rp__conn_pool *cp, rp_conn *conn, int status, bool in_setup)
{
    rp__req *for_req = conn->for_req;
    conn->for_req = NULL;
    dial_ended(cp, conn, status);
    if (conn->state == RP__CONN_CLOSED) {
        rp__conn_op_finished(conn); /* the pool closed under it */
        return;
    }
    if (status == 0) {
        dial_succeeded(cp, conn, for_req);
    } else {
        if (in_setup && cp->base.hooks.conn_close)
            cp->base.hooks.conn_close(cp->base.hooks.data, conn, RP_CLOSE_SETUP);
        rp__conn_close(conn);
        if (in_setup) {
            dial_connected(cp);
            cp->stats.stale_conns++;
        } else {
            count_dial_error(cp, status);
        }
        dial_failed_for(cp, for_req, status);
    }
    pump_dials(cp);
}

static void conn_dialed(rp_conn *conn, int status)
{
    rp__conn_pool *cp = owner_of(conn);
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
    if (status >= 0 && unread_at_put(conn) == RP__UNREAD_YES)
        status = -EPROTO; /* its first holder would read what the set-up left */
    dial_finish(owner_of(conn), conn, status < 0 ? status : 0, true);
    return 0;
}

/* ------------------------------------------- the caller's per-connection data */

int rp_conn_set_data_full(rp_conn *conn, void *data, void (*free_fn)(void *data))
{
    if (!conn)
        return -EINVAL;
    conn->user_data = data;
    conn->user_free = free_fn;
    return 0;
}

rp_pool *rp_conn_pool(const rp_conn *conn) { return conn ? &owner_of(conn)->base : NULL; }

/* Connects at once to a numeric address, a path or a fresh answer;
 * otherwise the dial waits for the lookup. */
static int dial_connect(rp__conn_pool *cp, rp_conn *conn)
{
    rp__addrs *addrs = cp->addrs;
    if (!addrs && !cp->resolver && cp->target_error)
        return cp->target_error;
    if (!addrs && !cp->resolver) { /* no target yet: wait for one */
        conn->state = RP__CONN_RESOLVING;
        rp__list_push_back(&cp->resolving, &conn->idle_link);
        return 0;
    }
    if (!addrs) {
        int rc = rp__resolver_addrs(cp->resolver, &addrs);
        if (rc < 0)
            return rc;
        if (!addrs) {
            conn->state = RP__CONN_RESOLVING;
            rp__list_push_back(&cp->resolving, &conn->idle_link);
            return 0;
        }
    }
    return rp__conn_dial(conn, addrs, cp->opts.dial_timeout_ms);
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
        rp_conn *conn = idle_conn(rp__list_pop(&cp->resolving, false));
        if (!conn)
            break;
        int rc = answer ? rp__conn_dial(conn, answer, cp->opts.dial_timeout_ms) : status;
        if (rc < 0)
            dial_finish(cp, conn, rc, false);
    }
}

/* Starts a dial; a request that must have this very connection passes
 * itself as for_req (rp_pool_new_conn), others let it go to whoever waits. */
static int dial_start(rp__conn_pool *cp, bool pooled, rp__req *for_req)
{
    rp_conn *conn = record_take(cp);
    if (!conn)
        return -ENOMEM;
    conn->pooled = pooled;
    conn->for_req = for_req;
    conn->read_timeout_ms = cp->opts.read_timeout_ms;
    conn->write_timeout_ms = cp->opts.write_timeout_ms;
    conn->tcp_nodelay = !cp->opts.disable_tcp_nodelay;
    conn->tcp_keepalive = !cp->opts.disable_tcp_keepalive;
    conn->tls_ctx = cp->tls;
    const rp_hooks *hooks = &cp->base.hooks;
    cp->stats.dials++;
    if (hooks->dial_start)
        hooks->dial_start(hooks->data, cp->addr_text);
    conn->created_ns = hooks->dial_end ? rp__loop_now_fresh(pool_loop(cp)) : 0;
    int rc = dial_connect(cp, conn);
    if (rc < 0) {
        if (hooks->dial_end)
            hooks->dial_end(hooks->data, cp->addr_text, 0, rc);
        record_spare(cp, conn);
        return rc;
    }
    rp__list_push_front(&cp->all, &conn->all_link);
    if (pooled)
        cp->dialing++;
    else
        cp->new_conn_dials++;
    return 0;
}

static bool want_dial(const rp__conn_pool *cp)
{
    if (cp->closed || dials_fail_fast(cp) || cp->dialing >= (unsigned)cp->opts.max_concurrent_dials)
        return false;
    if (cp->opts.max_active_conns &&
        cp->open_conns + cp->dialing + cp->new_conn_dials >= (unsigned)cp->opts.max_active_conns)
        return false;
    if (requests_uncovered(cp))
        return true;
    unsigned spare = conns_coming(cp) - cp->needs_conn.len;
    unsigned pool_size = (unsigned)cp->opts.pool_size;
    unsigned room = pool_size - RP__MIN(pool_size, cp->pooled_open + cp->dialing);
    return room > 0 && cp->idle.len + spare < (unsigned)cp->opts.min_idle_conns;
}

static bool fail_fast_pending(const rp__conn_pool *cp) { return dials_fail_fast(cp) && requests_uncovered(cp); }

/* Starts the dials that waiting requests and min_idle_conns call for. A
 * dial that cannot even start fails the oldest waiting request, so every
 * request ends; in fail-fast mode the requests no dial covers fail at once. */
static void pump_dials(rp__conn_pool *cp)
{
    if (cp->pumping) {
        cp->pump_again = true;
        return;
    }
    if (!want_dial(cp) && !fail_fast_pending(cp))
        return;
    cp->pumping = true;
    do {
        cp->pump_again = false;
        while (want_dial(cp)) {
            int rc = dial_start(cp, true, NULL);
            if (rc < 0) {
                count_dial_error(cp, rc);
                if (!dial_failed_for(cp, NULL, rc))
                    break; /* only min_idle_conns wanted it: try again later */
            }
        }
        /* Dial results go to the oldest: the newest are the uncovered. */
        while (fail_fast_pending(cp)) {
            req_fail(cp, rp__req_of(rp__list_pop(&cp->needs_conn, true)), cp->stats.last_dial_error);
        }
    } while (cp->pump_again);
    cp->pumping = false;
}

static void probe_fired(rp__timer *timer)
{
    rp__conn_pool *cp = RP__CONTAINER_OF(timer, rp__conn_pool, probe);
    int rc = cp->dialing ? 0 : dial_start(cp, true, NULL);
    if (rc < 0)
        count_dial_error(cp, rc);
    probe_next(cp);
}

/* ------------------------------------------------------------------ serve */

/* req holds a turn: give it an idle connection, or make it wait for a dial. */
static void serve(rp__conn_pool *cp, rp__req *req)
{
    rp_conn *conn;
    uint64_t now = now_ns(cp);
    while ((conn = idle_pop(cp))) {
        if (conn_expired(cp, conn, now)) {
            conn_discard(cp, conn, RP_CLOSE_EXPIRED);
            continue;
        }
        if (!conn_known_healthy(cp, conn, now)) {
            check_start(cp, conn, req);
        } else {
            cp->stats.hits++;
            req_deliver(cp, req, conn);
        }
        if (cp->opts.min_idle_conns)
            pump_dials(cp);
        return;
    }
    cp->stats.misses++;
    bool conn_coming = conns_coming(cp) > cp->needs_conn.len;
    if (!conn_coming && exhausted(cp)) {
        req_fail(cp, req, RP_EPOOLEXHAUSTED);
    } else if (!conn_coming && dials_fail_fast(cp)) {
        req_fail(cp, req, cp->stats.last_dial_error);
    } else {
        req->state = REQ_NEEDS_CONN;
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
    rp_conn *conn = idle_next(cp);
    uint64_t now = now_ns(cp);
    if (!conn || conn_expired(cp, conn, now) || !conn_known_healthy(cp, conn, now))
        return NULL;
    idle_unlink(cp, conn);
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
    if (exhausted(cp))
        return RP_EPOOLEXHAUSTED;
    rp__req *req = rp__req_new(&cp->reqs, cb, data);
    if (!req)
        return -ENOMEM;
    if (dials_fail_fast(cp)) {
        rp__req_complete(&cp->reqs, req, NULL, cp->stats.last_dial_error);
        return 0;
    }
    int rc = dial_start(cp, false, req);
    if (rc < 0) {
        count_dial_error(cp, rc);
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
        check_unheld(cp, conn);
    } else {
        conn_discard(cp, conn, RP_CLOSE_UNHEALTHY);
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
    if (conn_expired(cp, conn, now))
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
    uint64_t now = now_ns(cp);
    bool removed = !keep;
    keep = keep && conn->pooled && !conn->broken && !cp->closed && !rp__conn_busy(conn) &&
           !conn_expired(cp, conn, now);
    uint8_t unread = keep ? unread_at_put(conn) : RP__UNREAD_NONE;
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
    } else if (keep && !(cp->opts.max_idle_conns && cp->idle.len >= (unsigned)cp->opts.max_idle_conns)) {
        conn->used_ns = now;
        idle_add(cp, conn);
    } else {
        conn_discard(cp, conn, return_close_reason(cp, conn, removed, now));
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
    case REQ_NEEDS_CONN:
        rp__list_unlink(&cp->needs_conn, &req->link);
        break;
    case REQ_CHECKING:
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

/* ---------------------------------------------------------------- close */

/* Dials under way hold their own reference to their addresses, and a
 * lookup under way is abandoned, not waited for. */
static void target_release(rp__conn_pool *cp)
{
    if (cp->addrs)
        rp__addrs_unref(cp->addrs);
    else if (cp->resolver) /* none: no target yet (rp__pool_set_target) */
        rp__resolver_free(cp->resolver);
    cp->addrs = NULL;
    cp->resolver = NULL;
}

/* The close callback runs once the last socket is closed and every
 * request has had its callback. */
static void finish_close_if_done(rp__conn_pool *cp)
{
    if (cp->all.len || cp->reqs.outstanding)
        return;
    rp__link *spare;
    while ((spare = rp__list_pop(&cp->spare, false)))
        rp__free(idle_conn(spare));
    rp__tls_ctx_unref(cp->tls);
    cp->tls = NULL;
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
    target_release(cp);
    /* Callbacks run later, and nothing they do can add to the queues of
     * a closed pool. */
    rp__reqs_fail_waiters(&cp->reqs, RP_ECLOSED);
    rp__req *req;
    while ((req = rp__req_queue_pop(&cp->needs_conn)))
        rp__req_complete(&cp->reqs, req, NULL, RP_ECLOSED);
    rp__link *link = cp->all.head, *next;
    for (; link; link = next) {
        next = link->next; /* a record closed here may leave the list */
        rp_conn *conn = RP__CONTAINER_OF(link, rp_conn, all_link);
        if (conn->state == RP__CONN_IN_USE || conn->state == RP__CONN_HANDING_OUT ||
            conn->state == RP__CONN_CLOSED)
            continue; /* held: closes when it comes back */
        if (conn->for_req) {
            rp__req_complete(&cp->reqs, conn->for_req, NULL, RP_ECLOSED);
            conn->for_req = NULL;
        }
        conn_remove(cp, conn, RP_CLOSE_POOL);
    }
    finish_close_if_done(cp);
    return 0;
}

/* ------------------------------------------------------------- creation */

static void maintenance_fired(rp__timer *timer)
{
    rp__conn_pool *cp = RP__CONTAINER_OF(timer, rp__conn_pool, maintenance);
    uint64_t now = now_ns(cp), next = UINT64_MAX;
    rp__link *link = cp->idle.head, *following;
    for (; link; link = following) {
        following = link->next;
        rp_conn *conn = idle_conn(link);
        if (conn_expired(cp, conn, now)) {
            conn_discard(cp, conn, RP_CLOSE_EXPIRED);
            continue;
        }
        if (!conn->watching && !conn_known_healthy(cp, conn, now)) {
            conn->watching = true;
            rp__conn_watch(conn, false);
        }
        next = RP__MIN(next, conn_next_event(cp, conn));
    }
    maintenance_arm(cp, next);
    pump_dials(cp);
}

static const rp__conn_events conn_events = {
    .dialed = conn_dialed,
    .watched = conn_watched,
    .released = conn_released,
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
        target_release(cp);
    if (rc < 0) {
        rp__free(cp);
        return rc;
    }
    memset(&cp->opts.tls, 0, sizeof cp->opts.tls); /* built into cp->tls */
    snprintf(cp->addr_text, sizeof cp->addr_text, "%s", targeted ? opts->addr : "");
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
            conn_discard(cp, conn, RP_CLOSE_REMOVED);
        else if (conn->state != RP__CONN_RESOLVING && conn->state != RP__CONN_CLOSED)
            conn->broken = true;
    }
    for (unsigned n = cp->resolving.len; n; n--) {
        rp_conn *conn = idle_conn(rp__list_pop(&cp->resolving, false));
        int rc = dial_connect(cp, conn);
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
    int rc = addr ? rp__tls_ctx_retarget(cp->tls, addr) : 0; /* the name verified follows */
    if (rc == 0 && addr)
        rc = target_init(cp, pool_loop(cp), addr);
    rp__addrs *new_addrs = cp->addrs;
    rp__resolver *new_resolver = cp->resolver;
    cp->addrs = old_addrs;
    cp->resolver = old_resolver;
    if (rc < 0)
        return rc;
    target_release(cp);
    cp->addrs = new_addrs;
    cp->resolver = new_resolver;
    cp->target_error = addr ? 0 : error;
    if (addr) { /* the failures counted were the old target's */
        cp->consecutive_dial_errors = 0;
        rp__timer_disarm(pool_loop(cp), &cp->probe);
    }
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
