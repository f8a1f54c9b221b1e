/* pool_ping: takes a connection from a pool, sends PING over it with
 * rp_conn_send/rp_conn_recv, prints the reply and puts the connection back. */
#include <ringpool/core.h>

#include "common.h"

static const char usage[] =
    "usage: pool_ping [-a ADDR]\n"
    "  Sends PING to a Redis server through a ringpool connection pool.\n"
    "  -a ADDR  host:port, [v6]:port or unix:/path (default 127.0.0.1:6379)\n";

typedef struct ping {
    rp_pool *pool;
    char reply[64];
    int status;
} ping;

static void on_reply(rp_conn *conn, ssize_t result, void *data)
{
    ping *p = data;
    if (result > 0)
        printf("reply: %.*s", (int)result, p->reply);
    p->status = result > 0 ? 0 : (int)result;
    if (p->status)
        rp_pool_remove(p->pool, conn, p->status);
    else
        rp_pool_put(p->pool, conn);
}

static void on_sent(rp_conn *conn, ssize_t result, void *data)
{
    ping *p = data;
    int rc = result < 0 ? (int)result : rp_conn_recv(conn, p->reply, sizeof p->reply, on_reply, p);
    if (rc < 0) {
        p->status = rc;
        rp_pool_remove(p->pool, conn, rc);
    }
}

static void on_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    ping *p = data;
    int rc = status ? status : rp_conn_send(conn, "PING\r\n", 6, on_sent, p);
    if (rc < 0) {
        p->status = rc;
        if (conn)
            rp_pool_remove(pool, conn, rc);
    }
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:6379"};
    example_parse(argc, argv, &args, usage);
    rp_loop *loop;
    rp_pool *pool;
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = args.addr;
    int rc = rp_loop_new(&loop, NULL);
    if (rc == 0)
        rc = rp_pool_new(&pool, loop, &opts);
    if (rc < 0) {
        fprintf(stderr, "pool_ping: %s\n", rp_strerror(rc));
        return 1;
    }
    ping p = {.pool = pool};
    rp_pool_get(pool, on_conn, &p);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    if (p.status)
        fprintf(stderr, "pool_ping: %s: %s\n", args.addr, rp_strerror(p.status));
    rp_pool_close(pool, NULL, NULL);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    rp_loop_free(loop);
    return p.status ? 1 : 0;
}
