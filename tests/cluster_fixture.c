#define _GNU_SOURCE /* close_range */
#include "cluster_fixture.h"

#include "fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#if RP_HAVE_TLS
#include <openssl/ssl.h>
#endif

#define MAX_ARGS 128 /* of a command: MIGRATE's own and a batch of keys */
#define KEYS_PER_MIGRATE 100
#define REPLY_TIMEOUT_S 5
#define WAIT_MS 10000 /* for a failover, a join (a node: fx_server_start) */

/* A node's cluster bus port is its port + 10000: fx_reserve_port holds
 * both (see it: ports outside the ephemeral range, held until the test
 * exits, so a killed node's address, which the others remember, never
 * goes to another node or another test's server). */
#define BUS_OFFSET 10000

/* A NULL-terminated argument list. */
#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

typedef struct cluster_node {
    int port;
    pid_t pid;
    char addr[32];
    char id[41]; /* CLUSTER MYID */
} cluster_node;

/* fxc_start_tls's cluster: the files its nodes use, and the context of
 * the fixture's own blocking TLS client (NULL: plaintext). */
static struct {
    char ca[128], cert[128], key[128], hostname[64];
    void *ssl_ctx;
} tls;

static cluster_node nodes[FXC_MAX_NODES];
static int node_count;
static char cluster_dir[32];
static pid_t reaper_pid;

static cluster_node *node_at(int i)
{
    cr_assert(i >= 0 && i < node_count, "no node %d (%d started)", i, node_count);
    return &nodes[i];
}

int fxc_count(void) { return node_count; }
int fxc_port(int node) { return node_at(node)->port; }
pid_t fxc_pid(int node) { return node_at(node)->pid; }
const char *fxc_addr(int node) { return node_at(node)->addr; }

/* ---- Commands over a blocking socket ---- */

/* A reply as the list of its scalars (nested arrays flattened), each
 * NUL-terminated but binary-safe: keys go back into MIGRATE as they came. */
typedef struct reply {
    bool error; /* the reply itself, not an element of it, is an error */
    int n, cap;
    char **items;
    size_t *lens;
} reply;

static void reply_push(reply *r, char *item, size_t len)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 8;
        r->items = realloc(r->items, (size_t)r->cap * sizeof *r->items);
        r->lens = realloc(r->lens, (size_t)r->cap * sizeof *r->lens);
        cr_assert(r->items && r->lens, "out of memory");
    }
    r->items[r->n] = item;
    r->lens[r->n++] = len;
}

static void reply_add(reply *r, const char *s)
{
    char *copy = strdup(s);
    cr_assert(copy, "out of memory");
    reply_push(r, copy, strlen(s));
}

static void reply_free(reply *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->items[i]);
    free(r->items);
    free(r->lens);
    *r = (reply){0};
}

/* The scalars joined with '\n'. */
static char *reply_text(const reply *r)
{
    size_t size = 1;
    for (int i = 0; i < r->n; i++)
        size += r->lens[i] + 1;
    char *text = malloc(size), *p = text;
    cr_assert(text, "out of memory");
    for (int i = 0; i < r->n; i++) {
        if (i)
            *p++ = '\n';
        memcpy(p, r->items[i], r->lens[i]);
        p += r->lens[i];
    }
    *p = '\0';
    return text;
}

typedef struct reader {
    int fd;
    void *ssl; /* over TLS: the SSL on fd */
    size_t pos, len;
    char buf[4096];
} reader;

/* read(2), or SSL_read over TLS. */
static ssize_t link_read(reader *rd, void *buf, size_t len)
{
#if RP_HAVE_TLS
    if (rd->ssl) {
        size_t n;
        return SSL_read_ex(rd->ssl, buf, len, &n) == 1 ? (ssize_t)n : -1;
    }
#endif
    return read(rd->fd, buf, len);
}

/* send(2) (MSG_NOSIGNAL: a node that died mid-command is an answer, not
 * SIGPIPE), or SSL_write over TLS. */
static ssize_t link_write(reader *rd, const void *buf, size_t len)
{
#if RP_HAVE_TLS
    if (rd->ssl) {
        size_t n;
        return SSL_write_ex(rd->ssl, buf, len, &n) == 1 ? (ssize_t)n : -1;
    }
#endif
    return send(rd->fd, buf, len, MSG_NOSIGNAL);
}

static bool refill(reader *rd)
{
    memmove(rd->buf, rd->buf + rd->pos, rd->len - rd->pos);
    rd->len -= rd->pos;
    rd->pos = 0;
    if (rd->len == sizeof rd->buf)
        return false; /* a line longer than the buffer: not a reply of ours */
    ssize_t n = link_read(rd, rd->buf + rd->len, sizeof rd->buf - rd->len);
    if (n <= 0)
        return false;
    rd->len += (size_t)n;
    return true;
}

/* The next line without its CRLF; valid until the next read. */
static char *read_line(reader *rd)
{
    for (;;) {
        char *end = memmem(rd->buf + rd->pos, rd->len - rd->pos, "\r\n", 2);
        if (end) {
            *end = '\0';
            char *line = rd->buf + rd->pos;
            rd->pos = (size_t)(end + 2 - rd->buf);
            return line;
        }
        if (!refill(rd))
            return NULL;
    }
}

