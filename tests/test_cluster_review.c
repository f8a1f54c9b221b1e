/* Review of rp_cluster: each test shows one defect found in review (it
 * fails before the fix on this branch). Some run against the real 3+3
 * cluster of cluster_fixture.h, others against fake nodes of their own: a
 * thread on 127.0.0.1 that reads RESP commands and answers what the test
 * scripts (a layout pointing at itself, TRYAGAIN, ...). */
#include "cluster_fixture.h"
#include "fixture.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static rp_loop *loop;
static rp_cluster *cluster;

static void closed_cb(rp_cluster *c, void *data)
{
    (void)c;
    (*(int *)data)++;
}

static void close_cluster(void)
{
    int closed = 0;
    cr_assert_eq(rp_cluster_close(cluster, closed_cb, &closed), 0);
    cr_assert(fx_run_until_count(loop, &closed, 1, 20000), "the cluster did not close");
    fx_run_for(loop, 20);
    cr_assert_eq(closed, 1);
    cr_assert_eq(rp_loop_free(loop), 0);
}

static void result_cb(rp_cluster *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    fx_result *r = data;
    r->calls++;
    r->status = status;
    if (reply) {
        r->type = reply->type;
        r->integer = reply->integer;
        snprintf(r->str, sizeof r->str, "%.*s", (int)reply->len, reply->str ? reply->str : "");
    }
}

static fx_result run_argv(int argc, const char **argv)
{
    fx_result r = {0};
    cr_assert_eq(rp_cluster_command(cluster, result_cb, &r, argc, argv, NULL), 0, "%s refused", argv[0]);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 20000), "no reply to %s", argv[0]);
    return r;
}

#define RUN(...) run_argv(sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *), (const char *[]){__VA_ARGS__})

static rp_cluster_stats stats(void)
{
    rp_cluster_stats st;
    rp_cluster_get_stats(cluster, &st);
    return st;
}

static void key_in_slot(int slot, const char *suffix, char *out, size_t size)
{
    char base[64];
    fxc_key_for_slot(slot, base, sizeof base);
    snprintf(out, size, "{%s}:%s", base, suffix);
    cr_assert_eq(rp_cluster_key_slot(out, strlen(out)), slot);
}

static int slot_of_node(int node)
{
    for (int slot = 0; slot < RP_CLUSTER_SLOTS; slot++)
        if (fxc_master_of_slot(slot) == node)
            return slot;
    cr_assert_fail("node %d serves no slot", node);
    return -1;
}

static bool node_listed(const char *addr)
{
    rp_cluster_node_info info[8];
    int n = rp_cluster_nodes(cluster, info, 8);
    for (int i = 0; i < n && i < 8; i++)
        if (!strcmp(info[i].addr, addr))
            return true;
    return false;
}

/* ------------------------------------------------------------ fake nodes */

#define FAKE_MAX_CLIENTS 16

typedef struct fake_node fake_node;
/* Writes the reply to argv into out (RESP) and returns its length; 0
 * sends nothing. Runs on the fake's thread. */
typedef size_t (*fake_handler)(fake_node *fake, int argc, char **argv, char *out, size_t cap);

struct fake_node {
    int listener, port;
    char addr[32];
    pthread_t thread;
    atomic_bool stop;
    fake_handler handler;
    void *data;
    atomic_int commands; /* every command read */
    atomic_int gets;     /* GETs read */
    atomic_int shards;   /* CLUSTER SHARDS read */
};

/* One RESP command (array of bulk strings) from buf; its length, or 0 if
 * incomplete. */
static size_t parse_command(char *buf, size_t len, int *argc, char **argv, int max)
{
    char *p = buf, *end = buf + len;
    if (len < 4 || *p != '*')
        return 0;
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return 0;
    int n = atoi(p + 1);
    p = nl + 1;
    *argc = 0;
    for (int i = 0; i < n; i++) {
        if (p >= end || *p != '$' || !(nl = memchr(p, '\n', (size_t)(end - p))))
            return 0;
        long blen = atol(p + 1);
        p = nl + 1;
        if (end - p < blen + 2)
            return 0;
        if (*argc < max)
            argv[(*argc)++] = p;
        p[blen] = 0; /* over the \r */
        p += blen + 2;
    }
    return (size_t)(p - buf);
}

