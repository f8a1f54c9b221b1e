#define _GNU_SOURCE /* memmem */
#include "fixture.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int fx_redis_port;
char fx_redis_addr[64];
static pid_t redis_pid;
static const char *const *redis_extra_args;
static int fds_at_start;

uint64_t fx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int count_entries(const char *path)
{
    DIR *dir = opendir(path);
    int n = 0;
    for (struct dirent *e; (e = readdir(dir));)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n;
}

int fx_thread_count(void) { return count_entries("/proc/self/task"); }

/* A blocking socket connected to the port; -1 if that fails. With
 * timeout_s, connect, sends and receives give up after it. */
static int loopback_socket_timed(int port, int timeout_s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval timeout = {.tv_sec = timeout_s};
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

static int loopback_socket(int port) { return loopback_socket_timed(port, 0); }

int fx_listener(int backlog, int *port)
{
    int fd = fx_listen_at(0, backlog);
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &len);
    *port = ntohs(sin.sin_port);
    return fd;
}

int fx_listen_at(int port, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0, "bind: %s", strerror(errno));
    cr_assert_eq(listen(fd, backlog), 0);
    return fd;
}

void fx_fill_backlog(int port, int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect(fds[i], (struct sockaddr *)&sin, sizeof sin);
    }
    usleep(20000); /* let the handshakes land in the backlog */
}

/* ---- Servers: their ports and their identity ---- */

#define PORT_FLOOR 10000 /* below it, well-known services */
#define MAX_RESERVED 64
#define SERVER_WAIT_MS 15000
#define SERVER_ATTEMPTS 10

static int reserved[MAX_RESERVED], reserved_count;

static int count_fds(void)
{
    /* Neither the directory's own fd nor the ports held until exit. */
    return count_entries("/proc/self/fd") - 1 - reserved_count;
}

static int ephemeral_lo, ephemeral_hi;

static void read_ephemeral_range(void)
{
    if (ephemeral_lo)
        return;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
    if (!f || fscanf(f, "%d %d", &ephemeral_lo, &ephemeral_hi) != 2)
        ephemeral_lo = 32768, ephemeral_hi = 60999; /* Linux's default */
    if (f)
        fclose(f);
}

static bool usable_port(int port)
{
    return port >= PORT_FLOOR && port <= 65535 && (port < ephemeral_lo || port > ephemeral_hi);
}

/* The port on 127.0.0.1, bound without SO_REUSEADDR (which fails if
 * anything has it, even a socket in TIME_WAIT), then opened to
 * SO_REUSEADDR for our server's bind; -1 if taken. */
static int hold_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int fx_reserve_port(int pair)
{
    static pid_t walker;
    static unsigned next;
    if (walker != getpid()) { /* a forked process walks from its own start */
        walker = getpid();
        next = (unsigned)walker * 2654435761u;
    }
    read_ephemeral_range();
    cr_assert_leq(reserved_count + 2, MAX_RESERVED, "more than %d ports reserved", MAX_RESERVED);
    for (int tries = 0; tries < 65536; tries++) {
        int port = PORT_FLOOR + (int)(next++ % (65536 - PORT_FLOOR));
        if (!usable_port(port) || (pair && !usable_port(port + pair)))
            continue;
        int fd = hold_port(port), paired = pair && fd >= 0 ? hold_port(port + pair) : 0;
        if (fd >= 0 && paired >= 0) {
            reserved[reserved_count++] = fd;
            if (pair)
                reserved[reserved_count++] = paired;
            return port;
        }
        if (fd >= 0)
            close(fd);
    }
    cr_assert_fail("no free port outside the ephemeral range %d-%d", ephemeral_lo, ephemeral_hi);
    return 0;
}

int fx_closed_port(void) { return fx_reserve_port(0); }

/* Sends request to the port and reads the answer, which ends with end,
 * until want shows in it; false if it never does (not our server, or
 * none). */
static bool answer_has(int port, const char *request, const char *end, const char *want)
{
    int fd = loopback_socket_timed(port, 2);
    if (fd < 0)
        return false;
    char buf[4096];
    size_t len = 0;
    bool sent = write(fd, request, strlen(request)) == (ssize_t)strlen(request), found = false;
    bool ended = false;
    for (ssize_t n = 1; sent && !found && !ended && n > 0 && len < sizeof buf - 1;) {
        n = read(fd, buf + len, sizeof buf - 1 - len);
        len += n > 0 ? (size_t)n : 0;
        buf[len] = '\0';
        found = strstr(buf, want);
        ended = len >= strlen(end) && !strcmp(buf + len - strlen(end), end);
    }
    close(fd);
    return found;
}

