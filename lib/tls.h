/* TLS under the connection layer (tls.c): OpenSSL over memory BIOs, so the
 * ring keeps doing every read and write of the socket. conn.c and dial.c
 * call in at a few points; the pool only builds and drops the per-pool
 * context, and nothing above the connection knows TLS is there.
 *
 * A connection with conn->tls:
 * - dial: after the TCP connect, the handshake runs on the dial's op (so
 *   closing and "a dial is under way" need nothing new), each step's SEND
 *   or RECV linked to a timeout for what is left of dial_timeout_ms;
 * - send: plaintext is encrypted a chunk at a time into the connection's
 *   ciphertext buffer, which SEND writes; the plaintext counts as sent
 *   once every byte of its records is out;
 * - recv: RECV fills the ciphertext buffer, SSL_read decrypts into the
 *   caller's buffer; plaintext OpenSSL already holds is delivered through
 *   a NOP, so a result still never arrives inside the call;
 * - idle watch and check: bytes that arrive are read and decrypted; only
 *   records carrying no application data (session tickets, key updates)
 *   keep the connection healthy. */
#ifndef RP_TLS_H
#define RP_TLS_H

#include "conn.h"

typedef struct rp__tls_ctx rp__tls_ctx; /* one per pool, shared by its connections */
typedef struct rp__tls rp__tls;         /* one per connection */

/* The pool's context from its options, NULL in *out when TLS is off.
 * -ENOTSUP without TLS built in, -EINVAL for options that cannot work,
 * RP_ETLS when OpenSSL refuses a file or list (the reason is logged), and
 * -ENOMEM. addr is the pool's address, for the default server name. */
int rp__tls_ctx_new(rp__tls_ctx **out, const rp_tls_options *opts, const char *addr);
void rp__tls_ctx_unref(rp__tls_ctx *ctx);
/* The pool's target is now addr (rp__pool_set_target): a context made
 * without an address or server_name names addr's host from now on (new
 * dials; a session of the old target is not offered). -EINVAL for a unix:
 * address that needs a name, -ENOMEM; 0 and nothing changes otherwise. */
int rp__tls_ctx_retarget(rp__tls_ctx *ctx, const char *addr);
/* The last failure's text, NULL if none. */
const char *rp__tls_ctx_error(const rp__tls_ctx *ctx);

/* Copies opts's strings (for a holder that makes pools later: the
 * cluster), and frees such a copy. */
int rp__tls_options_copy(rp_tls_options *dst, const rp_tls_options *src);
void rp__tls_options_free(rp_tls_options *opts);

/* A dial starts on a connection whose tls_ctx is set: its session state.
 * The handshake's deadline counts from now. < 0: the dial cannot start. */
int rp__tls_conn_new(rp_conn *conn, uint32_t timeout_ms);
/* The connection is closing: sends close_notify if it can go out whole
 * at once (see tls.c). */
void rp__tls_close_notify(rp_conn *conn);
/* Frees the session once nothing refers to the connection. */
void rp__tls_conn_free(rp_conn *conn);

/* The TCP connect succeeded: the handshake takes over the dial op and
 * reports through conn->events->dialed. */
void rp__tls_handshake(rp_conn *conn);

/* Prepares io's next SQE (SEND of ciphertext, RECV into the ciphertext
 * buffer, or a NOP when plaintext is ready). */
void rp__tls_io_prep(rp_conn *conn, rp__conn_io *io, bool is_send);
/* A send's SQE completed with res (-EPIPE for nothing written): the
 * plaintext bytes now wholly sent (0: more ciphertext first), or < 0. */
int rp__tls_sent(rp_conn *conn, int res);
/* A recv's SQE completed with res: plaintext bytes in io->buf, 0 at a
 * clean end (close_notify), RP__TLS_AGAIN when more must be read, or < 0
 * (RP_ETLS: a bad record, an alert, a stream cut without close_notify). */
enum { RP__TLS_AGAIN = -1000000 };
int rp__tls_received(rp_conn *conn, rp__conn_io *io, int res);
/* Whether OpenSSL holds bytes a recv has not handed out yet: plaintext,
 * or ciphertext not yet decrypted (perhaps only a session ticket). */
bool rp__tls_holds_bytes(const rp_conn *conn);
/* Prepares the idle watch's or check's SQE: a zero-length recv, or a NOP
 * that first asks OpenSSL for plaintext it may hold. */
void rp__tls_watch_prep(rp_conn *conn, struct io_uring_sqe *sqe, bool check);
/* The idle watch or check completed with res: what to report to the
 * owner, or RP__TLS_AGAIN when the TLS layer reads what arrived first (or
 * re-armed the watch after records with no application data). */
int rp__tls_watched(rp_conn *conn, int res);

#endif
