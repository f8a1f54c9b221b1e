/* The connection record and its layer: dialling (dial.c), I/O, the
 * zero-length recv that watches or checks an idle socket, and closing
 * (conn.c). A connection knows nothing of who owns it: it reports to its
 * owner (the pool) through the events it was given. */
#ifndef RP_CONN_H
#define RP_CONN_H

#include "internal.h"

#include <sys/uio.h>

typedef enum {
    RP__CONN_DIALING,
    RP__CONN_RESOLVING,   /* the owner's dial waits for addresses: no socket yet */
    RP__CONN_IDLE,
    RP__CONN_CHECKING,    /* health check before hand-out */
    RP__CONN_SETUP,       /* dialled; the pool's on_connect runs */
    RP__CONN_HANDING_OUT, /* given to a request whose callback has not run */
    RP__CONN_IN_USE,
    RP__CONN_PARKED,      /* put back while the kernel still owes a finished
                             zero-copy send's notification: the owner places
                             it once the send's callback ran (events->settled) */
    RP__CONN_CLOSED,      /* fd closed; record lives until its ops drain */
} rp__conn_state;

/* What a connection tells its owner. Each runs once per event, never
 * inside the call that started the operation. */
typedef struct rp__conn_events {
    void (*dialed)(rp_conn *conn, int status);  /* 0, or the dial's error */
    void (*watched)(rp_conn *conn, int result); /* the zero-length recv ended */
    void (*released)(rp_conn *conn);            /* closed, and nothing refers to it */
    void (*broke)(rp_conn *conn);               /* the protocol layer found it unusable */
    void (*settled)(rp_conn *conn);             /* a parked connection's send called back */
} rp__conn_events;

/* A vectored send's copy of its pieces: what is still to go. */
typedef struct rp__sendv {
    struct msghdr msg;
    struct iovec iov[];
} rp__sendv;

typedef struct rp__conn_io rp__conn_io;
struct rp__conn_io {
    rp__op op;
    rp__timer deadline; /* cancels the op when the read/write timeout passes */
    rp_io_cb cb;
    void *data;
    char *buf;
    size_t len, done;
    uint32_t timeout_ms;
    rp__sendv *sendv; /* rp_conn_sendv's, else NULL */
    bool expired;       /* the deadline fired during this transfer */
    bool linked;        /* a send: the recv queued after it waits for it (conn.c) */
    bool zc;            /* a send: the part in flight is a zero-copy send */
    bool zc_ended;      /* the send ended (zc_res) while notifications were owed */
    unsigned zc_owed;   /* notifications to come: the kernel holds the memory */
    ssize_t zc_res;
    rp__recv_ring *ring; /* a recv whose buffer this ring gives on arrival */
    char *fallback;     /* its own buffer after the ring ran dry, till it ends */
};

/* The plaintext a send goes on with: the rest of its buffer, or of
 * rp_conn_sendv's current piece (a TLS send encrypts from it). */
static inline const char *rp__conn_io_plaintext(const rp__conn_io *io, size_t *len)
{
    if (io->sendv) {
        *len = io->sendv->msg.msg_iov->iov_len;
        return io->sendv->msg.msg_iov->iov_base;
    }
    *len = io->len - io->done;
    return io->buf + io->done;
}

