/* memcached: a memcached text-protocol client (get, set, delete) on the raw
 * pool alone: <ringpool/core.h>, linked with ringpool-core, no hiredis.
 *
 * A batch of commands (one, or many pipelined) takes a connection from the
 * pool and writes every request with one rp_conn_roundtrip (a set's header,
 * its value in place and "\r\n": no copy, no pause between the pieces),
 * which also receives the first reply; the others follow in order: a get's
 * with rp_conn_recv_frame, whose frame function knows the reply's length
 * from its "VALUE <key> <flags> <bytes>" line before the value is all in,
 * the others' with rp_conn_recv_until "\r\n". The connection's receive buffer keeps what follows a reply for
 * the next one, and a put with bytes left unread removes the connection, so
 * no reply reaches another holder. Every command's callback runs once.
 *
 * Without -b it sets, gets and deletes a few keys and prints them; with -b
 * get|set it is a benchmark: -c callers, each with one batch of -p
 * requests at a time, -n requests in all, values of -d bytes. It prints
 * requests/s, the p50 and p99 latency of a batch, the client's CPU time per
 * request (getrusage), its peak RSS (VmHWM) and the library's syscalls per
 * request (rp_loop_stats).
 *
 * The client part (mc_*) is used by tests/test_memcached.c, which defines
 * MC_NO_MAIN and includes this file. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <ringpool/core.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "common.h"

#define MC_KEY_MAX 250
#define MC_LINE_MAX 512                     /* a reply's first line */
#define MC_VALUE_MAX (2u * 1024 * 1024)     /* memcached -I 2m */
#define MC_REPLY_MAX (MC_VALUE_MAX + MC_LINE_MAX + 7)
#define MC_DEPTH_MAX 256                    /* 3 pieces a set: within IOV_MAX */
#define MC_HEADER_MAX (MC_KEY_MAX + 48)

/* A command's outcome: a reply (>= 0) or a negative code (the command's
 * reply never came, or made no sense: the connection was removed). */
enum {
    MC_OK = 0,        /* STORED, DELETED, or a get's value */
    MC_NOT_FOUND = 1, /* a get's miss (END), a delete's NOT_FOUND */
    MC_NOT_STORED = 2,
    MC_ERROR = 3,     /* ERROR, CLIENT_ERROR or SERVER_ERROR */
};
typedef enum { MC_GET, MC_SET, MC_DELETE } mc_op;

typedef struct mc_cmd mc_cmd;
/* value and len: a get's value, valid until the callback returns. */
typedef void (*mc_cb)(mc_cmd *cmd, int status, const char *value, size_t len, uint32_t flags);
struct mc_cmd {
    mc_op op;
    const char *key;   /* as the whole command: must live until the batch is done */
    const void *value; /* a set's: must live until the batch is done */
    size_t len;
    uint32_t flags;
    mc_cb cb;
    void *data;
};
/* The batch is done: every command's callback ran. status: 0, or the code
 * that ended it early. */
typedef void (*mc_done_cb)(int status, void *data);

typedef struct mc_batch {
    rp_pool *pool;
    rp_conn *conn;
    mc_cmd *cmds;
    int n, next;   /* next: the command whose reply is read next */
    int status;    /* the first error, which ends the batch */
    bool reading, released;
    bool refused;  /* an error reply: the stream may be out of step */
    mc_done_cb done;
    void *data;
    struct iovec *iov;
    char *headers; /* MC_HEADER_MAX a command: "get <key>\r\n", ... */
} mc_batch;

static bool mc_key_ok(const char *key)
{
    size_t len = key ? strlen(key) : 0;
    if (len == 0 || len > MC_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f)
            return false;
    return true;
}

/* Gives the connection back once: put after a clean batch, removed after
 * an error or an error reply (a remove ends the I/O in flight on it: their
 * callbacks still come, with -ECANCELED). */
static void mc_release(mc_batch *b)
{
    if (!b->conn || b->released)
        return;
    b->released = true;
    if (b->status < 0 || b->refused)
        rp_pool_remove(b->pool, b->conn, b->status < 0 ? b->status : -EPROTO);
    else
        rp_pool_put(b->pool, b->conn);
}

