/* Client-side caching (RP_CMD_CACHE, docs/caching.md) against a real
 * redis-server: hits served from memory later in the same iteration,
 * another client's write seen once its invalidation came (the delay
 * measured), read-your-writes, FLUSHALL, the subscriber killed, a server
 * restart, eviction, BCAST, hooks, a randomized race of writers and cached
 * readers, and allocation failures. */
#define _DEFAULT_SOURCE
#include "fixture.h"
#include "sentinel_fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

TestSuite(cache, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

static rp_loop *loop;
static rp_client *client;

typedef fx_result result;

static void cache_options(rp_client_options *opts, size_t bytes)
{
    rp_client_options_init(opts);
    opts->pool.addr = fx_redis_addr;
    opts->pool.pool_size = 4;
    opts->cache_bytes = bytes;
}

static rp_cache_stats stats(void)
{
    rp_cache_stats s;
    cr_assert_eq(rp_client_cache_stats(client, &s), 0);
    return s;
}

static bool subscribed(void) { return stats().subscribed; }

static void wait_subscribed(void)
{
    uint64_t deadline = fx_now_ms() + 5000;
    while (!subscribed() && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert(subscribed(), "the invalidation subscriber never came up");
}

static void open_client(const rp_client_options *opts)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, opts), 0);
    wait_subscribed();
}

/* A client with a 1 MiB cache and pool_size connections. */
static void open_cached_client(int pool_size)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.pool.pool_size = pool_size;
    open_client(&opts);
}

static const rp_command_options cached = {.flags = RP_CMD_CACHE};

/* A cached GET; its callback must not run inside the call. */
static result cached_get(const char *key)
{
    result r = {0};
    int64_t id = rp_client_command_ex(client, &cached, fx_result_cb, &r, 2, (const char *[]){"GET", key}, NULL);
    cr_assert_gt(id, 0, "cached GET refused: %lld", (long long)id);
    cr_assert_eq(r.calls, 0, "called back inside the call");
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 5000), "no reply to GET %s", key);
    cr_assert_eq(r.status, 0);
    return r;
}

static result command(int argc, const char **argv)
{
    result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, argc, argv, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 5000), "no reply to %s", argv[0]);
    cr_assert_eq(r.status, 0);
    return r;
}

static long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

/* Waits until a cached GET of key answers want; returns the us it took. */
static long until_value(const char *key, const char *want, unsigned timeout_ms)
{
    long start = now_us();
    while (now_us() - start < (long)timeout_ms * 1000) {
        result r = cached_get(key);
        if (r.type == REDIS_REPLY_STRING && !strcmp(r.str, want))
            return now_us() - start;
    }
    return -1;
}

Test(cache, refused_without_a_cache_and_for_other_commands)
{
    rp_client_options opts;
    cache_options(&opts, 0);
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    result r = {0};
    cr_expect_eq(rp_client_command_ex(client, &cached, fx_result_cb, &r, 2, (const char *[]){"GET", "k"}, NULL),
                 -EINVAL);
    rp_cache_stats s;
    cr_expect_eq(rp_client_cache_stats(client, &s), -EINVAL);
    fx_client_close_and_free(loop, client);

    cache_options(&opts, 1 << 20);
    opts.cache_mode = 7;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_expect_eq(rp_client_new(&client, loop, &opts), -EINVAL);
    opts.cache_mode = RP_CACHE_TRACKING;
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    const char *refused[][3] = {{"SET", "k", "v"}, {"EXISTS", "a", "b"}, {"INCR", "k", NULL}, {"KEYS", "*", NULL},
                                {"MGET", "a", "b"}, {"GET", NULL, NULL}};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        int argc = refused[i][1] ? (refused[i][2] ? 3 : 2) : 1;
        cr_expect_eq(rp_client_command_ex(client, &cached, fx_result_cb, &r, argc, refused[i], NULL), -EINVAL,
                     "%s accepted", refused[i][0]);
    }
    fx_run_for(loop, 50);
    cr_expect_eq(r.calls, 0, "a refused command was called back");
    fx_client_close_and_free(loop, client);
}

Test(cache, a_hit_answers_from_memory_later_in_the_iteration)
{
    open_cached_client(4);
    fx_redis_command("SET hot v1\r\n");
    result r = cached_get("hot");
    cr_expect_str_eq(r.str, "v1");
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    for (int i = 0; i < 10; i++) {
        r = cached_get("hot");
        cr_expect_str_eq(r.str, "v1");
    }
    rp_cache_stats s = stats();
    cr_expect_eq(s.hits, 10);
    cr_expect_eq(s.misses, 1);
    cr_expect_eq(s.entries, 1);
    cr_expect_gt(s.bytes, 0);
    /* The server ran none of them. */
    r = (result){0};
    cr_assert_eq(rp_client_commandf(client, fx_result_cb, &r, "EVAL %s 0",
                                    "local s = redis.call('INFO','commandstats') "
                                    "return string.match(s, 'cmdstat_get:calls=(%d+)') or '0'"),
                 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 5000));
    cr_expect_str_eq(r.str, "0", "the server ran %s GETs", r.str);
    fx_client_close_and_free(loop, client);
}

Test(cache, another_clients_write_is_seen_once_its_invalidation_came)
{
    open_cached_client(4);
    fx_redis_command("SET k old\r\n");
    cr_expect_str_eq(cached_get("k").str, "old");
    cr_expect_str_eq(cached_get("k").str, "old");
    cr_expect_eq(stats().hits, 1);
    long t0 = now_us();
    fx_redis_command("SET k new\r\n"); /* on a socket of its own: returns with the SET's reply */
    long us = until_value("k", "new", 3000);
    cr_assert_geq(us, 0, "the other client's SET was never seen");
    fprintf(stderr, "cache: another client's SET seen %ld us after its reply (%ld us after its send)\n", us,
            now_us() - t0);
    cr_expect_lt(us, 1000000);
    cr_expect_geq(stats().invalidations, 1);
    /* Cached again, and hit. */
    uint64_t hits = stats().hits;
    cached_get("k");
    cr_expect_eq(stats().hits, hits + 1);
    fx_client_close_and_free(loop, client);
}

static result own_write_get;
static void set_done(rp_client *c, const redisReply *reply, int status, void *data)
{
    (void)reply;
    (void)data;
    cr_assert_eq(status, 0);
    /* Issued in the SET's callback, before any invalidation could come. */
    cr_assert_gt(rp_client_command_ex(c, &cached, fx_result_cb, &own_write_get, 2, (const char *[]){"GET", "mine"},
                                      NULL),
                 0);
}

Test(cache, own_writes_are_read_back_at_once)
{
    open_cached_client(4);
    fx_redis_command("SET mine 1\r\n");
    cr_expect_str_eq(cached_get("mine").str, "1");
    cr_expect_str_eq(cached_get("mine").str, "1");
    for (int i = 2; i < 20; i++) {
        char value[16];
        snprintf(value, sizeof value, "%d", i);
        own_write_get = (result){0};
        cr_assert_eq(rp_client_command(client, set_done, NULL, 3, (const char *[]){"SET", "mine", value}, NULL), 0);
        cr_assert(fx_run_until_count(loop, &own_write_get.calls, 1, 5000));
        cr_expect_str_eq(own_write_get.str, value, "read %s after writing %s", own_write_get.str, value);
        cr_expect_str_eq(cached_get("mine").str, value);
    }
    /* DEL of several keys names each. */
    command(3, (const char *[]){"DEL", "other", "mine"});
    cr_expect_eq(cached_get("mine").type, REDIS_REPLY_NIL);
    fx_client_close_and_free(loop, client);
}

/* The subscriber is the library's own watch, as an idle connection's is:
 * once nothing is owed the loop is not alive, and RP_RUN_DEFAULT returns;
 * invalidations still come whenever the loop runs. */
