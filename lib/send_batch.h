/* The send batch (send_batch.c): the bytes of the commands one send
 * carries, RESP text with arguments sent by reference between its runs. */
#ifndef RP_SEND_BATCH_H
#define RP_SEND_BATCH_H

#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

/* Memory a command's arguments live in, shared by whoever still needs its
 * bytes: its owner (one reference) and every batch of commands that sends
 * some of them by reference, queued or in flight. The last put releases
 * it. */
typedef struct rp__hold rp__hold;
struct rp__hold {
    unsigned refs;
    void (*release)(rp__hold *hold);
};

static inline void rp__hold_put(rp__hold *hold)
{
    if (--hold->refs == 0)
        hold->release(hold);
}

/* An argument this large, of a command encoded with a hold, goes by
 * reference: copying it costs more than a piece of a vectored send
 * (docs/performance.md, "Big values"). */
#define RP__BY_REF_MIN (16 * 1024)
/* Pieces one batch carries at most, each between two runs of text: the
 * iovecs stay within Linux's UIO_MAXIOV (1024). Past it, arguments are
 * copied. */
#define RP__BATCH_PIECES_MAX 256
/* The iovecs of a batch with pieces (rp__batch_iov) at most. */
#define RP__BATCH_IOV_MAX (2 * RP__BATCH_PIECES_MAX + 1)

typedef struct rp__byte_buffer {
    char *data;
    size_t len, cap;
} rp__byte_buffer;

/* An argument sent from its command's own memory: in the stream it
 * follows the first `at` bytes of its batch's text. */
typedef struct rp__out_piece {
    size_t at;
    const char *data;
    size_t len;
    rp__hold *hold;
} rp__out_piece;

/* Zeroed: an empty batch. Sent by one vectored send when it has pieces
 * (rp__batch_iov), else by a plain one of its text. */
typedef struct rp__send_batch {
    rp__byte_buffer text;
    rp__out_piece *pieces;
    unsigned npieces, cap;
    size_t piece_bytes;
} rp__send_batch;

/* The bytes the batch puts in the stream. */
static inline size_t rp__batch_len(const rp__send_batch *b) { return b->text.len + b->piece_bytes; }

/* What a batch holds for its send: the arguments sent by reference, and
 * a text buffer grown large (a large command copied in). */
size_t rp__batch_held(const rp__send_batch *b);

/* Empties a batch: its pieces' memory is no longer needed for it. */
void rp__batch_clear(rp__send_batch *b);

/* Empties a batch whose send has completed, its zero-copy notification
 * included: it holds nothing afterwards (rp__batch_held is 0). */
void rp__batch_sent(rp__send_batch *b);

/* Releases its pieces and frees its memory: it is empty (zeroed) after. */
void rp__batch_free(rp__send_batch *b);

/* Takes the len bytes of the stream at from (a whole command's) out of
 * the batch: its text moves up over them, and its pieces among them are
 * released. */
void rp__batch_cut(rp__send_batch *b, size_t from, size_t len);

/* Fills iov (RP__BATCH_IOV_MAX long) for the send of a batch with pieces:
 * its text cut at each piece, the piece between. Returns the count. */
int rp__batch_iov(const rp__send_batch *b, struct iovec *iov);

/* For rp__batch_encode, out of line: room for `more` bytes of text, or
 * for `more` pieces (0 or -ENOMEM); a RESP header (`*argc` or `$len` with
 * its CRLF) written at out, its length returned (24 at most). */
int rp__batch_reserve_text(rp__send_batch *b, size_t more);
int rp__batch_reserve_pieces(rp__send_batch *b, unsigned more);
size_t rp__resp_header(char *out, char kind, size_t value);

/* rp__batch_encode's body, inlined in its two forms. */
static inline __attribute__((always_inline)) int rp__batch_encode_with(rp__send_batch *out, int argc,
                                                                       const char *const *argv,
                                                                       const size_t *argvlen, rp__hold *hold)
{
    if (hold && out->npieces + (unsigned)argc > RP__BATCH_PIECES_MAX)
        hold = NULL;
    size_t need = 24;
    unsigned refs = 0;
    for (int i = 0; i < argc; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        if (hold && len >= RP__BY_REF_MIN)
            refs++, len = 0; /* a reference: no bytes in the text */
        if (len > SIZE_MAX - need - (24 + 2))
            return -ENOMEM;
        need += 24 + 2 + len;
    }
    if ((refs && rp__batch_reserve_pieces(out, refs) < 0) || rp__batch_reserve_text(out, need) < 0)
        return -ENOMEM;
    char *p = out->text.data + out->text.len;
    p += rp__resp_header(p, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        p += rp__resp_header(p, '$', len);
        if (refs && len >= RP__BY_REF_MIN) {
            hold->refs++;
            out->pieces[out->npieces++] = (rp__out_piece){(size_t)(p - out->text.data), argv[i], len, hold};
            out->piece_bytes += len;
        } else {
            memcpy(p, argv[i], len);
            p += len;
        }
        *p++ = '\r';
        *p++ = '\n';
    }
    out->text.len = (size_t)(p - out->text.data);
    return 0;
}

/* Appends a command in RESP: *argc, then $len and the bytes of each
 * argument. Binary-safe. Each header takes at most 24 bytes; a total that
 * wraps is -ENOMEM. With hold, an argument of RP__BY_REF_MIN bytes or
 * more leaves only its header and CRLF in the text, and becomes a piece
 * that holds a reference to hold; while the batch has room for all of its
 * arguments as pieces, else everything is copied. All or nothing: the
 * room for its text and pieces is made first. Inlined where it is called,
 * in two forms: with hold NULL, the compiler drops every look at pieces,
 * and a small command costs what it did before pieces existed. */
static inline __attribute__((always_inline)) int rp__batch_encode(rp__send_batch *out, int argc,
                                                                  const char *const *argv, const size_t *argvlen,
                                                                  rp__hold *hold)
{
    return hold ? rp__batch_encode_with(out, argc, argv, argvlen, hold)
                : rp__batch_encode_with(out, argc, argv, argvlen, NULL);
}

#endif
