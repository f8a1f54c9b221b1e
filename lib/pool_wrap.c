/* go-redis's SingleConnPool and StickyConnPool: pools over one connection
 * taken from a parent pool, behind the same rp_pool interface.
 *
 * Single: every get yields its one connection; remove records a sticky
 * error. It borrows the connection: closing it gives nothing back, the
 * owner puts or removes the connection on the parent.
 *
 * Sticky (default -> initialised -> closed): the first get takes a
 * connection from the parent and later gets yield that same connection,
 * waiting (FIFO, with the parent's pool timeout) while it is out. Remove
 * records the error: gets fail with RP_EBADCONN until rp_sticky_pool_reset
 * gives the connection back to the parent as removed. Close puts the
 * connection back to the parent (or removes it if it went bad) once the
 * last sharer closes. */
#include "pool.h"
#include "pool_conn.h"
#include "request.h"

#include <errno.h>
#include <stdlib.h>

typedef enum { STICKY_DEFAULT, STICKY_INITING, STICKY_INITED, STICKY_CLOSED } sticky_state;

typedef struct wrap_pool {
    rp_pool base;
    rp_pool *parent;
    rp__reqs reqs;
    rp_conn *conn;
    bool conn_out;  /* a caller holds the connection */
    int bad_reason; /* remove's reason; the pool is bad while non-zero */
    bool bad;
    bool closed;
    int shared;     /* sticky: closes on the last of these */
    sticky_state state;
    struct pending_close *extra_closes; /* sticky: closes that only unshare */
    /* Sticky, while the first connection is asked of the parent: the get
     * it goes to (NULL once that get ended: cancelled, or the pool closed)
     * and the parent's get (0 once the parent answered). */
    struct rp__req *init_req;
    int64_t parent_get;
} wrap_pool;

#define STICKY_REQ_INITING RP__REQ_OWN /* init_req: outside the waiter queue */

typedef struct pending_close {
    rp__deferred item;
    struct pending_close *next;
    wrap_pool *wp;
    rp_close_cb cb;
    void *data;
} pending_close;

static const rp__pool_vtable single_vtable, sticky_vtable;

/* ---------------------------------------------------------------- common */

static bool wrong_conn(wrap_pool *wp, const rp_conn *conn, const char *op)
{
    if (conn && conn == wp->conn && wp->conn_out)
        return false;
    rp__pool_misuse(&wp->base, op, conn == wp->conn ? "connection is not out (double put?)"
                                                    : "connection does not belong to this pool");
    return true;
}

/* The close callback runs once every request had its callback, the
 * parent answered its get and the connection, if any, went back. */
static void finish_close_if_done(wrap_pool *wp)
{
    if (wp->closed && !wp->reqs.outstanding && !wp->parent_get && !wp->conn && !wp->extra_closes)
        rp__pool_finish_close(&wp->base);
}

/* A put is honest, as the parent's: a connection that broke, or may hold
 * bytes its holder did not read (a reply to a send it never read, a frame
 * left buffered) would hand them to the next holder of this same
 * connection. The pool goes bad instead, as after a remove. A connection
 * the Redis layer reads (ext) has no such bytes: that layer hands each
 * reply to its own command whoever holds the connection, and fails it for
 * any other. */
static void put_checked(wrap_pool *wp, const rp_conn *conn)
{
    if (conn->broken || (!conn->ext && rp__cp_unread_at_put(conn) != RP__UNREAD_NONE)) {
        wp->bad = true;
        wp->bad_reason = RP_EBADCONN;
    }
}

static void after_callback(rp__reqs *reqs) { finish_close_if_done(RP__CONTAINER_OF(reqs, wrap_pool, reqs)); }

static int wrap_new(wrap_pool **out, rp_pool *parent, const rp__pool_vtable *vt)
{
    wrap_pool *wp = rp__calloc(1, sizeof *wp);
    if (!wp)
        return -ENOMEM;
    rp__pool_init(&wp->base, vt, parent->loop, &wp->reqs);
    wp->base.pool_timeout_ms = parent->pool_timeout_ms;
    wp->parent = parent;
    wp->shared = 1;
    rp__reqs_init(&wp->reqs, &wp->base, parent->pool_timeout_ms, after_callback);
    *out = wp;
    return 0;
}

static void hand_out(wrap_pool *wp, rp__req *req)
{
    wp->conn_out = true;
    rp__req_complete(&wp->reqs, req, wp->conn, 0);
}