bool fx_redis_is_self(int port, pid_t pid)
{
    char want[40];
    snprintf(want, sizeof want, "process_id:%d\r\n", (int)pid);
    /* A bulk string of one section: its last line, then the bulk's end. */
    return answer_has(port, "INFO server\r\n", "\r\n\r\n", want);
}

static bool memcached_is_self(int port, pid_t pid)
{
    char want[40];
    snprintf(want, sizeof want, "STAT pid %d\r\n", (int)pid);
    return answer_has(port, "stats\r\n", "END\r\n", want);
}

/* Waits until the process answers at the port as itself; false if it
 * exited first (reaped: it could not bind its ports). On a timeout it is
 * killed and the test fails. */
static bool server_up(pid_t pid, int port, fx_is_self_fn *is_self)
{
    uint64_t deadline = fx_now_ms() + SERVER_WAIT_MS;
    do {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return false;
        if (is_self(port, pid))
            return true;
        usleep(5000);
    } while (fx_now_ms() < deadline);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    cr_assert_fail("the server at port %d (pid %d) did not answer as itself within %d ms", port, (int)pid,
                   SERVER_WAIT_MS);
    return false;
}

pid_t fx_server_start(int *port, int pair, fx_spawn_fn *spawn, fx_is_self_fn *is_self, void *ctx)
{
    for (int attempt = 0; attempt < SERVER_ATTEMPTS; attempt++) {
        *port = fx_reserve_port(pair);
        pid_t pid = spawn(*port, ctx);
        cr_assert_gt(pid, 0, "fork: %s", strerror(errno));
        if (server_up(pid, *port, is_self))
            return pid;
    }
    cr_assert_fail("a server exited at once %d times: not installed, or its ports taken", SERVER_ATTEMPTS);
    return 0;
}

pid_t fx_server_restart(int port, fx_spawn_fn *spawn, fx_is_self_fn *is_self, void *ctx)
{
    pid_t pid = spawn(port, ctx);
    cr_assert_gt(pid, 0, "fork: %s", strerror(errno));
    cr_assert(server_up(pid, port, is_self), "the server exited at once: its port %d was taken", port);
    return pid;
}

/* In a forked child, before exec: never outlive a crashed test. The
 * signal comes when the thread that forked exits, not the process:
 * restart servers from a thread that outlives their use. */
static void die_with_parent(void) { prctl(PR_SET_PDEATHSIG, SIGKILL); }

