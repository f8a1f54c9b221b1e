/* The connection pool's idle connections and their health.
 *
 * Idle connections wait in a list (put pushes at the front; a get takes
 * the front, LIFO, or the back, FIFO) until a get takes one, or until the
 * maintenance timer finds it past its lifetime or conn_max_idle_time_ms
 * and closes it. The timer is armed for the earliest event of any idle
 * connection, and it also watches: a connection idle longer than the
 * health window (health_check_idle_ms) gets a zero-length recv that waits,
 * which FIN, RST or stray bytes complete (the watch, conn.c), and pool.c's
 * events then remove it at once.
 *
 * A connection leaves the list unchecked when it was used within the
 * health window, or when the protocol layer's own recv watches it;
 * otherwise it is checked first (cancel the watch, or a non-blocking
 * zero-length recv: the kernel says at once whether the peer is still
 * there), and the get waits for the answer.
 *
 * A put is honest: what the holder left unread never reaches the next one.
 * The connection layer tracks it from the kernel's word on each recv; a
 * put removes a connection known to hold bytes and checks one that may
 * (unread_at_put), so a connection read to the end costs nothing.
 *
 * A connection put back while its send waits only for the kernel's
 * zero-copy notification is parked (rp__cp_park): healthy, neither idle
 * nor held, counted open but not idle (go-redis has no such state: its
 * writes copy), and, like one being checked, a connection on its way.
 * The hand-out places it when the send calls back (pool.c's settled).
 *
 * As go-redis's StaleConns, every connection removed while the pool is
 * open counts as stale, whatever the reason. */
#include "pool_conn.h"

#include <errno.h>

static void idle_push(rp__conn_pool *cp, rp_conn *conn)
{
    conn->state = RP__CONN_IDLE;
    rp__list_push_front(&cp->idle, &conn->idle_link);
}

static void idle_unlink(rp__conn_pool *cp, rp_conn *conn) { rp__list_unlink(&cp->idle, &conn->idle_link); }

/* LIFO takes the most recently put connection, FIFO the oldest. */
static rp_conn *idle_next(const rp__conn_pool *cp)
{
    return rp__cp_link_conn(cp->opts.pool_fifo ? cp->idle.tail : cp->idle.head);
}

static rp_conn *idle_pop(rp__conn_pool *cp) { return rp__cp_link_conn(rp__list_pop(&cp->idle, cp->opts.pool_fifo)); }

bool rp__cp_idle_full(const rp__conn_pool *cp)
{
    return cp->opts.max_idle_conns && cp->idle.len >= (unsigned)cp->opts.max_idle_conns;
}

static uint64_t idle_ns(const rp_conn *conn, uint64_t now) { return now > conn->used_ns ? now - conn->used_ns : 0; }

bool rp__cp_conn_expired(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now)
{
    if (now >= conn->expires_ns)
        return true;
    return cp->opts.conn_max_idle_time_ms && idle_ns(conn, now) >= rp__ms_ns(cp->opts.conn_max_idle_time_ms);
}

/* Handed out with no check: used within the health window, or watched by
 * the protocol layer's own recv, which FIN, RST or stray bytes complete. */
bool rp__cp_conn_known_healthy(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now)
{
    return conn->recv_watch || idle_ns(conn, now) < rp__ms_ns(cp->opts.health_check_idle_ms);
}

/* Counted in open_conns: past its dial and set-up. */
static bool conn_open(const rp_conn *conn)
{
    return conn->state != RP__CONN_DIALING && conn->state != RP__CONN_RESOLVING && conn->state != RP__CONN_SETUP;
}

/* A dial that waits for addresses has nothing in flight to report its
 * end later: it ends here. */
