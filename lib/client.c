/* rp_client: an async Redis client over the pool. This file is the
 * client's front: it makes commands, routes each attempt and takes
 * commands back. How an attempt ends is command.c's; connections that
 * commands share are autopipeline.c's. Calls go down only: client.c ->
 * autopipeline.c -> command.c.
 * An attempt's route (cmd_get): with reads on replicas, a read-only
 * command may go to a replica's client (sentinel.c picks it; a failure
 * there sends it on to the master); a command that may share a connection goes
 * to a lane; any other gets a connection of its own (an idle one at once,
 * or a get), sends, and on its reply puts the connection back, or removes
 * it when it proved bad or holds the command's state. Retries come back
 * here, from the retry timer.
 * Taking a command back (cancel, the caller's deadline, close) follows
 * its state: a get cancelled, a backoff stopped, a lane's command handed
 * to autopipeline.c, a sent command's connection held until its reply is
 * skipped (the held list), or closed.
 * The client itself: open -> closing (rp_client_close or _abort) -> its
 * last command ends, and command.c closes the pool -> the pool and the
 * sentinels have closed: close_cb runs, and the client is freed.
 * New connections are set up (AUTH, SELECT, CLIENT SETNAME, pipelined in
 * one round trip) by the pool's on_connect; the first one also reads the
 * server's COMMAND table, to know which commands are read-only. A client
 * that follows a Sentinel-managed master (sentinel.c) adds ROLE to that
 * round trip, and refuses a node that is not the master. With a cache
 * (cache.c), the set-up also redirects the connection's tracking to the
 * cache's subscriber; a cached read found in memory (cache_answers) ends
 * from the loop unsent, and a write drops its keys there. */
#include "client.h"
#include "autopipeline.h"
#include "sentinel.h"
#include "retry.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_MIN_RETRY_BACKOFF_MS 8u
#define DEFAULT_MAX_RETRY_BACKOFF_MS 512u

void rp_client_options_init(rp_client_options *opts)
{
    memset(opts, 0, sizeof *opts);
    rp_pool_options_init(&opts->pool);
    opts->max_retries = 3;
}

rp_pool *rp_client_pool(rp_client *client) { return client ? client->pool : NULL; }

size_t rp_client_buffer_bytes(const rp_client *client) { return client ? client->buffer_bytes : 0; }

const char *rp_client_sentinel_error(const rp_client *client)
{
    return client && client->sentinel ? rp__sentinel_error(client->sentinel) : NULL;
}

int rp_client_cache_stats(const rp_client *client, rp_cache_stats *out)
{
    if (!client || !out || !client->cache)
        return -EINVAL;
    rp__cache_stats(client->cache, out);
    return 0;
}

int rp_client_set_hooks(rp_client *client, const rp_hooks *hooks)
{
    if (!client || client->closing)
        return client ? RP_ECLOSED : -EINVAL;
    client->hooks = hooks ? *hooks : (rp_hooks){0};
    return rp_pool_set_hooks(client->pool, hooks);
}

/* ----------------------------------------------------------------- set-up */

typedef struct setup_ctx {
    rp_client *client;
    int pending;
    int status;
} setup_ctx;

static void setup_step_done(rp_conn *conn, setup_ctx *ctx, int status)
{
    if (!ctx->status && status < 0)
        ctx->status = status;
    if (--ctx->pending)
        return;
    int result = ctx->status;
    rp_conn_set_max_reply_bytes(conn, ctx->client->max_reply_bytes); /* COMMAND is done */
    rp__free(ctx);
    rp_conn_setup_done(conn, result);
}

static void setup_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    setup_ctx *ctx = data;
    if (!ctx->status && reply && reply->type == REDIS_REPLY_ERROR) {
        snprintf(ctx->client->setup_error, sizeof ctx->client->setup_error, "%s", reply->str);
        status = RP_ESETUP;
    }
    setup_step_done(conn, ctx, status);
}

/* ROLE: only a master takes the client's commands; a node that is not one
 * (a demoted master, a replica the sentinels' answer was stale about) is
 * refused, unused, and the sentinels are asked again. */
