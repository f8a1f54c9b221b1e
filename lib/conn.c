/* Connections: send and recv through the loop, each bounded by its read or
 * write timeout (a send completes only once every byte is written), the
 * zero-length recv that watches an idle socket, and closing.
 *
 * A send of SEND_ZC_MIN bytes or more goes as a zero-copy send where the
 * loop allows it: each part's result comes with IORING_CQE_F_MORE, and the
 * kernel reads its memory until a second completion, the notification
 * (IORING_CQE_F_NOTIF). The send counts the notifications it owes (the
 * next part goes on meanwhile); its callback, which may free or reuse the
 * memory, runs only after the last one, and a closing connection's record
 * outlives them. The kernel gives the memory back once the peer has
 * acknowledged the bytes, so on a network the reply to a request can come
 * before its send's callback: the connection is healthy, and its owner
 * parks it when the holder puts it (RP__CONN_PARKED), to hear of it again
 * after that callback (events->settled). A send that fails or times out
 * while some are owed disconnects the socket (send_zc_let_go), or a peer
 * that stopped reading would hold the memory, and the callback, for ever.
 * Measured here (6.18, loopback TCP, 2 GB in sends of 16 KiB to 8 MiB):
 * every notification says the kernel copied the bytes, and zero-copy sends
 * cost 20-40% more CPU and ran 1.1-1.8x slower, so a connection whose
 * notification says so sends plainly from then on
 * (IORING_SEND_ZC_REPORT_USAGE); below 64 KiB even a real copy-free send
 * saves less than its page pinning and second completion cost. A refusal sends the part again
 * plainly: -EINVAL (a kernel without them) turns them off for the loop,
 * -EOPNOTSUPP (a unix socket) for the connection. Unix sockets are not
 * skipped up front: one refused send per connection is cheap, and it keeps
 * the fallback exercised on every kernel. */
#include "conn.h"
#include "tls.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static void sendv_advance(rp__sendv *sv, size_t sent);
static void send_zc_let_go(rp_conn *conn);

#define SEND_ZC_MIN (64 * 1024)
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3) /* Linux 6.2; liburing 2.3 lacks it */
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

/* A reply's recv queued right behind its request's send, in the same
 * submission, is linked to it, and the send then posts no completion when
 * it writes every byte: one wake-up per round trip instead of two (the
 * send's completion came first and woke the loop alone). MSG_WAITALL makes
 * a short write a failure; a failure posts the send's completion (what it
 * wrote, or the error) and drops the recv without one (a failed head
 * whose success would post nothing takes its links' completions with it):
 * send_done then arms the recv again or ends it. */
static void link_to_send(rp_conn *conn, struct io_uring_sqe *recv_sqe)
{
    struct io_uring_sqe *prev = rp__loop_prev_sqe(conn->loop, recv_sqe);
    if (!prev || prev->user_data != (uint64_t)(uintptr_t)&conn->send.op || conn->send.linked || conn->send.zc ||
        conn->send.len - conn->send.done > INT32_MAX)
        return;
    prev->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
    prev->msg_flags |= MSG_WAITALL;
    conn->send.linked = true;
}

/* A large send, on a connection and loop that use zero-copy sends. */
static bool send_zc_wanted(const rp_conn *conn, const rp__conn_io *io)
{
    if (io->len - io->done < SEND_ZC_MIN || conn->zc_off)
        return false;
    int mode = rp__loop_send_zc(conn->loop);
    return mode == RP__SEND_ZC_ALWAYS || (mode == RP__SEND_ZC_ON && !conn->zc_copied);
}

