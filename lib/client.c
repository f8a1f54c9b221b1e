/* rp_client: an async Redis client over the pool. A command gets a
 * connection, sends, waits for its reply and puts the connection back, or
 * removes it when it proved bad and then retries, with go-redis's backoff,
 * up to max_retries times. New connections are set up (AUTH, SELECT,
 * CLIENT SETNAME, pipelined in one round trip) by the pool's on_connect. */
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_RETRY_BACKOFF_MS 8u
#define MAX_RETRY_BACKOFF_MS 512u

typedef enum { CMD_GETTING, CMD_SENT, CMD_BACKOFF, CMD_DONE } cmd_state;

typedef struct client_cmd client_cmd;
struct client_cmd {
    rp_client *client;
    client_cmd *prev, *next;
    rp_reply_cb cb;
    void *data;
    int argc;
    const char **argv; /* copies, kept for retries */
    size_t *argvlen;
    int retries;
    cmd_state state;
    int64_t get_id;
    rp__timer backoff;
    rp__deferred finish; /* a result decided outside any callback */
    int status;
};

struct rp_client {
    rp_loop *loop;
    rp_pool *pool;
    char *username, *password, *client_name;
    int db, max_retries;
    size_t max_reply_bytes;
    char setup_error[256]; /* the server's refusal of the last set-up */
    client_cmd *cmds;      /* every command not yet completed */
    bool closing;
    rp_client_close_cb close_cb;
    void *close_data;
};

void rp_client_options_init(rp_client_options *opts)
{
    memset(opts, 0, sizeof *opts);
    rp_pool_options_init(&opts->pool);
    opts->max_retries = 3;
}

rp_pool *rp_client_pool(rp_client *client) { return client ? client->pool : NULL; }

/* ----------------------------------------------------------------- set-up */

typedef struct setup_ctx {
    rp_client *client;
    int pending;
    int status;
} setup_ctx;

static void setup_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    setup_ctx *ctx = data;
    if (!ctx->status && status < 0)
        ctx->status = status;
    if (!ctx->status && reply && reply->type == REDIS_REPLY_ERROR) {
        snprintf(ctx->client->setup_error, sizeof ctx->client->setup_error, "%s", reply->str);
        ctx->status = RP_ESETUP;
    }
    if (--ctx->pending)
        return;
    int result = ctx->status;
    free(ctx);
    rp_conn_setup_done(conn, result);
}

static int setup_send(rp_conn *conn, setup_ctx *ctx, int argc, const char **argv)
{
    int rc = rp_conn_command(conn, setup_reply, ctx, argc, argv, NULL);
    if (rc == 0)
        ctx->pending++;
    return rc;
}

/* Queues the set-up commands; they leave together in one send. */
static int setup_commands(rp_client *client, rp_conn *conn, setup_ctx *ctx)
{
    int rc = 0;
    char db[16];
    if (client->password) {
        const char *auth[] = {"AUTH", client->username, client->password};
        rc = client->username ? setup_send(conn, ctx, 3, auth)
                              : setup_send(conn, ctx, 2, (const char *[]){"AUTH", client->password});
    }
    if (rc == 0 && client->db) {
        snprintf(db, sizeof db, "%d", client->db);
        rc = setup_send(conn, ctx, 2, (const char *[]){"SELECT", db});
    }
    if (rc == 0 && client->client_name)
        rc = setup_send(conn, ctx, 3, (const char *[]){"CLIENT", "SETNAME", client->client_name});
    return rc;
}

static void setup_conn(rp_conn *conn, void *data)
{
    rp_client *client = data;
    rp_conn_set_max_reply_bytes(conn, client->max_reply_bytes);
    setup_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx)
        ctx->client = client;
    int rc = ctx ? setup_commands(client, conn, ctx) : -ENOMEM;
    if (ctx && ctx->pending) {
        if (rc < 0)
            ctx->status = rc; /* the queued ones still answer */
        return;
    }
    free(ctx);
    rp_conn_setup_done(conn, rc);
}

/* ------------------------------------------------------------- commands */

static void cmd_unlink(rp_client *client, client_cmd *cmd)
{
    if (cmd->prev)
        cmd->prev->next = cmd->next;
    else
        client->cmds = cmd->next;
    if (cmd->next)
        cmd->next->prev = cmd->prev;
}

static void close_if_drained(rp_client *client);

