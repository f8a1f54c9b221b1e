#define _GNU_SOURCE /* close_range */
#include "sentinel_fixture.h"

#include "cluster_fixture.h"
#include "fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 15000

typedef struct proc {
    int port;        /* plain: the fixture's own commands */
    int client_port; /* what clients and sentinels use: the TLS port with TLS, else port */
    pid_t pid;
    bool frozen;
    char addr[32];
} proc;

static proc data[2], sentinels[FXS_SENTINELS];
static const char *sentinel_addr_list[FXS_SENTINELS];
static char dir[32];
static bool tls, tls_data_dns_only;
static char tls_ca[64], tls_cert[64], tls_key[64], tls_data_cert[64], tls_data_key[64];

const char *fxs_data_addr(int node) { return data[node].addr; }
const char *fxs_tls_ca(void) { return tls_ca; }
const char *fxs_tls_cert(void) { return tls_cert; }
const char *fxs_tls_key(void) { return tls_key; }
int fxs_data_port(int node) { return data[node].port; }
const char *const *fxs_sentinel_addrs(void) { return sentinel_addr_list; }
int fxs_sentinel_port(int sentinel) { return sentinels[sentinel].port; }

/* ---- Commands over a blocking socket: the cluster fixture's client ---- */

char *fxs_command(int port, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    char *text = fxc_vcommand_at(port, arg, ap);
    va_end(ap);
    return text;
}

/* ---- Processes ---- */

/* Dies with the test; holds none of its fds. */
static void child_setup(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    close_range(3, ~0U, 0);
}

static pid_t spawn(const char *const *argv)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        child_setup(parent);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    cr_assert_gt(pid, 0, "fork: %s", strerror(errno));
    return pid;
}

/* Forks data node ctx at the port (fx_spawn_fn); with TLS it serves
 * clients at a TLS port of its own. */
static pid_t spawn_data(int port, void *ctx)
{
    proc *p = ctx;
    p->port = port;
    p->client_port = tls ? fx_reserve_port(0) : port;
    char port_arg[16], tls_port[16], rdb[32], log[64], master_port[16];
    snprintf(port_arg, sizeof port_arg, "%d", p->port);
    snprintf(tls_port, sizeof tls_port, "%d", p->client_port);
    snprintf(rdb, sizeof rdb, "dump-%d.rdb", p->port);
    snprintf(log, sizeof log, "%s/%d.log", dir, p->port);
    snprintf(master_port, sizeof master_port, "%d", data[0].client_port);
    bool replica = p != &data[0];
    /* The master refuses writes (NOREPLICAS) once its replica leaves
     * it: a forced failover then loses no acknowledged write. */
    /* With TLS, replication and the sentinels' links use it too, and a
     * replica announces its TLS port. */
    const char *argv[] = {"redis-server", "--port", port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", dir, "--dbfilename", rdb, "--logfile", log, "--repl-diskless-sync-delay", "0",
                          "--min-replicas-to-write", replica ? "0" : "1", "--min-replicas-max-lag", "10",
                          "--replicaof", replica ? "127.0.0.1" : "no", replica ? master_port : "one",
                          tls ? "--tls-port" : NULL, tls_port, "--tls-replication", "yes",
                          "--tls-cert-file", tls_data_cert, "--tls-key-file", tls_data_key, "--tls-ca-cert-file",
                          tls_ca, NULL};
    return spawn(argv);
}

static void start_data(int i)
{
    proc *p = &data[i];
    p->pid = fx_server_start(&p->port, 0, spawn_data, fx_redis_is_self, p);
    snprintf(p->addr, sizeof p->addr, "127.0.0.1:%d", p->client_port);
}

/* The sentinel's config file: written at its first start, rewritten by the
 * sentinel itself (what it learnt), read again at a restart. */
static void sentinel_conf(const proc *p, char *conf, size_t size)
{
    snprintf(conf, size, "%s/sentinel-%d.conf", dir, p->port);
}

