/* transaction: optimistic increments with WATCH/MULTI/EXEC on sticky pools.
 * Several workers increment one counter at once; each keeps its own
 * connection through a sticky pool and retries when EXEC is aborted. */
#include <stdio.h>

#include <ringpool.h>

#include "common.h"

static const char usage[] =
    "usage: transaction [-a ADDR] [-c WORKERS] [-n INCREMENTS]\n"
    "  WORKERS (default 8) sticky pools each add INCREMENTS (default 100) to\n"
    "  tx:counter with WATCH/GET/MULTI/SET/EXEC, retrying aborted EXECs.\n"
    "  -a ADDR  host:port, [v6]:port or unix:/path (default 127.0.0.1:6379)\n";

typedef struct worker {
    rp_pool *sticky;
    long remaining;
    long retries;
    int failed;
} worker;

static void begin(worker *w);

static void check_ok(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    worker *w = data;
    if (status < 0 || reply->type == REDIS_REPLY_ERROR)
        w->failed = status < 0 ? status : -1;
}

static void on_exec(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    worker *w = data;
    if (status < 0 || w->failed) {
        w->failed = status ? status : w->failed;
        rp_pool_remove(w->sticky, conn, status);
        rp_pool_close(w->sticky, NULL, NULL);
        return;
    }
    if (reply->type == REDIS_REPLY_NIL)
        w->retries++; /* another worker changed the counter: try again */
    else
        w->remaining--;
    rp_pool_put(w->sticky, conn);
    if (w->remaining > 0)
        begin(w);
    else
        rp_pool_close(w->sticky, NULL, NULL);
}

static void on_get(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    worker *w = data;
    if (status < 0)
        return; /* on_exec sees the same failure */
    char next[32];
    snprintf(next, sizeof next, "%lld", reply->type == REDIS_REPLY_STRING ? atoll(reply->str) + 1 : 1);
    rp_conn_command(conn, check_ok, w, 1, (const char *[]){"MULTI"}, NULL);
    rp_conn_command(conn, check_ok, w, 3, (const char *[]){"SET", "tx:counter", next}, NULL);
    rp_conn_command(conn, on_exec, w, 1, (const char *[]){"EXEC"}, NULL);
}

static void on_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    worker *w = data;
    if (status < 0) {
        w->failed = status;
        rp_pool_close(w->sticky, NULL, NULL);
        return;
    }
    rp_conn_command(conn, check_ok, w, 2, (const char *[]){"WATCH", "tx:counter"}, NULL);
    rp_conn_command(conn, on_get, w, 2, (const char *[]){"GET", "tx:counter"}, NULL);
}

/* Every round gets the worker's one connection from its sticky pool. */
static void begin(worker *w) { rp_pool_get(w->sticky, on_conn, w); }

static void on_final(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    *(long long *)data = status == 0 && reply->type == REDIS_REPLY_STRING ? atoll(reply->str) : -1;
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:6379", .c = 8, .n = 100};
    example_parse(argc, argv, &args, usage);
    rp_loop *loop;
    rp_client *client = example_client(&loop, args.addr, "transaction");
    rp_client_command(client, on_final, &(long long){0}, 2, (const char *[]){"DEL", "tx:counter"}, NULL);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    worker *workers = calloc((size_t)args.c, sizeof *workers);
    for (long i = 0; i < args.c; i++) {
        workers[i].remaining = args.n;
        rp_sticky_pool_new(&workers[i].sticky, rp_client_pool(client));
        begin(&workers[i]);
    }
    rp_loop_run(loop, RP_RUN_DEFAULT);
    long long final = 0;
    long retries = 0;
    int failed = 0;
    for (long i = 0; i < args.c; i++) {
        retries += workers[i].retries;
        failed |= workers[i].failed;
    }
    rp_client_command(client, on_final, &final, 2, (const char *[]){"GET", "tx:counter"}, NULL);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    printf("%ld workers x %ld increments: tx:counter = %lld (%ld aborted EXECs retried)%s\n", args.c, args.n,
           final, retries, failed ? ", with failures" : "");
    free(workers);
    example_finish(loop, client);
    return !failed && final == args.c * args.n ? 0 : 1;
}
