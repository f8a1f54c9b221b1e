/* Redis on a connection: commands pipelined in FIFO order, written in
 * RESP by the send batch (send_batch.c) and answered through hiredis's
 * reader.
 *
 * Commands issued before the loop next submits are written into one batch
 * and go out in one send; until then any of them can be taken out again
 * (a cancel), and its bytes are never sent. A connection has two batches:
 * the one being written, and the one its send in flight owns; they change
 * places when the next send starts. What a batch holds, and which
 * arguments it sends by reference, is send_batch.c's.
 *
 * Once a command has been sent, a recv stays armed for the life of the
 * connection: while replies are owed it is bounded by the oldest
 * command's deadline (read_timeout_ms from that command's send to the
 * last byte of its reply, however the reply trickles in); while nothing
 * is owed it is the idle watch, so bytes the server
 * sends unasked fail the connection then, and are never taken for the next
 * command's reply. One rule (match_reply) gives every reply its owner, for
 * plain commands and a subscriber's alike: only a command whose bytes were
 * sent before the read, in order; a subscriber's messages while the server
 * counts a subscription of their kind. A reply nobody is owed, or one begun
 * when nothing more is owed, is stray. An error (EOF, reset, timeout, a
 * protocol error, a reply over the size limit) fails every command still
 * owed, each exactly once, from the loop (never inside a call), and is
 * sticky.
 *
 * The recv takes its buffer from the loop's provided buffer ring when its
 * bytes arrive (recv_ring.c), and gives it back as soon as hiredis's
 * reader has copied them: a connection waiting for a reply, or idle,
 * holds no receive buffer. Without a ring (disabled, an older kernel, or
 * TLS, which decrypts into the recv's buffer) it reads into one of its own
 * that follows the traffic, much as Netty's adaptive one does: a small
 * one; the largest after a read fills it; half as large after two reads in
 * a row that would have fit in a quarter (the gap keeps it from swinging
 * between two sizes); the small one again once nothing is owed. Either
 * way the reader's buffer is emptied once nothing is owed. The body of a
 * large bulk string skips both: once its header is in, it is read
 * straight into the reader's, grown once to its size, and its reply
 * takes that buffer rather than a copy (reply.c). After the callback the
 * buffer goes back to the reader, whose room then takes the next read
 * (up to the largest read's size) until a short read of small replies
 * lets it go: back-to-back big replies are neither copied nor allocated
 * afresh. */
#include "commands.h"
#include "conn.h"
#include "redis.h"
#include "reply.h"
#include "send_batch.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

/* Measured with rp-bench: 1000 idle connections cost 9.9 MB of peak RSS
 * with 4 KiB (7.8 with 2 KiB, 21.7 with 16 KiB); 100 KB values cost the
 * least client CPU per request read 64 KiB at a time (128 KiB: 4% more,
 * 32 KiB: 33% more). Growing in one step rather than by doubling: the
 * steps each connection left free in the heap added 15% to the peak RSS
 * of 1000 connections reading 100 KB values. */
#define EARLY_FLUSH_MIN 16 /* commands: fewer leave with the pass's submit */
#define RECV_BUFFER_MIN (4 * 1024)
#define RECV_BUFFER_MAX (64 * 1024)
#define DIRECT_READ_MIN RP__BULK_IN_PLACE /* a bulk body this large is read in place */
#define DEFAULT_MAX_REPLY_BYTES (512ull * 1024 * 1024)

/* Subscriptions as the server counts them: its confirmations carry the
 * number of channels and patterns together, or of shard channels. */
enum { SUB_CHANNELS, SUB_PATTERNS, SUB_SHARD, SUB_KINDS };

typedef struct pending_cmd {
    rp_conn_reply_cb cb;  /* NULL: a subscriber's command, answered to push_cb */
    void *data;
    uint64_t start;       /* stream offset of its first byte */
    uint64_t deadline_ns; /* its whole reply is due by then; 0: none (yet) */
    uint32_t timeout_ms;  /* from its send; 0: none */
    uint32_t replies;     /* a subscriber's: one per channel it names; 0 (it
                             names none): one per subscription of `kind` at
                             its turn, or one if there is none */
    uint8_t kind;
} pending_cmd;

/* Where the replies stand: the commands before `next` in the ring have
 * had all theirs, the one at `next` has had `got` of its `owed`, and
 * `subs` are the server's counts as its confirmations so far tell them. */
typedef struct match_state {
    unsigned next, got, owed;
    unsigned subs[SUB_KINDS];
} match_state;

typedef struct rp__redis {
    rp_conn *conn;
    redisReader *reader;
    rp__reply_limit limit;
    rp__send_batch out;     /* encoded, waiting for the next flush */
    rp__send_batch sending; /* owned by the send in flight */
    pending_cmd *cmds;   /* ring of commands owed replies, oldest at head */
    unsigned head, count, cap;
    unsigned undated;    /* the newest commands, not yet handed to a send */
    uint64_t queued_bytes, written_bytes; /* stream offsets */
    rp__deferred flush_item;
    bool sending_now, receiving;
    bool direct;         /* the recv posted reads into the reader's buffer */
    bool into_room;      /* that is its spare room, not a bulk body */
    bool failing_unsent; /* while fail_all calls back for a command never sent */
    int error;
    size_t reply_bytes;  /* of the reply being read, that the reader consumed */
    rp_push_cb push_cb;  /* subscriber mode */
    void *push_data;
    bool background;     /* the subscription is the library's own */
    match_state match;   /* next is 0: answered commands leave the ring */
    char *rbuf;          /* without the ring: small, or grown for the traffic */
    size_t rbuf_size;
    bool ring_recv;      /* the recv posted takes its buffer from the ring */
    rp__recv_ring *ring; /* the loop's, or NULL */
    unsigned short_reads; /* in a row, each of which would have fit in a quarter */
    size_t *bytes_total; /* a client's count of its buffers' bytes */
    size_t bytes_counted; /* this connection's part of it */
} rp__redis;