/* Ends the batch when no receive is in flight (a put with I/O in flight
 * would remove the connection, and its callback still uses the batch):
 * the commands whose replies did not come get the
 * error, then the batch's own callback. */
static void mc_settle(mc_batch *b)
{
    if (b->status < 0)
        mc_release(b);
    if (b->reading)
        return;
    mc_release(b);
    for (; b->next < b->n; b->next++)
        b->cmds[b->next].cb(&b->cmds[b->next], b->status, NULL, 0, 0);
    b->done(b->status, b->data);
    free(b);
}

static void mc_fail(mc_batch *b, int status)
{
    if (!b->status)
        b->status = status;
    mc_settle(b);
}

/* " <decimal>" at *p, before end. */
static bool mc_number(const char **p, const char *end, unsigned long long *out)
{
    const char *s = *p;
    if (end - s < 2 || s[0] != ' ' || s[1] < '0' || s[1] > '9')
        return false;
    unsigned long long v = 0;
    for (s++; s < end && *s >= '0' && *s <= '9'; s++) {
        if (v > (ULLONG_MAX - 9) / 10)
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    *p = s;
    *out = v;
    return true;
}

/* "VALUE <key> <flags> <bytes>[ <cas>]\r\n", len bytes with the "\r\n". */
static bool mc_value_line(const char *line, size_t len, const char **key, size_t *klen, uint32_t *flags,
                          size_t *bytes)
{
    const char *p = line + 6, *end = line + len - 2;
    *key = p;
    while (p < end && *p != ' ')
        p++;
    *klen = (size_t)(p - *key);
    unsigned long long f, n, cas;
    if (!*klen || *klen > MC_KEY_MAX || !mc_number(&p, end, &f) || f > UINT32_MAX || !mc_number(&p, end, &n) ||
        n > MC_VALUE_MAX || (p < end && (!mc_number(&p, end, &cas) || p < end)))
        return false;
    *flags = (uint32_t)f;
    *bytes = (size_t)n;
    return true;
}

/* Where a get's reply ends: "END\r\n" (a miss), an error line, or
 * "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\nEND\r\n", whose
 * length the first line tells before the data is in. */
static ssize_t mc_get_frame(const char *data, size_t len, void *arg)
{
    (void)arg;
    const char *eol = memmem(data, len, "\r\n", 2);
    if (!eol)
        return len > MC_LINE_MAX ? -EPROTO : 0;
    size_t line = (size_t)(eol - data) + 2, klen, bytes;
    if (line < 6 || memcmp(data, "VALUE ", 6))
        return (ssize_t)line;
    const char *key;
    uint32_t flags;
    if (!mc_value_line(data, line, &key, &klen, &flags, &bytes)) {
        unsigned long long n;
        const char *p = memrchr(data, ' ', line - 2);
        /* A value past MC_VALUE_MAX is too big, not malformed. */
        return p && mc_number(&p, eol, &n) && p == eol && n > MC_VALUE_MAX ? -EMSGSIZE : -EPROTO;
    }
    return (ssize_t)(line + bytes + 7);
}

/* A reply's status for cmd; a get's value in *value, *len, *flags. */
static int mc_parse(const mc_cmd *cmd, const char *r, size_t n, const char **value, size_t *len, uint32_t *flags)
{
#define MC_IS(text) (n == sizeof text - 1 && !memcmp(r, text, n))
    if (!memcmp(r, "ERROR", 5) || !memcmp(r, "CLIENT_ERROR", 12) || !memcmp(r, "SERVER_ERROR", 12))
        return MC_ERROR;
    switch (cmd->op) {
    case MC_SET:
        return MC_IS("STORED\r\n") ? MC_OK : MC_IS("NOT_STORED\r\n") ? MC_NOT_STORED : -EPROTO;
    case MC_DELETE:
        return MC_IS("DELETED\r\n") ? MC_OK : MC_IS("NOT_FOUND\r\n") ? MC_NOT_FOUND : -EPROTO;
    case MC_GET:
        break;
    }
    if (MC_IS("END\r\n"))
        return MC_NOT_FOUND;
#undef MC_IS
    /* The frame function checked the first line: a VALUE line, and the
     * frame as long as it says. It must answer this command's key. */
    const char *data = (const char *)memmem(r, n, "\r\n", 2) + 2, *key;
    size_t klen, bytes;
    if (!mc_value_line(r, (size_t)(data - r), &key, &klen, flags, &bytes) || klen != strlen(cmd->key) ||
        memcmp(key, cmd->key, klen) || memcmp(data + bytes, "\r\nEND\r\n", 7))
        return -EPROTO;
    *value = data;
    *len = bytes;
    return MC_OK;
}

static void mc_read_next(mc_batch *b);

static void mc_on_reply(rp_conn *conn, const char *frame, ssize_t n, void *data)
{
    (void)conn;
    mc_batch *b = data;
    b->reading = false;
    if (b->status < 0) { /* the batch failed meanwhile: this is its -ECANCELED */
        mc_settle(b);
        return;
    }
    mc_cmd *cmd = &b->cmds[b->next];
    const char *value = NULL;
    size_t len = 0;
    uint32_t flags = 0;
    int status = n < 0 ? (int)n : mc_parse(cmd, frame, (size_t)n, &value, &len, &flags);
    if (status < 0) {
        mc_fail(b, status);
        return;
    }
    b->refused |= status == MC_ERROR;
    b->next++;
    cmd->cb(cmd, status, value, len, flags);
    if (b->next < b->n)
        mc_read_next(b);
    else
        mc_settle(b);
}

static void mc_read_next(mc_batch *b)
{
    int rc = b->cmds[b->next].op == MC_GET
                 ? rp_conn_recv_frame(b->conn, mc_get_frame, NULL, MC_REPLY_MAX, mc_on_reply, b)
                 : rp_conn_recv_until(b->conn, "\r\n", 2, MC_LINE_MAX, mc_on_reply, b);
    if (rc < 0)
        mc_fail(b, rc);
    else
        b->reading = true;
}

/* Sends every request and receives the first reply with one
 * rp_conn_roundtrip: one io_uring_enter, one wake-up a round trip. */
static void mc_on_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    mc_batch *b = data;
    b->conn = conn;
    if (status < 0) {
        mc_fail(b, status);
        return;
    }
    int iovcnt = 0;
    for (int i = 0; i < b->n; i++) {
        const mc_cmd *cmd = &b->cmds[i];
        char *h = b->headers + (size_t)i * MC_HEADER_MAX;
        int hlen = cmd->op == MC_GET      ? snprintf(h, MC_HEADER_MAX, "get %s\r\n", cmd->key)
                   : cmd->op == MC_DELETE ? snprintf(h, MC_HEADER_MAX, "delete %s\r\n", cmd->key)
                                          : snprintf(h, MC_HEADER_MAX, "set %s %u 0 %zu\r\n", cmd->key,
                                                     cmd->flags, cmd->len);
        b->iov[iovcnt++] = (struct iovec){h, (size_t)hlen};
        if (cmd->op == MC_SET && cmd->len)
            b->iov[iovcnt++] = (struct iovec){(void *)cmd->value, cmd->len};
        if (cmd->op == MC_SET)
            b->iov[iovcnt++] = (struct iovec){"\r\n", 2};
    }
    /* mc_get_frame ends any first reply: a line unless it is a VALUE. */
    size_t max = b->cmds[0].op == MC_GET ? MC_REPLY_MAX : MC_LINE_MAX;
    int rc = rp_conn_roundtrip(conn, b->iov, iovcnt, mc_get_frame, NULL, max, mc_on_reply, b);
    if (rc < 0) {
        mc_fail(b, rc);
        return;
    }
    b->reading = true;
}

