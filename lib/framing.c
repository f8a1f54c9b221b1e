/* Framed receives: a receive buffer the connection owns, and calls that
 * receive until a whole message is in it, so a protocol on the raw pool
 * needs no buffering of its own.
 *
 * The buffer holds what was read and not yet handed out: a call hands the
 * first whole message to its callback and keeps the rest for the next
 * call, which may find its message there already and then reads nothing.
 * A message is found by the caller's frame function, or by a delimiter
 * (rp_conn_recv_until). The buffer grows to fit a message, up to the
 * call's maximum (-EMSGSIZE past it); once empty, a grown one is given
 * back, so an idle connection keeps at most FRAMES_KEEP bytes.
 *
 * A call only records what it wants and defers the work to later in the
 * same loop iteration: its callback never runs inside it, and a call made
 * from a callback never moves the buffer under the message that callback
 * is still reading. From the call to its callback the connection owes a
 * message (ext_pending): a put meanwhile removes it, as with any I/O in
 * flight, and the record lives until the callback ran. Bytes left in the
 * buffer are bytes the holder did not read: a put removes the connection
 * (pool.c's unread_at_put). */
#include "conn.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define FRAMES_INITIAL (4 * 1024)
#define FRAMES_KEEP (64 * 1024)
#define FRAMES_DEFAULT_MAX (1024 * 1024)
#define DELIM_MAX 32

struct rp__frames {
    rp_conn *conn;
    char *buf;
    size_t start, len, cap; /* the bytes buffered: buf[start, start + len) */
    /* The receive under way. */
    rp_frame_fn frame_fn;
    void *frame_arg;
    size_t max_len;
    rp_frame_cb cb;
    void *data;
    bool active;
    int send_error; /* rp_conn_roundtrip's request failed: the reply's error */
    rp__deferred step_item;
    /* rp_conn_recv_until's delimiter, and how far it was looked for. */
    char delim[DELIM_MAX];
    size_t delim_len, scanned;
};

static void step(rp__frames *f);

void rp__frames_free(rp__frames *f)
{
    if (!f)
        return;
    rp__free(f->buf);
    rp__free(f);
}

bool rp__frames_buffered(const rp__frames *f) { return f && f->len; }

/* Ends the receive: the callback gets the message or the error. The
 * record must outlive the callback, and the message is consumed before
 * it runs, so a put inside it sees only what follows. */
static void finish(rp__frames *f, ssize_t len, int status)
{
    rp_conn *conn = f->conn;
    const char *frame = status ? NULL : f->buf + f->start;
    if (status == 0) {
        f->start += (size_t)len;
        f->len -= (size_t)len;
        f->scanned = 0;
    } else {
        conn->broken = true; /* the stream's framing is lost: never reused */
    }
    f->active = false;
    conn->ext_pending--;
    conn->in_callback++;
    f->cb(conn, frame, status ? status : len, f->data);
    conn->in_callback--;
    rp__conn_op_finished(conn);
}

static void recv_done(rp_conn *conn, ssize_t result, void *data)
{
    rp__frames *f = data;
    if (result <= 0) {
        finish(f, 0, f->send_error ? f->send_error : result == 0 ? RP_EEOF : (int)result);
        return;
    }
    (void)conn;
    f->len += (size_t)result;
    step(f);
}

/* Room to read into: the buffered bytes moved to the front, the buffer
 * grown when full (to need, when the frame function knows the size). */
static int make_room(rp__frames *f, size_t need)
{
    if (f->start) {
        memmove(f->buf, f->buf + f->start, f->len);
        f->start = 0;
    }
    size_t want = need > f->len ? need : f->len + 1;
    if (want <= f->cap)
        return 0;
    size_t cap = f->cap ? f->cap : FRAMES_INITIAL;
    while (cap < want && cap <= SIZE_MAX / 2)
        cap *= 2;
    cap = RP__MIN(cap < want ? want : cap, f->max_len); /* want <= max_len */
    char *buf = rp__realloc(f->buf, cap);
    if (!buf)
        return -ENOMEM;
    f->buf = buf;
    f->cap = cap;
    return 0;
}

/* Looks for a whole message in what is buffered; reads more if there is
 * none (or fails past the maximum). */
static void step(rp__frames *f)
{
    rp_conn *conn = f->conn;
    if (conn->state == RP__CONN_CLOSED) {
        finish(f, 0, -ECANCELED);
        return;
    }
    if (f->len == 0 && f->cap > FRAMES_KEEP) {
        rp__free(f->buf); /* the last big message is gone: give it back */
        f->buf = NULL;
        f->cap = f->start = 0;
    }
    ssize_t n = f->len ? f->frame_fn(f->buf + f->start, f->len, f->frame_arg) : 0;
    if (n < 0) {
        finish(f, 0, (int)n);
        return;
    }
    if ((size_t)n > f->max_len || (n == 0 && f->len >= f->max_len)) {
        finish(f, 0, -EMSGSIZE);
        return;
    }
    if (n > 0 && (size_t)n <= f->len) {
        finish(f, n, 0);
        return;
    }
    int rc = make_room(f, (size_t)n);
    if (rc == 0)
        rc = rp_conn_recv(conn, f->buf + f->len, f->cap - f->len, recv_done, f);
    if (rc < 0)
        finish(f, 0, rc);
}