static void role_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    setup_ctx *ctx = data;
    rp_client *client = ctx->client;
    bool master = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                  reply->element[0]->type == REDIS_REPLY_STRING && !strcmp(reply->element[0]->str, "master");
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        setup_reply(conn, reply, status, data);
        return;
    }
    if (reply && !master) {
        if (!ctx->status)
            ctx->status = RP_ENOTMASTER;
        if (!client->closing)
            rp__sentinel_suspect(client->sentinel);
    }
    setup_step_done(conn, ctx, status);
}

/* COMMAND's answer is a fact about the server, not part of the set-up: a
 * refusal (ACL) leaves the built-in table in charge. */
static void command_table_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    setup_ctx *ctx = data;
    if (reply)
        rp__readonly_table_load(&ctx->client->own_readonly, reply);
    else
        ctx->client->readonly_requested = false; /* the next connection asks */
    setup_step_done(conn, ctx, status);
}

static int setup_send(rp_conn *conn, setup_ctx *ctx, rp_conn_reply_cb cb, int argc, const char **argv)
{
    int rc = rp_conn_command(conn, cb, ctx, argc, argv, NULL);
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
        rc = client->username ? setup_send(conn, ctx, setup_reply, 3, auth)
                              : setup_send(conn, ctx, setup_reply, 2, (const char *[]){"AUTH", client->password});
    }
    if (rc == 0 && client->db) {
        snprintf(db, sizeof db, "%d", client->db);
        rc = setup_send(conn, ctx, setup_reply, 2, (const char *[]){"SELECT", db});
    }
    if (rc == 0 && client->readonly_conns)
        rc = setup_send(conn, ctx, setup_reply, 1, (const char *[]){"READONLY"});
    if (rc == 0 && client->client_name)
        rc = setup_send(conn, ctx, setup_reply, 3, (const char *[]){"CLIENT", "SETNAME", client->client_name});
    if (rc == 0 && client->sentinel)
        rc = setup_send(conn, ctx, role_reply, 1, (const char *[]){"ROLE"});
    if (rc == 0 && client->cache) /* its reply needs no wait: a refusal only stops caching on it */
        rc = rp__cache_track_conn(client->cache, conn);
    if (rc == 0 && !client->readonly_requested && client->max_retries > 0) {
        /* The server's table is ours to read, whatever the caller's reply limit. */
        if (client->max_reply_bytes < RP__SERVER_TABLE_MAX)
            rp_conn_set_max_reply_bytes(conn, RP__SERVER_TABLE_MAX);
        rc = setup_send(conn, ctx, command_table_reply, 1, (const char *[]){"COMMAND"});
        client->readonly_requested = rc == 0;
    }
    return rc;
}

static void setup_conn(rp_conn *conn, void *data)
{
    rp_client *client = data;
    int rc = rp__redis_count_buffers(conn, &client->buffer_bytes);
    setup_ctx *ctx = rc == 0 ? rp__calloc(1, sizeof *ctx) : NULL;
    if (ctx) {
        ctx->client = client;
        rp_conn_set_max_reply_bytes(conn, client->max_reply_bytes);
        rc = setup_commands(client, conn, ctx);
    } else if (rc == 0) {
        rc = -ENOMEM;
    }
    if (ctx && ctx->pending) {
        if (rc < 0)
            ctx->status = rc; /* the queued ones still answer */
        return;
    }
    rp__free(ctx);
    rp_conn_setup_done(conn, rc);
}

/* ------------------------------------------------------------- commands */

static client_cmd *cmd_of(rp__link *link) { return RP__CONTAINER_OF(link, client_cmd, link); }

static void on_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    client_cmd *cmd = data;
    rp_client *client = cmd->client;
    if (cmd->server_table)
        rp_conn_set_max_reply_bytes(conn, client->max_reply_bytes);
    bool may_retry;
    int conn_error = rp__cmd_attempt_verdict(cmd, conn, reply, status, &may_retry);
    if (cmd->cache.key && status == 0)
        rp__cache_reply(client->cache, &cmd->cache, conn, reply, cmd->argc, cmd->argv, cmd->argvlen);
    if (conn_error || cmd->binds_conn)
        rp_pool_remove(client->pool, conn, conn_error);
    else
        rp_pool_put(client->pool, conn);
    rp__cmd_retry_or_complete(cmd, reply, status, may_retry);
}