static void send_prep(rp_conn *conn, rp__conn_io *io, struct io_uring_sqe *sqe)
{
    io->zc = send_zc_wanted(conn, io);
    if (io->zc && io->sendv)
        io_uring_prep_sendmsg_zc(sqe, conn->fd, &io->sendv->msg, MSG_NOSIGNAL);
    else if (io->zc)
        io_uring_prep_send_zc(sqe, conn->fd, io->buf + io->done, io->len - io->done, MSG_NOSIGNAL, 0);
    else if (io->sendv)
        io_uring_prep_sendmsg(sqe, conn->fd, &io->sendv->msg, MSG_NOSIGNAL);
    else
        io_uring_prep_send(sqe, conn->fd, io->buf + io->done, io->len - io->done, MSG_NOSIGNAL);
    if (io->zc) {
        sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
        rp__loop_send_zc_count(conn->loop, false, false);
    }
    /* Its notification comes with the same user_data: the tag tells the
     * loop to look for one (rp__op's notified). */
    io->op.notifies = io->zc;
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)&io->op | (io->zc ? RP__OP_NOTIFIES : 0));
}

static void io_prep(rp_conn *conn, rp__conn_io *io, bool is_send, bool reply)
{
    if (conn->tls) {
        rp__tls_io_prep(conn, io, is_send); /* ciphertext, or a NOP */
        return;
    }
    struct io_uring_sqe *sqe = rp__loop_sqe(conn->loop);
    if (is_send) {
        send_prep(conn, io, sqe); /* sets the user_data */
        return;
    }
    io_uring_prep_recv(sqe, conn->fd, io->ring ? NULL : io->buf, io->len, 0);
    if (io->ring) {
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = RP__RECV_RING_BGID;
    }
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)&io->op);
    if (reply && conn->send.op.pending)
        link_to_send(conn, sqe);
}

static void io_submit(rp_conn *conn, rp__conn_io *io, bool is_send, bool reply)
{
    io_prep(conn, io, is_send, reply);
    rp__op_start(conn->loop, &io->op, io->timeout_ms != 0, true);
}

/* The next part of a transfer under way, bounded and keeping the loop
 * alive as the part before it was; -ETIMEDOUT if its deadline fired while
 * that part completed (the timer's cancel found nothing to cancel). */
static int io_continue(rp_conn *conn, rp__conn_io *io, bool is_send)
{
    if (io->expired)
        return -ETIMEDOUT;
    io_prep(conn, io, is_send, false);
    rp__op_start(conn->loop, &io->op, io->op.has_deadline, io->op.keeps_loop_alive);
    return 0;
}

static void io_finish(rp_conn *conn, rp__conn_io *io, ssize_t result)
{
    rp__timer_disarm(conn->loop, &io->deadline);
    /* Idle time counts from the last I/O, as go-redis's used-at does. */
    conn->used_ns = rp__loop_now(conn->loop);
    /* The connection was closed under the op: whatever the socket said
     * after shutdown, the op was cancelled. */
    if (conn->state == RP__CONN_CLOSED)
        result = -ECANCELED;
    if (result <= 0)
        conn->broken = true; /* error, timeout or end of stream */
    if (io->sendv) {
        rp__free(io->sendv);
        io->sendv = NULL;
    }
    /* The callback may put, remove or close the connection: it is freed
     * only after the callback returns. A parked connection's owner places
     * it once its send called back (the record outlives that too). */
    conn->in_callback++;
    io->cb(conn, result, io->data);
    if (io == &conn->send && conn->state == RP__CONN_PARKED)
        conn->events->settled(conn);
    conn->in_callback--;
    rp__conn_op_finished(conn);
}

/* A linked send failed or wrote only part: the recv it dropped is armed
 * again behind what goes on (the rest of the send links it anew), or
 * ends: with the send's error, since no reply can come to a request that
 * never went out whole, or as cancelled or timed out. */
static void recv_unlinked(rp_conn *conn, int send_error)
{
    rp__conn_io *io = &conn->recv;
    if (conn->state != RP__CONN_CLOSED && !io->expired && send_error == 0) {
        io_prep(conn, io, false, true);
        return;
    }
    /* Last: the recv's end may release the record. */
    rp__op_complete(conn->loop, &io->op, send_error && !io->expired ? send_error : -ECANCELED, 0);
}

