/* rp_cluster under churn, against a real 3+3 cluster on loopback: steady
 * load while slots move back and forth, a node joins, a replica takes over
 * and a master dies; closing in the middle of it; the cluster's lifecycle
 * edges; replica reads when the replica dies; and what the cluster work
 * must not have changed for a plain rp_client. */
#include "cluster_fixture.h"
#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(cluster_churn, .init = fxc_suite_setup, .fini = fxc_suite_teardown, .timeout = 120);

static rp_loop *loop;
static rp_cluster *cluster;

static void open_with(const rp_cluster_options *opts) { fxc_client_open(&loop, &cluster, opts); }
static void close_cluster(void) { fxc_client_close(loop, cluster); }

#define RUN(...) \
    fxc_run(loop, cluster, sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *), (const char *[]){__VA_ARGS__})

static int live_nodes(void) { return rp_cluster_nodes(cluster, NULL, 0); }

/* --------------------------------------------------------------- load */

/* Commands kept in flight, each callback sending the next: SET, GET and
 * INCR over keys of a few chosen slots (those the test moves) and of
 * every other slot. Each command's callback is counted by its sequence
 * number: it must run exactly once. */
#define LOAD_MAX 2000000
#define LOAD_SLOTS 4

static struct {
    int in_flight;
    long issued, replies, errors, refused_closed;
    bool stop;
    bool sending_closed; /* the cluster closes: new commands get RP_ECLOSED */
    unsigned char *calls;
    char bases[LOAD_SLOTS][48];
    char last_error[128];
    int max_nodes;
    int64_t cancel_ids[64];
    int ncancel;
} ld;

static void load_send(void);

static void load_cb(rp_cluster *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    long seq = (long)(intptr_t)data;
    cr_assert_lt(seq, ld.issued);
    cr_assert_eq(ld.calls[seq]++, 0, "command %ld called back twice", seq);
    ld.replies++;
    if (status < 0 || reply->type == REDIS_REPLY_ERROR) {
        ld.errors++;
        snprintf(ld.last_error, sizeof ld.last_error, "%s", status < 0 ? rp_strerror(status) : reply->str);
    }
    load_send();
}

static void load_send(void)
{
    if (ld.stop || ld.issued >= LOAD_MAX)
        return;
    long seq = ld.issued;
    char key[96];
    unsigned pick = (unsigned)seq % 7;
    if (pick < LOAD_SLOTS)
        snprintf(key, sizeof key, "{%s}:%ld", ld.bases[pick], seq % 64);
    else
        snprintf(key, sizeof key, "k:%ld", seq % 4096);
    const char *set[] = {"SET", key, "v"}, *get[] = {"GET", key}, *incr[] = {"INCR", key};
    const char **argv = seq % 3 == 0 ? set : seq % 3 == 1 ? get : incr;
    if (argv == incr) /* INCR on a "v": keep it a counter of its own */
        snprintf(key + strlen(key), sizeof key - strlen(key), ":n");
    int argc = argv == set ? 3 : 2;
    ld.issued++;
    /* Some carry a deadline, short enough to fire in a backoff. */
    rp_cluster_command_options opts = {.timeout_ms = seq % 11 == 0 ? 150 : 0};
    int64_t id = rp_cluster_command_ex(cluster, &opts, load_cb, (void *)(intptr_t)seq, argc, argv, NULL);
    int rc = id < 0 ? (int)id : 0;
    if (id > 0 && seq % 13 == 0)
        ld.cancel_ids[ld.ncancel++ % 64] = id; /* cancelled a little later */
    if (rc == RP_ECLOSED && ld.sending_closed) {
        ld.calls[seq] = 1; /* refused: no callback will come */
        ld.refused_closed++;
        return;
    }
    cr_assert_eq(rc, 0, "command %ld refused: %s", seq, rp_strerror(rc));
}