/* Queues the command on conn; a connection that refuses it is removed. */
static int cmd_send(client_cmd *cmd, rp_conn *conn)
{
    int rc = 0;
    if (cmd->server_table && cmd->client->max_reply_bytes < RP__SERVER_TABLE_MAX)
        rp_conn_set_max_reply_bytes(conn, RP__SERVER_TABLE_MAX); /* given back with the reply */
    if (cmd->asking)
        rc = rp_conn_command(conn, rp__drop_reply, NULL, 1, (const char *[]){"ASKING"}, NULL);
    if (rc == 0 && cmd->cache.key) /* a cached read: tracked by the current subscriber */
        rc = rp__cache_track_conn(cmd->client->cache, conn);
    if (rc == 0)
        rc = rp__conn_command_held(conn, on_reply, cmd, cmd->argc, cmd->argv, cmd->argvlen, rp__cmd_args_hold(cmd));
    if (rc < 0) {
        rp_pool_remove(cmd->client->pool, conn, rc);
    } else {
        cmd->state = CMD_SENT;
        cmd->conn = conn;
    }
    return rc;
}

/* A connection refusing the command (found dead first) sent nothing. */
static void on_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    client_cmd *cmd = data;
    if (cmd->state == CMD_DONE) {
        /* Abandoned (cancel, close) after the get's outcome was decided,
         * from the get_end hook: its end is already queued. */
        if (conn)
            rp_pool_put(pool, conn);
        return;
    }
    if (status == 0 && (status = cmd_send(cmd, conn)) == 0)
        return;
    if (conn)
        rp__cmd_retry_or_complete(cmd, NULL, status, status != -ENOMEM);
    else
        rp__cmd_get_failed(cmd, status);
}

static void cmd_get(client_cmd *cmd);

/* A replica's answer is the command's, but a failure, or a refusal of a
 * command it did not run (LOADING, MASTERDOWN...), sends it to the master:
 * a read, safe to send again. Taken back meanwhile (cmd_abandon cancelled
 * it here first), its own end is queued after this call. */
static void replica_reply(rp_client *replica, const redisReply *reply, int status, void *data)
{
    (void)replica;
    client_cmd *cmd = data;
    if (cmd->state == CMD_DONE)
        return;
    cmd->replica = NULL;
    bool refused = status == 0 && reply->type == REDIS_REPLY_ERROR && rp__reply_not_executed(reply);
    if ((status < 0 || refused) && !cmd->client->closing) {
        cmd->on_master = true;
        cmd_get(cmd);
        return;
    }
    rp__cmd_retry_or_complete(cmd, reply, status, false);
}

/* Reads on replicas (sentinel.c picks one, or the master): a read-only
 * command that could be sent again (not blocking, binding no state), and
 * not a cached read (kept only from the master: its tracking tells of the
 * key, and this client's writes, read back, go there). Its arguments are
 * copied: the replica's client may outlive cmd. */
static bool replica_send(client_cmd *cmd)
{
    rp_client *client = cmd->client;
    if (!client->sentinel || cmd->on_master || cmd->cached || cmd->blocking || cmd->binds_conn || cmd->attempt_cb ||
        !rp__command_readonly(client->readonly, cmd->argv[0], cmd->argvlen[0]))
        return false;
    rp_client *replica = rp__sentinel_read_client(client->sentinel);
    int64_t id = replica ? rp_client_command_ex(replica, NULL, replica_reply, cmd, cmd->argc, cmd->argv, cmd->argvlen)
                         : -ENOENT;
    if (id < 0)
        return false;
    cmd->state = CMD_REPLICA;
    cmd->replica = replica;
    cmd->get_id = id;
    return true;
}

/* An idle connection goes to work at once: the command leaves with this
 * iteration's submit instead of waiting one loop iteration for the get. */
static void cmd_get(client_cmd *cmd)
{
    rp_client *client = cmd->client;
    if (replica_send(cmd))
        return;
    if (rp__autopipeline_takes(client, cmd)) {
        rp__autopipeline_send(cmd);
        return;
    }
    rp_conn *conn = rp__pool_try_get(client->pool);
    if (conn && cmd_send(cmd, conn) == 0)
        return;
    /* None idle, or it was found dead before the write (and removed). */
    cmd->state = CMD_GETTING;
    int64_t id = rp_pool_get(client->pool, on_conn, cmd);
    if (id < 0)
        rp__cmd_fail_later(cmd, (int)id);
    else
        cmd->get_id = id;
}