/* ----------------------------------------------------------- spare parts */

/* What a connection needs only while replies are owed, its reader and its
 * ring of commands, goes to the loop's spares once nothing is owed and is
 * taken back for the next command: an idle connection holds neither, and
 * a connection that goes idle between every round trip costs no
 * allocation for it. A reader goes back only between replies, with no
 * error and its buffer released; a ring only at its first size. That
 * size is 4: a busy connection mostly owes one reply (16 cost 576 KB more
 * at 1000 connections); a deeper pipeline grows it by doubling. */
#define FIRST_CMDS 4
#define SPARES 64

typedef struct spares {
    redisReader *readers[SPARES];
    pending_cmd *rings[SPARES];
    unsigned nreaders, nrings;
} spares;

static void spares_free(void *p)
{
    spares *sp = p;
    if (!sp)
        return;
    for (unsigned i = 0; i < sp->nreaders; i++)
        redisReaderFree(sp->readers[i]);
    for (unsigned i = 0; i < sp->nrings; i++)
        rp__free(sp->rings[i]);
    rp__free(sp);
}

static spares *spares_of(rp_loop *loop)
{
    void **slot = rp__loop_spares(loop, spares_free);
    if (!*slot)
        *slot = rp__calloc(1, sizeof(spares));
    return *slot;
}

static redisReader *reader_take(rp__redis *redis)
{
    spares *sp = spares_of(redis->conn->loop);
    redisReader *reader = sp && sp->nreaders ? sp->readers[--sp->nreaders] : rp__reader_new(&redis->limit);
    if (!reader)
        return NULL;
    /* hiredis copies privdata into its first task when a reply may begin,
     * and a spare may have one set up (with no byte of it read) for the
     * connection that used it last. */
    reader->privdata = &redis->limit;
    redis->limit.reader = reader;
    for (size_t i = 0; i < sizeof reader->rstack / sizeof reader->rstack[0]; i++)
        reader->rstack[i].privdata = &redis->limit;
    return reader;
}

static void reader_give_back(rp__redis *redis)
{
    redisReader *reader = redis->reader;
    if (!reader || rp__reader_in_reply(reader) || reader->err)
        return;
    redis->reader = NULL;
    redis->limit.reader = NULL;
    rp__reader_release_buffer(reader);
    spares *sp = spares_of(redis->conn->loop);
    if (sp && sp->nreaders < SPARES)
        sp->readers[sp->nreaders++] = reader;
    else
        redisReaderFree(reader);
}

static pending_cmd *ring_take(rp__redis *redis)
{
    spares *sp = spares_of(redis->conn->loop);
    return sp && sp->nrings ? sp->rings[--sp->nrings] : rp__malloc(FIRST_CMDS * sizeof(pending_cmd));
}

static void ring_give_back(rp__redis *redis)
{
    if (redis->count || !redis->cmds)
        return;
    spares *sp = spares_of(redis->conn->loop);
    if (redis->cap == FIRST_CMDS && sp && sp->nrings < SPARES)
        sp->rings[sp->nrings++] = redis->cmds;
    else
        rp__free(redis->cmds);
    redis->cmds = NULL;
    redis->head = redis->cap = 0;
}

/* -------------------------------------------------------- receive buffer */

/* Keeps the client's count of its buffers' bytes up to date. */
static void count_buffers(rp__redis *redis)
{
    size_t bytes = redis->rbuf_size + (redis->reader ? rp__reader_buffer_bytes(redis->reader) : 0) +
                   rp__batch_held(&redis->out) + rp__batch_held(&redis->sending);
    if (redis->bytes_total)
        *redis->bytes_total = *redis->bytes_total - redis->bytes_counted + bytes;
    redis->bytes_counted = bytes;
}

/* Receives go through the loop's buffer ring where there is one; TLS
 * decrypts into a buffer of the connection's own (tls.c). */
static rp__recv_ring *ring_of(const rp__redis *redis)
{
    return redis->conn->tls ? NULL : redis->ring;
}

/* Only while no recv is posted; size 0 frees it. A buffer that cannot be
 * had leaves the one in use (or none: then the caller fails). */
static void resize_recv_buffer(rp__redis *redis, size_t size)
{
    char *buf = size ? rp__malloc(size) : NULL;
    if (size && !buf)
        return;
    rp__free(redis->rbuf);
    redis->rbuf = buf;
    redis->rbuf_size = size;
    redis->short_reads = 0;
}

/* A read of n bytes into the connection's own buffer, fed to the reader
 * already: the buffer is free. */
