/* pool_ping: takes a connection from a pool, sends PING over it with
 * rp_conn_send, reads the whole reply line with rp_conn_recv_until (the
 * connection's own receive buffer: a reply split across reads is put back
 * together, and nothing is taken for the whole reply too early), prints it
 * and puts the connection back. */
#include <ringpool/core.h>

#include "common.h"

static const char usage[] =
    "usage: pool_ping [-a ADDR]\n"
    "  Sends PING to a Redis server through a ringpool connection pool.\n"
    "  -a ADDR  host:port, [v6]:port or unix:/path (default 127.0.0.1:6379)\n";

typedef struct ping {
    rp_pool *pool;
    int status;
} ping;

static void done(ping *p, rp_conn *conn, int status)
{
    p->status = status;
    if (status)
        rp_pool_remove(p->pool, conn, status);
    else
        rp_pool_put(p->pool, conn);
}

/* The whole line, "\r\n" included: valid until this returns. */
static void on_reply(rp_conn *conn, const char *line, ssize_t len, void *data)
{
    if (len > 0)
        printf("reply: %.*s", (int)len, line);
    done(data, conn, len > 0 ? 0 : (int)len);
}

static void on_sent(rp_conn *conn, ssize_t result, void *data)
{
    /* A reply line longer than 512 bytes is no PONG: -EMSGSIZE. */
    int rc = result < 0 ? (int)result : rp_conn_recv_until(conn, "\r\n", 2, 512, on_reply, data);
    if (rc < 0)
        done(data, conn, rc);
}

static void on_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    ping *p = data;
    (void)pool;
    int rc = status ? status : rp_conn_send(conn, "PING\r\n", 6, on_sent, p);
    if (rc < 0 && conn)
        done(p, conn, rc);
    else if (rc < 0)
        p->status = rc;
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