/* Sends every command whose time has come, oldest first. */
static void retry_timer_fired(rp__timer *timer)
{
    rp_client *client = RP__CONTAINER_OF(timer, rp_client, retry_timer);
    uint64_t now = rp__loop_now(client->loop);
    client_cmd *cmd;
    while ((cmd = rp__retry_queue_pop(client, now)))
        cmd_get(cmd);
}

static void cmd_abandon(client_cmd *cmd, int status, bool keep_conn);

/* The caller's deadline for the whole command passed: wherever it is (a
 * get, a backoff, a reply awaited), it ends with -ETIMEDOUT. */
static void deadline_fired(rp__timer *timer)
{
    client_cmd *cmd = RP__CONTAINER_OF(timer, client_cmd, deadline);
    if (cmd->state != CMD_DONE)
        cmd_abandon(cmd, -ETIMEDOUT, true);
}

/* One allocation holds the command and copies of its arguments. */
static client_cmd *cmd_new_copy(int argc, const char *const *argv, const size_t *argvlen)
{
    const char **args;
    size_t *lens;
    client_cmd *cmd = rp__calloc_with_args(sizeof *cmd, argc, argv, argvlen, &args, &lens);
    if (!cmd)
        return NULL;
    cmd->argv = args;
    cmd->argvlen = lens;
    return cmd;
}

/* The arguments stay the caller's (rp__client_attempt). */
static client_cmd *cmd_new_borrowed(const char *const *argv, const size_t *argvlen)
{
    client_cmd *cmd = rp__calloc(1, sizeof *cmd);
    if (!cmd)
        return NULL;
    cmd->argv = (const char **)argv;
    cmd->argvlen = (size_t *)argvlen;
    return cmd;
}

/* Its arguments are its own copies, held by its own hold; or, borrowed,
 * its caller's, in what args_hold holds (NULL: nothing, so each send
 * copies them). Either way a big one goes out from that one copy. */
static client_cmd *cmd_new(rp_client *client, bool borrow, rp__hold *args_hold, int argc, const char *const *argv,
                           const size_t *argvlen)
{
    client_cmd *cmd = borrow ? cmd_new_borrowed(argv, argvlen) : cmd_new_copy(argc, argv, argvlen);
    if (!cmd)
        return NULL;
    rp__cmd_hold_init(cmd);
    cmd->args_hold = borrow ? args_hold : &cmd->hold;
    cmd->argc = argc;
    for (int i = 0; i < argc; i++)
        cmd->bytes += cmd->argvlen[i];
    cmd->client = client;
    cmd->blocking = rp__command_block_ms(argc, cmd->argv, cmd->argvlen) >= 0;
    cmd->binds_conn = rp__command_binds_conn(cmd->argv[0], cmd->argvlen[0]);
    rp__timer_init(&cmd->deadline, deadline_fired, false);
    return cmd;
}

/* With a cache: a cached read found there ends later in this iteration
 * with the cached reply, unsent; one that joins an identical read in
 * flight waits for it (CMD_GETTING, no get: joined_end ends it); a miss
 * sets its key's pending marker; a write invalidates its keys. True when
 * the command is not to be sent now. */
static bool cache_answers(client_cmd *cmd)
{
    rp_client *client = cmd->client;
    if (cmd->cache.hit) { /* cmd_new_hit */
        rp__cmd_fail_later(cmd, 0);
        return true;
    }
    if (!client->cache)
        return false;
    bool readonly = cmd->cached || rp__command_readonly(client->readonly, cmd->argv[0], cmd->argvlen[0]);
    switch (rp__cache_start(client->cache, &cmd->cache, cmd->cached, readonly, cmd->argc, cmd->argv, cmd->argvlen)) {
    case RP__CACHE_HIT:
        rp__cmd_fail_later(cmd, 0);
        return true;
    case RP__CACHE_JOINED:
        return true;
    default:
        return false;
    }
}

/* The read a joined one waited for ended (from its completion): with a
 * reply, which is this one's too; without (it failed, or was taken back:
 * its end is its own), this one is sent by itself. */