static void cmd_complete(client_cmd *cmd, const redisReply *reply, int status)
{
    rp_client *client = cmd->client;
    cmd->state = CMD_DONE;
    cmd_unlink(client, cmd);
    if (status == RP_ESETUP) {
        /* The server's own words, as the reply to this command. */
        redisReply refusal = {.type = REDIS_REPLY_ERROR, .str = client->setup_error,
                              .len = strlen(client->setup_error)};
        cmd->cb(client, &refusal, 0, cmd->data);
    } else {
        cmd->cb(client, reply, status, cmd->data);
    }
    free(cmd);
    close_if_drained(client);
}

static void cmd_finish_run(rp__deferred *item)
{
    client_cmd *cmd = RP__CONTAINER_OF(item, client_cmd, finish);
    cmd_complete(cmd, NULL, cmd->status);
}

static void cmd_get(client_cmd *cmd);

/* EOF, reset, timeout, a protocol error: the connection, not the command,
 * failed. A Redis error reply never gets here. */
static bool conn_proved_bad(int status)
{
    return status == RP_EEOF || status == -ECONNRESET || status == -EPIPE || status == -ETIMEDOUT ||
           status == -ECONNABORTED || status == -EPROTO;
}

/* go-redis's backoff: 8 ms doubling to 512 ms, with random jitter. */
static uint64_t retry_backoff_ns(rp_client *client, int retry)
{
    uint64_t d = (uint64_t)MIN_RETRY_BACKOFF_MS << (retry < 6 ? retry : 6);
    d = MIN_RETRY_BACKOFF_MS + rp__loop_random(client->loop) % d;
    return RP__MIN(d, (uint64_t)MAX_RETRY_BACKOFF_MS) * RP__NS_PER_MS;
}

static void backoff_fired(rp__timer *timer)
{
    client_cmd *cmd = RP__CONTAINER_OF(timer, client_cmd, backoff);
    cmd_get(cmd);
}

static void on_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    client_cmd *cmd = data;
    rp_client *client = cmd->client;
    if (status == 0) {
        rp_pool_put(client->pool, conn);
        cmd_complete(cmd, reply, 0);
        return;
    }
    rp_pool_remove(client->pool, conn, status);
    if (!conn_proved_bad(status) || cmd->retries >= client->max_retries || client->closing) {
        cmd_complete(cmd, NULL, status);
        return;
    }
    cmd->state = CMD_BACKOFF;
    rp__timer_arm(client->loop, &cmd->backoff, rp__loop_now(client->loop) + retry_backoff_ns(client, cmd->retries++));
}

/* Queues the command on conn; a connection that refuses it is removed. */
static int cmd_send(client_cmd *cmd, rp_conn *conn)
{
    int rc = rp_conn_command(conn, on_reply, cmd, cmd->argc, cmd->argv, cmd->argvlen);
    if (rc < 0)
        rp_pool_remove(cmd->client->pool, conn, rc);
    else
        cmd->state = CMD_SENT;
    return rc;
}

static void on_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    client_cmd *cmd = data;
    if (status == 0 && (status = cmd_send(cmd, conn)) == 0)
        return;
    cmd_complete(cmd, NULL, status == -ECANCELED && cmd->client->closing ? RP_ECLOSED : status);
}

static void cmd_fail_later(client_cmd *cmd, int status)
{
    cmd->state = CMD_DONE; /* close must not queue it a second time */
    cmd->status = status;
    rp__defer(cmd->client->loop, &cmd->finish, cmd_finish_run);
}

/* An idle connection goes to work at once: the command leaves with this
 * iteration's submit instead of waiting one loop iteration for the get. */
static void cmd_get(client_cmd *cmd)
{
    rp_client *client = cmd->client;
    rp_conn *conn = rp__pool_try_get(client->pool);
    if (conn) {
        int rc = cmd_send(cmd, conn);
        if (rc < 0)
            cmd_fail_later(cmd, rc);
        return;
    }
    cmd->state = CMD_GETTING;
    int64_t id = rp_pool_get(client->pool, on_conn, cmd);
    if (id < 0)
        cmd_fail_later(cmd, (int)id);
    else
        cmd->get_id = id;
}

