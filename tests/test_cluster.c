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