void rp__cp_conn_remove(rp__conn_pool *cp, rp_conn *conn, rp_close_reason reason)
{
    if (conn->state == RP__CONN_IDLE)
        idle_unlink(cp, conn);
    if (conn->state == RP__CONN_PARKED)
        cp->parked--;
    if (conn->state == RP__CONN_RESOLVING) {
        rp__list_unlink(&cp->resolving, &conn->idle_link);
        rp__cp_dial_ended(cp, conn, -ECANCELED);
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

/* Not counted stale: those closed with the pool. */
void rp__cp_conn_discard(rp__conn_pool *cp, rp_conn *conn, rp_close_reason reason)
{
    if (!cp->closed)
        cp->stats.stale_conns++;
    rp__cp_conn_remove(cp, conn, cp->closed ? RP_CLOSE_POOL : reason);
}

static void maintenance_arm(rp__conn_pool *cp, uint64_t deadline)
{
    if (deadline == UINT64_MAX || cp->closed)
        return;
    if (!rp__timer_armed(&cp->maintenance) || deadline < cp->maintenance.deadline_ns)
        rp__timer_arm(rp__cp_loop(cp), &cp->maintenance, deadline);
}

static uint64_t conn_next_event(const rp__conn_pool *cp, const rp_conn *conn)
{
    uint64_t next = conn->expires_ns;
    if (cp->opts.conn_max_idle_time_ms)
        next = RP__MIN(next, conn->used_ns + rp__ms_ns(cp->opts.conn_max_idle_time_ms));
    if (!conn->watching && !conn->recv_watch)
        next = RP__MIN(next, conn->used_ns + rp__ms_ns(cp->opts.health_check_idle_ms));
    return next;
}

void rp__cp_idle_add(rp__conn_pool *cp, rp_conn *conn)
{
    idle_push(cp, conn);
    maintenance_arm(cp, conn_next_event(cp, conn));
}

rp_conn *rp__cp_idle_take(rp__conn_pool *cp, uint64_t now)
{
    rp_conn *conn;
    while ((conn = idle_pop(cp)) && rp__cp_conn_expired(cp, conn, now))
        rp__cp_conn_discard(cp, conn, RP_CLOSE_EXPIRED);
    return conn;
}

rp_conn *rp__cp_idle_take_ready(rp__conn_pool *cp, uint64_t now)
{
    rp_conn *conn = idle_next(cp);
    if (!conn || rp__cp_conn_expired(cp, conn, now) || !rp__cp_conn_known_healthy(cp, conn, now))
        return NULL;
    idle_unlink(cp, conn);
    return conn;
}

/* What a connection given back may hold that its holder did not read:
 * bytes a framed receive buffered, or what the socket may hold. The
 * protocol layer's own recv (recv_watch) reads whatever comes, and fails
 * the connection for bytes nobody asked for: nothing to learn. */
uint8_t rp__cp_unread_at_put(const rp_conn *conn)
{
    if (conn->frames && rp__frames_buffered(conn->frames))
        return RP__UNREAD_YES; /* read from the socket, never handed to the holder */
    uint8_t unread = conn->unread;
    return unread != RP__UNREAD_NONE && conn->recv_watch ? RP__UNREAD_NONE : unread;
}

/* The watch's end (pool.c's watched event) answers the check. */
void rp__cp_check_start(rp__conn_pool *cp, rp_conn *conn, rp__req *req)
{
    req->state = RP__CP_REQ_CHECKING;
    req->conn = conn;
    conn->for_req = req;
    conn->state = RP__CONN_CHECKING;
    if (conn->watching)
        rp__op_cancel(rp__cp_loop(cp), &conn->watch_op);
    else
        rp__conn_watch(conn, true);
}

/* A connection put back right after a send (its reply may have come) is
 * checked before anyone gets it: a zero-length non-blocking recv, which
 * rides in the loop's next submit and answers inside it. Until then it is
 * a connection on its way, as one whose get was cancelled mid-check: a get
 * takes another idle one or waits for this one, and dials nothing. */
void rp__cp_check_unheld(rp__conn_pool *cp, rp_conn *conn)
{
    cp->orphan_checks++;
    conn->for_req = NULL;
    conn->state = RP__CONN_CHECKING;
    rp__conn_watch(conn, true);
}

/* The wait is bounded: by the send's write timeout (its deadline covers
 * the notification), or, with none, by the pool timeout, as a get waits
 * no longer for a turn; a peer that never reads the rest must not hold
 * the connection, and the gets waiting for it, for ever. */
void rp__cp_park(rp__conn_pool *cp, rp_conn *conn)
{
    cp->parked++;
    conn->state = RP__CONN_PARKED;
    rp__conn_settle_deadline(conn, rp__cp_now(cp) + rp__ms_ns(cp->base.pool_timeout_ms));
}

void rp__cp_unpark(rp__conn_pool *cp, rp_conn *conn)
{
    cp->parked--;
    conn->state = RP__CONN_IN_USE;
}

void rp__cp_idle_maintain(rp__conn_pool *cp)
{
    uint64_t now = rp__cp_now(cp), next = UINT64_MAX;
    rp__link *link = cp->idle.head, *following;
    for (; link; link = following) {
        following = link->next;
        rp_conn *conn = rp__cp_link_conn(link);
        if (rp__cp_conn_expired(cp, conn, now)) {
            rp__cp_conn_discard(cp, conn, RP_CLOSE_EXPIRED);
            continue;
        }
        if (!conn->watching && !rp__cp_conn_known_healthy(cp, conn, now)) {
            conn->watching = true;
            rp__conn_watch(conn, false);
        }
        next = RP__MIN(next, conn_next_event(cp, conn));
    }
    maintenance_arm(cp, next);
}
