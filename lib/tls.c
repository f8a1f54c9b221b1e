/* TLS under the connection layer: OpenSSL 3 over two memory BIOs. The ring
 * keeps doing all socket I/O: each RECV's ciphertext is written into the
 * read BIO and SSL_read decrypts from it; whatever OpenSSL queues in the
 * write BIO goes out through SEND before anything else (the BIO docs: that
 * flush is what keeps the two sides from waiting on each other). Readiness
 * loops stall when plaintext waits inside OpenSSL while the socket says
 * nothing is readable (libevent#854); here a recv first asks OpenSSL
 * (through a NOP, so no result arrives inside the call) whenever it may
 * still hold plaintext. See tls.h for how conn.c and dial.c call in.
 *
 * kTLS would fit at the end of the handshake (tls_handshake_step's success):
 * with SSL_OP_ENABLE_KTLS and a socket BIO, OpenSSL installs the keys with
 * setsockopt(TCP_ULP, "tls") and the kernel then encrypts SEND and decrypts
 * RECV, so rp__tls_io_prep would prepare plain SQEs on the fd. It needs
 * recvmsg with control messages for the records OpenSSL still has to see
 * (TLS 1.3 tickets, key updates). This kernel has no tls ULP: not built. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The option strings a copy owns. */
#define RP__TLS_STRINGS(o) \
    {&(o)->ca_file, &(o)->ca_dir, &(o)->cert_file, &(o)->key_file, &(o)->server_name, &(o)->ciphers, &(o)->ciphersuites}

static void ssl_ctx_ref(void *ssl_ctx, bool take);

int rp__tls_options_copy(rp_tls_options *dst, const rp_tls_options *src)
{
    *dst = *src;
    ssl_ctx_ref(dst->ssl_ctx, true); /* the copy holds the caller's context too */
    const char **strings[] = RP__TLS_STRINGS(dst);
    int rc = 0;
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        const char *text = *strings[i];
        *strings[i] = rc == 0 && text ? rp__strdup(text) : NULL;
        if (text && !*strings[i])
            rc = -ENOMEM;
    }
    if (rc < 0)
        rp__tls_options_free(dst);
    return rc;
}

void rp__tls_options_free(rp_tls_options *o)
{
    const char **strings[] = RP__TLS_STRINGS(o);
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        rp__free((char *)*strings[i]);
        *strings[i] = NULL;
    }
    ssl_ctx_ref(o->ssl_ctx, false);
    o->ssl_ctx = NULL;
}

#if RP_HAVE_TLS

#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stddef.h>

/* OpenSSL is loaded when the first TLS context is made (or a caller's
 * SSL_CTX is taken), not with the library: mapping and relocating libssl
 * and libcrypto costs a process 1.7 MB of RSS, TLS used or not (measured
 * with rp-bench: docs/performance.md). The library does not link them; it
 * dlopen()s libssl (RP_LIBSSL_SONAME, which brings libcrypto) once, and
 * calls the functions below through pointers of their own types, by their
 * own names (the defines after the table), the header macros too (they
 * expand to SSL_ctrl and the like). A program that links OpenSSL itself
 * gets the same copy. Never closed: OpenSSL cleans up at exit. */
#define RP__OPENSSL_FUNCTIONS(X) \
    X(BIO_ctrl) \
    X(BIO_ctrl_pending) \
    X(BIO_free) \
    X(BIO_new) \
    X(BIO_read) \
    X(BIO_s_mem) \
    X(BIO_write) \
    X(ERR_clear_error) \
    X(ERR_peek_error) \
    X(ERR_reason_error_string) \
    X(SSL_CTX_check_private_key) \
    X(SSL_CTX_ctrl) \
    X(SSL_CTX_free) \
    X(SSL_CTX_get_ex_data) \
    X(SSL_CTX_load_verify_locations) \
    X(SSL_CTX_new) \
    X(SSL_CTX_sess_set_new_cb) \
    X(SSL_CTX_set_cipher_list) \
    X(SSL_CTX_set_ciphersuites) \
    X(SSL_CTX_set_default_verify_paths) \
    X(SSL_CTX_set_ex_data) \
    X(SSL_CTX_set_options) \
    X(SSL_CTX_set_verify) \
    X(SSL_CTX_up_ref) \
    X(SSL_CTX_use_PrivateKey_file) \
    X(SSL_CTX_use_certificate_chain_file) \
    X(SSL_SESSION_free) \
    X(SSL_SESSION_is_resumable) \
    X(SSL_ctrl) \
    X(SSL_do_handshake) \
    X(SSL_free) \
    X(SSL_get0_param) \
    X(SSL_get_SSL_CTX) \
    X(SSL_get_error) \
    X(SSL_get_verify_result) \
    X(SSL_has_pending) \
    X(SSL_is_init_finished) \
    X(SSL_new) \
    X(SSL_read_ex) \
    X(SSL_session_reused) \
    X(SSL_set1_host) \
    X(SSL_set_bio) \
    X(SSL_set_connect_state) \
    X(SSL_set_hostflags) \
    X(SSL_set_session) \
    X(SSL_shutdown) \
    X(SSL_write_ex) \
    X(TLS_client_method) \
    X(X509_VERIFY_PARAM_set1_ip_asc) \
    X(X509_verify_cert_error_string)