static void joined_end(rp__cache_ref *ref, const redisReply *reply, void *data)
{
    rp_client *client = data;
    client_cmd *cmd = RP__CONTAINER_OF(ref, client_cmd, cache);
    if (reply) {
        rp__cmd_retry_or_complete(cmd, reply, 0, false);
    } else if (client->closing) { /* close took every waiter back: not reached */
        rp__cmd_fail_later(cmd, RP_ECLOSED);
    } else {
        rp__cache_resend(client->cache, ref, cmd->argc, cmd->argv, cmd->argvlen);
        cmd_get(cmd);
    }
}

/* Registers a new command and sends it; returns its id. It joins the
 * client's commands before the command_start hook runs, so a hook that
 * closes the client (or cancels it) ends it like any other: not yet asked
 * for a connection (CMD_GETTING, no get), it is then never sent. */
static int64_t cmd_start(client_cmd *cmd)
{
    rp_client *client = cmd->client;
    int64_t id = cmd->id = ++client->last_id;
    cmd->state = CMD_GETTING;
    rp__list_push_front(&client->cmds, &cmd->link);
    if (client->hooks.command_start)
        client->hooks.command_start(client->hooks.data, cmd->argc, cmd->argv, cmd->argvlen);
    if (client->hooks.command_end)
        cmd->started_ns = rp__loop_now_fresh(client->loop);
    if (cmd->state != CMD_DONE && !cache_answers(cmd))
        cmd_get(cmd);
    return id;
}

/* A hit made cheap: its arguments are the entry's (pinned until its end),
 * and a cacheable read is neither blocking nor a state command. A new
 * record is zeroed once; a spare one is as its last hit left it: a hit
 * writes only what is set here again (cmd_start: id, state, link;
 * rp__cmd_fail_later: status, finish; its end zeroes its cache ref), and
 * may_retry (a close from the command_start hook). */
static client_cmd *cmd_new_hit(rp_client *client, rp__cache_entry *hit)
{
    rp__link *spare = rp__list_pop(&client->spare_hits, false);
    client_cmd *cmd = spare ? cmd_of(spare) : rp__calloc(1, sizeof *cmd);
    if (!cmd) {
        rp__cache_hit_abandon(client->cache, hit);
        return NULL;
    }
    cmd->client = client;
    rp__cmd_hold_init(cmd);
    cmd->hit_record = true;
    cmd->cached = true;
    cmd->may_retry = false;
    cmd->started_ns = 0;
    cmd->cache.hit = hit; /* the rest of the ref is zero */
    rp__cache_hit_args(&cmd->cache, &cmd->argc, (const char *const **)&cmd->argv, (const size_t **)&cmd->argvlen);
    rp__timer_init(&cmd->deadline, deadline_fired, false);
    return cmd;
}

int64_t rp__client_hit(rp_client *client, rp__cache_entry *hit, rp_reply_cb cb, void *data)
{
    client_cmd *cmd = cmd_new_hit(client, hit);
    if (!cmd)
        return -ENOMEM;
    cmd->cb = cb;
    cmd->data = data;
    return cmd_start(cmd);
}

/* RP_CMD_CACHE: the command may be cached (-EINVAL if not), and is. */
static int cmd_set_cached(client_cmd *cmd, uint32_t ttl_ms)
{
    int64_t ttl = rp__cache_accepts(cmd->client->cache, ttl_ms, cmd->argc, cmd->argv, cmd->argvlen);
    if (ttl < 0)
        return (int)ttl;
    cmd->cached = true;
    cmd->cache.ttl_ms = (uint32_t)ttl;
    return 0;
}

int64_t rp_client_command_ex(rp_client *client, const rp_command_options *opts, rp_reply_cb cb, void *data,
                             int argc, const char *const *argv, const size_t *argvlen)
{
    if (!client || !cb || argc <= 0 || !argv)
        return -EINVAL;
    if (opts && (opts->flags & ~(unsigned)(RP_CMD_IDEMPOTENT | RP_CMD_CACHE)))
        return -EINVAL;
    if (client->closing)
        return RP_ECLOSED;
    rp__cache_entry *hit;
    if (opts && (opts->flags & RP_CMD_CACHE) && argvlen && (hit = rp__cache_hit(client->cache, argc, argv, argvlen)))
        return rp__client_hit(client, hit, cb, data);
    client_cmd *cmd = cmd_new(client, false, NULL, argc, argv, argvlen);
    if (!cmd)
        return -ENOMEM;
    int rc = opts && (opts->flags & RP_CMD_CACHE) ? cmd_set_cached(cmd, opts->cache_ttl_ms) : 0;
    if (rc < 0) {
        rp__free(cmd);
        return rc;
    }
    cmd->cb = cb;
    cmd->data = data;
    cmd->idempotent = opts && (opts->flags & RP_CMD_IDEMPOTENT);
    if (opts && opts->timeout_ms)
        rp__timer_arm(client->loop, &cmd->deadline, rp__loop_now_fresh(client->loop) + opts->timeout_ms * RP__NS_PER_MS);
    return cmd_start(cmd);
}

