/* rp_cluster against a real cluster of redis-servers on loopback (three
 * masters, three replicas): routing, redirects, migrations, failovers. */
#include "cluster_fixture.h"
#include "fixture.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(cluster_client, .init = fxc_suite_setup, .fini = fxc_suite_teardown);

static rp_loop *loop;
static rp_cluster *cluster;

static void open_with(const rp_cluster_options *opts) { fxc_client_open(&loop, &cluster, opts); }
static void close_cluster(void) { fxc_client_close(loop, cluster); }

#define RUN(...) \
    fxc_run(loop, cluster, sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *), (const char *[]){__VA_ARGS__})

static void open_cluster(void)
{
    rp_cluster_options opts = fxc_seed_options();
    open_with(&opts);
}

static rp_cluster_stats stats(void)
{
    rp_cluster_stats st;
    rp_cluster_get_stats(cluster, &st);
    return st;
}

/* Whether the client's layout has a node at addr. */
static bool node_listed(const char *addr)
{
    rp_cluster_node_info info[8];
    int n = rp_cluster_nodes(cluster, info, 8);
    for (int i = 0; i < n && i < 8; i++)
        if (!strcmp(info[i].addr, addr))
            return true;
    return false;
}

/* "{<a key of slot>}:suffix": a key of that slot. */
static void key_in_slot(int slot, const char *suffix, char *out, size_t size)
{
    char base[64];
    fxc_key_for_slot(slot, base, sizeof base);
    snprintf(out, size, "{%s}:%s", base, suffix);
    cr_assert_eq(rp_cluster_key_slot(out, strlen(out)), slot);
}

/* -------------------------------------------------------------- routing */

typedef struct batch {
    int calls, failures;
    char last_error[128];
} batch;

static void batch_cb(rp_cluster *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    batch *b = data;
    b->calls++;
    if (status < 0 || reply->type == REDIS_REPLY_ERROR) {
        b->failures++;
        snprintf(b->last_error, sizeof b->last_error, "%s", status < 0 ? rp_strerror(status) : reply->str);
    }
}

/* One key in every slot, written then read back, without a redirect:
 * the layout was read right and each command routed by its key. */
Test(cluster_client, every_slot_reachable)
{
    open_cluster();
    static char keys[RP_CLUSTER_SLOTS][48];
    batch writes = {0};
    for (int slot = 0; slot < RP_CLUSTER_SLOTS; slot++) {
        fxc_key_for_slot(slot, keys[slot], sizeof keys[slot]);
        const char *argv[] = {"SET", keys[slot], keys[slot]};
        cr_assert_eq(rp_cluster_command(cluster, batch_cb, &writes, 3, argv, NULL), 0);
    }
    cr_assert(fx_run_until_count(loop, &writes.calls, RP_CLUSTER_SLOTS, 60000));
    cr_assert_eq(writes.failures, 0, "%d writes failed: %s", writes.failures, writes.last_error);
    for (int slot = 0; slot < RP_CLUSTER_SLOTS; slot += 97) {
        fx_result r = RUN("GET", keys[slot]);
        cr_assert_eq(r.status, 0);
        cr_assert_str_eq(r.str, keys[slot]);
    }
    char *direct = fxc_command(fxc_master_of_slot(12182), "GET", keys[12182], NULL);
    cr_assert_str_eq(direct, keys[12182], "the key is not on its slot's master");
    free(direct);
    cr_assert_eq(stats().moved, 0);
    rp_cluster_node_info info[8];
    int n = rp_cluster_nodes(cluster, info, 8), masters = 0, slots = 0;
    for (int i = 0; i < n; i++) {
        masters += info[i].master;
        slots += info[i].slots;
    }
    cr_assert_eq(masters, 3);
    cr_assert_eq(slots, RP_CLUSTER_SLOTS);
    close_cluster();
}

/* Keys found by the server's key specs: subcommands, numkeys, STREAMS. */
Test(cluster_client, routes_by_key_specs)
{
    open_cluster();
    char a[64], b[64];
    key_in_slot(fxc_slot_of_node(1), "a", a, sizeof a);
    key_in_slot(fxc_slot_of_node(2), "b", b, sizeof b);
    cr_assert_eq(RUN("SET", a, "1").status, 0);
    cr_assert_eq(RUN("XADD", b, "*", "f", "v").status, 0);
    cr_assert_str_eq(RUN("OBJECT", "ENCODING", a).str, "int");
    cr_assert_eq(RUN("XINFO", "STREAM", b).status, 0);
    cr_assert_str_eq(RUN("EVAL", "return redis.call('get', KEYS[1])", "1", a).str, "1");
    cr_assert_eq(RUN("XREAD", "COUNT", "1", "STREAMS", b, "0").type, REDIS_REPLY_ARRAY);
    cr_assert_eq(RUN("ZUNIONSTORE", "{x}dest", "1", "{x}src").status, 0);
    /* A numkeys far past the arguments counts only those there are. */
    fx_result huge = RUN("EVAL", "return 1", "99999999999999999999", a);
    cr_assert_eq(huge.type, REDIS_REPLY_ERROR, "%s", huge.str);
    cr_assert_eq(stats().moved, 0, "a command went to the wrong node");
    close_cluster();
}

/* key_index routes a command the table cannot place: the script reports
 * which node ran it. */