Test(cache, the_subscriber_does_not_hold_the_loop)
{
    open_cached_client(4);
    fx_redis_command("SET a 1\r\n");
    cached_get("a");
    uint64_t deadline = fx_now_ms() + 3000;
    while (rp_loop_alive(loop) && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_expect_eq(rp_loop_alive(loop), 0, "the subscriber holds the loop");
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect(stats().subscribed);
    fx_redis_command("SET a 2\r\n");
    cr_expect_geq(until_value("a", "2", 3000), 0, "the invalidation never came");
    fx_client_close_and_free(loop, client);
}

Test(cache, flushall_empties_the_cache)
{
    open_cached_client(4);
    fx_redis_command("SET a 1\r\n");
    fx_redis_command("SET b 2\r\n");
    cached_get("a");
    cached_get("b");
    cr_expect_eq(stats().entries, 2);
    uint64_t flushes = stats().flushes;
    fx_redis_command("FLUSHALL\r\n");
    uint64_t deadline = fx_now_ms() + 3000;
    while (stats().flushes == flushes && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_expect_gt(stats().flushes, flushes, "FLUSHALL's null invalidation never came");
    cr_expect_eq(stats().entries, 0);
    cr_expect_eq(cached_get("a").type, REDIS_REPLY_NIL);
    fx_client_close_and_free(loop, client);
}

Test(cache, a_killed_subscriber_flushes_and_comes_back)
{
    open_cached_client(4);
    fx_redis_command("SET s old\r\n");
    cached_get("s");
    cr_expect_eq(stats().entries, 1);
    fx_redis_command("CLIENT KILL TYPE pubsub\r\n");
    uint64_t deadline = fx_now_ms() + 3000;
    while (subscribed() && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_expect_eq(stats().entries, 0, "entries kept with nobody to invalidate them");
    cr_expect_geq(stats().flushes, 1);
    wait_subscribed();
    /* The data connection now redirects to the new subscriber. */
    cr_expect_str_eq(cached_get("s").str, "old");
    cr_expect_str_eq(cached_get("s").str, "old");
    fx_redis_command("SET s new\r\n");
    cr_expect_geq(until_value("s", "new", 3000), 0, "a write after the new subscriber came was never seen");
    fx_client_close_and_free(loop, client);
}

/* A subscriber that stops answering (the server stopped: no FIN, no
 * error) is found by its PING, and what it covered goes. */
Test(cache, a_silent_subscriber_is_found_by_its_heartbeat)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.cache_heartbeat_ms = 100;
    open_client(&opts);
    fx_redis_command("SET quiet 1\r\n");
    cached_get("quiet");
    cr_expect_eq(stats().entries, 1);
    fx_run_for(loop, 350); /* heartbeats answered: nothing happens */
    cr_expect_eq(stats().entries, 1);
    cr_expect_eq(stats().flushes, 0);
    cr_assert_eq(kill(fx_redis_pid(), SIGSTOP), 0);
    fx_run_for(loop, 400);
    rp_cache_stats s = stats();
    cr_assert_eq(kill(fx_redis_pid(), SIGCONT), 0);
    cr_expect_eq(s.entries, 0, "entries kept with a silent subscriber");
    cr_expect_eq(s.flushes, 1);
    cr_expect(!s.subscribed);
    wait_subscribed();
    fx_redis_command("SET quiet 2\r\n");
    cr_expect_geq(until_value("quiet", "2", 3000), 0);
    fx_client_close_and_free(loop, client);
}

Test(cache, a_server_restart_flushes)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.max_retries = 3;
    open_client(&opts);
    fx_redis_command("SET r before\r\n");
    cached_get("r");
    cr_expect_eq(stats().entries, 1);
    fx_redis_restart();
    fx_redis_command("SET r after\r\n");
    uint64_t deadline = fx_now_ms() + 5000;
    while (stats().entries && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_expect_eq(stats().entries, 0);
    wait_subscribed();
    cr_expect_geq(until_value("r", "after", 5000), 0);
    fx_client_close_and_free(loop, client);
}

Test(cache, memory_stays_under_cache_bytes)
{
    rp_client_options opts;
    cache_options(&opts, 8192);
    open_client(&opts);
    char value[201];
    memset(value, 'x', 200);
    value[200] = '\0';
    for (int i = 0; i < 100; i++) {
        char key[16];
        snprintf(key, sizeof key, "e%d", i);
        command(3, (const char *[]){"SET", key, value});
        cached_get(key);
        cr_assert_leq(stats().bytes, 8192);
    }
    rp_cache_stats s = stats();
    cr_expect_gt(s.evictions, 50);
    cr_expect_gt(s.entries, 5);
    /* The most recent is still there. */
    cached_get("e99");
    cr_expect_eq(stats().hits, s.hits + 1);
    fx_client_close_and_free(loop, client);
}

Test(cache, bcast_mode_sees_writes_under_its_prefixes)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.cache_mode = RP_CACHE_BCAST;
    opts.cache_prefixes = (const char *const[]){"user:"};
    opts.cache_prefix_count = 1;
    open_client(&opts);
    fx_redis_command("SET user:1 a\r\n");
    /* Every write under the prefix is told, this one too: a read sent
     * before its invalidation came would not be kept. */
    uint64_t deadline = fx_now_ms() + 3000;
    while (!stats().invalidations && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_eq(stats().invalidations, 1, "the SET before any read was not told");
    cr_expect_str_eq(cached_get("user:1").str, "a");
    cr_expect_str_eq(cached_get("user:1").str, "a");
    cr_expect_eq(stats().hits, 1);
    fx_redis_command("SET user:1 b\r\n");
    long us = until_value("user:1", "b", 3000);
    cr_expect_geq(us, 0);
    fprintf(stderr, "cache: BCAST: another client's SET seen %ld us after its reply\n", us);
    fx_client_close_and_free(loop, client);
}

/* A key under no prefix is never told of: it must not be kept. */
Test(cache, bcast_keeps_no_key_outside_its_prefixes)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.cache_mode = RP_CACHE_BCAST;
    opts.cache_prefixes = (const char *const[]){"user:", "flag:"};
    opts.cache_prefix_count = 2;
    open_client(&opts);
    fx_redis_command("SET other 1\r\n");
    cr_expect_str_eq(cached_get("other").str, "1");
    cr_expect_str_eq(cached_get("other").str, "1");
    fx_redis_command("SET other 2\r\n");
    cr_expect_str_eq(cached_get("other").str, "2", "a key outside the prefixes was kept, and went stale");
    cr_expect_eq(stats().hits, 0);
    cr_expect_eq(stats().entries, 0);
    fx_client_close_and_free(loop, client);
}

/* With auto-pipelining: a lane whose connection was set up before the
 * subscriber came redirects its tracking before its first cached read. */
Test(cache, a_lane_set_up_before_the_subscriber_is_brought_over)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.autopipeline_conns = 1;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    result ping = command(1, (const char *[]){"PING"}); /* the lane's connection, before the subscriber */
    cr_expect_str_eq(ping.str, "PONG");
    wait_subscribed();
    fx_redis_command("SET lane 1\r\n");
    cr_expect_str_eq(cached_get("lane").str, "1");
    cr_expect_str_eq(cached_get("lane").str, "1");
    cr_expect_eq(stats().hits, 1, "the lane's reads are never kept");
    fx_redis_command("SET lane 2\r\n");
    cr_expect_geq(until_value("lane", "2", 3000), 0);
    fx_client_close_and_free(loop, client);
}

static int hook_ends, hook_status_sum;
static void count_end(void *data, int argc, const char *const *argv, const size_t *argvlen, uint64_t ns, int status,
                      int retries)
{
    (void)data, (void)argc, (void)argvlen, (void)ns, (void)retries;
    if (!strcmp(argv[0], "GET")) {
        hook_ends++;
        hook_status_sum += status;
    }
}