static void adapt_recv_buffer(rp__redis *redis, size_t n)
{
    bool is_short = n <= redis->rbuf_size / 4 && redis->rbuf_size > RECV_BUFFER_MIN;
    redis->short_reads = is_short ? redis->short_reads + 1 : 0;
    if (n == redis->rbuf_size && n < RECV_BUFFER_MAX)
        resize_recv_buffer(redis, RECV_BUFFER_MAX);
    else if (redis->short_reads >= 2)
        resize_recv_buffer(redis, redis->rbuf_size / 2);
}

/* Nothing is owed: the recv now posted is the idle watch, which needs no
 * buffer from the ring and the small one without, and no reply is left
 * to read. */
static void release_buffers(rp__redis *redis)
{
    size_t keep = ring_of(redis) ? 0 : RECV_BUFFER_MIN;
    if (redis->rbuf_size != keep)
        resize_recv_buffer(redis, keep);
    reader_give_back(redis);
    ring_give_back(redis);
    count_buffers(redis);
}

static void redis_free(void *ext)
{
    rp__redis *redis = ext;
    if (redis->bytes_total)
        *redis->bytes_total -= redis->bytes_counted;
    rp__free(redis->rbuf);
    reader_give_back(redis);
    if (redis->reader)
        redisReaderFree(redis->reader);
    redis->count = 0;
    ring_give_back(redis);
    rp__batch_free(&redis->out);
    rp__batch_free(&redis->sending);
    rp__free(redis);
}

static rp__redis *redis_of(rp_conn *conn)
{
    if (conn->ext)
        return conn->ext;
    rp__redis *redis = rp__calloc(1, sizeof *redis);
    if (!redis)
        return NULL;
    redis->limit.max_bytes = DEFAULT_MAX_REPLY_BYTES;
    redis->ring = rp__loop_recv_ring(conn->loop); /* lives as long as the loop's connections */
    count_buffers(redis);
    redis->conn = conn;
    conn->ext = redis;
    conn->ext_free = redis_free;
    return redis;
}

/* Replies owed, a subscription, or a flush queued: each holds the record. */
static void update_pending(rp__redis *redis)
{
    redis->conn->ext_pending = redis->count + (redis->push_cb ? 1u : 0u) + (redis->flush_item.queued ? 1u : 0u);
}

/* --------------------------------------------------------------- failure */

/* Every command owed a reply fails once; the caller frees a closed record
 * afterwards (rp__conn_op_finished). The ring is detached first, so
 * commands issued from these callbacks meet the sticky error instead.
 * The owner hears of it too: an idle connection is removed at once. */
static void fail_all(rp__redis *redis, int error)
{
    rp_conn *conn = redis->conn;
    if (!redis->error)
        redis->error = error;
    pending_cmd *cmds = redis->cmds;
    unsigned head = redis->head, count = redis->count, cap = redis->cap;
    rp_push_cb push_cb = redis->push_cb;
    redis->cmds = NULL;
    redis->head = redis->count = redis->cap = redis->undated = 0;
    redis->push_cb = NULL;
    redis->match = (match_state){0};
    bool held = rp__batch_held(&redis->out);
    rp__batch_clear(&redis->out);
    if (held)
        count_buffers(redis);
    update_pending(redis);
    /* A send still in flight may have handed any of its bytes over. */
    uint64_t maybe_written = redis->written_bytes + (redis->sending_now ? rp__batch_len(&redis->sending) : 0);
    conn->in_callback++;
    rp__conn_report_broken(conn);
    for (unsigned i = 0; i < count; i++) {
        pending_cmd *cmd = &cmds[(head + i) % cap];
        redis->failing_unsent = cmd->start >= maybe_written;
        if (cmd->cb) /* a subscriber's commands end with its last call */
            cmd->cb(conn, NULL, error, cmd->data);
    }
    redis->failing_unsent = false;
    if (push_cb)
        push_cb(conn, NULL, error, redis->push_data);
    conn->in_callback--;
    rp__free(cmds);
}

bool rp__redis_failed_unsent(const rp_conn *conn)
{
    const rp__redis *redis = conn->ext;
    return redis && redis->failing_unsent;
}

/* ----------------------------------------------------------------- flush */

static void recv_done(rp_conn *conn, ssize_t result, void *data);
static void flush(rp__redis *redis);
static void flush_item_run(rp__deferred *item);

/* I/O that cannot start fails the commands owed from the loop, later:
 * this may be inside the call that queued one (the early flush), where
 * no callback may run. The error is sticky at once. On a connection its
 * holder removed, they end with -ECANCELED, as the header says. */
static void start_failed(rp__redis *redis, int error)
{
    if (!redis->error)
        redis->error = redis->conn->state == RP__CONN_CLOSED ? -ECANCELED : error;
    if (!redis->flush_item.queued) {
        rp__loop_before_submit(redis->conn->loop, &redis->flush_item, flush_item_run);
        update_pending(redis);
    }
}

/* The recv's deadline is the oldest owed command's; with nothing owed it
 * is the idle watch, which has none and does not keep the loop running,
 * nor does a subscription of the library's own. */
static void bound_recv(rp__redis *redis)
{
    rp_conn *conn = redis->conn;
    conn->recv_watch = !conn->ext_pending;
    bool holds = redis->count || redis->flush_item.queued || (redis->push_cb && !redis->background);
    rp__conn_recv_deadline(conn, redis->count ? redis->cmds[redis->head].deadline_ns : 0, holds);
}

void rp__redis_in_background(rp_conn *conn)
{
    rp__redis *redis = conn->ext;
    redis->background = true;
    if (redis->receiving)
        bound_recv(redis);
}