Test(cluster_client, key_index_overrides_routing)
{
    open_cluster();
    cr_assert_eq(RUN("PING").status, 0);
    for (int node = 0; node < 3; node++) {
        char key[64];
        key_in_slot(fxc_slot_of_node(node), "route", key, sizeof key);
        const char *argv[] = {"EVAL", "return redis.call('cluster', 'myid')", "0", key};
        rp_cluster_command_options opts = {.key_index = 3};
        fx_result r = {0};
        cr_assert_gt(rp_cluster_command_ex(cluster, &opts, fxc_result_cb, &r, 4, argv, NULL), 0);
        cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000));
        char *id = fxc_command(node, "CLUSTER", "MYID", NULL);
        cr_assert_str_eq(r.str, id, "key_index did not route to node %d", node);
        free(id);
    }
    close_cluster();
}

Test(cluster_client, hash_tags_and_cross_slot)
{
    open_cluster();
    cr_assert_eq(RUN("MSET", "{user:1}name", "ann", "{user:1}email", "ann@example.org").status, 0);
    fx_result r = RUN("MGET", "{user:1}name", "{user:1}email");
    cr_assert_eq(r.type, REDIS_REPLY_ARRAY);
    const char *cross[] = {"MGET", "foo", "bar"};
    batch never = {0};
    cr_assert_eq(rp_cluster_command(cluster, batch_cb, &never, 3, cross, NULL), RP_ECROSSSLOT);
    const char *script[] = {"EVAL", "return 1", "2", "foo", "bar"};
    cr_assert_eq(rp_cluster_command(cluster, batch_cb, &never, 5, script, NULL), RP_ECROSSSLOT);
    const char *streams[] = {"XREAD", "STREAMS", "foo", "bar", "0", "0"};
    cr_assert_eq(rp_cluster_command(cluster, batch_cb, &never, 6, streams, NULL), RP_ECROSSSLOT);
    fx_run_for(loop, 20);
    cr_assert_eq(never.calls, 0, "a refused command called back");
    cr_assert_eq(RUN("PING").status, 0, "a keyless command has a master to go to");
    close_cluster();
}

/* ------------------------------------------------------------ traffic */

/* Writes "{base}:<seq>" = seq, in_flight at a time, each reply sending
 * the next: load that runs while a test moves slots or fails nodes over. */
typedef struct traffic {
    char base[64];
    long issued, acked, failed, cap;
    bool stop;
    bool *ok; /* acknowledged, by seq */
    uint64_t mark_ms, recovered_ms; /* the first success of a write sent after mark */
    uint64_t *sent_ms;
    char last_error[128];
} traffic;

static traffic tr;

static void traffic_send(void);

static void traffic_cb(rp_cluster *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    long seq = (long)(intptr_t)data;
    if (status == 0 && reply->type != REDIS_REPLY_ERROR) {
        tr.acked++;
        tr.ok[seq] = true;
        if (tr.mark_ms && !tr.recovered_ms && tr.sent_ms[seq] >= tr.mark_ms)
            tr.recovered_ms = fx_now_ms();
    } else {
        tr.failed++;
        snprintf(tr.last_error, sizeof tr.last_error, "%s", status < 0 ? rp_strerror(status) : reply->str);
    }
    traffic_send();
}

static void traffic_send(void)
{
    if (tr.stop || tr.issued >= tr.cap)
        return;
    long seq = tr.issued++;
    char key[96], value[24];
    snprintf(key, sizeof key, "{%s}:%ld", tr.base, seq);
    snprintf(value, sizeof value, "%ld", seq);
    tr.sent_ms[seq] = fx_now_ms();
    const char *argv[] = {"SET", key, value};
    cr_assert_eq(rp_cluster_command(cluster, traffic_cb, (void *)(intptr_t)seq, 3, argv, NULL), 0);
}

static void traffic_start(int slot, int in_flight, long cap)
{
    memset(&tr, 0, sizeof tr);
    fxc_key_for_slot(slot, tr.base, sizeof tr.base);
    tr.cap = cap;
    tr.ok = calloc((size_t)cap, sizeof *tr.ok);
    tr.sent_ms = calloc((size_t)cap, sizeof *tr.sent_ms);
    for (int i = 0; i < in_flight; i++)
        traffic_send();
}

