/* ringpool's Redis layer and client: our RESP writer, hiredis's reader
 * (redisReply), and rp_client. ringpool.h includes this. */
#ifndef RINGPOOL_REDIS_H
#define RINGPOOL_REDIS_H

#include <hiredis/hiredis.h> /* redisReply */
#include <stdarg.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- redis */

/* Commands are written with our RESP encoder and replies parsed with
 * hiredis's reader. Commands sent on one connection before their replies
 * arrive are pipelined; replies are matched in order, and a reply goes only
 * to a command whose bytes were handed to a send before the reply was read
 * (never to one a callback queues meanwhile). Bytes nobody is owed are
 * never taken for a reply: a whole reply, or only its beginning (a type
 * byte, an array's header and some elements), that comes when no command
 * sent is still owed one fails the connection (-EPROTO), even an idle one,
 * before a later command can be sent on it. A reply callback gets
 * the parsed reply and 0, or NULL and a negative code: RP_EEOF, -ECONNRESET,
 * -ETIMEDOUT (read_timeout_ms), -EPROTO (bytes that are not RESP, or that
 * nobody is owed), -EMSGSIZE (a reply over the size limit), -ECANCELED (the
 * connection was removed first: also for every command still owed when a
 * callback removes it, even one whose reply came in the same read). Such an
 * error fails every command still owed on the connection, each once, marks
 * the connection bad (rp_pool_put then removes it) and is returned by later
 * commands on it. Callbacks never run inside rp_conn_command, even when the
 * connection fails as it sends (a command accepted with 0 always ends in a
 * callback from the loop).
 * A Redis error reply (-ERR ...) is a reply of type REDIS_REPLY_ERROR with
 * status 0. The reply lives until the callback returns. read_timeout_ms
 * bounds each command from its send to its reply's last byte; a blocking
 * command's own timeout is added to it (none if it blocks for ever). */
typedef void (*rp_conn_reply_cb)(rp_conn *conn, const redisReply *reply, int status, void *data);
RP_EXTERN int rp_conn_command(rp_conn *conn, rp_conn_reply_cb cb, void *data,
                              int argc, const char *const *argv, const size_t *argvlen);
/* hiredis's printf-style habit, beside every argv call (rp_conn_commandf,
 * rp_client_commandf, rp_cluster_commandf and their va_list forms): the
 * format is split into arguments at spaces; %s takes a C string, %b a
 * pointer and a size_t length (binary-safe), %% is a '%', and printf's
 * integer and floating conversions (%d, %lld, %u, %x, %f, ... with flags,
 * width, precision and the hh, h, l, ll sizes) are printed in place. A
 * conversion may sit inside an argument ("user:%d"), and makes an argument
 * even when it adds nothing ("SET k %s" with "" sends an empty value). The
 * bytes sent are redisFormatCommand's for the same format and values.
 * -EINVAL, and nothing sent, for a NULL or empty format, any other
 * conversion (%c, %p, %z..., %*d), a NULL %s, or a NULL %b with a length.
 * Everything is copied during the call, as with argv. */
RP_EXTERN int rp_conn_commandf(rp_conn *conn, rp_conn_reply_cb cb, void *data, const char *format, ...);
RP_EXTERN int rp_conn_vcommandf(rp_conn *conn, rp_conn_reply_cb cb, void *data, const char *format, va_list ap);
/* Replies larger than this, in bytes as received, fail with -EMSGSIZE
 * (default 512 MiB; SIZE_MAX: no limit; 0: -EINVAL). A command whose
 * encoded size would not fit a size_t is refused with -ENOMEM. */
RP_EXTERN int rp_conn_set_max_reply_bytes(rp_conn *conn, size_t max_bytes);