/* Of the reply in progress: what the reader consumed and what it holds
 * unparsed (neither is larger than the limit, which is a size_t). */
static size_t reply_bytes_read(const rp__redis *redis)
{
    return redis->reply_bytes + (redis->reader ? redis->reader->len - redis->reader->pos : 0);
}

/* Where the next read goes, and at most how much (never past limit): for
 * the body of a bulk string of DIRECT_READ_MIN or more, the reader's own
 * buffer, grown once to hold it all, so the body is read in as few reads
 * as the socket allows and never copied (its reply then takes the
 * buffer); the reader's buffer too while it has room for the largest
 * read; else a buffer of the loop's ring,
 * picked when bytes arrive (NULL); else the connection's own. -ENOMEM if
 * that cannot be had. */
static int recv_target(rp__redis *redis, size_t limit, char **buf, size_t *cap)
{
    redisReader *reader = redis->reader;
    size_t missing = reader ? rp__reader_bulk_missing(reader) : 0, room = 0;
    redis->into_room = false;
    if (missing >= DIRECT_READ_MIN) {
        limit = RP__MIN(missing, limit);
        redis->direct = rp__reader_reserve(reader, RP__MIN(limit, (size_t)INT_MAX)) == 0;
    } else {
        /* A reader with room for the largest read (the buffer a big reply
         * gave back, reply.c) takes the next one too, of that size: the
         * feed copies nothing, the next big body starts in place, and few
         * bytes follow it (more would be copied out when its reply takes
         * the buffer, and hiredis moves what it has not parsed). */
        if (reader && reader->buf) /* hiredis frees it on an error */
            rp__reader_tail(reader, &room);
        redis->direct = redis->into_room = room >= RECV_BUFFER_MAX;
        limit = RP__MIN(limit, RECV_BUFFER_MAX);
    }
    redis->ring_recv = !redis->direct && ring_of(redis);
    if (redis->direct) {
        *buf = rp__reader_tail(reader, cap);
        *cap = RP__MIN(RP__MIN(*cap, limit), (size_t)INT_MAX);
    } else if (redis->ring_recv) {
        *buf = NULL;
        *cap = RP__MIN(limit, RECV_BUFFER_MAX);
    } else {
        if (!redis->rbuf)
            resize_recv_buffer(redis, RECV_BUFFER_MIN);
        if (!redis->rbuf)
            return -ENOMEM;
        *buf = redis->rbuf;
        *cap = RP__MIN(limit, redis->rbuf_size);
    }
    return 0;
}

/* Posts the recv if none is posted, then bounds it for what is owed now. */
static void arm_recv(rp__redis *redis)
{
    if (redis->error)
        return;
    if (!redis->receiving) {
        if (!redis->conn->ext_pending)
            release_buffers(redis);
        /* Never read more than one byte past the size limit of the reply
         * in progress, so one that exceeds it cannot also complete within
         * the same read (room + 1 wraps for a limit of SIZE_MAX). */
        size_t max = redis->limit.max_bytes, read = reply_bytes_read(redis);
        size_t room = read < max ? max - read : 0;
        size_t cap;
        char *buf;
        int rc = recv_target(redis, room < SIZE_MAX ? room + 1 : room, &buf, &cap);
        if (rc == 0 && redis->ring_recv)
            rc = rp__conn_start_recv_select(redis->conn, redis->ring, cap, 0, recv_done, redis);
        else if (rc == 0)
            rc = rp__conn_start_io(redis->conn, false, buf, cap, 0, recv_done, redis);
        if (rc < 0) {
            start_failed(redis, rc);
            return;
        }
        redis->receiving = true;
    }
    bound_recv(redis);
}

/* The commands in this send owe their replies within read_timeout_ms of
 * now (a fresh clock: callbacks before it may have run long). */
static void date_commands(rp__redis *redis)
{
    uint64_t now = rp__loop_now_fresh(redis->conn->loop);
    for (unsigned i = redis->count - redis->undated; i < redis->count; i++) {
        pending_cmd *cmd = &redis->cmds[(redis->head + i) % redis->cap];
        cmd->deadline_ns = cmd->timeout_ms ? now + cmd->timeout_ms * RP__NS_PER_MS : 0;
    }
    redis->undated = 0;
}

/* The send is over, its zero-copy notification included (conn.c): the
 * memory it sent from is free, and a large text buffer goes. */
static void send_done(rp_conn *conn, ssize_t result, void *data)
{
    rp__redis *redis = data;
    redis->sending_now = false;
    bool held = rp__batch_held(&redis->sending);
    rp__batch_sent(&redis->sending);
    if (held)
        count_buffers(redis);
    redis->written_bytes += result < 0 ? conn->send.done : (size_t)result;
    if (result < 0)
        fail_all(redis, (int)result);
    else if (rp__batch_len(&redis->out) && !redis->flush_item.queued)
        flush(redis);
}

/* A batch with pieces goes by one vectored send (rp__batch_iov), else
 * its text by a plain one. */
static int start_send(rp__redis *redis, const rp__send_batch *b)
{
    rp_conn *conn = redis->conn;
    if (!b->npieces)
        return rp__conn_start_io(conn, true, b->text.data, b->text.len, conn->write_timeout_ms, send_done, redis);
    struct iovec iov[RP__BATCH_IOV_MAX];
    int n = rp__batch_iov(b, iov);
    return rp__conn_start_sendv(conn, iov, n, conn->write_timeout_ms, send_done, redis);
}