struct rp_conn {
    rp_loop *loop;
    const rp__conn_events *events;
    void *owner;
    int fd;
    uint8_t state;
    bool pooled;       /* counts toward pool_size; false for rp_pool_new_conn */
    bool holds_turn;   /* its holder took one of the pool's turns */
    bool broken;       /* an I/O error or end of stream: never reused */
    bool watching;     /* the pool's idle watch is armed */
    bool recv_watch;   /* the recv in flight is the protocol layer's own idle
                          watch: it owes nothing, and stray bytes, FIN or RST
                          complete it (the pool needs no watch or check) */
    uint8_t in_callback; /* a user callback runs: the record must outlive it */
    bool in_setup;     /* on_connect has not called rp_conn_setup_done yet */
    bool is_tcp;       /* the kernel reports bytes left after each recv (Linux 5.19+) */
    uint8_t unread;    /* RP__UNREAD_*: what the socket may hold that no holder read */
    uint32_t read_timeout_ms, write_timeout_ms;
    uint64_t created_ns, used_ns, expires_ns; /* used_ns: last hand-out or I/O */
    rp__link idle_link;             /* the owner's idle list, its spare records, or
                                       its dials waiting for addresses */
    rp__link all_link;              /* the owner's records in use */
    struct rp__req *for_req;       /* the request a dial or check serves */
    rp__op watch_op;                /* zero-length recv: idle watch or check */
    rp__op dial_op;
    struct __kernel_timespec dial_ts;
    rp__addrs *dial_addrs;          /* held while the dial tries them */
    unsigned dial_next;             /* the next of them to try */
    uint32_t dial_timeout_ms;
    bool tcp_nodelay, tcp_keepalive; /* set on a TCP socket before its connect */
    bool zc_copied;    /* the kernel reported copying a zero-copy send: plain ones */
    bool zc_off;       /* the kernel refused one: plain sends only */
    rp__conn_io send, recv;
    /* The protocol layer above (redis.c): its state, freed when the
     * connection is released, and how many replies it still expects (put
     * removes a connection that has any; the record outlives them). */
    void *ext;
    void (*ext_free)(void *ext);
    unsigned ext_pending;
    struct rp__frames *frames; /* framed receives' buffer (framing.c), or NULL */
    void *user_data; /* rp_conn_set_data */
    void (*user_free)(void *data); /* rp_conn_set_data_full: once, when released */
    /* The library's own record above the protocol (the client cache's
     * tracking, cache.c): the caller's slot stays the caller's. Freed
     * with lib_free when released, after the caller's. */
    void *lib_data;
    void (*lib_free)(void *data);
    /* TLS (tls.c): the owner's context, set before a dial, and the
     * session, from the dial until the record is released. */
    struct rp__tls_ctx *tls_ctx;
    struct rp__tls *tls;
};

/* Bytes a holder may have left on the socket for the next one. */
enum {
    RP__UNREAD_NONE,  /* its last recv left nothing, and nothing was sent since */
    RP__UNREAD_MAYBE, /* sent since (a reply may have come), or a recv that
                         filled its buffer where the kernel does not say */
    RP__UNREAD_YES,   /* the kernel said bytes (or FIN) followed the last recv */
};

/* The receive buffer of framed receives (framing.c): whether it holds
 * bytes nobody was handed yet, and freeing it with the record. */
typedef struct rp__frames rp__frames;
bool rp__frames_buffered(const rp__frames *frames);
void rp__frames_free(rp__frames *frames);

/* Prepares a record (new or reused) for a connection owned by owner. */
void rp__conn_init(rp_conn *conn, rp_loop *loop, void *owner, const rp__conn_events *events);
/* Opens a non-blocking socket and connects it to the first of addrs that
 * takes it, each connect bounded by timeout_ms; events->dialed reports the
 * outcome. < 0: nothing started. */
int rp__conn_dial(rp_conn *conn, rp__addrs *addrs, uint32_t timeout_ms);
/* A zero-length recv: with check, it answers at once (-EAGAIN: healthy);
 * without, it stays pending until FIN, RST or stray bytes (an idle watch
 * that needs no buffer). events->watched reports it. */
void rp__conn_watch(rp_conn *conn, bool check);
/* Cancels what is in flight and closes the socket; the owner hears
 * events->released once nothing refers to the record. */
void rp__conn_close(rp_conn *conn);
/* Called after anything that may have been the last reference to a
 * closed record (an op's callback, a reply): releases it if drained. */
void rp__conn_op_finished(rp_conn *conn);

