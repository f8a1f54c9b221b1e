/* The connection pool's records of connections, and the caller's data on
 * them.
 *
 * Records are kept for the pool's life and reused oldest first, so a
 * stale pointer (a double put) still reads a record of this pool, which
 * says it is not in use, rather than freed memory. A record is in the
 * pool's list of all records from its dial's start until the connection
 * layer says it is drained; then the caller's data goes and it is spare. */
#include "pool_conn.h"

#include <errno.h>

rp_conn *rp__cp_record_take(rp__conn_pool *cp)
{
    rp_conn *conn = rp__cp_link_conn(rp__list_pop(&cp->spare, false));
    if (!conn && !(conn = rp__malloc(sizeof *conn)))
        return NULL;
    rp__conn_init(conn, rp__cp_loop(cp), cp, cp->events);
    return conn;
}

void rp__cp_record_spare(rp__conn_pool *cp, rp_conn *conn)
{
    conn->state = RP__CONN_CLOSED;
    rp__list_push_back(&cp->spare, &conn->idle_link);
}

/* No op, reply or callback refers to the record any more, so the caller's
 * data (a buffer the kernel wrote into, say) may go now. */
void rp__cp_record_release(rp__conn_pool *cp, rp_conn *conn)
{
    void (*user_free)(void *data) = conn->user_free;
    conn->user_free = NULL; /* once, whatever it calls */
    if (user_free)
        user_free(conn->user_data);
    void (*lib_free)(void *data) = conn->lib_free;
    conn->lib_free = NULL;
    if (lib_free)
        lib_free(conn->lib_data);
    rp__frames_free(conn->frames);
    conn->frames = NULL;
    rp__list_unlink(&cp->all, &conn->all_link);
    rp__cp_record_spare(cp, conn);
}

void rp__cp_records_free(rp__conn_pool *cp)
{
    rp__link *spare;
    while ((spare = rp__list_pop(&cp->spare, false)))
        rp__free(rp__cp_link_conn(spare));
}

int rp_conn_set_data_full(rp_conn *conn, void *data, void (*free_fn)(void *data))
{
    if (!conn)
        return -EINVAL;
    conn->user_data = data;
    conn->user_free = free_fn;
    return 0;
}

rp_pool *rp_conn_pool(const rp_conn *conn) { return conn ? &rp__cp_of(conn)->base : NULL; }
