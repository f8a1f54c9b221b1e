/* The examples, run as their users run them, against a real redis-server. */
#include "fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(examples, .init = fx_setup, .fini = fx_teardown, .timeout = 60);

static const char *example_path(const char *name)
{
    static char path[1024];
    const char *dir = getenv("RP_EXAMPLES_DIR");
    cr_assert(dir, "RP_EXAMPLES_DIR is not set (meson test sets it)");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

/* Runs a shell command; returns its exit status and output. */
static int run_command(const char *cmd, char *out, size_t cap)
{
    FILE *pipe = popen(cmd, "r");
    size_t n = fread(out, 1, cap - 1, pipe);
    out[n] = '\0';
    return WEXITSTATUS(pclose(pipe));
}

/* Runs an example against the fixture's server: it must exit 0 and say `expected`. */
static void expect_example(const char *name, const char *expected)
{
    char cmd[1200], out[4096];
    snprintf(cmd, sizeof cmd, "%s -a %s 2>&1", example_path(name), fx_redis_addr);
    cr_expect_eq(run_command(cmd, out, sizeof out), 0, "%s: %s", name, out);
    cr_expect(strstr(out, expected) != NULL, "%s: %s", name, out);
}

Test(examples, hello_sets_and_gets) { expect_example("hello", "GET greeting: hello, ringpool"); }
Test(examples, pool_ping_prints_the_whole_reply_line) { expect_example("pool_ping", "reply: +PONG\r\n"); }
Test(examples, pipeline_gets_every_reply_in_order) { expect_example("pipeline", "10000 replies in order, 0 errors"); }
Test(examples, transaction_loses_no_increment) { expect_example("transaction", "tx:counter = 800"); }
Test(examples, pubsub_receives_what_it_publishes) { expect_example("pubsub", "news: message 3"); }
Test(examples, latency_hooks_prints_percentiles_of_every_command)
{
    expect_example("latency_hooks", "20000 commands, 0 failed");
}

Test(examples, help_describes_the_options)
{
    const char *names[] = {"hello", "pipeline", "transaction", "pubsub", "embed_epoll", "pool_ping", "pool_bench",
                           "latency_hooks", "cluster"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char cmd[1100], out[2048];
        snprintf(cmd, sizeof cmd, "%s --help", example_path(names[i]));
        cr_expect_eq(run_command(cmd, out, sizeof out), 0);
        cr_expect(strstr(out, "usage:") && strstr(out, "-a ADDR"), "%s --help: %s", names[i], out);
    }
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

static void read_lines(int fd, char *buf, size_t cap, int lines)
{
    size_t len = 0;
    int seen = 0;
    while (seen < lines && len < cap - 1) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        cr_assert_gt(n, 0, "the server closed early");
        for (ssize_t i = 0; i < n; i++)
            seen += buf[len + (size_t)i] == '\n';
        len += (size_t)n;
    }
    buf[len] = '\0';
}

Test(examples, embed_epoll_answers_each_line_with_a_get)
{
    fx_redis_command("SET fruit apple\r\n");
    fx_redis_command("SET veg carrot\r\n");
    int port = fx_closed_port(), out[2];
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    cr_assert_eq(pipe(out), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        execl(example_path("embed_epoll"), "embed_epoll", "-a", fx_redis_addr, "-l", port_text, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char banner[128];
    cr_assert_gt(read(out[0], banner, sizeof banner), 0, "embed_epoll printed nothing");
    close(out[0]);
    int peers[2] = {connect_to(port), connect_to(port)};
    cr_assert_eq(write(peers[0], "fruit\nveg\n", 10), 10);
    cr_assert_eq(write(peers[1], "missing\r\n", 9), 9);
    char answer[256];
    read_lines(peers[0], answer, sizeof answer, 2);
    cr_expect_str_eq(answer, "apple\ncarrot\n");
    read_lines(peers[1], answer, sizeof answer, 1);
    cr_expect_str_eq(answer, "(nil)\n");
    close(peers[0]);
    close(peers[1]);
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "embed_epoll did not exit cleanly on SIGTERM");
}
