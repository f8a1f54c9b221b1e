/* The public rp_pool_ functions: argument checks, then the pool's table. */
#include "pool.h"

#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

void rp__pool_init(rp_pool *pool, const rp__pool_vtable *vt, rp_loop *loop, struct rp__reqs *reqs)
{
    pool->vt = vt;
    pool->loop = loop;
    pool->reqs = reqs;
    rp__loop_handle_opened(loop);
}

static void close_item_run(rp__deferred *item)
{
    rp_pool *pool = RP__CONTAINER_OF(item, rp_pool, close_item);
    if (pool->close_cb)
        pool->close_cb(pool, pool->close_data);
    rp__loop_handle_closed(pool->loop);
    rp__reqs_free(pool->reqs);
    rp__free(pool); /* the base is the first member of every pool kind */
}

void rp__pool_finish_close(rp_pool *pool)
{
    if (!pool->close_item.queued)
        rp__defer(pool->loop, &pool->close_item, close_item_run);
}

void rp__pool_misuse(rp_pool *pool, const char *op, const char *why)
{
    char text[160];
    pool->misuse_count++;
    snprintf(text, sizeof text, "%s: %s", op, why);
    if (pool->hooks.log)
        pool->hooks.log(pool->hooks.data, text);
    else
        rp__log_misuse(text);
}

int rp_pool_set_hooks(rp_pool *pool, const rp_hooks *hooks)
{
    if (!pool)
        return -EINVAL;
    pool->hooks = hooks ? *hooks : (rp_hooks){0};
    pool->reqs->timed = pool->hooks.get_end != NULL;
    return 0;
}

int64_t rp_pool_get(rp_pool *pool, rp_get_cb cb, void *data)
{
    if (!pool || !cb)
        return -EINVAL;
    return pool->vt->get(pool, cb, data);
}

int rp_pool_cancel(rp_pool *pool, int64_t request)
{
    if (!pool)
        return -EINVAL;
    return pool->vt->cancel(pool, request);
}

void rp_pool_put(rp_pool *pool, rp_conn *conn)
{
    if (pool)
        pool->vt->put(pool, conn);
    else
        rp__log_misuse("rp_pool_put: NULL pool");
}

void rp_pool_remove(rp_pool *pool, rp_conn *conn, int reason)
{
    if (pool)
        pool->vt->remove(pool, conn, reason);
    else
        rp__log_misuse("rp_pool_remove: NULL pool");
}

int rp_pool_new_conn(rp_pool *pool, rp_get_cb cb, void *data)
{
    if (!pool || !cb)
        return -EINVAL;
    return pool->vt->new_conn(pool, cb, data);
}

void rp_pool_close_conn(rp_pool *pool, rp_conn *conn)
{
    if (pool)
        pool->vt->close_conn(pool, conn);
    else
        rp__log_misuse("rp_pool_close_conn: NULL pool");
}

int rp_pool_len(const rp_pool *pool) { return pool ? pool->vt->len(pool) : -EINVAL; }
int rp_pool_idle_len(const rp_pool *pool) { return pool ? pool->vt->idle_len(pool) : -EINVAL; }
uint32_t rp_pool_misuse_count(const rp_pool *pool) { return pool ? pool->misuse_count : 0; }

void rp_pool_stats(const rp_pool *pool, rp_stats *out)
{
    if (pool && out)
        pool->vt->stats(pool, out);
}

int rp_pool_close(rp_pool *pool, rp_close_cb cb, void *data)
{
    if (!pool)
        return -EINVAL;
    return pool->vt->close(pool, cb, data);
}
