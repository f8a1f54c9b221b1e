/* The allocation-failure sweep of OpenSSL's own allocations in a TLS dial,
 * run by test_tls (tls/openssl_allocation_failures_in_the_handshake) as a
 * process of its own: OpenSSL takes a new allocator only before its first
 * allocation, and criterion's start-up (libgit2, libssh2) has made one in
 * every test process. rp_set_allocator's sweep (tls/allocation_failures_
 * in_the_tls_dial) covers the library's allocations; SSL_new, its BIOs and
 * the handshake's state and messages are OpenSSL's.
 *
 * usage: tls_openssl_sweep ADDR CA_FILE [STRIDE [FIRST]]
 * For n = FIRST, FIRST + STRIDE, ... (default 1 and 1: every one) up to
 * the allocations
 * a clean dial makes (about 3900 with OpenSSL 3.0), a pool dials
 * ADDR with OpenSSL's nth allocation of that dial failing (counted from
 * the get to its callback). Every run must end with the get's callback
 * once within the dial timeout, with a connection that answers PING or
 * with RP_ETLS or -ENOMEM, the pool closed and the loop freed; a clean
 * dial must work after the sweep. Exit 0 when all held, 1 with the
 * reason (and LeakSanitizer's exit code in ASan builds). */
#include <ringpool/core.h>

#include <errno.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool armed;
static long count, fail_at;

static bool fails(void) { return armed && ++count == fail_at; }

static void *sweep_malloc(size_t size, const char *file, int line)
{
    (void)file, (void)line;
    return fails() ? NULL : malloc(size);
}

static void *sweep_realloc(void *ptr, size_t size, const char *file, int line)
{
    (void)file, (void)line;
    return fails() ? NULL : realloc(ptr, size);
}

static void sweep_free(void *ptr, const char *file, int line)
{
    (void)file, (void)line;
    free(ptr);
}

static const char *addr, *ca_file;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "tls_openssl_sweep: allocation %ld failing: ", fail_at);                                  \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void run_until(rp_loop *loop, const int *flag, int want, unsigned ms)
{
    for (uint64_t deadline = now_ms() + ms; *flag < want && now_ms() < deadline;)
        rp_loop_run(loop, RP_RUN_NOWAIT);
}

typedef struct dial {
    rp_conn *conn;
    int status, calls, io_calls;
    ssize_t io;
    char buf[16];
} dial;

static void got_cb(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    dial *d = data;
    d->calls++;
    d->conn = conn;
    d->status = status;
}

static void io_cb(rp_conn *conn, ssize_t result, void *data)
{
    (void)conn;
    dial *d = data;
    d->io_calls++;
    d->io = result;
}

/* PING over the connection (no failure armed): PONG comes back. */
static bool ping(rp_loop *loop, dial *d)
{
    d->io_calls = 0;
    CHECK(rp_conn_send(d->conn, "PING\r\n", 6, io_cb, d) == 0, "send refused");
    run_until(loop, &d->io_calls, 1, 5000);
    if (d->io != 6)
        return false;
    d->io_calls = 0;
    CHECK(rp_conn_recv(d->conn, d->buf, 7, io_cb, d) == 0, "recv refused");
    run_until(loop, &d->io_calls, 1, 5000);
    return d->io == 7 && !memcmp(d->buf, "+PONG\r\n", 7);
}

static void closed_cb(rp_pool *pool, void *data)
{
    (void)pool;
    (*(int *)data)++;
}

/* One dial with OpenSSL's nth allocation failing (0: none): true if it
 * gave a connection that answers PING. */
static bool dial_once(long n)
{
    rp_loop *loop;
    rp_pool *pool;
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = addr;
    opts.pool_size = 1;
    opts.dial_timeout_ms = 2000;
    opts.tls.enable = true;
    opts.tls.ca_file = ca_file;
    CHECK(rp_loop_new(&loop, NULL) == 0, "rp_loop_new");
    CHECK(rp_pool_new(&pool, loop, &opts) == 0, "rp_pool_new");
    dial d = {0};
    count = 0;
    fail_at = n;
    armed = true;
    CHECK(rp_pool_get(pool, got_cb, &d) > 0, "rp_pool_get refused");
    run_until(loop, &d.calls, 1, 5000);
    armed = false;
    for (uint64_t until = now_ms() + 1; now_ms() < until;) /* a second callback would come now */
        rp_loop_run(loop, RP_RUN_NOWAIT);
    CHECK(d.calls == 1, "the get's callback ran %d times", d.calls);
    CHECK(d.status == 0 || d.status == RP_ETLS || d.status == -ENOMEM, "the get ended with %s",
          rp_strerror(d.status));
    bool ok = d.status == 0;
    if (ok) {
        CHECK(ping(loop, &d), "the dial succeeded and the connection failed PING");
        rp_pool_put(pool, d.conn);
    }
    int closed = 0;
    CHECK(rp_pool_close(pool, closed_cb, &closed) == 0, "rp_pool_close");
    run_until(loop, &closed, 1, 5000);
    CHECK(closed == 1, "the pool's close callback ran %d times", closed);
    CHECK(rp_loop_free(loop) == 0, "the loop was not empty");
    return ok;
}

int main(int argc, char **argv)
{
    long stride = argc >= 4 ? atol(argv[3]) : 1, first = argc >= 5 ? atol(argv[4]) : 1;
    if (argc < 3 || argc > 5 || stride < 1 || first < 1) {
        fprintf(stderr, "usage: tls_openssl_sweep ADDR CA_FILE [STRIDE [FIRST]]\n");
        return 2;
    }
    addr = argv[1];
    ca_file = argv[2];
    setenv("RINGPOOL_QUIET", "1", 1);
    CHECK(CRYPTO_set_mem_functions(sweep_malloc, sweep_realloc, sweep_free) == 1,
          "OpenSSL allocated before main: it keeps its allocator");
    /* The first dial does OpenSSL's one-time set-up (providers, algorithm
     * fetches), which a failure would leave half done for the process:
     * the sweep is of what every dial allocates. */
    CHECK(dial_once(0), "the first run without failures failed");
    CHECK(dial_once(0), "the second run without failures failed");
    long total = count, failed = 0, runs = 0;
    CHECK(total > 0, "a dial made no OpenSSL allocation");
    for (long n = first; n <= total; n += stride, runs++)
        failed += !dial_once(n);
    fail_at = 0;
    CHECK(dial_once(0), "a clean run after the sweep failed");
    CHECK(failed > 0, "no failing allocation failed a dial");
    printf("tls_openssl_sweep: %ld allocations in a dial; %ld of them failed in turn, %ld failing the dial\n", total,
           runs, failed);
    return 0;
}
