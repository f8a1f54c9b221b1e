/* tls-handshakes: how fast a pool dials TLS connections, full handshakes
 * against resumed ones. Each phase makes -n fresh connections, at most -c
 * at once: every connection a get dials (TCP connect + handshake) sends
 * one PING, reads the PONG and is removed, so the next get dials again.
 * Printed per phase:
 * connections per second, client CPU (user + sys) per connection, and how
 * many resumed a session.
 *
 *   plain    with --plain PORT (a plaintext port of the same server): the
 *            same without TLS, for reference;
 *   full     the pool given an SSL_CTX of the caller's own (the library
 *            keeps no session for it: every handshake is full);
 *   resumed  the library's own context: the first dial is full, the rest
 *            offer the session the server gave (TLS 1.3 ticket).
 *
 * Both TLS phases verify the server's certificate against --cacert and
 * the name (--sni, default the host). Start a TLS-only redis-server and
 * point it there, e.g. (docs/tls.md, "Figures"):
 *   tls-handshakes -h 127.0.0.1 -p 6390 --cacert ca.crt -n 1000 -c 1 */
#include <ringpool/core.h>

#include <errno.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"

static const char usage[] =
    "usage: tls-handshakes [-h HOST] [-p PORT] --cacert FILE [--sni NAME] [--plain PORT] [-n N] [-c N]\n"
    "  Dials N fresh connections (at most C at once) to a TLS Redis port, a PING on\n"
    "  each: full handshakes, then resumed ones (and plain TCP to --plain's port);\n"
    "  prints connections per second and client CPU per connection.\n"
    "  -h HOST  default 127.0.0.1;  -p PORT  default 6379;  -n  default 1000;  -c  default 1\n";

typedef struct run {
    rp_pool *pool;
    long want, started, done, resumed;
    int error;
} run;

static void on_conn(rp_pool *pool, rp_conn *conn, int status, void *data);

/* Another get, while the phase wants more. */
static void next_get(run *r)
{
    if (r->started >= r->want || r->error)
        return;
    r->started++;
    int64_t id = rp_pool_get(r->pool, on_conn, r);
    if (id < 0)
        r->error = (int)id;
}

/* The PONG came (or not): the connection goes, the next get dials again. */
static void on_pong(rp_conn *conn, const char *line, ssize_t len, void *data)
{
    run *r = data;
    if (len < 0 || len != 7 || memcmp(line, "+PONG\r\n", 7))
        r->error = len < 0 ? (int)len : -EPROTO;
    r->done++;
    r->resumed += rp_conn_tls_resumed(conn) == 1;
    rp_pool_remove(r->pool, conn, 0);
    next_get(r);
}

static void on_sent(rp_conn *conn, ssize_t result, void *data)
{
    run *r = data;
    int rc = result < 0 ? (int)result : rp_conn_recv_until(conn, "\r\n", 2, 64, on_pong, r);
    if (rc < 0) {
        r->error = rc;
        rp_pool_remove(r->pool, conn, rc);
    }
}

/* A PING on each connection: the server's session tickets come after the
 * handshake, and a connection closed before it read anything has none to
 * leave for the next dial. */
static void on_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    run *r = data;
    int rc = status < 0 ? status : rp_conn_send(conn, "PING\r\n", 6, on_sent, r);
    if (rc < 0) {
        r->error = rc;
        if (conn)
            rp_pool_remove(pool, conn, rc);
    }
}

/* One phase: n dials through a pool made with opts; prints its line. */
static int phase(const char *name, rp_pool_options *opts, long n, long c)
{
    rp_loop *loop;
    int rc = rp_loop_new(&loop, NULL);
    run r = {.want = n};
    opts->pool_size = (int)c;
    if (rc == 0 && (rc = rp_pool_new(&r.pool, loop, opts)) < 0)
        rp_loop_free(loop);
    if (rc < 0) {
        fprintf(stderr, "tls-handshakes: %s: %s\n", name, rp_strerror(rc));
        return rc;
    }
    double wall = example_seconds(), cpu = example_cpu_seconds();
    for (long i = 0; i < c; i++)
        next_get(&r);
    while (r.done < n && !r.error)
        rp_loop_run(loop, RP_RUN_ONCE);
    wall = example_seconds() - wall;
    cpu = example_cpu_seconds() - cpu;
    if (r.error) {
        const char *why = rp_pool_tls_error(r.pool);
        fprintf(stderr, "tls-handshakes: %s: %s%s%s\n", name, rp_strerror(r.error), why ? ": " : "", why ? why : "");
    } else {
        printf("%-8s %ld connections in %.3f s: %8.0f/s, client CPU %6.1f us per connection, %ld resumed\n", name, n,
               wall, (double)n / wall, cpu * 1e6 / (double)n, r.resumed);
    }
    rp_pool_close(r.pool, NULL, NULL);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    rp_loop_free(loop);
    return r.error;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = "6379", *cacert = NULL, *sni = NULL, *plain = NULL;
    long n = 1000, c = 1;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "--help")) {
            printf("%s", usage);
            return 0;
        }
        if (!value) {
            fprintf(stderr, "unknown or incomplete option: %s\n\n%s", flag, usage);
            return 2;
        }
        i++;
        if (!strcmp(flag, "-h"))
            host = value;
        else if (!strcmp(flag, "-p"))
            port = value;
        else if (!strcmp(flag, "--cacert"))
            cacert = value;
        else if (!strcmp(flag, "--sni"))
            sni = value;
        else if (!strcmp(flag, "--plain"))
            plain = value;
        else if (!strcmp(flag, "-n") && (n = atol(value)) > 0)
            continue;
        else if (!strcmp(flag, "-c") && (c = atol(value)) > 0 && c <= 10000)
            continue;
        else {
            fprintf(stderr, "unknown or bad option: %s %s\n\n%s", flag, value, usage);
            return 2;
        }
    }
    if (!cacert) {
        fprintf(stderr, "tls-handshakes: --cacert is needed\n\n%s", usage);
        return 2;
    }
    bool v6 = strchr(host, ':');
    char addr[300];
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = addr;
    opts.dial_timeout_ms = 10000;
    int rc = 0;
    if (plain) {
        snprintf(addr, sizeof addr, "%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "", plain);
        rc = phase("plain", &opts, n, c);
    }
    snprintf(addr, sizeof addr, "%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "", port);

    /* A context of our own: verifies as the library's does, keeps no
     * session, so every handshake is a full one. */
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, cacert, NULL) != 1) {
        fprintf(stderr, "tls-handshakes: cannot load %s\n", cacert);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    opts.tls.enable = true;
    opts.tls.server_name = sni;
    opts.tls.ssl_ctx = ctx;
    rc = rc ? rc : phase("full", &opts, n, c);
    SSL_CTX_free(ctx);

    opts.tls.ssl_ctx = NULL;
    opts.tls.ca_file = cacert;
    rc = rc ? rc : phase("resumed", &opts, n, c);
    return rc ? 1 : 0;
}