/* Forks sentinel ctx with its config file as it is (fx_spawn_fn). */
static pid_t spawn_sentinel(int port, void *ctx)
{
    proc *p = ctx;
    cr_assert_eq(port, p->port);
    char conf[64];
    sentinel_conf(p, conf, sizeof conf);
    const char *argv[] = {"redis-server", conf, "--sentinel", NULL};
    return spawn(argv);
}

/* The same after writing its first config file for the port. */
static pid_t spawn_new_sentinel(int port, void *ctx)
{
    proc *p = ctx;
    p->port = port;
    p->client_port = tls ? fx_reserve_port(0) : port;
    char conf[64];
    sentinel_conf(p, conf, sizeof conf);
    FILE *f = fopen(conf, "we");
    cr_assert(f, "%s: %s", conf, strerror(errno));
    fprintf(f, "port %d\nbind 127.0.0.1\ndir %s\nlogfile %s/sentinel-%d.log\n", p->port, dir, dir, p->port);
    if (tls)
        fprintf(f, "tls-port %d\ntls-replication yes\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n",
                p->client_port, tls_cert, tls_key, tls_ca);
    fprintf(f,
            "sentinel monitor " FXS_NAME " 127.0.0.1 %d 2\n"
            "sentinel down-after-milliseconds " FXS_NAME " 1000\n"
            "sentinel failover-timeout " FXS_NAME " 5000\n",
            data[0].client_port);
    fclose(f);
    return spawn_sentinel(port, p);
}

static void start_sentinel(int i)
{
    proc *p = &sentinels[i];
    p->pid = fx_server_start(&p->port, 0, spawn_new_sentinel, fx_redis_is_self, p);
    snprintf(p->addr, sizeof p->addr, "127.0.0.1:%d", p->client_port);
    sentinel_addr_list[i] = p->addr;
}

void fxs_restart_sentinel(int i)
{
    proc *p = &sentinels[i];
    cr_assert_eq(p->pid, 0, "sentinel %d still runs", i);
    p->pid = fx_server_restart(p->port, spawn_sentinel, fx_redis_is_self, p);
}

/* The sentinel knows the master's replica (flags exactly "slave": up and
 * linked) and the two other sentinels. */
static bool sentinel_ready(const proc *p)
{
    char *replicas = fxs_command(p->port, "SENTINEL", "replicas", FXS_NAME, NULL);
    bool ready = replicas && strstr(replicas, "flags\nslave\n") && strstr(replicas, "master-link-status\nok");
    free(replicas);
    char *others = fxs_command(p->port, "SENTINEL", "sentinels", FXS_NAME, NULL);
    int count = 0;
    for (char *at = others; at && (at = strstr(at, "\nflags\nsentinel")); at++)
        count++;
    free(others);
    return ready && count == FXS_SENTINELS - 1;
}

/* One certificate (SANs localhost and 127.0.0.1) from a CA of its own,
 * served by every node and sentinel and shown by them as clients
 * (tls-auth-clients is on by default), and by the tests' clients. */
static void make_certs(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd %s && (openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -days 2 "
             "-subj /CN=ca -keyout ca.key -out ca.crt && "
             "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > node.ext && "
             "openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -subj /CN=node "
             "-keyout node.key -out node.csr && "
             "openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile node.ext "
             "-out node.crt && "
             "printf 'subjectAltName=DNS:localhost\\n' > named.ext && "
             "openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -subj /CN=named "
             "-keyout named.key -out named.csr && "
             "openssl x509 -req -in named.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile named.ext "
             "-out named.crt) >/dev/null 2>&1",
             dir);
    cr_assert_eq(system(cmd), 0, "making certificates failed: %s", cmd);
    snprintf(tls_ca, sizeof tls_ca, "%s/ca.crt", dir);
    snprintf(tls_cert, sizeof tls_cert, "%s/node.crt", dir);
    snprintf(tls_key, sizeof tls_key, "%s/node.key", dir);
    snprintf(tls_data_cert, sizeof tls_data_cert, "%s/%s.crt", dir, tls_data_dns_only ? "named" : "node");
    snprintf(tls_data_key, sizeof tls_data_key, "%s/%s.key", dir, tls_data_dns_only ? "named" : "node");
}