/* A zero-copy part's result: IORING_CQE_F_MORE says its notification
 * will follow. A refusal sends the part again plainly (true: it is on its
 * way): -EINVAL (a kernel without them) turns them off for the loop,
 * -EOPNOTSUPP (a unix socket) for the connection. */
static bool send_zc_result(rp_conn *conn, rp__conn_io *io, rp__op *op)
{
    io->zc = false;
    if (op->cflags & IORING_CQE_F_MORE) { /* a refusal may have one too */
        io->zc_owed++;
        rp__loop_ref(conn->loop);
    }
    if (op->res != -EINVAL && op->res != -EOPNOTSUPP)
        return false;
    conn->zc_off = true;
    rp__loop_send_zc_refused(conn->loop, op->res == -EINVAL);
    return conn->state != RP__CONN_CLOSED && io_continue(conn, io, true) == 0;
}

/* The kernel gives a zero-copy send's memory back only once the peer has
 * taken its bytes (or they were copied). A send that ended in failure
 * will never need them: the connection is disconnected (connect with
 * AF_UNSPEC: the kernel drops what it had queued, with an RST), and the
 * notifications come now. The socket stays open, broken. */
static void send_zc_let_go(rp_conn *conn)
{
    if (conn->fd < 0)
        return;
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    connect(conn->fd, &unspec, sizeof unspec);
    rp__loop_count_syscalls(conn->loop, 1);
}

/* A send's end: its callback, unless the kernel still holds memory of a
 * zero-copy part; then after the last notification (send_notified). */
static void send_finish(rp_conn *conn, rp__conn_io *io, ssize_t result)
{
    if (io->zc_owed) {
        io->zc_ended = true;
        io->zc_res = result;
        if (result <= 0)
            send_zc_let_go(conn);
        return;
    }
    io_finish(conn, io, result);
}

/* A notification: the memory of one part is the caller's again; after
 * the last one, a send that ended meanwhile calls back. */
static void send_notified(rp__op *op, int32_t res)
{
    rp_conn *conn = RP__CONTAINER_OF(op, rp_conn, send.op);
    rp__conn_io *io = &conn->send;
    bool copied = (uint32_t)res & IORING_NOTIF_USAGE_ZC_COPIED;
    rp__loop_send_zc_count(conn->loop, true, copied);
    conn->zc_copied = conn->zc_copied || copied;
    io->zc_owed--;
    rp__loop_unref(conn->loop);
    if (!io->zc_owed && io->zc_ended) {
        io->zc_ended = false;
        io_finish(conn, io, io->zc_res);
    }
}

static void send_done(rp__op *op)
{
    rp_conn *conn = RP__CONTAINER_OF(op, rp_conn, send.op);
    rp__conn_io *io = &conn->send;
    if (io->zc && send_zc_result(conn, io, op))
        return;
    bool dropped_recv = io->linked; /* a linked send posts only when it fails */
    io->linked = false;
    int res = rp__op_result(op);
    if (res == 0)
        res = -EPIPE;
    if (conn->tls)
        res = rp__tls_sent(conn, res); /* the plaintext whose records are out */
    if (res >= 0) {
        io->done += (size_t)res;
        if (io->sendv)
            sendv_advance(io->sendv, (size_t)res);
        if (io->done < io->len && conn->state != RP__CONN_CLOSED) {
            res = io_continue(conn, io, true);
            if (res == 0) {
                if (dropped_recv)
                    recv_unlinked(conn, 0);
                return;
            }
        }
    }
    send_finish(conn, io, res < 0 ? res : (ssize_t)io->done);
    if (dropped_recv)
        recv_unlinked(conn, res < 0 ? res : 0);
}