/* Stops sending and waits for every callback: each runs exactly once. */
static void traffic_stop(void)
{
    tr.stop = true;
    long done = 0;
    uint64_t deadline = fx_now_ms() + 30000;
    while ((done = tr.acked + tr.failed) < tr.issued && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_eq(tr.acked + tr.failed, tr.issued, "%ld commands never called back", tr.issued - done);
}

typedef struct readback {
    int calls, lost;
    long first_lost;
} readback;

static readback rb;

static void readback_cb(rp_cluster *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    char want[24];
    snprintf(want, sizeof want, "%ld", (long)(intptr_t)data);
    rb.calls++;
    if (status < 0 || reply->type != REDIS_REPLY_STRING || strcmp(reply->str, want)) {
        rb.first_lost = rb.lost++ ? rb.first_lost : (long)(intptr_t)data;
    }
}

/* Every acknowledged write is there, read back through the cluster. */
static void traffic_check_acked(void)
{
    memset(&rb, 0, sizeof rb);
    int want = 0;
    for (long seq = 0; seq < tr.issued; seq++) {
        if (!tr.ok[seq])
            continue;
        char key[96];
        snprintf(key, sizeof key, "{%s}:%ld", tr.base, seq);
        const char *argv[] = {"GET", key};
        cr_assert_eq(rp_cluster_command(cluster, readback_cb, (void *)(intptr_t)seq, 2, argv, NULL), 0);
        want++;
    }
    cr_assert(fx_run_until_count(loop, &rb.calls, want, 30000));
    cr_assert_eq(rb.lost, 0, "%d acknowledged writes lost (the first: %ld)", rb.lost, rb.first_lost);
}

static void traffic_free(void)
{
    free(tr.ok);
    free(tr.sent_ms);
}

/* ---------------------------------------------------------- migrations */

/* A slot moves, keys and all, while writes to it keep coming: writes to
 * keys already moved follow ASK, and after the move MOVED; none fails. */
Test(cluster_client, moved_while_traffic_flows)
{
    open_cluster();
    int slot = fxc_slot_of_node(0), to = 1;
    cr_assert_eq(RUN("PING").status, 0);
    traffic_start(slot, 20, 200000);
    fx_run_for(loop, 200);
    fxc_migrate_start(slot, 0, to);
    fx_run_for(loop, 100);
    fxc_migrate_keys(slot, 0, to);
    fx_run_for(loop, 100);
    fxc_migrate_finish(slot, 0, to);
    fx_run_for(loop, 300);
    traffic_stop();
    cr_assert_eq(tr.failed, 0, "%ld writes failed: %s", tr.failed, tr.last_error);
    cr_assert_gt(tr.acked, 100);
    cr_assert_geq(stats().moved, 1);
    traffic_check_acked();
    fx_run_for(loop, 200); /* the refresh MOVED asked for */
    rp_cluster_node_info info[8];
    int n = rp_cluster_nodes(cluster, info, 8);
    for (int i = 0; i < n; i++)
        if (!strcmp(info[i].addr, fxc_addr(0)))
            cr_assert_eq(info[i].slots, 5460, "the refreshed layout has %d slots at node 0", info[i].slots);
    traffic_free();
    close_cluster();
}

/* During a migration, a key already moved is read, and a new key
 * written, at the target through ASK: ASKING goes first on the same
 * connection, or the target would answer MOVED. */
Test(cluster_client, ask_during_migration)
{
    open_cluster();
    int slot = fxc_slot_of_node(0);
    char moved_key[64], new_key[64];
    key_in_slot(slot, "moved", moved_key, sizeof moved_key);
    key_in_slot(slot, "new", new_key, sizeof new_key);
    cr_assert_eq(RUN("SET", moved_key, "there").status, 0);
    fxc_migrate_start(slot, 0, 2);
    fxc_migrate_keys(slot, 0, 2);
    cr_assert_str_eq(RUN("GET", moved_key).str, "there");
    cr_assert_eq(RUN("SET", new_key, "fresh").status, 0);
    cr_assert_eq(stats().asked, 2);
    cr_assert_eq(stats().moved, 0, "the target sent it back: ASKING did not go first");
    fxc_migrate_finish(slot, 0, 2);
    cr_assert_str_eq(RUN("GET", new_key).str, "fresh");
    cr_assert_eq(stats().moved, 1);
    close_cluster();
}

/* Keys split by a migration: TRYAGAIN is sent again after a backoff,
 * max_redirects times, then handed to the caller. */
Test(cluster_client, tryagain_bounded_by_max_redirects)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.node.max_retries = 0;
    opts.max_redirects = 2;
    open_with(&opts);
    int slot = fxc_slot_of_node(0);
    char a[64], b[64], port[16];
    key_in_slot(slot, "a", a, sizeof a);
    key_in_slot(slot, "b", b, sizeof b);
    cr_assert_eq(RUN("MSET", a, "1", b, "2").status, 0);
    fxc_migrate_start(slot, 0, 1);
    snprintf(port, sizeof port, "%d", fxc_port(1));
    fxc_command_ok(0, "MIGRATE", "127.0.0.1", port, "", "0", "5000", "KEYS", a, NULL);
    fx_result r = RUN("MGET", a, b);
    cr_assert_eq(r.type, REDIS_REPLY_ERROR);
    cr_assert(!strncmp(r.str, "TRYAGAIN", 8), "%s", r.str);
    cr_assert_eq(stats().retries, 2);
    fxc_migrate_keys(slot, 0, 1);
    fxc_migrate_finish(slot, 0, 1);
    r = RUN("MGET", a, b);
    cr_assert_eq(r.type, REDIS_REPLY_ARRAY);
    close_cluster();
}

/* Nodes whose views lost a slot answer CLUSTERDOWN: sent again after a
 * backoff, the layout re-read, max_redirects times; once the slot is back
 * the command succeeds. */
