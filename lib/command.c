/* The command core: how a command of rp_client ends, whichever path sent
 * it. Its state machine (client_cmd.state):
 *   GETTING -> SENT (client.c: a connection of its own), or
 *   GETTING -> WAITING -> SENT (autopipeline.c: a shared one);
 *   SENT, and a failed get or wait -> BACKOFF -> sent again, or -> DONE;
 *   any state -> DONE when the command is taken back (cancel, deadline,
 *   close: client.c, through rp__cmd_fail_later);
 *   GETTING -> DONE for a cached read answered from memory (client.c:
 *   rp__cmd_fail_later with 0, and the cached reply).
 * Every attempt ends here with one verdict: what its reply or failure says
 * of the connection, and whether sending the command again is safe (it
 * provably did not run, or may run twice). A command sent again waits out
 * go-redis's backoff in the client's retry queue, in order behind the
 * ones that failed before it; the retry timer (client.c) sends it. With a
 * Sentinel-managed master, a failure for want of the master waits there
 * for the new one within the pool timeout, not counted as a retry. DONE is
 * final: the callback runs exactly once, now or from the loop, and a
 * closing client's last command closes its pool. Nothing here gets a
 * connection, sends, or takes a command back: the paths above do, and
 * call down into this file; this file calls neither. */
#include "command.h"
#include "retry.h"
#include "sentinel.h"

#include <errno.h>
#include <string.h>

/* ----------------------------------------------------------- the rule */

/* EOF, reset, timeout, a protocol error: the connection, not the command,
 * failed, and the command may or may not have run. */
static bool conn_proved_bad(int status)
{
    return status == RP_EEOF || status == -ECONNRESET || status == -EPIPE || status == -ETIMEDOUT ||
           status == -ECONNABORTED || status == -EPROTO;
}

/* A blocking command is never sent again: it may have taken its item. */
static bool safe_to_repeat(const client_cmd *cmd)
{
    const rp_client *client = cmd->client;
    if (cmd->blocking)
        return false;
    return cmd->idempotent || client->retry_unsafe ||
           rp__command_readonly(client->readonly, cmd->argv[0], cmd->argvlen[0]);
}

/* A refusal the node client sends again itself: not those an rp_cluster
 * attempt leaves to the cluster (max_redirects bounds them all). */
static bool retry_refusal(const client_cmd *cmd, const redisReply *reply)
{
    return rp__reply_not_executed(reply) && !(cmd->attempt_cb && rp__reply_cluster_refusal(reply));
}

int rp__cmd_attempt_verdict(const client_cmd *cmd, rp_conn *conn, const redisReply *reply, int status,
                            bool *may_retry)
{
    if (status < 0) {
        *may_retry = rp__redis_failed_unsent(conn) || (conn_proved_bad(status) && safe_to_repeat(cmd));
        return status;
    }
    *may_retry = reply->type == REDIS_REPLY_ERROR && retry_refusal(cmd, reply);
    return rp__reply_conn_unusable(reply) ? RP_EBADCONN : 0;
}

/* A get that failed sent nothing: every such failure is worth another try
 * but those that would fail the same way again. */
static bool get_failure_retryable(int status)
{
    return status != RP_ECLOSED && status != -ECANCELED && status != RP_ESETUP && status != -ENOMEM &&
           status != RP_EPOOLEXHAUSTED;
}

/* ------------------------------------------------------ the retry queue */

/* Commands in backoff wait in one queue, in the order they failed, and
 * none is sent again before one that failed earlier: a command's retry
 * time is its own backoff, or the previous one's time if that is later.
 * So commands that failed together (a lane's unsent ones, a pipeline's)
 * are sent again in their order, as go-redis retries a pipeline as one
 * batch. The times never decrease along the queue: one timer serves it. */
static client_cmd *retrying_cmd(rp__link *link) { return RP__CONTAINER_OF(link, client_cmd, wait_link); }

static void retry_queue_arm(rp_client *client)
{
    if (client->retrying.head)
        rp__timer_arm(client->loop, &client->retry_timer, retrying_cmd(client->retrying.head)->retry_at_ns);
    else
        rp__timer_disarm(client->loop, &client->retry_timer);
}

static void retry_queue_push(client_cmd *cmd, uint64_t wait_ns)
{
    rp_client *client = cmd->client;
    uint64_t at = rp__loop_now(client->loop) + wait_ns;
    rp__link *tail = client->retrying.tail;
    if (tail && retrying_cmd(tail)->retry_at_ns > at)
        at = retrying_cmd(tail)->retry_at_ns;
    cmd->retry_at_ns = at;
    rp__list_push_back(&client->retrying, &cmd->wait_link);
    if (client->retrying.len == 1)
        retry_queue_arm(client);
}

client_cmd *rp__retry_queue_pop(rp_client *client, uint64_t now)
{
    rp__link *head = client->retrying.head;
    if (!head || retrying_cmd(head)->retry_at_ns > now) {
        retry_queue_arm(client);
        return NULL;
    }
    rp__list_unlink(&client->retrying, head);
    return retrying_cmd(head);
}

void rp__retry_queue_remove(client_cmd *cmd)
{
    rp__list_unlink(&cmd->client->retrying, &cmd->wait_link);
    retry_queue_arm(cmd->client);
}

/* What waited out a backoff for the old master goes now, still in order. */
void rp__retry_all_now(void *data)
{
    rp_client *client = data;
    uint64_t now = rp__loop_now(client->loop);
    for (rp__link *link = client->retrying.head; link; link = link->next)
        retrying_cmd(link)->retry_at_ns = now;
    retry_queue_arm(client);
}

/* ----------------------------------------------------------- the end */

