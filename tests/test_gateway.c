/* examples/kv_gateway run as a server: a real process on a loopback port in
 * front of the fixture's redis-server, driven over real sockets. Each test
 * ends by signalling it, and expects exit status 0 and a stderr free of
 * sanitizer reports (the ASan build instruments the gateway too). */
#define _GNU_SOURCE /* mkostemp, pipe2 */
#include "fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(gateway, .init = fx_setup, .fini = fx_teardown);

typedef struct gateway {
    pid_t pid;
    int port;
    int stderr_fd; /* an unlinked file holding the gateway's stderr */
} gateway;

static const char *gateway_path(void)
{
    static char path[1024];
    const char *dir = getenv("RP_EXAMPLES_DIR");
    cr_assert(dir, "RP_EXAMPLES_DIR is not set (meson test sets it)");
    snprintf(path, sizeof path, "%s/kv_gateway", dir);
    return path;
}

/* Reads the first line the gateway prints, "listening on 127.0.0.1:PORT". */
static int read_port(int fd)
{
    char banner[128];
    size_t len = 0;
    while (len < sizeof banner - 1 && !memchr(banner, '\n', len)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        cr_assert_eq(poll(&pfd, 1, 10000), 1, "kv_gateway printed no port within 10 s");
        ssize_t n = read(fd, banner + len, sizeof banner - 1 - len);
        cr_assert_gt(n, 0, "kv_gateway exited before it listened");
        len += (size_t)n;
    }
    banner[len] = '\0';
    int port = 0;
    cr_assert_eq(sscanf(banner, "listening on 127.0.0.1:%d", &port), 1, "banner: %s", banner);
    return port;
}