Test(cluster_client, clusterdown_retried_then_recovers)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.node.max_retries = 0;
    open_with(&opts);
    int slot = fxc_slot_of_node(0);
    char key[64], slot_text[16];
    key_in_slot(slot, "down", key, sizeof key);
    snprintf(slot_text, sizeof slot_text, "%d", slot);
    cr_assert_eq(RUN("SET", key, "v").status, 0);
    uint64_t refreshes = stats().refreshes;
    for (int node = 0; node < fxc_count(); node++) /* no view keeps an owner */
        fxc_command_ok(node, "CLUSTER", "DELSLOTS", slot_text, NULL);
    fx_result r = RUN("GET", key);
    cr_assert_eq(r.type, REDIS_REPLY_ERROR);
    cr_assert(!strncmp(r.str, "CLUSTERDOWN", 11), "%s", r.str);
    cr_assert_eq(stats().retries, 3);
    fx_run_for(loop, 300); /* the re-read asked for, within the rate limit */
    cr_assert_gt(stats().refreshes + stats().refresh_errors, refreshes);
    fxc_command_ok(0, "CLUSTER", "ADDSLOTS", slot_text, NULL);
    uint64_t deadline = fx_now_ms() + 10000;
    do
        r = RUN("GET", key);
    while (r.type == REDIS_REPLY_ERROR && fx_now_ms() < deadline);
    cr_assert_str_eq(r.str, "v");
    close_cluster();
}

/* A new node joins and takes slots; the client finds it by itself. */
Test(cluster_client, node_added_and_slots_moved)
{
    open_cluster();
    int slot = fxc_slot_of_node(1);
    char key[64];
    key_in_slot(slot, "k", key, sizeof key);
    cr_assert_eq(RUN("SET", key, "v").status, 0);
    int added = fxc_add_node();
    fxc_migrate_slot(slot, 1, added);
    fxc_migrate_slot(slot + 1, 1, added);
    cr_assert_str_eq(RUN("GET", key).str, "v");
    fx_run_for(loop, 300);
    rp_cluster_node_info info[8];
    int n = rp_cluster_nodes(cluster, info, 8), slots = -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(info[i].addr, fxc_addr(added)))
            slots = info[i].slots;
    cr_assert_eq(slots, 2, "the new node serves %d slots in the client's view", slots);
    close_cluster();
}

/* The reply, after the redirects, is the string want. */
static void assert_redirected_to(fx_result r, const char *want)
{
    cr_assert_eq(r.status, 0, "%s", rp_strerror(r.status));
    cr_assert_eq(r.type, REDIS_REPLY_STRING, "ended with \"%s\" after %llu MOVED", r.str,
                 (unsigned long long)stats().moved);
    cr_assert_str_eq(r.str, want);
}

/* MOVED sends the command to the node named, not to where the client's
 * layout says: with read_from_replicas that would be the old shard's
 * replica, which answers MOVED again. */
Test(cluster_client, moved_read_goes_to_named_node_with_read_from_replicas)
{
    rp_cluster_options opts = fxc_seed_options();
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
    int slot = fxc_slot_of_node(1);
    char key[64];
    key_in_slot(slot, "moved", key, sizeof key);
    cr_assert_eq(RUN("SET", key, "v").status, 0);
    fxc_migrate_slot(slot, 1, 0);
    fxc_wait_ok(20000);
    assert_redirected_to(RUN("GET", key), "v");
    close_cluster();
}

/* The same when the client's idea of the slot is wrong: with COMMAND
 * refused (ACL), argv[1] routes, and EVAL goes by its script. The MOVED
 * names the key's master, and the resend goes there. */
Test(cluster_client, moved_goes_to_named_node_when_command_table_refused)
{
    for (int node = 0; node < fxc_count(); node++)
        fxc_command_ok(node, "ACL", "SETUSER", "rpuser", "on", ">pw", "~*", "&*", "+@all", "-command", NULL);
    rp_cluster_options opts = fxc_seed_options();
    opts.node.username = "rpuser";
    opts.node.password = "pw";
    open_with(&opts);
    cr_assert_eq(RUN("PING").status, 0);
    const char *script = "return redis.call('GET', KEYS[1])";
    int script_node = fxc_master_of_slot(rp_cluster_key_slot(script, strlen(script)));
    char key[64];
    key_in_slot(fxc_slot_of_node((script_node + 1) % 3), "acl", key, sizeof key);
    cr_assert_eq(RUN("SET", key, "v").status, 0);
    assert_redirected_to(RUN("EVAL", script, "1", key), "v");
    close_cluster();
}

/* MIGRATE ... "" ... KEYS k1 k2: the server's keys are k1 and k2 (COMMAND
 * GETKEYS says so); the empty placeholder at index 3 is no key, or the
 * command would be refused with RP_ECROSSSLOT. */
Test(cluster_client, migrate_keys_form_is_not_cross_slot)
{
    rp_cluster_options opts = fxc_seed_options();
    open_with(&opts);
    cr_assert_eq(RUN("PING").status, 0); /* the layout and COMMAND are known */
    int slot = fxc_slot_of_node(1);
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
    int rc = rp_cluster_command(cluster, fxc_result_cb, &r, 10, argv, NULL);
    cr_assert_eq(rc, 0, "MIGRATE ... KEYS refused: %s", rp_strerror(rc));
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000));
    cr_assert_eq(r.status, 0);
    cr_assert_eq(stats().moved, 0, "MIGRATE went to the wrong node: %s", r.str);
    close_cluster();
}

/* ----------------------------------------------------------- failovers */

static bool role_is_master(int node)
{
    return fxc_is_master(node);
}