static int64_t accept_ready(wrap_pool *wp, rp_get_cb cb, void *data)
{
    rp__req *req = rp__req_new(&wp->reqs, cb, data);
    if (!req)
        return -ENOMEM;
    hand_out(wp, req);
    return req->id;
}

static int wrap_new_conn(rp_pool *pool, rp_get_cb cb, void *data)
{
    return rp_pool_new_conn(((wrap_pool *)pool)->parent, cb, data);
}

static void wrap_close_conn(rp_pool *pool, rp_conn *conn) { rp_pool_close_conn(((wrap_pool *)pool)->parent, conn); }

static void zero_stats(const rp_pool *pool, rp_stats *out)
{
    const wrap_pool *wp = (const wrap_pool *)pool;
    *out = (rp_stats){.timeouts = wp->reqs.timeouts, .wait_count = wp->reqs.wait_count,
                      .wait_duration_ns = wp->reqs.wait_duration_ns};
}

/* ---------------------------------------------------------------- single */

int rp_single_pool_new(rp_pool **out, rp_pool *parent, rp_conn *conn)
{
    if (!out || !parent || !conn)
        return -EINVAL;
    wrap_pool *wp;
    int rc = wrap_new(&wp, parent, &single_vtable);
    if (rc < 0)
        return rc;
    wp->conn = conn;
    *out = &wp->base;
    return 0;
}

static int64_t single_get(rp_pool *pool, rp_get_cb cb, void *data)
{
    wrap_pool *wp = (wrap_pool *)pool;
    if (wp->closed)
        return RP_ECLOSED;
    if (wp->bad)
        return RP_EBADCONN;
    return accept_ready(wp, cb, data);
}

static int single_cancel(rp_pool *pool, int64_t id)
{
    wrap_pool *wp = (wrap_pool *)pool;
    rp__req *req = rp__req_find(&wp->reqs, id);
    if (!req)
        return -ENOENT;
    rp__req_undeliver(&wp->reqs, req);
    rp__req_complete(&wp->reqs, req, NULL, -ECANCELED);
    return 0;
}

/* Put keeps the connection, unless it would hand its next holder bytes
 * or an error of this one's. */
static void single_put(rp_pool *pool, rp_conn *conn)
{
    wrap_pool *wp = (wrap_pool *)pool;
    if (!conn || conn != wp->conn)
        rp__pool_misuse(pool, "rp_pool_put", "connection does not belong to this pool");
    else
        put_checked(wp, conn);
}

static void single_remove(rp_pool *pool, rp_conn *conn, int reason)
{
    wrap_pool *wp = (wrap_pool *)pool;
    if (!conn || conn != wp->conn) {
        rp__pool_misuse(pool, "rp_pool_remove", "connection does not belong to this pool");
        return;
    }
    wp->bad = true;
    wp->bad_reason = reason;
}

static int no_conns(const rp_pool *pool)
{
    (void)pool;
    return 0;
}

static int single_close(rp_pool *pool, rp_close_cb cb, void *data)
{
    wrap_pool *wp = (wrap_pool *)pool;
    if (wp->closed)
        return RP_ECLOSED;
    wp->closed = true;
    wp->base.close_cb = cb;
    wp->base.close_data = data;
    wp->conn = NULL;
    finish_close_if_done(wp);
    return 0;
}

static const rp__pool_vtable single_vtable = {
    .get = single_get,
    .cancel = single_cancel,
    .put = single_put,
    .remove = single_remove,
    .new_conn = wrap_new_conn,
    .close_conn = wrap_close_conn,
    .len = no_conns,
    .idle_len = no_conns,
    .stats = zero_stats,
    .close = single_close,
};

/* ---------------------------------------------------------------- sticky */

int rp_sticky_pool_new(rp_pool **out, rp_pool *parent)
{
    if (!out || !parent)
        return -EINVAL;
    if (parent->vt == &sticky_vtable) {
        wrap_pool *shared = (wrap_pool *)parent;
        if (shared->closed)
            return RP_ECLOSED;
        shared->shared++;
        *out = parent;
        return 0;
    }
    wrap_pool *wp;
    int rc = wrap_new(&wp, parent, &sticky_vtable);
    if (rc == 0)
        *out = &wp->base;
    return rc;
}