static void load_start(const int *slots, int in_flight)
{
    memset(&ld, 0, sizeof ld);
    ld.calls = calloc(LOAD_MAX, 1);
    for (int i = 0; i < LOAD_SLOTS; i++)
        fxc_key_for_slot(slots[i], ld.bases[i], sizeof ld.bases[i]);
    ld.in_flight = in_flight;
    for (int i = 0; i < in_flight; i++)
        load_send();
}

/* Runs the loop for ms, watching the number of node clients. */
static void load_run(unsigned ms)
{
    uint64_t until = fx_now_ms() + ms;
    while (fx_now_ms() < until) {
        fx_run_for(loop, 10);
        for (int i = 0; i < 64; i++) { /* an id may have ended: -ENOENT */
            int rc = ld.cancel_ids[i] ? rp_cluster_cancel(cluster, ld.cancel_ids[i]) : 0;
            cr_assert(rc == 0 || rc == -ENOENT, "cancel: %s", rp_strerror(rc));
            ld.cancel_ids[i] = 0;
        }
        int n = live_nodes();
        ld.max_nodes = n > ld.max_nodes ? n : ld.max_nodes;
    }
}

/* Stops the load; every command issued calls back exactly once. */
static void load_drain(void)
{
    ld.stop = true;
    uint64_t deadline = fx_now_ms() + 30000;
    while (ld.replies + ld.refused_closed < ld.issued && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_eq(ld.replies + ld.refused_closed, ld.issued, "%ld commands never called back",
                 ld.issued - ld.replies - ld.refused_closed);
}

static void load_check_once(void)
{
    for (long seq = 0; seq < ld.issued; seq++)
        cr_assert_eq(ld.calls[seq], 1, "command %ld: %d callbacks", seq, ld.calls[seq]);
    free(ld.calls);
    ld.calls = NULL;
}

/* Runs the loop until a node's role is master (the fixture's helpers
 * block: this one lets the load go on meanwhile). */
static void load_until_master(int node)
{
    uint64_t deadline = fx_now_ms() + 30000;
    while (!fxc_is_master(node) && fx_now_ms() < deadline)
        load_run(50);
    cr_assert(fxc_is_master(node), "node %d was not promoted", node);
}

/* Opens the client and starts 300 commands over node 0's first two slots
 * and a slot of each other master; returns node 0's first slot. */
static int load_open(const rp_cluster_options *opts)
{
    open_with(opts);
    int s0 = fxc_slot_of_node(0), s1 = fxc_slot_of_node(1), s2 = fxc_slot_of_node(2);
    int slots[LOAD_SLOTS] = {s0, s0 + 1, s1, s2};
    cr_assert_eq(RUN("PING").status, 0);
    load_start(slots, 300);
    load_run(200);
    return s0;
}

/* Slots move 0 -> 1 -> 0 (keys and all), a node joins and takes one, a
 * replica takes over by CLUSTER FAILOVER, a master dies and its replica is
 * promoted: all while `in_flight` commands are under way. */
static void churn(int lanes, bool replicas)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.node.autopipeline_conns = lanes;
    opts.read_from_replicas = replicas;
    opts.refresh_interval_ms = 200;
    int s0 = load_open(&opts);
    for (int round = 0; round < 2; round++) {
        fxc_migrate_start(s0, 0, 1);
        load_run(50);
        fxc_migrate_keys(s0, 0, 1);
        load_run(50);
        fxc_migrate_finish(s0, 0, 1);
        load_run(150);
        fxc_migrate_slot(s0, 1, 0);
        load_run(150);
    }
    int added = fxc_add_node();
    load_run(300);
    fxc_migrate_slot(s0 + 1, 0, added);
    load_run(300);
    int replica = fxc_replica_of(1);
    cr_assert_geq(replica, 0);
    fxc_failover(replica);
    load_run(300);
    if (replicas) { /* reads to node 0's replica fail over to node 0 */
        fxc_kill(fxc_replica_of(0));
        load_run(300);
    }
    int heir = fxc_replica_of(2);
    cr_assert_geq(heir, 0);
    fxc_kill(2);
    load_until_master(heir);
    load_run(1500); /* the layout drops node 2; the load reaches the heir */
    long replies_before = ld.replies;
    load_run(300);
    cr_assert_gt(ld.replies, replies_before, "the load stalled");
    load_drain();
    load_check_once();
    /* 7 nodes were ever up, one of them killed. */
    cr_assert_leq(ld.max_nodes, 7, "%d node clients at once", ld.max_nodes);
    fprintf(stderr, "churn (lanes %d%s): %ld commands, %ld failed (last: %s), at most %d nodes\n", lanes,
            replicas ? ", replica reads" : "", ld.issued, ld.errors, ld.last_error, ld.max_nodes);
    rp_cluster_node_info info[16];
    int n = rp_cluster_nodes(cluster, info, 16);
    /* The killed master (a master of no slot now) left the layout. */
    for (int i = 0; i < n && i < 16; i++)
        cr_assert_neq(strcmp(info[i].addr, fxc_addr(2)), 0, "the killed master still has a client (%d slots)",
                      info[i].slots);
    cr_assert_leq(n, replicas ? 5 : 6, "%d node clients after the churn", n);
    /* After the churn, every slot is served without an error. */
    cr_assert_eq(RUN("SET", "after", "churn").type, REDIS_REPLY_STATUS);
    close_cluster();
}