static struct rp__openssl {
#define RP__OPENSSL_POINTER(name) __typeof__(name) *name;
    RP__OPENSSL_FUNCTIONS(RP__OPENSSL_POINTER)
#undef RP__OPENSSL_POINTER
} ossl;

static const struct {
    const char *name;
    size_t offset;
} ossl_symbols[] = {
#define RP__OPENSSL_SYMBOL(name) {#name, offsetof(struct rp__openssl, name)},
    RP__OPENSSL_FUNCTIONS(RP__OPENSSL_SYMBOL)
#undef RP__OPENSSL_SYMBOL
};

static pthread_once_t ossl_once = PTHREAD_ONCE_INIT;
static bool ossl_loaded;

static void log_tls(const char *what, const char *why);

/* A libssl without one of the functions (not OpenSSL 3's) is closed
 * again: nothing of it stays mapped. dlerror's text is read first (the
 * close may reset it). */
static void ossl_load_once(void)
{
    void *lib = dlopen(RP_LIBSSL_SONAME, RTLD_NOW | RTLD_LOCAL);
    for (size_t i = 0; lib && i < sizeof ossl_symbols / sizeof ossl_symbols[0]; i++) {
        void *symbol = dlsym(lib, ossl_symbols[i].name);
        if (!symbol) {
            char why[256];
            const char *error = dlerror();
            snprintf(why, sizeof why, "%s", error ? error : ossl_symbols[i].name);
            dlclose(lib);
            memset(&ossl, 0, sizeof ossl);
            log_tls("cannot load " RP_LIBSSL_SONAME, why);
            return;
        }
        memcpy((char *)&ossl + ossl_symbols[i].offset, &symbol, sizeof symbol);
    }
    ossl_loaded = lib != NULL;
    if (!ossl_loaded)
        log_tls("cannot load " RP_LIBSSL_SONAME, dlerror());
}

/* 0, or -ENOTSUP where OpenSSL cannot be loaded (as in a build without). */
static int ossl_load(void)
{
    pthread_once(&ossl_once, ossl_load_once);
    return ossl_loaded ? 0 : -ENOTSUP;
}

/* The question a program asks is whether a TLS pool would be made, so the
 * answer loads OpenSSL as a TLS pool would. */
bool rp_tls_available(void) { return ossl_load() == 0; }

