/* Closing a connection pool, and knowing when it is done.
 *
 * rp_pool_close fails every request that waits (for a turn, for a dial,
 * for a check), closes every connection the pool holds (idle, dialling,
 * being set up or checked, or parked: its send is let go, and its record
 * outlives the notification) and lets go of the target. Connections out
 * with their holders close when they come back (the pool is closed, so a
 * put removes). The close callback runs once the last record is drained
 * and every request has had its callback: both the connection layer's
 * released event and the requests' after_callback ask whether that is now. */
#include "pool_conn.h"
#include "tls.h"

static void finish_close_if_done(rp__conn_pool *cp)
{
    if (cp->all.len || cp->reqs.outstanding)
        return;
    rp__cp_records_free(cp);
    rp__tls_ctx_unref(cp->tls);
    cp->tls = NULL;
    rp__pool_finish_close(&cp->base);
}

void rp__cp_conn_released(rp_conn *conn)
{
    rp__conn_pool *cp = rp__cp_of(conn);
    rp__cp_record_release(cp, conn);
    if (cp->closed)
        finish_close_if_done(cp);
}

void rp__cp_after_callback(rp__reqs *reqs)
{
    rp__conn_pool *cp = RP__CONTAINER_OF(reqs, rp__conn_pool, reqs);
    if (cp->closed)
        finish_close_if_done(cp);
}

/* Closes what the pool holds; a record closed here may leave the list. */
static void close_records(rp__conn_pool *cp)
{
    rp__link *link = cp->all.head, *next;
    for (; link; link = next) {
        next = link->next;
        rp_conn *conn = RP__CONTAINER_OF(link, rp_conn, all_link);
        if (conn->state == RP__CONN_IN_USE || conn->state == RP__CONN_HANDING_OUT ||
            conn->state == RP__CONN_CLOSED)
            continue; /* held: closes when it comes back */
        if (conn->for_req) {
            rp__req_complete(&cp->reqs, conn->for_req, NULL, RP_ECLOSED);
            conn->for_req = NULL;
        }
        rp__cp_conn_remove(cp, conn, RP_CLOSE_POOL);
    }
}

int rp__cp_close(rp_pool *pool, rp_close_cb cb, void *data)
{
    rp__conn_pool *cp = (rp__conn_pool *)pool;
    if (cp->closed)
        return RP_ECLOSED;
    cp->closed = true;
    cp->base.close_cb = cb;
    cp->base.close_data = data;
    rp__timer_disarm(rp__cp_loop(cp), &cp->maintenance);
    rp__timer_disarm(rp__cp_loop(cp), &cp->probe);
    rp__cp_target_release(cp);
    /* Callbacks run later, and nothing they do can add to the queues of
     * a closed pool. */
    rp__reqs_fail_waiters(&cp->reqs, RP_ECLOSED);
    rp__req *req;
    while ((req = rp__req_queue_pop(&cp->needs_conn)))
        rp__req_complete(&cp->reqs, req, NULL, RP_ECLOSED);
    close_records(cp);
    finish_close_if_done(cp);
    return 0;
}
