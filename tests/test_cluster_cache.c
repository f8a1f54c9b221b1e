/* Client-side caching on rp_cluster (RP_CMD_CACHE, docs/caching.md)
 * against a real cluster (cluster_fixture.h): each node's client keeps its
 * own cache with its own invalidation subscriber on that node; a slot
 * that moves away (a MOVED, a layout read) leaves the old node's cache;
 * the refusals. */
#include "cluster_fixture.h"
#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(cluster_cache, .init = fxc_suite_setup, .fini = fxc_suite_teardown, .timeout = 120);

static rp_loop *loop;
static rp_cluster *cluster;

#define RUN(...) \
    fxc_run(loop, cluster, sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *), (const char *[]){__VA_ARGS__})

static rp_cache_stats cstats(void)
{
    rp_cache_stats s;
    cr_assert_eq(rp_cluster_cache_stats(cluster, &s), 0);
    return s;
}

static rp_cluster_stats stats(void)
{
    rp_cluster_stats s;
    rp_cluster_get_stats(cluster, &s);
    return s;
}

/* A cluster client with node caches, once every node's subscriber is up. */
static void open_cached(uint32_t refresh_ms)
{
    rp_cluster_options opts = fxc_seed_options();
    opts.node.cache_bytes = 1 << 20;
    opts.refresh_interval_ms = refresh_ms;
    fxc_client_open(&loop, &cluster, &opts);
    cr_assert_str_eq(RUN("PING").str, "PONG");
    uint64_t deadline = fx_now_ms() + 5000;
    while ((rp_cluster_nodes(cluster, NULL, 0) < 3 || !cstats().subscribed) && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_geq(rp_cluster_nodes(cluster, NULL, 0), 3);
    cr_assert(cstats().subscribed, "a node's subscriber never came up");
}

static const rp_cluster_command_options cached = {.flags = RP_CMD_CACHE};

static fx_result cached_get(const char *key)
{
    fx_result r = {0};
    int64_t id = rp_cluster_command_ex(cluster, &cached, fxc_result_cb, &r, 2, (const char *[]){"GET", key}, NULL);
    cr_assert_gt(id, 0, "cached GET refused: %lld", (long long)id);
    cr_assert_eq(r.calls, 0, "called back inside the call");
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000), "no reply to GET %s", key);
    cr_assert_eq(r.status, 0);
    return r;
}

/* A cached GET until it answers want (nil: NULL), within timeout_ms. */
static bool until_value(const char *key, const char *want, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    while (fx_now_ms() < deadline) {
        fx_result r = cached_get(key);
        if (want ? r.type == REDIS_REPLY_STRING && !strcmp(r.str, want) : r.type == REDIS_REPLY_NIL)
            return true;
        fx_run_for(loop, 1);
    }
    return false;
}

/* GETs a node ran since its last CONFIG RESETSTAT. */
static long node_gets(int node)
{
    char *info = fxc_command(node, "INFO", "commandstats", NULL);
    cr_assert(info);
    const char *at = strstr(info, "cmdstat_get:calls=");
    long calls = at ? atol(at + strlen("cmdstat_get:calls=")) : 0;
    free(info);
    return calls;
}

/* "{<a key of slot>}:suffix" */
static void key_in_slot(int slot, const char *suffix, char *out, size_t size)
{
    char base[64];
    fxc_key_for_slot(slot, base, sizeof base);
    snprintf(out, size, "{%s}:%s", base, suffix);
    cr_assert_eq(rp_cluster_key_slot(out, strlen(out)), slot);
}

static int hook_ends;
static void count_end(void *data, int argc, const char *const *argv, const size_t *argvlen, uint64_t ns, int status,
                      int retries)
{
    (void)data, (void)argc, (void)argv, (void)argvlen, (void)ns, (void)status, (void)retries;
    hook_ends++;
}