/* Pub/Sub. rp_conn_subscribe sends SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE (any
 * other command: -EINVAL) and puts the connection in subscriber mode: the
 * replies of its commands (confirmations, a refusal, a pong) and the
 * messages of its subscriptions go to cb with status 0. A message is taken
 * only while the server counts a subscription of its kind (channels,
 * patterns and shard channels are counted apart, as Redis counts them);
 * anything else nobody is owed fails the connection with -EPROTO.
 * Subscriber mode ends when the server counts no subscription of any kind
 * and every command the subscriber sent has all its replies (one per
 * channel named; one per subscription of its kind for an UNSUBSCRIBE that
 * names none; one error for a refused command, e.g. an ACL -NOPERM for all
 * of SUBSCRIBE a b c): cb then gets one last call with (NULL, 0), and the
 * connection takes commands again from inside that call on. If the
 * connection fails first, the last call is (NULL, error). The end is
 * decided after the callback of the reply that leaves nothing: a callback
 * that subscribes again there keeps the connection subscribed, with no last
 * call; until the last call rp_conn_command returns -EBUSY. More channels:
 * call rp_conn_subscribe again with the same cb and data (another cb or
 * data: -EBUSY; so is a subscribe while plain commands are owed). Take a
 * subscriber's connection out of the shared pool, with rp_single_pool_new
 * or rp_pool_new_conn. */
typedef void (*rp_push_cb)(rp_conn *conn, const redisReply *msg, int status, void *data);
RP_EXTERN int rp_conn_subscribe(rp_conn *conn, rp_push_cb cb, void *data,
                                int argc, const char *const *argv, const size_t *argvlen);
/* Sends UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE or PING on a subscribed
 * connection; its replies go to the subscription's callback, even those
 * that come after the server left subscriber mode (a +PONG). Any other
 * command, or a connection not subscribed: -EINVAL. */
RP_EXTERN int rp_conn_unsubscribe(rp_conn *conn, int argc, const char *const *argv, const size_t *argvlen);

/* ---------------------------------------------------------------- client */

/* An async Redis client over a pool. A command gets a connection, sends,
 * waits for its reply and puts the connection back (removes it when it
 * proved bad). It is sent again, up to max_retries times after go-redis's
 * backoff, only when that is safe:
 * - it provably did not run: the get or dial failed, the connection was
 *   found dead before the write, the write failed before any of its bytes
 *   reached the kernel, or the server refused it unrun (LOADING, READONLY,
 *   MASTERDOWN, TRYAGAIN, CLUSTERDOWN, NOREPLICAS, max clients reached);
 * - or running it twice is harmless: read-only by the server's COMMAND
 *   flags (read once per client; a built-in table until then), or marked
 *   RP_CMD_IDEMPOTENT; never a blocking command (BLPOP, XREAD BLOCK, ...).
 * Otherwise a failure after its bytes may have reached the server ends the
 * command with its error, the outcome unknown: RP_EEOF, -ECONNRESET,
 * -EPIPE, -ETIMEDOUT, -EPROTO, -EMSGSIZE, -ECANCELED. Retries keep their
 * order: no command is sent again before one that failed earlier, so
 * commands that failed together (those a lane had not yet sent) go out
 * again in the order they were issued. Commands in flight at the same time
 * are ordered only on one connection: with several connections (or lanes)
 * in use, wait for a reply before a command that must run after it. retry_unsafe restores
 * go-redis's rule (retry whatever failed on a bad connection). New
 * connections are set up before anyone gets them: AUTH, SELECT and CLIENT
 * SETNAME, pipelined in one round trip; a refusal reaches the command as
 * the server's error reply (WRONGPASS ...), never as a timeout.
 * A command that uses or changes its connection's state (AUTH, HELLO,
 * SELECT, CLIENT, RESET, QUIT, MONITOR, READONLY, READWRITE, ASKING, WATCH,
 * UNWATCH, MULTI, EXEC, DISCARD, the (P|S)(UN)SUBSCRIBE family) runs on a
 * connection that is closed after its reply, with or without
 * auto-pipelining, so its state never reaches another command: MULTI then
 * EXEC through the client make no transaction (take a connection of your
 * own, e.g. from a sticky pool, and use rp_conn_command). */