static void flush(rp__redis *redis)
{
    if (redis->error || redis->sending_now || !rp__batch_len(&redis->out))
        return;
    int rc = start_send(redis, &redis->out);
    if (rc < 0) {
        start_failed(redis, rc); /* out keeps the unsent commands' bytes */
        return;
    }
    rp__send_batch next = redis->sending;
    redis->sending = redis->out;
    redis->out = next;
    redis->sending_now = true;
    date_commands(redis);
    arm_recv(redis);
}

static void flush_item_run(rp__deferred *item)
{
    rp__redis *redis = RP__CONTAINER_OF(item, rp__redis, flush_item);
    update_pending(redis);
    if (redis->error)
        fail_all(redis, redis->error); /* from start_failed */
    else if (!rp__conn_usable(redis->conn))
        fail_all(redis, -ECANCELED); /* removed before it was sent */
    else
        flush(redis);
    rp__conn_op_finished(redis->conn);
}

static void schedule_flush(rp__redis *redis)
{
    if (!redis->flush_item.queued && !redis->sending_now) {
        rp__loop_before_submit(redis->conn->loop, &redis->flush_item, flush_item_run);
        update_pending(redis);
    }
}

/* ----------------------------------------------------------------- reader */

static pending_cmd *ring_at(const rp__redis *redis, unsigned i)
{
    return &redis->cmds[(redis->head + i) % redis->cap];
}

static bool text_is(const redisReply *reply, const char *word)
{
    size_t len = strlen(word);
    return rp__reply_is_text(reply) && reply->len == len && !memcmp(reply->str, word, len);
}

/* The kind of subscription a pushed message is for; -1 if it is none. */
static int message_kind(const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return -1;
    if (reply->elements == 3 && text_is(reply->element[0], "message"))
        return SUB_CHANNELS;
    if (reply->elements == 4 && text_is(reply->element[0], "pmessage"))
        return SUB_PATTERNS;
    if (reply->elements == 3 && text_is(reply->element[0], "smessage"))
        return SUB_SHARD;
    return -1;
}

/* A confirmation moves the count of its kind by one in its direction, or
 * leaves it (a channel subscribed twice, or not at all). false: one that
 * does not follow from the counts, so the stream is out of step. Other
 * replies (a pong, an error) count nothing. */
static bool count_confirmation(unsigned subs[SUB_KINDS], const redisReply *reply)
{
    static const char *const words[2][SUB_KINDS] = {{"subscribe", "psubscribe", "ssubscribe"},
                                                    {"unsubscribe", "punsubscribe", "sunsubscribe"}};
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || reply->element[2]->type != REDIS_REPLY_INTEGER)
        return true;
    for (int leaving = 0; leaving < 2; leaving++) {
        for (int kind = 0; kind < SUB_KINDS; kind++) {
            if (!text_is(reply->element[0], words[leaving][kind]))
                continue;
            long long counted = kind == SUB_SHARD ? subs[SUB_SHARD] : (long long)subs[SUB_CHANNELS] + subs[SUB_PATTERNS];
            long long now = reply->element[2]->integer; /* any value: compared, never subtracted */
            if (now == counted)
                return true;
            if (now != counted + (leaving ? -1 : 1) || (leaving && !subs[kind]))
                return false;
            subs[kind] = leaving ? subs[kind] - 1 : subs[kind] + 1;
            return true;
        }
    }
    return true;
}

typedef enum { TO_NOBODY, TO_COMMAND, TO_SUBSCRIBER } reply_owner;

/* The one rule that gives a reply its owner. A message goes to the
 * subscriber while the server counts a subscription of its kind. Any other
 * reply answers the oldest command not yet fully answered, if that one's
 * bytes were sent (it is among the first `sent`): otherwise nobody is
 * owed it. A subscriber's command owes its replies to the subscriber; an
 * error is the only one a refused command gets. Advances m past what the
 * reply answers. */
static reply_owner match_reply(const rp__redis *redis, match_state *m, unsigned sent, const redisReply *reply)
{
    int kind = message_kind(reply);
    if (kind >= 0 && m->subs[kind])
        return TO_SUBSCRIBER;
    if (m->next >= sent)
        return TO_NOBODY;
    const pending_cmd *cmd = ring_at(redis, m->next);
    if (cmd->cb) {
        m->next++;
        return TO_COMMAND;
    }
    if (m->got == 0) /* its turn: the counts are the server's when it ran */
        m->owed = cmd->replies ? cmd->replies : (m->subs[cmd->kind] ? m->subs[cmd->kind] : 1);
    if (kind >= 0 || !count_confirmation(m->subs, reply))
        return TO_NOBODY;
    if (++m->got == m->owed || reply->type == REDIS_REPLY_ERROR) {
        m->next++;
        m->got = 0;
    }
    return TO_SUBSCRIBER;
}

static bool subscribed(const match_state *m)
{
    return m->subs[SUB_CHANNELS] || m->subs[SUB_PATTERNS] || m->subs[SUB_SHARD];
}

/* Subscriber mode ends when the server counts no subscription and no
 * command of the subscriber is owed or queued. It is decided after the
 * callback, so one that subscribes again stays subscribed and gets no last
 * call; until then a command is refused (-EBUSY). */