/* n bytes: what the buffer holds, the rest straight from the socket. */
static bool read_bytes(reader *rd, char *dst, size_t n)
{
    size_t have = rd->len - rd->pos < n ? rd->len - rd->pos : n;
    memcpy(dst, rd->buf + rd->pos, have);
    rd->pos += have;
    while (have < n) {
        ssize_t got = link_read(rd, dst + have, n - have);
        if (got <= 0)
            return false;
        have += (size_t)got;
    }
    return true;
}

static bool read_bulk(reader *rd, reply *out, size_t len)
{
    char *s = malloc(len + 2);
    cr_assert(s, "out of memory");
    bool ok = read_bytes(rd, s, len + 2) && memcmp(s + len, "\r\n", 2) == 0;
    if (!ok) {
        free(s);
        return false;
    }
    s[len] = '\0';
    reply_push(out, s, len);
    return true;
}

static bool read_reply(reader *rd, reply *out, bool top)
{
    char *line = read_line(rd);
    if (!line)
        return false;
    char type = line[0];
    if (type == '+' || type == '-' || type == ':') {
        out->error |= top && type == '-';
        reply_add(out, line + 1);
        return true;
    }
    char *end;
    long long n = strtoll(line + 1, &end, 10);
    if ((type != '$' && type != '*') || *end || n < -1)
        return false;
    if (n == -1) {
        reply_add(out, "(nil)");
        return true;
    }
    if (type == '$')
        return read_bulk(rd, out, (size_t)n);
    for (long long i = 0; i < n; i++)
        if (!read_reply(rd, out, false))
            return false;
    return true;
}

static bool send_command(reader *rd, int argc, const char *const *argv, const size_t *lens)
{
    size_t size = 16;
    for (int i = 0; i < argc; i++)
        size += lens[i] + 32;
    char *buf = malloc(size);
    cr_assert(buf, "out of memory");
    size_t len = (size_t)snprintf(buf, size, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        len += (size_t)snprintf(buf + len, size - len, "$%zu\r\n", lens[i]);
        memcpy(buf + len, argv[i], lens[i]);
        memcpy(buf + len + lens[i], "\r\n", 2);
        len += lens[i] + 2;
    }
    size_t sent = 0;
    ssize_t n = 0;
    while (sent < len && (n = link_write(rd, buf + sent, len - sent)) > 0)
        sent += (size_t)n;
    free(buf);
    return sent == len;
}

/* A socket to the node; -1 if nothing listens. Its timeouts bound a
 * command on a node that hangs (a test may SIGSTOP one). */