/* What a recv of res bytes into cap left on the socket: the kernel says
 * whether bytes (or a FIN) followed (IORING_CQE_F_SOCK_NONEMPTY); a read
 * shorter than its buffer emptied the queue on any kernel, and where the
 * flag may be missing (unix sockets before Linux 6.17) a full one is a maybe.
 * Under TLS, ciphertext left on the socket or inside OpenSSL may be only a
 * session ticket: a maybe, which the put's check decrypts to decide. */
static void note_unread(rp_conn *conn, int res, uint32_t cflags, size_t cap)
{
    if (res <= 0)
        return; /* broken: never reused */
    bool more = cflags & IORING_CQE_F_SOCK_NONEMPTY;
    if (conn->tls)
        conn->unread = more || rp__tls_holds_bytes(conn) ? RP__UNREAD_MAYBE : RP__UNREAD_NONE;
    else if (more)
        conn->unread = RP__UNREAD_YES;
    else
        conn->unread = (size_t)res < cap || conn->is_tcp ? RP__UNREAD_NONE : RP__UNREAD_MAYBE;
}

/* The recv behind a linked send ran, so the send wrote every byte: what
 * its completion would have said, reported first, as it would have been. */
static void linked_send_succeeded(rp_conn *conn)
{
    rp__conn_io *io = &conn->send;
    io->linked = false;
    conn->in_callback++;
    rp__op_complete(conn->loop, &io->op, (int32_t)(io->len - io->done), 0);
    conn->in_callback--;
}

/* The ring had no buffer: the same recv goes on into one of the
 * connection's own, freed when it ends (ring_recv_done). */
static int recv_fallback(rp_conn *conn, rp__conn_io *io)
{
    rp__recv_ring_ran_dry(io->ring);
    if (conn->state == RP__CONN_CLOSED)
        return -ECANCELED;
    if (io->expired)
        return -ETIMEDOUT;
    if (!(io->fallback = rp__malloc(io->len)))
        return -ENOMEM;
    io->ring = NULL;
    io->buf = io->fallback;
    return io_continue(conn, io, false);
}

/* A recv from the ring: its bytes are the callback's, then the ring's
 * again (after the callback: the record may be gone, the ring is not). */
static void ring_recv_done(rp_conn *conn, rp__op *op)
{
    rp__conn_io *io = &conn->recv;
    int res = rp__op_result(op);
    if (res == -ENOBUFS && (res = recv_fallback(conn, io)) == 0)
        return;
    rp__recv_ring *ring = io->ring;
    int32_t raw = op->res;
    uint32_t cflags = op->cflags;
    io->buf = rp__recv_ring_take(ring, raw, cflags);
    io->ring = NULL;
    /* A read shorter than asked may only have met the end of a ring
     * buffer: only the kernel's flag says the socket is empty. */
    note_unread(conn, res, cflags, conn->is_tcp ? io->len : 0);
    io_finish(conn, io, res);
    rp__recv_ring_put(ring, raw, cflags);
}

static void recv_done(rp__op *op)
{
    rp_conn *conn = RP__CONTAINER_OF(op, rp_conn, recv.op);
    if (conn->send.linked)
        linked_send_succeeded(conn);
    if (conn->recv.ring) {
        ring_recv_done(conn, op);
        return;
    }
    char *fallback = conn->recv.fallback;
    conn->recv.fallback = NULL;
    int res = rp__op_result(op);
    /* Records that carry no plaintext (tickets, a partial record) read on. */
    if (conn->tls && conn->state != RP__CONN_CLOSED &&
        (res = rp__tls_received(conn, &conn->recv, res)) == RP__TLS_AGAIN) {
        res = io_continue(conn, &conn->recv, false);
        if (res == 0)
            return;
    }
    note_unread(conn, res, op->cflags, conn->recv.len);
    io_finish(conn, &conn->recv, res);
    rp__free(fallback);
}

