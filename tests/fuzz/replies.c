#include "replies.h"

#include <errno.h>
#include <fcntl.h>
#include <ringpool.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define COMMANDS 4

/* One loop, pool and unix listener for the whole run; a fresh connection
 * for every input. */
static rp_loop *loop;
static rp_pool *pool;
static int listener = -1;

static void set_up(void)
{
    char dir[] = "/tmp/ringpool-fuzz-XXXXXX", addr[128];
    if (!mkdtemp(dir))
        abort();
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s/server.sock", dir);
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(listener, (struct sockaddr *)&sun, sizeof sun) < 0 || listen(listener, 16) < 0)
        abort();
    snprintf(addr, sizeof addr, "unix:%s", sun.sun_path);
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = addr;
    opts.pool_size = 2;
    opts.read_timeout_ms = 2000;
    if (rp_loop_new(&loop, NULL) < 0 || rp_pool_new(&pool, loop, &opts) < 0)
        abort();
}

typedef struct got {
    bool done;
    int status;
    rp_conn *conn;
} got;

static void on_conn(rp_pool *p, rp_conn *conn, int status, void *data)
{
    (void)p;
    got *g = data;
    g->done = true;
    g->status = status;
    g->conn = conn;
}

static int calls[COMMANDS];
static int failures;

static void on_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    int *count = data;
    if ((status == 0) != (reply != NULL))
        abort(); /* a reply and a status, never both, never neither */
    failures += status < 0;
    (*count)++;
}

static bool all_answered(void)
{
    for (int i = 0; i < COMMANDS; i++)
        if (!calls[i])
            return false;
    return true;
}

void fuzz_replies_one(const uint8_t *data, size_t size)
{
    if (!loop)
        set_up();
    got g = {0};
    if (rp_pool_get(pool, on_conn, &g) < 0)
        abort();
    while (!g.done)
        rp_loop_run(loop, RP_RUN_ONCE);
    if (g.status < 0)
        abort();
    int peer = accept(listener, NULL, NULL);
    fcntl(peer, F_SETFL, O_NONBLOCK);
    memset(calls, 0, sizeof calls);
    failures = 0;
    const char *argv[] = {"GET", "key"};
    for (int i = 0; i < COMMANDS; i++)
        if (rp_conn_command(g.conn, on_reply, &calls[i], 2, argv, NULL) < 0)
            abort();
    size_t sent = 0;
    while (!all_answered()) {
        if (sent < size) {
            ssize_t n = write(peer, data + sent, size - sent);
            if (n > 0 && (sent += (size_t)n) == size)
                shutdown(peer, SHUT_WR); /* then end of stream */
        } else if (size == 0 && sent == 0) {
            shutdown(peer, SHUT_WR);
            sent = 1;
        }
        rp_loop_run(loop, sent >= size ? RP_RUN_ONCE : RP_RUN_NOWAIT);
    }
    for (int i = 0; i < COMMANDS; i++)
        if (calls[i] != 1)
            abort();
    rp_pool_put(pool, g.conn);
    if (failures && rp_pool_len(pool) != 0)
        abort(); /* a failed connection went back to the pool */
    if (rp_pool_len(pool)) { /* take it back out: each input gets a fresh one */
        got again = {0};
        rp_pool_get(pool, on_conn, &again);
        while (!again.done)
            rp_loop_run(loop, RP_RUN_ONCE);
        if (again.conn != g.conn)
            abort();
        rp_pool_remove(pool, again.conn, 0);
    }
    close(peer);
    rp_loop_run(loop, RP_RUN_NOWAIT);
}
