/* The send batch: the bytes of the commands one send carries, written
 * as RESP (rp__batch_encode) and handed whole to one send.
 *
 * A batch is RESP text in one buffer, and, for a command whose arguments
 * live in memory it may hold (an rp__hold: rp_client's commands), pieces:
 * arguments of RP__BY_REF_MIN bytes or more, sent by reference between
 * the runs of text by one vectored send. Text for the rest: a small
 * argument costs less to copy than an iovec of its own, and a batch of
 * text alone goes by one plain send. Pieces for the big ones: their
 * memory is held until the send completed, so they are never copied a
 * second time. A command that would take the batch past
 * RP__BATCH_PIECES_MAX pieces is copied whole.
 *
 * Its one state machine: empty; filling, as whole commands are encoded
 * in (all or nothing) and cut out again (a cancel, while none of it has
 * been handed to a send); in flight, read by the send its owner started
 * with its text or its iovecs (rp__batch_iov), until that send and its
 * zero-copy notification (conn.c) completed; then empty again
 * (rp__batch_sent). A piece holds a reference to its command's memory
 * from the encode that made it until it leaves the batch: its command
 * cut out, or the batch emptied (its send completed, or its commands
 * failed unsent) or freed. The text buffer stays for the next batch
 * unless it grew past TEXT_KEEP for a large command, and is zeroed
 * before it is freed (it may have held AUTH's password).
 *
 * rp_client keeps its one copy (the caller may free its arguments on
 * return): a no-copy flag would save it (about 45% of the client's CPU
 * per 100 KB SET, docs/performance.md) but its callback would then have
 * to wait for every send of its bytes, even after a cancel or a failure,
 * and its bytes could never go by a zero-copy send; not built. */
#include "send_batch.h"

/* A text buffer larger than this is freed once its send is done. */
#define TEXT_KEEP (64 * 1024)

size_t rp__batch_held(const rp__send_batch *b)
{
    return b->piece_bytes + (b->text.cap > TEXT_KEEP ? b->text.cap : 0);
}

/* Text buffers held AUTH's password: no secret is left in freed memory. */
static void text_free(rp__byte_buffer *buf)
{
    if (buf->data)
        explicit_bzero(buf->data, buf->cap);
    rp__free(buf->data);
    *buf = (rp__byte_buffer){0};
}

void rp__batch_clear(rp__send_batch *b)
{
    for (unsigned i = 0; i < b->npieces; i++)
        rp__hold_put(b->pieces[i].hold);
    b->npieces = 0;
    b->piece_bytes = 0;
    b->text.len = 0;
}

void rp__batch_sent(rp__send_batch *b)
{
    rp__batch_clear(b);
    if (b->text.cap > TEXT_KEEP)
        text_free(&b->text);
}

void rp__batch_free(rp__send_batch *b)
{
    rp__batch_clear(b);
    rp__free(b->pieces);
    text_free(&b->text);
}

/* Sizes that would wrap a size_t fit no buffer: -ENOMEM, as for any
 * allocation that fails. */
int rp__batch_reserve_text(rp__send_batch *b, size_t more)
{
    rp__byte_buffer *buf = &b->text;
    if (more <= buf->cap - buf->len)
        return 0;
    if (more > SIZE_MAX - buf->len)
        return -ENOMEM;
    size_t want = buf->len + more;
    /* 128: a small command's bytes (GET or SET of a short key and value)
     * fit; two per connection at 256 cost 0.3 MB of RSS at 1000. */
    size_t cap = buf->cap ? buf->cap : 128;
    while (cap < want)
        cap = cap <= SIZE_MAX / 2 ? cap * 2 : want;
    /* Not realloc: the old block may hold AUTH's password, zeroed first. */
    char *data = rp__malloc(cap);
    if (!data)
        return -ENOMEM;
    if (buf->data) {
        memcpy(data, buf->data, buf->len);
        explicit_bzero(buf->data, buf->cap);
        rp__free(buf->data);
    }
    buf->data = data;
    buf->cap = cap;
    return 0;
}

int rp__batch_reserve_pieces(rp__send_batch *b, unsigned more)
{
    if (b->npieces + more <= b->cap)
        return 0;
    unsigned cap = b->cap ? b->cap * 2 : 4;
    while (cap < b->npieces + more)
        cap *= 2;
    rp__out_piece *pieces = rp__realloc(b->pieces, cap * sizeof *pieces);
    if (!pieces)
        return -ENOMEM;
    b->pieces = pieces;
    b->cap = cap;
    return 0;
}

size_t rp__resp_header(char *out, char kind, size_t value)
{
    char digits[24];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    size_t len = 0;
    out[len++] = kind;
    while (n)
        out[len++] = digits[--n];
    out[len++] = '\r';
    out[len++] = '\n';
    return len;
}

void rp__batch_cut(rp__send_batch *b, size_t from, size_t len)
{
    size_t before = 0, inside = 0, preceding = 0; /* piece bytes before the cut, in it, before this one */
    unsigned kept = 0;
    for (unsigned i = 0; i < b->npieces; i++) {
        rp__out_piece piece = b->pieces[i];
        size_t stream_at = piece.at + preceding;
        preceding += piece.len;
        if (stream_at < from) {
            before += piece.len;
        } else if (stream_at < from + len) {
            inside += piece.len;
            rp__hold_put(piece.hold);
            continue;
        }
        b->pieces[kept++] = piece;
    }
    size_t at = from - before, text_len = len - inside;
    for (unsigned i = 0; i < kept; i++)
        if (b->pieces[i].at > at)
            b->pieces[i].at -= text_len;
    memmove(b->text.data + at, b->text.data + at + text_len, b->text.len - at - text_len);
    b->text.len -= text_len;
    b->npieces = kept;
    b->piece_bytes -= inside;
}

int rp__batch_iov(const rp__send_batch *b, struct iovec *iov)
{
    int n = 0;
    size_t at = 0;
    for (unsigned i = 0; i < b->npieces; i++) {
        iov[n++] = (struct iovec){b->text.data + at, b->pieces[i].at - at};
        iov[n++] = (struct iovec){(void *)b->pieces[i].data, b->pieces[i].len};
        at = b->pieces[i].at;
    }
    iov[n++] = (struct iovec){b->text.data + at, b->text.len - at};
    return n;
}