/* One allocation holds the command and copies of its arguments. */
static client_cmd *cmd_new(rp_client *client, int argc, const char *const *argv, const size_t *argvlen)
{
    size_t bytes = sizeof(client_cmd) + (size_t)argc * (sizeof(char *) + sizeof(size_t));
    for (int i = 0; i < argc; i++)
        bytes += argvlen ? argvlen[i] : strlen(argv[i]);
    client_cmd *cmd = calloc(1, bytes);
    if (!cmd)
        return NULL;
    cmd->argv = (const char **)(cmd + 1);
    cmd->argvlen = (size_t *)(cmd->argv + argc);
    char *copy = (char *)(cmd->argvlen + argc);
    for (int i = 0; i < argc; i++) {
        cmd->argvlen[i] = argvlen ? argvlen[i] : strlen(argv[i]);
        memcpy(copy, argv[i], cmd->argvlen[i]);
        cmd->argv[i] = copy;
        copy += cmd->argvlen[i];
    }
    cmd->argc = argc;
    cmd->client = client;
    rp__timer_init(&cmd->backoff, backoff_fired, true);
    return cmd;
}

int rp_client_command(rp_client *client, rp_reply_cb cb, void *data, int argc, const char *const *argv,
                      const size_t *argvlen)
{
    if (!client || !cb || argc <= 0 || !argv)
        return -EINVAL;
    if (client->closing)
        return RP_ECLOSED;
    client_cmd *cmd = cmd_new(client, argc, argv, argvlen);
    if (!cmd)
        return -ENOMEM;
    cmd->cb = cb;
    cmd->data = data;
    cmd->next = client->cmds;
    if (client->cmds)
        client->cmds->prev = cmd;
    client->cmds = cmd;
    cmd_get(cmd);
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

static void free_client(rp_client *client)
{
    free(client->username);
    free(client->password);
    free(client->client_name);
    free(client);
}

static int copy_string(char **out, const char *in)
{
    if (in && !(*out = strdup(in)))
        return -ENOMEM;
    return 0;
}

int rp_client_new(rp_client **out, rp_loop *loop, const rp_client_options *opts)
{
    if (!out || !loop || !opts || opts->db < 0 || (opts->username && !opts->password))
        return -EINVAL;
    rp_client *client = calloc(1, sizeof *client);
    if (!client)
        return -ENOMEM;
    client->loop = loop;
    client->db = opts->db;
    client->max_retries = opts->max_retries > 0 ? opts->max_retries : 0;
    client->max_reply_bytes = opts->max_reply_bytes ? opts->max_reply_bytes : 512u * 1024 * 1024;
    int rc = copy_string(&client->username, opts->username);
    if (rc == 0)
        rc = copy_string(&client->password, opts->password);
    if (rc == 0)
        rc = copy_string(&client->client_name, opts->client_name);
    rp_pool_options pool_opts = opts->pool;
    pool_opts.on_connect = setup_conn;
    pool_opts.on_connect_data = client;
    if (rc == 0)
        rc = rp_pool_new(&client->pool, loop, &pool_opts);
    if (rc < 0) {
        free_client(client);
        return rc;
    }
    *out = client;
    return 0;
}

static void pool_closed(rp_pool *pool, void *data)
{
    (void)pool;
    rp_client *client = data;
    if (client->close_cb)
        client->close_cb(client, client->close_data);
    free_client(client);
}

static void close_if_drained(rp_client *client)
{
    if (client->closing && !client->cmds && client->pool) {
        rp_pool *pool = client->pool;
        client->pool = NULL;
        rp_pool_close(pool, pool_closed, client);
    }
}

/* Commands already sent finish with their replies; the rest get
 * RP_ECLOSED, later, from the loop. Then the pool closes. */
int rp_client_close(rp_client *client, rp_client_close_cb cb, void *data)
{
    if (!client)
        return -EINVAL;
    if (client->closing)
        return RP_ECLOSED;
    client->closing = true;
    client->close_cb = cb;
    client->close_data = data;
    for (client_cmd *cmd = client->cmds; cmd; cmd = cmd->next) {
        if (cmd->state == CMD_GETTING && rp_pool_cancel(client->pool, cmd->get_id) == 0)
            continue; /* on_conn gets -ECANCELED: RP_ECLOSED */
        if (cmd->state == CMD_BACKOFF) {
            rp__timer_disarm(client->loop, &cmd->backoff);
            cmd_fail_later(cmd, RP_ECLOSED);
        }
    }
    close_if_drained(client);
    return 0;
}