int64_t rp__client_attempt(rp_client *client, unsigned flags, unsigned how, uint32_t cache_ttl_ms, rp__attempt_cb cb,
                           void *data, int argc, const char *const *argv, const size_t *argvlen, rp__hold *hold)
{
    if (client->closing)
        return RP_ECLOSED;
    client_cmd *cmd = cmd_new(client, true, hold, argc, argv, argvlen);
    if (!cmd)
        return -ENOMEM;
    int rc = (flags & RP_CMD_CACHE) && !(how & RP__ATTEMPT_ASKING) ? cmd_set_cached(cmd, cache_ttl_ms) : 0;
    if (rc < 0) {
        rp__free(cmd);
        return rc;
    }
    cmd->attempt_cb = cb;
    cmd->data = data;
    cmd->idempotent = flags & RP_CMD_IDEMPOTENT;
    cmd->asking = how & RP__ATTEMPT_ASKING;
    cmd->server_table = how & RP__ATTEMPT_SERVER_TABLE;
    return cmd_start(cmd);
}

int rp_client_command(rp_client *client, rp_reply_cb cb, void *data, int argc, const char *const *argv,
                      const size_t *argvlen)
{
    int64_t id = rp_client_command_ex(client, NULL, cb, data, argc, argv, argvlen);
    return id < 0 ? (int)id : 0;
}

/* ------------------------------------------------------------ lifecycle */

static void free_client(rp_client *client)
{
    rp__free(client->username);
    if (client->password)
        explicit_bzero(client->password, strlen(client->password)); /* no secret left in freed memory */
    rp__free(client->password);
    rp__free(client->client_name);
    rp__readonly_table_free(&client->own_readonly);
    rp__free(client->lanes);
    rp__cache_free(client->cache);
    rp__link *spare;
    while ((spare = rp__list_pop(&client->spare_hits, false)))
        rp__free(cmd_of(spare));
    rp__free(client);
}

static int copy_string(char **out, const char *in)
{
    if (in && !(*out = rp__strdup(in)))
        return -ENOMEM;
    return 0;
}

/* With a master name: sentinels to ask, and no address of the caller's. */
static bool sentinel_options_valid(const rp_client_options *opts)
{
    if (!opts->master_name)
        return !opts->sentinel_addrs && !opts->sentinel_count && !opts->sentinel_username &&
               !opts->sentinel_password;
    if (opts->pool.addr || !opts->master_name[0] || !opts->sentinel_addrs || opts->sentinel_count <= 0 ||
        (opts->sentinel_username && !opts->sentinel_password))
        return false;
    for (int i = 0; i < opts->sentinel_count; i++)
        if (!opts->sentinel_addrs[i] || strlen(opts->sentinel_addrs[i]) >= 80)
            return false;
    return true;
}

/* The backoffs for the old master end now; the cache's subscriber moves
 * to the new one (ids and invalidations are a server's own). */
static void master_switched(void *data)
{
    rp_client *client = data;
    rp__retry_all_now(client);
    rp__cache_reset(client->cache);
}