Test(cache, hooks_see_hits)
{
    open_cached_client(4);
    rp_hooks hooks = {.command_end = count_end};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0);
    fx_redis_command("SET h 1\r\n");
    for (int i = 0; i < 5; i++)
        cached_get("h");
    cr_expect_eq(stats().hits, 4);
    cr_expect_eq(hook_ends, 5);
    cr_expect_eq(hook_status_sum, 0);
    /* A hit's id: cancel finds its completion queued. */
    result r = {0};
    int64_t id = rp_client_command_ex(client, &cached, fx_result_cb, &r, 2, (const char *[]){"GET", "h"}, NULL);
    cr_expect_eq(rp_client_cancel(client, id), -ENOENT);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 1000));
    fx_run_for(loop, 20);
    cr_expect_eq(r.calls, 1);
    fx_client_close_and_free(loop, client);
}

/* A caller's rp_conn_set_data on a connection of the client's pool: the
 * cache's own record of the connection is elsewhere, unseen and kept. */
static int user_frees;
static void user_free(void *data)
{
    user_frees++;
    free(data);
}

Test(cache, a_callers_conn_data_is_apart_from_the_caches_record)
{
    open_cached_client(1);
    fx_redis_command("SET apart v1\r\n");
    cr_expect_str_eq(cached_get("apart").str, "v1");
    cr_expect_str_eq(cached_get("apart").str, "v1");
    cr_expect_eq(stats().hits, 1);
    rp_pool *pool = rp_client_pool(client);
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_expect_null(rp_conn_data(conn), "the cache's record shows as the caller's data");
    int *mine = malloc(sizeof *mine);
    *mine = 42;
    cr_assert_eq(rp_conn_set_data_full(conn, mine, user_free), 0);
    rp_pool_put(pool, conn);
    /* The connection's tracking is still the cache's: a write elsewhere is
     * seen, and reads through it are kept again. */
    fx_redis_command("SET apart v2\r\n");
    cr_expect_geq(until_value("apart", "v2", 3000), 0, "the write was never seen");
    uint64_t hits = stats().hits;
    cr_expect_str_eq(cached_get("apart").str, "v2");
    cr_expect_eq(stats().hits, hits + 1, "no longer kept");
    conn = fx_get_conn(loop, pool);
    cr_expect_eq(rp_conn_data(conn), mine);
    rp_pool_put(pool, conn);
    user_frees = 0;
    fx_client_close_and_free(loop, client);
    cr_expect_eq(user_frees, 1);
}

/* ------------------------------------------------------- single flight */

/* How many times the server ran a command since the last CONFIG RESETSTAT
 * (the EVAL asking is not one of them). */
static long server_calls(const char *name)
{
    result r = {0};
    cr_assert_eq(rp_client_commandf(client, fx_result_cb, &r, "EVAL %s 1 %s",
                                    "local s = redis.call('INFO','commandstats') "
                                    "return string.match(s, 'cmdstat_' .. KEYS[1] .. ':calls=(%d+)') or '0'",
                                    name),
                 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 5000));
    cr_assert_eq(r.type, REDIS_REPLY_STRING);
    return atol(r.str);
}

#define FLIGHT 16

static int64_t cached_send(result *r, int argc, const char **argv)
{
    int64_t id = rp_client_command_ex(client, &cached, fx_result_cb, r, argc, argv, NULL);
    cr_assert_gt(id, 0);
    return id;
}

/* Misses of one read in flight together: one request, every callback
 * once with its reply. Another read of the same key is its own. */
Test(cache, concurrent_misses_of_one_read_send_one_request)
{
    open_cached_client(4);
    fx_redis_command("SET sf value\r\n");
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    result r[FLIGHT] = {0}, range[2] = {0};
    for (int i = 0; i < FLIGHT; i++)
        cached_send(&r[i], 2, (const char *[]){"GET", "sf"});
    for (int i = 0; i < 2; i++)
        cached_send(&range[i], 4, (const char *[]){"GETRANGE", "sf", "0", "1"});
    rp_cache_stats s = stats();
    cr_expect_eq(s.misses, 2);
    cr_assert(fx_run_until_count(loop, &r[FLIGHT - 1].calls, 1, 5000));
    cr_assert(fx_run_until_count(loop, &range[1].calls, 1, 5000));
    fx_run_for(loop, 20);
    cr_expect_eq(stats().joined, FLIGHT - 1 + 1);
    cr_expect_eq(stats().misses, 2);
    for (int i = 0; i < FLIGHT; i++) {
        cr_expect_eq(r[i].calls, 1, "read %d called back %d times", i, r[i].calls);
        cr_expect_eq(r[i].status, 0);
        cr_expect_str_eq(r[i].str, "value");
    }
    for (int i = 0; i < 2; i++)
        cr_expect(range[i].calls == 1 && !strcmp(range[i].str, "va"));
    cr_expect_eq(server_calls("get"), 1, "the server ran more than one GET");
    cr_expect_eq(server_calls("getrange"), 1);
    cr_expect_eq(stats().entries, 2);
    fx_client_close_and_free(loop, client);
}

/* The same on an auto-pipelining lane: the one GET shares the lane. */
Test(cache, concurrent_misses_on_a_lane_send_one_request)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.autopipeline_conns = 1;
    open_client(&opts);
    fx_redis_command("SET sfl lane\r\n");
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    result r[FLIGHT] = {0};
    uint64_t misses = stats().misses;
    for (int i = 0; i < FLIGHT; i++)
        cached_send(&r[i], 2, (const char *[]){"GET", "sfl"});
    cr_expect_eq(stats().misses, misses + 1);
    for (int i = 0; i < FLIGHT; i++)
        cr_assert(fx_run_until_count(loop, &r[i].calls, 1, 5000));
    fx_run_for(loop, 20);
    cr_expect_eq(stats().joined, FLIGHT - 1);
    for (int i = 0; i < FLIGHT; i++)
        cr_expect(r[i].calls == 1 && r[i].status == 0 && !strcmp(r[i].str, "lane"), "read %d", i);
    cr_expect_eq(server_calls("get"), 1);
    uint64_t hits = stats().hits;
    cr_expect_str_eq(cached_get("sfl").str, "lane");
    cr_expect_eq(stats().hits, hits + 1, "the lane's reply was not kept");
    fx_client_close_and_free(loop, client);
}

/* The only data connection held by a BLPOP: a cached read issued after it
 * waits for the connection, in flight as far as the cache knows. */
static result blocker;
static void hold_the_connection(unsigned ms)
{
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%.3f", ms / 1000.0);
    blocker = (result){0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &blocker, 3, (const char *[]){"BLPOP", "nothing", timeout},
                                   NULL),
                 0);
}

/* An invalidation delivered while a read is in flight: a read issued
 * after it must not take that read's reply (it may be older than the
 * write), and is sent itself; reads after that one join it. */
Test(cache, a_read_after_an_invalidation_does_not_join_one_sent_before)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.pool.pool_size = 1;
    opts.cache_mode = RP_CACHE_BCAST; /* every write is told, read or not */
    open_client(&opts);
    fx_redis_command("SET inv old\r\n");
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    hold_the_connection(500);
    result before = {0}, after[3] = {0};
    cached_send(&before, 2, (const char *[]){"GET", "inv"});
    uint64_t told = stats().invalidations;
    fx_redis_command("SET inv new\r\n");
    uint64_t deadline = fx_now_ms() + 3000;
    while (stats().invalidations == told && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_gt(stats().invalidations, told, "the invalidation never came");
    cr_assert_eq(before.calls, 0, "the first read is no longer in flight");
    uint64_t misses = stats().misses;
    for (int i = 0; i < 3; i++)
        cached_send(&after[i], 2, (const char *[]){"GET", "inv"});
    cr_expect_eq(stats().misses, misses + 1, "a read issued after the invalidation joined one sent before it");
    cr_assert(fx_run_until_count(loop, &after[2].calls, 1, 5000));
    cr_assert(fx_run_until_count(loop, &before.calls, 1, 5000));
    cr_expect_eq(stats().joined, 2);
    cr_expect_eq(blocker.calls, 1);
    for (int i = 0; i < 3; i++)
        cr_expect(after[i].calls == 1 && after[i].status == 0 && !strcmp(after[i].str, "new"), "read %d: %s", i,
                  after[i].str);
    cr_expect_eq(server_calls("get"), 2);
    fx_client_close_and_free(loop, client);
}