/* A send that ended but whose memory the peer has not released within
 * the write timeout ends with -ETIMEDOUT, as if it were still writing. */
static void send_expired(rp__timer *timer)
{
    rp_conn *conn = RP__CONTAINER_OF(timer, rp_conn, send.deadline);
    conn->send.expired = true;
    if (conn->send.zc_ended) {
        conn->send.zc_res = -ETIMEDOUT;
        send_zc_let_go(conn);
        return;
    }
    rp__op_expire(conn->loop, &conn->send.op);
}

void rp__conn_settle_deadline(rp_conn *conn, uint64_t deadline_ns)
{
    if (conn->send.zc_ended && !rp__timer_armed(&conn->send.deadline))
        rp__timer_arm(conn->loop, &conn->send.deadline, deadline_ns);
}

/* A recv still linked behind its send may not have started, and a cancel
 * cannot find it there: the send, whose reply is already late, is ended
 * too (it reports -ETIMEDOUT), and its completion ends the recv. */
static void recv_expired(rp__timer *timer)
{
    rp_conn *conn = RP__CONTAINER_OF(timer, rp_conn, recv.deadline);
    conn->recv.expired = true;
    rp__op_expire(conn->loop, &conn->recv.op);
    if (conn->send.linked) {
        conn->send.expired = true;
        conn->send.op.has_deadline = true;
        rp__op_expire(conn->loop, &conn->send.op);
    }
}

static void watch_done(rp__op *op)
{
    rp_conn *conn = RP__CONTAINER_OF(op, rp_conn, watch_op);
    int res = op->res;
    if (conn->state == RP__CONN_CLOSED)
        rp__conn_op_finished(conn);
    else if (!conn->tls || (res = rp__tls_watched(conn, res)) != RP__TLS_AGAIN)
        conn->events->watched(conn, res);
}

void rp__conn_watch(rp_conn *conn, bool check)
{
    int flags = check ? MSG_DONTWAIT : 0;
    struct io_uring_sqe *sqe = rp__loop_sqe(conn->loop);
    if (conn->tls)
        rp__tls_watch_prep(conn, sqe, check);
    else
        io_uring_prep_recv(sqe, conn->fd, NULL, 0, flags);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)&conn->watch_op);
    /* A check answers at once; a watch may wait for hours and must not
     * keep the loop running. */
    rp__op_start(conn->loop, &conn->watch_op, false, check);
}

void rp__conn_init(rp_conn *conn, rp_loop *loop, void *owner, const rp__conn_events *events)
{
    memset(conn, 0, sizeof *conn);
    conn->loop = loop;
    conn->owner = owner;
    conn->events = events;
    conn->fd = -1;
    conn->send.op.done = send_done;
    conn->send.op.notified = send_notified;
    conn->recv.op.done = recv_done;
    conn->watch_op.done = watch_done;
    /* The op in flight keeps the loop alive, not its deadline. */
    rp__timer_init(&conn->send.deadline, send_expired, false);
    rp__timer_init(&conn->recv.deadline, recv_expired, false);
}

/* Nothing refers to the record any more: no op, no reply, no callback. */
static bool conn_releasable(const rp_conn *conn)
{
    return conn->state == RP__CONN_CLOSED && !rp__conn_ops_pending(conn) && !conn->ext_pending &&
           !conn->in_callback && !conn->in_setup;
}

void rp__conn_report_broken(rp_conn *conn)
{
    conn->broken = true;
    if (conn->state != RP__CONN_CLOSED)
        conn->events->broke(conn);
}

void rp__conn_op_finished(rp_conn *conn)
{
    if (!conn_releasable(conn))
        return;
    rp__tls_conn_free(conn);
    if (conn->ext_free)
        conn->ext_free(conn->ext);
    conn->ext = NULL;
    conn->ext_free = NULL;
    conn->events->released(conn);
}

/* Pending ops are cancelled and the socket shut down first, so the peer
 * sees FIN now rather than when the kernel drops its last reference. */