int rp_client_new(rp_client **out, rp_loop *loop, const rp_client_options *opts)
{
    if (!out || !loop || !opts || opts->db < 0 || (opts->username && !opts->password) ||
        !sentinel_options_valid(opts))
        return -EINVAL;
    rp_client *client = rp__calloc(1, sizeof *client);
    if (!client)
        return -ENOMEM;
    client->loop = loop;
    client->readonly = &client->own_readonly;
    rp__timer_init(&client->retry_timer, retry_timer_fired, true);
    client->db = opts->db;
    client->max_retries = opts->max_retries > 0 ? opts->max_retries : 0;
    client->retry_unsafe = opts->retry_unsafe;
    client->min_backoff_ms = opts->min_retry_backoff_ms ? opts->min_retry_backoff_ms : DEFAULT_MIN_RETRY_BACKOFF_MS;
    client->max_backoff_ms = opts->max_retry_backoff_ms ? opts->max_retry_backoff_ms : DEFAULT_MAX_RETRY_BACKOFF_MS;
    client->max_reply_bytes = opts->max_reply_bytes ? opts->max_reply_bytes : 512u * 1024 * 1024;
    int rc = rp__autopipeline_init(client, opts);
    if (rc == 0)
        rc = copy_string(&client->username, opts->username);
    if (rc == 0)
        rc = copy_string(&client->password, opts->password);
    if (rc == 0)
        rc = copy_string(&client->client_name, opts->client_name);
    if (rc == 0)
        rc = rp__cache_new(&client->cache, loop, NULL, opts);
    rp_pool_options pool_opts = opts->pool;
    pool_opts.on_connect = setup_conn;
    pool_opts.on_connect_data = client;
    if (rc == 0)
        rc = opts->master_name ? rp__pool_new_untargeted(&client->pool, loop, &pool_opts)
                               : rp_pool_new(&client->pool, loop, &pool_opts);
    if (rc < 0) {
        free_client(client);
        return rc;
    }
    rp__cache_set_pool(client->cache, client->pool);
    rp__cache_set_joined_end(client->cache, joined_end, client);
    if (opts->master_name && (rc = rp__sentinel_new(&client->sentinel, loop, opts, client->pool)) < 0) {
        rp_pool_close(client->pool, NULL, NULL); /* nothing dialled yet: frees later, with nothing to wait for */
        free_client(client);
        return rc;
    }
    if (client->sentinel)
        rp__sentinel_on_switch(client->sentinel, master_switched, client);
    rp__cache_open(client->cache);
    *out = client;
    return 0;
}

/* The pool and the sentinels close side by side; the last one ends it. */
static void close_part_done(rp_client *client)
{
    if (--client->closes_pending)
        return;
    if (client->close_cb)
        client->close_cb(client, client->close_data);
    free_client(client);
}

static void pool_closed(rp_pool *pool, void *data)
{
    (void)pool;
    close_part_done(data);
}

static void sentinel_closed(void *data) { close_part_done(data); }

/* ------------------------------------------------------ cancel, close */

/* A connection held for nothing but the reply of a cancelled command:
 * out of the pool until that reply comes (or the connection fails), on
 * the client's list so that an abort closes it. */
typedef struct held_conn {
    rp__link link;
    rp_client *client;
    rp_conn *conn;
} held_conn;

/* The reply of a cancelled command: skipped, and the connection, still
 * good, goes back to the pool. */
static void skip_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)reply;
    held_conn *held = data;
    rp_client *client = held->client;
    rp__list_unlink(&client->held, &held->link);
    rp__free(held);
    rp_conn_set_max_reply_bytes(conn, client->max_reply_bytes); /* a server table's may have been raised */
    if (status == 0)
        rp_pool_put(client->pool, conn);
    else
        rp_pool_remove(client->pool, conn, status);
}

/* Abort: held connections close now, their replies no longer awaited. */
static void close_held_conns(rp_client *client)
{
    rp__link *link;
    while ((link = rp__list_pop(&client->held, false))) {
        held_conn *held = RP__CONTAINER_OF(link, held_conn, link);
        rp__redis_forget(held->conn, held, rp__drop_reply, NULL);
        rp_pool_remove(client->pool, held->conn, RP_ECLOSED);
        rp__free(held);
    }
}

/* A sent command taken back: its reply is skipped on a connection held
 * for it (keep_conn), or the connection closes. One still unsent in the
 * connection's buffer is dropped from it, and the connection goes back. */
static void cmd_abandon_sent(client_cmd *cmd, int status, bool keep_conn)
{
    rp_client *client = cmd->client;
    held_conn *held = keep_conn ? rp__malloc(sizeof *held) : NULL;
    keep_conn = held != NULL; /* without a record to hold it by, it closes */
    int forgotten = rp__redis_forget(cmd->conn, cmd, held ? skip_reply : rp__drop_reply, held);
    if (forgotten == 0 && held) {
        *held = (held_conn){.client = client, .conn = cmd->conn};
        rp__list_push_back(&client->held, &held->link);
        return;
    }
    rp__free(held);
    if (forgotten == 1 && keep_conn)
        rp_pool_put(client->pool, cmd->conn);
    else if (!keep_conn)
        rp_pool_remove(client->pool, cmd->conn, status);
}