Test(cluster_cache, reads_are_kept_per_node_and_invalidated_there)
{
    open_cached(0);
    const int slots[3] = {0, 5461, 10923};
    char keys[3][64];
    for (int i = 0; i < 3; i++) {
        int m = fxc_master_of_slot(slots[i]);
        key_in_slot(slots[i], "c", keys[i], sizeof keys[i]);
        fxc_command_ok(m, "SET", keys[i], "v1", NULL);
        fxc_command_ok(m, "CONFIG", "RESETSTAT", NULL);
        /* Each node has a subscriber of this client's. */
        char *pubsub = fxc_command(m, "CLIENT", "LIST", "TYPE", "pubsub", NULL);
        cr_expect(pubsub && strstr(pubsub, "cmd=subscribe"), "node %d: no subscriber: %s", m, pubsub);
        free(pubsub);
    }
    for (int i = 0; i < 3; i++)
        for (int n = 0; n < 3; n++)
            cr_expect_str_eq(cached_get(keys[i]).str, "v1");
    rp_cache_stats s = cstats();
    cr_expect_eq(s.hits, 6);
    cr_expect_eq(s.misses, 3);
    cr_expect_eq(s.entries, 3);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(node_gets(fxc_master_of_slot(slots[i])), 1, "node %d ran its GET more than once",
                     fxc_master_of_slot(slots[i]));
    /* Another client's write on one node: told by that node's subscriber. */
    fxc_command_ok(fxc_master_of_slot(slots[1]), "SET", keys[1], "v2", NULL);
    cr_expect(until_value(keys[1], "v2", 3000), "the write on its node was never seen");
    cr_expect_geq(cstats().invalidations, 1);
    cr_expect_str_eq(cached_get(keys[0]).str, "v1");
    cr_expect_str_eq(cached_get(keys[2]).str, "v1");
    /* Own writes through the cluster: read back at once. */
    cr_expect_str_eq(RUN("SET", keys[2], "mine").str, "OK");
    cr_expect_str_eq(cached_get(keys[2]).str, "mine");
    /* Misses of one read in flight together: one GET on its node. */
    int m = fxc_master_of_slot(slots[0]);
    fxc_command_ok(m, "SET", keys[0], "v3", NULL);
    fxc_command_ok(m, "CONFIG", "RESETSTAT", NULL);
    cr_expect(until_value(keys[0], "v3", 3000));
    fxc_command_ok(m, "SET", keys[0], "v4", NULL);
    uint64_t deadline = fx_now_ms() + 3000, gets = (uint64_t)node_gets(m);
    while (cstats().entries == 3 && fx_now_ms() < deadline) /* the invalidation came */
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_eq(cstats().entries, 2);
    uint64_t joined = cstats().joined;
    fx_result r[8] = {0};
    for (int i = 0; i < 8; i++)
        cr_assert_gt(rp_cluster_command_ex(cluster, &cached, fxc_result_cb, &r[i], 2,
                                           (const char *[]){"GET", keys[0]}, NULL),
                     0);
    for (int i = 0; i < 8; i++) {
        cr_assert(fx_run_until_count(loop, &r[i].calls, 1, 5000));
        cr_expect(r[i].status == 0 && !strcmp(r[i].str, "v4"), "read %d: %s", i, r[i].str);
    }
    fx_run_for(loop, 20);
    for (int i = 0; i < 8; i++)
        cr_expect_eq(r[i].calls, 1);
    cr_expect_eq(cstats().joined, joined + 7);
    cr_expect_eq((uint64_t)node_gets(m), gets + 1, "the node ran more than one GET");
    /* A hit: its completion is queued (cancel finds none), its callback
     * runs once, later; with hooks, a hit is a command they see. */
    fx_result h = {0};
    int64_t id =
        rp_cluster_command_ex(cluster, &cached, fxc_result_cb, &h, 2, (const char *[]){"GET", keys[0]}, NULL);
    cr_assert_gt(id, 0);
    cr_expect_eq(rp_cluster_cancel(cluster, id), -ENOENT);
    cr_expect_eq(h.calls, 0);
    fx_run_for(loop, 20);
    cr_expect(h.calls == 1 && h.status == 0 && !strcmp(h.str, "v4"), "%d calls, status %d, %s", h.calls, h.status, h.str);
    hook_ends = 0;
    rp_hooks hooks = {.command_end = count_end};
    cr_assert_eq(rp_cluster_set_hooks(cluster, &hooks), 0);
    uint64_t hits = cstats().hits;
    cr_expect_str_eq(cached_get(keys[0]).str, "v4");
    cr_expect_eq(cstats().hits, hits + 1);
    cr_expect_eq(hook_ends, 1);
    fxc_client_close(loop, cluster);
}