static bool is(const char *arg, const char *name) { return !strcasecmp(arg, name); }

static void *fake_run(void *arg)
{
    fake_node *fake = arg;
    struct pollfd fds[FAKE_MAX_CLIENTS + 1];
    static __thread char bufs[FAKE_MAX_CLIENTS + 1][65536];
    size_t used[FAKE_MAX_CLIENTS + 1] = {0};
    int nfds = 1;
    fds[0] = (struct pollfd){.fd = fake->listener, .events = POLLIN};
    static __thread char out[1 << 16];
    while (!atomic_load(&fake->stop)) {
        if (poll(fds, (nfds_t)nfds, 20) <= 0)
            continue;
        if ((fds[0].revents & POLLIN) && nfds <= FAKE_MAX_CLIENTS) {
            int fd = accept(fake->listener, NULL, NULL);
            if (fd >= 0) {
                used[nfds] = 0;
                fds[nfds++] = (struct pollfd){.fd = fd, .events = POLLIN};
            }
        }
        for (int i = 1; i < nfds; i++) {
            if (!fds[i].revents)
                continue;
            ssize_t got = read(fds[i].fd, bufs[i] + used[i], sizeof bufs[i] - used[i] - 1);
            if (got <= 0) {
                close(fds[i].fd);
                fds[i] = fds[nfds - 1];
                memcpy(bufs[i], bufs[nfds - 1], used[nfds - 1]);
                used[i] = used[nfds - 1];
                nfds--;
                i--;
                continue;
            }
            used[i] += (size_t)got;
            size_t taken;
            int argc;
            char *argv[64];
            while ((taken = parse_command(bufs[i], used[i], &argc, argv, 64))) {
                atomic_fetch_add(&fake->commands, 1);
                if (is(argv[0], "GET"))
                    atomic_fetch_add(&fake->gets, 1);
                if (argc == 2 && is(argv[0], "CLUSTER") && is(argv[1], "SHARDS"))
                    atomic_fetch_add(&fake->shards, 1);
                size_t n = fake->handler(fake, argc, argv, out, sizeof out);
                if (n && write(fds[i].fd, out, n) != (ssize_t)n)
                    break;
                memmove(bufs[i], bufs[i] + taken, used[i] - taken);
                used[i] -= taken;
            }
        }
    }
    for (int i = 1; i < nfds; i++)
        close(fds[i].fd);
    return NULL;
}

static void fake_start(fake_node *fake, fake_handler handler, void *data)
{
    memset(fake, 0, sizeof *fake);
    fake->listener = fx_listener(64, &fake->port);
    snprintf(fake->addr, sizeof fake->addr, "127.0.0.1:%d", fake->port);
    fake->handler = handler;
    fake->data = data;
    cr_assert_eq(pthread_create(&fake->thread, NULL, fake_run, fake), 0);
}

static void fake_stop(fake_node *fake)
{
    atomic_store(&fake->stop, true);
    pthread_join(fake->thread, NULL);
    close(fake->listener);
}

/* CLUSTER SHARDS naming one master per entry: shard i has masters[i] and
 * the slots first[i]..last[i] (no slots if first[i] < 0). */
static size_t shards_reply(char *out, size_t cap, int n, const int *ports, const int *first, const int *last)
{
    size_t len = (size_t)snprintf(out, cap, "*%d\r\n", n);
    for (int i = 0; i < n; i++) {
        if (first[i] >= 0)
            len += (size_t)snprintf(out + len, cap - len, "*4\r\n$5\r\nslots\r\n*2\r\n:%d\r\n:%d\r\n", first[i], last[i]);
        else
            len += (size_t)snprintf(out + len, cap - len, "*4\r\n$5\r\nslots\r\n*0\r\n");
        len += (size_t)snprintf(out + len, cap - len,
                                "$5\r\nnodes\r\n*1\r\n*10\r\n$2\r\nid\r\n$3\r\nid%d\r\n$4\r\nport\r\n:%d\r\n"
                                "$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
                                "$6\r\nhealth\r\n$6\r\nonline\r\n",
                                i, ports[i]);
    }
    return len;
}

static size_t text(char *out, size_t cap, const char *resp) { return (size_t)snprintf(out, cap, "%s", resp); }

/* What every fake answers the same way: set-up and the COMMAND table
 * (empty: the cluster routes by argv[1]). */