void rp__conn_close(rp_conn *conn)
{
    conn->state = RP__CONN_CLOSED;
    rp__op *ops[] = {&conn->watch_op, &conn->dial_op, &conn->send.op, &conn->recv.op};
    bool any_pending = false;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (ops[i]->pending) {
            rp__op_cancel(conn->loop, ops[i]);
            any_pending = true;
        }
    }
    if (conn->fd >= 0) {
        if (conn->tls)
            rp__tls_close_notify(conn);
        if (conn->send.zc_owed)
            send_zc_let_go(conn); /* a close would keep the bytes queued */
        if (any_pending) {
            /* Queued SQEs must take their file reference before the fd
             * number is closed and perhaps reused by the next socket. */
            rp__loop_submit(conn->loop);
            shutdown(conn->fd, SHUT_RDWR);
            rp__loop_count_syscalls(conn->loop, 1);
        }
        close(conn->fd);
        rp__loop_count_syscalls(conn->loop, 1);
        conn->fd = -1;
    }
    rp__conn_op_finished(conn);
}

/* The deadline is a loop timer, not a linked timeout: arming and disarming
 * an hrtimer in the kernel for every send and recv cost about 8% of the
 * client's CPU at 250k requests/s, the heap costs next to nothing, and a
 * timer that does fire cancels the op. It counts from a fresh clock read
 * (16 ns), as a linked timeout did from its submit. A send's deadline
 * covers all of its partial writes. */
static int start_io(rp_conn *conn, bool is_send, bool reply, void *buf, size_t len, uint32_t timeout_ms, rp_io_cb cb,
                    void *data)
{
    if (!conn || !cb || (!buf && (is_send || !conn->recv.ring)) || !len)
        return -EINVAL;
    if (conn->state == RP__CONN_CLOSED)
        return RP_ECLOSED;
    rp__conn_io *io = is_send ? &conn->send : &conn->recv;
    if (io->op.pending || io->zc_owed)
        return -EBUSY;
    io->cb = cb;
    io->data = data;
    io->buf = buf;
    io->len = len;
    io->done = 0;
    io->timeout_ms = timeout_ms;
    if (is_send && conn->unread == RP__UNREAD_NONE)
        conn->unread = RP__UNREAD_MAYBE; /* its reply may come after the holder's last read */
    io->expired = false;
    if (timeout_ms)
        rp__timer_arm(conn->loop, &io->deadline, rp__loop_now_fresh(conn->loop) + timeout_ms * RP__NS_PER_MS);
    io_submit(conn, io, is_send, reply);
    return 0;
}

int rp__conn_start_io(rp_conn *conn, bool is_send, void *buf, size_t len, uint32_t timeout_ms, rp_io_cb cb, void *data)
{
    return start_io(conn, is_send, false, buf, len, timeout_ms, cb, data);
}

int rp__conn_start_recv_select(rp_conn *conn, rp__recv_ring *ring, size_t cap, uint32_t timeout_ms, rp_io_cb cb,
                               void *data)
{
    if (!conn || !ring || conn->recv.op.pending || conn->tls)
        return conn && conn->tls ? -ENOTSUP : -EINVAL;
    conn->recv.ring = ring;
    int rc = start_io(conn, false, false, NULL, cap, timeout_ms, cb, data);
    if (rc < 0)
        conn->recv.ring = NULL;
    return rc;
}

int rp__conn_recv_reply(rp_conn *conn, void *buf, size_t cap, rp_io_cb cb, void *data)
{
    if (conn && !rp__conn_usable(conn))
        return RP_ECLOSED;
    return start_io(conn, false, true, buf, cap, conn ? conn->read_timeout_ms : 0, cb, data);
}