static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    struct timeval timeout = {.tv_sec = REPLY_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Over TLS, the handshake (blocking, bounded by the socket's timeouts);
 * the fixture trusts the nodes' CA but checks no name. */
static bool link_open(reader *rd)
{
#if RP_HAVE_TLS
    if (tls.ssl_ctx) {
        rd->ssl = SSL_new(tls.ssl_ctx);
        cr_assert(rd->ssl, "SSL_new failed");
        SSL_set_fd(rd->ssl, rd->fd);
        return SSL_connect(rd->ssl) == 1;
    }
#endif
    (void)rd;
    return true;
}

static void link_close(reader *rd)
{
#if RP_HAVE_TLS
    SSL_free(rd->ssl);
#endif
    rd->ssl = NULL;
}

/* Runs a command on the server at port; false if it cannot be reached. */
static bool run(int port, int argc, const char *const *argv, const size_t *lens, reply *out)
{
    *out = (reply){0};
    int fd = connect_port(port);
    if (fd < 0)
        return false;
    reader rd = {.fd = fd};
    bool ok = link_open(&rd) && send_command(&rd, argc, argv, lens) && read_reply(&rd, out, true);
    link_close(&rd);
    close(fd);
    if (!ok)
        reply_free(out);
    return ok;
}

/* The same for a NULL-terminated list of strings. */
static bool call_port(int port, const char *const *argv, reply *out)
{
    size_t lens[MAX_ARGS];
    int argc = 0;
    for (; argv[argc]; argc++) {
        cr_assert_lt(argc, MAX_ARGS, "more than %d arguments", MAX_ARGS);
        lens[argc] = strlen(argv[argc]);
    }
    return run(port, argc, argv, lens, out);
}

static bool call(const cluster_node *n, const char *const *argv, reply *out) { return call_port(n->port, argv, out); }

static char *call_text_port(int port, const char *const *argv)
{
    reply r;
    if (!call_port(port, argv, &r))
        return NULL;
    char *text = reply_text(&r);
    reply_free(&r);
    return text;
}

static char *call_text(const cluster_node *n, const char *const *argv) { return call_text_port(n->port, argv); }

/* Asserts a reply that is not an error. */
static void call_ok(const cluster_node *n, const char *const *argv)
{
    reply r;
    cr_assert(call(n, argv, &r), "%s: %s: no reply", n->addr, argv[0]);
    char *text = reply_text(&r);
    char message[256];
    snprintf(message, sizeof message, "%s", text);
    free(text);
    bool error = r.error;
    reply_free(&r);
    cr_assert(!error, "%s: %s: %s", n->addr, argv[0], message);
}

/* Does the node's reply start with want? */
static bool reply_starts(const cluster_node *n, const char *const *argv, const char *want)
{
    char *text = call_text(n, argv);
    bool match = text && strncmp(text, want, strlen(want)) == 0;
    free(text);
    return match;
}

static void collect_args(const char **argv, const char *first, va_list ap)
{
    int argc = 0;
    for (const char *arg = first; arg; arg = va_arg(ap, const char *)) {
        cr_assert_lt(argc, MAX_ARGS, "more than %d arguments", MAX_ARGS);
        argv[argc++] = arg;
    }
    argv[argc] = NULL;
}

char *fxc_vcommand_at(int port, const char *arg, va_list ap)
{
    const char *argv[MAX_ARGS + 1];
    collect_args(argv, arg, ap);
    return call_text_port(port, argv);
}

char *fxc_command(int node, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    char *text = fxc_vcommand_at(node_at(node)->port, arg, ap);
    va_end(ap);
    return text;
}

void fxc_command_ok(int node, const char *arg, ...)
{
    const char *argv[MAX_ARGS + 1];
    va_list ap;
    va_start(ap, arg);
    collect_args(argv, arg, ap);
    va_end(ap);
    call_ok(node_at(node), argv);
}

/* ---- Processes ---- */

/* In a forked child: die with the test process (the signal comes when the
 * thread that forked exits: start clusters from the test's main thread),
 * and hold none of its fds, or a socket a test closes would stay open in
 * the child. */
static void child_setup(pid_t parent, int death_signal)
{
    prctl(PR_SET_PDEATHSIG, death_signal);
    if (getppid() != parent)
        _exit(127); /* the parent died before prctl */
    close_range(3, ~0U, 0);
}

/* A child that removes the directory when it gets SIGTERM: from fxc_stop,
 * or from the kernel when the test process dies without calling it, so a
 * crashed test leaves no directory behind. */
static pid_t start_reaper(void)
{
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    /* Blocked across the fork: an early SIGTERM waits for sigwait rather
     * than killing the reaper before it removed anything. */
    pthread_sigmask(SIG_BLOCK, &term, &old);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        child_setup(parent, SIGTERM);
        int sig;
        sigwait(&term, &sig);
        execlp("rm", "rm", "-rf", cluster_dir, (char *)NULL);
        _exit(127);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    cr_assert_gt(pid, 0, "fork: %s", strerror(errno));
    return pid;
}

static pid_t spawn_node(int port, void *ctx)
{
    (void)ctx;
    char port_arg[16], conf[64], log[64], rdb[32];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    snprintf(conf, sizeof conf, "%s/nodes-%d.conf", cluster_dir, port);
    snprintf(log, sizeof log, "%s/%d.log", cluster_dir, port);
    snprintf(rdb, sizeof rdb, "dump-%d.rdb", port);
    /* Besides the basics:
     * - repl-diskless-sync-delay 0: a replica's sync starts at once, not
     *   after Redis 7's 5 s wait for other replicas to join it;
     * - cluster-replica-validity-factor 0: a replica takes over however
     *   long ago it last heard from its master, so whether a failover
     *   happens never depends on timing;
     * - cluster-allow-replica-migration no: replicas stay with the master
     *   a test gave them, never moving to one left without replicas;
     * - dbfilename per node: replicas share the directory, and each
     *   renames the RDB it receives onto it;
     * - enable-debug-command: tests may slow a node with DEBUG SLEEP. */
    const char *argv[64] = {"redis-server", "--port", port_arg, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                          "--cluster-config-file", conf, "--cluster-node-timeout", "1000", "--save", "",
                          "--appendonly", "no", "--dir", cluster_dir, "--dbfilename", rdb, "--logfile", log,
                          "--daemonize", "no", "--repl-diskless-sync-delay", "0",
                          "--cluster-replica-validity-factor", "0", "--cluster-allow-replica-migration", "no",
                          "--enable-debug-command", "yes", NULL};
    /* TLS only: the port is the TLS port, and with no plaintext port the
     * cluster bus listens at it + 10000 as it would at a plaintext one's
     * (the reservation holds as it is). */
    if (tls.ssl_ctx) {
        const char *tls_args[] = {"--port", "0", "--tls-port", port_arg, "--tls-cluster", "yes",
                                  "--tls-replication", "yes", "--tls-cert-file", tls.cert, "--tls-key-file", tls.key,
                                  "--tls-ca-cert-file", tls.ca, "--tls-auth-clients", "no",
                                  "--cluster-announce-hostname", tls.hostname, NULL};
        int argc = 0;
        while (argv[argc])
            argc++;
        memcpy(argv + argc, tls_args, sizeof tls_args);
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        child_setup(parent, SIGKILL);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    cr_assert_gt(pid, 0, "fork: %s", strerror(errno));
    return pid;
}

/* INFO server's process_id, over TLS too. */
static bool node_is_self(int port, pid_t pid)
{
    char own_pid[32];
    snprintf(own_pid, sizeof own_pid, "process_id:%d\r\n", (int)pid);
    char *info = call_text_port(port, ARGS("INFO", "server"));
    bool self = info && strstr(info, own_pid);
    free(info);
    return self;
}

/* Starts the next node; returns its number. It counts from before its
 * start, so that fxc_stop kills it whatever fails after (fx_server_start
 * kills one that never answers as itself). */
static int start_node(void)
{
    cr_assert_lt(node_count, FXC_MAX_NODES, "%d nodes already (FXC_MAX_NODES)", node_count);
    int i = node_count++;
    cluster_node *n = &nodes[i];
    *n = (cluster_node){0};
    n->pid = fx_server_start(&n->port, BUS_OFFSET, spawn_node, node_is_self, NULL);
    snprintf(n->addr, sizeof n->addr, "127.0.0.1:%d", n->port);
    char *id = call_text(n, ARGS("CLUSTER", "MYID"));
    cr_assert(id && strlen(id) == 40, "%s: CLUSTER MYID: %s", n->addr, id ? id : "no reply");
    memcpy(n->id, id, sizeof n->id);
    free(id);
    return i;
}

/* Waits for a child's exit; false if it still runs after timeout_ms. */
static bool wait_exit(pid_t pid, int *status, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    pid_t got;
    while ((got = waitpid(pid, status, WNOHANG)) == 0 && fx_now_ms() < deadline)
        usleep(10000);
    return got == pid;
}

static void print_file(const char *path)
{
    FILE *f = fopen(path, "re");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        fputs(line, stderr);
    if (f)
        fclose(f);
}

/* redis-cli --cluster create, its output in create.log. */
static void create_cluster(void)
{
    const char *argv[16 + FXC_MAX_NODES] = {"redis-cli", "--cluster", "create"};
    int argc = 3;
    if (tls.ssl_ctx) {
        argv[argc++] = "--tls";
        argv[argc++] = "--cacert";
        argv[argc++] = tls.ca;
    }
    for (int i = 0; i < node_count; i++)
        argv[argc++] = nodes[i].addr;
    argv[argc++] = "--cluster-replicas";
    argv[argc++] = "1";
    argv[argc++] = "--cluster-yes";
    char log[64];
    snprintf(log, sizeof log, "%s/create.log", cluster_dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        child_setup(parent, SIGKILL);
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int out = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        dup2(in, STDIN_FILENO);
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    cr_assert_gt(pid, 0, "fork: %s", strerror(errno));
    /* Bounded: redis-cli waits for the nodes to agree for as long as it
     * takes, forever if a node never joins. */
    int status = 0;
    bool exited = wait_exit(pid, &status, WAIT_MS);
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    bool ok = exited && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok)
        print_file(log);
    cr_assert(ok, "redis-cli --cluster create %s", exited ? "failed" : "still ran after 10 s");
}

void fxc_start_tls(const char *ca, const char *cert, const char *key, const char *hostname)
{
#if RP_HAVE_TLS
    snprintf(tls.ca, sizeof tls.ca, "%s", ca);
    snprintf(tls.cert, sizeof tls.cert, "%s", cert);
    snprintf(tls.key, sizeof tls.key, "%s", key);
    snprintf(tls.hostname, sizeof tls.hostname, "%s", hostname ? hostname : "");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    cr_assert(ctx && SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1, "the fixture's TLS context");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    tls.ssl_ctx = ctx;
    fxc_start();
#else
    (void)ca, (void)cert, (void)key, (void)hostname;
    cr_assert_fail("fxc_start_tls: this build has no TLS");
#endif
}

void fxc_start(void)
{
    cr_assert_eq(node_count, 0, "fxc_start: a cluster is running already");
    snprintf(cluster_dir, sizeof cluster_dir, "/tmp/rp-cluster-XXXXXX");
    cr_assert(mkdtemp(cluster_dir), "mkdtemp: %s", strerror(errno));
    reaper_pid = start_reaper();
    for (int i = 0; i < 6; i++)
        start_node();
    create_cluster();
    fxc_wait_ok(WAIT_MS);
}

void fxc_stop(void)
{
    /* All killed, then all reaped: they die in parallel. */
    for (int i = 0; i < node_count; i++)
        if (nodes[i].pid > 0)
            kill(nodes[i].pid, SIGKILL);
    for (int i = 0; i < node_count; i++)
        if (nodes[i].pid > 0)
            waitpid(nodes[i].pid, NULL, 0);
    node_count = 0;
    if (reaper_pid > 0) {
        int status;
        kill(reaper_pid, SIGTERM);
        waitpid(reaper_pid, &status, 0);
        reaper_pid = 0;
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rm -rf %s failed", cluster_dir);
    }
#if RP_HAVE_TLS
    SSL_CTX_free(tls.ssl_ctx);
#endif
    tls.ssl_ctx = NULL;
}

void fxc_kill(int node)
{
    cluster_node *n = node_at(node);
    if (n->pid > 0) {
        kill(n->pid, SIGKILL);
        waitpid(n->pid, NULL, 0);
        n->pid = 0;
    }
}

/* ---- The cluster's state ---- */

#define UNLISTED (-2) /* in a view's masters: not listed */
#define FAILING (-3)  /* listed with fail or fail? */

/* What one node's CLUSTER NODES says. */
typedef struct view {
    int8_t owner[RP_CLUSTER_SLOTS]; /* the node serving each slot; -1: none */
    int8_t master[FXC_MAX_NODES];   /* each node's master; -1: it is one */
    bool self_master;
} view;

/* Our node with that id; -1 for any other (a node in handshake goes by a
 * temporary one). */
static int node_of_id(const char *id)
{
    for (int i = 0; i < node_count; i++)
        if (strcmp(nodes[i].id, id) == 0)
            return i;
    return -1;
}

static void view_slots(view *v, int who, char **save)
{
    for (char *range; (range = strtok_r(NULL, " ", save));) {
        if (range[0] == '[')
            continue; /* [slot->-id], [slot-<-id]: a migration in progress */
        char *end;
        long lo = strtol(range, &end, 10);
        long hi = *end == '-' ? strtol(end + 1, NULL, 10) : lo;
        for (long slot = lo < 0 ? 0 : lo; slot <= hi && slot < RP_CLUSTER_SLOTS; slot++)
            v->owner[slot] = (int8_t)who;
    }
}

/* Whether the comma-separated flags include that one ("fail" is not
 * "nofailover"). */
static bool has_flag(const char *flags, const char *flag)
{
    size_t len = strlen(flag);
    for (const char *p = flags;; p++) {
        if (strncmp(p, flag, len) == 0 && (p[len] == ',' || p[len] == '\0'))
            return true;
        if (!(p = strchr(p, ',')))
            return false;
    }
}

/* <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>... */
static void view_line(view *v, char *line)
{
    char *field[8], *save;
    field[0] = strtok_r(line, " ", &save);
    for (int i = 1; i < 8; i++)
        field[i] = strtok_r(NULL, " ", &save);
    int who = field[7] ? node_of_id(field[0]) : -1;
    if (who < 0)
        return;
    const char *flags = field[2];
    int master = -1;
    if (has_flag(flags, "slave") && (master = node_of_id(field[3])) < 0)
        master = UNLISTED; /* replicates a node not ours */
    bool failing = has_flag(flags, "fail") || has_flag(flags, "fail?");
    v->master[who] = (int8_t)(failing ? FAILING : master);
    if (has_flag(flags, "myself"))
        v->self_master = has_flag(flags, "master");
    view_slots(v, who, &save);
}

/* False if the node cannot be reached. */
static bool read_view(const cluster_node *n, view *v)
{
    memset(v->owner, -1, sizeof v->owner);
    memset(v->master, UNLISTED, sizeof v->master);
    v->self_master = false;
    char *text = call_text(n, ARGS("CLUSTER", "NODES"));
    if (!text)
        return false;
    char *save;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        view_line(v, line);
    free(text);
    return true;
}

/* What INFO replication says. */
typedef struct replication {
    bool replica, link_up;
    int master_port;
    long long offset; /* a master's master_repl_offset, a replica's slave_repl_offset */
} replication;

/* A number in INFO's text; -1 if absent. */
static long long info_number(const char *info, const char *field)
{
    const char *at = strstr(info, field);
    return at ? strtoll(at + strlen(field), NULL, 10) : -1;
}

static bool read_replication(const cluster_node *n, replication *r)
{
    char *info = call_text(n, ARGS("INFO", "replication"));
    if (!info)
        return false;
    r->replica = strstr(info, "role:slave") != NULL;
    r->link_up = strstr(info, "master_link_status:up") != NULL;
    r->master_port = (int)info_number(info, "master_port:");
    r->offset = info_number(info, r->replica ? "slave_repl_offset:" : "master_repl_offset:");
    free(info);
    return true;
}

/* The node's own state is settled; its view in *v, its replication in *r. */
static bool node_settled(int i, view *v, replication *r, char *why, size_t size)
{
    const cluster_node *n = &nodes[i];
    if (!reply_starts(n, ARGS("CLUSTER", "INFO"), "cluster_state:ok")) {
        snprintf(why, size, "node %d (%s) does not say cluster_state:ok", i, n->addr);
        return false;
    }
    if (!read_replication(n, r) || (r->replica && !r->link_up)) {
        snprintf(why, size, "node %d (%s), a replica, has no link to its master", i, n->addr);
        return false;
    }
    if (!read_view(n, v)) {
        snprintf(why, size, "node %d (%s) gave no CLUSTER NODES", i, n->addr);
        return false;
    }
    for (int j = 0; j < node_count; j++) {
        if (nodes[j].pid && v->master[j] < -1) {
            snprintf(why, size, "node %d's view lists node %d as failing, or not at all", i, j);
            return false;
        }
    }
    return true;
}

static bool views_agree(const view *a, const view *b)
{
    if (memcmp(a->owner, b->owner, sizeof a->owner) != 0)
        return false;
    for (int j = 0; j < node_count; j++)
        if (nodes[j].pid && a->master[j] != b->master[j])
            return false;
    return true;
}

static bool owners_live(const view *v, char *why, size_t size)
{
    for (int slot = 0; slot < RP_CLUSTER_SLOTS; slot++) {
        int owner = v->owner[slot];
        if (owner < 0 || !nodes[owner].pid || v->master[owner] != -1) {
            snprintf(why, size, "slot %d has no live master (node %d)", slot, owner);
            return false;
        }
    }
    return true;
}

/* Every write a master took is on its replicas: one acknowledged before
 * fxc_wait_ok survives a failover. */
static bool replicas_caught_up(const replication *repl, char *why, size_t size)
{
    for (int i = 0; i < node_count; i++) {
        for (int m = 0; m < node_count && nodes[i].pid && repl[i].replica; m++) {
            if (nodes[m].pid && nodes[m].port == repl[i].master_port && repl[i].offset < repl[m].offset) {
                snprintf(why, size, "node %d is behind its master, node %d (offset %lld < %lld)", i, m,
                         repl[i].offset, repl[m].offset);
                return false;
            }
        }
    }
    return true;
}

static bool cluster_ok(char *why, size_t size)
{
    static view first, other; /* 16 kB each: off the stack */
    replication repl[FXC_MAX_NODES];
    int ref = -1;
    for (int i = 0; i < node_count; i++) {
        if (!nodes[i].pid)
            continue;
        if (!node_settled(i, ref < 0 ? &first : &other, &repl[i], why, size))
            return false;
        if (ref < 0) {
            ref = i;
        } else if (!views_agree(&first, &other)) {
            snprintf(why, size, "nodes %d and %d disagree on slots or roles", ref, i);
            return false;
        }
    }
    if (ref < 0)
        snprintf(why, size, "no live node");
    return ref >= 0 && owners_live(&first, why, size) && replicas_caught_up(repl, why, size);
}

void fxc_wait_ok(unsigned timeout_ms)
{
    char why[160] = "";
    uint64_t deadline = fx_now_ms() + timeout_ms;
    bool ok;
    while (!(ok = cluster_ok(why, sizeof why)) && fx_now_ms() < deadline)
        usleep(20000);
    cr_assert(ok, "cluster not ok after %u ms: %s", timeout_ms, why);
}

int fxc_master_of_slot(int slot)
{
    cr_assert(slot >= 0 && slot < RP_CLUSTER_SLOTS, "no slot %d", slot);
    static view v;
    for (int i = 0; i < node_count; i++)
        if (nodes[i].pid && read_view(&nodes[i], &v) && v.self_master)
            return v.owner[slot];
    return -1; /* no live master: nobody serves it */
}

int fxc_replica_of(int master)
{
    int port = node_at(master)->port;
    for (int i = 0; i < node_count; i++) {
        if (i == master || !nodes[i].pid)
            continue;
        char *role = call_text(&nodes[i], ARGS("ROLE"));
        int of = 0;
        bool replica = role && sscanf(role, "slave %*s %d", &of) == 1 && of == port;
        free(role);
        if (replica)
            return i;
    }
    return -1;
}

bool fxc_is_master(int node) { return reply_starts(node_at(node), ARGS("ROLE"), "master\n"); }

int fxc_add_node(void)
{
    int introducer = 0;
    while (introducer < node_count && !nodes[introducer].pid)
        introducer++;
    cr_assert_lt(introducer, node_count, "fxc_add_node: no live node to meet");
    int i = start_node();
    char port[16];
    snprintf(port, sizeof port, "%d", nodes[i].port);
    call_ok(&nodes[introducer], ARGS("CLUSTER", "MEET", "127.0.0.1", port));
    /* Not only every node listing it: until it knows every slot's owner,
     * it refuses MIGRATE's keys with CLUSTERDOWN. */
    fxc_wait_ok(WAIT_MS);
    return i;
}

/* ---- Slot migration ---- */

void fxc_migrate_start(int slot, int from, int to)
{
    char s[16];
    snprintf(s, sizeof s, "%d", slot);
    call_ok(node_at(to), ARGS("CLUSTER", "SETSLOT", s, "IMPORTING", node_at(from)->id));
    call_ok(node_at(from), ARGS("CLUSTER", "SETSLOT", s, "MIGRATING", node_at(to)->id));
}

/* Moves up to a batch of the slot's keys; false when none were left. */
static bool migrate_batch(const char *slot, const cluster_node *from, const cluster_node *to)
{
    char count[16], port[16];
    snprintf(count, sizeof count, "%d", KEYS_PER_MIGRATE);
    snprintf(port, sizeof port, "%d", to->port);
    reply keys;
    cr_assert(call(from, ARGS("CLUSTER", "GETKEYSINSLOT", slot, count), &keys) && !keys.error &&
                  keys.n <= KEYS_PER_MIGRATE,
              "%s: CLUSTER GETKEYSINSLOT %s %s failed", from->addr, slot, count);
    if (keys.n == 0)
        return false;
    const char *argv[7 + KEYS_PER_MIGRATE] = {"MIGRATE", "127.0.0.1", port, "", "0", "5000", "KEYS"};
    size_t lens[7 + KEYS_PER_MIGRATE];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    for (int i = 0; i < keys.n; i++) {
        argv[7 + i] = keys.items[i];
        lens[7 + i] = keys.lens[i];
    }
    reply r;
    bool ok = run(from->port, 7 + keys.n, argv, lens, &r) && !r.error;
    char message[256];
    snprintf(message, sizeof message, "%s", r.n ? r.items[0] : "no reply");
    reply_free(&r);
    reply_free(&keys);
    cr_assert(ok, "%s: MIGRATE to %s: %s", from->addr, to->addr, message);
    return true;
}

void fxc_migrate_keys(int slot, int from, int to)
{
    char s[16];
    snprintf(s, sizeof s, "%d", slot);
    while (migrate_batch(s, node_at(from), node_at(to)))
        ;
}

void fxc_migrate_finish(int slot, int from, int to)
{
    char s[16];
    snprintf(s, sizeof s, "%d", slot);
    const char *const *argv = ARGS("CLUSTER", "SETSLOT", s, "NODE", node_at(to)->id);
    call_ok(node_at(to), argv);
    call_ok(node_at(from), argv);
    for (int i = 0; i < node_count; i++)
        if (i != to && i != from && nodes[i].pid && fxc_is_master(i))
            call_ok(&nodes[i], argv);
}

void fxc_migrate_slot(int slot, int from, int to)
{
    fxc_migrate_start(slot, from, to);
    fxc_migrate_keys(slot, from, to);
    fxc_migrate_finish(slot, from, to);
}

/* ---- Failover ---- */

void fxc_failover_with(int replica, const char *option)
{
    /* A NULL option ends the list early: plain CLUSTER FAILOVER. */
    call_ok(node_at(replica), ARGS("CLUSTER", "FAILOVER", option));
    uint64_t deadline = fx_now_ms() + WAIT_MS;
    bool promoted;
    while (!(promoted = fxc_is_master(replica)) && fx_now_ms() < deadline)
        usleep(20000);
    cr_assert(promoted, "node %d is no master %d ms after CLUSTER FAILOVER %s", replica, WAIT_MS,
              option ? option : "");
    fxc_wait_ok(WAIT_MS);
}

void fxc_failover(int replica) { fxc_failover_with(replica, NULL); }

/* ---- Keys ---- */

/* key_of_slot[slot] = n + 1 for the first "key:<n>" in the slot. */
static unsigned key_of_slot[RP_CLUSTER_SLOTS];

static bool fill_key_table(void)
{
    int found = 0;
    for (unsigned n = 0; found < RP_CLUSTER_SLOTS && n < 10000000; n++) {
        char key[24];
        int len = snprintf(key, sizeof key, "key:%u", n);
        int slot = rp_cluster_key_slot(key, (size_t)len);
        if (!key_of_slot[slot]) {
            key_of_slot[slot] = n + 1;
            found++;
        }
    }
    return found == RP_CLUSTER_SLOTS;
}

void fxc_key_for_slot(int slot, char *buf, size_t size)
{
    static bool table_ready;
    cr_assert(slot >= 0 && slot < RP_CLUSTER_SLOTS, "no slot %d", slot);
    if (!table_ready)
        table_ready = fill_key_table();
    cr_assert(table_ready, "key:<n> for n below 10^7 misses some slots");
    int len = snprintf(buf, size, "key:%u", key_of_slot[slot] - 1);
    cr_assert(len > 0 && (size_t)len < size, "%zu bytes cannot hold a key for slot %d", size, slot);
}

int fxc_slot_of_node(int node)
{
    for (int slot = 0; slot < RP_CLUSTER_SLOTS; slot++)
        if (fxc_master_of_slot(slot) == node)
            return slot;
    cr_assert_fail("node %d serves no slot", node);
    return -1;
}

/* ------------------------------------------- an rp_cluster client of it */

void fxc_suite_setup(void)
{
    fx_setup_no_redis();
    fxc_start();
}

void fxc_suite_teardown(void)
{
    fxc_stop();
    fx_teardown();
}

void fxc_client_options(rp_cluster_options *opts, const char *const *seeds)
{
    rp_cluster_options_init(opts);
    opts->seeds = seeds;
    opts->nseeds = 1;
    opts->node.pool.pool_size = 8;
}

rp_cluster_options fxc_seed_options(void)
{
    static const char *seeds[1];
    seeds[0] = fxc_addr(0);
    rp_cluster_options opts;
    fxc_client_options(&opts, seeds);
    return opts;
}

void fxc_client_open(rp_loop **loop, rp_cluster **cluster, const rp_cluster_options *opts)
{
    cr_assert_eq(rp_loop_new(loop, NULL), 0);
    cr_assert_eq(rp_cluster_new(cluster, *loop, opts), 0);
}

void fxc_closed_cb(rp_cluster *cluster, void *data)
{
    (void)cluster;
    (*(int *)data)++;
}

void fxc_client_wait_closed(rp_loop *loop, int *closed)
{
    cr_assert(fx_run_until_count(loop, closed, 1, 30000), "the cluster did not close");
    fx_run_for(loop, 20);
    cr_assert_eq(*closed, 1);
    cr_assert_eq(rp_loop_free(loop), 0, "the loop still had work after the close");
}

void fxc_client_close(rp_loop *loop, rp_cluster *cluster)
{
    int closed = 0;
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, &closed), 0);
    fxc_client_wait_closed(loop, &closed);
}

void fxc_result_cb(rp_cluster *cluster, const redisReply *answer, int status, void *data)
{
    (void)cluster;
    fx_result_record(data, answer, status);
}

fx_result fxc_run(rp_loop *loop, rp_cluster *cluster, int argc, const char **argv)
{
    fx_result r = {0};
    cr_assert_eq(rp_cluster_command(cluster, fxc_result_cb, &r, argc, argv, NULL), 0, "%s refused", argv[0]);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 20000), "no reply to %s", argv[0]);
    return r;
}

