/* pipeline: N commands pipelined on one connection of the client's pool. */
#include <time.h>

#include <ringpool.h>

#include "common.h"

static const char usage[] =
    "usage: pipeline [-a ADDR] [-n COMMANDS]\n"
    "  Sends COMMANDS (default 10000) INCRs pipelined on one connection and\n"
    "  checks that every reply arrives, in order.\n"
    "  -a ADDR  host:port, [v6]:port or unix:/path (default 127.0.0.1:6379)\n";

typedef struct run {
    rp_pool *pool;
    long total, replies, errors;
    long long first;
} run;

static void on_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    run *r = data;
    if (status < 0 || reply->type != REDIS_REPLY_INTEGER)
        r->errors++;
    else if (r->replies == 0)
        r->first = reply->integer;
    else if (reply->integer != r->first + r->replies)
        r->errors++; /* out of order */
    if (++r->replies == r->total)
        rp_pool_put(r->pool, conn);
}

static void on_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    run *r = data;
    if (status < 0) {
        fprintf(stderr, "pipeline: %s\n", rp_strerror(status));
        r->errors = r->total;
        return;
    }
    /* Every command issued before the loop submits leaves in one send. */
    for (long i = 0; i < r->total; i++)
        if (rp_conn_command(conn, on_reply, r, 2, (const char *[]){"INCR", "pipeline:counter"}, NULL) < 0)
            r->errors++;
    (void)pool;
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:6379", .n = 10000};
    example_parse(argc, argv, &args, usage);
    rp_loop *loop;
    rp_client *client = example_client(&loop, args.addr, "pipeline");
    run r = {.pool = rp_client_pool(client), .total = args.n};
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    rp_pool_get(r.pool, on_conn, &r);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ms = (double)(end.tv_sec - start.tv_sec) * 1e3 + (double)(end.tv_nsec - start.tv_nsec) / 1e6;
    printf("%ld commands pipelined on one connection: %ld replies in order, %ld errors, %.1f ms\n", r.total,
           r.replies - r.errors, r.errors, ms);
    example_finish(loop, client);
    return r.errors ? 1 : 0;
}
