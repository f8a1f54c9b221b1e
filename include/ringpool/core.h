/* ringpool core: the loop, the pools and connection I/O, with no Redis and
 * no hiredis. ringpool.h includes this and ringpool/redis.h.
 *
 * One loop owns the io_uring and every socket. Pools hand out connections
 * through completion callbacks with go-redis ConnPool semantics.
 *
 * Conventions (as libuv): functions that can fail return 0 (or a count) or a
 * negative code: -errno, or one of the RP_E* codes below, which never collide
 * with errno values. A call that returns a negative code never calls its
 * callback; an accepted request calls its callback exactly once, and never
 * from inside the call that made it.
 *
 * Contracts:
 * - Arguments: argv and argvlen are copied during the call (rp_conn_command,
 *   rp_client_command*); option strings (addr, password, ...) likewise, and
 *   rp_conn_sendv's iovec array. A buffer given to rp_conn_send,
 *   rp_conn_sendv or rp_conn_recv must live until its callback (a large
 *   send's callback comes once the kernel is done with the memory: after
 *   its zero-copy notification, rp_loop_options.no_send_zc, which on a
 *   network may come after the reply, and after a put).
 * - Results: rp_conn_send completes with len once every byte is written, or
 *   a negative code (never a short count); rp_conn_recv with the byte count,
 *   0 at end of stream, or a negative code. A reply (redisReply) lives until
 *   its callback returns.
 * - Put and remove: a put of a connection with I/O or replies in flight
 *   removes it, and the ops in flight end with -ECANCELED. A put of a broken
 *   connection (an I/O error or end of stream was seen) removes it. A send
 *   that wrote every byte and waits only for the kernel's zero-copy
 *   notification (it follows the peer's acknowledgement, so on a network
 *   the reply can come first) is not in flight: the put keeps the
 *   connection, which waits for the notification neither idle nor in use
 *   (counted in total_conns, not idle_conns; a get meanwhile waits for it
 *   rather than dialling). The send's callback then runs with its result,
 *   and the connection goes to a waiting get or the idle list. The wait is
 *   bounded by the write timeout (counted from the send's start), or with
 *   none by the pool timeout: past it the send ends with -ETIMEDOUT and
 *   the connection is removed (RP_CLOSE_BROKEN).
 * - An honest put: bytes that came for a holder never reach the next one.
 *   The kernel says with each recv whether bytes (or a FIN) follow it; a
 *   put after a recv that left some removes the connection (stale_conns,
 *   RP_CLOSE_UNHEALTHY). A connection put back after a send with no read
 *   since (its reply may have come), or after a read that filled its
 *   buffer on a unix socket (kernels before 6.17 do not say), is checked
 *   first: a zero-length recv that rides in the loop's next submit; a get
 *   meanwhile takes another idle connection or waits for this one, and
 *   one with bytes is removed. A connection read to the end is put back
 *   with no check and no syscall. No put can see a reply still on its way
 *   (a request whose answer the holder did not wait for): it would be the
 *   next holder's first read, so remove, don't put, a connection that
 *   still owes you a reply. The same holds for on_connect: a set-up that
 *   leaves bytes unread fails its dial with -EPROTO.
 * - Cancel: a get, a command or a pool wait cancelled before its callback
 *   ran gets -ECANCELED, later in the same loop iteration; -ENOENT otherwise.
 * - Zero in options: sizes and waits take their default (pool_size,
 *   dial_timeout_ms, pool_timeout_ms, max_concurrent_dials); read and write
 *   timeouts, idle and lifetime limits and max_* limits mean "none";
 *   health_check_idle_ms 0 checks every idle connection before hand-out
 *   (one the Redis layer's recv watches needs no check).
 * - Stats count what go-redis counts (see rp_stats); last_dial_error keeps
 *   the last failure after dials succeed again (dial_errors counts them).
 * - Gets: the callback receives a connection and 0, or NULL and a negative
 *   code; never a connection with an error.
 * - rp_pool_remove(pool, conn, reason) closes conn instead of keeping it.
 *   reason is the caller's own code (say, the error that made it give up
 *   the connection): a single or sticky pool keeps it, as go-redis's
 *   Remove keeps its error, and reports it (rp_pool_bad_conn_reason); the
 *   connection pool does not use it (the conn_close hook says
 *   RP_CLOSE_REMOVED).
 * - Close: rp_pool_close's callback runs once every connection is closed
 *   (those in use close when their holders put or remove them) and every
 *   get has had its callback; the pool is freed as soon as the callback
 *   returns. Neither the pool nor any of its connections may be used after
 *   that.
 * - SIGPIPE: ringpool never raises it. Every send is an io_uring send
 *   with MSG_NOSIGNAL, so a peer that went away ends it with -EPIPE or
 *   -ECONNRESET in its callback; a program needs no SIG_IGN. (The threads
 *   that look host names up start with every signal blocked.) */