/* Runs n commands (1 to MC_DEPTH_MAX) pipelined on one connection of pool:
 * each command's callback once, in order, then done. cmds must live until
 * done. Returns 0, or a negative code (no callback runs): -EINVAL for a
 * bad key or count or a value over MC_VALUE_MAX, or rp_pool_get's code. */
static int mc_run(rp_pool *pool, mc_cmd *cmds, int n, mc_done_cb done, void *data)
{
    if (n < 1 || n > MC_DEPTH_MAX || !done)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (!mc_key_ok(cmds[i].key) || !cmds[i].cb || (cmds[i].op == MC_SET && cmds[i].len > MC_VALUE_MAX))
            return -EINVAL;
    size_t iov_bytes = (size_t)n * 3 * sizeof(struct iovec);
    mc_batch *b = malloc(sizeof *b + iov_bytes + (size_t)n * MC_HEADER_MAX);
    if (!b)
        return -ENOMEM;
    *b = (mc_batch){.pool = pool, .cmds = cmds, .n = n, .done = done, .data = data};
    b->iov = (struct iovec *)(b + 1);
    b->headers = (char *)b->iov + iov_bytes;
    int64_t rc = rp_pool_get(pool, mc_on_conn, b);
    if (rc < 0) {
        free(b);
        return (int)rc;
    }
    return 0;
}