typedef struct rp_client rp_client;
typedef struct rp_client_options {
    rp_pool_options pool;
    const char *username;     /* AUTH on each new connection when password is set */
    const char *password;     /* copied; every copy (and the AUTH bytes
                                 written) is zeroed before it is freed */
    int         db;           /* SELECT when not 0 */
    const char *client_name;  /* CLIENT SETNAME when set */
    int         max_retries;  /* default 3; retried only when the connection proved bad; 0 or less: never */
    size_t      max_reply_bytes; /* default (0) 512 MiB: larger replies fail with -EMSGSIZE; SIZE_MAX: no limit */
    bool        retry_unsafe;    /* also retry commands whose outcome is unknown (go-redis) */
    uint32_t    min_retry_backoff_ms; /* default (0) 8 */
    uint32_t    max_retry_backoff_ms; /* default (0) 512 */
    /* Auto-pipelining (docs/redis.md): 0 (default), each command holds a
     * connection from send to reply, as go-redis's pool. N > 0: commands
     * from every caller share up to N of the pool's connections; those
     * queued in one loop iteration leave in one send per connection. A
     * connection takes commands while it owes fewer than max_owed replies,
     * then the next is used; then commands wait, in order, for room (the
     * pool's timeout bounds the wait). A connection in the middle of a big
     * reply (the rest of a bulk string of 32 KiB or more still to come) is
     * passed over while another can be used or opened, so a command does
     * not wait behind those bytes. Blocking and connection-state
     * commands, and commands over max_bytes, take a connection of their own;
     * one that ran a state command (SELECT, MULTI, SUBSCRIBE, ...) is then
     * closed, so its state never reaches the shared ones. */
    int         autopipeline_conns;
    unsigned    autopipeline_max_owed;  /* default (0) 1024 */
    size_t      autopipeline_max_bytes; /* default (0) 1 MiB of arguments */
    /* Sentinel (docs/sentinel.md): with master_name set, the client follows
     * the master the sentinels name, and pool.addr must be NULL (-EINVAL
     * otherwise, and without sentinel_addrs). The sentinels are asked in
     * turn (SENTINEL get-master-addr-by-name), the others they know are
     * learnt, and one of them tells of switches (+switch-master). Until a
     * master is known, dials wait for it; when none can be learnt they fail
     * with RP_ENOMASTER (no sentinel knows the name) or RP_ESENTINEL (none
     * answered, or answered garbage: rp_client_sentinel_error says why).
     * TLS (pool.tls) applies to the sentinels and the data nodes alike:
     * without pool.tls.server_name each is verified against the host of
     * its own address (a data node: the one the sentinels name).
     * Each new connection checks ROLE in its set-up and refuses a node that
     * is not the master with RP_ENOTMASTER (retried, as unrun). A command
     * that fails for want of the master (a refusal of a command that did
     * not run, a failed dial or set-up) and may be sent again waits for
     * the new one: sent again after the backoff, or at once on a switch,
     * within pool.pool_timeout_ms from its first such failure, without
     * spending max_retries (0 still turns it off); then it ends with that
     * failure. On a switch, dials and set-ups to the old master are
     * abandoned at once. The subscription to the sentinels, a watch of
     * the library's own, does not keep rp_loop_run(RP_RUN_DEFAULT)
     * running once subscribed (its set-up does, within the dial and read
     * timeouts). Strings and the array are copied. */
    const char *master_name;
    const char *const *sentinel_addrs; /* "host:port" each */
    int         sentinel_count;
    const char *sentinel_username; /* AUTH to the sentinels when sentinel_password is set */
    const char *sentinel_password;
    /* Reads on replicas (with master_name; go-redis's ReplicaOnly and
     * RouteRandomly): read-only commands go to a random usable replica of
     * SENTINEL replicas (not down, not disconnected, its link to the
     * master up), or with route_randomly to the master or a replica; a
     * replica that fails or refuses one unrun (LOADING, MASTERDOWN) hands
     * it to the master. No usable replica: the master. Each replica has a
     * pool of its own, with these options. Writes always go to the master. */
    bool        replica_only;
    bool        route_randomly;
    /* Client-side caching (docs/caching.md): commands sent with
     * RP_CMD_CACHE are answered from the loop's memory while the server
     * has not said their key changed. cache_bytes 0 (default): off, and
     * RP_CMD_CACHE is -EINVAL. A subscriber connection (SUBSCRIBE
     * __redis__:invalidate) is dialled at rp_client_new; nothing is cached
     * until it is subscribed. Subscribed, it does not keep
     * rp_loop_run(RP_RUN_DEFAULT) running (a watch of the library's own,
     * as an idle connection's); its set-up (dial, CLIENT ID, SUBSCRIBE, at
     * rp_client_new and on a redial after it was lost) does, within the
     * dial and read timeouts. */
    size_t      cache_bytes;        /* entries' memory bound (LRU eviction) */
    uint32_t    cache_max_ttl_ms;   /* default (0) 60 s: no entry lives longer */
    int         cache_mode;         /* RP_CACHE_TRACKING (default) or RP_CACHE_BCAST */
    const char *const *cache_prefixes; /* BCAST: PREFIX each (none: every key); copied;
                                          a key under none is read, never kept */
    int         cache_prefix_count;
    uint32_t    cache_heartbeat_ms; /* default (0) 1000: a PING on the subscriber;
                                       one unanswered by the next flushes the cache */
} rp_client_options;
/* Default: data connections send CLIENT TRACKING on REDIRECT <subscriber>
 * as part of their set-up, and the server remembers what each read.
 * BCAST: the subscriber tracks the prefixes for itself (CLIENT TRACKING on
 * REDIRECT <self> BCAST PREFIX ...): no bookkeeping on the server per
 * read, every write under a prefix is told. */