/* CLUSTER FAILOVER on a replica while writes flow to its master's slot:
 * writes may fail while the roles swap, but none that was acknowledged
 * is lost, and writes succeed again at the new master. */
Test(cluster_client, manual_failover_loses_no_acknowledged_write)
{
    open_cluster();
    int slot = fxc_slot_of_node(0), replica = fxc_replica_of(0);
    cr_assert_geq(replica, 0);
    cr_assert_eq(RUN("PING").status, 0);
    traffic_start(slot, 20, 400000);
    fx_run_for(loop, 300);
    fxc_command_ok(replica, "CLUSTER", "FAILOVER", NULL);
    uint64_t deadline = fx_now_ms() + 20000;
    while (!role_is_master(replica) && fx_now_ms() < deadline)
        fx_run_for(loop, 50);
    cr_assert(role_is_master(replica), "the replica was not promoted");
    tr.mark_ms = fx_now_ms();
    while (!tr.recovered_ms && fx_now_ms() < deadline)
        fx_run_for(loop, 20);
    cr_assert(tr.recovered_ms, "writes did not reach the new master");
    traffic_stop();
    cr_assert_gt(tr.acked, 100);
    traffic_check_acked();
    traffic_free();
    close_cluster();
}

/* A master killed with SIGKILL: its replica is promoted by the cluster
 * and the client, by itself, writes to its slots again. */
Test(cluster_client, master_killed_replica_takes_over)
{
    open_cluster();
    int slot = fxc_slot_of_node(0), replica = fxc_replica_of(0);
    cr_assert_eq(RUN("PING").status, 0);
    traffic_start(slot, 10, 4000000);
    fx_run_for(loop, 200);
    long acked_before = tr.acked;
    fxc_kill(0);
    tr.mark_ms = fx_now_ms();
    uint64_t deadline = tr.mark_ms + 30000, promoted_ms = 0;
    while (!tr.recovered_ms && fx_now_ms() < deadline) {
        fx_run_for(loop, 20);
        if (!promoted_ms && role_is_master(replica))
            promoted_ms = fx_now_ms();
    }
    cr_assert(tr.recovered_ms, "no write succeeded in 30 s after the kill (%ld failed: %s)", tr.failed,
              tr.last_error);
    promoted_ms = promoted_ms ? promoted_ms : tr.recovered_ms;
    fprintf(stderr, "after SIGKILL of a master: replica promoted at %llu ms, writes served again at %llu ms\n",
            (unsigned long long)(promoted_ms - tr.mark_ms), (unsigned long long)(tr.recovered_ms - tr.mark_ms));
    cr_assert(role_is_master(replica));
    traffic_stop();
    cr_assert_gt(tr.acked, acked_before);
    traffic_free();
    close_cluster();
}

/* With read_from_replicas, reads go to replicas (READONLY at set-up: a
 * replica would otherwise answer MOVED) and writes to masters. */
Test(cluster_client, reads_from_replicas)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.read_from_replicas = true;
    opts.refresh_interval_ms = 100;
    open_with(&opts);
    cr_assert_eq(RUN("PING").status, 0);
    /* A replica counts once the cluster reports it online: its
     * replication offset has reached the other nodes by gossip. */
    uint64_t until = fx_now_ms() + 15000;
    while (!node_listed(fxc_addr(fxc_replica_of(1))) && fx_now_ms() < until)
        fx_run_for(loop, 50);
    char key[64];
    key_in_slot(fxc_slot_of_node(1), "r", key, sizeof key);
    cr_assert_eq(RUN("SET", key, "replicated").status, 0);
    fx_result r = {0};
    uint64_t deadline = fx_now_ms() + 10000;
    do
        r = RUN("GET", key);
    while (r.type != REDIS_REPLY_STRING && fx_now_ms() < deadline);
    cr_assert_str_eq(r.str, "replicated");
    for (int i = 0; i < 20; i++)
        cr_assert_str_eq(RUN("GET", key).str, "replicated");
    cr_assert_eq(stats().moved, 0, "a replica sent a read back: READONLY missing");
    rp_cluster_node_info info[8];
    int n = rp_cluster_nodes(cluster, info, 8);
    int replica = fxc_replica_of(1);
    bool found = false;
    for (int i = 0; i < n; i++) {
        if (strcmp(info[i].addr, fxc_addr(replica)))
            continue;
        found = true;
        cr_assert(!info[i].master);
        cr_assert_gt(info[i].stats.total_conns, 0, "no read reached the replica");
    }
    cr_assert(found);
    close_cluster();
}

/* A seed the layout does not name (a host name for a listed address) is
 * closed once the layout is read: only the cluster's own nodes remain. */
Test(cluster_client, seeds_outside_the_layout_are_closed)
{
    char seed[64];
    snprintf(seed, sizeof seed, "localhost:%d", fxc_port(0));
    const char *seeds[] = {seed};
    rp_cluster_options opts;
    fxc_client_options(&opts, seeds);
    open_with(&opts);
    cr_assert_eq(RUN("PING").status, 0);
    fx_run_for(loop, 100); /* the seed's client closes */
    rp_cluster_node_info info[8];
    int n = rp_cluster_nodes(cluster, info, 8);
    cr_assert_geq(n, 3);
    for (int i = 0; i < n && i < 8; i++)
        cr_assert(strncmp(info[i].addr, "localhost", 9), "the seed %s is still a node", info[i].addr);
    cr_assert(node_listed(fxc_addr(0)));
    close_cluster();
}

