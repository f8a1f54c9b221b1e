/* The connection pool's dials: when one is wanted, how it starts, how its
 * end is booked, fail-fast and the recovery probe.
 *
 * Dials are not owned by requests: the hand-out (pool.c) starts them while
 * waiting requests outnumber the connections on their way, or to keep
 * min_idle_conns, within max_concurrent_dials and max_active_conns, and a
 * finished dial goes to whoever waits then.
 *
 * As go-redis: pool_size connect failures in a row turn fail-fast on: no
 * dial starts for requests, which fail at once with the last dial error
 * unless a connection is on its way. A probe dial then goes out after
 * probe_interval_ms, and after twice as long each time it fails, up to
 * probe_interval_max_ms; the first connect that succeeds, a probe's or
 * another's, turns fail-fast off. A refused set-up (on_connect) is no
 * connect failure: the server answered. */
#include "pool_conn.h"

#include <errno.h>

/* Fail-fast began: the first probe comes soon, as a server restarting is
 * often back within a few hundred milliseconds. */
static void probe_first(rp__conn_pool *cp)
{
    cp->probe_interval_ms = cp->opts.probe_interval_ms;
    rp__timer_arm(rp__cp_loop(cp), &cp->probe, rp__cp_now(cp) + rp__ms_ns(cp->probe_interval_ms));
}

/* A probe went out: the next one waits twice as long, up to the maximum,
 * so a server down for long sees one dial a second, not a storm. */
static void probe_next(rp__conn_pool *cp)
{
    uint64_t doubled = 2 * (uint64_t)cp->probe_interval_ms;
    cp->probe_interval_ms = (uint32_t)RP__MIN(doubled, (uint64_t)cp->opts.probe_interval_max_ms);
    rp__timer_arm(rp__cp_loop(cp), &cp->probe, rp__cp_now(cp) + rp__ms_ns(cp->probe_interval_ms));
}

bool rp__cp_fail_fast(const rp__conn_pool *cp) { return cp->consecutive_dial_errors >= (unsigned)cp->opts.pool_size; }

unsigned rp__cp_conns_coming(const rp__conn_pool *cp) { return cp->dialing + cp->orphan_checks + cp->parked; }

static unsigned requests_uncovered(const rp__conn_pool *cp)
{
    unsigned coming = rp__cp_conns_coming(cp);
    return cp->needs_conn.len > coming ? cp->needs_conn.len - coming : 0;
}

/* Open, being dialled, or promised to a waiting request by a dial that
 * max_concurrent_dials holds back: what max_active_conns bounds. */
static unsigned conns_committed(const rp__conn_pool *cp)
{
    return cp->open_conns + cp->dialing + cp->new_conn_dials + requests_uncovered(cp);
}

bool rp__cp_exhausted(const rp__conn_pool *cp)
{
    return cp->opts.max_active_conns && conns_committed(cp) >= (unsigned)cp->opts.max_active_conns;
}

void rp__cp_count_dial_error(rp__conn_pool *cp, int status)
{
    cp->stats.dial_errors++;
    cp->stats.last_dial_error = status;
    if (++cp->consecutive_dial_errors == (unsigned)cp->opts.pool_size)
        probe_first(cp);
}

/* The probe timer is armed exactly while dials fail fast. */
void rp__cp_dial_connected(rp__conn_pool *cp)
{
    if (rp__cp_fail_fast(cp))
        rp__timer_disarm(rp__cp_loop(cp), &cp->probe);
    cp->consecutive_dial_errors = 0;
}

void rp__cp_dial_ended(rp__conn_pool *cp, rp_conn *conn, int status)
{
    /* created_ns holds the dial's start until it succeeds; 0: not timed */
    if (cp->base.hooks.dial_end && conn->created_ns)
        cp->base.hooks.dial_end(cp->base.hooks.data, cp->addr_text,
                                rp__loop_now_fresh(rp__cp_loop(cp)) - conn->created_ns, status);
    if (conn->pooled)
        cp->dialing--;
    else
        cp->new_conn_dials--;
}

/* The connection is open: counted, and its lifetime set. */
static void dial_succeeded(rp__conn_pool *cp, rp_conn *conn)
{
    rp__cp_dial_connected(cp);
    cp->open_conns++;
    /* As go-redis: past pool_size a connection serves its caller once and
     * closes on put. */
    if (conn->pooled && cp->pooled_open >= (unsigned)cp->opts.pool_size)
        conn->pooled = false;
    if (conn->pooled)
        cp->pooled_open++;
    conn->created_ns = conn->used_ns = rp__cp_now(cp);
    conn->expires_ns = UINT64_MAX;
    if (cp->opts.conn_max_lifetime_ms) {
        uint64_t jitter_range = (uint64_t)cp->opts.conn_max_lifetime_jitter_ms + 1;
        uint64_t jitter = rp__ms_ns((uint32_t)(rp__loop_random(rp__cp_loop(cp)) % jitter_range));
        uint64_t lifetime = rp__ms_ns(cp->opts.conn_max_lifetime_ms);
        conn->expires_ns = conn->created_ns + lifetime - RP__MIN(jitter, lifetime);
    }
}