static void deliver_push(rp__redis *redis, const redisReply *reply)
{
    rp_conn *conn = redis->conn;
    rp_push_cb push_cb = redis->push_cb;
    void *push_data = redis->push_data;
    push_cb(conn, reply, 0, push_data);
    if (redis->push_cb != push_cb || redis->count || subscribed(&redis->match) || conn->state == RP__CONN_CLOSED)
        return;
    redis->push_cb = NULL;
    update_pending(redis);
    push_cb(conn, NULL, 0, push_data);
}

/* Hands a reply to the owner match_reply names; a command answered in
 * full leaves the ring before its callback runs. */
static void dispatch_reply(rp__redis *redis, const redisReply *reply, unsigned *sent)
{
    reply_owner owner = match_reply(redis, &redis->match, *sent, reply);
    pending_cmd cmd = {0};
    if (redis->match.next) {
        cmd = *ring_at(redis, 0);
        redis->head = (redis->head + 1) % redis->cap;
        redis->count--;
        redis->match.next = 0;
        (*sent)--;
        update_pending(redis);
    }
    if (owner == TO_COMMAND)
        cmd.cb(redis->conn, reply, 0, cmd.data);
    else
        deliver_push(redis, reply);
}

/* Parses every complete reply and finds each one's owner first: a reply
 * nobody is owed, or a reply begun when nothing more is owed (an array's
 * header and whole elements, a lone type byte), means the stream is out of
 * step, and the connection is marked bad before any callback can put it
 * back. Only commands sent before this read can be answered by it: those
 * its callbacks queue (and an early flush sends) cannot. A callback that
 * removes the connection ends the commands after it with -ECANCELED. */
static int read_replies(rp__redis *redis)
{
    redisReply *stack_replies[32], **replies = stack_replies;
    size_t n = 0, cap = 32;
    int rc = 0;
    void *reply;
    size_t left = redis->reader->len - redis->reader->pos;
    while ((rc = redisReaderGetReply(redis->reader, &reply) == REDIS_OK ? 0 : -EPROTO) == 0) {
        /* Each reply's own size, against the limit, however it was split
         * into reads: the bytes each call consumed. */
        size_t now_left = redis->reader->len - redis->reader->pos;
        redis->reply_bytes += left - now_left;
        left = now_left;
        if (!reply)
            break;
        size_t size = redis->reply_bytes;
        redis->reply_bytes = 0;
        redis->limit.declared_bytes = 0; /* the next reply has the whole limit */
        if (size > redis->limit.max_bytes) {
            rp__reply_free(reply);
            rc = -EMSGSIZE;
            break;
        }
        if (n == cap) {
            redisReply **grown = rp__malloc(2 * cap * sizeof *grown);
            if (!grown) {
                rp__reply_free(reply);
                rc = -ENOMEM;
                break;
            }
            memcpy(grown, replies, n * sizeof *grown);
            if (replies != stack_replies)
                rp__free(replies);
            replies = grown;
            cap *= 2;
        }
        replies[n++] = reply;
    }
    if (rc < 0 && redis->limit.exceeded)
        rc = -EMSGSIZE; /* an array declared longer than the limit allows */
    else if (rc < 0 && redis->reader->err == REDIS_ERR_OOM)
        rc = -ENOMEM;
    else if (rc == 0 && (rp__reader_declares_too_much(redis->reader, redis->limit.max_bytes) ||
                         reply_bytes_read(redis) > redis->limit.max_bytes))
        rc = -EMSGSIZE; /* the reply in progress is already too large */
    unsigned sent = redis->count - redis->undated;
    match_state m = redis->match;
    size_t owned = 0;
    while (owned < n && match_reply(redis, &m, sent, replies[owned]) != TO_NOBODY)
        owned++;
    bool owes_more = m.next < sent || subscribed(&m);
    bool stray = owned < n || (!owes_more && rp__reader_in_reply(redis->reader));
    if (stray || rc < 0)
        redis->conn->broken = true;
    for (size_t i = 0; i < n; i++) {
        if (i < owned && redis->conn->state != RP__CONN_CLOSED)
            dispatch_reply(redis, replies[i], &sent);
        /* The callbacks may have given the reader back (or failed it). */
        rp__reply_free_to(replies[i], redis->error || !redis->reader || redis->reader->err ? NULL : redis->reader);
    }
    if (replies != stack_replies)
        rp__free(replies);
    if (redis->conn->state == RP__CONN_CLOSED)
        return -ECANCELED;
    return stray ? -EPROTO : rc;
}

static void recv_done(rp_conn *conn, ssize_t result, void *data)
{
    rp__redis *redis = data;
    redis->receiving = false;
    if (result <= 0) {
        fail_all(redis, result == 0 ? RP_EEOF : (int)result);
        return;
    }
    if (redis->error)
        return;
    int rc = 0;
    /* The bytes are at conn->recv.buf: the connection's buffer, a piece of
     * the ring's, or the one it fell back on when the ring ran dry. */
    if (redis->direct)
        rp__reader_received(redis->reader, (size_t)result);
    else if (!redis->reader && !(redis->reader = reader_take(redis)))
        rc = -ENOMEM;
    else if (redisReaderFeed(redis->reader, conn->recv.buf, (size_t)result) != REDIS_OK)
        rc = -ENOMEM;
    else if (!redis->ring_recv)
        adapt_recv_buffer(redis, (size_t)result);
    count_buffers(redis);
    if (rc == 0)
        rc = read_replies(redis);
    /* Small replies now: a big buffer the reader kept for big ones goes,
     * as hiredis's own rule would have it go on its next feed. */
    if (rc == 0 && redis->into_room && (size_t)result < RECV_BUFFER_MAX / 4 && redis->reader &&
        !rp__reader_in_reply(redis->reader)) {
        rp__reader_release_buffer(redis->reader);
        count_buffers(redis);
    }
    if (rc < 0) {
        fail_all(redis, rc);
        return;
    }
    if (redis->reader)
        rp__reader_rewind(redis->reader);
    arm_recv(redis);
}

