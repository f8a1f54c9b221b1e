/* The cluster suite: a real Redis Cluster per test (cluster_fixture.h).
 * First the fixture's own smoke tests. */
#include "cluster_fixture.h"
#include "fixture.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The fd-leak check brackets the cluster: the fixture must not leak either. */
TestSuite(cluster, .init = fxc_suite_setup, .fini = fxc_suite_teardown, .timeout = 60);

/* Asserts a node's reply, as fxc_command's text. */
#define assert_reply(want, node, ...)                                                                              \
    do {                                                                                                           \
        char *got_ = fxc_command(node, __VA_ARGS__, NULL);                                                         \
        cr_assert(got_ && strcmp(got_, want) == 0, "node %d, %s: \"%s\", not \"%s\"", node, #__VA_ARGS__,         \
                  got_ ? got_ : "no reply", want);                                                                 \
        free(got_);                                                                                                \
    } while (0)

/* ---- The fixture ---- */

Test(cluster, three_masters_serve_every_slot_with_a_replica_each)
{
    cr_assert_eq(fxc_count(), 6);
    unsigned replicas = 0;
    for (int m = 0; m < 3; m++) {
        cr_assert(fxc_is_master(m), "node %d is no master", m);
        int r = fxc_replica_of(m);
        cr_assert(r >= 3 && !fxc_is_master(r), "master %d has no replica among nodes 3-5", m);
        replicas |= 1u << r;
    }
    cr_assert_eq(replicas, 070u, "two masters share a replica");
    const int first[] = {0, 5461, 10923}, last[] = {5460, 10922, 16383};
    for (int m = 0; m < 3; m++) {
        cr_assert_eq(fxc_master_of_slot(first[m]), m);
        cr_assert_eq(fxc_master_of_slot(last[m]), m);
    }
    for (int i = 0; i < 6; i++) {
        char *info = fxc_command(i, "CLUSTER", "INFO", NULL);
        cr_assert(info && strstr(info, "cluster_slots_ok:16384") && strstr(info, "cluster_size:3") &&
                      strstr(info, "cluster_known_nodes:6"),
                  "node %d: %s", i, info ? info : "no reply");
        free(info);
    }
}

Test(cluster, command_gives_replies_as_text)
{
    char key[32];
    fxc_key_for_slot(0, key, sizeof key);
    int m = fxc_master_of_slot(0), other = fxc_master_of_slot(16383);
    assert_reply("(nil)", m, "GET", key);
    assert_reply("OK", m, "SET", key, "7");
    assert_reply("8", m, "INCR", key);
    assert_reply("8", m, "GET", key);
    char moved[64];
    snprintf(moved, sizeof moved, "MOVED 0 %s", fxc_addr(m));
    assert_reply(moved, other, "GET", key);
    assert_reply("1\n2\nx\n(nil)", m, "EVAL", "return {1, {2, 'x'}, false}", "0");
    assert_reply("", m, "EVAL", "return {}", "0");
    fxc_command_ok(m, "DEL", key, NULL);
}

static void expect_key_in_slot(int slot)
{
    char key[32], want[8];
    fxc_key_for_slot(slot, key, sizeof key);
    snprintf(want, sizeof want, "%d", slot);
    assert_reply(want, 0, "CLUSTER", "KEYSLOT", key);
}

Test(cluster, key_for_slot_gives_keys_in_that_slot)
{
    for (int slot = 0; slot < RP_CLUSTER_SLOTS; slot += 997)
        expect_key_in_slot(slot);
    expect_key_in_slot(RP_CLUSTER_SLOTS - 1);
}

/* Writes n keys into the slot: "{key}:i" = "v<i>". */
static void fill_slot(int node, int slot, int n)
{
    char tag[32];
    fxc_key_for_slot(slot, tag, sizeof tag);
    for (int i = 0; i < n; i++) {
        char key[48], value[16];
        snprintf(key, sizeof key, "{%s}:%d", tag, i);
        snprintf(value, sizeof value, "v%d", i);
        fxc_command_ok(node, "SET", key, value, NULL);
    }
}

Test(cluster, migration_steps_move_a_slot_and_its_keys)
{
    int slot = 100, from = fxc_master_of_slot(slot), to = fxc_master_of_slot(16383);
    char tag[32], key[48], reply[64];
    fxc_key_for_slot(slot, tag, sizeof tag);
    snprintf(key, sizeof key, "{%s}:249", tag);
    fill_slot(from, slot, 250); /* MIGRATE goes in batches of 100 */

    fxc_migrate_start(slot, from, to);
    fxc_migrate_keys(slot, from, to);
    assert_reply("0", from, "CLUSTER", "COUNTKEYSINSLOT", "100");
    assert_reply("250", to, "CLUSTER", "COUNTKEYSINSLOT", "100");
    snprintf(reply, sizeof reply, "ASK 100 %s", fxc_addr(to));
    assert_reply(reply, from, "GET", key);

    fxc_migrate_finish(slot, from, to);
    assert_reply("v249", to, "GET", key);
    snprintf(reply, sizeof reply, "MOVED 100 %s", fxc_addr(to));
    assert_reply(reply, from, "GET", key);
    fxc_wait_ok(5000);
    cr_assert_eq(fxc_master_of_slot(slot), to);
}

