/* Get requests, shared by every pool kind: records named by an id (for
 * cancel), delivery through the loop's deferred queue (never inside the
 * call), and a strict FIFO queue of waiters with one shared timeout. */
#ifndef RP_REQUEST_H
#define RP_REQUEST_H

#include "internal.h"

enum {
    RP__REQ_FREE,
    RP__REQ_QUEUED, /* in the waiter queue */
    RP__REQ_READY,  /* result queued for delivery */
    RP__REQ_OWN,    /* first state a pool may define for itself */
};

typedef struct rp__reqs rp__reqs;
typedef struct rp__req rp__req;
struct rp__req {
    rp__deferred ready;
    rp__link link; /* the queue its state puts it in, or the free list */
    rp__reqs *owner;
    int64_t id;
    rp_get_cb cb;
    void *data;
    rp_conn *conn;
    int status;
    uint8_t state;
    bool holds_turn; /* a pool's own bookkeeping */
    uint64_t queued_ns;
    uint64_t started_ns; /* for the get_end hook: 0 when none was set at the get */
};

/* A queue of requests is an rp__list of their links. */
static inline rp__req *rp__req_of(rp__link *link) { return link ? RP__CONTAINER_OF(link, rp__req, link) : NULL; }
static inline rp__req *rp__req_queue_pop(rp__list *queue) { return rp__req_of(rp__list_pop(queue, false)); }

struct rp__reqs {
    rp_pool *pool;
    rp_loop *loop;
    rp__req **slots;
    rp__list free_list;
    uint32_t slot_count;
    unsigned outstanding; /* allocated and not yet delivered */
    uint64_t seq;
    rp__list waiters;
    rp__timer wait_timer;
    uint32_t timeout_ms;
    bool timed; /* the pool has a get_end hook: new gets note their start */
    uint32_t timeouts, wait_count;
    uint64_t wait_duration_ns;
    /* Runs after each delivered callback, so a closing pool can finish. */
    void (*after_callback)(rp__reqs *reqs);
};

void rp__reqs_init(rp__reqs *reqs, rp_pool *pool, uint32_t timeout_ms, void (*after_callback)(rp__reqs *));
void rp__reqs_free(rp__reqs *reqs);
rp__req *rp__req_new(rp__reqs *reqs, rp_get_cb cb, void *data);
/* Gives back a request that was never accepted. */
void rp__req_discard(rp__reqs *reqs, rp__req *req);
rp__req *rp__req_find(rp__reqs *reqs, int64_t id);
/* Queues the callback with (conn, status) for later in this iteration. */
void rp__req_complete(rp__reqs *reqs, rp__req *req, rp_conn *conn, int status);
/* Takes back a queued result; returns its connection, if any. */
rp_conn *rp__req_undeliver(rp__reqs *reqs, rp__req *req);

/* The waiter queue: waiters leave in arrival order, when served, when
 * cancelled, or with RP_EPOOLTIMEOUT after timeout_ms. As go-redis,
 * wait_count and wait_duration_ns count only the waits that were served
 * (rp__reqs_next_waiter). */
void rp__reqs_wait(rp__reqs *reqs, rp__req *req);
void rp__reqs_unwait(rp__reqs *reqs, rp__req *req);
rp__req *rp__reqs_next_waiter(rp__reqs *reqs);
/* Completes every waiter with status (a closing pool). */
void rp__reqs_fail_waiters(rp__reqs *reqs, int status);

#endif