#define RP_CACHE_TRACKING 0
#define RP_CACHE_BCAST 1
typedef void (*rp_reply_cb)(rp_client *client, const redisReply *reply, int status, void *data);
typedef void (*rp_client_close_cb)(rp_client *client, void *data);

RP_EXTERN void     rp_client_options_init(rp_client_options *opts);
/* Options from a URL, as go-redis's ParseURL takes it:
 *   redis://[[user][:password]@]host[:port][/db][?option=value&...]
 *   rediss://...          the same with TLS on (pool.tls.enable; the host
 *                         is the name verified; set pool.tls.ca_file etc.
 *                         after the call)
 *   unix://[[user][:password]@]/path[?db=N&...]
 * Defaults: host localhost, port 6379, db 0. User, password and values are
 * %-decoded. Options: dial_timeout, read_timeout, write_timeout,
 * pool_timeout, conn_max_idle_time, conn_max_lifetime, min_retry_backoff,
 * max_retry_backoff (a number with ms, s, m or h, or bare seconds; -1:
 * none), pool_size, min_idle_conns, max_idle_conns, max_active_conns,
 * max_retries (-1: never), db, client_name, pool_fifo (true/false), and for
 * rediss skip_verify (pool.tls.insecure). opts is first reset as by
 * rp_client_options_init; the strings it gets point into buf (cap bytes;
 * strlen(url) + 16 always suffice), which must outlive rp_client_new.
 * -EINVAL for a malformed URL or an unknown option (opts untouched; the
 * error names no part of the URL), -ENOSPC when buf is too small. */
RP_EXTERN int      rp_client_options_from_url(rp_client_options *opts, const char *url, char *buf, size_t cap);
RP_EXTERN int      rp_client_new(rp_client **client, rp_loop *loop, const rp_client_options *opts);
/* The arguments are copied once, during the call (the caller may free
 * them on return), and that copy serves every attempt: an argument of
 * 16 KiB or more goes out from it by a vectored send, never copied again
 * into an output buffer. There is no flag to skip that one copy (measured
 * and reasoned in docs/performance.md, "Big values"). */