/* A dial ends after its connect and, when the pool has on_connect, after
 * the set-up; until then it counts as a dial in flight. Only a failed
 * connect counts toward fail-fast: a refused set-up (go-redis: a failed
 * init) just removes the connection. */
bool rp__cp_dial_settle(rp__conn_pool *cp, rp_conn *conn, int status, bool in_setup)
{
    rp__cp_dial_ended(cp, conn, status);
    if (conn->state == RP__CONN_CLOSED) {
        rp__conn_op_finished(conn); /* the pool closed under it */
        return false;
    }
    if (status == 0) {
        dial_succeeded(cp, conn);
        return true;
    }
    if (in_setup && cp->base.hooks.conn_close)
        cp->base.hooks.conn_close(cp->base.hooks.data, conn, RP_CLOSE_SETUP);
    rp__conn_close(conn);
    if (in_setup) {
        rp__cp_dial_connected(cp);
        cp->stats.stale_conns++;
    } else {
        rp__cp_count_dial_error(cp, status);
    }
    return true;
}

static void wait_for_addrs(rp__conn_pool *cp, rp_conn *conn)
{
    conn->state = RP__CONN_RESOLVING;
    rp__list_push_back(&cp->resolving, &conn->idle_link);
}

/* Connects at once to a numeric address, a path or a fresh answer;
 * otherwise the dial waits for the lookup, or for a target (the lookup's
 * callback and rp__pool_set_target, in pool_new.c, take it from there). */
int rp__cp_dial_connect(rp__conn_pool *cp, rp_conn *conn)
{
    rp__addrs *addrs = cp->addrs;
    if (!addrs && !cp->resolver && cp->target_error)
        return cp->target_error;
    if (!addrs && !cp->resolver) { /* no target yet: wait for one */
        wait_for_addrs(cp, conn);
        return 0;
    }
    if (!addrs) {
        int rc = rp__resolver_addrs(cp->resolver, &addrs);
        if (rc < 0)
            return rc;
        if (!addrs) {
            wait_for_addrs(cp, conn);
            return 0;
        }
    }
    return rp__conn_dial(conn, addrs, cp->opts.dial_timeout_ms);
}

int rp__cp_dial_start(rp__conn_pool *cp, bool pooled, rp__req *for_req)
{
    rp_conn *conn = rp__cp_record_take(cp);
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
    /* A dial that waits for a target is told when it gets one (pool_new.c). */
    bool untargeted = !cp->addrs && !cp->resolver && !cp->target_error;
    if (hooks->dial_start && !untargeted)
        hooks->dial_start(hooks->data, cp->addr_text);
    conn->created_ns = hooks->dial_end ? rp__loop_now_fresh(rp__cp_loop(cp)) : 0;
    int rc = rp__cp_dial_connect(cp, conn);
    if (rc < 0) {
        if (hooks->dial_end)
            hooks->dial_end(hooks->data, cp->addr_text, 0, rc);
        rp__cp_record_spare(cp, conn);
        return rc;
    }
    rp__list_push_front(&cp->all, &conn->all_link);
    if (pooled)
        cp->dialing++;
    else
        cp->new_conn_dials++;
    return 0;
}

bool rp__cp_want_dial(const rp__conn_pool *cp)
{
    if (cp->closed || rp__cp_fail_fast(cp) || cp->dialing >= (unsigned)cp->opts.max_concurrent_dials)
        return false;
    if (cp->opts.max_active_conns &&
        cp->open_conns + cp->dialing + cp->new_conn_dials >= (unsigned)cp->opts.max_active_conns)
        return false;
    if (requests_uncovered(cp))
        return true;
    unsigned spare = rp__cp_conns_coming(cp) - cp->needs_conn.len;
    unsigned pool_size = (unsigned)cp->opts.pool_size;
    unsigned room = pool_size - RP__MIN(pool_size, cp->pooled_open + cp->dialing);
    return room > 0 && cp->idle.len + spare < (unsigned)cp->opts.min_idle_conns;
}

bool rp__cp_fail_fast_pending(const rp__conn_pool *cp) { return rp__cp_fail_fast(cp) && requests_uncovered(cp); }

/* A probe's connection, if it comes, goes to whoever waits, as any dial's. */
void rp__cp_probe_fired(rp__timer *timer)
{
    rp__conn_pool *cp = RP__CONTAINER_OF(timer, rp__conn_pool, probe);
    int rc = cp->dialing ? 0 : rp__cp_dial_start(cp, true, NULL);
    if (rc < 0)
        rp__cp_count_dial_error(cp, rc);
    probe_next(cp);
}

/* Dials under way hold their own reference to their addresses, and a
 * lookup under way is abandoned, not waited for. */
void rp__cp_target_release(rp__conn_pool *cp)
{
    if (cp->addrs)
        rp__addrs_unref(cp->addrs);
    else if (cp->resolver) /* none: no target yet (rp__pool_set_target) */
        rp__resolver_free(cp->resolver);
    cp->addrs = NULL;
    cp->resolver = NULL;
}