Test(cluster_churn, churn_with_autopipelining) { churn(2, false); }
Test(cluster_churn, churn_without_autopipelining) { churn(0, false); }
Test(cluster_churn, churn_reading_from_replicas) { churn(2, true); }

/* The cluster closes while commands wait in backoff (a master just died),
 * a slot is half moved, a refresh is under way: every callback once, the
 * close callback once, nothing left on the loop. */
Test(cluster_churn, close_in_the_middle_of_churn)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.node.autopipeline_conns = 2;
    opts.refresh_interval_ms = 100;
    int s0 = load_open(&opts);
    fxc_migrate_start(s0, 0, 1);
    fxc_migrate_keys(s0, 0, 1); /* left half done: ASK */
    load_run(100);
    fxc_kill(2); /* commands to node 2 fail and back off */
    load_run(150);
    ld.sending_closed = true;
    int closed = 0;
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, &closed), 0);
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, &closed), RP_ECLOSED);
    const char *argv[] = {"GET", "x"};
    cr_assert_eq(rp_cluster_command(cluster, load_cb, NULL, 2, argv, NULL), RP_ECLOSED);
    cr_assert(fx_run_until_count(loop, &closed, 1, 30000), "the cluster did not close");
    cr_assert_eq(ld.replies + ld.refused_closed, ld.issued, "%ld commands never called back",
                 ld.issued - ld.replies - ld.refused_closed);
    load_check_once();
    fxc_client_wait_closed(loop, &closed);
}

/* ------------------------------------------------------------ lifecycle */

static int cb_calls;
static int cb_status;

static void count_cb(rp_cluster *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    (void)reply;
    (void)data;
    cb_calls++;
    cb_status = status;
}

/* Closed before the loop ever ran, with commands waiting for the first
 * layout (one of them cross-slot, found only once the layout is known). */
Test(cluster_churn, close_right_after_new)
{
    rp_cluster_options opts = fxc_seed_options();
    open_with(&opts);
    int closed = 0;
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, &closed), 0);
    fxc_client_wait_closed(loop, &closed);

    open_with(&opts);
    cb_calls = 0;
    const char *get[] = {"GET", "k"}, *mset[] = {"MSET", "{a}x", "1", "{b}y", "2"};
    cr_assert_eq(rp_cluster_command(cluster, count_cb, NULL, 2, get, NULL), 0);
    cr_assert_eq(rp_cluster_command(cluster, count_cb, NULL, 5, mset, NULL), 0);
    closed = 0;
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, &closed), 0);
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, &closed), RP_ECLOSED);
    cr_assert_eq(rp_cluster_command(cluster, count_cb, NULL, 2, get, NULL), RP_ECLOSED);
    cr_assert_eq(rp_cluster_set_hooks(cluster, NULL), RP_ECLOSED);
    fxc_client_wait_closed(loop, &closed);
    cr_assert_eq(cb_calls, 2);
    cr_assert_eq(cb_status, RP_ECLOSED);
}