RP_EXTERN int      rp_client_command(rp_client *client, rp_reply_cb cb, void *data,
                                     int argc, const char *const *argv, const size_t *argvlen);
/* rp_client_command with options; returns a positive id naming the command,
 * or a negative code (and then the callback never runs). */
#define RP_CMD_IDEMPOTENT 1u /* running it twice is harmless: retry it like a read */
/* Answer from the client's cache when it holds the reply; else send it and
 * keep its reply (not an error reply) for up to cache_ttl_ms. Only for a
 * read whose reply depends on the key argv[1] alone: GET, GETRANGE,
 * STRLEN, EXISTS (one key), TYPE, TTL, PTTL, HGET, HMGET, HGETALL, HEXISTS,
 * HLEN, HKEYS, HVALS, HSTRLEN, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD,
 * ZSCORE, ZMSCORE, ZCARD, ZRANK, ZREVRANK, ZRANGE, ZCOUNT, LRANGE, LINDEX,
 * LLEN; -EINVAL for any other, or with caching off. A hit runs the
 * callback later in this loop iteration, with the cached reply itself
 * (shared by every hit, read-only, valid until the callback returns); the
 * hooks see it as a command with 0 retries. TTL and PTTL are cached as
 * read: they count down on the server only. A miss while the same read
 * (same argv) is in flight, and no invalidation of its key came since that
 * one was sent, is not sent: it ends with that read's reply (later than
 * its call, as every reply). If that read ends without a reply (it
 * failed, or was cancelled or timed out), this one is sent by itself and
 * ends with its own outcome; a cancel of one read never ends another.
 * With reads on replicas (replica_only, route_randomly), a cached read
 * goes to the master: its tracking is the one that tells, and this
 * client's writes are read back. */
#define RP_CMD_CACHE 2u
typedef struct rp_command_options {
    unsigned flags;      /* RP_CMD_* */
    uint32_t timeout_ms; /* the whole command, retries included, must end
                            within this from the call, or it ends with
                            -ETIMEDOUT (as a cancel); 0 = no such bound */
    uint32_t cache_ttl_ms; /* RP_CMD_CACHE: at most this long (0, or over
                              cache_max_ttl_ms: cache_max_ttl_ms) */
} rp_command_options;
RP_EXTERN int64_t  rp_client_command_ex(rp_client *client, const rp_command_options *opts, rp_reply_cb cb,
                                        void *data, int argc, const char *const *argv, const size_t *argvlen);
/* The printf-style forms (the format as rp_conn_commandf's). The _ex and
 * va_list forms take options (NULL: none) and return the command's id. */
RP_EXTERN int      rp_client_commandf(rp_client *client, rp_reply_cb cb, void *data, const char *format, ...);
RP_EXTERN int64_t  rp_client_commandf_ex(rp_client *client, const rp_command_options *opts, rp_reply_cb cb,
                                         void *data, const char *format, ...);
RP_EXTERN int64_t  rp_client_vcommandf(rp_client *client, const rp_command_options *opts, rp_reply_cb cb,
                                       void *data, const char *format, va_list ap);
/* Cancels the command with this id (from rp_client_command_ex): its
 * callback gets -ECANCELED later in this loop iteration. A command not yet
 * sent is never sent, on its own connection or on a shared one (wherever
 * it waits in the connection's unsent buffer; so too when its timeout_ms
 * expires there); one already sent may still run on the server, and its
 * reply, when it comes, is skipped: its connection is held until then
 * (bounded by read_timeout_ms) and goes back to the pool after it; a
 * blocking or state command's is closed at once, as its reply may never
 * come.
 * -ENOENT if the command has completed or its completion is queued. */