#define BIO_ctrl (ossl.BIO_ctrl)
#define BIO_ctrl_pending (ossl.BIO_ctrl_pending)
#define BIO_free (ossl.BIO_free)
#define BIO_new (ossl.BIO_new)
#define BIO_read (ossl.BIO_read)
#define BIO_s_mem (ossl.BIO_s_mem)
#define BIO_write (ossl.BIO_write)
#define ERR_clear_error (ossl.ERR_clear_error)
#define ERR_peek_error (ossl.ERR_peek_error)
#define ERR_reason_error_string (ossl.ERR_reason_error_string)
#define SSL_CTX_check_private_key (ossl.SSL_CTX_check_private_key)
#define SSL_CTX_ctrl (ossl.SSL_CTX_ctrl)
#define SSL_CTX_free (ossl.SSL_CTX_free)
#define SSL_CTX_get_ex_data (ossl.SSL_CTX_get_ex_data)
#define SSL_CTX_load_verify_locations (ossl.SSL_CTX_load_verify_locations)
#define SSL_CTX_new (ossl.SSL_CTX_new)
#define SSL_CTX_sess_set_new_cb (ossl.SSL_CTX_sess_set_new_cb)
#define SSL_CTX_set_cipher_list (ossl.SSL_CTX_set_cipher_list)
#define SSL_CTX_set_ciphersuites (ossl.SSL_CTX_set_ciphersuites)
#define SSL_CTX_set_default_verify_paths (ossl.SSL_CTX_set_default_verify_paths)
#define SSL_CTX_set_ex_data (ossl.SSL_CTX_set_ex_data)
#define SSL_CTX_set_options (ossl.SSL_CTX_set_options)
#define SSL_CTX_set_verify (ossl.SSL_CTX_set_verify)
#define SSL_CTX_up_ref (ossl.SSL_CTX_up_ref)
#define SSL_CTX_use_PrivateKey_file (ossl.SSL_CTX_use_PrivateKey_file)
#define SSL_CTX_use_certificate_chain_file (ossl.SSL_CTX_use_certificate_chain_file)
#define SSL_SESSION_free (ossl.SSL_SESSION_free)
#define SSL_SESSION_is_resumable (ossl.SSL_SESSION_is_resumable)
#define SSL_ctrl (ossl.SSL_ctrl)
#define SSL_do_handshake (ossl.SSL_do_handshake)
#define SSL_free (ossl.SSL_free)
#define SSL_get0_param (ossl.SSL_get0_param)
#define SSL_get_SSL_CTX (ossl.SSL_get_SSL_CTX)
#define SSL_get_error (ossl.SSL_get_error)
#define SSL_get_verify_result (ossl.SSL_get_verify_result)
#define SSL_has_pending (ossl.SSL_has_pending)
#define SSL_is_init_finished (ossl.SSL_is_init_finished)
#define SSL_new (ossl.SSL_new)
#define SSL_read_ex (ossl.SSL_read_ex)
#define SSL_session_reused (ossl.SSL_session_reused)
#define SSL_set1_host (ossl.SSL_set1_host)
#define SSL_set_bio (ossl.SSL_set_bio)
#define SSL_set_connect_state (ossl.SSL_set_connect_state)
#define SSL_set_hostflags (ossl.SSL_set_hostflags)
#define SSL_set_session (ossl.SSL_set_session)
#define SSL_shutdown (ossl.SSL_shutdown)
#define SSL_write_ex (ossl.SSL_write_ex)
#define TLS_client_method (ossl.TLS_client_method)
#define X509_VERIFY_PARAM_set1_ip_asc (ossl.X509_VERIFY_PARAM_set1_ip_asc)
#define X509_verify_cert_error_string (ossl.X509_verify_cert_error_string)

static void ssl_ctx_ref(void *ssl_ctx, bool take)
{
    if (!ssl_ctx || ossl_load() < 0) /* a caller's SSL_CTX: loaded already */
        return;
    if (take)
        SSL_CTX_up_ref(ssl_ctx);
    else
        SSL_CTX_free(ssl_ctx);
}

/* Plaintext encrypted per SEND: one full record. The ciphertext buffer
 * holds it with room for the record's overhead; what does not fit waits in
 * the write BIO. The receive buffer takes a record a time. */
#define RP__TLS_CHUNK 16384
#define RP__TLS_OUT (RP__TLS_CHUNK + 1024)
#define RP__TLS_IN 16384
/* Sessions kept per pool: a TLS 1.3 server gives two tickets a
 * connection (OpenSSL's default), and a dial uses one. */
#define RP__TLS_SESSIONS 8

struct rp__tls_ctx {
    unsigned refs;
    SSL_CTX *ssl_ctx;
    char *server_name; /* SNI and the name verified; NULL: none */
    bool name_is_ip;
    bool verify_name;
    bool name_follows_target; /* no server_name, no address yet: each target's host */
    char error[256];   /* the last failure, "" if none */
    /* Session resumption: the newest resumable sessions (TLS 1.3
     * tickets, or 1.2 sessions) the servers gave the pool's connections,
     * the newest last; each dial offers one (session_offer). Only in the
     * library's own SSL_CTX. */
    SSL_SESSION *sessions[RP__TLS_SESSIONS];
    int nsessions;
};

enum { WATCH_SOCKET, WATCH_PROBE, WATCH_READ }; /* zero-length recv, NOP, reading */

struct rp__tls {
    rp__tls_ctx *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;   /* owned by ssl */
    uint64_t deadline_ns; /* the handshake's: the dial's start + dial_timeout_ms */
    size_t out_len, out_done;
    size_t plain_chunk; /* plaintext whose records are in out or the write BIO */
    int send_error;     /* SSL_write failed: the NOP in flight reports it */
    bool hs_sending;    /* the handshake's op in flight is a SEND */
    bool recv_nop;      /* the recv's SQE is a NOP: no new ciphertext */
    bool want_read;     /* OpenSSL holds no plaintext: a recv must RECV */
    bool watch_check;   /* the watch op is a check (MSG_DONTWAIT), not a watch */
    uint8_t watch_step; /* what the watch op in flight does (WATCH_*) */
    char in[RP__TLS_IN];
    char out[RP__TLS_OUT];
};

/* ---------------------------------------------------------------- errors */

