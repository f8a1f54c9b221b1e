/* What a command of rp_client is and how it ends (command.c), beneath
 * both ways of sending it: client.c (a connection of its own, and the
 * orchestration) and autopipeline.c (shared connections). Both include
 * this; it includes neither, and calls neither. */
#ifndef RP_COMMAND_H
#define RP_COMMAND_H

#include "cache.h"
#include "commands.h"
#include "pool.h"
#include "redis.h"

/* WAITING: queued for room on a shared connection (autopipeline.c).
 * REPLICA: sent to a replica's client (client.c, reads on replicas). */
typedef enum { CMD_GETTING, CMD_SENT, CMD_BACKOFF, CMD_WAITING, CMD_REPLICA, CMD_DONE } cmd_state;

typedef struct rp__lane rp__lane; /* a shared connection (autopipeline.c) */

/* The end of a command made by rp__client_attempt: may_retry says whether
 * sending it again would be safe by rp_client's rule (it provably did not
 * run, or may run twice), whatever the client's own retries were. */
typedef void (*rp__attempt_cb)(const redisReply *reply, int status, bool may_retry, void *data);

typedef struct client_cmd client_cmd;
struct client_cmd {
    rp_client *client;
    rp__link link;     /* the client's commands */
    rp_reply_cb cb;
    rp__attempt_cb attempt_cb; /* instead of cb, for cluster.c */
    void *data;
    int argc;
    const char **argv; /* copies, kept for retries; an attempt's: its caller's */
    /* The record (and its copies): a reference for the command until it
     * ends. */
    rp__hold hold;
    /* What argv lives in: &hold for its own copies, its caller's for an
     * attempt's (rp__client_attempt), or NULL (nothing to hold: every byte
     * is copied into each send). Each batch sending some of its arguments
     * from argv itself takes a reference (send_batch.c) until that send has
     * completed, whenever the command ends. */
    rp__hold *args_hold;
    size_t *argvlen;
    size_t bytes;      /* of its arguments */
    int retries;
    int master_waits;  /* sends again while waiting for a master: not retries */
    uint64_t master_lost_ns; /* its first failure for want of a master, or 0 */
    bool idempotent; /* the caller says running it twice is harmless */
    bool blocking;   /* BLPOP, XREAD BLOCK, ...: never sent again */
    /* A state command (SELECT, CLIENT SETNAME, MULTI, WATCH, SUBSCRIBE,
     * ...): its connection is closed after its reply, or the next command
     * to take it (a lane: every caller) would inherit that state. */
    bool binds_conn;
    bool asking;     /* ASKING goes first, on the same connection (cluster.c) */
    bool server_table; /* a server's own table: read whatever the reply limit */
    bool may_retry;  /* at the end: sending it again would be safe */
    bool cached;     /* RP_CMD_CACHE */
    bool hit_record; /* a hit's (client.c's cmd_new_hit): kept for the next one */
    rp__cache_ref cache; /* what it holds in the client's cache (cache.c) */
    cmd_state state;
    int64_t id;
    int64_t get_id;
    rp_conn *conn;   /* while CMD_SENT */
    rp_client *replica; /* while CMD_REPLICA: its client; get_id, the command there */
    bool on_master;  /* a replica failed it: the master only, from then on */
    rp__lane *lane;  /* while CMD_SENT on a shared connection */
    rp__link wait_link; /* while CMD_WAITING (the room queue) or CMD_BACKOFF
                           (the client's retry queue) */
    uint64_t retry_at_ns; /* while CMD_BACKOFF: when it is sent again */
    uint64_t wait_number; /* while CMD_WAITING: its place among all ever queued */
    rp__timer room_wait; /* while CMD_WAITING: the pool's timeout */
    rp__timer deadline; /* the caller's timeout_ms for the whole command */
    uint64_t started_ns; /* for the command_end hook: 0 when it was not set at the start */
    rp__deferred finish; /* a result decided outside any callback */
    int status;
};

