/* Auto-pipelining: commands from every caller share up to nlanes pooled
 * connections (lanes). A command goes to the open lane that owes the
 * fewest replies, while that is under lane_max_owed, passing over a lane
 * in the middle of a big reply (a bulk string of 32 KiB or more still
 * coming in) if any other can take it; when every open lane is full (or
 * busy so) another is taken from the pool; when all are taken, a busy
 * lane with room still takes it; when all are full, commands wait, in
 * order, for room (bounded by the pool's timeout), served by whatever
 * makes room: a reply, a cancel, a new lane, a failed lane's free slot.
 * Commands queued on a lane during one loop iteration leave in one send
 * (redis.c), and replies come back in order. A lane that owes nothing goes
 * back to the pool, so with one caller the path is the exclusive one's.
 * Failures are the exclusive path's too: a lane that fails fails each
 * command it owes, and each is retried or completed by the same rule
 * (command.c). client.c calls in here; this file calls only down, into
 * command.c and the layers below it.
 * A lane's state machine: empty (no connection) -> getting (get_id) ->
 * open (owed counts the replies still to come; failed once error is set:
 * it takes nothing more) -> empty again when it owes nothing: its
 * connection goes back to the pool, or out of it if the lane failed. */
#include "autopipeline.h"

#include <errno.h>

#define DEFAULT_MAX_OWED 1024u
#define DEFAULT_MAX_BYTES (1u << 20)

/* A connection commands share: taken from the pool while it owes
 * replies, put back when it owes none. */
struct rp__lane {
    rp_client *client;
    rp_conn *conn;   /* NULL while empty or getting */
    int64_t get_id;  /* the get under way for it, 0 if none */
    int error;       /* it failed: takes nothing more, removed when it owes none */
    unsigned owed;   /* commands sent on it whose reply has not come */
};

int rp__autopipeline_init(rp_client *client, const rp_client_options *opts)
{
    if (opts->autopipeline_conns < 0)
        return -EINVAL;
    client->nlanes = opts->autopipeline_conns;
    client->lane_max_owed = opts->autopipeline_max_owed ? opts->autopipeline_max_owed : DEFAULT_MAX_OWED;
    client->lane_max_bytes = opts->autopipeline_max_bytes ? opts->autopipeline_max_bytes : DEFAULT_MAX_BYTES;
    if (!client->nlanes)
        return 0;
    client->lanes = rp__calloc((size_t)client->nlanes, sizeof *client->lanes);
    if (!client->lanes)
        return -ENOMEM;
    for (int i = 0; i < client->nlanes; i++)
        client->lanes[i].client = client;
    return 0;
}

bool rp__autopipeline_takes(const rp_client *client, const client_cmd *cmd)
{
    return client->nlanes && cmd->bytes <= client->lane_max_bytes && !cmd->blocking && !cmd->binds_conn &&
           !cmd->asking && !cmd->server_table;
}

/* A lane that owes nothing gives its connection back (out, if it failed). */
static void lane_settle(rp__lane *lane)
{
    if (lane->owed || !lane->conn)
        return;
    rp_conn *conn = lane->conn;
    int error = lane->error;
    lane->conn = NULL;
    lane->error = 0;
    if (error)
        rp_pool_remove(lane->client->pool, conn, error);
    else
        rp_pool_put(lane->client->pool, conn);
}

static void lane_fail(rp__lane *lane, int error)
{
    if (!lane->error)
        lane->error = error;
}

static void lane_reply(rp_conn *conn, const redisReply *reply, int status, void *data);

/* A connection that refuses the command (out of memory) takes no more. */
static void lane_send(rp__lane *lane, client_cmd *cmd)
{
    int rc = 0;
    if (cmd->cache.key) /* a cached read: tracked by the current subscriber (its reply comes first) */
        rc = rp__cache_track_conn(cmd->client->cache, lane->conn);
    if (rc == 0)
        rc = rp__conn_command_held(lane->conn, lane_reply, cmd, cmd->argc, cmd->argv, cmd->argvlen,
                                   rp__cmd_args_hold(cmd));
    if (rc < 0) {
        lane_fail(lane, rc);
        lane_settle(lane);
        rp__cmd_fail_later(cmd, rc);
        return;
    }
    cmd->state = CMD_SENT;
    cmd->lane = lane;
    cmd->conn = lane->conn;
    lane->owed++;
}

static client_cmd *waiting_head(const rp_client *client)
{
    return RP__CONTAINER_OF(client->waiting.head, client_cmd, wait_link);
}