static void log_tls(const char *what, const char *why)
{
    if (!getenv("RINGPOOL_QUIET"))
        fprintf(stderr, "ringpool: TLS: %s: %s\n", what, why);
}

/* OpenSSL's reason for the failure just seen, and for a refused
 * certificate the verifier's own ("certificate verify failed: hostname
 * mismatch"). Clears the thread's error queue for the next call. */
static void describe_failure(SSL *ssl, char *text, size_t cap)
{
    unsigned long e = ERR_peek_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    if (!reason)
        reason = e ? "unknown OpenSSL error" : "connection closed without close_notify";
    long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (e && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK)
        snprintf(text, cap, "%s: %s", reason, X509_verify_cert_error_string(verify));
    else
        snprintf(text, cap, "%s", reason);
    ERR_clear_error();
}

static int conn_failure(rp_conn *conn)
{
    rp__tls *t = conn->tls;
    describe_failure(t->ssl, t->ctx->error, sizeof t->ctx->error);
    return RP_ETLS;
}

/* OpenSSL hands over each new session the server sent; the pool keeps the
 * newest RP__TLS_SESSIONS it can resume. Returns 1: the reference is ours. */
static int session_new(SSL *ssl, SSL_SESSION *session)
{
    rp__tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!ctx || !SSL_SESSION_is_resumable(session))
        return 0;
    if (ctx->nsessions == RP__TLS_SESSIONS) {
        SSL_SESSION_free(ctx->sessions[0]); /* the oldest */
        ctx->nsessions--;
        memmove(ctx->sessions, ctx->sessions + 1, (size_t)ctx->nsessions * sizeof ctx->sessions[0]);
    }
    ctx->sessions[ctx->nsessions++] = session;
    return 1;
}

/* The session a new connection offers, NULL if none. A TLS 1.3 client
 * that resumed marks the session spent (a ticket is for one connection):
 * a dial that starts after another resumed, and offered the same one,
 * would make a full handshake. So each dial takes a session of its own,
 * the newest; the last one left is shared, not taken, so that a burst of
 * dials that start together all offer it (servers with stateless
 * tickets take it again). Spent ones are dropped. The caller's
 * SSL_set_session takes its own reference. */
static SSL_SESSION *session_offer(rp__tls_ctx *ctx, bool *taken)
{
    while (ctx->nsessions && !SSL_SESSION_is_resumable(ctx->sessions[ctx->nsessions - 1]))
        SSL_SESSION_free(ctx->sessions[--ctx->nsessions]);
    *taken = ctx->nsessions > 1;
    return !ctx->nsessions ? NULL : *taken ? ctx->sessions[--ctx->nsessions] : ctx->sessions[ctx->nsessions - 1];
}

/* The server changed (a new certificate, a new CA): the next dials
 * verify it afresh rather than resuming what they knew. */
static void sessions_drop(rp__tls_ctx *ctx)
{
    while (ctx->nsessions)
        SSL_SESSION_free(ctx->sessions[--ctx->nsessions]);
}

/* --------------------------------------------------------------- context */

static int ctx_failure(const char *what)
{
    char why[256];
    describe_failure(NULL, why, sizeof why);
    log_tls(what, why);
    return RP_ETLS;
}

/* The library's own context from the options: trust, client identity,
 * versions and ciphers. */
static int ctx_configure(SSL_CTX *c, const rp_tls_options *o)
{
    if (!SSL_CTX_set_min_proto_version(c, o->min_version ? o->min_version : TLS1_2_VERSION))
        return -EINVAL;
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION);
    /* Idle connections give their record buffers back. */
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    /* Redials resume (session_new keeps the pool's newest sessions). */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c, session_new);
    if (!o->insecure) {
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
        int ok = o->ca_file || o->ca_dir ? SSL_CTX_load_verify_locations(c, o->ca_file, o->ca_dir)
                                         : SSL_CTX_set_default_verify_paths(c);
        if (!ok)
            return ctx_failure("loading the CA certificates");
    }
    if (!o->cert_file != !o->key_file)
        return -EINVAL; /* a certificate needs its key, and a key its certificate */
    if (o->cert_file && (SSL_CTX_use_certificate_chain_file(c, o->cert_file) != 1 ||
                         SSL_CTX_use_PrivateKey_file(c, o->key_file, SSL_FILETYPE_PEM) != 1 ||
                         SSL_CTX_check_private_key(c) != 1))
        return ctx_failure("loading the client certificate and key");
    if (o->ciphers && SSL_CTX_set_cipher_list(c, o->ciphers) != 1)
        return ctx_failure("the TLS 1.2 cipher list");
    if (o->ciphersuites && SSL_CTX_set_ciphersuites(c, o->ciphersuites) != 1)
        return ctx_failure("the TLS 1.3 cipher suites");
    return 0;
}