struct rp_client {
    rp_loop *loop;
    rp_pool *pool;
    char *username, *password, *client_name;
    int db, max_retries;
    bool retry_unsafe;
    uint32_t min_backoff_ms, max_backoff_ms;
    rp__readonly_table own_readonly; /* from COMMAND, on its first connection */
    /* &own_readonly, or a cluster's: one COMMAND read for all its nodes. */
    const rp__readonly_table *readonly;
    bool readonly_requested; /* COMMAND is on its way, or was read */
    rp_hooks hooks;
    int64_t last_id;
    size_t max_reply_bytes;
    char setup_error[256]; /* the server's refusal of the last set-up */
    rp__list cmds;         /* every command not yet completed */
    rp__list retrying;     /* in backoff, in the order they failed */
    rp__timer retry_timer; /* at the oldest one's retry_at_ns; it fires in client.c */
    rp__list held;         /* connections held only for skipped replies (client.c) */
    size_t buffer_bytes;   /* held by its connections' receive buffers */
    bool closing;
    bool pool_closing;     /* every command has completed: rp_pool_close was called */
    rp_close_cb pool_closed; /* that close's callback, chosen by the client's close */
    rp_client_close_cb close_cb;
    void *close_data;
    /* Auto-pipelining; nlanes 0 when off. */
    rp__lane *lanes;
    int nlanes;
    unsigned lane_max_owed;
    size_t lane_max_bytes;
    rp__list waiting;      /* commands waiting for room, oldest first */
    uint64_t waits_queued; /* commands ever queued for room: the next one's number */
    bool readonly_conns;   /* READONLY at set-up: a cluster's replica reads */
    struct rp__sentinel *sentinel; /* follows a Sentinel-managed master (sentinel.c) */
    unsigned closes_pending; /* the pool's close, and the sentinels' */
    rp__cache *cache;      /* client-side caching; NULL when off (cache.c) */
    rp__list spare_hits;   /* records of ended hits, for the next ones */
};

/* An attempt on conn ended: with a reply (status 0) or a failure. Returns
 * what that says of conn (0: good; else the error to remove it with) and
 * in *may_retry whether sending cmd again is safe. Ask before conn is
 * given back: whether the command's bytes left it is conn's to tell. */
int rp__cmd_attempt_verdict(const client_cmd *cmd, rp_conn *conn, const redisReply *reply, int status,
                            bool *may_retry);
/* Sends cmd again after its backoff (the retry queue), when may_retry and
 * retries are left; completes it with (reply, status) otherwise. */
void rp__cmd_retry_or_complete(client_cmd *cmd, const redisReply *reply, int status, bool may_retry);
/* A get for cmd failed (or its wait for room did): nothing was sent. */
void rp__cmd_get_failed(client_cmd *cmd, int status);
/* Completes cmd with status from the loop, later in this iteration. */
void rp__cmd_fail_later(client_cmd *cmd, int status);

/* The retry queue's head if its time (now) has come, taken off it; else
 * NULL, and the retry timer is set for the head. */
client_cmd *rp__retry_queue_pop(rp_client *client, uint64_t now);
/* Takes cmd (CMD_BACKOFF) out of the retry queue. */
void rp__retry_queue_remove(client_cmd *cmd);
/* The master changed (sentinel.c's on_switch): the backoffs end now. */
void rp__retry_all_now(void *client);

/* A closing client whose last command has ended closes its pool (once),
 * with client->pool_closed. */
void rp__client_close_if_drained(rp_client *client);

/* What a send may hold to send cmd's arguments from argv itself; NULL
 * (every byte copied into the send) when nothing holds them, or when none
 * is large enough to go by reference. */
static inline rp__hold *rp__cmd_args_hold(const client_cmd *cmd)
{
    return cmd->bytes < RP__BY_REF_MIN ? NULL : cmd->args_hold;
}
/* Sets up cmd's hold: the command's own reference. */
void rp__cmd_hold_init(client_cmd *cmd);

/* A reply callback that ignores the reply: one nobody waits for any more. */
void rp__drop_reply(rp_conn *conn, const redisReply *reply, int status, void *data);

#endif