static const char *mc_status_text(int status)
{
    switch (status) {
    case MC_OK: return "ok";
    case MC_NOT_FOUND: return "not found";
    case MC_NOT_STORED: return "not stored";
    case MC_ERROR: return "error reply";
    default: return rp_strerror(status);
    }
}

#ifndef MC_NO_MAIN

static const char usage[] =
    "usage: memcached [-a ADDR] [-b get|set] [-c N] [-n N] [-d BYTES] [-p DEPTH] [-k KEYS]\n"
    "  A memcached text-protocol client on the raw ringpool pool.\n"
    "  -a ADDR   host:port, [v6]:port or unix:/path (default 127.0.0.1:11211)\n"
    "  Without -b: sets, gets and deletes a few keys and prints them.\n"
    "  -b OP     benchmark get or set (gets read keys set beforehand)\n"
    "  -c N      callers, each with one batch in flight (default 50)\n"
    "  -n N      requests in all (default 100000)\n"
    "  -d BYTES  value size (default 32)\n"
    "  -p DEPTH  requests pipelined in a batch (default 1, at most 256)\n"
    "  -k KEYS   distinct keys (default 10000)\n";

typedef struct opts {
    const char *addr, *bench;
    long c, n, d, p, k;
} opts;

static void parse(int argc, char **argv, opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            printf("%s", usage);
            exit(0);
        }
        if (i + 1 >= argc || f[0] != '-' || strlen(f) != 2 || !strchr("abcndpk", f[1])) {
            fprintf(stderr, "unknown or incomplete option: %s\n\n%s", f, usage);
            exit(2);
        }
        const char *v = argv[++i];
        char *end;
        long num = strtol(v, &end, 10);
        bool is_num = end != v && !*end && num >= 1;
        switch (f[1]) {
        case 'a': o->addr = v; continue;
        case 'b': o->bench = v; is_num = !strcmp(v, "get") || !strcmp(v, "set"); break;
        case 'c': o->c = num; break;
        case 'n': o->n = num; break;
        case 'd': o->d = num; is_num &= num <= (long)MC_VALUE_MAX; break;
        case 'p': o->p = num; is_num &= num <= MC_DEPTH_MAX; break;
        case 'k': o->k = num; break;
        }
        if (!is_num) {
            fprintf(stderr, "bad value for %s: %s\n\n%s", f, v, usage);
            exit(2);
        }
    }
}

/* ---------------------------------------------------------------- demo */

static void demo_printed(mc_cmd *cmd, int status, const char *value, size_t len, uint32_t flags)
{
    const char *op = cmd->op == MC_GET ? "get" : cmd->op == MC_SET ? "set" : "delete";
    if (cmd->op == MC_GET && status == MC_OK)
        printf("%s %s: %.*s (flags %u)\n", op, cmd->key, (int)len, value, flags);
    else
        printf("%s %s: %s\n", op, cmd->key, mc_status_text(status));
    *(int *)cmd->data += status < 0;
}