/* The name to send and verify: the option, else the address's host. A
 * pool made without an address (Sentinel's) names each target's host as
 * rp__tls_ctx_retarget tells it. */
static int ctx_name_from(rp__tls_ctx *ctx, const char *option, const char *addr, bool own_ctx)
{
    rp__addr parsed;
    rp__hostport host;
    int rc = option ? 0 : rp__addr_parse(addr, &parsed, &host);
    if (rc < 0)
        return rc;
    const char *name = option ? option : parsed.sa.ss_family == AF_UNIX ? NULL : host.host;
    if (!name)
        return ctx->verify_name && own_ctx ? -EINVAL : 0;
    char *copy = rp__strdup(name);
    if (!copy)
        return -ENOMEM;
    unsigned char ip[16];
    ctx->name_is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    rp__free(ctx->server_name);
    ctx->server_name = copy;
    return 0;
}

static int ctx_server_name(rp__tls_ctx *ctx, const rp_tls_options *o, const char *addr)
{
    ctx->verify_name = !o->insecure;
    ctx->name_follows_target = !o->server_name && !addr;
    return ctx->name_follows_target ? 0 : ctx_name_from(ctx, o->server_name, addr, !o->ssl_ctx);
}

int rp__tls_ctx_retarget(rp__tls_ctx *ctx, const char *addr)
{
    if (!ctx || !ctx->name_follows_target)
        return 0;
    int rc = ctx_name_from(ctx, NULL, addr, true);
    if (rc == 0) /* the old node's sessions mean nothing to the new one */
        sessions_drop(ctx);
    return rc;
}