/* ------------------------------------------------- fake cluster nodes */

enum { FXF_CONNS = 32, FXF_BUF = 16384, FXF_NAMES = 16 };

struct fxf_conn {
    int fd; /* -1 once closed */
    int node;
    size_t len;
    char buf[FXF_BUF];
};

static struct {
    int nodes;
    int listener[FXF_NODES];
    int port[FXF_NODES];
    char addr[FXF_NODES][32];
    fxf_script script;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock;
    struct {
        char name[32];
        int count;
    } seen[FXF_NODES][FXF_NAMES];
    fxf_conn conns[FXF_CONNS];
    int nconns;
} fxf = {.lock = PTHREAD_MUTEX_INITIALIZER};

int fxf_port(int node) { return fxf.port[node]; }
const char *fxf_addr(int node) { return fxf.addr[node]; }

void fxf_write(fxf_conn *c, const void *bytes, size_t len)
{
    if (c->fd >= 0 && send(c->fd, bytes, len, MSG_NOSIGNAL) != (ssize_t)len) {
        close(c->fd);
        c->fd = -1;
    }
}

void fxf_say(fxf_conn *c, const char *text) { fxf_write(c, text, strlen(text)); }

static void fxf_count(int node, const char *name)
{
    pthread_mutex_lock(&fxf.lock);
    for (int i = 0; i < FXF_NAMES; i++) {
        if (!fxf.seen[node][i].name[0])
            snprintf(fxf.seen[node][i].name, sizeof fxf.seen[node][i].name, "%s", name);
        if (!strcasecmp(fxf.seen[node][i].name, name)) {
            fxf.seen[node][i].count++;
            break;
        }
    }
    pthread_mutex_unlock(&fxf.lock);
}