/* The master of slot 0 with a key written there, and on its replica once
 * fxc_wait_ok passes. (WAIT would not do: it counts the writes of its own
 * connection, and fxc_command opens one per command.) */
static int master_with_a_key(const char *key)
{
    int m = fxc_master_of_slot(0);
    fxc_command_ok(m, "SET", key, "v", NULL);
    fxc_wait_ok(5000);
    return m;
}

Test(cluster, failover_swaps_a_master_and_its_replica)
{
    char key[32];
    fxc_key_for_slot(0, key, sizeof key);
    int m = master_with_a_key(key), r = fxc_replica_of(m);
    fxc_failover(r);
    cr_assert(fxc_is_master(r));
    cr_assert_not(fxc_is_master(m));
    cr_assert_eq(fxc_replica_of(r), m);
    cr_assert_eq(fxc_master_of_slot(0), r);
    assert_reply("v", r, "GET", key);
    /* And back, without the master's consent. */
    fxc_failover_with(m, "TAKEOVER");
    cr_assert_not(fxc_is_master(r));
    cr_assert_eq(fxc_replica_of(m), r);
    cr_assert_eq(fxc_master_of_slot(0), m);
    assert_reply("v", m, "GET", key);
}

Test(cluster, killed_master_is_replaced_by_its_replica)
{
    char key[32];
    fxc_key_for_slot(0, key, sizeof key);
    int m = master_with_a_key(key), r = fxc_replica_of(m);
    uint64_t start = fx_now_ms();
    fxc_kill(m);
    cr_assert_eq(fxc_pid(m), 0);
    fxc_wait_ok(15000);
    fprintf(stderr, "cluster: replica promoted, cluster ok %lu ms after its master's SIGKILL\n",
            (unsigned long)(fx_now_ms() - start));
    cr_assert(fxc_is_master(r));
    cr_assert_eq(fxc_master_of_slot(0), r);
    assert_reply("v", r, "GET", key);
    cr_assert_null(fxc_command(m, "PING", NULL));
}

Test(cluster, added_node_takes_a_migrated_slot)
{
    int n = fxc_add_node();
    cr_assert_eq(n, 6);
    cr_assert_eq(fxc_count(), 7);
    cr_assert(fxc_is_master(n));
    cr_assert_eq(fxc_replica_of(n), -1);
    int slot = 6000, from = fxc_master_of_slot(slot);
    fill_slot(from, slot, 3);
    fxc_migrate_slot(slot, from, n);
    fxc_wait_ok(5000);
    cr_assert_eq(fxc_master_of_slot(slot), n);
    char tag[32], key[48];
    fxc_key_for_slot(slot, tag, sizeof tag);
    snprintf(key, sizeof key, "{%s}:2", tag);
    assert_reply("v2", n, "GET", key);
}

Test(cluster, stop_kills_every_node_and_removes_the_directory)
{
    char link[64], dir[PATH_MAX] = "";
    snprintf(link, sizeof link, "/proc/%d/cwd", (int)fxc_pid(0));
    cr_assert_gt(readlink(link, dir, sizeof dir - 1), 0); /* a node works in the directory */
    pid_t pids[6];
    for (int i = 0; i < 6; i++)
        pids[i] = fxc_pid(i);
    fxc_stop();
    cr_assert_eq(fxc_count(), 0);
    for (int i = 0; i < 6; i++)
        cr_assert(kill(pids[i], 0) < 0 && errno == ESRCH, "node %d (pid %d) is still there", i, (int)pids[i]);
    cr_assert(access(dir, F_OK) < 0 && errno == ENOENT, "%s is still there", dir);
    fxc_stop(); /* the fini calls it once more */
}

/* ---- Big values through rp_cluster ----
 * A cluster command keeps one copy of its arguments, and its big ones go
 * out by reference from that copy, to whichever node it is sent (a MOVED
 * or ASK sends it again from the same copy): never a second copy in a
 * node's output buffer. The copy lives until the last send reading it is
 * done, even after the command ended (a cancel, a deadline). */

#define KiB 1024u
#define MiB (1024u * 1024u)

static rp_loop *loop;
static rp_cluster *cluster;

#define RUN(...) \
    fxc_run(loop, cluster, sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *), (const char *[]){__VA_ARGS__})