int rp__tls_ctx_new(rp__tls_ctx **out, const rp_tls_options *o, const char *addr)
{
    *out = NULL;
    if (!o->enable && !o->ssl_ctx)
        return 0;
    if (o->min_version && o->min_version != TLS1_2_VERSION && o->min_version != TLS1_3_VERSION)
        return -EINVAL;
    int loaded = ossl_load();
    if (loaded < 0)
        return loaded;
    rp__tls_ctx *ctx = rp__calloc(1, sizeof *ctx);
    if (!ctx)
        return -ENOMEM;
    ctx->refs = 1;
    int rc = ctx_server_name(ctx, o, addr);
    if (rc == 0 && o->ssl_ctx) {
        ctx->ssl_ctx = o->ssl_ctx;
        SSL_CTX_up_ref(ctx->ssl_ctx);
    } else if (rc == 0) {
        ctx->ssl_ctx = SSL_CTX_new(TLS_client_method());
        rc = ctx->ssl_ctx ? ctx_configure(ctx->ssl_ctx, o) : -ENOMEM;
        if (rc == 0)
            SSL_CTX_set_app_data(ctx->ssl_ctx, ctx); /* for session_new */
    }
    if (rc < 0) {
        ERR_clear_error();
        rp__tls_ctx_unref(ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

void rp__tls_ctx_unref(rp__tls_ctx *ctx)
{
    if (!ctx || --ctx->refs)
        return;
    sessions_drop(ctx);
    SSL_CTX_free(ctx->ssl_ctx);
    rp__free(ctx->server_name);
    rp__free(ctx);
}

const char *rp__tls_ctx_error(const rp__tls_ctx *ctx) { return ctx && ctx->error[0] ? ctx->error : NULL; }

/* ------------------------------------------------------------ connection */

/* SNI for a name (never for an address, RFC 6066), and the name or
 * address the certificate must carry. */
static int conn_set_peer(SSL *ssl, const rp__tls_ctx *ctx)
{
    if (!ctx->server_name)
        return 1;
    if (!ctx->name_is_ip && !SSL_set_tlsext_host_name(ssl, ctx->server_name))
        return 0;
    if (!ctx->verify_name)
        return 1;
    if (ctx->name_is_ip)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ctx->server_name);
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set1_host(ssl, ctx->server_name);
}

int rp__tls_conn_new(rp_conn *conn, uint32_t timeout_ms)
{
    rp__tls *t = rp__calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->ssl = SSL_new(conn->tls_ctx->ssl_ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        rp__free(t);
        ERR_clear_error();
        return -ENOMEM;
    }
    BIO_set_mem_eof_return(t->rbio, -1); /* empty: "read again later" until the peer's FIN */
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_connect_state(t->ssl);
    t->ctx = conn->tls_ctx;
    t->ctx->refs++;
    conn->tls = t;
    bool taken;
    SSL_SESSION *session = session_offer(t->ctx, &taken);
    bool ok = conn_set_peer(t->ssl, t->ctx) && (!session || SSL_set_session(t->ssl, session));
    if (taken)
        SSL_SESSION_free(session); /* t->ssl holds it now, or it is gone */
    if (!ok) {
        ERR_clear_error();
        rp__tls_conn_free(conn);
        return -ENOMEM;
    }
    t->deadline_ns = rp__loop_now_fresh(conn->loop) + (uint64_t)timeout_ms * RP__NS_PER_MS;
    return 0;
}

void rp__tls_conn_free(rp_conn *conn)
{
    rp__tls *t = conn->tls;
    if (!t)
        return;
    SSL_free(t->ssl);
    rp__tls_ctx_unref(t->ctx);
    rp__free(t);
    conn->tls = NULL;
}

/* Moves what OpenSSL queued into the send buffer once it is empty; true
 * while ciphertext waits to be sent. */
static bool out_fill(rp__tls *t)
{
    if (t->out_done == t->out_len) {
        t->out_done = t->out_len = 0;
        int n = BIO_ctrl_pending(t->wbio) ? BIO_read(t->wbio, t->out, sizeof t->out) : 0;
        t->out_len = n > 0 ? (size_t)n : 0;
    }
    return t->out_done < t->out_len;
}

static void prep_send(rp_conn *conn, struct io_uring_sqe *sqe)
{
    rp__tls *t = conn->tls;
    io_uring_prep_send(sqe, conn->fd, t->out + t->out_done, t->out_len - t->out_done, MSG_NOSIGNAL);
}

/* Ciphertext a RECV brought (res > 0) or the peer's FIN (0) goes to
 * OpenSSL. False when the read BIO could not grow to take it: those bytes
 * are lost, and the connection with them (-ENOMEM), rather than waiting
 * for records that will never be whole. */
static bool feed(rp__tls *t, int res)
{
    if (res == 0) {
        BIO_set_mem_eof_return(t->rbio, 0); /* OpenSSL reports a cut record or a missing close_notify */
        return true;
    }
    if (BIO_write(t->rbio, t->in, res) == res)
        return true;
    ERR_clear_error();
    return false;
}

/* ------------------------------------------------------------- handshake */

static void handshake_step(rp_conn *conn);

static void handshake_end(rp_conn *conn, int status)
{
    rp__tls *t = conn->tls;
    t->out_done = t->out_len = 0;
    t->plain_chunk = 0;
    t->want_read = false; /* records past the handshake may already be in */
    conn->events->dialed(conn, status);
}

/* One SEND or RECV of the handshake on the dial's op, linked to a timeout
 * for what is left of the dial's time. */
static void handshake_io(rp_conn *conn, bool is_send)
{
    rp__tls *t = conn->tls;
    uint64_t now = rp__loop_now_fresh(conn->loop);
    if (now >= t->deadline_ns) {
        handshake_end(conn, -ETIMEDOUT);
        return;
    }
    uint32_t ms = (uint32_t)((t->deadline_ns - now + RP__NS_PER_MS - 1) / RP__NS_PER_MS);
    struct io_uring_sqe *sqe, *timeout_sqe;
    rp__loop_sqe_pair(conn->loop, &sqe, &timeout_sqe);
    if (is_send)
        prep_send(conn, sqe);
    else
        io_uring_prep_recv(sqe, conn->fd, t->in, sizeof t->in, 0);
    t->hs_sending = is_send;
    rp__op_link_timeout(&conn->dial_op, sqe, timeout_sqe, &conn->dial_ts, ms);
    rp__op_start(conn->loop, &conn->dial_op, true, true);
}

/* Sends what OpenSSL wrote, else lets it go on, else reads its answer. A
 * fatal error ends the dial at once: the reason is read now, and the alert
 * OpenSSL queued is not worth a wait on a connection being dropped. */
static void handshake_step(rp_conn *conn)
{
    rp__tls *t = conn->tls;
    if (out_fill(t)) {
        handshake_io(conn, true);
        return;
    }
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    int err = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, rc);
    if (err != SSL_ERROR_NONE && err != SSL_ERROR_WANT_READ) {
        sessions_drop(t->ctx);
        handshake_end(conn, conn_failure(conn));
    }
    else if (out_fill(t))
        handshake_io(conn, true);
    else if (rc == 1)
        handshake_end(conn, 0);
    else
        handshake_io(conn, false);
}

static void handshake_done(rp__op *op)
{
    rp_conn *conn = RP__CONTAINER_OF(op, rp_conn, dial_op);
    rp__tls *t = conn->tls;
    int res = rp__op_result(op);
    if (conn->state == RP__CONN_CLOSED)
        res = -ECANCELED;
    if (res < 0) {
        handshake_end(conn, res);
        return;
    }
    if (t->hs_sending) {
        t->out_done += (size_t)res;
    } else if (!feed(t, res)) {
        handshake_end(conn, -ENOMEM);
        return;
    }
    handshake_step(conn);
}

void rp__tls_handshake(rp_conn *conn)
{
    conn->dial_op.done = handshake_done;
    handshake_step(conn);
}

/* close_notify, when it can go out whole: after the handshake, with no
 * record partly sent. One non-blocking send(2) beside the shutdown(2) and
 * close(2) that follow it; it never waits, and a full socket just skips
 * it. Servers forget the session of a connection cut without it (OpenSSL
 * drops such sessions from its cache): it is what lets redials resume. */
void rp__tls_close_notify(rp_conn *conn)
{
    rp__tls *t = conn->tls;
    if (!SSL_is_init_finished(t->ssl) || conn->send.op.pending || t->out_done < t->out_len ||
        BIO_ctrl_pending(t->wbio))
        return;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
    char alert[64];
    int n = BIO_read(t->wbio, alert, sizeof alert);
    if (n > 0 && send(conn->fd, alert, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        errno = 0; /* best effort: the close goes on */
    rp__loop_count_syscalls(conn->loop, n > 0);
}

int rp_conn_tls_resumed(const rp_conn *conn)
{
    return conn && conn->tls ? SSL_session_reused(conn->tls->ssl) : -EINVAL;
}

/* ------------------------------------------------------------------ data */

/* A send encrypts the next chunk only once the ciphertext before it is
 * out; a recv asks OpenSSL first (a NOP) unless it surely holds nothing. */
void rp__tls_io_prep(rp_conn *conn, rp__conn_io *io, bool is_send)
{
    rp__tls *t = conn->tls;
    struct io_uring_sqe *sqe = rp__loop_sqe(conn->loop);
    if (!is_send) {
        t->recv_nop = !t->want_read;
        if (t->recv_nop)
            io_uring_prep_nop(sqe);
        else
            io_uring_prep_recv(sqe, conn->fd, t->in, sizeof t->in, 0);
    } else if (out_fill(t)) {
        prep_send(conn, sqe);
    } else {
        size_t len;
        const char *plain = rp__conn_io_plaintext(io, &len);
        size_t chunk = RP__MIN(len, (size_t)RP__TLS_CHUNK), written;
        ERR_clear_error();
        if (SSL_write_ex(t->ssl, plain, chunk, &written) == 1 && out_fill(t)) {
            t->plain_chunk = written;
            prep_send(conn, sqe);
        } else {
            t->send_error = conn_failure(conn);
            io_uring_prep_nop(sqe);
        }
    }
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)&io->op);
}

int rp__tls_sent(rp_conn *conn, int res)
{
    rp__tls *t = conn->tls;
    if (t->send_error) {
        res = t->send_error;
        t->send_error = 0;
        return res;
    }
    if (res < 0)
        return res;
    t->out_done += (size_t)res;
    if (out_fill(t))
        return 0;
    size_t plain = t->plain_chunk;
    t->plain_chunk = 0;
    return (int)plain;
}

/* Plaintext from what OpenSSL holds: a count, 0 at close_notify,
 * RP__TLS_AGAIN when it needs more ciphertext, or RP_ETLS. */
static int tls_read(rp_conn *conn, void *buf, size_t len)
{
    rp__tls *t = conn->tls;
    size_t n;
    ERR_clear_error();
    int rc = SSL_read_ex(t->ssl, buf, RP__MIN(len, (size_t)1 << 30), &n);
    if (rc == 1) {
        t->want_read = !SSL_has_pending(t->ssl) && !BIO_ctrl_pending(t->rbio);
        return (int)n;
    }
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        t->want_read = true;
        return RP__TLS_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        return conn_failure(conn);
    }
}