/* The read others wait for is cancelled: it alone ends with -ECANCELED;
 * each other one is sent by itself and ends with its reply; a waiter
 * cancelled ends alone too. */
Test(cache, a_cancelled_leader_lets_its_waiters_send_their_own)
{
    open_cached_client(1);
    fx_redis_command("SET c v\r\n");
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    hold_the_connection(200);
    result r[4] = {0};
    int64_t id[4];
    uint64_t misses = stats().misses;
    for (int i = 0; i < 4; i++)
        id[i] = cached_send(&r[i], 2, (const char *[]){"GET", "c"});
    cr_expect_eq(stats().misses, misses + 1);
    cr_assert_eq(rp_client_cancel(client, id[0]), 0);
    cr_assert_eq(rp_client_cancel(client, id[2]), 0);
    cr_assert(fx_run_until_count(loop, &r[0].calls, 1, 1000));
    cr_assert(fx_run_until_count(loop, &r[3].calls, 1, 5000));
    cr_assert(fx_run_until_count(loop, &r[1].calls, 1, 5000));
    fx_run_for(loop, 50);
    cr_expect(r[0].calls == 1 && r[0].status == -ECANCELED);
    cr_expect(r[2].calls == 1 && r[2].status == -ECANCELED);
    for (int i = 1; i < 4; i += 2)
        cr_expect(r[i].calls == 1 && r[i].status == 0 && !strcmp(r[i].str, "v"), "read %d: %d calls, status %d", i,
                  r[i].calls, r[i].status);
    cr_expect_eq(server_calls("get"), 2, "the cancelled reads were sent, or the others were not");
    cr_expect_eq(stats().joined, 0, "reads that took no reply counted as joined");
    cr_expect_eq(stats().misses, misses + 3, "the leader and the two let go are the misses");
    fx_client_close_and_free(loop, client);
}

/* A client with opts; key set to "v" on the server, which is then frozen
 * (SIGSTOP); four cached GETs of it: one sent, three joined to it. */
static void four_joined_reads_on_a_frozen_server(const rp_client_options *opts, const char *key, result r[4])
{
    open_client(opts);
    char set[64];
    snprintf(set, sizeof set, "SET %s v\r\n", key);
    fx_redis_command(set);
    cr_assert_eq(kill(fx_redis_pid(), SIGSTOP), 0);
    uint64_t misses = stats().misses;
    for (int i = 0; i < 4; i++)
        cached_send(&r[i], 2, (const char *[]){"GET", key});
    cr_expect_eq(stats().misses, misses + 1, "more than one sent");
}

/* The read others wait for fails (its connection times out): it ends with
 * its failure; the others, sent by themselves to a server answering
 * again, end with the value. */
Test(cache, a_failed_leader_lets_its_waiters_send_their_own)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.max_retries = 0;
    opts.pool.read_timeout_ms = 300;
    result r[4] = {0};
    four_joined_reads_on_a_frozen_server(&opts, "f", r);
    uint64_t misses = stats().misses;
    bool ended = fx_run_until_count(loop, &r[0].calls, 1, 3000);
    cr_assert_eq(kill(fx_redis_pid(), SIGCONT), 0); /* the others' own requests are answered */
    cr_assert(ended);
    cr_expect_eq(r[0].status, -ETIMEDOUT);
    cr_expect_eq(stats().misses, misses + 3, "the waiters were not sent");
    for (int i = 1; i < 4; i++) {
        cr_assert(fx_run_until_count(loop, &r[i].calls, 1, 5000));
        cr_expect(r[i].status == 0 && !strcmp(r[i].str, "v"), "read %d: status %d", i, r[i].status);
    }
    fx_run_for(loop, 50);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(r[i].calls, 1);
    cr_expect_eq(stats().joined, 0, "reads let go, which took no reply, counted as joined");
    fx_client_close_and_free(loop, client);
}

/* The server killed under a read others wait for: every one ends once,
 * with a failure. */
Test(cache, a_killed_server_ends_every_waiter_once)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.max_retries = 1;
    result r[4] = {0};
    four_joined_reads_on_a_frozen_server(&opts, "k", r);
    fx_redis_stop();
    for (int i = 0; i < 4; i++)
        cr_assert(fx_run_until_count(loop, &r[i].calls, 1, 10000), "read %d never ended", i);
    fx_run_for(loop, 50);
    for (int i = 0; i < 4; i++)
        cr_expect(r[i].calls == 1 && r[i].status < 0, "read %d: %d calls, status %d", i, r[i].calls, r[i].status);
    fx_client_close_and_free(loop, client);
}

/* A read in flight across a failure of its connection (it timed out),
 * sent again, hands its reply to those that waited for it: they are not
 * sent themselves. */
Test(cache, a_retried_leader_answers_its_waiters)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.max_retries = 3;
    opts.pool.read_timeout_ms = 500;
    result r[4] = {0};
    four_joined_reads_on_a_frozen_server(&opts, "k", r);
    uint64_t misses = stats().misses;
    fx_run_for(loop, 650); /* the first try timed out; the second waits */
    cr_assert_eq(kill(fx_redis_pid(), SIGCONT), 0);
    for (int i = 0; i < 4; i++)
        cr_assert(fx_run_until_count(loop, &r[i].calls, 1, 5000), "read %d never ended", i);
    fx_run_for(loop, 50);
    for (int i = 0; i < 4; i++)
        cr_expect(r[i].calls == 1 && r[i].status == 0 && !strcmp(r[i].str, "v"), "read %d: status %d", i,
                  r[i].status);
    cr_expect_eq(stats().misses, misses, "a waiter was sent");
    cr_expect_eq(stats().joined, 3);
    fx_client_close_and_free(loop, client);
}

/* ------------------------------------- single flight at odd moments */

/* A waiter's callback (run as its leader ends) cancels a later waiter and
 * issues the same read again: the cancelled one ends once with
 * -ECANCELED, the new read is a hit, the rest end once with the value. */
static int64_t odd_ids[4];
static result odd[4], odd_again;
static void cancel_next_and_read_again(rp_client *c, const redisReply *reply, int status, void *data)
{
    fx_result_cb(c, reply, status, data);
    cr_expect_eq(rp_client_cancel(c, odd_ids[2]), 0, "the next waiter could not be cancelled");
    cr_expect_gt(rp_client_command_ex(c, &cached, fx_result_cb, &odd_again, 2, (const char *[]){"GET", "odd"}, NULL),
                 0);
    cr_expect_eq(odd_again.calls, 0, "called back inside the call");
}

Test(cache, a_waiters_callback_cancels_another_and_reads_again)
{
    open_cached_client(1);
    fx_redis_command("SET odd v\r\n");
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    hold_the_connection(100);
    memset(odd, 0, sizeof odd);
    odd_again = (result){0};
    for (int i = 0; i < 4; i++)
        odd_ids[i] = rp_client_command_ex(client, &cached, i == 1 ? cancel_next_and_read_again : fx_result_cb, &odd[i],
                                          2, (const char *[]){"GET", "odd"}, NULL);
    cr_expect_eq(stats().misses, 1);
    cr_assert(fx_run_until_count(loop, &odd_again.calls, 1, 5000));
    fx_run_for(loop, 50);
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(odd[i].calls, 1, "read %d called back %d times", i, odd[i].calls);
        if (i != 2)
            cr_expect(odd[i].status == 0 && !strcmp(odd[i].str, "v"), "read %d: status %d", i, odd[i].status);
    }
    cr_expect_eq(odd[2].status, -ECANCELED);
    cr_expect(odd_again.calls == 1 && odd_again.status == 0 && !strcmp(odd_again.str, "v"));
    cr_expect_eq(stats().joined, 2, "the cancelled waiter counted as joined");
    cr_expect_eq(stats().hits, 1);
    cr_expect_eq(server_calls("get"), 1);
    fx_client_close_and_free(loop, client);
}