/* ------------------------------------------------- cancel, time, refresh */

/* Cancel and a deadline reach a command at its node: a BLPOP that would
 * block for ever ends with -ECANCELED, another with -ETIMEDOUT. */
Test(cluster_client, cancel_and_timeout_at_a_node)
{
    open_cluster();
    cr_assert_eq(RUN("PING").status, 0);
    const char *argv[] = {"BLPOP", "{q}list", "0"};
    fx_result cancelled = {0}, timed_out = {0};
    int64_t id = rp_cluster_command_ex(cluster, NULL, fxc_result_cb, &cancelled, 3, argv, NULL);
    cr_assert_gt(id, 0);
    rp_cluster_command_options opts = {.timeout_ms = 200};
    uint64_t started = fx_now_ms();
    cr_assert_gt(rp_cluster_command_ex(cluster, &opts, fxc_result_cb, &timed_out, 3, argv, NULL), 0);
    fx_run_for(loop, 50);
    cr_assert_eq(rp_cluster_cancel(cluster, id), 0);
    cr_assert_eq(rp_cluster_cancel(cluster, id), -ENOENT);
    cr_assert(fx_run_until_count(loop, &cancelled.calls, 1, 1000));
    cr_assert_eq(cancelled.status, -ECANCELED);
    cr_assert(fx_run_until_count(loop, &timed_out.calls, 1, 5000));
    cr_assert_eq(timed_out.status, -ETIMEDOUT);
    cr_assert_geq(fx_now_ms() - started, 190);
    cr_assert_eq(rp_cluster_cancel(cluster, id), -ENOENT);
    fx_run_for(loop, 50);
    cr_assert_eq(cancelled.calls + timed_out.calls, 2);
    close_cluster();
}

static struct {
    int starts, ends, dials, last_retries;
} hooked;

static void hook_start(void *data, int argc, const char *const *argv, const size_t *argvlen)
{
    (void)data, (void)argc, (void)argv, (void)argvlen;
    hooked.starts++;
}

static void hook_end(void *data, int argc, const char *const *argv, const size_t *argvlen, uint64_t duration_ns,
                     int status, int retries)
{
    (void)data, (void)argc, (void)argv, (void)argvlen, (void)duration_ns, (void)status;
    hooked.ends++;
    hooked.last_retries = retries;
}

static void hook_dial_end(void *data, const char *addr, uint64_t duration_ns, int status)
{
    (void)data, (void)addr, (void)duration_ns;
    hooked.dials += status == 0;
}

/* command_start and command_end once per cluster command, its redirects
 * as retries; the pools' hooks from every node. */
Test(cluster_client, hooks_once_per_command)
{
    open_cluster();
    rp_hooks hooks = {.command_start = hook_start, .command_end = hook_end, .dial_end = hook_dial_end};
    cr_assert_eq(rp_cluster_set_hooks(cluster, &hooks), 0);
    char keys[3][64];
    for (int node = 0; node < 3; node++) {
        key_in_slot(fxc_slot_of_node(node), "hooked", keys[node], sizeof keys[node]);
        cr_assert_eq(RUN("SET", keys[node], "v").status, 0);
    }
    cr_assert_eq(hooked.starts, 3);
    cr_assert_eq(hooked.ends, 3);
    /* The seed's dial began in rp_cluster_new, before the hooks were set:
     * untimed, it is not reported (its node may be one of the masters). */
    cr_assert_geq(hooked.dials, 2, "a dial to each master but the seed: %d", hooked.dials);
    fxc_migrate_slot(rp_cluster_key_slot(keys[0], strlen(keys[0])), 0, 1);
    cr_assert_eq(RUN("GET", keys[0]).status, 0);
    cr_assert_eq(hooked.ends, 4);
    cr_assert_eq(hooked.last_retries, 1, "the MOVED followed");
    cr_assert_eq(rp_cluster_set_hooks(cluster, NULL), 0);
    cr_assert_eq(RUN("GET", keys[1]).status, 0);
    cr_assert_eq(hooked.starts, 4);
    close_cluster();
}

Test(cluster_client, periodic_refresh)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.refresh_interval_ms = 100;
    open_with(&opts);
    cr_assert_eq(RUN("PING").status, 0);
    uint64_t before = stats().refreshes;
    fx_run_for(loop, 650);
    cr_assert_geq(stats().refreshes - before, 4);
    cr_assert_leq(stats().refreshes - before, 8);
    close_cluster();
}

/* --------------------------------------------- without a cluster running */

static void no_cluster_setup(void) { fx_setup_no_redis(); }

TestSuite(cluster_errors, .init = no_cluster_setup, .fini = fx_teardown);