void rp__conn_recv_deadline(rp_conn *conn, uint64_t deadline_ns, bool keeps_loop_alive)
{
    rp__op *op = &conn->recv.op;
    if (deadline_ns) {
        conn->recv.expired = false;
        rp__timer_arm(conn->loop, &conn->recv.deadline, deadline_ns);
        op->has_deadline = true;
    } else {
        rp__timer_disarm(conn->loop, &conn->recv.deadline);
    }
    rp__op_keep_loop_alive(conn->loop, op, keeps_loop_alive);
}

int rp_conn_send(rp_conn *conn, const void *buf, size_t len, rp_io_cb cb, void *data)
{
    if (conn && !rp__conn_usable(conn))
        return RP_ECLOSED;
    return rp__conn_start_io(conn, true, (void *)buf, len, conn ? conn->write_timeout_ms : 0, cb, data);
}

int rp_conn_recv(rp_conn *conn, void *buf, size_t cap, rp_io_cb cb, void *data)
{
    if (conn && !rp__conn_usable(conn))
        return RP_ECLOSED;
    return rp__conn_start_io(conn, false, buf, cap, conn ? conn->read_timeout_ms : 0, cb, data);
}

int rp_conn_fd(const rp_conn *conn) { return conn ? conn->fd : -EINVAL; }

void rp_conn_set_data(rp_conn *conn, void *data)
{
    if (conn)
        conn->user_data = data;
}

void *rp_conn_data(const rp_conn *conn) { return conn ? conn->user_data : NULL; }

/* ------------------------------------------------------- vectored sends */

/* rp_conn_sendv's pieces, copied, go out as one IORING_OP_SENDMSG with
 * MSG_NOSIGNAL; a partial write moves the iovecs past what went out, and
 * the next part follows as a plain send's does. */
#define RP__IOV_MAX 1024 /* Linux's UIO_MAXIOV, what IOV_MAX says there */

int rp_conn_sendv(rp_conn *conn, const struct iovec *iov, int iovcnt, rp_io_cb cb, void *data)
{
    if (!conn || !iov || !cb || iovcnt <= 0 || iovcnt > RP__IOV_MAX)
        return -EINVAL;
    if (!rp__conn_usable(conn))
        return RP_ECLOSED;
    return rp__conn_start_sendv(conn, iov, iovcnt, conn->write_timeout_ms, cb, data);
}

int rp__conn_start_sendv(rp_conn *conn, const struct iovec *iov, int iovcnt, uint32_t timeout_ms, rp_io_cb cb,
                         void *data)
{
    if (iovcnt <= 0 || iovcnt > RP__IOV_MAX)
        return -EINVAL;
    if (conn->state == RP__CONN_CLOSED)
        return RP_ECLOSED;
    if (conn->send.op.pending || conn->send.zc_owed)
        return -EBUSY;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total == 0)
        return -EINVAL;
    rp__sendv *sv = rp__malloc(sizeof *sv + (size_t)iovcnt * sizeof sv->iov[0]);
    if (!sv)
        return -ENOMEM;
    size_t pieces = 0; /* empty ones dropped: each piece left has a byte to send */
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len)
            sv->iov[pieces++] = iov[i];
    sv->msg = (struct msghdr){.msg_iov = sv->iov, .msg_iovlen = pieces};
    conn->send.sendv = sv;
    int rc = rp__conn_start_io(conn, true, sv, total, timeout_ms, cb, data);
    if (rc < 0) {
        conn->send.sendv = NULL;
        rp__free(sv);
    }
    return rc;
}

static void sendv_advance(rp__sendv *sv, size_t sent)
{
    while (sent && sv->msg.msg_iovlen) {
        struct iovec *first = sv->msg.msg_iov;
        if (sent < first->iov_len) {
            first->iov_base = (char *)first->iov_base + sent;
            first->iov_len -= sent;
            return;
        }
        sent -= first->iov_len;
        sv->msg.msg_iov++;
        sv->msg.msg_iovlen--;
    }
}
