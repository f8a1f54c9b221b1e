/* The connection record, shared by the pool (which owns it) and the
 * connection I/O layer. */
#ifndef RP_CONN_H
#define RP_CONN_H

#include "internal.h"

typedef struct rp__conn_pool rp__conn_pool;

typedef enum {
    RP__CONN_DIALING,
    RP__CONN_IDLE,
    RP__CONN_CHECKING, /* health check before hand-out */
    RP__CONN_SETUP,    /* dialled; the pool's on_connect runs */
    RP__CONN_IN_USE,
    RP__CONN_CLOSED,   /* fd closed; record lives until its ops drain */
} rp__conn_state;

typedef struct rp__conn_io {
    rp__op op;
    rp__timer deadline; /* cancels the op when the read/write timeout passes */
    rp_io_cb cb;
    void *data;
    char *buf;
    size_t len, done;
    uint32_t timeout_ms;
} rp__conn_io;

struct rp_conn {
    rp__conn_pool *owner;
    int fd;
    uint8_t state;
    bool pooled;       /* holds a turn while in use; false for rp_pool_new_conn */
    bool broken;       /* an I/O error or end of stream: never reused */
    bool watching;     /* the idle watch is armed */
    uint8_t in_callback; /* a user callback runs: the record must outlive it */
    bool in_setup;     /* on_connect has not called rp_conn_setup_done yet */
    uint32_t read_timeout_ms, write_timeout_ms;
    uint64_t created_ns, used_ns, expires_ns;
    rp_conn *prev, *next;           /* idle list */
    rp_conn *all_prev, *all_next;   /* the pool's every record */
    struct rp__req *for_req;       /* the request a dial or check serves */
    rp__op watch_op;                /* zero-length recv: idle watch or check */
    rp__op dial_op;
    struct __kernel_timespec dial_ts;
    rp__conn_io send, recv;
    /* The protocol layer above (redis.c): its state, freed with the
     * record, and how many replies it still expects (put removes a
     * connection that has any; the record outlives them). */
    void *ext;
    void (*ext_free)(void *ext);
    unsigned ext_pending;
};

rp_loop *rp__conn_loop(const rp_conn *conn);
void rp__conn_io_init(rp_conn *conn);
/* Called by the I/O layer after an op's callback: frees a closed record. */
void rp__conn_op_finished(rp_conn *conn);

static inline bool rp__conn_ops_pending(const rp_conn *conn)
{
    return conn->watch_op.pending || conn->dial_op.pending || conn->send.op.pending ||
           conn->recv.op.pending;
}

/* A caller's put must not reuse it: I/O or replies still outstanding. */
static inline bool rp__conn_busy(const rp_conn *conn)
{
    return rp__conn_ops_pending(conn) || conn->ext_pending;
}

/* Nothing refers to the record any more: no op, no reply, no callback. */
static inline bool rp__conn_releasable(const rp_conn *conn)
{
    return !rp__conn_busy(conn) && !conn->in_callback && !conn->in_setup;
}

/* I/O is allowed while a caller holds it and while on_connect sets it up. */
static inline bool rp__conn_usable(const rp_conn *conn)
{
    return conn->state == RP__CONN_IN_USE || conn->state == RP__CONN_SETUP;
}

/* rp_conn_send / rp_conn_recv with an explicit timeout (0 = none). */
int rp__conn_start_io(rp_conn *conn, bool is_send, void *buf, size_t len, uint32_t timeout_ms, rp_io_cb cb, void *data);

#endif