int fxf_seen(int node, const char *name)
{
    int n = 0;
    pthread_mutex_lock(&fxf.lock);
    for (int i = node < 0 ? 0 : node; i < (node < 0 ? FXF_NODES : node + 1); i++)
        for (int j = 0; j < FXF_NAMES; j++)
            if (!strcasecmp(fxf.seen[i][j].name, name))
                n += fxf.seen[i][j].count;
    pthread_mutex_unlock(&fxf.lock);
    return n;
}

static void fxf_serve(fxf_conn *c)
{
    ssize_t got = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (got <= 0) {
        close(c->fd);
        c->fd = -1;
        return;
    }
    c->len += (size_t)got;
    char argv[FXF_ARGS][FXF_ARGLEN];
    int argc;
    long used;
    while (c->fd >= 0 && (used = fx_resp_command(c->buf, c->len, FXF_ARGS, FXF_ARGLEN, &argc, argv[0])) != 0) {
        if (used < 0) {
            close(c->fd);
            c->fd = -1;
            return;
        }
        memmove(c->buf, c->buf + used, c->len - (size_t)used);
        c->len -= (size_t)used;
        fxf_count(c->node, argv[0]);
        fxf.script(c, c->node, argc, argv);
    }
}

static void fxf_accept(int node)
{
    int fd = accept4(fxf.listener[node], NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (fxf.nconns == FXF_CONNS) {
        close(fd);
        return;
    }
    struct timeval bound = {.tv_sec = 2}; /* a write never hangs the thread */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof bound);
    fxf_conn *c = &fxf.conns[fxf.nconns++];
    c->fd = fd;
    c->node = node;
    c->len = 0;
}