/* The command_end hook of a read others wait for, which failed with an
 * error reply (not kept), issues the same read: it joins the ending read
 * and takes its reply, once. */
static result from_hook[2];
static int hook_reads;
static void read_again_from_hook(void *data, int argc, const char *const *argv, const size_t *argvlen, uint64_t ns,
                                 int status, int retries)
{
    (void)data, (void)ns, (void)status, (void)retries;
    if (argc == 2 && argvlen[0] == 3 && !strncmp(argv[0], "GET", 3) && !strncmp(argv[1], "wrong", 5) &&
        hook_reads < 2) {
        result *r = &from_hook[hook_reads++];
        cr_expect_gt(rp_client_command_ex(client, &cached, fx_result_cb, r, 2, (const char *[]){"GET", "wrong"}, NULL),
                     0);
    }
}

Test(cache, a_read_issued_by_the_end_hook_of_a_shared_read_ends_once)
{
    open_cached_client(1);
    fx_redis_command("DEL wrong\r\n");
    fx_redis_command("LPUSH wrong x\r\n");
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    hold_the_connection(100);
    result r[3] = {0};
    memset(from_hook, 0, sizeof from_hook);
    hook_reads = 0;
    rp_hooks hooks = {.command_end = read_again_from_hook};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0);
    for (int i = 0; i < 3; i++)
        cached_send(&r[i], 2, (const char *[]){"GET", "wrong"});
    cr_assert(fx_run_until_count(loop, &from_hook[1].calls, 1, 5000));
    fx_run_for(loop, 100);
    for (int i = 0; i < 3; i++)
        cr_expect(r[i].calls == 1 && r[i].status == 0 && r[i].type == REDIS_REPLY_ERROR, "read %d", i);
    for (int i = 0; i < 2; i++)
        cr_expect(from_hook[i].calls == 1 && from_hook[i].type == REDIS_REPLY_ERROR, "hook read %d: %d calls", i,
                  from_hook[i].calls);
    cr_expect_eq(stats().entries, 0);
    fx_client_close_and_free(loop, client);
}

/* A waiter's callback closes the client: every other read ends once. */
static bool closed_by_waiter;
static void waiter_closed(rp_client *c, void *data)
{
    (void)c;
    *(bool *)data = true;
}

static void close_from_callback(rp_client *c, const redisReply *reply, int status, void *data)
{
    fx_result_cb(c, reply, status, data);
    cr_expect_eq(rp_client_close(c, waiter_closed, &closed_by_waiter), 0);
}

