/* The client's command records, shared by client.c (a connection per
 * command, retries, cancel and close) and autopipeline.c (commands that
 * share connections). */
#ifndef RP_CLIENT_H
#define RP_CLIENT_H

#include "commands.h"
#include "pool.h"
#include "redis.h"

/* WAITING: queued for room on a shared connection (autopipeline.c). */
typedef enum { CMD_GETTING, CMD_SENT, CMD_BACKOFF, CMD_WAITING, CMD_DONE } cmd_state;

typedef struct rp__lane rp__lane;

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
    const char **argv; /* copies, kept for retries */
    size_t *argvlen;
    size_t bytes;      /* of its arguments */
    int retries;
    bool idempotent; /* the caller says running it twice is harmless */
    bool blocking;   /* BLPOP, XREAD BLOCK, ...: never sent again */
    /* A state command (SELECT, CLIENT SETNAME, MULTI, WATCH, SUBSCRIBE,
     * ...): its connection is closed after its reply, or the next command
     * to take it (a lane: every caller) would inherit that state. */
    bool binds_conn;
    bool asking;     /* ASKING goes first, on the same connection (cluster.c) */
    bool server_table; /* a server's own table: read whatever the reply limit */
    bool may_retry;  /* at the end: sending it again would be safe */
    cmd_state state;
    int64_t id;
    int64_t get_id;
    rp_conn *conn;   /* while CMD_SENT */
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

/* A connection commands share (autopipeline.c): taken from the pool while
 * it owes replies, put back when it owes none. */
struct rp__lane {
    rp_client *client;
    rp_conn *conn;   /* NULL while empty or getting */
    int64_t get_id;  /* the get under way for it, 0 if none */
    int error;       /* it failed: takes nothing more, removed when it owes none */
    unsigned owed;   /* commands sent on it whose reply has not come */
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
    rp__list retrying;     /* in backoff, in the order they failed (client.c) */
    rp__timer retry_timer; /* at the oldest one's retry_at_ns */
    rp__list held;         /* connections held only for skipped replies (client.c) */
    size_t buffer_bytes;   /* held by its connections' receive buffers */
    bool closing;
    bool pool_closing;     /* every command has completed: rp_pool_close was called */
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
};

/* For cluster.c: rp_client_command_ex with rp__attempt_cb, its arguments
 * borrowed (they must outlive the callback; argvlen is required). how:
 * ASKING sent just before it on its connection; a reply that is one of the
 * server's own tables (COMMAND, the layout), which the library reads
 * whatever the caller's reply limit (up to RP__SERVER_TABLE_MAX). */
#define RP__ATTEMPT_ASKING 1u
#define RP__ATTEMPT_SERVER_TABLE 2u
#define RP__SERVER_TABLE_MAX (64u * 1024 * 1024)
int64_t rp__client_attempt(rp_client *client, unsigned flags, unsigned how, rp__attempt_cb cb, void *data,
                           int argc, const char *const *argv, const size_t *argvlen);

/* client.c, for autopipeline.c. */
void rp__cmd_retry_or_complete(client_cmd *cmd, const redisReply *reply, int status, bool may_retry);
bool rp__cmd_may_retry_after(const client_cmd *cmd, rp_conn *conn, int status);
/* A refusal the node client sends again itself: not those an rp_cluster
 * attempt leaves to the cluster (max_redirects bounds them all). */
bool rp__cmd_retry_refusal(const client_cmd *cmd, const redisReply *reply);
bool rp__get_failure_retryable(int status);
void rp__cmd_fail_later(client_cmd *cmd, int status);
void rp__drop_reply(rp_conn *conn, const redisReply *reply, int status, void *data);

/* autopipeline.c. */
int rp__autopipeline_init(rp_client *client, const rp_client_options *opts);
/* Whether cmd shares a connection: auto-pipelining is on, and cmd may
 * leave its connection to others (not blocking, no connection state, not
 * over the size threshold, no ASKING before it). */
bool rp__autopipeline_takes(const rp_client *client, const client_cmd *cmd);
/* Sends cmd on a shared connection, or queues it for room. */
void rp__autopipeline_send(client_cmd *cmd);
/* Takes cmd (waiting, or sent on a lane) back; keep_conn as cmd_abandon. */
void rp__autopipeline_abandon(client_cmd *cmd, bool keep_conn);
/* The client closes: lanes still getting give their gets up; with abort,
 * every lane's connection closes now, skipped replies or not. */
void rp__autopipeline_close(rp_client *client, bool abort);

#endif
