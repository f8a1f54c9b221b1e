/* Making a connection pool: its options, and the target its dials go to.
 *
 * A target is a numeric address or a path (one list of addresses every
 * dial uses), or a host name (a resolver, which starts no thread until a
 * dial needs it; dials wait in the resolving list for its answer). A pool
 * made for sentinel.c has no target at first: its dials wait until
 * rp__pool_set_target gives one, or fail with the error it gives instead.
 * A new target retires every connection made for the old one. */
#include "pool_conn.h"
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
            rp__cp_dial_finish(cp, conn, rc, false);
    }
}

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
    cp->events = &rp__cp_events;
    rp__pool_init(&cp->base, &rp__cp_vtable, loop, &cp->reqs);
    cp->base.pool_timeout_ms = cp->opts.pool_timeout_ms;
    rp__timer_init(&cp->maintenance, rp__cp_maintenance_fired, false);
    rp__timer_init(&cp->probe, rp__cp_probe_fired, false);
    rp__reqs_init(&cp->reqs, &cp->base, cp->opts.pool_timeout_ms, rp__cp_after_callback);
    rp__cp_pump_dials(cp);
    *out = &cp->base;
    return 0;
}

const char *rp_pool_tls_error(const rp_pool *pool)
{
    if (!pool || pool->vt != &rp__cp_vtable)
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

/* A dial or set-up still under way to the old target is abandoned at
 * once: a frozen server never answers it, and while it counts as a
 * connection on its way no dial to the new target starts for the request
 * waiting on it (until it timed out). Nothing was sent on it but the
 * set-up: the request that must have this very connection is told so;
 * the others wait for the dials that replace it (pool.c, when its
 * cancelled operation ends). */
static void dial_abandon(rp__conn_pool *cp, rp_conn *conn)
{
    if (conn->for_req) {
        rp__req_complete(&cp->reqs, conn->for_req, NULL, -ECONNABORTED);
        conn->for_req = NULL;
    }
    rp__cp_conn_remove(cp, conn, RP_CLOSE_REMOVED);
}

/* Future dials go to addr. Connections made for the old target are not
 * reused: idle and parked ones close now, and dials and set-ups under way;
 * those in use (or being checked) close when they come back. Dials that
 * waited for a target start, and their dial_start hook runs now that they
 * have one (told: they had none when they began). */
static void target_switch(rp__conn_pool *cp, bool told)
{
    rp__link *link = cp->all.head, *next;
    for (; link; link = next) {
        next = link->next;
        rp_conn *conn = RP__CONTAINER_OF(link, rp_conn, all_link);
        if (conn->state == RP__CONN_IDLE || conn->state == RP__CONN_PARKED)
            rp__cp_conn_discard(cp, conn, RP_CLOSE_REMOVED);
        else if (conn->state == RP__CONN_DIALING || conn->state == RP__CONN_SETUP)
            dial_abandon(cp, conn);
        else if (conn->state != RP__CONN_RESOLVING && conn->state != RP__CONN_CLOSED)
            conn->broken = true;
    }
    const rp_hooks *hooks = &cp->base.hooks;
    for (unsigned n = cp->resolving.len; n; n--) {
        rp_conn *conn = rp__cp_link_conn(rp__list_pop(&cp->resolving, false));
        if (told && hooks->dial_start && cp->addr_text[0])
            hooks->dial_start(hooks->data, cp->addr_text);
        if (told && conn->created_ns) /* dial_end times the dial, not the wait */
            conn->created_ns = rp__loop_now_fresh(rp__cp_loop(cp));
        int rc = rp__cp_dial_connect(cp, conn);
        if (rc < 0)
            rp__cp_dial_finish(cp, conn, rc, false);
    }
    rp__cp_pump_dials(cp);
}

/* addr NULL: no target; with error 0 dials wait for one, with an error
 * they fail with it (those waiting now too). */
int rp__pool_set_target(rp_pool *pool, const char *addr, int error)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (!pool || pool->vt != &rp__cp_vtable || cp->closed)
        return -EINVAL;
    rp__addrs *old_addrs = cp->addrs;
    rp__resolver *old_resolver = cp->resolver;
    bool untargeted = !old_addrs && !old_resolver; /* its waiting dials were not told */
    cp->addrs = NULL;
    cp->resolver = NULL;
    int rc = addr ? rp__tls_ctx_retarget(cp->tls, addr) : 0; /* the name verified follows */
    if (rc == 0 && addr)
        rc = target_init(cp, rp__cp_loop(cp), addr);
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
    target_switch(cp, untargeted);
    return 0;
}

const char *rp_pool_resolve_error(const rp_pool *pool)
{
    if (!pool || pool->vt != &rp__cp_vtable)
        return NULL;
    return ((const rp__conn_pool *)pool)->resolve_error;
}