/* ------------------------------------------------------------ public API */

static int queue_command(rp__redis *redis, int argc, const char *const *argv, const size_t *argvlen,
                         rp__hold *hold)
{
    rp__send_batch *out = &redis->out;
    size_t before = rp__batch_len(out), cap = out->text.cap;
    unsigned npieces = out->npieces;
    int rc = rp__batch_encode(out, argc, argv, argvlen, hold);
    if (rc < 0)
        return rc;
    redis->queued_bytes += rp__batch_len(out) - before;
    if (out->npieces != npieces || out->text.cap != cap) /* rare: pieces, or a buffer that grew */
        count_buffers(redis);
    schedule_flush(redis);
    return 0;
}

static int check_args(rp_conn *conn, int argc, const char *const *argv)
{
    if (!conn || argc <= 0 || !argv)
        return -EINVAL;
    if (!rp__conn_usable(conn))
        return RP_ECLOSED;
    return 0;
}

static rp__redis *usable_redis(rp_conn *conn, int *rc)
{
    rp__redis *redis = redis_of(conn);
    if (!redis)
        *rc = -ENOMEM;
    else if (redis->error)
        *rc = redis->error;
    return *rc ? NULL : redis;
}

/* read_timeout_ms, plus the time a blocking command may block by its own
 * timeout (go-redis does the same); none for one that blocks for ever. */
static uint32_t reply_timeout_ms(const rp_conn *conn, int argc, const char *const *argv, const size_t *argvlen)
{
    uint32_t timeout = conn->read_timeout_ms;
    int64_t block = timeout ? rp__command_block_ms(argc, argv, argvlen) : -1;
    if (block < 0)
        return timeout;
    return block == 0 ? 0 : (uint32_t)RP__MIN((uint64_t)timeout + (uint64_t)block, UINT32_MAX);
}

/* The record goes in first, so it outlives the flush the command's bytes
 * schedule; both or neither. */
static int queue_owed(rp__redis *redis, pending_cmd cmd, int argc, const char *const *argv, const size_t *argvlen,
                      rp__hold *hold)
{
    if (redis->count == redis->cap) {
        if (redis->cap > UINT_MAX / 2)
            return -ENOMEM; /* the ring's size would wrap */
        unsigned cap = redis->cap ? redis->cap * 2 : FIRST_CMDS;
        pending_cmd *cmds = redis->cap ? rp__malloc(cap * sizeof *cmds) : ring_take(redis);
        if (!cmds)
            return -ENOMEM;
        for (unsigned i = 0; i < redis->count; i++)
            cmds[i] = *ring_at(redis, i);
        rp__free(redis->cmds);
        redis->cmds = cmds;
        redis->head = 0;
        redis->cap = cap;
    }
    cmd.start = redis->queued_bytes;
    *ring_at(redis, redis->count) = cmd;
    redis->count++;
    redis->undated++;
    update_pending(redis);
    int rc = queue_command(redis, argc, argv, argvlen, hold);
    if (rc < 0) {
        redis->count--;
        redis->undated--;
        update_pending(redis);
    }
    return rc;
}

/* Commands queued in a pass normally leave together at its end. When a
 * pass queues many on one connection (replies coming back to many callers,
 * each sending its next command), holding them all until the end leaves
 * the server idle while the rest are made, then the client idle while the
 * server works. Once the new batch is as large as what the server still
 * owes, it leaves at once, so the two overlap: measured at -c 50 with
 * auto-pipelining, 570k -> 800k requests/s, at one more enter per pass.
 * Like a submit forced by a full ring, it skips the look for stray bytes
 * before a send (reap_before_sending): this connection is busy receiving
 * replies in this very pass. */
static void flush_early_when_worth_it(rp__redis *redis)
{
    if (redis->undated < EARLY_FLUSH_MIN || redis->undated * 2 < redis->count || !redis->flush_item.queued ||
        redis->sending_now)
        return;
    rp__undefer(redis->conn->loop, &redis->flush_item);
    flush_item_run(&redis->flush_item);
    rp__loop_submit(redis->conn->loop);
}

int rp_conn_command(rp_conn *conn, rp_conn_reply_cb cb, void *data, int argc, const char *const *argv,
                    const size_t *argvlen)
{
    return rp__conn_command_held(conn, cb, data, argc, argv, argvlen, NULL);
}

int rp__conn_command_held(rp_conn *conn, rp_conn_reply_cb cb, void *data, int argc, const char *const *argv,
                          const size_t *argvlen, rp__hold *hold)
{
    int rc = cb ? check_args(conn, argc, argv) : -EINVAL;
    rp__redis *redis = rc ? NULL : usable_redis(conn, &rc);
    if (!redis)
        return rc;
    if (redis->push_cb)
        return -EBUSY; /* a subscriber takes only its own commands */
    pending_cmd cmd = {.cb = cb, .data = data, .timeout_ms = reply_timeout_ms(conn, argc, argv, argvlen)};
    if ((rc = queue_owed(redis, cmd, argc, argv, argvlen, hold)) == 0)
        flush_early_when_worth_it(redis);
    return rc;
}