static void demo_done(int status, void *data)
{
    (void)status;
    (*(int *)data)++;
}

static int demo(rp_loop *loop, rp_pool *pool)
{
    int failed = 0, batches = 0;
    const char *greeting = "hello, memcached";
    /* One command at a time, then three pipelined in one batch. */
    mc_cmd steps[][3] = {
        {{MC_SET, "greeting", greeting, strlen(greeting), 7, demo_printed, &failed}},
        {{MC_GET, "greeting", .cb = demo_printed, .data = &failed}},
        {{MC_SET, "pipelined", "one batch", 9, 0, demo_printed, &failed},
         {MC_GET, "pipelined", .cb = demo_printed, .data = &failed},
         {MC_DELETE, "greeting", .cb = demo_printed, .data = &failed}},
        {{MC_GET, "greeting", .cb = demo_printed, .data = &failed}},
    };
    int sizes[] = {1, 1, 3, 1};
    for (int i = 0; i < 4; i++) {
        int rc = mc_run(pool, steps[i], sizes[i], demo_done, &batches);
        if (rc < 0)
            return rc;
        while (batches <= i)
            rp_loop_run(loop, RP_RUN_ONCE);
    }
    return failed ? -EIO : 0;
}

/* ----------------------------------------------------------- benchmark */

typedef struct bench {
    rp_loop *loop;
    rp_pool *pool;
    const opts *o;
    mc_op op;
    long n, issued, done, errors, active;
    uint32_t *latency_ns; /* one a request: its batch's */
} bench;

typedef struct caller {
    bench *b;
    uint64_t start;
    int count;
    mc_cmd *cmds;
    char *keys;   /* 16 bytes a command */
    char *values; /* d bytes a command */
} caller;

/* The value of a key: "<key>=" then dots, d bytes in all. */
static void bench_value(char *out, size_t d, const char *key)
{
    size_t klen = strlen(key);
    memset(out, '.', d);
    memcpy(out, key, klen < d ? klen : d);
    if (klen < d)
        out[klen] = '=';
}

static void bench_checked(mc_cmd *cmd, int status, const char *value, size_t len, uint32_t flags)
{
    caller *c = cmd->data;
    size_t d = (size_t)c->b->o->d, klen = strlen(cmd->key);
    (void)flags;
    bool ok = status == MC_OK;
    if (ok && cmd->op == MC_GET)
        ok = len == d && !memcmp(value, cmd->key, klen < d ? klen : d) && (klen >= d || value[klen] == '=');
    c->b->errors += !ok;
}

static void bench_next(caller *c);