Test(cache, a_waiter_closing_the_client_ends_every_read_once)
{
    open_cached_client(1);
    fx_redis_command("SET cl v\r\n");
    hold_the_connection(100);
    closed_by_waiter = false;
    result r[4] = {0};
    for (int i = 0; i < 4; i++)
        cr_assert_gt(rp_client_command_ex(client, &cached, i == 1 ? close_from_callback : fx_result_cb, &r[i], 2,
                                          (const char *[]){"GET", "cl"}, NULL),
                     0);
    for (int i = 0; i < 4; i++)
        cr_assert(fx_run_until_count(loop, &r[i].calls, 1, 5000), "read %d never ended", i);
    cr_assert(fx_run_until(loop, &closed_by_waiter, 5000), "the close never ended");
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    /* Those after it were not sent: like any unsent command, RP_ECLOSED. */
    for (int i = 0; i < 4; i++)
        cr_expect(r[i].calls == 1 && (i < 2 ? r[i].status == 0 && !strcmp(r[i].str, "v") : r[i].status == RP_ECLOSED),
                  "read %d: %d calls, status %d", i, r[i].calls, r[i].status);
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* Each caller keeps its own deadline: a waiter with a short timeout_ms
 * ends alone with -ETIMEDOUT; a leader with one lets its waiters send
 * their own, which end with the value. */
Test(cache, joined_reads_keep_their_own_deadlines)
{
    open_cached_client(1);
    fx_redis_command("SET dl v\r\n");
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    hold_the_connection(300);
    rp_command_options quick = {.flags = RP_CMD_CACHE, .timeout_ms = 100};
    result lead = {0}, waiter = {0}, patient = {0};
    cr_assert_gt(rp_client_command_ex(client, &cached, fx_result_cb, &lead, 2, (const char *[]){"GET", "dl"}, NULL), 0);
    cr_assert_gt(rp_client_command_ex(client, &quick, fx_result_cb, &waiter, 2, (const char *[]){"GET", "dl"}, NULL), 0);
    cr_assert_gt(rp_client_command_ex(client, &cached, fx_result_cb, &patient, 2, (const char *[]){"GET", "dl"}, NULL), 0);
    cr_expect_eq(stats().misses, 1);
    cr_assert(fx_run_until_count(loop, &waiter.calls, 1, 2000));
    cr_expect_eq(waiter.status, -ETIMEDOUT);
    cr_expect_eq(lead.calls + patient.calls, 0, "the others ended with the waiter's deadline");
    cr_assert(fx_run_until_count(loop, &patient.calls, 1, 5000));
    fx_run_for(loop, 50);
    cr_expect(lead.calls == 1 && lead.status == 0 && !strcmp(lead.str, "v"));
    cr_expect(patient.calls == 1 && patient.status == 0 && !strcmp(patient.str, "v"));
    cr_expect_eq(waiter.calls, 1);
    cr_expect_eq(server_calls("get"), 1);
    cr_expect_eq(stats().joined, 1, "the waiter that timed out counted as joined");

    /* The leader's own deadline: its waiters are sent by themselves. */
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    command(3, (const char *[]){"SET", "dl2", "w"});
    hold_the_connection(300);
    lead = waiter = patient = (result){0};
    cr_assert_gt(rp_client_command_ex(client, &quick, fx_result_cb, &lead, 2, (const char *[]){"GET", "dl2"}, NULL), 0);
    cr_assert_gt(rp_client_command_ex(client, &cached, fx_result_cb, &waiter, 2, (const char *[]){"GET", "dl2"}, NULL), 0);
    cr_assert_gt(rp_client_command_ex(client, &cached, fx_result_cb, &patient, 2, (const char *[]){"GET", "dl2"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &lead.calls, 1, 2000));
    cr_expect_eq(lead.status, -ETIMEDOUT);
    cr_assert(fx_run_until_count(loop, &waiter.calls, 1, 5000));
    cr_assert(fx_run_until_count(loop, &patient.calls, 1, 5000));
    fx_run_for(loop, 50);
    cr_expect(waiter.calls == 1 && waiter.status == 0 && !strcmp(waiter.str, "w"), "status %d", waiter.status);
    cr_expect(patient.calls == 1 && patient.status == 0 && !strcmp(patient.str, "w"), "status %d", patient.status);
    cr_expect_eq(lead.calls, 1);
    cr_expect_eq(blocker.calls, 1);
    cr_expect_eq(server_calls("get"), 2, "the leader timed out before it was sent: the waiters send two");
    cr_expect_eq(stats().joined, 1);
    fx_client_close_and_free(loop, client);
}

/* The subscriber holds the loop only while it is being set up: lost with
 * nothing else to do, the run returns at once; dialled again 100 ms later
 * to a frozen server, a run is held by its set-up at most the read
 * timeout, and each later one too (docs/caching.md); the server back, it
 * subscribes again and holds nothing. */
static uint64_t run_default_ms(void)
{
    uint64_t start = fx_now_ms();
    cr_assert_geq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    return fx_now_ms() - start;
}

Test(cache, the_subscriber_holds_the_loop_only_while_it_is_set_up)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.pool.read_timeout_ms = 300;
    open_client(&opts);
    fx_redis_command("SET lost 1\r\n");
    cached_get("lost");
    cr_expect_lt(run_default_ms(), 200, "the subscriber held the run");
    fx_redis_command("CLIENT KILL TYPE pubsub\r\n");
    cr_expect_lt(run_default_ms(), 200, "a lost subscriber held the run");
    cr_expect(!stats().subscribed);
    fx_run_for(loop, 300);
    cr_expect(stats().subscribed, "the subscriber never came back");
    cr_expect_lt(run_default_ms(), 200, "a subscriber back held the run");
    fx_redis_restart(); /* on the same port: the subscriber is lost */
    cr_expect_lt(run_default_ms(), 200);
    cr_assert_eq(kill(fx_redis_pid(), SIGSTOP), 0);
    uint64_t held = 0;
    for (int i = 0; i < 3; i++) {
        usleep(150 * 1000); /* the redial is due */
        uint64_t ms = run_default_ms();
        cr_expect_lt(ms, 300 + 700, "run %d held %llu ms: longer than the set-up's read timeout", i,
                     (unsigned long long)ms);
        held += ms;
    }
    cr_expect_geq(held, 250, "no run waited for a set-up (%llu ms)", (unsigned long long)held);
    cr_expect(!stats().subscribed);
    cr_assert_eq(kill(fx_redis_pid(), SIGCONT), 0);
    uint64_t deadline = fx_now_ms() + 5000;
    while (!stats().subscribed && fx_now_ms() < deadline)
        fx_run_for(loop, 10);
    cr_expect(stats().subscribed, "the subscriber never came back");
    cr_expect_lt(run_default_ms(), 200);
    fx_client_close_and_free(loop, client);
}

/* Entries read through a connection go when it closes (the server forgets
 * what a closed connection read): here the server closes the idle data
 * connection, its idle watch sees it, the entry goes, no invalidation
 * counted and no flush; a read after it is a miss, kept again. */
Test(cache, a_closed_data_connection_takes_its_entries_along)
{
    open_cached_client(1);
    fx_redis_command("SET dc v\r\n");
    cr_expect_str_eq(cached_get("dc").str, "v");
    cr_expect_eq(stats().entries, 1);
    uint64_t invalidations = stats().invalidations, flushes = stats().flushes;
    fx_redis_command("CLIENT KILL TYPE normal SKIPME yes\r\n");
    uint64_t deadline = fx_now_ms() + 3000;
    while (stats().entries && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_expect_eq(stats().entries, 0, "an entry outlived the connection it was read through");
    cr_expect_eq(stats().invalidations, invalidations);
    cr_expect_eq(stats().flushes, flushes);
    cr_expect(stats().subscribed);
    uint64_t misses = stats().misses;
    cr_expect_str_eq(cached_get("dc").str, "v");
    cr_expect_eq(stats().misses, misses + 1);
    cr_expect_eq(stats().entries, 1, "not kept through the new connection");
    fx_redis_command("SET dc w\r\n");
    cr_expect_geq(until_value("dc", "w", 3000), 0, "the new connection's read was not tracked");
    fx_client_close_and_free(loop, client);
}

/* size bytes that end where an unreadable page begins (munmap_end frees). */
static void *at_page_end(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *area = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(area != MAP_FAILED);
    cr_assert_eq(mprotect(area + page, page, PROT_NONE), 0);
    return area + page - size;
}

static void munmap_end(void *p)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap((void *)((uintptr_t)p & ~(uintptr_t)(page - 1)), 2 * page);
}

/* RP_CMD_CACHE with one argument (no key) is -EINVAL, and nothing reads
 * past the arrays the caller gave: here each ends at a page that cannot
 * be read. */
Test(cache, a_cached_command_without_a_key_reads_nothing_past_its_arguments)
{
    open_cached_client(4);
    fx_redis_command("SET k v\r\n");
    cr_expect_str_eq(cached_get("k").str, "v"); /* the cache holds an entry */
    const char **argv = at_page_end(sizeof *argv);
    size_t *argvlen = at_page_end(sizeof *argvlen);
    *argv = "GET";
    *argvlen = 3;
    result r = {0};
    cr_expect_eq(rp_client_command_ex(client, &cached, fx_result_cb, &r, 1, argv, argvlen), -EINVAL);
    fx_run_for(loop, 20);
    cr_expect_eq(r.calls, 0);
    munmap_end(argv);
    munmap_end(argvlen);
    fx_client_close_and_free(loop, client);
}

/* The same on an auto-pipelining lane: the leader fails with its lane
 * (timed out; then the server killed), and the waiters, sent again from
 * inside the lane's failure, each end once. */
Test(cache, a_failed_leader_on_a_lane_lets_its_waiters_send_their_own)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.autopipeline_conns = 1;
    opts.max_retries = 0;
    opts.pool.read_timeout_ms = 300;
    result r[4] = {0};
    four_joined_reads_on_a_frozen_server(&opts, "fl", r);
    bool ended = fx_run_until_count(loop, &r[0].calls, 1, 3000);
    cr_assert_eq(kill(fx_redis_pid(), SIGCONT), 0);
    cr_assert(ended);
    cr_expect_eq(r[0].status, -ETIMEDOUT);
    for (int i = 1; i < 4; i++) {
        cr_assert(fx_run_until_count(loop, &r[i].calls, 1, 5000), "read %d never ended", i);
        cr_expect(r[i].status == 0 && !strcmp(r[i].str, "v"), "read %d: status %d", i, r[i].status);
    }
    fx_run_for(loop, 50);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(r[i].calls, 1);
    cr_expect_eq(stats().joined, 0);

    result k[4] = {0};
    cr_assert_eq(kill(fx_redis_pid(), SIGSTOP), 0);
    for (int i = 0; i < 4; i++)
        cached_send(&k[i], 2, (const char *[]){"GET", "fl2"});
    fx_redis_stop();
    for (int i = 0; i < 4; i++)
        cr_assert(fx_run_until_count(loop, &k[i].calls, 1, 10000), "read %d never ended", i);
    fx_run_for(loop, 50);
    for (int i = 0; i < 4; i++)
        cr_expect(k[i].calls == 1 && k[i].status < 0, "read %d: %d calls, status %d", i, k[i].calls, k[i].status);
    fx_client_close_and_free(loop, client);
}

/* A hit's callback writes its key (the entry it is answered with goes,
 * pinned until the callback returns) and reads it again (a miss, sent):
 * the cached reply stays readable to the end of the callback, the new
 * read sees the write. */
static result pin_again;
static bool pin_reply_intact;
static void write_and_reread_from_a_hit(rp_client *c, const redisReply *reply, int status, void *data)
{
    cr_assert_eq(rp_client_command(c, fx_result_cb, data, 3, (const char *[]){"SET", "pin", "new"}, NULL), 0);
    cr_assert_gt(rp_client_command_ex(c, &cached, fx_result_cb, &pin_again, 2, (const char *[]){"GET", "pin"}, NULL),
                 0);
    pin_reply_intact = status == 0 && reply->type == REDIS_REPLY_STRING && !strcmp(reply->str, "old");
}

Test(cache, a_hits_callback_writing_its_key_reads_the_write)
{
    open_cached_client(4);
    fx_redis_command("SET pin old\r\n");
    cr_expect_str_eq(cached_get("pin").str, "old");
    result set = {0};
    pin_again = (result){0};
    pin_reply_intact = false;
    uint64_t hits = stats().hits;
    cr_assert_gt(rp_client_command_ex(client, &cached, write_and_reread_from_a_hit, &set, 2,
                                      (const char *[]){"GET", "pin"}, NULL),
                 0);
    cr_assert(fx_run_until_count(loop, &pin_again.calls, 1, 5000));
    cr_expect_eq(stats().hits, hits + 1);
    cr_expect(pin_reply_intact, "the hit's reply changed under its callback");
    cr_expect(set.calls == 1 && set.status == 0);
    cr_expect_str_eq(pin_again.str, "new", "the read after the write saw the old value");
    cr_expect_str_eq(cached_get("pin").str, "new");
    fx_client_close_and_free(loop, client);
}