static void waiting_remove(client_cmd *cmd)
{
    rp__list_unlink(&cmd->client->waiting, &cmd->wait_link);
    rp__timer_disarm(cmd->client->loop, &cmd->room_wait);
}

/* Waiting commands, oldest first, while the lane has room. */
static void lane_feed(rp__lane *lane)
{
    rp_client *client = lane->client;
    while (lane->conn && !lane->error && lane->owed < client->lane_max_owed && client->waiting.len) {
        client_cmd *cmd = waiting_head(client);
        waiting_remove(cmd);
        lane_send(lane, cmd);
    }
}

static void lane_update(rp__lane *lane);

static void lane_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    client_cmd *cmd = data;
    rp__lane *lane = cmd->lane;
    lane->owed--;
    cmd->lane = NULL;
    if (cmd->state == CMD_DONE) {
        /* Abandoned while the lane's failure was being delivered (see
         * rp__autopipeline_abandon): its end is already queued. */
        lane_fail(lane, status);
    } else {
        bool may_retry;
        int conn_error = rp__cmd_attempt_verdict(cmd, conn, reply, status, &may_retry);
        if (cmd->cache.key && status == 0)
            rp__cache_reply(cmd->client->cache, &cmd->cache, conn, reply, cmd->argc, cmd->argv, cmd->argvlen);
        if (conn_error)
            lane_fail(lane, conn_error);
        rp__cmd_retry_or_complete(cmd, reply, status, may_retry);
    }
    lane_update(lane);
}

/* The reply of a cancelled command: skipped; the lane owes one less. */
static void lane_skip_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    (void)reply;
    rp__lane *lane = data;
    lane->owed--;
    if (status < 0)
        lane_fail(lane, status);
    lane_update(lane);
}

/* Fails the commands waiting now, oldest first. Each stays in the queue
 * until its turn, so a callback that cancels one still waiting (or closes
 * the client) finds it there; those the callbacks queue wait on. */
static void fail_waiting(rp_client *client, int status)
{
    uint64_t queued_before = client->waits_queued;
    while (client->waiting.len) {
        client_cmd *cmd = waiting_head(client);
        if (cmd->wait_number >= queued_before)
            break;
        waiting_remove(cmd);
        rp__cmd_get_failed(cmd, status);
    }
}

static bool any_lane_open(const rp_client *client)
{
    for (int i = 0; i < client->nlanes; i++)
        if (client->lanes[i].conn)
            return true;
    return false;
}

/* A failed get leaves the waiting commands to the open lanes, if any, as
 * their replies make room; with none, nothing would, and they fail (those
 * that callbacks queue meanwhile wait for a lane of their own). */
static void lane_got(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    rp__lane *lane = data;
    lane->get_id = 0;
    if (status == 0) {
        lane->conn = conn;
        lane_update(lane);
    } else if (!any_lane_open(lane->client)) {
        fail_waiting(lane->client, status);
    }
}

/* The open lane with room that owes the fewest; with skip_big, none in the
 * middle of a big reply (redis.c): a command sent there would wait for the
 * rest of that reply's bytes. */
static inline rp__lane *lane_with_room(rp_client *client, bool skip_big)
{
    rp__lane *best = NULL;
    for (int i = 0; i < client->nlanes; i++) {
        rp__lane *lane = &client->lanes[i];
        if (lane->conn && !lane->error && lane->owed < client->lane_max_owed && (!best || lane->owed < best->owed) &&
            !(skip_big && client->nlanes > 1 && rp__redis_receiving_big(lane->conn)))
            best = lane;
    }
    return best;
}

static bool any_lane_getting(const rp_client *client)
{
    for (int i = 0; i < client->nlanes; i++)
        if (client->lanes[i].get_id)
            return true;
    return false;
}

/* Another lane: an idle connection at once (returned), or a get under way
 * (NULL). NULL too while a get is already under way, or every lane is in
 * use; < 0 in *status if the get could not start. */
static rp__lane *lane_open(rp_client *client, int *status)
{
    rp__lane *free_lane = NULL;
    for (int i = 0; i < client->nlanes; i++) {
        rp__lane *lane = &client->lanes[i];
        if (lane->get_id)
            return NULL;
        if (!lane->conn && !free_lane)
            free_lane = lane;
    }
    if (!free_lane)
        return NULL;
    if ((free_lane->conn = rp__pool_try_get(client->pool)))
        return free_lane;
    int64_t id = rp_pool_get(client->pool, lane_got, free_lane);
    if (id < 0)
        *status = (int)id;
    free_lane->get_id = id > 0 ? id : 0;
    return NULL;
}