static size_t common_reply(int argc, char **argv, char *out, size_t cap)
{
    if (is(argv[0], "COMMAND") && argc == 1)
        return text(out, cap, "*0\r\n");
    if (is(argv[0], "PING"))
        return text(out, cap, "+PONG\r\n");
    return text(out, cap, "-ERR unexpected command\r\n");
}

/* -------------------------------------------------- against fake nodes */

static void fake_setup(void) { fx_setup_no_redis(); }

TestSuite(cluster_review_fake, .init = fake_setup, .fini = fx_teardown, .timeout = 120);

/* A node that serves every slot itself and answers GET with TRYAGAIN. */
static size_t tryagain_node(fake_node *fake, int argc, char **argv, char *out, size_t cap)
{
    if (is(argv[0], "CLUSTER") && argc == 2 && is(argv[1], "SHARDS"))
        return shards_reply(out, cap, 1, (int[]){fake->port}, (int[]){0}, (int[]){16383});
    if (is(argv[0], "GET"))
        return text(out, cap, "-TRYAGAIN Multiple keys request during rehashing of slot\r\n");
    return common_reply(argc, argv, out, cap);
}

/* cluster.h: TRYAGAIN, CLUSTERDOWN, LOADING, READONLY ... "are sent again
 * after the node client's backoff ... All of these together are bounded
 * by max_redirects". The node client retries those refusals itself too
 * (rp_client's rule, max_retries), so with the default options each
 * cluster attempt is (1 + max_retries) sends: max_redirects 2 gives 12
 * sends instead of 3. */
Test(cluster_review_fake, tryagain_sends_bounded_by_max_redirects)
{
    fake_node fake;
    fake_start(&fake, tryagain_node, NULL);
    const char *seeds[] = {fake.addr};
    rp_cluster_options opts;
    rp_cluster_options_init(&opts);
    opts.seeds = seeds;
    opts.nseeds = 1;
    opts.max_redirects = 2;
    opts.node.min_retry_backoff_ms = 1;
    opts.node.max_retry_backoff_ms = 2;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_cluster_new(&cluster, loop, &opts), 0);
    fx_result r = RUN("GET", "k");
    cr_assert_eq(r.type, REDIS_REPLY_ERROR);
    cr_assert(!strncmp(r.str, "TRYAGAIN", 8), "%s", r.str);
    int gets = atomic_load(&fake.gets);
    close_cluster();
    fake_stop(&fake);
    cr_assert_eq(gets, 3, "GET sent %d times for max_redirects 2", gets);
}

/* The layout names X (whose connect never completes) as master of every
 * slot until the test flips `phase`; then the fake serves every slot
 * itself, answering that read late (`delay_ms`), so the test can deliver
 * it in the same loop iteration as a deadline. */
typedef struct moving_layout {
    int x_port;
    atomic_int phase;
    atomic_int asked_late;
    unsigned delay_ms;
} moving_layout;

static size_t moving_node(fake_node *fake, int argc, char **argv, char *out, size_t cap)
{
    moving_layout *layout = fake->data;
    if (is(argv[0], "CLUSTER") && argc == 2 && is(argv[1], "SHARDS")) {
        if (!atomic_load(&layout->phase))
            return shards_reply(out, cap, 2, (int[]){layout->x_port, fake->port}, (int[]){0, -1}, (int[]){16383, -1});
        atomic_fetch_add(&layout->asked_late, 1);
        usleep(layout->delay_ms * 1000);
        return shards_reply(out, cap, 1, (int[]){fake->port}, (int[]){0}, (int[]){16383});
    }
    if (is(argv[0], "GET"))
        return text(out, cap, "$2\r\nok\r\n");
    return common_reply(argc, argv, out, cap);
}

/* A command's deadline fires in the loop iteration in which the layout
 * drops the node it waits at (unsent). The node's close has already
 * queued the command's end, so rp_client_cancel says -ENOENT and
 * cmd_abandon gives up: the deadline is lost, and at_node_done sends the
 * command again (RP_ECLOSED, may_retry) to the slot's new master, where
 * it runs, long after its deadline, and the caller gets its reply instead
 * of -ETIMEDOUT. (rp_cluster_cancel in the same window also returns
 * -ENOENT, "completed or its end is queued", and the command runs.) */