void rp__client_close_if_drained(rp_client *client)
{
    if (client->closing && !client->cmds.len && !client->pool_closing) {
        client->pool_closing = true;
        rp_pool_close(client->pool, client->pool_closed, client);
    }
}

static void cmd_complete(client_cmd *cmd, const redisReply *reply, int status)
{
    rp_client *client = cmd->client;
    cmd->state = CMD_DONE;
    rp__timer_disarm(client->loop, &cmd->deadline);
    rp__list_unlink(&client->cmds, &cmd->link);
    redisReply refusal;
    if (status == RP_ESETUP) {
        /* The server's own words, as the reply to this command. */
        refusal = (redisReply){.type = REDIS_REPLY_ERROR, .str = client->setup_error,
                               .len = strlen(client->setup_error)};
        reply = &refusal;
        status = 0;
    }
    if (client->hooks.command_end && cmd->started_ns) /* only what was timed */
        client->hooks.command_end(client->hooks.data, cmd->argc, cmd->argv, cmd->argvlen,
                                  rp__loop_now_fresh(client->loop) - cmd->started_ns, status, cmd->retries);
    if (client->cache) /* before the callback: an attempt's arguments die in it */
        rp__cache_ending(client->cache, &cmd->cache, reply, status, cmd->argc, cmd->argv, cmd->argvlen);
    if (cmd->attempt_cb)
        cmd->attempt_cb(reply, status, cmd->may_retry, cmd->data);
    else
        cmd->cb(client, reply, status, cmd->data);
    if (client->cache)
        rp__cache_end(client->cache, &cmd->cache);
    if (cmd->hit_record && client->spare_hits.len < 64) /* never sent: held by nothing else */
        rp__list_push_front(&client->spare_hits, &cmd->link);
    else
        rp__hold_put(&cmd->hold); /* a send in flight may still read its arguments */
    rp__client_close_if_drained(client);
}

static void cmd_finish_run(rp__deferred *item)
{
    client_cmd *cmd = RP__CONTAINER_OF(item, client_cmd, finish);
    cmd_complete(cmd, rp__cache_hit_reply(&cmd->cache), cmd->status); /* a hit: its cached reply */
}

void rp__cmd_fail_later(client_cmd *cmd, int status)
{
    cmd->state = CMD_DONE; /* close must not queue it a second time */
    cmd->status = status;
    rp__defer(cmd->client->loop, &cmd->finish, cmd_finish_run);
}

/* A failure that may mean the master changed: its node refused a command
 * unrun (READONLY: demoted; NOREPLICAS: its replica was promoted away;
 * MASTERDOWN, LOADING, ...), or could not be reached or set up. Not the
 * sentinels' own failures: their rounds retry by themselves. */
static bool sign_of_switch(const redisReply *reply, int status)
{
    if (reply)
        return rp__reply_not_executed(reply);
    return status < 0 && status != -ECANCELED && status != RP_ECLOSED && status != RP_ESENTINEL &&
           status != RP_ENOMASTER;
}

/* A command that failed for want of the master (a sign of a switch) and
 * may be sent again waits for the new one as a get waits for a
 * connection: within the pool timeout from its first such failure,
 * without spending max_retries (0 still turns every retry off), and ends
 * with its failure once that has passed. A pool timeout is no such
 * failure: that wait is already spent. */
static bool lacks_master(const client_cmd *cmd, const redisReply *reply, int status, bool may_retry)
{
    const rp_client *client = cmd->client;
    return client->sentinel && may_retry && client->max_retries && !client->closing && status != RP_EPOOLTIMEOUT &&
           sign_of_switch(reply, status);
}

static uint64_t master_wait_end(const client_cmd *cmd)
{
    return cmd->master_lost_ns + (uint64_t)cmd->client->pool->pool_timeout_ms * RP__NS_PER_MS;
}

void rp__cmd_retry_or_complete(client_cmd *cmd, const redisReply *reply, int status, bool may_retry)
{
    rp_client *client = cmd->client;
    if (client->sentinel && !client->closing && sign_of_switch(reply, status))
        rp__sentinel_suspect(client->sentinel);
    uint64_t now = rp__loop_now(client->loop);
    bool lacking = lacks_master(cmd, reply, status, may_retry);
    if (lacking && !cmd->master_lost_ns)
        cmd->master_lost_ns = now;
    bool waiting = lacking && now < master_wait_end(cmd);
    if (!waiting && (lacking || !may_retry || cmd->retries >= client->max_retries || client->closing)) {
        cmd->may_retry = may_retry && status != -ECANCELED;
        cmd_complete(cmd, reply, status == -ECANCELED && client->closing ? RP_ECLOSED : status);
        return;
    }
    uint64_t wait = rp__retry_backoff_ns(client->loop, cmd->retries + cmd->master_waits + 1, client->min_backoff_ms,
                                         client->max_backoff_ms);
    if (waiting) { /* the backoff grows over both; the last one ends with the pool timeout */
        cmd->master_waits++;
        wait = RP__MIN(wait, master_wait_end(cmd) - now);
    } else {
        cmd->retries++;
    }
    cmd->state = CMD_BACKOFF;
    retry_queue_push(cmd, wait); /* a switch ends it at once (rp__retry_all_now) */
}

void rp__cmd_get_failed(client_cmd *cmd, int status)
{
    rp__cmd_retry_or_complete(cmd, NULL, status, get_failure_retryable(status));
}

static void cmd_release(rp__hold *hold) { rp__free(RP__CONTAINER_OF(hold, client_cmd, hold)); }

void rp__cmd_hold_init(client_cmd *cmd) { cmd->hold = (rp__hold){.refs = 1, .release = cmd_release}; }

void rp__drop_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    (void)reply;
    (void)status;
    (void)data;
}