void fxs_start_tls(bool data_dns_only)
{
    tls = true;
    tls_data_dns_only = data_dns_only;
    fxs_start();
}

void fxs_start(void)
{
    snprintf(dir, sizeof dir, "/tmp/rp-sentinel-XXXXXX");
    cr_assert(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    if (tls)
        make_certs();
    start_data(0);
    start_data(1);
    for (int i = 0; i < FXS_SENTINELS; i++)
        start_sentinel(i);
    uint64_t deadline = fx_now_ms() + 2 * WAIT_MS;
    for (int i = 0; i < FXS_SENTINELS; i++)
        while (!sentinel_ready(&sentinels[i])) {
            cr_assert_lt(fx_now_ms(), deadline, "sentinel %d not ready", i);
            usleep(50000);
        }
}

static void kill_proc(proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
        p->frozen = false;
    }
}

void fxs_kill_data(int node) { kill_proc(&data[node]); }
void fxs_kill_sentinel(int sentinel) { kill_proc(&sentinels[sentinel]); }

static void freeze(proc *p, bool frozen)
{
    cr_assert_gt(p->pid, 0);
    kill(p->pid, frozen ? SIGSTOP : SIGCONT);
    p->frozen = frozen;
}

void fxs_freeze_sentinel(int sentinel, bool frozen) { freeze(&sentinels[sentinel], frozen); }
void fxs_freeze_data(int node, bool frozen) { freeze(&data[node], frozen); }

void fxs_stop(void)
{
    for (int i = 0; i < FXS_SENTINELS; i++)
        kill_proc(&sentinels[i]);
    for (int i = 0; i < 2; i++)
        kill_proc(&data[i]);
    if (dir[0]) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        cr_expect_eq(system(cmd), 0, "%s failed", cmd);
        dir[0] = '\0';
    }
    tls = tls_data_dns_only = false;
}

int fxs_master(void)
{
    for (int i = 0; i < 2; i++) {
        char *role = data[i].pid && !data[i].frozen ? fxs_command(data[i].port, "ROLE", NULL) : NULL;
        bool master = role && !strncmp(role, "master\n", 7);
        free(role);
        if (master)
            return i;
    }
    return -1;
}

void fxs_failover(void)
{
    for (int i = 0; i < FXS_SENTINELS; i++) {
        if (!sentinels[i].pid)
            continue;
        char *reply = fxs_command(sentinels[i].port, "SENTINEL", "FAILOVER", FXS_NAME, NULL);
        cr_assert(reply && !strcmp(reply, "OK"), "SENTINEL FAILOVER: %s", reply ? reply : "no reply");
        free(reply);
        return;
    }
    cr_assert_fail("no live sentinel");
}

int fxs_switched(int from)
{
    int to = 1 - from;
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1\n%d", data[to].client_port);
    char *role = fxs_command(data[to].port, "ROLE", NULL);
    bool all = role && !strncmp(role, "master\n", 7);
    free(role);
    for (int i = 0; i < FXS_SENTINELS && all; i++) {
        if (!sentinels[i].pid || sentinels[i].frozen)
            continue;
        char *addr = fxs_command(sentinels[i].port, "SENTINEL", "get-master-addr-by-name", FXS_NAME, NULL);
        all = addr && !strcmp(addr, want);
        free(addr);
    }
    return all ? to : -1;
}

int fxs_wait_switch(int from, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    for (;;) {
        int to = fxs_switched(from);
        if (to >= 0)
            return to;
        cr_assert_lt(fx_now_ms(), deadline, "no switch from data node %d within %u ms", from, timeout_ms);
        usleep(50000);
    }
}