Test(cluster_errors, invalid_options)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_cluster_options opts;
    const char *good[] = {"127.0.0.1:7000"}, *bad[] = {"127.0.0.1:7000", "no-port"}, *null_seed[] = {NULL};
    fxc_client_options(&opts, good);
    cr_assert_eq(rp_cluster_new(&cluster, loop, NULL), -EINVAL);
    cr_assert_eq(rp_cluster_new(NULL, loop, &opts), -EINVAL);
    opts.nseeds = 0;
    cr_assert_eq(rp_cluster_new(&cluster, loop, &opts), -EINVAL);
    fxc_client_options(&opts, bad);
    opts.nseeds = 2;
    cr_assert_eq(rp_cluster_new(&cluster, loop, &opts), -EINVAL);
    fxc_client_options(&opts, null_seed);
    cr_assert_eq(rp_cluster_new(&cluster, loop, &opts), -EINVAL);
    fxc_client_options(&opts, good);
    opts.node.db = 1;
    cr_assert_eq(rp_cluster_new(&cluster, loop, &opts), -EINVAL);
    opts.node.db = 0;
    opts.node.autopipeline_conns = -1;
    cr_assert_eq(rp_cluster_new(&cluster, loop, &opts), -EINVAL);
    cr_assert_eq(rp_loop_free(loop), 0, "a refused cluster left something on the loop");
}

/* Options whose one seed is a closed port on loopback. */
static rp_cluster_options unreachable_options(void)
{
    static char seed[32];
    static const char *seeds[] = {seed};
    snprintf(seed, sizeof seed, "127.0.0.1:%d", fx_closed_port());
    rp_cluster_options opts;
    fxc_client_options(&opts, seeds);
    return opts;
}

Test(cluster_errors, bad_commands)
{
    rp_cluster_options opts = unreachable_options();
    open_with(&opts);
    const char *argv[] = {"GET", "k"};
    fx_result r = {0};
    cr_assert_eq(rp_cluster_command(cluster, NULL, NULL, 2, argv, NULL), -EINVAL);
    cr_assert_eq(rp_cluster_command(cluster, fxc_result_cb, &r, 0, argv, NULL), -EINVAL);
    cr_assert_eq(rp_cluster_command(NULL, fxc_result_cb, &r, 2, argv, NULL), -EINVAL);
    rp_cluster_command_options bad_index = {.key_index = 2}, bad_flags = {.flags = 0x100};
    cr_assert_eq(rp_cluster_command_ex(cluster, &bad_index, fxc_result_cb, &r, 2, argv, NULL), -EINVAL);
    cr_assert_eq(rp_cluster_command_ex(cluster, &bad_flags, fxc_result_cb, &r, 2, argv, NULL), -EINVAL);
    cr_assert_eq(rp_cluster_cancel(cluster, 12345), -ENOENT);
    cr_assert_eq(rp_cluster_cancel(cluster, 0), -EINVAL);
    fx_run_for(loop, 20);
    cr_assert_eq(r.calls, 0);
    close_cluster();
}

/* No seed answers: commands waiting for the layout fail once, with
 * RP_ECLUSTERDOWN, and the failed read is counted. */
Test(cluster_errors, unreachable_seeds)
{
    rp_cluster_options opts = unreachable_options();
    opts.node.max_retries = 1;
    open_with(&opts);
    fx_result r[3] = {{0}};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rp_cluster_command(cluster, fxc_result_cb, &r[i], 2, (const char *[]){"GET", "k"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r[2].calls, 1, 10000));
    fx_run_for(loop, 50);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r[i].calls, 1);
        cr_assert_eq(r[i].status, RP_ECLUSTERDOWN);
    }
    cr_assert_geq(stats().refresh_errors, 1);
    cr_assert_eq(stats().refreshes, 0);
    close_cluster();
}

/* A seed whose connect never completes: commands wait for the layout;
 * cancel, a deadline and close each end one, exactly once. */
Test(cluster_errors, waiting_commands_cancel_timeout_close)
{
    int port, fds[8];
    int listener = fx_listener(0, &port);
    fx_fill_backlog(port, fds, 8);
    char seed[32];
    snprintf(seed, sizeof seed, "127.0.0.1:%d", port);
    const char *seeds[] = {seed};
    rp_cluster_options opts;
    fxc_client_options(&opts, seeds);
    opts.node.pool.dial_timeout_ms = 60000;
    open_with(&opts);
    const char *argv[] = {"GET", "k"};
    fx_result cancelled = {0}, timed_out = {0}, closed = {0};
    int64_t id = rp_cluster_command_ex(cluster, NULL, fxc_result_cb, &cancelled, 2, argv, NULL);
    rp_cluster_command_options deadline = {.timeout_ms = 100};
    cr_assert_gt(rp_cluster_command_ex(cluster, &deadline, fxc_result_cb, &timed_out, 2, argv, NULL), 0);
    cr_assert_eq(rp_cluster_command(cluster, fxc_result_cb, &closed, 2, argv, NULL), 0);
    cr_assert_eq(rp_cluster_command(cluster, fxc_result_cb, &closed, 3, (const char *[]){"MGET", "a", "b"}, NULL), 0);
    cr_assert_eq(rp_cluster_cancel(cluster, id), 0);
    cr_assert(fx_run_until_count(loop, &cancelled.calls, 1, 1000));
    cr_assert_eq(cancelled.status, -ECANCELED);
    cr_assert(fx_run_until_count(loop, &timed_out.calls, 1, 2000));
    cr_assert_eq(timed_out.status, -ETIMEDOUT);
    cr_assert_eq(closed.calls, 0);
    int done = 0;
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, &done), 0);
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, &done), RP_ECLOSED);
    cr_assert(fx_run_until_count(loop, &done, 1, 10000));
    cr_assert_eq(closed.calls, 2);
    cr_assert_eq(closed.status, RP_ECLOSED);
    cr_assert_eq(cancelled.calls + timed_out.calls, 2);
    cr_assert_eq(rp_loop_free(loop), 0);
    for (int i = 0; i < 8; i++)
        close(fds[i]);
    close(listener);
}