/* A reply callback closes the cluster and tries another command: it is
 * refused, the other commands under way end once, the cluster closes. */
static int inside_closed;
static int inside_refused;

static void close_inside_cb(rp_cluster *c, const redisReply *reply, int status, void *data)
{
    count_cb(c, reply, status, data);
    if (cb_calls != 1)
        return;
    cr_assert_eq(rp_cluster_close(c, fxc_closed_cb, &inside_closed), 0);
    const char *get[] = {"GET", "later"};
    inside_refused = rp_cluster_command(c, count_cb, NULL, 2, get, NULL);
    cr_assert_eq(rp_cluster_close(c, fxc_closed_cb, &inside_closed), RP_ECLOSED);
}

static void close_from_a_callback(int lanes, const char *first)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.node.autopipeline_conns = lanes;
    open_with(&opts);
    cr_assert_eq(RUN("PING").status, 0);
    cb_calls = inside_closed = inside_refused = 0;
    char key[32];
    /* The first to end is `first` (the cross-slot one ends at once);
     * the others are spread over every master. */
    const char *argv[] = {first, "{a}x", "1", "{b}y", "2"};
    cr_assert_eq(rp_cluster_command(cluster, close_inside_cb, NULL, !strcmp(first, "MSET") ? 5 : 1, argv, NULL),
                 !strcmp(first, "MSET") ? RP_ECROSSSLOT : 0);
    int want = !strcmp(first, "MSET") ? 0 : 1;
    for (int i = 0; i < 200; i++, want++) {
        snprintf(key, sizeof key, "k:%d", i);
        const char *get[] = {"GET", key};
        cr_assert_eq(rp_cluster_command(cluster, close_inside_cb, NULL, 2, get, NULL), 0);
    }
    cr_assert(fx_run_until_count(loop, &inside_closed, 1, 30000), "the cluster did not close");
    cr_assert_eq(inside_refused, RP_ECLOSED);
    cr_assert_eq(cb_calls, want);
    fxc_client_wait_closed(loop, &inside_closed);
}

Test(cluster_churn, close_from_a_reply_callback)
{
    close_from_a_callback(0, "PING");
    close_from_a_callback(2, "PING");
}

/* ------------------------------------------------------------- replicas */

/* With read_from_replicas, the replica serving a slot's reads dies: the
 * reads go to the master, none fails. */
Test(cluster_churn, reads_fall_back_to_the_master_when_the_replica_dies)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.read_from_replicas = true;
    opts.refresh_interval_ms = 100;
    open_with(&opts);
    int replica = fxc_replica_of(1);
    cr_assert_geq(replica, 0);
    char key[64], base[48];
    fxc_key_for_slot(fxc_slot_of_node(1), base, sizeof base);
    snprintf(key, sizeof key, "{%s}:r", base);
    cr_assert_eq(RUN("SET", key, "replicated").status, 0);
    fx_result r;
    uint64_t deadline = fx_now_ms() + 15000;
    do /* the replica is listed, and has the write */
        r = RUN("GET", key);
    while ((r.type != REDIS_REPLY_STRING || strcmp(r.str, "replicated")) && fx_now_ms() < deadline);
    cr_assert_str_eq(r.str, "replicated");
    fxc_kill(replica);
    /* Reads in bursts until the layout has dropped the replica, and after. */
    for (int burst = 0; burst < 15; burst++) {
        fx_result rs[40] = {0};
        const char *get[] = {"GET", key};
        for (int i = 0; i < 40; i++)
            cr_assert_eq(rp_cluster_command(cluster, fxc_result_cb, &rs[i], 2, get, NULL), 0);
        for (int i = 0; i < 40; i++) {
            cr_assert(fx_run_until_count(loop, &rs[i].calls, 1, 20000), "no reply to a read");
            cr_assert_eq(rs[i].status, 0, "burst %d: a read failed: %s", burst, rp_strerror(rs[i].status));
            cr_assert_str_eq(rs[i].str, "replicated", "burst %d", burst);
        }
        fx_run_for(loop, 150);
    }
    close_cluster();
}