/* Where the next command goes: an open lane with room that is not in the
 * middle of a big reply; else another lane; else, when none can be opened
 * (every lane in use, or its get refused), a lane with room after all: it
 * is no worse than waiting for that reply's end. NULL: wait for room, or
 * for the get under way. Measured with 100 KB GETs, one lane reading
 * replies back to back costs the least CPU per request (docs/performance.md),
 * so lanes are opened for this only up to autopipeline_conns. */
static inline rp__lane *lane_for_next(rp_client *client, int *status)
{
    rp__lane *lane = lane_with_room(client, true);
    if (lane || (lane = lane_open(client, status)) || any_lane_getting(client))
        return lane;
    if ((lane = lane_with_room(client, false)))
        *status = 0;
    return lane;
}

/* Waiting commands, oldest first, to the lanes with room, then to lanes
 * opened for them: every open lane is full before another is taken. A get
 * that cannot start leaves them waiting, bounded by their room_wait. A
 * closing client sends nothing more: its close ends them. */
static void serve_waiting(rp_client *client)
{
    int status = 0;
    rp__lane *lane;
    while (!client->closing && client->waiting.len && (lane = lane_for_next(client, &status)))
        lane_feed(lane);
}

/* The lane owes less, or has just opened: waiting commands take the room;
 * then a lane that owes nothing gives its connection back, and if it had
 * failed, a new lane may take its place for those still waiting. */
static void lane_update(rp__lane *lane)
{
    serve_waiting(lane->client);
    lane_settle(lane);
    serve_waiting(lane->client);
}

static void room_wait_expired(rp__timer *timer)
{
    client_cmd *cmd = RP__CONTAINER_OF(timer, client_cmd, room_wait);
    waiting_remove(cmd); /* its timer has fired: disarmed already */
    rp__cmd_get_failed(cmd, RP_EPOOLTIMEOUT);
}

void rp__autopipeline_send(client_cmd *cmd)
{
    rp_client *client = cmd->client;
    int status = 0;
    rp__lane *lane = NULL;
    if (!client->waiting.len)
        lane = lane_for_next(client, &status);
    if (lane) {
        lane_send(lane, cmd);
    } else if (status < 0) {
        rp__cmd_fail_later(cmd, status);
    } else {
        cmd->state = CMD_WAITING;
        cmd->wait_number = client->waits_queued++;
        rp__list_push_back(&client->waiting, &cmd->wait_link);
        rp__timer_init(&cmd->room_wait, room_wait_expired, true);
        rp__timer_arm(client->loop, &cmd->room_wait,
                      rp__loop_now(client->loop) + client->pool->pool_timeout_ms * RP__NS_PER_MS);
        serve_waiting(client); /* older ones go first, if a lane can take them now */
    }
}

void rp__autopipeline_abandon(client_cmd *cmd, bool keep_conn)
{
    if (cmd->state == CMD_WAITING) {
        waiting_remove(cmd);
        return;
    }
    rp__lane *lane = cmd->lane;
    /* A skipped reply still counts in owed (lane_skip_reply takes it off,
     * and so does lane_abort, which finds it by the lane); a dropped one
     * is taken off below, and must not be found again. */
    int forgotten = keep_conn ? rp__redis_forget(lane->conn, cmd, lane_skip_reply, lane)
                              : rp__redis_forget(lane->conn, cmd, rp__drop_reply, NULL);
    /* Not found: the lane failed and is calling its commands back, and an
     * earlier one's callback abandons cmd. lane_reply, still to come for
     * cmd, accounts for it. */
    if (forgotten < 0)
        return;
    cmd->lane = NULL;
    if (forgotten == 1 || !keep_conn)
        lane->owed--; /* no reply to wait for */
    if (!keep_conn)
        lane_fail(lane, RP_ECLOSED);
    lane_update(lane);
}

/* Abort: the lane's skipped replies (of cancelled commands) are no longer
 * awaited, and it fails, so it closes as soon as it owes nothing; at once,
 * unless it is calling its commands back (its failure is being delivered:
 * they are not found, and each one's callback settles it). */
static void lane_abort(rp__lane *lane)
{
    while (lane->conn && rp__redis_forget(lane->conn, lane, rp__drop_reply, NULL) >= 0)
        lane->owed--;
    lane_fail(lane, RP_ECLOSED);
    lane_settle(lane);
}

void rp__autopipeline_close(rp_client *client, bool abort)
{
    for (int i = 0; i < client->nlanes; i++) {
        rp__lane *lane = &client->lanes[i];
        if (lane->get_id)
            rp_pool_cancel(client->pool, lane->get_id);
        if (abort)
            lane_abort(lane);
    }
}