static void *fxf_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&fxf.stop)) {
        struct pollfd pfd[FXF_NODES + FXF_CONNS];
        int n = 0;
        for (int i = 0; i < fxf.nodes; i++)
            pfd[n++] = (struct pollfd){.fd = fxf.listener[i], .events = POLLIN};
        for (int i = 0; i < fxf.nconns; i++)
            pfd[n++] = (struct pollfd){.fd = fxf.conns[i].fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n, 10) <= 0)
            continue;
        for (int i = 0; i < fxf.nconns; i++)
            if (fxf.conns[i].fd >= 0 && pfd[fxf.nodes + i].revents)
                fxf_serve(&fxf.conns[i]);
        for (int i = 0; i < fxf.nodes; i++)
            if (pfd[i].revents & POLLIN)
                fxf_accept(i);
    }
    return NULL;
}

void fxf_start(int count, fxf_script script)
{
    cr_assert(count > 0 && count <= FXF_NODES);
    memset(fxf.seen, 0, sizeof fxf.seen);
    fxf.nodes = count;
    fxf.nconns = 0;
    fxf.script = script;
    atomic_store(&fxf.stop, false);
    for (int i = 0; i < count; i++) {
        fxf.listener[i] = fx_listener(16, &fxf.port[i]);
        snprintf(fxf.addr[i], sizeof fxf.addr[i], "127.0.0.1:%d", fxf.port[i]);
    }
    cr_assert_eq(pthread_create(&fxf.thread, NULL, fxf_main, NULL), 0);
}

void fxf_stop(void)
{
    if (!fxf.nodes)
        return;
    atomic_store(&fxf.stop, true);
    pthread_join(fxf.thread, NULL);
    for (int i = 0; i < fxf.nconns; i++)
        if (fxf.conns[i].fd >= 0)
            close(fxf.conns[i].fd);
    for (int i = 0; i < fxf.nodes; i++)
        close(fxf.listener[i]);
    fxf.nodes = 0;
}