/* Takes the unsent command at ring offset i out: its bytes leave the
 * buffer the next flush sends, and those queued after it move up. */
static void drop_unsent(rp__redis *redis, unsigned i)
{
    pending_cmd *cmd = ring_at(redis, i);
    uint64_t end = i + 1 < redis->count ? ring_at(redis, i + 1)->start : redis->queued_bytes;
    size_t len = (size_t)(end - cmd->start);
    rp__batch_cut(&redis->out, rp__batch_len(&redis->out) - (size_t)(redis->queued_bytes - cmd->start), len);
    count_buffers(redis);
    redis->queued_bytes -= len;
    for (; i + 1 < redis->count; i++) {
        *ring_at(redis, i) = *ring_at(redis, i + 1);
        ring_at(redis, i)->start -= len;
    }
    redis->count--;
    redis->undated--;
    if (!rp__batch_len(&redis->out) && !redis->error)
        rp__undefer(redis->conn->loop, &redis->flush_item);
    update_pending(redis);
}

/* The unsent commands are the newest `undated`, and their bytes are all
 * of `out`: any of them can be taken out, not only the newest. */
int rp__redis_forget(rp_conn *conn, void *data, rp_conn_reply_cb cb, void *cb_data)
{
    rp__redis *redis = conn->ext;
    unsigned i = 0;
    while (redis && i < redis->count && !(ring_at(redis, i)->cb && ring_at(redis, i)->data == data))
        i++;
    if (!redis || i == redis->count)
        return -ENOENT;
    if (i >= redis->count - redis->undated) {
        drop_unsent(redis, i);
        return 1;
    }
    ring_at(redis, i)->cb = cb;
    ring_at(redis, i)->data = cb_data;
    return 0;
}

static bool word_is(const char *arg, size_t len, const char *word)
{
    return len == strlen(word) && !strncasecmp(arg, word, len);
}

/* A subscriber's command and the replies it owes (match_reply): -EINVAL
 * for a command whose replies could not be told apart. */
static int subscriber_cmd(int argc, const char *const *argv, const size_t *argvlen, bool subscribing,
                          pending_cmd *cmd)
{
    static const char *const words[2][SUB_KINDS] = {{"UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"},
                                                    {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"}};
    size_t len = argvlen ? argvlen[0] : strlen(argv[0]);
    *cmd = (pending_cmd){.replies = 1};
    if (!subscribing && word_is(argv[0], len, "PING"))
        return 0;
    for (uint8_t kind = 0; kind < SUB_KINDS; kind++) {
        if (word_is(argv[0], len, words[subscribing][kind])) {
            cmd->kind = kind;
            /* SUBSCRIBE with no channel is refused with one error. */
            cmd->replies = argc > 1 ? (uint32_t)argc - 1 : subscribing;
            return 0;
        }
    }
    return -EINVAL;
}

int rp_conn_subscribe(rp_conn *conn, rp_push_cb cb, void *data, int argc, const char *const *argv,
                      const size_t *argvlen)
{
    int rc = cb ? check_args(conn, argc, argv) : -EINVAL;
    rp__redis *redis = rc ? NULL : usable_redis(conn, &rc);
    if (!redis)
        return rc;
    if (redis->push_cb ? redis->push_cb != cb || redis->push_data != data : redis->count != 0)
        return -EBUSY;
    pending_cmd cmd;
    if ((rc = subscriber_cmd(argc, argv, argvlen, true, &cmd)) < 0)
        return rc;
    rp_push_cb was = redis->push_cb;
    redis->push_cb = cb;
    redis->push_data = data;
    if ((rc = queue_owed(redis, cmd, argc, argv, argvlen, NULL)) < 0) {
        redis->push_cb = was;
        update_pending(redis);
    }
    return rc;
}

int rp_conn_unsubscribe(rp_conn *conn, int argc, const char *const *argv, const size_t *argvlen)
{
    int rc = check_args(conn, argc, argv);
    rp__redis *redis = rc ? NULL : usable_redis(conn, &rc);
    if (!redis)
        return rc;
    pending_cmd cmd;
    if (!redis->push_cb || (rc = subscriber_cmd(argc, argv, argvlen, false, &cmd)) < 0)
        return -EINVAL;
    return queue_owed(redis, cmd, argc, argv, argvlen, NULL);
}

bool rp__redis_receiving_big(const rp_conn *conn)
{
    const rp__redis *redis = conn->ext;
    return redis && redis->reader && rp__reader_bulk_missing(redis->reader) >= DIRECT_READ_MIN;
}

int rp__redis_count_buffers(rp_conn *conn, size_t *total)
{
    rp__redis *redis = redis_of(conn);
    if (!redis)
        return -ENOMEM;
    redis->bytes_total = total;
    *total += redis->bytes_counted;
    return 0;
}

int rp_conn_set_max_reply_bytes(rp_conn *conn, size_t max_bytes)
{
    if (!conn || !max_bytes)
        return -EINVAL;
    rp__redis *redis = redis_of(conn);
    if (!redis)
        return -ENOMEM;
    redis->limit.max_bytes = max_bytes;
    return 0;
}