static void outcome_cb(rp_cluster *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    fx_outcome_record(data, reply, status);
}

static int64_t set_value(const char *key, const char *value, size_t len, uint32_t timeout_ms, fx_outcome *o)
{
    rp_cluster_command_options copts = {.timeout_ms = timeout_ms};
    return rp_cluster_command_ex(cluster, &copts, outcome_cb, o, 3, (const char *[]){"SET", key, value},
                                 (const size_t[]){3, strlen(key), len});
}

/* GETs key through the cluster: exactly the len bytes of want. */
static void expect_value(const char *key, const char *want, size_t len)
{
    fx_outcome get = {.want = want, .want_len = len};
    cr_assert_eq(rp_cluster_command(cluster, outcome_cb, &get, 2, (const char *[]){"GET", key}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &get.calls, 1, 20000), "no reply to GET %s", key);
    cr_expect_eq(get.status, 0, "GET %s: %s", key, rp_strerror(get.status));
    cr_expect(get.same, "GET %s: not the %zu bytes sent (reply type %d)", key, len, get.type);
}

/* Bytes allocated by the library, through the allocator hooks. */
static size_t allocated;
static void *count_malloc(size_t size) { allocated += size; return malloc(size); }
static void *count_realloc(void *ptr, size_t size) { allocated += size; return realloc(ptr, size); }
static void *count_calloc(size_t n, size_t size) { allocated += n * size; return calloc(n, size); }

/* SETs key to a value of len bytes, counting what the library allocates
 * until its reply: the command's one copy (and the records of the command
 * and its attempts, a few KiB), not a second one in the output buffer of
 * the node it goes to (or of each node it is sent to). */
static void set_counted(const char *key, const char *value, size_t len)
{
    fx_outcome set = {0};
    cr_assert_eq(rp_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
    allocated = 0;
    cr_assert_gt(set_value(key, value, len, 0, &set), 0);
    bool ended = fx_run_until_count(loop, &set.calls, 1, 20000);
    size_t total = allocated;
    cr_assert_eq(rp_set_allocator(malloc, realloc, calloc, free), 0);
    cr_assert(ended, "no reply to the SET of %zu bytes", len);
    cr_expect_eq(set.status, 0, "SET: %s", rp_strerror(set.status));
    cr_expect_eq(set.type, REDIS_REPLY_STATUS, "SET: reply type %d", set.type);
    cr_expect_lt(total, len + len / 8 + 4 * KiB, "%zu bytes allocated to send %zu", total, len);
}

/* "{<a key of slot>}:suffix": a key of that slot. */
static void key_in_slot(int slot, const char *suffix, char *out, size_t size)
{
    char base[32];
    fxc_key_for_slot(slot, base, sizeof base);
    snprintf(out, size, "{%s}:%s", base, suffix);
}

/* A key of the slot, written once (small) so that its master's client
 * has a connection set up before the counting starts. */
static void warm_up(int slot, char *key, size_t size)
{
    key_in_slot(slot, "warm", key, size);
    fx_result r = RUN("SET", key, "x");
    cr_assert_eq(r.status, 0);
    cr_assert_str_eq(r.str, "OK");
}

static void open_cluster_with(int autopipeline_conns)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.node.autopipeline_conns = autopipeline_conns;
    opts.node.pool.read_timeout_ms = 20000;
    opts.node.pool.write_timeout_ms = 20000;
    opts.refresh_interval_ms = 600000; /* no periodic layout read while allocations are counted */
    fxc_client_open(&loop, &cluster, &opts);
}

static void open_cluster(void) { open_cluster_with(0); }

/* On connections of their own, or on the node clients' shared ones. */
static void round_trips_copied_once(int autopipeline_conns)
{
    open_cluster_with(autopipeline_conns);
    const size_t lens[] = {1000 * 1000, 200 * 1000, 16 * KiB}; /* the last: the least sent by reference */
    const int slots[] = {0, 6000, 12000}; /* one on each master */
    char keys[3][48], warm[48];
    char *values[3];
    for (int i = 0; i < 3; i++) {
        warm_up(slots[i], warm, sizeof warm);
        key_in_slot(slots[i], "a", keys[i], sizeof keys[i]);
        values[i] = fx_make_value(lens[i], (uint64_t)i + 1);
        set_counted(keys[i], values[i], lens[i]);
    }
    for (int i = 0; i < 3; i++) {
        expect_value(keys[i], values[i], lens[i]);
        free(values[i]);
    }
    fxc_client_close(loop, cluster);
}

Test(cluster, big_values_round_trip_copied_once) { round_trips_copied_once(0); }

Test(cluster, big_values_round_trip_copied_once_on_shared_connections) { round_trips_copied_once(2); }