static void bench_done(int status, void *data)
{
    caller *c = data;
    bench *b = c->b;
    (void)status;
    uint64_t ns = example_now_ns() - c->start;
    for (int i = 0; i < c->count; i++)
        b->latency_ns[b->done++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
    bench_next(c);
}

static void bench_next(caller *c)
{
    bench *b = c->b;
    c->count = (int)(b->n - b->issued < b->o->p ? b->n - b->issued : b->o->p);
    if (c->count <= 0) {
        if (--b->active == 0)
            rp_loop_stop(b->loop);
        return;
    }
    for (int i = 0; i < c->count; i++) {
        char *key = c->keys + (size_t)i * 16;
        snprintf(key, 16, "k:%ld", (b->issued + i) % b->o->k);
        mc_cmd *cmd = &c->cmds[i];
        *cmd = (mc_cmd){.op = b->op, .key = key, .cb = bench_checked, .data = c};
        if (b->op == MC_SET) {
            cmd->value = c->values + (size_t)i * (size_t)b->o->d;
            cmd->len = (size_t)b->o->d;
            bench_value((char *)cmd->value, cmd->len, key);
        }
    }
    b->issued += c->count;
    c->start = example_now_ns();
    int rc = mc_run(b->pool, c->cmds, c->count, bench_done, c);
    if (rc < 0) {
        fprintf(stderr, "memcached: %s\n", rp_strerror(rc));
        exit(1);
    }
}

/* Runs n requests of op with every caller; returns the seconds taken. */
static double bench_phase(bench *b, caller *callers, mc_op op, long n)
{
    b->op = op;
    b->n = n;
    b->issued = b->done = b->errors = 0;
    b->active = b->o->c;
    double t0 = example_seconds();
    for (long i = 0; i < b->o->c; i++)
        bench_next(&callers[i]);
    /* One run for the phase: a run's end submits what its callbacks queued
     * (a host may wait on rp_loop_fd next), an enter a RP_RUN_ONCE would
     * add to every round trip. */
    while (b->active > 0)
        rp_loop_run(b->loop, RP_RUN_DEFAULT);
    return example_seconds() - t0;
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

static long peak_rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static int benchmark(rp_loop *loop, rp_pool *pool, const opts *o)
{
    bench b = {.loop = loop, .pool = pool, .o = o};
    b.latency_ns = malloc((size_t)(o->n > o->k ? o->n : o->k) * sizeof *b.latency_ns);
    caller *callers = calloc((size_t)o->c, sizeof *callers);
    for (long i = 0; i < o->c; i++) {
        callers[i].b = &b;
        callers[i].cmds = malloc((size_t)o->p * sizeof(mc_cmd));
        callers[i].keys = malloc((size_t)o->p * 16);
        callers[i].values = malloc((size_t)(o->p * o->d));
    }
    /* Every key set first: the gets find them, and the pool is warm. */
    bench_phase(&b, callers, MC_SET, o->k);
    long set_errors = b.errors;
    rp_loop_stats ls0, ls1;
    rp_loop_stats_get(loop, &ls0);
    double cpu0 = example_cpu_seconds();
    double secs = bench_phase(&b, callers, strcmp(o->bench, "get") ? MC_SET : MC_GET, o->n);
    double cpu = example_cpu_seconds() - cpu0;
    rp_loop_stats_get(loop, &ls1);
    qsort(b.latency_ns, (size_t)b.done, sizeof *b.latency_ns, cmp_u32);
    printf("memcached %s: c=%ld depth=%ld d=%ld: %ld requests, %ld errors, %.0f requests/s, p50 %.1f us, "
           "p99 %.1f us, cpu %.2f us/request, peak RSS %.1f MB, %.2f syscalls/request\n",
           o->bench, o->c, o->p, o->d, b.done, b.errors + set_errors, (double)b.done / secs,
           b.latency_ns[b.done / 2] / 1e3, b.latency_ns[b.done * 99 / 100] / 1e3, cpu * 1e6 / (double)b.done,
           (double)peak_rss_kb() / 1024, (double)(ls1.syscalls - ls0.syscalls) / (double)b.done);
    long errors = b.errors + set_errors;
    for (long i = 0; i < o->c; i++) {
        free(callers[i].cmds);
        free(callers[i].keys);
        free(callers[i].values);
    }
    free(callers);
    free(b.latency_ns);
    return errors ? -EIO : 0;
}

int main(int argc, char **argv)
{
    opts o = {.addr = "127.0.0.1:11211", .c = 50, .n = 100000, .d = 32, .p = 1, .k = 10000};
    parse(argc, argv, &o);
    rp_loop *loop;
    rp_pool *pool;
    rp_pool_options po;
    rp_pool_options_init(&po);
    po.addr = o.addr;
    if (o.bench)
        po.pool_size = (int)o.c; /* one connection a caller, as one a thread elsewhere */
    int rc = rp_loop_new(&loop, NULL);
    if (rc == 0)
        rc = rp_pool_new(&pool, loop, &po);
    if (rc < 0) {
        fprintf(stderr, "memcached: %s\n", rp_strerror(rc));
        return 1;
    }
    rc = o.bench ? benchmark(loop, pool, &o) : demo(loop, pool);
    if (rc < 0)
        fprintf(stderr, "memcached: %s: %s\n", o.addr, rc == -EIO ? "some commands failed" : rp_strerror(rc));
    rp_pool_close(pool, NULL, NULL);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    rp_loop_free(loop);
    return rc < 0 ? 1 : 0;
}

#endif /* MC_NO_MAIN */