static pid_t redis_exec(int port, void *ctx)
{
    (void)ctx;
    char port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    const char *argv[64] = {"redis-server", "--port", port_arg, "--bind", "127.0.0.1", "::1", "--save", "",
                            "--appendonly", "no", "--enable-debug-command", "yes", "--logfile", "/dev/null",
                            "--daemonize", "no"};
    size_t argc = 16;
    for (size_t i = 0; redis_extra_args && redis_extra_args[i]; i++) {
        cr_assert_lt(argc, sizeof argv / sizeof *argv - 1, "too many redis-server arguments");
        argv[argc++] = redis_extra_args[i]; /* later arguments win */
    }
    pid_t pid = fork();
    if (pid == 0) {
        die_with_parent();
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    return pid;
}

void fx_redis_start_with(const char *const *extra_args)
{
    redis_extra_args = extra_args;
    redis_pid = fx_server_start(&fx_redis_port, 0, redis_exec, fx_redis_is_self, NULL);
    snprintf(fx_redis_addr, sizeof fx_redis_addr, "127.0.0.1:%d", fx_redis_port);
}

void fx_redis_start(void) { fx_redis_start_with(NULL); }

pid_t fx_redis_pid(void) { return redis_pid; }

void fx_redis_stop(void)
{
    if (redis_pid <= 0)
        return;
    kill(redis_pid, SIGKILL);
    waitpid(redis_pid, NULL, 0);
    redis_pid = 0;
}

void fx_redis_restart(void)
{
    fx_redis_stop();
    redis_pid = fx_server_restart(fx_redis_port, redis_exec, fx_redis_is_self, NULL);
}

int fx_memcached_port;
char fx_memcached_addr[64];
static pid_t memcached_pid;
static const char *const *memcached_extra_args;

static pid_t memcached_exec(int port, void *ctx)
{
    (void)ctx;
    char port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    /* -u: memcached refuses to run as root without it (ignored otherwise). */
    const char *argv[32] = {"memcached", "-l", "127.0.0.1", "-p", port_arg, "-U", "0", "-u", "nobody"};
    size_t argc = 9;
    for (size_t i = 0; memcached_extra_args && memcached_extra_args[i]; i++) {
        cr_assert_lt(argc, sizeof argv / sizeof *argv - 1, "too many memcached arguments");
        argv[argc++] = memcached_extra_args[i];
    }
    pid_t pid = fork();
    if (pid == 0) {
        die_with_parent();
        execvp("memcached", (char *const *)argv);
        _exit(127);
    }
    return pid;
}

void fx_memcached_start(const char *const *extra_args)
{
    memcached_extra_args = extra_args;
    memcached_pid = fx_server_start(&fx_memcached_port, 0, memcached_exec, memcached_is_self, NULL);
    snprintf(fx_memcached_addr, sizeof fx_memcached_addr, "127.0.0.1:%d", fx_memcached_port);
}

pid_t fx_memcached_pid(void) { return memcached_pid; }

void fx_memcached_stop(void)
{
    if (memcached_pid <= 0)
        return;
    kill(memcached_pid, SIGKILL);
    waitpid(memcached_pid, NULL, 0);
    memcached_pid = 0;
}

void fx_memcached_restart(void)
{
    fx_memcached_stop();
    memcached_pid = fx_server_restart(fx_memcached_port, memcached_exec, memcached_is_self, NULL);
}

int fx_redis_send(const char *cmd)
{
    int fd = loopback_socket(fx_redis_port);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
    return fd;
}

void fx_redis_wait_reply(int fd)
{
    char buf[256];
    cr_assert_gt(read(fd, buf, sizeof buf), 0);
    close(fd);
}

void fx_redis_command(const char *cmd) { fx_redis_wait_reply(fx_redis_send(cmd)); }

void fx_setup_no_redis(void)
{
    setenv("RINGPOOL_QUIET", "1", 1);
    fds_at_start = count_fds();
}

void fx_setup(void)
{
    fx_redis_start();
    fx_setup_no_redis();
}

void fx_teardown(void)
{
    int fds = count_fds();
    fx_redis_stop();
    cr_expect_eq(fds, fds_at_start, "fd leak: %d open after the test, %d before", fds, fds_at_start);
}

bool fx_run_until(rp_loop *loop, const bool *flag, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    while (!*flag && fx_now_ms() < deadline) {
        if (rp_loop_run(loop, RP_RUN_NOWAIT) == 0 && !*flag)
            usleep(200);
    }
    return *flag;
}

bool fx_run_until_count(rp_loop *loop, const int *count, int want, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    while (*count < want && fx_now_ms() < deadline) {
        if (rp_loop_run(loop, RP_RUN_NOWAIT) == 0)
            usleep(200);
        else
            usleep(50);
    }
    return *count >= want;
}

void fx_run_for(rp_loop *loop, unsigned ms)
{
    bool never = false;
    fx_run_until(loop, &never, ms);
}

void fx_pool_options(rp_pool_options *opts, int pool_size)
{
    rp_pool_options_init(opts);
    opts->addr = fx_redis_addr;
    opts->pool_size = pool_size;
}

static int got_sequence;

void fx_get_cb(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    fx_got *got = data;
    got->calls++;
    got->status = status;
    got->conn = conn;
    got->order = ++got_sequence;
}

rp_pool *fx_open_pool(rp_loop **loop, const rp_pool_options *opts)
{
    rp_pool *pool;
    cr_assert_eq(rp_loop_new(loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&pool, *loop, opts), 0);
    return pool;
}

fx_got fx_get_outcome(rp_loop *loop, rp_pool *pool, unsigned timeout_ms)
{
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, timeout_ms), "get never completed");
    return got;
}

rp_conn *fx_get_conn(rp_loop *loop, rp_pool *pool)
{
    fx_got got = fx_get_outcome(loop, pool, 5000);
    cr_assert_eq(got.status, 0, "get failed: %s", rp_strerror(got.status));
    return got.conn;
}

typedef struct io_result {
    bool done;
    ssize_t result;
} io_result;

static void io_cb(rp_conn *conn, ssize_t result, void *data)
{
    (void)conn;
    io_result *r = data;
    r->done = true;
    r->result = result;
}

bool fx_ping(rp_loop *loop, rp_conn *conn)
{
    io_result sent = {0}, got = {0};
    char buf[64] = {0};
    if (rp_conn_send(conn, "PING\r\n", 6, io_cb, &sent) < 0 || !fx_run_until(loop, &sent.done, 3000) ||
        sent.result != 6)
        return false;
    if (rp_conn_recv(conn, buf, sizeof buf - 1, io_cb, &got) < 0 || !fx_run_until(loop, &got.done, 3000))
        return false;
    return got.result == 7 && memcmp(buf, "+PONG\r\n", 7) == 0;
}