Test(cluster_cache, refused_without_node_caches_and_for_other_commands)
{
    rp_cluster_options opts = fxc_seed_options();
    fxc_client_open(&loop, &cluster, &opts);
    fx_result r = {0};
    rp_cache_stats s;
    cr_expect_eq(rp_cluster_command_ex(cluster, &cached, fxc_result_cb, &r, 2, (const char *[]){"GET", "k"}, NULL),
                 -EINVAL);
    cr_expect_eq(rp_cluster_cache_stats(cluster, &s), -EINVAL);
    fxc_client_close(loop, cluster);

    open_cached(0);
    const char *refused[][3] = {{"SET", "k", "v"}, {"MGET", "a", "b"}, {"INCR", "k", NULL}, {"PING", NULL, NULL}};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        int argc = refused[i][1] ? (refused[i][2] ? 3 : 2) : 1;
        cr_expect_eq(rp_cluster_command_ex(cluster, &cached, fxc_result_cb, &r, argc, refused[i], NULL), -EINVAL,
                     "%s accepted", refused[i][0]);
    }
    rp_cluster_command_options by_field = {.flags = RP_CMD_CACHE, .key_index = 2};
    cr_expect_eq(rp_cluster_command_ex(cluster, &by_field, fxc_result_cb, &r, 3, (const char *[]){"HGET", "h", "f"},
                                       NULL),
                 -EINVAL);
    cr_expect_eq(rp_cluster_cache_stats(NULL, &s), -EINVAL);
    cr_expect_eq(rp_cluster_cache_stats(cluster, NULL), -EINVAL);
    fx_run_for(loop, 50);
    cr_expect_eq(r.calls, 0, "a refused command was called back");
    /* key_index 1 is argv[1]'s own: taken. */
    by_field.key_index = 1;
    r = (fx_result){0};
    cr_expect_gt(rp_cluster_command_ex(cluster, &by_field, fxc_result_cb, &r, 3, (const char *[]){"HGET", "h", "f"},
                                       NULL),
                 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 5000));
    cr_expect_eq(r.type, REDIS_REPLY_NIL);
    fxc_client_close(loop, cluster);
}

/* The allocator refuses while a hit is taken: its record cannot be made. */
static bool allocations_fail;
static void *flaky_malloc(size_t size) { return allocations_fail ? NULL : malloc(size); }
static void *flaky_realloc(void *ptr, size_t size) { return allocations_fail ? NULL : realloc(ptr, size); }
static void *flaky_calloc(size_t n, size_t size) { return allocations_fail ? NULL : calloc(n, size); }

/* A hit refused for memory leaves nothing behind: it is not counted, and
 * its entry is not left pinned (an invalidated entry that stays pinned is
 * never freed: the ASan run reports it at exit). */