/* examples/cluster against this cluster: it must exit 0 and show the
 * cross-slot refusal. */
Test(cluster_client, example_program_runs)
{
    const char *dir = getenv("RP_EXAMPLES_DIR");
    cr_assert(dir, "RP_EXAMPLES_DIR is not set (meson test sets it)");
    char cmd[1200], out[4096];
    snprintf(cmd, sizeof cmd, "%s/cluster -a %s 2>&1", dir, fxc_addr(0));
    FILE *pipe = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof out - 1, pipe);
    out[n] = '\0';
    cr_assert_eq(WEXITSTATUS(pclose(pipe)), 0, "%s", out);
    cr_assert(strstr(out, "hash to different slots") && strstr(out, "yellow"), "%s", out);
}

/* The printf-style calls route by the formatted key: a binary value set
 * through rp_cluster_commandf is on the key's master, and a malformed
 * format is refused before anything is routed. */
Test(cluster_client, commandf_routes_by_the_formatted_key)
{
    open_cluster();
    char key[48];
    key_in_slot(12182, "fmt", key, sizeof key);
    batch set = {0};
    cr_assert_eq(rp_cluster_commandf(cluster, batch_cb, &set, "SET %s %b", key, "a\0b", (size_t)3), 0);
    cr_assert_eq(rp_cluster_commandf(cluster, batch_cb, &set, "SET %s %c", key, 'x'), -EINVAL);
    cr_assert(fx_run_until_count(loop, &set.calls, 1, 5000));
    cr_assert_eq(set.failures, 0, "%s", set.last_error);
    char *length = fxc_command(fxc_master_of_slot(12182), "STRLEN", key, NULL);
    cr_assert_str_eq(length, "3", "the value is not on the key's master");
    free(length);
    cr_assert_eq(stats().moved, 0);
    close_cluster();
}

/* A command_start hook that closes the cluster: the command it reports
 * ends once, with RP_ECLOSED, and the cluster closes (ASan: no use after
 * free). */
static void close_in_start(void *data, int argc, const char *const *argv, const size_t *argvlen)
{
    (void)argc, (void)argv, (void)argvlen;
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, data), 0);
}

Test(cluster_client, closing_the_cluster_in_the_command_start_hook)
{
    open_cluster();
    int closed = 0;
    rp_hooks hooks = {.command_start = close_in_start, .data = &closed};
    cr_assert_eq(rp_cluster_set_hooks(cluster, &hooks), 0);
    batch b = {0};
    cr_assert_gt(rp_cluster_command_ex(cluster, NULL, batch_cb, &b, 2, (const char *[]){"GET", "k"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &closed, 1, 10000), "the close never ended");
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.failures, 1);
    cr_assert_str_eq(b.last_error, rp_strerror(RP_ECLOSED));
    cr_assert_eq(rp_loop_free(loop), 0);
}

/* Hooks set while a command is in flight report none of its end: its
 * start was not timed. */
Test(cluster_client, hooks_set_in_flight_report_only_what_they_timed)
{
    open_cluster();
    batch b = {0};
    hooked = (typeof(hooked)){0};
    cr_assert_eq(rp_cluster_command(cluster, batch_cb, &b, 2, (const char *[]){"GET", "untimed"}, NULL), 0);
    rp_hooks hooks = {.command_start = hook_start, .command_end = hook_end};
    cr_assert_eq(rp_cluster_set_hooks(cluster, &hooks), 0);
    cr_assert(fx_run_until_count(loop, &b.calls, 1, 5000));
    cr_assert_eq(hooked.ends, 0, "an untimed command's end was reported");
    cr_assert_eq(RUN("GET", "timed").status, 0);
    cr_assert_eq(hooked.starts, 1);
    cr_assert_eq(hooked.ends, 1);
    close_cluster();
}

/* The caller's reply limit is for the caller's replies: with 32 KiB, the
 * cluster still reads the server's COMMAND table (about 90 KB on 7.0), so
 * EVAL is routed by its key, not by its script, and no MOVED is met. */
Test(cluster_client, a_small_reply_limit_still_reads_the_command_table)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.node.max_reply_bytes = 32 * 1024;
    open_with(&opts);
    char key[48];
    key_in_slot(fxc_slot_of_node(2), "eval", key, sizeof key);
    fx_result r = RUN("EVAL", "return redis.call('SET', KEYS[1], 'v')", "1", key);
    cr_assert_eq(r.status, 0);
    cr_assert_str_eq(r.str, "OK");
    cr_assert_eq(stats().moved, 0, "EVAL was routed by its script, not its key");
    static char value[40 * 1024];
    memset(value, 'v', sizeof value - 1);
    cr_assert_eq(RUN("SET", key, value).status, 0);
    cr_assert_eq(RUN("GET", key).status, -EMSGSIZE, "the caller's own limit no longer holds");
    cr_assert_eq(RUN("STRLEN", key).integer, (long long)sizeof value - 1);
    close_cluster();
}
