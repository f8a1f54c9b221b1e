/* The pool interface: the C form of go-redis's Pooler. Every rp_pool_
 * function dispatches through this table, so the connection pool and its
 * single and sticky wrappers share the rp_pool type. */
#ifndef RP_POOL_H
#define RP_POOL_H

#include "internal.h"

typedef struct rp__pool_vtable {
    int64_t (*get)(rp_pool *pool, rp_get_cb cb, void *data);
    int (*cancel)(rp_pool *pool, int64_t request);
    void (*put)(rp_pool *pool, rp_conn *conn);
    void (*remove)(rp_pool *pool, rp_conn *conn, int reason);
    int (*new_conn)(rp_pool *pool, rp_get_cb cb, void *data);
    void (*close_conn)(rp_pool *pool, rp_conn *conn);
    int (*len)(const rp_pool *pool);
    int (*idle_len)(const rp_pool *pool);
    void (*stats)(const rp_pool *pool, rp_stats *out);
    int (*close)(rp_pool *pool, rp_close_cb cb, void *data);
} rp__pool_vtable;

/* The first member of every pool kind. */
struct rp_pool {
    const rp__pool_vtable *vt;
    rp_loop *loop;
    struct rp__reqs *reqs;    /* its get requests */
    uint32_t pool_timeout_ms; /* wrappers wait as long as their parent */
    uint32_t misuse_count;
    rp_hooks hooks;
    rp_close_cb close_cb;
    void *close_data;
    rp__deferred close_item;
};

/* Registers a new pool with its loop. */
void rp__pool_init(rp_pool *pool, const rp__pool_vtable *vt, rp_loop *loop, struct rp__reqs *reqs);
/* Runs the close callback later, then frees the pool: called once the
 * pool kind knows nothing refers to it any more. Idempotent. */
void rp__pool_finish_close(rp_pool *pool);

rp_conn *rp__pool_try_get(rp_pool *pool);

/* A connection pool with no target yet: its dials wait for
 * rp__pool_set_target (sentinel.c follows a master with it). */
int rp__pool_new_untargeted(rp_pool **out, rp_loop *loop, const rp_pool_options *opts);
/* Future dials go to addr (a numeric address, a host name, a path).
 * Connections made for the previous target are never reused: idle ones
 * close now, the others when they come back. addr NULL: no target; with
 * error 0 dials wait for one, else they fail with error. -EINVAL for
 * anything but an open connection pool, or a malformed addr. */
int rp__pool_set_target(rp_pool *pool, const char *addr, int error);

/* Counts and logs a caller's mistake (double put, wrong pool, ...). */
void rp__pool_misuse(rp_pool *pool, const char *op, const char *why);

#endif