/* ------------------------------------------------- plain rp_client */

static struct {
    int ends, last_retries;
} plain_hooked;

static void plain_end(void *data, int argc, const char *const *argv, const size_t *argvlen, uint64_t duration_ns,
                      int status, int retries)
{
    (void)data, (void)argc, (void)argv, (void)argvlen, (void)duration_ns, (void)status;
    plain_hooked.ends++;
    plain_hooked.last_retries = retries;
}

/* A plain rp_client at a cluster node still sends TRYAGAIN again itself
 * (only a cluster's attempts leave it to the cluster), with lanes and
 * without; a command in its backoff is cancelled as before. */
static void plain_client_tryagain(int lanes, const char *a, const char *b)
{
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = fxc_addr(0);
    opts.pool.pool_size = 4;
    opts.autopipeline_conns = lanes;
    opts.max_retries = 2;
    opts.min_retry_backoff_ms = 1;
    opts.max_retry_backoff_ms = 2;
    rp_client *client;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    rp_hooks hooks = {.command_end = plain_end};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0);
    plain_hooked.ends = 0;
    fx_result r = {0};
    const char *mget[] = {"MGET", a, b};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 3, mget, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000));
    cr_assert_eq(r.status, 0);
    cr_assert(!strncmp(r.str, "TRYAGAIN", 8), "%s", r.str);
    cr_assert_eq(plain_hooked.last_retries, 2, "lanes %d: TRYAGAIN sent again %d times", lanes,
                 plain_hooked.last_retries);
    /* Cancelled in its backoff: -ECANCELED, once. */
    rp_client_close(client, NULL, NULL);
    fx_run_for(loop, 50);
    cr_assert_eq(rp_loop_free(loop), 0);

    opts.min_retry_backoff_ms = opts.max_retry_backoff_ms = 5000;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    fx_result c = {0};
    int64_t id = rp_client_command_ex(client, NULL, fx_result_cb, &c, 3, mget, NULL);
    cr_assert_gt(id, 0);
    fx_run_for(loop, 200); /* refused once, now in its backoff */
    cr_assert_eq(c.calls, 0);
    cr_assert_eq(rp_client_cancel(client, id), 0);
    cr_assert_eq(rp_client_cancel(client, id), -ENOENT);
    cr_assert(fx_run_until_count(loop, &c.calls, 1, 1000));
    cr_assert_eq(c.status, -ECANCELED);
    fx_run_for(loop, 20);
    cr_assert_eq(c.calls, 1);
    fx_client_close_and_free(loop, client);
}

Test(cluster_churn, plain_client_still_retries_refusals)
{
    int slot = fxc_slot_of_node(0);
    char base[48], a[64], b[64], port[16];
    fxc_key_for_slot(slot, base, sizeof base);
    snprintf(a, sizeof a, "{%s}:a", base);
    snprintf(b, sizeof b, "{%s}:b", base);
    fxc_command_ok(0, "SET", a, "1", NULL);
    fxc_command_ok(0, "SET", b, "2", NULL);
    fxc_migrate_start(slot, 0, 1);
    snprintf(port, sizeof port, "%d", fxc_port(1));
    fxc_command_ok(0, "MIGRATE", "127.0.0.1", port, "", "0", "5000", "KEYS", a, NULL);
    plain_client_tryagain(0, a, b);
    plain_client_tryagain(2, a, b);
}
