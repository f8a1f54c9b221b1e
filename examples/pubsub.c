/* pubsub: a subscriber on a single-connection pool, a publisher through
 * the client. The subscriber prints each message and unsubscribes after N. */
#include <ringpool.h>

#include "common.h"

static const char usage[] =
    "usage: pubsub [-a ADDR] [-n MESSAGES]\n"
    "  Subscribes to channel \"news\" on a connection of its own (a single-conn\n"
    "  pool), publishes MESSAGES (default 3) through the client, prints them\n"
    "  as they arrive and unsubscribes.\n"
    "  -a ADDR  host:port, [v6]:port or unix:/path (default 127.0.0.1:6379)\n";

typedef struct app {
    rp_client *client;
    rp_pool *single;
    rp_conn *conn;
    long wanted, received;
    int status;
} app;

static void on_published(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    (void)reply;
    if (status < 0)
        ((app *)data)->status = status;
}

static void publish_all(app *a)
{
    char text[32];
    for (long i = 1; i <= a->wanted; i++) {
        snprintf(text, sizeof text, "message %ld", i);
        rp_client_command(a->client, on_published, a, 3, (const char *[]){"PUBLISH", "news", text}, NULL);
    }
}

static void on_push(rp_conn *conn, const redisReply *msg, int status, void *data)
{
    app *a = data;
    if (!msg) { /* the subscription is over */
        a->status = status;
        rp_pool_close(a->single, NULL, NULL);
        rp_pool_close_conn(rp_client_pool(a->client), conn);
        return;
    }
    const char *kind = msg->element[0]->str;
    if (!strcmp(kind, "subscribe")) {
        printf("subscribed to %s\n", msg->element[1]->str);
        publish_all(a);
    } else if (!strcmp(kind, "message")) {
        printf("%s: %s\n", msg->element[1]->str, msg->element[2]->str);
        if (++a->received == a->wanted)
            rp_conn_unsubscribe(conn, 1, (const char *[]){"UNSUBSCRIBE"}, NULL);
    }
}

static void on_subscriber(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    app *a = data;
    if (status == 0)
        status = rp_conn_subscribe(conn, on_push, a, 2, (const char *[]){"SUBSCRIBE", "news"}, NULL);
    if (status < 0) {
        a->status = status;
        rp_pool_close(a->single, NULL, NULL);
        rp_pool_close_conn(rp_client_pool(a->client), a->conn);
    }
}

/* A subscriber must not share its connection: take one outside the idle
 * set and wrap it in a single-connection pool. */
static void on_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    app *a = data;
    if (status == 0)
        status = rp_single_pool_new(&a->single, pool, conn);
    if (status < 0) {
        a->status = status;
        if (conn)
            rp_pool_close_conn(pool, conn);
        return;
    }
    a->conn = conn;
    rp_pool_get(a->single, on_subscriber, a);
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:6379", .n = 3};
    example_parse(argc, argv, &args, usage);
    rp_loop *loop;
    app a = {.wanted = args.n};
    a.client = example_client(&loop, args.addr, "pubsub");
    rp_pool_new_conn(rp_client_pool(a.client), on_conn, &a);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    if (a.status < 0)
        fprintf(stderr, "pubsub: %s\n", rp_strerror(a.status));
    printf("received %ld of %ld messages\n", a.received, a.wanted);
    example_finish(loop, a.client);
    return a.status < 0 || a.received != a.wanted ? 1 : 0;
}