Test(cluster_cache, a_hit_refused_for_memory_is_not_counted_and_leaves_its_entry)
{
    cr_assert_eq(rp_set_allocator(flaky_malloc, flaky_realloc, flaky_calloc, free), 0);
    open_cached(0);
    cr_assert_str_eq(RUN("SET", "nomem", "v1").str, "OK");
    cr_expect_str_eq(cached_get("nomem").str, "v1");
    cr_assert_eq(cstats().entries, 1);
    fx_result r = {0};
    allocations_fail = true;
    int64_t id = rp_cluster_command_ex(cluster, &cached, fxc_result_cb, &r, 2, (const char *[]){"GET", "nomem"}, NULL);
    allocations_fail = false;
    cr_expect_eq(id, -ENOMEM);
    cr_expect_eq(cstats().hits, 0, "a hit that was refused was counted");
    cr_assert_str_eq(RUN("SET", "nomem", "v2").str, "OK"); /* invalidates the entry */
    cr_expect_eq(cstats().entries, 0);
    cr_expect_str_eq(cached_get("nomem").str, "v2");
    cr_expect_str_eq(cached_get("nomem").str, "v2");
    cr_expect_eq(cstats().hits, 1);
    fx_run_for(loop, 20);
    cr_expect_eq(r.calls, 0, "a refused command was called back");
    fxc_client_close(loop, cluster);
}

/* Slot 100 with a cached key and a cached miss (nil: no key for MIGRATE
 * to delete, so no invalidation from the old node) moves to another
 * master; the key is written there. */
static int moved_slot_setup(char *key, char *absent, int *from, int *to)
{
    int slot = 100;
    *from = fxc_master_of_slot(slot);
    *to = fxc_master_of_slot(16383);
    key_in_slot(slot, "a", key, 64);
    key_in_slot(slot, "b", absent, 64);
    fxc_command_ok(*from, "SET", key, "v1", NULL);
    for (int n = 0; n < 2; n++) {
        cr_expect_str_eq(cached_get(key).str, "v1");
        cr_expect_eq(cached_get(absent).type, REDIS_REPLY_NIL);
    }
    cr_expect_eq(cstats().entries, 2);
    cr_expect_eq(cstats().hits, 2);
    fxc_migrate_slot(slot, *from, *to);
    fxc_command_ok(*to, "SET", key, "v2", NULL);
    fxc_command_ok(*to, "SET", absent, "now", NULL);
    return slot;
}

/* The old node's server no longer tells of the slot's keys: its cache
 * drops them when a MOVED shows the move. */
Test(cluster_cache, a_slot_moved_away_leaves_the_old_nodes_cache_at_a_moved)
{
    open_cached(60000); /* no layout read on its own meanwhile */
    char key[64], absent[64];
    int from, to;
    moved_slot_setup(key, absent, &from, &to);
    uint64_t moved = stats().moved;
    cr_expect_str_eq(RUN("GET", key).str, "v2"); /* MOVED, and sent again to the new node */
    cr_expect_gt(stats().moved, moved);
    cr_expect_eq(cstats().entries, 0, "the old node's cache kept the moved slot's keys");
    cr_expect_str_eq(cached_get(key).str, "v2");
    cr_expect_str_eq(cached_get(absent).str, "now");
    uint64_t hits = cstats().hits;
    cr_expect_str_eq(cached_get(key).str, "v2");
    cr_expect_eq(cstats().hits, hits + 1, "not kept on the new node");
    fxc_client_close(loop, cluster);
}

/* The same shown by a layout read (the periodic one): no MOVED needed. */
Test(cluster_cache, a_slot_moved_away_leaves_the_old_nodes_cache_at_a_layout_read)
{
    open_cached(200);
    char key[64], absent[64];
    int from, to;
    moved_slot_setup(key, absent, &from, &to);
    uint64_t refreshes = stats().refreshes;
    uint64_t deadline = fx_now_ms() + 5000;
    while (stats().refreshes < refreshes + 2 && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_geq(stats().refreshes, refreshes + 2);
    cr_expect_eq(cstats().entries, 0, "the old node's cache kept the moved slot's keys");
    cr_expect_str_eq(cached_get(key).str, "v2");
    cr_expect_str_eq(cached_get(absent).str, "now");
    cr_expect_eq(stats().moved, 0);
    fxc_client_close(loop, cluster);
}