/* A cache too small for any entry: every reply is evicted as it is kept,
 * single flight still shares one request, and nothing leaks. */
Test(cache, a_cache_too_small_for_an_entry_still_shares_one_request)
{
    rp_client_options opts;
    cache_options(&opts, 64);
    opts.pool.pool_size = 1;
    open_client(&opts);
    fx_redis_command("SET tiny value\r\n");
    command(2, (const char *[]){"CONFIG", "RESETSTAT"});
    hold_the_connection(100);
    result r[4] = {0};
    for (int i = 0; i < 4; i++)
        cached_send(&r[i], 2, (const char *[]){"GET", "tiny"});
    for (int i = 0; i < 4; i++)
        cr_assert(fx_run_until_count(loop, &r[i].calls, 1, 5000));
    fx_run_for(loop, 20);
    for (int i = 0; i < 4; i++)
        cr_expect(r[i].calls == 1 && r[i].status == 0 && !strcmp(r[i].str, "value"), "read %d", i);
    rp_cache_stats s = stats();
    cr_expect_eq(s.entries, 0);
    cr_expect_eq(s.bytes, 0);
    cr_expect_geq(s.evictions, 1);
    cr_expect_eq(s.joined, 3);
    cr_expect_eq(server_calls("get"), 1);
    fx_client_close_and_free(loop, client);
}

/* ------------------------------------------------------------- the race */

#define RACE_KEYS 4
static rp_client *writer;
static long written[RACE_KEYS];    /* the last value whose SET completed */
static int writes_in_flight, reads_in_flight;
static long reads_done, stale_reads;

typedef struct race_read {
    int key;
    long floor; /* a value written and invalidated before the read was issued */
} race_read;

static void race_set_done(rp_client *c, const redisReply *reply, int status, void *data)
{
    (void)c, (void)reply;
    cr_assert_eq(status, 0);
    long v = (long)(intptr_t)data;
    written[v % RACE_KEYS] = v;
    writes_in_flight--;
}

static void race_get_done(rp_client *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    race_read *rr = data;
    cr_assert_eq(status, 0);
    long v = reply->type == REDIS_REPLY_STRING ? atol(reply->str) : -1;
    if (v < rr->floor)
        stale_reads++;
    reads_done++;
    reads_in_flight--;
    free(rr);
}

static void writer_closed(rp_client *c, void *data)
{
    (void)c;
    *(bool *)data = true;
}

static void race_key(int k, char *out) { sprintf(out, "race%d", k); }

/* Writers on another client (other connections) raise each key's value;
 * cached readers check that no read returns a value older than one whose
 * invalidation the cache had already taken in when the read was issued
 * (a write seen complete, then a fresh invalidation count). At the end,
 * once quiet, every cached read equals the server's value. */
Test(cache, randomized_writers_and_cached_readers_never_go_stale)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.pool.pool_size = 8;
    open_client(&opts);
    rp_client_options wopts;
    rp_client_options_init(&wopts);
    wopts.pool.addr = fx_redis_addr;
    wopts.pool.pool_size = 4;
    cr_assert_eq(rp_client_new(&writer, loop, &wopts), 0);
    srand(27);
    long next = RACE_KEYS;
    for (int k = 0; k < RACE_KEYS; k++) {
        char cmd[32];
        sprintf(cmd, "SET race%d %d\r\n", k, k);
        fx_redis_command(cmd);
        written[k] = k;
    }
    /* A read's floor: the last value of its key whose SET completed at
     * least 200 ms before the read was issued, far beyond the delivery
     * time of an invalidation measured here (well under 10 ms). */
    long floor_at[RACE_KEYS][2] = {{0}};
    uint64_t end = fx_now_ms() + 3000;
    while (fx_now_ms() < end) {
        if (writes_in_flight < 4 && rand() % 4 == 0) {
            long v = next++;
            char key[16], val[24];
            race_key((int)(v % RACE_KEYS), key);
            sprintf(val, "%ld", v);
            writes_in_flight++;
            cr_assert_eq(rp_client_command(writer, race_set_done, (void *)(intptr_t)v, 3,
                                           (const char *[]){"SET", key, val}, NULL),
                         0);
        }
        uint64_t now = fx_now_ms();
        for (int k = 0; k < RACE_KEYS; k++) {
            if (floor_at[k][0] != written[k]) { /* a new completed value: its time */
                floor_at[k][0] = written[k];
                floor_at[k][1] = (long)now;
            }
        }
        while (reads_in_flight < 32) {
            race_read *rr = malloc(sizeof *rr);
            rr->key = rand() % RACE_KEYS;
            rr->floor = now - (uint64_t)floor_at[rr->key][1] >= 200 ? floor_at[rr->key][0] : 0;
            char key[16];
            race_key(rr->key, key);
            reads_in_flight++;
            cr_assert_gt(rp_client_command_ex(client, &cached, race_get_done, rr, 2, (const char *[]){"GET", key},
                                              NULL),
                         0);
        }
        rp_loop_run(loop, RP_RUN_ONCE);
    }
    cr_assert(fx_run_until_count(loop, &reads_in_flight, 0, 5000));
    cr_assert(fx_run_until_count(loop, &writes_in_flight, 0, 5000));
    fx_run_for(loop, 200);
    rp_cache_stats s = stats();
    fprintf(stderr, "cache race: %ld reads, %llu hits, %llu misses, %llu invalidations, %ld writes\n", reads_done,
            (unsigned long long)s.hits, (unsigned long long)s.misses, (unsigned long long)s.invalidations,
            next - RACE_KEYS);
    cr_expect_eq(stale_reads, 0, "%ld reads older than a value invalidated 200 ms before", stale_reads);
    cr_expect_gt(s.hits, 100);
    cr_expect_gt(s.invalidations, 10);
    for (int k = 0; k < RACE_KEYS; k++) {
        char key[16], want[24];
        race_key(k, key);
        sprintf(want, "%ld", written[k]);
        cr_expect_str_eq(cached_get(key).str, want, "%s kept a stale value", key);
        cr_expect_str_eq(cached_get(key).str, want, "%s kept a stale value", key);
    }
    bool closed = false;
    cr_assert_eq(rp_client_close(writer, writer_closed, &closed), 0);
    cr_assert(fx_run_until(loop, &closed, 5000));
    fx_client_close_and_free(loop, client);
}

/* ------------------------------------------------ allocation failures */

static long allocations, fail_at;
static bool allocation_fails(void) { return ++allocations == fail_at; }
static void *test_malloc(size_t size) { return allocation_fails() ? NULL : malloc(size); }
static void *test_realloc(void *ptr, size_t size) { return allocation_fails() ? NULL : realloc(ptr, size); }
static void *test_calloc(size_t count, size_t size) { return allocation_fails() ? NULL : calloc(count, size); }

/* Cached reads, a hit, another client's write, FLUSHALL, close: with one
 * allocation failing, each accepted command is still called back exactly
 * once, the client closes and nothing leaks (ASan). */
static bool alloc_scenario(void)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.max_retries = 0; /* no COMMAND table: thousands of allocations of no interest here */
    if (rp_loop_new(&loop, NULL) < 0)
        return false;
    if (rp_client_new(&client, loop, &opts) < 0) {
        cr_assert_eq(rp_loop_free(loop), 0);
        return false;
    }
    uint64_t deadline = fx_now_ms() + 1000;
    while (!subscribed() && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    result r[8] = {{0}};
    int accepted = 0;
    for (int i = 0; i < 8; i++) {
        if (i == 4)
            fx_redis_command("SET a2 changed\r\n");
        if (i == 6)
            fx_redis_command("FLUSHALL\r\n");
        int64_t id = rp_client_command_ex(client, &cached, fx_result_cb, &r[i], 2, (const char *[]){"GET", "a2"}, NULL);
        if (id > 0) {
            accepted++;
            cr_assert(fx_run_until_count(loop, &r[i].calls, 1, 3000), "allocation %ld failing: no reply", fail_at);
        }
    }
    bool ok = accepted == 8;
    for (int i = 0; i < 8; i++)
        ok = ok && r[i].status == 0;
    fx_client_close_and_free(loop, client);
    for (int i = 0; i < 8; i++)
        cr_assert_leq(r[i].calls, 1, "allocation %ld failing: called back %d times", fail_at, r[i].calls);
    return ok;
}