RP_EXTERN int      rp_client_cancel(rp_client *client, int64_t id);
/* Sets the hooks of the client and of its pool (NULL clears them). */
RP_EXTERN int      rp_client_set_hooks(rp_client *client, const rp_hooks *hooks);
/* The client's pool: connections from it are set up like the client's own. */
RP_EXTERN rp_pool *rp_client_pool(rp_client *client);
/* Bytes the client's connections hold in buffers now: each one's own recv
 * buffer and hiredis reader's buffer, and for the sends queued or in
 * flight, the arguments of 16 KiB or more sent from the commands' own
 * copies (held until the send, and its zero-copy notification, completed,
 * even when the command was cancelled or failed meanwhile) and an output
 * buffer grown past 64 KiB (a large command of rp_conn_command, copied;
 * freed when its send is done). Through the loop's buffer
 * ring (rp_loop_options.no_recv_ring) a connection has no recv buffer of
 * its own, and an idle one no reader either: it holds 0; the ring's
 * buffers are the loop's (rp_loop_stats: recv_ring_bytes, those in use,
 * and the fallbacks when it ran dry, each a buffer held for one read).
 * Without the ring (TLS, an older kernel) an idle connection holds 4 KiB.
 * One reading a large reply holds about the reply's size until it has
 * been read, and gives it back once nothing more is owed on it. */
RP_EXTERN size_t   rp_client_buffer_bytes(const rp_client *client);
/* Why the last attempt to learn the master failed ("127.0.0.1:26379:
 * connection refused; ..."), or NULL: no sentinel client, or no failure
 * yet. Valid until the next loop iteration. */
RP_EXTERN const char *rp_client_sentinel_error(const rp_client *client);
/* The client's cache, counted since rp_client_new. */
typedef struct rp_cache_stats {
    uint64_t hits;          /* answered from memory */
    uint64_t misses;        /* RP_CMD_CACHE commands sent to the server (not
                               those joined) */
    uint64_t invalidations; /* keys the server told changed, and cached keys
                               this client's own writes named */
    uint64_t evictions;     /* entries dropped for room (cache_bytes) */
    uint64_t flushes;       /* the whole cache dropped: FLUSHALL/FLUSHDB, subscriber lost */
    uint64_t expired;       /* entries found past their TTL */
    uint64_t joined;        /* misses not sent: they took the reply of the same
                               read already in flight (single flight) */
    size_t   bytes;         /* held by entries now */
    size_t   entries;
    bool     subscribed;    /* the invalidation subscriber is up: replies may be kept */
} rp_cache_stats;
/* -EINVAL for a NULL argument or a client without a cache. */
RP_EXTERN int      rp_client_cache_stats(const rp_client *client, rp_cache_stats *out);
/* Graceful: commands already sent complete with their replies (each bounded
 * by the read timeout, or not at all with read_timeout_ms 0 or a command
 * that blocks for ever), the others with RP_ECLOSED. "Sent" here means
 * handed to a connection: one queued on it in this loop iteration, its
 * bytes still in the connection's buffer, is sent at the iteration's end
 * and completes with its reply (a cancel, by contrast, takes such bytes
 * back); those still waiting for a connection or a retry end with
 * RP_ECLOSED; connections held for
 * the skipped replies of cancelled commands wait for them alike; then the
 * pool closes and cb runs. A hook or callback may close the client; a
 * command whose command_start hook closed it ends with RP_ECLOSED. */
RP_EXTERN int      rp_client_close(rp_client *client, rp_client_close_cb cb, void *data);
/* Abortive: every command completes with RP_ECLOSED in this loop iteration,
 * sent or not, and every connection the client holds (a command's, a
 * lane's, one held for a cancelled command's skipped reply) is closed
 * without waiting for the server; then cb runs, whatever read_timeout_ms.
 * Connections the caller took from rp_client_pool stay the caller's: the
 * pool's close waits for them. RP_ECLOSED if the client is already closing. */
RP_EXTERN int      rp_client_abort(rp_client *client, rp_client_close_cb cb, void *data);

#ifdef __cplusplus
}
#endif
#endif /* RINGPOOL_REDIS_H */