/* Starts the gateway on any port, in front of the fixture's redis. */
static void gateway_start(gateway *g)
{
    char stderr_path[] = "/tmp/kv_gateway_stderr.XXXXXX";
    g->stderr_fd = mkostemp(stderr_path, O_CLOEXEC);
    cr_assert_geq(g->stderr_fd, 0);
    unlink(stderr_path); /* the child writes through its copy of the fd */
    int out[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    const char *path = gateway_path();
    g->pid = fork();
    if (g->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        dup2(out[1], STDOUT_FILENO);
        dup2(g->stderr_fd, STDERR_FILENO);
        execl(path, "kv_gateway", "-a", fx_redis_addr, "-l", "0", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    g->port = read_port(out[0]);
    close(out[0]);
}

static void expect_no_sanitizer_report(gateway *g)
{
    struct stat st;
    cr_assert_eq(fstat(g->stderr_fd, &st), 0);
    char *text = malloc((size_t)st.st_size + 1);
    ssize_t n = pread(g->stderr_fd, text, (size_t)st.st_size, 0);
    text[n > 0 ? n : 0] = '\0';
    close(g->stderr_fd);
    cr_expect(!strstr(text, "ERROR: AddressSanitizer") && !strstr(text, "ERROR: LeakSanitizer") &&
                  !strstr(text, "runtime error:"),
              "kv_gateway's stderr has a sanitizer report:\n%s", text);
    free(text);
}

/* Waits up to 5 s for the signalled gateway to exit (killing it past
 * that); expects exit status 0 and no sanitizer report on its stderr. */
static void expect_clean_exit(gateway *g)
{
    uint64_t deadline = fx_now_ms() + 5000;
    int status = 0;
    pid_t done;
    while (!(done = waitpid(g->pid, &status, WNOHANG)) && fx_now_ms() < deadline)
        usleep(10000);
    if (!done) {
        kill(g->pid, SIGKILL);
        waitpid(g->pid, NULL, 0);
    }
    expect_no_sanitizer_report(g);
    cr_expect(done, "kv_gateway did not exit within 5 s of its signal");
    cr_expect(!done || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
              "kv_gateway did not exit 0 (wait status %#x)", status);
}

static void stop_gateway(gateway *g, int sig)
{
    kill(g->pid, sig);
    expect_clean_exit(g);
}

/* A loopback connection whose reads give up after 10 s, so a missing
 * answer fails the test instead of hanging it. */
static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

static void send_text(int fd, const char *text)
{
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
}

/* Reads until `lines` newlines have arrived; returns the text (to free). */
static char *read_lines(int fd, int lines)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (int seen = 0; seen < lines;) {
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        cr_assert_gt(n, 0, "no answer (%d of %d lines read)", seen, lines);
        for (ssize_t i = 0; i < n; i++)
            seen += buf[len + (size_t)i] == '\n';
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

/* Sends lines and expects exactly `expected` back. */
static void expect_answers(int fd, const char *lines, const char *expected)
{
    send_text(fd, lines);
    int count = 0;
    for (const char *c = expected; *c; c++)
        count += *c == '\n';
    char *got = read_lines(fd, count);
    cr_expect_str_eq(got, expected, "for:\n%s", lines);
    free(got);
}

Test(gateway, answers_get_set_and_incr_in_line_order)
{
    gateway g;
    gateway_start(&g);
    int peer = connect_to(g.port);
    expect_answers(peer, "SET fruit apple\n", "OK\n");
    expect_answers(peer, "GET fruit\n", "apple\n");
    expect_answers(peer, "GET missing\n", "(nil)\n");
    expect_answers(peer, "INCR visits\n", "1\n");
    /* Pipelined in one write: one answer per line, in order, errors included. */
    expect_answers(peer,
                   "SET n 10\nINCR n\nget n\nGET missing\nSET greeting hello world\r\nGET greeting\n"
                   "INCR greeting\nFLUSHALL\nGET\n\nSET lonely\n",
                   "OK\n11\n11\n(nil)\nOK\nhello world\n-ERR value is not an integer or out of range\n"
                   "-ERR unknown command\n-ERR wrong number of arguments\n-ERR unknown command\n"
                   "-ERR wrong number of arguments\n");
    /* 1000 rounds in one write: each INCR answers the count so far and
     * the GET after it reads that back, so commands ran in line order. */
    enum { rounds = 1000 };
    char *lines = malloc(rounds * 13 + 1), *expected = malloc(rounds * 12 + 1);
    size_t llen = 0, elen = 0;
    for (int i = 1; i <= rounds; i++) {
        llen += (size_t)sprintf(lines + llen, "INCR c\nGET c\n");
        elen += (size_t)sprintf(expected + elen, "%d\n%d\n", i, i);
    }
    expect_answers(peer, lines, expected);
    free(lines);
    free(expected);
    /* 2000 GETs in one write: all may be in flight together. */
    char *gets = malloc(2000 * 6 + 1), *values = malloc(2000 * 5 + 1);
    for (int i = 0; i < 2000; i++) {
        memcpy(gets + i * 6, "GET c\n", 6);
        memcpy(values + i * 5, "1000\n", 5);
    }
    gets[2000 * 6] = values[2000 * 5] = '\0';
    expect_answers(peer, gets, values);
    free(gets);
    free(values);
    close(peer);
    stop_gateway(&g, SIGTERM);
}

/* Peers that send and close at once, half of them with a reset: replies
 * come back for peers that are gone, often while others are still owed. */
Test(gateway, survives_peers_that_hang_up_with_commands_in_flight)
{
    fx_redis_command("SET k v\r\n");
    gateway g;
    gateway_start(&g);
    char gets[1024] = "", mixed[1024] = "";
    for (int i = 0; i < 100; i++) {
        strcat(gets, "GET k\n");                        /* all in flight together */
        strcat(mixed, i % 2 ? "GET k\n" : "INCR n\n"); /* each INCR waits for what is before it */
    }
    for (int i = 0; i < 200; i++) {
        int fd = connect_to(g.port);
        send_text(fd, i % 4 == 0 ? gets : i % 4 == 2 ? mixed : "GET k\n");
        if (i % 2) {
            struct linger reset = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        }
        close(fd);
    }
    int peer = connect_to(g.port);
    expect_answers(peer, "GET k\n", "v\n");
    close(peer);
    cr_expect_eq(kill(g.pid, 0), 0, "kv_gateway died");
    stop_gateway(&g, SIGTERM);
}

/* Sends GET k until the answer is not an error, for up to timeout_ms;
 * returns the last answer (to free). */
static char *get_until_answered(int peer, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    for (;;) {
        send_text(peer, "GET k\n");
        char *got = read_lines(peer, 1);
        if (got[0] != '-' || fx_now_ms() >= deadline)
            return got;
        free(got);
        usleep(50000);
    }
}

Test(gateway, answers_errors_while_redis_is_down_and_recovers_without_restart)
{
    gateway g;
    gateway_start(&g);
    int peer = connect_to(g.port);
    expect_answers(peer, "SET k before\n", "OK\n");
    fx_redis_stop();
    uint64_t start = fx_now_ms();
    send_text(peer, "GET k\nINCR n\n");
    char *got = read_lines(peer, 2);
    cr_expect_lt(fx_now_ms() - start, 5000, "the errors took over 5 s");
    cr_expect(!strncmp(got, "-ERR ", 5) && strstr(got, "\n-ERR "), "with redis down, GET and INCR answered:\n%s",
              got);
    free(got);
    fx_redis_restart(); /* the same port, and empty: no persistence */
    got = get_until_answered(peer, 5000);
    cr_expect_str_eq(got, "(nil)\n", "redis is back, but GET still answers that");
    free(got);
    expect_answers(peer, "SET k after\nGET k\nINCR n\n", "OK\nafter\n1\n");
    close(peer);
    stop_gateway(&g, SIGTERM);
}

/* Redis sleeps, so the GETs sent just before SIGINT are still owed when it
 * comes: peers are closed at once, and the gateway exits once the commands
 * it sent have their replies. */
Test(gateway, exits_cleanly_on_sigint_with_peers_and_commands_in_flight)
{
    gateway g;
    gateway_start(&g);
    int idle = connect_to(g.port), busy = connect_to(g.port);
    expect_answers(busy, "SET k v\n", "OK\n");
    int sleeper = fx_redis_send("DEBUG SLEEP 1\r\n");
    usleep(100000);
    char gets[1024] = "";
    for (int i = 0; i < 50; i++)
        strcat(gets, "GET k\n");
    send_text(busy, gets);
    usleep(100000); /* the gateway has sent them */
    kill(g.pid, SIGINT);
    char buf[4096];
    cr_expect_eq(read(idle, buf, sizeof buf), 0, "the idle peer was not closed");
    while (read(busy, buf, sizeof buf) > 0)
        ; /* answers that made it out, then the close */
    expect_clean_exit(&g);
    fx_redis_wait_reply(sleeper);
    close(idle);
    close(busy);
}

Test(gateway, help_describes_the_options)
{
    char cmd[2200], out[2048];
    snprintf(cmd, sizeof cmd, "%s --help; %s -l 70000 2>/dev/null; echo \"exit $?\"", gateway_path(),
             gateway_path());
    FILE *pipe = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof out - 1, pipe);
    out[n] = '\0';
    cr_expect_eq(pclose(pipe), 0);
    cr_expect(strstr(out, "usage:") && strstr(out, "-a ADDR") && strstr(out, "-l PORT"), "--help: %s", out);
    cr_expect(strstr(out, "exit 2"), "-l 70000 was not refused: %s", out);
}