int rp__tls_received(rp_conn *conn, rp__conn_io *io, int res)
{
    rp__tls *t = conn->tls;
    if (res < 0)
        return res;
    if (!t->recv_nop && !feed(t, res))
        return -ENOMEM;
    return tls_read(conn, io->buf, io->len);
}

/* The idle watch and the check look at OpenSSL before the socket: a
 * caller that read part of a message leaves the rest decrypted in OpenSSL,
 * where a zero-length recv cannot see it, and those bytes must fail the
 * connection as they would in the socket. */
void rp__tls_watch_prep(rp_conn *conn, struct io_uring_sqe *sqe, bool check)
{
    rp__tls *t = conn->tls;
    t->watch_check = check;
    t->watch_step = t->want_read ? WATCH_SOCKET : WATCH_PROBE;
    if (t->watch_step == WATCH_PROBE)
        io_uring_prep_nop(sqe);
    else
        io_uring_prep_recv(sqe, conn->fd, NULL, 0, check ? MSG_DONTWAIT : 0);
}

/* Nothing but records without application data (tickets, key updates):
 * the same look again, unless the owner cancelled its watch meanwhile. */
static int watch_again(rp_conn *conn)
{
    rp__tls *t = conn->tls;
    if (!t->watch_check && conn->state == RP__CONN_CHECKING)
        return -ECANCELED;
    rp__conn_watch(conn, t->watch_check);
    return RP__TLS_AGAIN;
}