/* Back to the parent: put, or removed when it went bad. */
static void sticky_release(wrap_pool *wp)
{
    rp_conn *conn = wp->conn;
    wp->conn = NULL;
    wp->conn_out = false;
    if (wp->bad)
        rp_pool_remove(wp->parent, conn, wp->bad_reason);
    else
        rp_pool_put(wp->parent, conn);
}

static void sticky_get_next(wrap_pool *wp);

/* The parent's answer for the first connection. The get it was for may
 * have ended meanwhile (cancelled, or the pool closed): a connection then
 * goes back, and the oldest waiter asks again. A failure ends that get and
 * every waiter behind it, who waited for the same connection: each gets the
 * parent's error now, not a pool timeout later. */
static void parent_got(rp_pool *parent, rp_conn *conn, int status, void *data)
{
    (void)parent;
    wrap_pool *wp = data;
    rp__req *req = wp->init_req;
    wp->init_req = NULL;
    wp->parent_get = 0;
    if (!req) {
        if (conn)
            rp_pool_put(wp->parent, conn);
        if (wp->closed) {
            finish_close_if_done(wp);
        } else {
            wp->state = STICKY_DEFAULT;
            sticky_get_next(wp);
        }
        return;
    }
    if (status < 0) {
        wp->state = STICKY_DEFAULT;
        rp__req_complete(&wp->reqs, req, NULL, status);
        rp__reqs_fail_waiters(&wp->reqs, status);
        return;
    }
    wp->state = STICKY_INITED;
    wp->conn = conn;
    hand_out(wp, req);
}

/* The first get of a default pool asks the parent; the request's record
 * waits, outside the waiter queue, for the parent's answer. */
static int sticky_init(wrap_pool *wp, rp__req *req)
{
    int64_t id = rp_pool_get(wp->parent, parent_got, wp);
    if (id < 0)
        return (int)id;
    wp->state = STICKY_INITING;
    req->state = STICKY_REQ_INITING;
    wp->init_req = req;
    wp->parent_get = id;
    return 0;
}

/* Ends the get waiting for the parent's answer now, with status; the
 * parent's get is cancelled and its answer finds no get (parent_got). */
static void sticky_end_init(wrap_pool *wp, int status)
{
    rp__req *req = wp->init_req;
    wp->init_req = NULL;
    rp_pool_cancel(wp->parent, wp->parent_get);
    rp__req_complete(&wp->reqs, req, NULL, status);
}

/* The connection is free (or the pool went default): serve the oldest. */
static void sticky_get_next(wrap_pool *wp)
{
    if (wp->bad) {
        rp__reqs_fail_waiters(&wp->reqs, RP_EBADCONN);
        return;
    }
    rp__req *req = rp__reqs_next_waiter(&wp->reqs);
    if (!req)
        return;
    if (wp->state == STICKY_INITED) {
        hand_out(wp, req);
    } else {
        int rc = sticky_init(wp, req);
        if (rc < 0)
            rp__req_complete(&wp->reqs, req, NULL, rc);
    }
}

static int64_t sticky_get(rp_pool *pool, rp_get_cb cb, void *data)
{
    wrap_pool *wp = (wrap_pool *)pool;
    if (wp->closed)
        return RP_ECLOSED;
    if (wp->bad)
        return RP_EBADCONN;
    rp__req *req = rp__req_new(&wp->reqs, cb, data);
    if (!req)
        return -ENOMEM;
    int64_t id = req->id;
    if (wp->state == STICKY_INITED && !wp->conn_out) {
        hand_out(wp, req);
    } else if (wp->state != STICKY_DEFAULT) {
        rp__reqs_wait(&wp->reqs, req);
    } else {
        int rc = sticky_init(wp, req);
        if (rc < 0) {
            rp__req_discard(&wp->reqs, req);
            return rc;
        }
    }
    return id;
}

static void sticky_conn_back(wrap_pool *wp)
{
    wp->conn_out = false;
    if (wp->closed) {
        sticky_release(wp);
        finish_close_if_done(wp);
    } else {
        sticky_get_next(wp);
    }
}

