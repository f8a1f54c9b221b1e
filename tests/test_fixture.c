/* The fixture's own promises about its servers' ports: outside the
 * kernel's ephemeral range (no client socket's local port, no port-0
 * listener of another suite, and no TCP self-connect can be one), held by
 * this process while the server is down (no other suite's fixture takes
 * it before our restart), and answered by the process the fixture
 * started. Suites run in parallel with other suites and with other
 * checkouts' suites on the same machine: these are what keeps a test from
 * talking to another test's server. */
#include "cluster_fixture.h"
#include "fixture.h"
#include "sentinel_fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(fixture, .init = fx_setup_no_redis, .fini = fx_teardown, .timeout = 60);

static bool ephemeral(int port)
{
    int lo = 0, hi = 0;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
    cr_assert(f && fscanf(f, "%d %d", &lo, &hi) == 2, "ip_local_port_range unreadable");
    fclose(f);
    return port >= lo && port <= hi;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

/* What a bind without SO_REUSEADDR (another process's fixture checking
 * the port is free) gets: 0 or an errno. */
static int bind_errno(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = loopback(port);
    int err = bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 ? errno : 0;
    close(fd);
    return err;
}

/* A connect's outcome: 0 or an errno. */
static int connect_errno(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = loopback(port);
    int err = connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0 ? errno : 0;
    close(fd);
    return err;
}

/* The pid the redis-server at port reports (INFO server), 0 if none. */
static long redis_pid_at(int port)
{
    char *info = fxs_command(port, "INFO", "server", NULL);
    char *line = info ? strstr(info, "process_id:") : NULL;
    long pid = line ? strtol(line + strlen("process_id:"), NULL, 10) : 0;
    free(info);
    return pid;
}

/* The pid the memcached at port reports (stats), 0 if none. */
static long memcached_pid_at(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval timeout = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in sin = loopback(port);
    char buf[8192] = {0};
    size_t len = 0;
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0 && write(fd, "stats\r\n", 7) == 7)
        for (ssize_t n = 1; n > 0 && len < sizeof buf - 1 && !strstr(buf, "END\r\n"); len += (size_t)n)
            n = read(fd, buf + len, sizeof buf - 1 - len);
    close(fd);
    char *line = strstr(buf, "STAT pid ");
    return line ? strtol(line + strlen("STAT pid "), NULL, 10) : 0;
}

/* The port a server of ours had, while it is down: nothing answers, and
 * no other process can bind it. */
static void expect_held_while_down(int port)
{
    cr_expect_eq(connect_errno(port), ECONNREFUSED, "port %d: %s", port, strerror(connect_errno(port)));
    cr_expect_eq(bind_errno(port), EADDRINUSE, "port %d was free for anyone while its server was down", port);
}

Test(fixture, redis_port_is_outside_the_ephemeral_range_and_held_across_a_restart)
{
    fx_redis_start();
    int port = fx_redis_port;
    cr_expect(!ephemeral(port), "port %d is in the ephemeral range", port);
    cr_expect_eq(redis_pid_at(port), fx_redis_pid());
    fx_redis_stop();
    expect_held_while_down(port);
    fx_redis_restart();
    cr_expect_eq(fx_redis_port, port);
    cr_expect_eq(redis_pid_at(port), fx_redis_pid(), "port %d answered by another process", port);
    fx_redis_stop();
}

Test(fixture, memcached_port_is_outside_the_ephemeral_range_and_held_across_a_restart)
{
    fx_memcached_start(NULL);
    int port = fx_memcached_port;
    cr_expect(!ephemeral(port), "port %d is in the ephemeral range", port);
    cr_expect_eq(memcached_pid_at(port), fx_memcached_pid());
    fx_memcached_stop();
    expect_held_while_down(port);
    fx_memcached_restart();
    cr_expect_eq(memcached_pid_at(port), fx_memcached_pid(), "port %d answered by another process", port);
    fx_memcached_stop();
}

/* A closed port refuses connects and stays closed to everyone else, yet
 * the test itself can listen there later (a server coming back). */
Test(fixture, closed_port_is_outside_the_ephemeral_range_held_and_listenable)
{
    int port = fx_closed_port();
    cr_expect(!ephemeral(port), "port %d is in the ephemeral range", port);
    expect_held_while_down(port);
    int listener = fx_listen_at(port, 4);
    cr_expect_eq(connect_errno(port), 0);
    close(listener);
    expect_held_while_down(port);
}

Test(fixture, cluster_ports_are_outside_the_ephemeral_range_and_held_after_a_kill)
{
    fxc_start();
    for (int i = 0; i < fxc_count(); i++) {
        cr_expect(!ephemeral(fxc_port(i)) && !ephemeral(fxc_port(i) + 10000), "node %d: port %d", i, fxc_port(i));
        cr_expect_eq(redis_pid_at(fxc_port(i)), fxc_pid(i), "node %d", i);
    }
    int port = fxc_port(0);
    fxc_kill(0);
    expect_held_while_down(port);
    cr_expect_eq(bind_errno(port + 10000), EADDRINUSE, "bus port %d was free for anyone", port + 10000);
    fxc_stop();
}

/* A redis-server of the test's own at the port, as another process's. */
static pid_t exec_redis(int port)
{
    char port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execlp("redis-server", "redis-server", "--port", port_arg, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--logfile", "/dev/null", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static pid_t stranger;
static int stranger_port;

/* fx_spawn_fn: the first time, a stranger (another test's server) takes
 * the port before ours, and ours, which could not bind, exits a little
 * later; then a real server. ctx counts the calls. */
static pid_t stranger_first(int port, void *ctx)
{
    int *spawns = ctx;
    if ((*spawns)++ > 0)
        return exec_redis(port);
    stranger = exec_redis(port);
    stranger_port = port;
    uint64_t deadline = fx_now_ms() + 5000;
    while (redis_pid_at(port) != stranger)
        cr_assert_lt(fx_now_ms(), deadline, "the stranger never answered");
    pid_t loser = fork();
    if (loser == 0) {
        usleep(300 * 1000);
        _exit(1);
    }
    return loser;
}

Test(fixture, a_stranger_at_the_port_is_not_taken_for_the_server)
{
    int spawns = 0, port;
    uint64_t start = fx_now_ms();
    pid_t pid = fx_server_start(&port, 0, stranger_first, fx_redis_is_self, &spawns);
    /* About 300 ms: asking the stranger who it is takes no timeout. */
    cr_expect_lt(fx_now_ms() - start, 2000, "%llu ms", (unsigned long long)(fx_now_ms() - start));
    cr_expect_eq(spawns, 2);
    cr_expect_neq(port, stranger_port);
    cr_expect(!ephemeral(port), "port %d is in the ephemeral range", port);
    cr_expect_eq(redis_pid_at(port), pid);
    cr_expect(fx_redis_is_self(port, pid));
    cr_expect(!fx_redis_is_self(stranger_port, pid));
    cr_expect(fx_redis_is_self(stranger_port, stranger));
    kill(pid, SIGKILL);
    kill(stranger, SIGKILL);
    waitpid(pid, NULL, 0);
    waitpid(stranger, NULL, 0);
}