#ifndef RINGPOOL_CORE_H
#define RINGPOOL_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* RP_HAVE_TLS: 1 when this build of the library has TLS (meson -Dtls),
 * else 0. A program checks it at build time with #if RP_HAVE_TLS, and at
 * run time with rp_tls_available() (the library it runs with may be
 * another build than the header it was compiled with). */
#include "ringpool/features.h"

#ifdef __cplusplus
extern "C" {
#endif

/* RP_EXTERN marks the public functions, and a line that starts with it
 * declares one (tests/man_pages.sh finds them so): the attribute is
 * spelt through a name of its own. */
#define RP__VISIBLE __attribute__((visibility("default")))
#if defined(RP_BUILDING_LIBRARY)
#define RP_EXTERN RP__VISIBLE
#else
#define RP_EXTERN
#endif

#define RP_VERSION_MAJOR 0
#define RP_VERSION_MINOR 1
#define RP_VERSION_PATCH 0

/* The library's own codes: far below any errno value. */
#define RP_ERRNO_MAP(XX)                                                       \
    XX(ECLOSED, -30001, "pool or loop closed")                                 \
    XX(EPOOLTIMEOUT, -30002, "timed out waiting for a free connection")        \
    XX(EPOOLEXHAUSTED, -30003, "max_active_conns reached")                     \
    XX(EBADCONN, -30004, "connection went bad")                                \
    XX(EEOF, -30005, "server closed the connection")                           \
    XX(ESETUP, -30006, "the server refused the connection's set-up")           \
    XX(EADDRINFO, -30007, "address could not be resolved")                     \
    XX(ECROSSSLOT, -30008, "the command's keys hash to different slots")       \
    XX(ECLUSTERDOWN, -30009, "no cluster node serves the slot")                \
    XX(ETLS, -30010, "TLS handshake or record failed")                         \
    XX(ESENTINEL, -30011, "no sentinel gave the master's address")            \
    XX(ENOMASTER, -30012, "the sentinels know no master by that name")        \
    XX(ENOTMASTER, -30013, "the node is not the master")

enum {
#define RP__ERR_ENUM(name, value, text) RP_##name = (value),
    RP_ERRNO_MAP(RP__ERR_ENUM)
#undef RP__ERR_ENUM
};

/* Names any code this library returns: its own codes and -errno values. */
RP_EXTERN const char *rp_strerror(int code);

/* Replaces the allocator of every allocation the library makes (hiredis's
 * reader keeps its own): call it before creating anything, with functions
 * that behave as the C library's. -EINVAL if any is NULL. */
typedef void *(*rp_malloc_fn)(size_t size);
typedef void *(*rp_realloc_fn)(void *ptr, size_t size);
typedef void *(*rp_calloc_fn)(size_t count, size_t size);
typedef void (*rp_free_fn)(void *ptr);
RP_EXTERN int rp_set_allocator(rp_malloc_fn malloc_fn, rp_realloc_fn realloc_fn, rp_calloc_fn calloc_fn,
                               rp_free_fn free_fn);

/* ------------------------------------------------------------------ loop */

typedef struct rp_loop rp_loop;
typedef struct rp_loop_options {
    /* Submission queue size; 0 = default (256). At least 2 (-EINVAL for
     * 1): a connect and its linked timeout go into the ring together. */
    unsigned entries;
    /* Before sleeping, spin up to this long waiting for a completion: a
     * reply that comes back within the window skips the wake-up (tens of
     * microseconds on a VM), at the cost of a busy CPU. 0 = never spin. */
    unsigned busy_poll_us;
    /* The Redis layer's connections receive through one ring of buffers
     * per loop (io_uring provided buffers, Linux 6.12 or later), so a
     * connection waiting for a reply, or idle, holds no receive buffer.
     * true: each reads into a buffer of its own instead, as it does where
     * the kernel has no such ring, under TLS, and when the environment
     * says RINGPOOL_RECV_RING=0. */
    bool no_recv_ring;
    /* Large sends (64 KiB or more) go as zero-copy sends
     * (IORING_OP_SEND_ZC, SENDMSG_ZC): the kernel sends from the caller's
     * memory, and the send's callback runs only after the kernel's
     * notification that it is done with it. A connection on which the
     * kernel reports that it copied the bytes anyway (loopback, a device
     * without scatter-gather) sends plainly from then on, as does one
     * whose kind of socket has none (a unix socket), and every
     * connection on a kernel without them. true: never (also
     * RINGPOOL_SEND_ZC=0 in the environment). */
    bool no_send_zc;
} rp_loop_options;
typedef enum { RP_RUN_DEFAULT, RP_RUN_ONCE, RP_RUN_NOWAIT } rp_run_mode;

/* Creates the ring on the calling thread, which must be the one that runs
 * the loop. -ENOMEM when RLIMIT_MEMLOCK is too small for the ring. */
RP_EXTERN int rp_loop_new(rp_loop **loop, const rp_loop_options *opts);
/* DEFAULT: until rp_loop_stop or nothing is pending. ONCE: blocks until it
 * handled at least one completion, timer, posted function or callback (the
 * loop's own bookkeeping, such as a kernel timeout left by a stopped
 * timer, does not count), or until rp_loop_stop or nothing is pending.
 * NOWAIT: handles what is ready. Returns 1 while work is still pending, 0
 * otherwise; -EBUSY inside a run or inside the host's wake hook. */
RP_EXTERN int rp_loop_run(rp_loop *loop, rp_run_mode mode);
RP_EXTERN void rp_loop_stop(rp_loop *loop); /* any thread */
/* Embedding (docs/embedding.md). rp_loop_fd becomes readable when the
 * kernel or another thread has work for rp_loop_run(loop, RP_RUN_NOWAIT):
 * completions, timers' kernel timeouts, rp_loop_post, rp_loop_stop. Work
 * the loop queues for itself (callbacks made ready by a call from the
 * host's own handlers, or left by a run) needs no syscall: a host that
 * calls rp_loop_timeout right before it sleeps sees it there. A host that
 * never calls rp_loop_timeout gets the fd signalled for it instead, also
 * when the loop's liveness changes (a timer stopped from its handler): at
 * most one eventfd write between two runs, so the host may watch the fd
 * edge-triggered or read it itself. Ask for the fd before creating pools:
 * a loop with nothing under way sets its ring up for a host then (one
 * syscall fewer per wake-up). */
RP_EXTERN int rp_loop_fd(const rp_loop *loop);
/* How long the host may sleep before it must call rp_loop_run(loop,
 * RP_RUN_NOWAIT): 0 when work is ready now, the milliseconds (rounded up)
 * to the next timer, or -1 when only the fd can bring work (libuv's
 * uv_backend_timeout). -EINVAL for a NULL loop. */
RP_EXTERN int rp_loop_timeout(const rp_loop *loop);
/* 1 while work is pending that keeps rp_loop_run(RP_RUN_DEFAULT) going (a
 * request, I/O, a timer, a function posted and not yet run), 0 otherwise
 * (libuv's uv_loop_alive). The library's own watches never count: an idle
 * connection's, a cache's invalidation subscriber, a sentinel client's
 * subscription to its sentinels, their heartbeats and maintenance timers
 * (as libuv's internal handles are unreferenced). */
RP_EXTERN int rp_loop_alive(const rp_loop *loop);
/* For event-loop adapters (ringpool/libuv.h, ringpool/libevent.h): wake(host)
 * runs on the loop thread when something changes outside a run that the
 * host would not otherwise see: work became ready (queued from the host's
 * own handlers, or left by a run), the loop's liveness (rp_loop_alive) or
 * its next deadline (rp_loop_timeout) changed (a timer started or stopped,
 * a request made). The host should run the loop soon, without sleeping,
 * and read both again after that run. It is called once until the host
 * next runs the loop, and afresh for a host set after another detached.
 * It runs inside the rp_ call that made the change, before that call is
 * done: it must only arrange the run, never run the loop itself
 * (rp_loop_run returns -EBUSY inside it). It is not called by
 * rp_loop_set_host: a host attached to a busy loop runs it once itself.
 * One host per loop: -EBUSY if another is set; wake NULL (with host NULL)
 * detaches. rp_loop_free returns -EBUSY while a host is set. */
RP_EXTERN int rp_loop_set_host(rp_loop *loop, void (*wake)(void *host), void *host);
RP_EXTERN void *rp_loop_host(const rp_loop *loop);
/* Runs fn(arg) on the loop thread soon. Any thread. */
RP_EXTERN int rp_loop_post(rp_loop *loop, void (*fn)(void *arg), void *arg);
/* Runs the posted functions still queued, then frees the loop; -EBUSY
 * while a pool or timer is open or a host is set, decided after those
 * functions ran (one that opens a timer or posts again keeps the loop).
 * Nothing the loop started writes into its memory once this returned. */
RP_EXTERN int rp_loop_free(rp_loop *loop);
/* What the loop did, for benchmarks: io_uring_enter calls, every syscall
 * the library made (enters included; eventfd, socket, close, ...), loop
 * iterations and SQEs prepared. */
typedef struct rp_loop_stats {
    uint64_t enters;
    uint64_t syscalls;
    uint64_t iterations;
    uint64_t sqes;
    uint64_t busy_poll_hits; /* sleeps avoided by busy_poll_us */
    /* The receive buffer ring (no_recv_ring): its buffers' bytes (0: none),
     * those handed to receives and not yet parsed, and the receives that
     * found it empty and read into a buffer of their own instead (the
     * ring then doubles). Once a second it gives back what the last second
     * did not need (down to two buffers, their pages dropped, after a
     * second with nothing received); a loop set up for a host keeps it. */
    uint64_t recv_ring_bytes;
    uint64_t recv_ring_bytes_in_use;
    uint64_t recv_ring_fallbacks;
    /* Zero-copy sends (no_send_zc) submitted, their notifications (each
     * one's memory was held until then), those notifications that said
     * the kernel copied the bytes after all, and the kernel's refusals
     * (one per unix socket, one in all where the kernel has none: plain
     * sends from then on). */
    uint64_t send_zc;
    uint64_t send_zc_notifs;
    uint64_t send_zc_copied;
    uint64_t send_zc_refused;
} rp_loop_stats;
RP_EXTERN void rp_loop_stats_get(const rp_loop *loop, rp_loop_stats *out);
/* The loop's cached monotonic clock in nanoseconds, updated every iteration. */
RP_EXTERN uint64_t rp_loop_now(const rp_loop *loop);

/* Timers for programs built on the loop, as libuv's uv_timer_t: on the
 * loop's heap behind its one kernel timeout. The callback runs on the loop
 * thread, never inside rp_timer_start; a timer with repeat_ms runs again
 * every repeat_ms (re-armed before its callback, which may stop or free
 * it). A running timer keeps rp_loop_run(RP_RUN_DEFAULT) going. */
typedef struct rp_timer rp_timer;
typedef void (*rp_timer_cb)(rp_timer *timer, void *data);
RP_EXTERN int  rp_timer_new(rp_timer **timer, rp_loop *loop);
RP_EXTERN int  rp_timer_start(rp_timer *timer, rp_timer_cb cb, void *data, uint64_t timeout_ms,
                              uint64_t repeat_ms);
RP_EXTERN int  rp_timer_stop(rp_timer *timer);
/* Restarts a repeating timer from now (stops a one-shot one); -EINVAL if
 * it was never started. */
RP_EXTERN int  rp_timer_again(rp_timer *timer);
RP_EXTERN int  rp_timer_set_repeat(rp_timer *timer, uint64_t repeat_ms);
RP_EXTERN bool rp_timer_active(const rp_timer *timer);
/* Stops and frees it; allowed inside its own callback. */
RP_EXTERN void rp_timer_free(rp_timer *timer);

/* ------------------------------------------------------------------ pool */

typedef struct rp_pool rp_pool;
typedef struct rp_conn rp_conn;

/* TLS for every connection of a pool (OpenSSL 3, below the connection
 * layer: rp_conn_send/rp_conn_recv and the Redis layer see plaintext, the
 * loop's SEND/RECV carry the records). All zero: TLS off. rp_pool_new
 * builds one SSL_CTX for the pool from these (it reads the files then; the
 * strings need not outlive the call) and shares it by the pool's
 * connections. A dial's dial_timeout_ms covers the TCP connect and the
 * handshake: a stalled handshake fails with -ETIMEDOUT. A failed handshake
 * or record fails with RP_ETLS; rp_pool_tls_error says why. Without TLS
 * compiled in (RP_HAVE_TLS 0), enable makes rp_pool_new fail -ENOTSUP. A
 * TLS connection's rp_conn_fd carries ciphertext: never read or write it.
 * The library does not link OpenSSL: it loads libssl (dlopen) when the
 * first pool with TLS is made, so a process that never uses TLS never
 * maps it; where libssl cannot be loaded, rp_pool_new fails -ENOTSUP too. */
#define RP_TLS1_2 0x0303
#define RP_TLS1_3 0x0304
typedef struct rp_tls_options {
    bool enable;
    /* Skips verifying the server's certificate and name: for tests only. */
    bool insecure;
    /* Trusted CAs: a PEM file and/or a hashed directory (c_rehash); both
     * NULL: the system's default store. */
    const char *ca_file;
    const char *ca_dir;
    /* A client certificate (PEM, chain allowed) and its key, for servers
     * that ask for one (tls-auth-clients). */
    const char *cert_file;
    const char *key_file;
    /* The name sent as SNI and verified against the certificate. NULL: the
     * host of the pool's addr; a numeric address is verified against the
     * certificate's IP SANs (no SNI). A unix: address needs it unless
     * insecure. */
    const char *server_name;
    int min_version;          /* RP_TLS1_2 (0 = default) or RP_TLS1_3 */
    const char *ciphers;      /* TLS 1.2 cipher list (OpenSSL syntax); NULL: OpenSSL's */
    const char *ciphersuites; /* TLS 1.3 suites; NULL: OpenSSL's */
    /* An SSL_CTX * of the caller's own: used as it is (the library adds
     * nothing to it and ignores the fields above except server_name,
     * which still sets SNI and the name each connection verifies when the
     * context verifies peers; sessions are not resumed by the library).
     * The pool, and an rp_cluster for the nodes it makes later, take a
     * reference (SSL_CTX_up_ref): the caller may free its own at once. */
    void *ssl_ctx;
} rp_tls_options;

typedef struct rp_pool_options {
    /* "127.0.0.1:6379", "[::1]:6379", "localhost:6379", "unix:/path".
     * rp_pool_new checks only the text (-EINVAL when malformed, or with
     * a space before or after it or inside a host name). A host
     * name is looked up off the loop thread when a dial needs it, as
     * go-redis does on every dial, and the answer is kept for a second;
     * a dial tries its addresses in order until one connects. A failed
     * lookup fails the dials that waited for it with RP_EADDRINFO. The
     * system resolver's own timeouts bound a lookup, dial_timeout_ms each
     * connect. A lookup under way keeps rp_loop_run(RP_RUN_DEFAULT)
     * running; closing the pool abandons it. Numeric addresses and paths
     * need no lookup. */
    const char *addr;
    bool     pool_fifo;             /* false: LIFO (default) */
    int      pool_size;             /* default 10 * number of CPUs */
    int      min_idle_conns;        /* default 0 */
    int      max_idle_conns;        /* default 0 = no limit */
    int      max_active_conns;      /* default 0 = no limit */
    uint32_t dial_timeout_ms;       /* default 5000 */
    uint32_t pool_timeout_ms;       /* default 4000 */
    uint32_t read_timeout_ms;       /* default 3000; 0 = none */
    uint32_t write_timeout_ms;      /* default 3000; 0 = none */
    uint32_t conn_max_idle_time_ms; /* default 30 min; 0 = none */
    uint32_t conn_max_lifetime_ms;  /* default 0 = none */
    /* Additions beside go-redis's options. */
    int      max_concurrent_dials;  /* default 0 = pool_size */
    uint32_t conn_max_lifetime_jitter_ms; /* default 0: each connection's
                                      lifetime is shortened by a random
                                      0..jitter so a fleet is not recycled at once */
    uint32_t health_check_idle_ms;  /* default 500: a connection idle longer is
                                      checked before use and watched while idle */
    /* go-redis OnConnect: sets up each new connection before anyone gets
     * it (I/O is allowed on it). It must call rp_conn_setup_done exactly
     * once; a negative status fails that dial with the status. */
    void   (*on_connect)(rp_conn *conn, void *data);
    void    *on_connect_data;
    /* Socket options of every TCP connection (a unix socket has neither).
     * TCP_NODELAY is set, as hiredis and Go set it: a request written in
     * pieces (a header, then its value) goes out at once instead of
     * waiting for the peer's delayed ACK (tens of milliseconds each).
     * Keep-alive is on as go-redis's dialer has it: the kernel probes a
     * connection idle for 30 s every 5 s and, after 3 unanswered probes,
     * fails it (a dead peer behind a NAT or a pulled cable is found even
     * while nobody sends). true turns either off. */
    bool     disable_tcp_nodelay;
    bool     disable_tcp_keepalive;
    /* Recovery: after pool_size dials in a row failed, gets fail at once
     * with the last dial's error (go-redis) while one probe dial at a time
     * looks for the server: the first probe_interval_ms after the last
     * failure, then at twice the interval after each failed probe, up to
     * probe_interval_max_ms (a smaller maximum means a fixed interval).
     * With the defaults a server back within 250 ms is used again within
     * about 100 ms of its return, and one down for long sees a dial a
     * second. */
    uint32_t probe_interval_ms;     /* default 50 */
    uint32_t probe_interval_max_ms; /* default 1000 (go-redis's fixed interval) */
    rp_tls_options tls;             /* default all zero: TLS off */
} rp_pool_options;

/* hits and misses count what go-redis's do: every get that has its turn
 * (one of pool_size) counts once, a hit when it found a free connection
 * in the pool, a miss when it found none. A miss waits for a connection
 * (a dial, or one put back or checked meanwhile, whichever comes first)
 * or fails (the dial's error, fail-fast, RP_EPOOLEXHAUSTED): so misses
 * are not dials. A get that waited for its turn and was handed a
 * connection put back is a hit. dials counts the dials begun. */
typedef struct rp_stats {
    uint32_t hits;        /* a free connection was found in the pool */
    uint32_t misses;      /* none was free */
    uint32_t timeouts;    /* a wait ended in RP_EPOOLTIMEOUT */
    uint32_t total_conns; /* open connections: idle, in use, and put back
                             while a send's notification is owed */
    uint32_t idle_conns;
    uint32_t stale_conns; /* removed while the pool is open, as go-redis counts:
                             unhealthy (bytes left unread at put included),
                             too old, idle too long, trimmed, removed or
                             closed by the caller, failed set-up */
    /* Additions. */
    uint32_t wait_count;        /* gets that waited for a turn and got one */
    uint64_t wait_duration_ns;  /* total time those gets waited */
    uint32_t dial_errors;       /* failed dials, all time */
    int      last_dial_error;   /* the last dial's error, 0 if none failed */
    uint32_t dials_in_flight;   /* pool dials under way (max_concurrent_dials caps it) */
    uint32_t dials;             /* dials begun, all time (probes and rp_pool_new_conn's
                                   included; as many as the dial_start hook sees) */
} rp_stats;

typedef void (*rp_get_cb)(rp_pool *pool, rp_conn *conn, int status, void *data);
typedef void (*rp_close_cb)(rp_pool *pool, void *data);

RP_EXTERN void    rp_pool_options_init(rp_pool_options *opts);
RP_EXTERN int     rp_pool_new(rp_pool **pool, rp_loop *loop, const rp_pool_options *opts);
RP_EXTERN int64_t rp_pool_get(rp_pool *pool, rp_get_cb cb, void *data);
RP_EXTERN int     rp_pool_cancel(rp_pool *pool, int64_t request);
RP_EXTERN void    rp_pool_put(rp_pool *pool, rp_conn *conn);
RP_EXTERN void    rp_pool_remove(rp_pool *pool, rp_conn *conn, int reason);
/* go-redis NewConn: dials a connection outside the idle set (put closes
 * it). RP_EPOOLEXHAUSTED at max_active_conns. */
RP_EXTERN int     rp_pool_new_conn(rp_pool *pool, rp_get_cb cb, void *data);
RP_EXTERN void    rp_pool_close_conn(rp_pool *pool, rp_conn *conn);
RP_EXTERN int     rp_pool_len(const rp_pool *pool);
RP_EXTERN int     rp_pool_idle_len(const rp_pool *pool);
RP_EXTERN void    rp_pool_stats(const rp_pool *pool, rp_stats *out);
RP_EXTERN int     rp_pool_close(rp_pool *pool, rp_close_cb cb, void *data);
/* Why the last failed lookup of the pool's host name failed (getaddrinfo's
 * gai_strerror text), kept after later lookups succeed; NULL if none
 * failed, and on single and sticky pools, whose dials are their parent's. */
RP_EXTERN const char *rp_pool_resolve_error(const rp_pool *pool);
/* Why the pool's last TLS handshake or record failed (OpenSSL's reason:
 * "certificate verify failed: hostname mismatch", "wrong version number",
 * "tlsv1 alert unknown ca", ...), kept after later dials succeed; NULL if
 * none failed, for pools without TLS, and on single and sticky pools. */
RP_EXTERN const char *rp_pool_tls_error(const rp_pool *pool);
/* true when a pool with TLS can be made: the library was built with TLS
 * (see RP_HAVE_TLS) and OpenSSL 3's libssl loads (the first call loads it,
 * as the first TLS pool would; false writes the reason to stderr once). A
 * pool with TLS options is refused with -ENOTSUP exactly when this is
 * false. */
RP_EXTERN bool rp_tls_available(void);
/* Sessions are resumed per pool: the pool keeps the newest sessions (TLS
 * 1.3 tickets or 1.2 sessions, up to 8) its server gave; each dial offers
 * one of its own (a TLS 1.3 client spends a ticket once it resumed with
 * it), and the last is offered by every dial until new ones come. So
 * redials after a failover or a reconnect storm skip the full handshake
 * when the server still accepts the session; a session arrives after the
 * handshake, with the connection's first read (not with a caller's
 * ssl_ctx, whose session handling is the caller's). 1 if conn's handshake
 * resumed a session, 0 if it was a full one, -EINVAL for a connection
 * without TLS. */
RP_EXTERN int rp_conn_tls_resumed(const rp_conn *conn);

/* go-redis SingleConnPool: every get yields conn (borrowed: closing the
 * single pool gives nothing back; its owner puts or removes conn on the
 * parent). Put keeps it; remove records the reason, and later gets fail
 * with RP_EBADCONN; after close they fail with RP_ECLOSED. Len and idle
 * len are 0, as in go-redis. Put is honest, on single and sticky pools
 * alike: a connection put back broken, or with bytes its holder may not
 * have read (a reply to a send it never read, a frame left buffered; not
 * replies the Redis layer still owes its commands) would hand them to its
 * next holder, so the pool goes bad as after a remove, with reason
 * RP_EBADCONN. */
RP_EXTERN int     rp_single_pool_new(rp_pool **pool, rp_pool *parent, rp_conn *conn);
/* go-redis StickyConnPool: the first get takes a connection from parent;
 * later gets yield that same connection, waiting (FIFO, with the parent's
 * pool timeout) while it is out or being taken. If the parent fails the
 * first get, that get and every one waiting behind it end with the
 * parent's error. A cancelled (or closed) first get ends at once with
 * -ECANCELED (RP_ECLOSED); the parent's get is cancelled with it, and the
 * oldest waiter, if any, asks the parent again. Remove records the reason: gets fail with
 * RP_EBADCONN until rp_sticky_pool_reset gives the connection back to the
 * parent as removed (-EBUSY while it is out). rp_sticky_pool_new on a
 * sticky pool shares it: each sharer closes it, and the last close puts
 * the connection back to the parent (or removes it if it went bad). */
RP_EXTERN int     rp_sticky_pool_new(rp_pool **pool, rp_pool *parent);
RP_EXTERN int     rp_sticky_pool_reset(rp_pool *pool);
/* The reason remove recorded on a single or sticky pool (0 if none). */
RP_EXTERN int     rp_pool_bad_conn_reason(const rp_pool *pool);

/* Hooks for logging, metrics and tracing (go-redis Hooks). Every member may
 * be NULL; a hook nobody set costs a branch. They run on the loop thread,
 * must not block, and may call rp_ functions (closing the pool or client
 * included). data is passed back. Hooks may be set or cleared while work is
 * under way: an end hook reports only work that began while it was set
 * (a dial, get or command that began before is not reported), so every
 * duration is measured from a real start. */
typedef enum rp_close_reason {
    RP_CLOSE_POOL,     /* the pool closed */
    RP_CLOSE_REMOVED,  /* the caller removed it (rp_pool_remove, rp_pool_close_conn) */
    RP_CLOSE_BROKEN,   /* put after an I/O error or end of stream, or with I/O in flight */
    RP_CLOSE_EXPIRED,  /* conn_max_lifetime_ms or conn_max_idle_time_ms */
    RP_CLOSE_UNHEALTHY, /* the health check or idle watch saw FIN, RST or stray bytes,
                           or it was put back with bytes its holder left unread */
    RP_CLOSE_TRIMMED,  /* max_idle_conns, or a connection dialled past pool_size */
    RP_CLOSE_SETUP,    /* on_connect failed it */
} rp_close_reason;

typedef struct rp_hooks {
    void *data;
    /* A dial begins; it ends with its duration (a host name's lookup and
     * the set-up included) and 0 or its error. A dial of a Sentinel
     * client's pool that waits for the first master address begins when
     * it has one, and names it. */
    void (*dial_start)(void *data, const char *addr);
    void (*dial_end)(void *data, const char *addr, uint64_t duration_ns, int status);
    /* A connection that was open closes. */
    void (*conn_close)(void *data, rp_conn *conn, rp_close_reason reason);
    /* A get ends: how long from rp_pool_get to its callback, and its status. */
    void (*get_end)(void *data, uint64_t duration_ns, int status);
    /* rp_client only: a command begins, and ends with its duration (from
     * the call to the callback), its status (0 for any reply, error replies
     * included) and how many times it was sent again. argv holds the
     * client's copies of the arguments, valid during the call: each is
     * NUL-terminated (the NUL not counted in argvlen), so it may be printed
     * with %s, though a binary argument may hold NULs of its own. */
    void (*command_start)(void *data, int argc, const char *const *argv, const size_t *argvlen);
    void (*command_end)(void *data, int argc, const char *const *argv, const size_t *argvlen,
                        uint64_t duration_ns, int status, int retries);
    /* Replaces the library's messages to stderr (misuse reports). */
    void (*log)(void *data, const char *message);
} rp_hooks;

/* Copies hooks into the pool (NULL clears them). -EINVAL for a NULL pool. */
RP_EXTERN int     rp_pool_set_hooks(rp_pool *pool, const rp_hooks *hooks);

/* Misuse (double put, put to the wrong pool, NULL connection) is never
 * silent: the pool stays consistent and counts it here; the library also
 * logs it to stderr unless RINGPOOL_QUIET is set in the environment. */
RP_EXTERN uint32_t rp_pool_misuse_count(const rp_pool *pool);

RP_EXTERN int     rp_conn_fd(const rp_conn *conn);
/* A slot for the caller's own pointer: kept while the connection lives,
 * across puts and gets, and NULL for a new connection. */
RP_EXTERN void    rp_conn_set_data(rp_conn *conn, void *data);
RP_EXTERN void   *rp_conn_data(const rp_conn *conn);
/* The slot with a destructor (as GLib's g_object_set_data_full): when the
 * pool closes the connection, for whatever reason (remove, a broken or
 * expired connection, a failed set-up, the pool's close), free_fn runs
 * exactly once with the data the slot holds then, after the last
 * operation on the connection ended (a buffer in it is no longer the
 * kernel's) and before the pool's close callback. rp_conn_set_data
 * changes the data it will get; free_fn NULL removes the destructor.
 * Set it in on_connect to give every connection its state. -EINVAL for a
 * NULL connection. */
RP_EXTERN int     rp_conn_set_data_full(rp_conn *conn, void *data, void (*free_fn)(void *data));
/* The connection pool conn belongs to, where it is put back: the parent
 * of a single or sticky pool that handed it out. NULL for NULL. */
RP_EXTERN rp_pool *rp_conn_pool(const rp_conn *conn);
/* Ends on_connect's set-up of conn: 0 hands it out, < 0 fails the dial. */
RP_EXTERN int     rp_conn_setup_done(rp_conn *conn, int status);

/* ------------------------------------------------------- connection I/O */

/* One send and one recv may be in flight on a connection at a time; a
 * second returns -EBUSY. */
typedef void (*rp_io_cb)(rp_conn *conn, ssize_t result, void *data);
RP_EXTERN int rp_conn_send(rp_conn *conn, const void *buf, size_t len, rp_io_cb cb, void *data);
RP_EXTERN int rp_conn_recv(rp_conn *conn, void *buf, size_t cap, rp_io_cb cb, void *data);
/* A send of iovcnt pieces (1 to IOV_MAX, <sys/uio.h>) as one: a header and
 * a value in place, say, with no copy into one buffer and no pause
 * between them. Like rp_conn_send: it completes once, with the total once
 * every byte is written, or a negative code; it is the connection's one
 * send in flight. The array is copied during the call; the bytes it points
 * to must live until the callback. -EINVAL for no piece or no byte. */
struct iovec;
RP_EXTERN int rp_conn_sendv(rp_conn *conn, const struct iovec *iov, int iovcnt, rp_io_cb cb, void *data);

/* Framed receives: the connection keeps a receive buffer, and a call
 * receives until a whole message is in it, hands that message to its
 * callback and keeps what follows for the next call (which reads nothing
 * when its message is there already). The callback gets the message and
 * its length (> 0), valid until it returns, or NULL and a negative code:
 * -EMSGSIZE when no message ends within max_len bytes (0: 1 MiB),
 * RP_EEOF when the peer closed first, -ETIMEDOUT when a read waited
 * read_timeout_ms, -ECANCELED when the connection was put or removed
 * first, or the frame function's own code. After an error the connection
 * is broken (put removes it). One receive at a time, framed or not: a
 * second call, or rp_conn_recv while one is under way, returns -EBUSY;
 * do not mix rp_conn_recv with framed receives while bytes are buffered.
 * Bytes buffered and not handed out are bytes the holder did not read: a
 * put removes the connection. A connection the Redis layer reads
 * (rp_conn_command) returns -EBUSY. The buffer grows to fit a message and
 * is given back once empty (an idle connection keeps at most 64 KiB); it
 * is freed with the connection.
 *
 * The frame function looks at the bytes buffered (data, len) and returns
 * the length of the first message when it can tell (it may be more than
 * len: the call then reads until that many bytes are in, as for a length
 * prefix), 0 when it needs more bytes, or a negative code to fail. */
typedef ssize_t (*rp_frame_fn)(const char *data, size_t len, void *arg);
typedef void (*rp_frame_cb)(rp_conn *conn, const char *frame, ssize_t len, void *data);
RP_EXTERN int rp_conn_recv_frame(rp_conn *conn, rp_frame_fn frame_fn, void *frame_arg, size_t max_len,
                                 rp_frame_cb cb, void *data);
/* A message ends with delim (1 to 32 bytes, copied; the message handed
 * out includes it): a line with "\r\n". */
RP_EXTERN int rp_conn_recv_until(rp_conn *conn, const char *delim, size_t delim_len, size_t max_len,
                                 rp_frame_cb cb, void *data);
/* A request and its reply in one call: sends iov as rp_conn_sendv does
 * and receives the reply as rp_conn_recv_frame does, with one callback,
 * the reply's. The reply's receive goes into the same submission as the
 * request, linked behind it, so the loop wakes once per round trip rather
 * than once for the send and once for the reply (plain TCP and unix
 * sockets; under TLS the two go separately). A send that fails ends the
 * callback with the send's error. Returns what rp_conn_sendv or
 * rp_conn_recv_frame would (-EBUSY also while a send is under way);
 * nothing is sent when it fails. */
RP_EXTERN int rp_conn_roundtrip(rp_conn *conn, const struct iovec *iov, int iovcnt, rp_frame_fn frame_fn,
                                void *frame_arg, size_t max_len, rp_frame_cb cb, void *data);

#ifdef __cplusplus
}
#endif
#endif /* RINGPOOL_CORE_H */