static int sticky_cancel(rp_pool *pool, int64_t id)
{
    wrap_pool *wp = (wrap_pool *)pool;
    rp__req *req = rp__req_find(&wp->reqs, id);
    if (!req || (req->state == RP__REQ_READY && req->status == -ECANCELED))
        return -ENOENT;
    if (req == wp->init_req) {
        sticky_end_init(wp, -ECANCELED);
        return 0;
    }
    if (req->state == RP__REQ_QUEUED)
        rp__reqs_unwait(&wp->reqs, req);
    else if (rp__req_undeliver(&wp->reqs, req))
        sticky_conn_back(wp);
    rp__req_complete(&wp->reqs, req, NULL, -ECANCELED);
    return 0;
}

static void sticky_put(rp_pool *pool, rp_conn *conn)
{
    wrap_pool *wp = (wrap_pool *)pool;
    if (!wrong_conn(wp, conn, "rp_pool_put")) {
        put_checked(wp, conn);
        sticky_conn_back(wp);
    }
}

static void sticky_remove(rp_pool *pool, rp_conn *conn, int reason)
{
    wrap_pool *wp = (wrap_pool *)pool;
    if (wrong_conn(wp, conn, "rp_pool_remove"))
        return;
    wp->bad = true;
    wp->bad_reason = reason ? reason : RP_EBADCONN;
    sticky_conn_back(wp);
}

int rp_sticky_pool_reset(rp_pool *pool)
{
    if (!pool || pool->vt != &sticky_vtable)
        return -EINVAL;
    wrap_pool *wp = (wrap_pool *)pool;
    if (wp->closed)
        return RP_ECLOSED;
    if (!wp->bad)
        return 0;
    if (wp->conn_out || !wp->conn)
        return -EBUSY; /* nothing to give back yet */
    rp_conn *conn = wp->conn;
    wp->conn = NULL;
    rp_pool_remove(wp->parent, conn, RP_ECLOSED);
    wp->bad = false;
    wp->bad_reason = 0;
    wp->state = STICKY_DEFAULT;
    return 0;
}

int rp_pool_bad_conn_reason(const rp_pool *pool)
{
    if (!pool || (pool->vt != &sticky_vtable && pool->vt != &single_vtable))
        return -EINVAL;
    return ((const wrap_pool *)pool)->bad_reason;
}

static int sticky_len(const rp_pool *pool) { return ((const wrap_pool *)pool)->conn ? 1 : 0; }

static int sticky_idle_len(const rp_pool *pool)
{
    const wrap_pool *wp = (const wrap_pool *)pool;
    return wp->conn && !wp->conn_out ? 1 : 0;
}

static void unshare_run(rp__deferred *item)
{
    pending_close *pc = RP__CONTAINER_OF(item, pending_close, item);
    wrap_pool *wp = pc->wp;
    wp->extra_closes = pc->next; /* they run in the order they were queued */
    if (pc->cb)
        pc->cb(&wp->base, pc->data);
    rp__free(pc);
    finish_close_if_done(wp);
}

/* A sharer's close only unshares; its callback still runs, later. */
static int sticky_unshare(wrap_pool *wp, rp_close_cb cb, void *data)
{
    pending_close *pc = rp__calloc(1, sizeof *pc);
    if (!pc)
        return -ENOMEM;
    *pc = (pending_close){.wp = wp, .cb = cb, .data = data};
    pending_close **tail = &wp->extra_closes;
    while (*tail)
        tail = &(*tail)->next;
    *tail = pc;
    wp->shared--;
    rp__defer(wp->base.loop, &pc->item, unshare_run);
    return 0;
}

static int sticky_close(rp_pool *pool, rp_close_cb cb, void *data)
{
    wrap_pool *wp = (wrap_pool *)pool;
    if (wp->closed)
        return RP_ECLOSED;
    if (wp->shared > 1)
        return sticky_unshare(wp, cb, data);
    wp->closed = true;
    wp->state = STICKY_CLOSED;
    wp->base.close_cb = cb;
    wp->base.close_data = data;
    rp__reqs_fail_waiters(&wp->reqs, RP_ECLOSED);
    if (wp->init_req)
        sticky_end_init(wp, RP_ECLOSED);
    if (wp->conn && !wp->conn_out)
        sticky_release(wp);
    finish_close_if_done(wp);
    return 0;
}

static const rp__pool_vtable sticky_vtable = {
    .get = sticky_get,
    .cancel = sticky_cancel,
    .put = sticky_put,
    .remove = sticky_remove,
    .new_conn = wrap_new_conn,
    .close_conn = wrap_close_conn,
    .len = sticky_len,
    .idle_len = sticky_idle_len,
    .stats = zero_stats,
    .close = sticky_close,
};