static bool closed_flag;
static void closed_cb(rp_pool *pool, void *data)
{
    (void)pool;
    *(bool *)data = true;
}

void fx_result_cb(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    fx_result_record(data, reply, status);
}

void fx_result_record(fx_result *r, const redisReply *reply, int status)
{
    r->calls++;
    r->status = status;
    if (reply) {
        r->type = reply->type;
        r->integer = reply->integer;
        snprintf(r->str, sizeof r->str, "%.*s", (int)reply->len, reply->str ? reply->str : "");
    }
}

char *fx_make_value(size_t len, uint64_t seed)
{
    char *value = malloc(len);
    cr_assert(value);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(value + i, &x, len - i < 8 ? len - i : 8);
    }
    return value;
}

void fx_outcome_cb(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    fx_outcome_record(data, reply, status);
}

void fx_outcome_record(fx_outcome *o, const redisReply *reply, int status)
{
    o->calls++;
    o->status = status;
    o->type = reply ? reply->type : -1;
    if (reply && o->want)
        o->same = reply->type == REDIS_REPLY_STRING && reply->len == o->want_len &&
                  !memcmp(reply->str, o->want, o->want_len);
}

static void client_closed_cb(rp_client *client, void *data)
{
    (void)client;
    *(bool *)data = true;
}

void fx_client_close_and_free(rp_loop *loop, rp_client *client)
{
    bool closed = false;
    cr_assert_eq(rp_client_close(client, client_closed_cb, &closed), 0);
    cr_assert(fx_run_until(loop, &closed, 5000), "the client close callback never ran");
    cr_assert_eq(rp_loop_free(loop), 0);
}

void fx_close_and_free(rp_loop *loop, rp_pool *pool)
{
    rp_stats st;
    rp_pool_stats(pool, &st);
    cr_expect_eq((int)st.total_conns, rp_pool_len(pool), "total_conns disagrees with rp_pool_len");
    closed_flag = false;
    cr_assert_eq(rp_pool_close(pool, closed_cb, &closed_flag), 0);
    cr_assert(fx_run_until(loop, &closed_flag, 5000), "pool close callback never ran");
    cr_assert_eq(rp_loop_free(loop), 0);
}

/* "*N\r\n" or "$N\r\n": its number and the bytes it took; 0 if the line
 * is not all here, -1 if it is not that kind. */
static long resp_line(const char *p, const char *end, char kind, long *value)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return 0;
    if (*p != kind)
        return -1;
    *value = strtol(p + 1, NULL, 10);
    return nl + 1 - p;
}

long fx_resp_command(const char *buf, size_t len, int max_args, size_t arg_cap, int *argc, char *argv)
{
    const char *p = buf, *end = buf + len;
    long n, argn, used = resp_line(p, end, '*', &n);
    if (used <= 0)
        return used;
    if (n <= 0 || n > max_args)
        return -1;
    p += used;
    for (long i = 0; i < n; i++) {
        if ((used = resp_line(p, end, '$', &argn)) <= 0)
            return used;
        p += used;
        if (argn < 0 || (size_t)argn >= arg_cap)
            return -1;
        if (end - p < argn + 2)
            return 0;
        memcpy(argv + (size_t)i * arg_cap, p, (size_t)argn);
        argv[(size_t)i * arg_cap + (size_t)argn] = '\0';
        p += argn + 2;
    }
    *argc = (int)n;
    return p - buf;
}

static const char *scanned_secret;
static int secret_frees;

static void scanning_free(void *ptr)
{
    if (ptr && memmem(ptr, malloc_usable_size(ptr), scanned_secret, strlen(scanned_secret)))
        secret_frees++;
    free(ptr);
}

/* Not realloc: the old block is scanned before it is freed. */
static void *scanning_realloc(void *ptr, size_t size)
{
    void *grown = malloc(size);
    if (grown && ptr) {
        size_t old = malloc_usable_size(ptr);
        memcpy(grown, ptr, old < size ? old : size);
        scanning_free(ptr);
    }
    return grown;
}

void fx_secret_frees_begin(const char *secret)
{
    scanned_secret = secret;
    secret_frees = 0;
    cr_assert_eq(rp_set_allocator(malloc, scanning_realloc, calloc, scanning_free), 0);
}

int fx_secret_frees_end(void)
{
    cr_assert_eq(rp_set_allocator(malloc, realloc, calloc, free), 0);
    return secret_frees;
}