Test(cache, every_failing_allocation_is_survived)
{
    cr_assert_eq(rp_set_allocator(test_malloc, test_realloc, test_calloc, free), 0);
    fx_redis_command("SET a2 first\r\n");
    fail_at = 0;
    allocations = 0;
    cr_assert(alloc_scenario(), "the scenario fails with every allocation succeeding");
    long total = allocations;
    long step = total > 600 ? (total - 300) / 300 : 1;
    for (fail_at = 1; fail_at <= total; fail_at += fail_at < 300 ? 1 : step) {
        allocations = 0;
        alloc_scenario();
    }
    fail_at = 0;
    cr_assert_eq(rp_set_allocator(malloc, realloc, calloc, free), 0);
}

/* ------------------------------------------------------------ sentinel */

static void sentinel_setup(void)
{
    fx_setup_no_redis();
    fxs_start();
}

static void sentinel_teardown(void)
{
    fxs_stop();
    fx_teardown();
}

/* After a switch of master the subscriber must be on the new one: the
 * ids data connections redirect to are the new server's, and its
 * invalidations are the ones that count. Reads are kept again after the
 * switch, and a write on the new master is seen. */
Test(cache, a_sentinel_switch_moves_the_subscriber, .init = sentinel_setup, .fini = sentinel_teardown)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.pool.addr = NULL;
    opts.master_name = FXS_NAME;
    opts.sentinel_addrs = fxs_sentinel_addrs();
    opts.sentinel_count = 1;
    opts.max_retries = 12;
    open_client(&opts);
    int from = fxs_master();
    free(fxs_command(fxs_data_port(from), "SET", "ck", "v1", NULL));
    cr_expect_str_eq(cached_get("ck").str, "v1");
    cr_expect_str_eq(cached_get("ck").str, "v1");
    cr_expect_eq(stats().hits, 1);
    fxs_failover();
    int to = fxs_wait_switch(from, 20000);
    cr_assert_geq(to, 0, "no switch");
    free(fxs_command(fxs_data_port(to), "SET", "ck", "v2", NULL));
    cr_assert_geq(until_value("ck", "v2", 10000), 0, "the write on the new master was never seen");
    /* Kept again: two reads in a row, the second a hit, within a while
     * (the subscriber moves once the client has learnt the switch). */
    bool kept = false;
    for (uint64_t deadline = fx_now_ms() + 5000; !kept && fx_now_ms() < deadline;) {
        uint64_t hits = stats().hits;
        cached_get("ck");
        kept = stats().hits > hits;
        if (!kept)
            fx_run_for(loop, 50);
    }
    cr_expect(kept, "no read is kept after the switch");
    free(fxs_command(fxs_data_port(to), "SET", "ck", "v3", NULL));
    cr_expect_geq(until_value("ck", "v3", 3000), 0, "a write after the switch was never seen");
    fx_client_close_and_free(loop, client);
}

/* A frozen master: the heartbeat finds the subscriber silent, and the new
 * subscriber's dial to the same master connects (its kernel answers) and
 * waits in its set-up. The switch abandons that set-up at once
 * (-ECONNABORTED to the subscriber's request), and the subscriber comes up
 * on the new master long before the 8 s read timeout would have ended it. */
Test(cache, a_switch_abandons_the_subscribers_set_up_to_a_frozen_master, .init = sentinel_setup,
     .fini = sentinel_teardown)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.pool.addr = NULL;
    opts.master_name = FXS_NAME;
    opts.sentinel_addrs = fxs_sentinel_addrs();
    opts.sentinel_count = FXS_SENTINELS;
    opts.cache_heartbeat_ms = 100;
    opts.pool.read_timeout_ms = 8000;
    open_client(&opts);
    int from = fxs_master();
    free(fxs_command(fxs_data_port(from), "SET", "ck", "v1", NULL));
    cr_expect_str_eq(cached_get("ck").str, "v1");
    fxs_freeze_data(from, true);
    uint64_t deadline = fx_now_ms() + 3000;
    while (subscribed() && fx_now_ms() < deadline)
        fx_run_for(loop, 10);
    cr_assert(!subscribed(), "the heartbeat missed the frozen master");
    cr_expect_eq(stats().entries, 0);
    deadline = fx_now_ms() + 30000;
    while (fxs_switched(from) < 0 && fx_now_ms() < deadline)
        fx_run_for(loop, 20);
    int to = fxs_switched(from);
    cr_assert_geq(to, 0, "no switch");
    uint64_t switched = fx_now_ms();
    while (!subscribed() && fx_now_ms() < switched + 6000)
        fx_run_for(loop, 10);
    uint64_t took = fx_now_ms() - switched;
    fprintf(stderr, "subscriber up on the new master %llu ms after the switch was seen\n", (unsigned long long)took);
    cr_expect(subscribed() && took < 3000, "the subscriber waited for its set-up to the frozen master");
    fxs_freeze_data(from, false);
    fx_client_close_and_free(loop, client);
}

static long gets_on(int node)
{
    char *info = fxs_command(fxs_data_port(node), "INFO", "commandstats", NULL);
    cr_assert(info);
    const char *at = strstr(info, "cmdstat_get:calls=");
    long calls = at ? atol(at + strlen("cmdstat_get:calls=")) : 0;
    free(info);
    return calls;
}

/* A client reading from replicas: cached reads go to the master (the
 * master's tracking tells of their keys, and this client's writes, which
 * go there, are read back), and are kept; other reads still go to the
 * replica. */
Test(cache, a_replica_reading_client_caches_reads_of_the_master, .init = sentinel_setup,
     .fini = sentinel_teardown)
{
    rp_client_options opts;
    cache_options(&opts, 1 << 20);
    opts.pool.addr = NULL;
    opts.master_name = FXS_NAME;
    opts.sentinel_addrs = fxs_sentinel_addrs();
    opts.sentinel_count = 1;
    opts.replica_only = true;
    open_client(&opts);
    int master = fxs_master(), replica = 1 - master;
    free(fxs_command(fxs_data_port(master), "SET", "rk", "v1", NULL));
    free(fxs_command(fxs_data_port(master), "WAIT", "1", "1000", NULL));
    long on_master = gets_on(master), on_replica = gets_on(replica);
    cr_expect_str_eq(cached_get("rk").str, "v1");
    cr_expect_str_eq(cached_get("rk").str, "v1");
    cr_expect_eq(stats().hits, 1, "a cached read was not kept");
    cr_expect_eq(gets_on(master), on_master + 1);
    cr_expect_eq(gets_on(replica), on_replica, "a cached read went to the replica: %ld -> %ld, master %ld -> %ld", on_replica, gets_on(replica), on_master, gets_on(master));
    /* Own writes read back at once. */
    command(3, (const char *[]){"SET", "rk", "mine"});
    cr_expect_str_eq(cached_get("rk").str, "mine");
    /* An uncached read still goes to the replica. */
    free(fxs_command(fxs_data_port(master), "WAIT", "1", "1000", NULL));
    cr_expect_str_eq(command(2, (const char *[]){"GET", "rk"}).str, "mine");
    cr_expect_eq(gets_on(replica), on_replica + 1);
    /* The replica's client has no cache (nor subscriber) of its own. */
    char *subs = fxs_command(fxs_data_port(replica), "PUBSUB", "NUMSUB", "__redis__:invalidate", NULL);
    cr_expect(subs && !strcmp(subs, "__redis__:invalidate\n0"), "a subscriber on the replica: %s", subs);
    free(subs);
    fx_client_close_and_free(loop, client);
}