Test(cluster_review_fake, deadline_not_lost_when_node_leaves_in_same_iteration)
{
    int x_port, x_fds[8];
    int x_listener = fx_listener(0, &x_port);
    fx_fill_backlog(x_port, x_fds, 8);
    moving_layout layout = {.x_port = x_port, .delay_ms = 300};
    fake_node fake;
    fake_start(&fake, moving_node, &layout);
    const char *seeds[] = {fake.addr};
    rp_cluster_options opts;
    rp_cluster_options_init(&opts);
    opts.seeds = seeds;
    opts.nseeds = 1;
    opts.refresh_interval_ms = 100;
    opts.node.pool.dial_timeout_ms = 60000;
    opts.node.pool.pool_timeout_ms = 60000;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_cluster_new(&cluster, loop, &opts), 0);
    uint64_t until = fx_now_ms() + 5000;
    while (stats().refreshes < 1 && fx_now_ms() < until)
        fx_run_for(loop, 10);
    cr_assert_geq(stats().refreshes, 1);
    fx_run_for(loop, 20); /* COMMAND's answer too */

    fx_result r = {0};
    rp_cluster_command_options copts = {.timeout_ms = 1000};
    uint64_t started = fx_now_ms();
    cr_assert_gt(rp_cluster_command_ex(cluster, &copts, result_cb, &r, 2, (const char *[]){"GET", "k"}, NULL), 0);
    fx_run_for(loop, 20); /* at X, its connect under way */
    atomic_store(&layout.phase, 1);
    until = fx_now_ms() + 900;
    while (!atomic_load(&layout.asked_late) && fx_now_ms() < until)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_assert(atomic_load(&layout.asked_late), "the periodic read did not come");
    cr_assert_eq(r.calls, 0);
    /* The new layout arrives, and the deadline passes, while the loop is
     * not running: the next iteration handles both. */
    while (fx_now_ms() < started + 1150)
        usleep(1000);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 3000));
    cr_assert_eq(r.status, -ETIMEDOUT, "the command ran past its deadline: status %d, reply \"%s\"", r.status,
                 r.str);
    fx_run_for(loop, 50);
    cr_assert_eq(r.calls, 1);
    close_cluster();
    fake_stop(&fake);
    for (int i = 0; i < 8; i++)
        close(x_fds[i]);
    close(x_listener);
}

/* ------------------------------------------------ against the real cluster */

static void cluster_setup(void)
{
    fx_setup_no_redis();
    fxc_start();
}

static void cluster_teardown(void)
{
    fxc_stop();
    fx_teardown();
}

TestSuite(cluster_review, .init = cluster_setup, .fini = cluster_teardown, .timeout = 120);

static void options(rp_cluster_options *opts, const char *const *seeds)
{
    rp_cluster_options_init(opts);
    opts->seeds = seeds;
    opts->nseeds = 1;
    opts->node.pool.pool_size = 8;
}

static void open_with(const rp_cluster_options *opts)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_cluster_new(&cluster, loop, opts), 0);
}

/* README: "MOVED <slot> <addr>: ... the command goes to addr at once".
 * With read_from_replicas, cmd_redirect sets slot_master[slot] but
 * route() picks the slot's replicas from slot_shard, which MOVED does not
 * touch: the command goes back to the old shard's replica, which answers
 * MOVED again, until max_redirects is spent. After a slot moved, a read
 * fails with MOVED although one redirect would reach the new master. */
Test(cluster_review, moved_read_goes_to_named_node_with_read_from_replicas)
{
    const char *seeds[] = {fxc_addr(0)};
    rp_cluster_options opts;
    options(&opts, seeds);
    opts.read_from_replicas = true;
    opts.refresh_interval_ms = 60000; /* only the MOVED asks for a read */
    opts.max_redirects = 1;
    int replica = fxc_replica_of(1);
    cr_assert_geq(replica, 0);
    /* A replica is listed once CLUSTER SHARDS reports it online. */
    uint64_t until = fx_now_ms() + 20000;
    for (;;) {
        open_with(&opts);
        cr_assert_eq(RUN("PING").status, 0);
        if (node_listed(fxc_addr(replica)) || fx_now_ms() > until)
            break;
        close_cluster();
        usleep(200 * 1000);
    }
    cr_assert(node_listed(fxc_addr(replica)), "the replica never came online");
    int slot = slot_of_node(1);
    char key[64];
    key_in_slot(slot, "moved", key, sizeof key);
    cr_assert_eq(RUN("SET", key, "v").status, 0);
    fxc_migrate_slot(slot, 1, 0);
    fxc_wait_ok(20000);
    fx_result r = RUN("GET", key);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.type, REDIS_REPLY_STRING, "GET ended with \"%s\" after %llu MOVED", r.str,
                 (unsigned long long)stats().moved);
    cr_assert_str_eq(r.str, "v");
    close_cluster();
}