/* Ends cmd now with status (its callback runs later in this iteration):
 * a get under way is cancelled, a backoff stopped, a command not yet sent
 * taken back, a sent one's reply skipped (keep_conn) or its connection
 * closed. A blocking command's connection is closed either way: its reply
 * may be a long time coming, and the pool needs the connection now; so is
 * one that would keep a state command's state. */
static void cmd_abandon(client_cmd *cmd, int status, bool keep_conn)
{
    rp_client *client = cmd->client;
    keep_conn = keep_conn && !cmd->blocking && !cmd->binds_conn && !cmd->asking;
    if (cmd->lane || cmd->state == CMD_WAITING) {
        rp__autopipeline_abandon(cmd, keep_conn);
    } else if (cmd->state == CMD_GETTING) {
        if (cmd->get_id)
            rp_pool_cancel(client->pool, cmd->get_id);
        rp__cache_leave(&cmd->cache); /* a joined read: its leader goes on without it */
        cmd->state = CMD_DONE; /* on_conn's -ECANCELED must not end it again */
    } else if (cmd->state == CMD_BACKOFF) {
        rp__retry_queue_remove(cmd);
    } else if (cmd->state == CMD_SENT) {
        cmd_abandon_sent(cmd, status, keep_conn);
    } else if (cmd->state == CMD_REPLICA) {
        rp_client_cancel(cmd->replica, cmd->get_id); /* its end is queued before cmd's */
    }
    rp__cmd_fail_later(cmd, status);
}

int rp_client_cancel(rp_client *client, int64_t id)
{
    if (!client || id <= 0)
        return -EINVAL;
    for (rp__link *link = client->cmds.head; link; link = link->next) {
        client_cmd *cmd = cmd_of(link);
        if (cmd->id != id)
            continue;
        if (cmd->state == CMD_DONE)
            return -ENOENT;
        cmd_abandon(cmd, -ECANCELED, true);
        return 0;
    }
    return -ENOENT;
}

/* Graceful: commands already sent finish with their replies (bounded by
 * the read timeout), and connections held for the replies of cancelled
 * commands wait for them; the rest get RP_ECLOSED, later, from the loop.
 * Abortive: every command gets RP_ECLOSED now and every connection the
 * client holds closes: a command's, a lane's, or one held for a skipped
 * reply. Then the pool closes. */
static int client_close(rp_client *client, rp_client_close_cb cb, void *data, bool abort)
{
    if (!client)
        return -EINVAL;
    if (client->closing)
        return RP_ECLOSED;
    client->closing = true;
    client->close_cb = cb;
    client->close_data = data;
    client->closes_pending = 1;
    if (client->sentinel) { /* the pool is not retargeted any more */
        client->closes_pending++;
        rp__sentinel_close(client->sentinel, sentinel_closed, client);
    }
    for (rp__link *link = client->cmds.head; link; link = link->next) {
        client_cmd *cmd = cmd_of(link);
        bool unsent = cmd->state == CMD_BACKOFF || cmd->state == CMD_GETTING || cmd->state == CMD_WAITING;
        cmd->may_retry = unsent; /* another client may send it */
        if (unsent || (abort && (cmd->state == CMD_SENT || cmd->state == CMD_REPLICA)))
            cmd_abandon(cmd, RP_ECLOSED, false);
    }
    if (abort)
        close_held_conns(client);
    rp__cache_close(client->cache);
    rp__autopipeline_close(client, abort);
    /* The pool outlives this call: connections still out (a lane's, or
     * one owed a cancelled command's reply) are put back into it later,
     * and its close waits for them. */
    client->pool_closed = pool_closed;
    rp__client_close_if_drained(client);
    return 0;
}

int rp_client_close(rp_client *client, rp_client_close_cb cb, void *data) { return client_close(client, cb, data, false); }
int rp_client_abort(rp_client *client, rp_client_close_cb cb, void *data) { return client_close(client, cb, data, true); }