/* What OpenSSL holds: plaintext nobody asked for, close_notify and a bad
 * record all fail the connection (0 or RP_ETLS). */
static int watch_probe(rp_conn *conn)
{
    char probe;
    int n = tls_read(conn, &probe, 1);
    if (n == RP__TLS_AGAIN)
        return watch_again(conn);
    return n < 0 ? n : 0;
}

bool rp__tls_holds_bytes(const rp_conn *conn) { return !conn->tls->want_read; }

int rp__tls_watched(rp_conn *conn, int res)
{
    rp__tls *t = conn->tls;
    uint8_t step = t->watch_step;
    t->watch_step = WATCH_SOCKET;
    if (step == WATCH_PROBE)
        return watch_probe(conn); /* a NOP: nothing to cancel */
    if (step == WATCH_SOCKET) {
        if (res != 0)
            return res; /* healthy, cancelled or reset: as without TLS */
        /* Bytes or a FIN wait: read them without waiting for more. */
        t->watch_step = WATCH_READ;
        struct io_uring_sqe *sqe = rp__loop_sqe(conn->loop);
        io_uring_prep_recv(sqe, conn->fd, t->in, sizeof t->in, MSG_DONTWAIT);
        io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)&conn->watch_op);
        rp__op_start(conn->loop, &conn->watch_op, false, t->watch_check);
        return RP__TLS_AGAIN;
    }
    if (res == -EAGAIN)
        return watch_again(conn);
    if (res <= 0)
        return res; /* FIN, reset, or the owner's cancel */
    return feed(t, res) ? watch_probe(conn) : -ENOMEM;
}

#else /* !RP_HAVE_TLS: the options are refused, nothing else is reachable */

static void ssl_ctx_ref(void *ssl_ctx, bool take)
{
    (void)ssl_ctx;
    (void)take;
}

bool rp_tls_available(void) { return false; }

int rp__tls_ctx_new(rp__tls_ctx **out, const rp_tls_options *o, const char *addr)
{
    (void)addr;
    *out = NULL;
    return o->enable || o->ssl_ctx ? -ENOTSUP : 0;
}

void rp__tls_ctx_unref(rp__tls_ctx *ctx) { (void)ctx; }
int rp__tls_ctx_retarget(rp__tls_ctx *ctx, const char *addr)
{
    (void)ctx;
    (void)addr;
    return 0;
}
int rp_conn_tls_resumed(const rp_conn *conn)
{
    (void)conn;
    return -EINVAL;
}
const char *rp__tls_ctx_error(const rp__tls_ctx *ctx) { (void)ctx; return NULL; }

int rp__tls_conn_new(rp_conn *conn, uint32_t timeout_ms)
{
    (void)conn;
    (void)timeout_ms;
    return -ENOTSUP;
}

void rp__tls_conn_free(rp_conn *conn) { (void)conn; }
void rp__tls_close_notify(rp_conn *conn) { (void)conn; }
void rp__tls_handshake(rp_conn *conn) { conn->events->dialed(conn, -ENOTSUP); }
void rp__tls_io_prep(rp_conn *conn, rp__conn_io *io, bool is_send)
{
    (void)conn;
    (void)io;
    (void)is_send;
}
int rp__tls_sent(rp_conn *conn, int res)
{
    (void)conn;
    return res;
}
int rp__tls_received(rp_conn *conn, rp__conn_io *io, int res)
{
    (void)conn;
    (void)io;
    return res;
}
bool rp__tls_holds_bytes(const rp_conn *conn)
{
    (void)conn;
    return false;
}

int rp__tls_watched(rp_conn *conn, int res)
{
    (void)conn;
    return res;
}
void rp__tls_watch_prep(rp_conn *conn, struct io_uring_sqe *sqe, bool check)
{
    (void)conn;
    (void)sqe;
    (void)check;
}

#endif