static inline bool rp__conn_ops_pending(const rp_conn *conn)
{
    return conn->watch_op.pending || conn->dial_op.pending || conn->send.op.pending || conn->send.zc_owed ||
           conn->recv.op.pending;
}

/* Its send wrote every byte and waits only for the kernel to give a
 * zero-copy part's memory back: on a network the peer's reply can come
 * first, as the notification follows the peer's acknowledgement. Nothing
 * is in flight; the send's callback runs with the notification. Not once
 * the send failed or timed out (zc_res): it was let go, and ends. */
static inline bool rp__conn_settling(const rp_conn *conn) { return conn->send.zc_ended && conn->send.zc_res > 0; }

/* I/O or replies still outstanding, a zero-copy send's notification
 * aside (the protocol layer's idle watch is neither). */
static inline bool rp__conn_io_owed(const rp_conn *conn)
{
    return conn->watch_op.pending || conn->dial_op.pending || conn->send.op.pending ||
           (conn->recv.op.pending && !conn->recv_watch) || conn->ext_pending;
}

/* A caller's put must not reuse it now: I/O owed, or memory the kernel
 * still reads (a settling send's connection is parked: pool.c). */
static inline bool rp__conn_busy(const rp_conn *conn) { return rp__conn_io_owed(conn) || conn->send.zc_owed; }

/* The protocol layer found the connection unusable: marks it broken and
 * tells the owner (an idle connection is removed at once). */
void rp__conn_report_broken(rp_conn *conn);

/* The get's callback is about to run: the connection has its holder. */
static inline void rp__conn_claim(rp_conn *conn)
{
    if (conn->state == RP__CONN_HANDING_OUT)
        conn->state = RP__CONN_IN_USE;
}

/* I/O is allowed while a caller holds it and while on_connect sets it up. */
static inline bool rp__conn_usable(const rp_conn *conn)
{
    return conn->state == RP__CONN_IN_USE || conn->state == RP__CONN_SETUP;
}

/* rp_conn_send / rp_conn_recv with an explicit timeout (0 = none). Unlike
 * them it also starts I/O on an idle connection (a protocol layer's watch). */
int rp__conn_start_io(rp_conn *conn, bool is_send, void *buf, size_t len, uint32_t timeout_ms, rp_io_cb cb, void *data);
/* A vectored send of iov (copied; the memory it points to must live until
 * the callback), otherwise as rp__conn_start_io. */
int rp__conn_start_sendv(rp_conn *conn, const struct iovec *iov, int iovcnt, uint32_t timeout_ms, rp_io_cb cb,
                         void *data);
/* A recv that takes its buffer from the loop's ring (rp__loop_recv_ring)
 * when bytes arrive, at most cap of them: the callback
 * finds them at conn->recv.buf, valid until it returns. A ring found empty
 * is counted and the recv reads into a buffer of its own instead. */
int rp__conn_start_recv_select(rp_conn *conn, rp__recv_ring *ring, size_t cap, uint32_t timeout_ms, rp_io_cb cb, void *data);
/* A recv of a request/response round trip: linked to the connection's
 * send when that is the SQE queued just before it, so that the send's
 * success posts no completion and the loop wakes once per round trip.
 * The send's callback then runs just before the recv's. */
int rp__conn_recv_reply(rp_conn *conn, void *buf, size_t cap, rp_io_cb cb, void *data);
/* Bounds the wait for a settling send's notification (rp__conn_settling)
 * by deadline_ns when its write timeout set none: past it the send is
 * let go as one whose write timeout passed. */
void rp__conn_settle_deadline(rp_conn *conn, uint64_t deadline_ns);
/* Bounds the recv in flight by an absolute deadline (0: none), and says
 * whether it keeps rp_loop_run(RP_RUN_DEFAULT) running. */
void rp__conn_recv_deadline(rp_conn *conn, uint64_t deadline_ns, bool keeps_loop_alive);

#endif