/* The same defect without replicas: after MOVED the command is routed
 * again by the client's own idea of its slot, not sent to the node named.
 * When COMMAND is refused (ACL; "a refusal leaves argv[1] routing for
 * good"), EVAL is routed by its script's slot: every MOVED names the
 * right node, and every resend goes back to the wrong one. */
Test(cluster_review, moved_goes_to_named_node_when_command_table_refused)
{
    for (int node = 0; node < fxc_count(); node++)
        fxc_command_ok(node, "ACL", "SETUSER", "rpuser", "on", ">pw", "~*", "&*", "+@all", "-command", NULL);
    const char *seeds[] = {fxc_addr(0)};
    rp_cluster_options opts;
    options(&opts, seeds);
    opts.node.username = "rpuser";
    opts.node.password = "pw";
    open_with(&opts);
    cr_assert_eq(RUN("PING").status, 0);
    const char *script = "return redis.call('GET', KEYS[1])";
    int script_node = fxc_master_of_slot(rp_cluster_key_slot(script, strlen(script)));
    char key[64];
    key_in_slot(slot_of_node((script_node + 1) % 3), "acl", key, sizeof key);
    cr_assert_eq(RUN("SET", key, "v").status, 0);
    fx_result r = RUN("EVAL", script, "1", key);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.type, REDIS_REPLY_STRING, "EVAL ended with \"%s\" after %llu MOVED", r.str,
                 (unsigned long long)stats().moved);
    cr_assert_str_eq(r.str, "v");
    close_cluster();
}

/* MIGRATE ... "" ... KEYS k1 k2: the server's keys are k1 and k2 (COMMAND
 * GETKEYS says so; the key spec at index 3 is the empty placeholder, and
 * the KEYS spec is flagged incomplete, found backwards from startfrom -2).
 * The client takes "" as a key too (slot 0) and refuses the command with
 * RP_ECROSSSLOT. */
Test(cluster_review, migrate_keys_form_is_not_cross_slot)
{
    const char *seeds[] = {fxc_addr(0)};
    rp_cluster_options opts;
    options(&opts, seeds);
    open_with(&opts);
    cr_assert_eq(RUN("PING").status, 0); /* the layout and COMMAND are known */
    int slot = slot_of_node(1);
    cr_assert_neq(slot, 0);
    char a[64], b[64], port[16];
    key_in_slot(slot, "a", a, sizeof a);
    key_in_slot(slot, "b", b, sizeof b);
    cr_assert_eq(RUN("MSET", a, "1", b, "2").status, 0);
    snprintf(port, sizeof port, "%d", fxc_port(2));
    char *getkeys = fxc_command(0, "COMMAND", "GETKEYS", "MIGRATE", "127.0.0.1", port, "", "0", "5000", "KEYS", a, b,
                                NULL);
    cr_assert_not_null(getkeys);
    char want[160];
    snprintf(want, sizeof want, "%s\n%s", a, b);
    cr_assert_str_eq(getkeys, want, "the server's keys: %s", getkeys);
    free(getkeys);
    /* To another master: it refuses keys of a slot it does not serve, but
     * the command must reach node 1 first. */
    const char *argv[] = {"MIGRATE", "127.0.0.1", port, "", "0", "5000", "COPY", "KEYS", a, b};
    fx_result r = {0};
    int rc = rp_cluster_command(cluster, result_cb, &r, 10, argv, NULL);
    cr_assert_eq(rc, 0, "MIGRATE ... KEYS refused: %s", rp_strerror(rc));
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000));
    cr_assert_eq(r.status, 0);
    cr_assert_eq(stats().moved, 0, "MIGRATE went to the wrong node: %s", r.str);
    close_cluster();
}