/* A big SET sent to a slot's old master during a resharding: ASK while
 * the slot migrates (the key is not there yet), MOVED once it has moved.
 * Each is sent again from the command's one copy, and the new master
 * holds exactly the bytes. (The layout read a MOVED starts may land
 * before the SET's reply: its ~40 KB fit in the slack of 1 MB.) */
Test(cluster, big_set_redirected_by_ask_and_moved_sends_the_same_bytes)
{
    int slot = 100, from = fxc_master_of_slot(slot), to = fxc_master_of_slot(16383);
    cr_assert_neq(from, to);
    open_cluster();
    char warm[48], asked[48], moved[48];
    warm_up(slot, warm, sizeof warm);
    warm_up(16383, warm, sizeof warm); /* a connection to `to` too */
    key_in_slot(slot, "asked", asked, sizeof asked);
    key_in_slot(slot, "moved", moved, sizeof moved);
    size_t ask_len = 200 * 1000, move_len = 1000 * 1000;
    char *ask_value = fx_make_value(ask_len, 21), *move_value = fx_make_value(move_len, 22);
    rp_cluster_stats before, after;

    fxc_migrate_start(slot, from, to);
    rp_cluster_get_stats(cluster, &before);
    set_counted(asked, ask_value, ask_len);
    rp_cluster_get_stats(cluster, &after);
    cr_expect_eq(after.asked - before.asked, 1, "ASK followed %llu times",
                 (unsigned long long)(after.asked - before.asked));

    fxc_migrate_keys(slot, from, to);
    fxc_migrate_finish(slot, from, to);
    rp_cluster_get_stats(cluster, &before);
    set_counted(moved, move_value, move_len);
    rp_cluster_get_stats(cluster, &after);
    cr_expect_eq(after.moved - before.moved, 1, "MOVED followed %llu times",
                 (unsigned long long)(after.moved - before.moved));

    char want[32];
    snprintf(want, sizeof want, "%zu", ask_len);
    assert_reply(want, to, "STRLEN", asked);
    snprintf(want, sizeof want, "%zu", move_len);
    assert_reply(want, to, "STRLEN", moved);
    expect_value(asked, ask_value, ask_len);
    expect_value(moved, move_value, move_len);
    free(ask_value);
    free(move_value);
    fxc_client_close(loop, cluster);
}

/* A big SET taken back while its bytes are on their way (the node is
 * stopped: they cannot all leave) ends at once, and the caller frees its
 * buffer; the send goes on from the command's copy, which stays until
 * that send is done, and the node runs it whole once it goes on. By
 * rp_cluster_cancel, or by the command's own deadline. */
static void abandoned_while_sent(bool by_deadline)
{
    int slot = 0, m = fxc_master_of_slot(slot);
    open_cluster();
    char warm[48], key[48];
    warm_up(slot, warm, sizeof warm);
    key_in_slot(slot, "abandoned", key, sizeof key);
    size_t len = 32 * MiB;
    char *value = fx_make_value(len, 31);
    fx_outcome set = {0};
    cr_assert_eq(kill(fxc_pid(m), SIGSTOP), 0);
    int64_t id = set_value(key, value, len, by_deadline ? 300 : 0, &set);
    cr_assert_gt(id, 0);
    fx_run_for(loop, 150);
    cr_assert_eq(set.calls, 0, "the SET ended before the node read it: %s", rp_strerror(set.status));
    if (!by_deadline)
        cr_assert_eq(rp_cluster_cancel(cluster, id), 0);
    memset(value, 0, len); /* the caller's buffer never mattered after the call */
    free(value);
    cr_assert(fx_run_until_count(loop, &set.calls, 1, 2000));
    cr_expect_eq(set.status, by_deadline ? -ETIMEDOUT : -ECANCELED, "%s", rp_strerror(set.status));
    cr_assert_eq(kill(fxc_pid(m), SIGCONT), 0);
    value = fx_make_value(len, 31);
    uint64_t deadline = fx_now_ms() + 10000;
    char *got = NULL, want[32];
    snprintf(want, sizeof want, "%zu", len);
    while (fx_now_ms() < deadline) { /* the node runs it once it has all of it */
        fx_run_for(loop, 50);
        free(got);
        got = fxc_command(m, "STRLEN", key, NULL);
        if (got && !strcmp(got, want))
            break;
    }
    cr_expect(got && !strcmp(got, want), "the node holds %s bytes, not %s", got ? got : "no reply:", want);
    free(got);
    expect_value(key, value, len);
    cr_expect_eq(set.calls, 1);
    free(value);
    fxc_client_close(loop, cluster);
}

Test(cluster, big_set_cancelled_while_sent_with_the_callers_buffer_freed)
{
    abandoned_while_sent(false);
}

Test(cluster, big_set_timed_out_while_sent_with_the_callers_buffer_freed)
{
    abandoned_while_sent(true);
}
