#include "request.h"

#include "conn.h"
#include "pool.h"

#include <errno.h>
#include <stdlib.h>

#define SLOT_BITS 24
#define SLOT_MASK ((1u << SLOT_BITS) - 1)

static void wait_timer_fired(rp__timer *timer);

void rp__reqs_init(rp__reqs *reqs, rp_pool *pool, uint32_t timeout_ms, void (*after_callback)(rp__reqs *))
{
    *reqs = (rp__reqs){.pool = pool, .loop = pool->loop, .timeout_ms = timeout_ms,
                       .after_callback = after_callback};
    rp__timer_init(&reqs->wait_timer, wait_timer_fired, true);
}

void rp__reqs_free(rp__reqs *reqs)
{
    for (uint32_t i = 0; i < reqs->slot_count; i++)
        rp__free(reqs->slots[i]);
    rp__free(reqs->slots);
}

/* Records live in slots that never move, so an id (sequence << 24 | slot)
 * finds its record in O(1) and a stale id never matches a reused one. */
static int slots_grow(rp__reqs *reqs)
{
    uint32_t count = reqs->slot_count ? reqs->slot_count * 2 : 16;
    if (count > SLOT_MASK + 1u)
        return -ENOMEM;
    rp__req **slots = rp__realloc(reqs->slots, count * sizeof *slots);
    if (!slots)
        return -ENOMEM;
    reqs->slots = slots;
    for (uint32_t i = reqs->slot_count; i < count; i++) {
        rp__req *req = rp__calloc(1, sizeof *req);
        if (!req)
            break;
        req->id = i;
        rp__list_push_front(&reqs->free_list, &req->link);
        slots[reqs->slot_count++] = req;
    }
    return reqs->free_list.len ? 0 : -ENOMEM;
}

rp__req *rp__req_new(rp__reqs *reqs, rp_get_cb cb, void *data)
{
    if (!reqs->free_list.len && slots_grow(reqs) < 0)
        return NULL;
    rp__req *req = rp__req_queue_pop(&reqs->free_list);
    uint64_t slot = (uint64_t)req->id & SLOT_MASK;
    req->id = (int64_t)((++reqs->seq << SLOT_BITS) | slot);
    req->owner = reqs;
    req->cb = cb;
    req->data = data;
    req->conn = NULL;
    req->status = 0;
    req->holds_turn = false;
    req->started_ns = reqs->timed ? rp__loop_now_fresh(reqs->loop) : 0;
    req->ready.queued = false;
    reqs->outstanding++;
    return req;
}

void rp__req_discard(rp__reqs *reqs, rp__req *req)
{
    req->state = RP__REQ_FREE;
    rp__list_push_front(&reqs->free_list, &req->link);
    reqs->outstanding--;
}

rp__req *rp__req_find(rp__reqs *reqs, int64_t id)
{
    uint64_t slot = (uint64_t)id & SLOT_MASK;
    if (id <= 0 || slot >= reqs->slot_count)
        return NULL;
    rp__req *req = reqs->slots[slot];
    return req->state != RP__REQ_FREE && req->id == id ? req : NULL;
}

static void req_run(rp__deferred *item)
{
    rp__req *req = RP__CONTAINER_OF(item, rp__req, ready);
    rp__reqs *reqs = req->owner;
    rp_get_cb cb = req->cb;
    void *data = req->data;
    rp_conn *conn = req->conn;
    int status = req->status;
    uint64_t started_ns = req->started_ns;
    rp__req_discard(reqs, req); /* the callback may reuse the record */
    if (conn)
        rp__conn_claim(conn);
    const rp_hooks *hooks = &reqs->pool->hooks;
    if (hooks->get_end && started_ns) /* only a get timed from its start */
        hooks->get_end(hooks->data, rp__loop_now_fresh(reqs->loop) - started_ns, status);
    cb(reqs->pool, conn, status, data);
    if (reqs->after_callback)
        reqs->after_callback(reqs);
}

void rp__req_complete(rp__reqs *reqs, rp__req *req, rp_conn *conn, int status)
{
    req->state = RP__REQ_READY;
    req->conn = conn;
    req->status = status;
    rp__defer(reqs->loop, &req->ready, req_run);
}

rp_conn *rp__req_undeliver(rp__reqs *reqs, rp__req *req)
{
    rp__undefer(reqs->loop, &req->ready);
    rp_conn *conn = req->conn;
    req->conn = NULL;
    return conn;
}

/* ----------------------------------------------------------------- waiters */

/* Waiters queue in arrival order and share one timeout, so the queue is
 * also in deadline order: one timer, at the oldest waiter's deadline,
 * serves them all, and a waiter leaving early costs no timer work. */
void rp__reqs_wait(rp__reqs *reqs, rp__req *req)
{
    req->queued_ns = rp__loop_now(reqs->loop);
    if (!reqs->waiters.len)
        rp__timer_arm(reqs->loop, &reqs->wait_timer, req->queued_ns + (uint64_t)reqs->timeout_ms * RP__NS_PER_MS);
    req->state = RP__REQ_QUEUED;
    rp__list_push_back(&reqs->waiters, &req->link);
}

void rp__reqs_unwait(rp__reqs *reqs, rp__req *req)
{
    rp__list_unlink(&reqs->waiters, &req->link);
    if (!reqs->waiters.len)
        rp__timer_disarm(reqs->loop, &reqs->wait_timer);
}

rp__req *rp__reqs_next_waiter(rp__reqs *reqs)
{
    rp__req *req = rp__req_of(reqs->waiters.head);
    if (!req)
        return NULL;
    rp__reqs_unwait(reqs, req);
    reqs->wait_count++;
    reqs->wait_duration_ns += rp__loop_now(reqs->loop) - req->queued_ns;
    return req;
}

static void wait_timer_fired(rp__timer *timer)
{
    rp__reqs *reqs = RP__CONTAINER_OF(timer, rp__reqs, wait_timer);
    uint64_t timeout = (uint64_t)reqs->timeout_ms * RP__NS_PER_MS;
    rp__req *req;
    while ((req = rp__req_of(reqs->waiters.head)) && req->queued_ns + timeout <= rp__loop_now(reqs->loop)) {
        rp__reqs_unwait(reqs, req);
        reqs->timeouts++;
        rp__req_complete(reqs, req, NULL, RP_EPOOLTIMEOUT);
    }
    if (req)
        rp__timer_arm(reqs->loop, &reqs->wait_timer, req->queued_ns + timeout);
}

void rp__reqs_fail_waiters(rp__reqs *reqs, int status)
{
    rp__req *req;
    while ((req = rp__req_of(reqs->waiters.head))) {
        rp__reqs_unwait(reqs, req);
        rp__req_complete(reqs, req, NULL, status);
    }
}