static void step_item_run(rp__deferred *item) { step(RP__CONTAINER_OF(item, rp__frames, step_item)); }

/* The connection's buffer, set for a receive that has not started. */
static int frames_prepare(rp_conn *conn, rp_frame_fn frame_fn, void *frame_arg, size_t max_len, rp_frame_cb cb,
                          void *data)
{
    if (!conn || !cb)
        return -EINVAL;
    if (!rp__conn_usable(conn))
        return RP_ECLOSED;
    rp__frames *f = conn->frames;
    if (conn->ext || (f && f->active) || conn->recv.op.pending)
        return -EBUSY; /* the Redis layer's, a framed receive's or a recv's */
    if (!f) {
        if (!(f = rp__calloc(1, sizeof *f)))
            return -ENOMEM;
        f->conn = conn;
        conn->frames = f;
    }
    f->frame_fn = frame_fn;
    f->frame_arg = frame_arg;
    f->max_len = max_len ? max_len : FRAMES_DEFAULT_MAX;
    f->cb = cb;
    f->data = data;
    f->send_error = 0;
    return 0;
}

/* From here the connection owes a message until the callback ran. */
static void frames_activate(rp__frames *f)
{
    f->active = true;
    f->conn->ext_pending++;
}

static int frames_start(rp_conn *conn, rp_frame_fn frame_fn, void *frame_arg, size_t max_len, rp_frame_cb cb,
                        void *data)
{
    int rc = frames_prepare(conn, frame_fn, frame_arg, max_len, cb, data);
    if (rc < 0)
        return rc;
    frames_activate(conn->frames);
    rp__defer(conn->loop, &conn->frames->step_item, step_item_run);
    return 0;
}

/* A request that failed to go out has no reply to wait for: the receive
 * ends with the send's error. conn.c ends a recv linked behind the send
 * so; one that went separately (TLS) is cancelled here. */
static void roundtrip_sent(rp_conn *conn, ssize_t result, void *data)
{
    rp__frames *f = data;
    if (result >= 0 || !f->active)
        return;
    f->send_error = (int)result;
    if (conn->recv.op.pending)
        rp__op_cancel(conn->loop, &conn->recv.op);
}

/* The request's send and the reply's recv go into one submission, the recv
 * linked behind the send (rp__conn_recv_reply): the loop wakes once, for
 * the reply. The buffer is made ready first, so that nothing can fail once
 * the request is out. A reply already buffered (pipelining) is looked for
 * first, as rp_conn_recv_frame does. */
int rp_conn_roundtrip(rp_conn *conn, const struct iovec *iov, int iovcnt, rp_frame_fn frame_fn, void *frame_arg,
                      size_t max_len, rp_frame_cb cb, void *data)
{
    if (!frame_fn)
        return -EINVAL;
    int rc = frames_prepare(conn, frame_fn, frame_arg, max_len, cb, data);
    rp__frames *f = conn ? conn->frames : NULL;
    if (rc == 0 && f->len == 0)
        rc = make_room(f, 0);
    if (rc < 0)
        return rc;
    rp__loop_sqe_room(conn->loop, 2);
    rc = rp_conn_sendv(conn, iov, iovcnt, roundtrip_sent, f);
    if (rc < 0)
        return rc;
    frames_activate(f);
    if (f->len || rp__conn_recv_reply(conn, f->buf, f->cap, recv_done, f) < 0)
        rp__defer(conn->loop, &f->step_item, step_item_run);
    return 0;
}

int rp_conn_recv_frame(rp_conn *conn, rp_frame_fn frame_fn, void *frame_arg, size_t max_len, rp_frame_cb cb,
                       void *data)
{
    if (!frame_fn)
        return -EINVAL;
    return frames_start(conn, frame_fn, frame_arg, max_len, cb, data);
}

/* The delimiter's frame function: looks only at bytes it has not looked
 * at yet (and the delimiter's length before them), so a long message
 * read in many pieces is scanned once. */
static ssize_t find_delim(const char *data, size_t len, void *arg)
{
    rp__frames *f = arg;
    size_t at = f->scanned >= f->delim_len ? f->scanned - f->delim_len + 1 : 0;
    f->scanned = len;
    while (at + f->delim_len <= len) {
        const char *first = memchr(data + at, f->delim[0], len - f->delim_len + 1 - at);
        if (!first)
            break;
        at = (size_t)(first - data);
        if (memcmp(first, f->delim, f->delim_len) == 0)
            return (ssize_t)(at + f->delim_len);
        at++;
    }
    return 0;
}

int rp_conn_recv_until(rp_conn *conn, const char *delim, size_t delim_len, size_t max_len, rp_frame_cb cb,
                       void *data)
{
    if (!delim || delim_len == 0 || delim_len > DELIM_MAX)
        return -EINVAL;
    int rc = frames_start(conn, find_delim, NULL, max_len, cb, data);
    if (rc == 0) {
        rp__frames *f = conn->frames;
        f->frame_arg = f;
        memcpy(f->delim, delim, delim_len);
        f->delim_len = delim_len;
        f->scanned = 0;
    }
    return rc;
}
