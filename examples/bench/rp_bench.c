/* rp-bench: redis-benchmark's common flags, through ringpool's client.
 *
 * Each test runs -n requests with -c in flight, spread over --loops
 * threads (one loop and one client each). It prints requests/s, latency
 * percentiles from an HDR-style histogram, client CPU time and the
 * syscalls the loops made per request, and at the end the process's peak
 * RSS. --csv prints redis-benchmark's --csv shape. */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ringpool.h>

#include "../common.h"
#include "../hosts.h"
#include "histogram.h"

static const char usage[] =
    "usage: rp-bench [-h HOST] [-p PORT] [-a ADDR] [-c CLIENTS] [-n REQUESTS] [-t TESTS]\n"
    "                [-d SIZE] [-P PIPELINE] [-r KEYSPACE] [-q] [--csv]\n"
    "                [--pool-size CONNS] [--loops THREADS] [--busy-poll USEC]\n"
    "                [--embed epoll|libuv|libevent|uring] [--autopipeline[=CONNS]]\n"
    "                [--cluster] [--sentinel NAME] [--tls] [--cacert FILE] [--cacertdir DIR]\n"
    "                [--cert FILE] [--key FILE] [--sni NAME] [--insecure] [--cache[=BYTES]]\n"
    "  -h HOST        server host (default 127.0.0.1)\n"
    "  -p PORT        server port (default 6379)\n"
    "  -a ADDR        host:port, [v6]:port or unix:/path (instead of -h/-p)\n"
    "  -c CLIENTS     commands in flight (default 50)\n"
    "  -n REQUESTS    requests per test (default 100000)\n"
    "  -t TESTS       comma-separated: set,get,incr,lpush,ping,mix, and with\n"
    "                 --cache cget,cmix,chit (default all)\n"
    "  -d SIZE        SET/LPUSH value size in bytes (default 3)\n"
    "  -P PIPELINE    commands pipelined per connection round (default 1)\n"
    "  -r KEYSPACE    random keys key:000000000000..KEYSPACE-1 (default: one key)\n"
    "  -q             quiet: one line per test\n"
    "  --csv          redis-benchmark's --csv output\n"
    "  --pool-size N  connections (default CLIENTS)\n"
    "  --loops N      threads, each with its own loop and pool (default 1)\n"
    "  --busy-poll U  each loop spins up to U microseconds before sleeping (default 0)\n"
    "  --autopipeline[=N]  commands share up to N connections per loop,\n"
    "                 pipelined (default N 1; the pool then has N connections)\n"
    "  --autopipeline-max-bytes B  commands larger than B bytes take a\n"
    "                 connection of their own (default 1 MiB)\n"
    "  --autopipeline-max-owed N  a lane takes commands while it owes fewer\n"
    "                 than N replies, then the next lane is used (default 1024)\n"
    "  --embed HOST   each loop runs inside a host loop through rp_loop_fd and\n"
    "                 rp_loop_timeout: a raw epoll loop, libuv, libevent, or a\n"
    "                 host's own io_uring (default: the loop runs standalone)\n"
    "  --cluster      the address is a seed of a Redis Cluster: commands go\n"
    "                 through rp_cluster, each in-flight slot's keys under a\n"
    "                 hash tag of its own (as redis-benchmark --cluster); the\n"
    "                 pool and auto-pipelining options apply per node\n"
    "  --tls          TLS, with redis-benchmark's --cacert, --cacertdir, --cert,\n"
    "                 --key, --sni and --insecure\n"
    "  --sentinel NAME  the address is a sentinel's: the client follows the\n"
    "                 master it names NAME (docs/sentinel.md)\n"
    "  --cache[=B]    adds the tests cget: GETs with RP_CMD_CACHE through a client\n"
    "                 whose cache holds up to B bytes (default 64 MiB; with\n"
    "                 --cluster, each node's); cmix: cached GETs and SETs 90/10\n"
    "                 through it (mix: the same uncached); chit: cached GETs of\n"
    "                 one key per in-flight slot, warmed first, untimed: the\n"
    "                 client CPU per hit. The other tests' clients have no\n"
    "                 cache (docs/caching.md)\n"
    "  --help         this text\n";

typedef struct config {
    char addr[256];
    int clients, pipeline, loops, pool_size, autopipeline;
    size_t autopipeline_max_bytes;
    unsigned autopipeline_max_owed;
    size_t cache_bytes; /* --cache: the cget test's client's cache */
    unsigned busy_poll_us;
    long requests, keyspace;
    size_t data_size;
    bool quiet, csv, cluster;
    char tests[128];
    char sentinel[128]; /* --sentinel: the master's name; addr is a sentinel's */
    example_host embed; /* a host loop from hosts.h, or NULL: standalone */
    rp_tls_options tls; /* --tls and its flags; the strings are argv's */
} config;

typedef struct test_def {
    const char *flag, *name, *cmd;
    bool has_value;
    bool cached; /* RP_CMD_CACHE, on a client with a cache (--cache) */
    int write_pct; /* a mix: a SET instead of the read this often in 100 */
    bool hits_only; /* warmed first, no latency taken: CPU per hit */
} test_def;

static const test_def all_tests[] = {
    {"ping", "PING_MBULK", "PING", false, false, 0, false},
    {"set", "SET", "SET", true, false, 0, false},
    {"get", "GET", "GET", false, false, 0, false},
    {"incr", "INCR", "INCR", false, false, 0, false},
    {"lpush", "LPUSH", "LPUSH", true, false, 0, false},
    {"mix", "GET_SET_90_10", "GET", false, false, 10, false},
    {"cget", "GET_CACHED", "GET", false, true, 0, false},
    {"cmix", "GET_SET_90_10_CACHED", "GET", false, true, 10, false},
    {"chit", "GET_CACHED_HITS", "GET", false, true, 0, true},
};

static const rp_command_options cache_command = {.flags = RP_CMD_CACHE};
static const rp_cluster_command_options cluster_cache_command = {.flags = RP_CMD_CACHE};

/* -------------------------------------------------------------- a thread */

typedef struct worker worker;

typedef struct slot {
    worker *w;
    rp_conn *conn;   /* pipelining: the connection of this round */
    int owed;        /* replies still owed this round */
    uint64_t started; /* read fresh, not the loop's cached time: a user's
                       * latency runs from the call to the callback */
    char prefix[24];
    char key[48];
    const char *argv[3];
    size_t argvlen[3];
} slot;

struct worker {
    const config *cfg;
    const test_def *test;
    const char *value;
    pthread_t thread;
    rp_loop *loop;
    rp_client *client;
    rp_cluster *cluster; /* --cluster: instead of client */
    long quota, issued;
    atomic_long done;
    atomic_bool finished;
    int failures;
    histogram hist;
    rp_loop_stats loop_stats;
    rp_cache_stats cache_stats;
    double run_cpu; /* the thread's CPU seconds over the timed run */
    int warming;    /* chit: warm-up reads still owed */
    uint64_t seed;
};

static void next_round(slot *s);

static void fill_args(slot *s)
{
    worker *w = s->w;
    if (w->cfg->keyspace) {
        w->seed = w->seed * 6364136223846793005ull + 1442695040888963407ull;
        snprintf(s->key, sizeof s->key, "%s:%012llu", s->prefix,
                 (unsigned long long)((w->seed >> 33) % (uint64_t)w->cfg->keyspace));
    }
    s->argvlen[1] = strlen(s->key);
}

static void finish_request(slot *s, bool ok)
{
    worker *w = s->w;
    w->failures += !ok;
    if (!w->test->hits_only)
        hist_record(&w->hist, example_now_ns() - s->started);
    atomic_fetch_add_explicit(&w->done, 1, memory_order_relaxed);
}

static void on_reply(const redisReply *reply, int status, slot *s)
{
    finish_request(s, status == 0 && reply->type != REDIS_REPLY_ERROR);
    next_round(s);
}

static void on_client_reply(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    on_reply(reply, status, data);
}

static void on_cluster_reply(rp_cluster *cluster, const redisReply *reply, int status, void *data)
{
    (void)cluster;
    on_reply(reply, status, data);
}

static void on_conn_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    slot *s = data;
    finish_request(s, status == 0 && reply->type != REDIS_REPLY_ERROR);
    if (--s->owed)
        return;
    if (status < 0)
        rp_pool_remove(rp_client_pool(s->w->client), conn, status);
    else
        rp_pool_put(rp_client_pool(s->w->client), conn);
    next_round(s);
}

static int argc_of(const slot *s) { return s->w->test->has_value ? 3 : s->w->test->cmd[0] == 'P' ? 1 : 2; }

/* The mixes: a SET instead of the read, write_pct times in 100. */
static bool pick_write(worker *w)
{
    if (!w->test->write_pct)
        return false;
    w->seed = w->seed * 6364136223846793005ull + 1442695040888963407ull;
    return (w->seed >> 33) % 100 < (uint64_t)w->test->write_pct;
}

/* With -P, a round is PIPELINE commands on one connection of the pool. */
static void on_pipeline_conn(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    (void)pool;
    slot *s = data;
    worker *w = s->w;
    int count = (int)(w->quota - w->issued < w->cfg->pipeline ? w->quota - w->issued : w->cfg->pipeline);
    if (status < 0 || count <= 0) {
        if (conn)
            rp_pool_put(pool, conn);
        w->failures += status < 0;
        return;
    }
    w->issued += count;
    s->owed = count;
    s->started = example_now_ns();
    for (int i = 0; i < count; i++) {
        fill_args(s);
        bool write = pick_write(w);
        s->argv[0] = write ? "SET" : w->test->cmd;
        s->argvlen[0] = strlen(s->argv[0]);
        if (rp_conn_command(conn, on_conn_reply, s, write ? 3 : argc_of(s), s->argv, s->argvlen) < 0)
            on_conn_reply(conn, NULL, -1, s);
    }
}

static int64_t send_command(slot *s, bool cached, int argc)
{
    worker *w = s->w;
    if (w->cluster)
        return rp_cluster_command_ex(w->cluster, cached ? &cluster_cache_command : NULL, on_cluster_reply, s, argc,
                                     s->argv, s->argvlen);
    return rp_client_command_ex(w->client, cached ? &cache_command : NULL, on_client_reply, s, argc, s->argv,
                                s->argvlen);
}

static void next_round(slot *s)
{
    worker *w = s->w;
    if (w->issued >= w->quota)
        return;
    if (w->cfg->pipeline > 1) {
        rp_pool_get(rp_client_pool(w->client), on_pipeline_conn, s);
        return;
    }
    w->issued++;
    if (!w->test->hits_only) {
        fill_args(s);
        s->started = example_now_ns();
    }
    bool write = pick_write(w);
    s->argv[0] = write ? "SET" : w->test->cmd;
    s->argvlen[0] = strlen(s->argv[0]);
    if (send_command(s, w->test->cached && !write, write ? 3 : argc_of(s)) < 0) {
        w->failures++;
        atomic_fetch_add(&w->done, 1);
    }
}

static void cluster_ready(rp_cluster *cluster, const redisReply *reply, int status, void *data)
{
    (void)cluster;
    (void)reply;
    *(int *)data = status < 0 ? status : 1;
}

/* The first command waits for the cluster's layout. */
static int cluster_open(worker *w, const rp_client_options *node)
{
    const char *seeds[] = {w->cfg->addr};
    rp_cluster_options opts;
    rp_cluster_options_init(&opts);
    opts.seeds = seeds;
    opts.nseeds = 1;
    opts.node = *node;
    opts.node.pool.min_idle_conns = 0; /* replicas would get idle connections too */
    int ready = 0, rc = rp_cluster_new(&w->cluster, w->loop, &opts);
    if (rc == 0)
        rc = rp_cluster_command(w->cluster, cluster_ready, &ready, 1, (const char *[]){"PING"}, NULL);
    while (rc == 0 && !ready)
        rp_loop_run(w->loop, RP_RUN_ONCE);
    return rc < 0 ? rc : ready < 0 ? ready : 0;
}

static void slot_init(slot *s, worker *w, int index)
{
    const config *cfg = w->cfg;
    const char *name = w->test->cmd[0] == 'L' ? "mylist" : w->test->cmd[0] == 'I' ? "counter" : "key";
    s->w = w;
    /* A cluster's keys: each in-flight slot's under a hash tag of its own,
     * but the caching tests' and the mixes', shared by every slot (a key
     * read by one is a hit for all) and spread over the slots by their
     * own hash. */
    if (cfg->cluster && !w->test->cached && !w->test->write_pct)
        snprintf(s->prefix, sizeof s->prefix, "%s{%d}", name, index);
    else
        snprintf(s->prefix, sizeof s->prefix, "%s", name);
    snprintf(s->key, sizeof s->key, "%s%s", s->prefix, name[0] == 'm' ? "" : ":__rand_int__");
    s->argv[0] = w->test->cmd;
    s->argvlen[0] = strlen(w->test->cmd);
    s->argv[1] = s->key;
    s->argvlen[1] = strlen(s->key);
    s->argv[2] = w->value;
    s->argvlen[2] = cfg->data_size;
}

static int cache_stats_of(worker *w, rp_cache_stats *out)
{
    return w->cluster ? rp_cluster_cache_stats(w->cluster, out) : rp_client_cache_stats(w->client, out);
}

static double thread_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void warm_reply(worker *w) { w->warming--; }
static void warm_client_reply(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client, (void)reply, (void)status;
    warm_reply(((slot *)data)->w);
}
static void warm_cluster_reply(rp_cluster *cluster, const redisReply *reply, int status, void *data)
{
    (void)cluster, (void)reply, (void)status;
    warm_reply(((slot *)data)->w);
}

/* chit: each slot's key read once (and kept) before the timed run. */
static void warm(worker *w, slot *slots, int n)
{
    for (int i = 0; i < n; i++) {
        slot *s = &slots[i];
        int64_t id = w->cluster ? rp_cluster_command_ex(w->cluster, &cluster_cache_command, warm_cluster_reply, s, 2,
                                                        s->argv, s->argvlen)
                                : rp_client_command_ex(w->client, &cache_command, warm_client_reply, s, 2, s->argv,
                                                       s->argvlen);
        w->warming += id > 0;
    }
    while (w->warming > 0)
        rp_loop_run(w->loop, RP_RUN_ONCE);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    const config *cfg = w->cfg;
    int in_flight = cfg->clients / cfg->loops > 0 ? cfg->clients / cfg->loops : 1;
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = cfg->addr;
    const char *sentinels[] = {cfg->addr};
    if (cfg->sentinel[0]) {
        opts.pool.addr = NULL;
        opts.master_name = cfg->sentinel;
        opts.sentinel_addrs = sentinels;
        opts.sentinel_count = 1;
    }
    opts.pool.pool_size = cfg->pool_size / cfg->loops > 0 ? cfg->pool_size / cfg->loops : 1;
    opts.autopipeline_conns = cfg->autopipeline;
    opts.autopipeline_max_bytes = cfg->autopipeline_max_bytes;
    opts.autopipeline_max_owed = cfg->autopipeline_max_owed;
    opts.pool.min_idle_conns = opts.pool.pool_size;
    opts.pool.pool_timeout_ms = 60000;
    opts.pool.tls = cfg->tls;
    if (w->test->cached)
        opts.cache_bytes = cfg->cache_bytes;
    rp_loop_options loop_opts = {.busy_poll_us = cfg->busy_poll_us};
    /* An embedded loop's fd is asked for before any pool exists, as the
     * docs/embedding.md says: its ring is then set up for a host. */
    if (rp_loop_new(&w->loop, &loop_opts) < 0 || (cfg->embed && rp_loop_fd(w->loop) < 0) ||
        (cfg->cluster ? cluster_open(w, &opts) : rp_client_new(&w->client, w->loop, &opts)) < 0) {
        w->failures = (int)w->quota;
        atomic_store(&w->finished, true);
        return NULL;
    }
    if (w->client) /* a dial error shows as failures */
        example_wait_idle(w->loop, rp_client_pool(w->client), opts.pool.pool_size);
    /* Nothing is cached until the invalidation subscribers are up. */
    for (uint64_t until = example_now_ns() + 5000000000ull;
         w->test->cached && example_now_ns() < until &&
         !(cache_stats_of(w, &w->cache_stats) == 0 && w->cache_stats.subscribed);)
        rp_loop_run(w->loop, RP_RUN_ONCE);
    slot *slots = calloc((size_t)in_flight, sizeof *slots);
    for (int i = 0; i < in_flight; i++)
        slot_init(&slots[i], w, i);
    if (w->test->hits_only)
        warm(w, slots, in_flight);
    rp_cache_stats cache_before = {0};
    if (w->test->cached)
        cache_stats_of(w, &cache_before);
    rp_loop_stats before;
    rp_loop_stats_get(w->loop, &before);
    double cpu_before = thread_cpu_seconds();
    for (int i = 0; i < in_flight; i++)
        next_round(&slots[i]);
    if (cfg->embed)
        cfg->embed(w->loop);
    else
        rp_loop_run(w->loop, RP_RUN_DEFAULT);
    w->run_cpu = thread_cpu_seconds() - cpu_before;
    rp_loop_stats_get(w->loop, &w->loop_stats);
    if (w->test->cached) { /* the timed run's */
        cache_stats_of(w, &w->cache_stats);
        w->cache_stats.hits -= cache_before.hits;
        w->cache_stats.misses -= cache_before.misses;
        w->cache_stats.joined -= cache_before.joined;
    }
    w->loop_stats.enters -= before.enters;
    w->loop_stats.syscalls -= before.syscalls;
    w->loop_stats.sqes -= before.sqes;
    w->loop_stats.iterations -= before.iterations;
    w->loop_stats.recv_ring_fallbacks -= before.recv_ring_fallbacks;
    w->loop_stats.send_zc -= before.send_zc;
    w->loop_stats.send_zc_copied -= before.send_zc_copied;
    if (w->cluster)
        rp_cluster_close(w->cluster, NULL, NULL);
    else
        rp_client_close(w->client, NULL, NULL);
    rp_loop_run(w->loop, RP_RUN_DEFAULT);
    rp_loop_free(w->loop);
    free(slots);
    atomic_store(&w->finished, true);
    return NULL;
}

/* ------------------------------------------------------------ reporting */

static double ms(uint64_t ns) { return (double)ns / 1e6; }

static int run_test(const config *cfg, const test_def *test, const char *value)
{
    worker *workers = calloc((size_t)cfg->loops, sizeof *workers);
    double start = example_seconds(), cpu_start = example_cpu_seconds();
    for (int i = 0; i < cfg->loops; i++) {
        worker *w = &workers[i];
        w->cfg = cfg;
        w->test = test;
        w->value = value;
        w->quota = cfg->requests / cfg->loops + (i < cfg->requests % cfg->loops);
        w->seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        pthread_create(&w->thread, NULL, worker_main, w);
    }
    double last = start;
    for (;;) {
        long done = 0;
        bool all_finished = true;
        for (int i = 0; i < cfg->loops; i++) {
            done += atomic_load(&workers[i].done);
            all_finished &= atomic_load(&workers[i].finished);
        }
        if (all_finished)
            break;
        usleep(20000);
        double t = example_seconds();
        if (!cfg->quiet && !cfg->csv && t - last >= 0.25) {
            fprintf(stderr, "\r%s: rps=%.1f (%ld of %ld)   ", test->name, (double)done / (t - start), done,
                    cfg->requests);
            last = t;
        }
    }
    histogram all = {0};
    rp_loop_stats loops = {0};
    rp_cache_stats cache = {0};
    double run_cpu = 0;
    long completed = 0; /* chit takes no latencies: its count */
    int failures = 0;
    for (int i = 0; i < cfg->loops; i++) {
        pthread_join(workers[i].thread, NULL);
        hist_merge(&all, &workers[i].hist);
        loops.enters += workers[i].loop_stats.enters;
        loops.syscalls += workers[i].loop_stats.syscalls;
        loops.sqes += workers[i].loop_stats.sqes;
        loops.iterations += workers[i].loop_stats.iterations;
        loops.recv_ring_fallbacks += workers[i].loop_stats.recv_ring_fallbacks;
        loops.send_zc += workers[i].loop_stats.send_zc;
        loops.send_zc_copied += workers[i].loop_stats.send_zc_copied;
        failures += workers[i].failures;
        cache.hits += workers[i].cache_stats.hits;
        cache.misses += workers[i].cache_stats.misses;
        cache.joined += workers[i].cache_stats.joined;
        run_cpu += workers[i].run_cpu;
        completed += atomic_load(&workers[i].done);
    }
    if (test->hits_only)
        all.total = (uint64_t)completed;
    double elapsed = example_seconds() - start, cpu = example_cpu_seconds() - cpu_start;
    double rps = (double)all.total / elapsed;
    if (!cfg->quiet && !cfg->csv)
        fprintf(stderr, "\r%*s\r", 60, "");
    if (cfg->csv) {
        printf("\"%s\",\"%.2f\",\"%.3f\",\"%.3f\",\"%.3f\",\"%.3f\",\"%.3f\",\"%.3f\"\n", test->name, rps,
               all.total ? ms(all.sum / all.total) : 0.0, ms(all.min), ms(hist_percentile(&all, 50)),
               ms(hist_percentile(&all, 95)), ms(hist_percentile(&all, 99)), ms(all.max));
    } else if (cfg->quiet && test->hits_only) {
        printf("%s: %.2f requests per second, %.1f ns CPU per hit\n", test->name, rps,
               run_cpu * 1e9 / (double)(cache.hits ? cache.hits : 1));
    } else if (cfg->quiet) {
        printf("%s: %.2f requests per second, p50=%.3f msec\n", test->name, rps, ms(hist_percentile(&all, 50)));
    } else {
        printf("====== %s ======\n", test->name);
        printf("  %ld requests completed in %.2f seconds\n  %d in flight, %d connections, pipeline %d, %d loop(s), "
               "%zu bytes payload\n",
               (long)all.total, elapsed, cfg->clients, cfg->pool_size, cfg->pipeline, cfg->loops, cfg->data_size);
        printf("  throughput: %.2f requests per second\n", rps);
        printf("  latency (msec): avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
               all.total ? ms(all.sum / all.total) : 0.0, ms(hist_percentile(&all, 50)),
               ms(hist_percentile(&all, 90)), ms(hist_percentile(&all, 99)), ms(hist_percentile(&all, 99.9)),
               ms(all.max));
        printf("  client CPU: %.3f s (user+sys), %.2f us per request\n", cpu, cpu * 1e6 / (double)all.total);
        printf("  syscalls: %.3f per request (%.3f io_uring_enter); %.3f SQEs and %.3f loop iterations per request, "
               "%llu receives read into a buffer of their own\n",
               (double)loops.syscalls / (double)all.total, (double)loops.enters / (double)all.total,
               (double)loops.sqes / (double)all.total, (double)loops.iterations / (double)all.total,
               (unsigned long long)loops.recv_ring_fallbacks);
        if (loops.send_zc)
            printf("  zero-copy sends: %llu (%llu of them copied by the kernel)\n", (unsigned long long)loops.send_zc,
                   (unsigned long long)loops.send_zc_copied);
        if (test->cached)
            printf("  cache: %llu hits, %llu misses, %llu joined another's read\n", (unsigned long long)cache.hits,
                   (unsigned long long)cache.misses, (unsigned long long)cache.joined);
        if (test->hits_only) /* the loops' threads over the timed run, rp-bench's own loop included */
            printf("  CPU per hit: %.1f ns (%llu of %ld requests hits)\n",
                   run_cpu * 1e9 / (double)(cache.hits ? cache.hits : 1), (unsigned long long)cache.hits,
                   (long)all.total);
        if (failures)
            printf("  failures: %d\n", failures);
        printf("\n");
    }
    free(workers);
    return failures ? 1 : 0;
}

/* The kernel's high-water mark of the process's resident memory; -1 if
 * /proc cannot tell. */
static long peak_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f) && sscanf(line, "VmHWM: %ld kB", &kb) != 1)
        ;
    if (f)
        fclose(f);
    return kb;
}

/* ------------------------------------------------------------------ main */

static int parse(int argc, char **argv, config *cfg)
{
    static const struct option longs[] = {
        {"csv", no_argument, NULL, 'C'}, {"pool-size", required_argument, NULL, 'S'},
        {"loops", required_argument, NULL, 'L'},
        {"busy-poll", required_argument, NULL, 'B'}, {"embed", required_argument, NULL, 'E'},
        {"autopipeline", optional_argument, NULL, 'A'},
        {"autopipeline-max-bytes", required_argument, NULL, 'M'}, {"cluster", no_argument, NULL, 'K'},
        {"autopipeline-max-owed", required_argument, NULL, 'O'},
        {"cache", optional_argument, NULL, 'R'},
        {"tls", no_argument, NULL, 'T'}, {"cacert", required_argument, NULL, 1},
        {"cacertdir", required_argument, NULL, 2}, {"cert", required_argument, NULL, 3},
        {"key", required_argument, NULL, 4}, {"sni", required_argument, NULL, 5},
        {"insecure", no_argument, NULL, 6},
        {"sentinel", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'H'}, {NULL, 0, NULL, 0}};
    char host[200] = "127.0.0.1";
    int port = 6379, opt;
    cfg->addr[0] = '\0';
    while ((opt = getopt_long(argc, argv, "h:p:a:c:n:t:d:P:r:q", longs, NULL)) != -1) {
        switch (opt) {
        case 'h': snprintf(host, sizeof host, "%s", optarg); break;
        case 'p': port = atoi(optarg); break;
        case 'a': snprintf(cfg->addr, sizeof cfg->addr, "%s", optarg); break;
        case 'c': cfg->clients = atoi(optarg); break;
        case 'n': cfg->requests = atol(optarg); break;
        case 't': snprintf(cfg->tests, sizeof cfg->tests, "%s", optarg); break;
        case 'd': cfg->data_size = (size_t)atol(optarg); break;
        case 'P': cfg->pipeline = atoi(optarg); break;
        case 'r': cfg->keyspace = atol(optarg); break;
        case 'q': cfg->quiet = true; break;
        case 'C': cfg->csv = true; break;
        case 'S': cfg->pool_size = atoi(optarg); break;
        case 'L': cfg->loops = atoi(optarg); break;
        case 'B': cfg->busy_poll_us = (unsigned)atoi(optarg); break;
        case 'A': cfg->autopipeline = optarg ? atoi(optarg) : 1; break;
        case 'M': cfg->autopipeline_max_bytes = (size_t)atol(optarg); break;
        case 'O': cfg->autopipeline_max_owed = (unsigned)atol(optarg); break;
        case 'K': cfg->cluster = true; break;
        case 'R': cfg->cache_bytes = optarg ? (size_t)atol(optarg) : 64u << 20; break;
        case 'T': cfg->tls.enable = true; break;
        case 1: cfg->tls.ca_file = optarg; break;
        case 2: cfg->tls.ca_dir = optarg; break;
        case 3: cfg->tls.cert_file = optarg; break;
        case 4: cfg->tls.key_file = optarg; break;
        case 5: cfg->tls.server_name = optarg; break;
        case 6: cfg->tls.insecure = true; break;
        case 'N': snprintf(cfg->sentinel, sizeof cfg->sentinel, "%s", optarg); break;
        case 'E':
            if (!(cfg->embed = example_host_find(optarg))) {
                fprintf(stderr, "rp-bench: --embed takes epoll, libuv, libevent or uring, not %s\n", optarg);
                return -1;
            }
            break;
        case 'H': printf("%s", usage); exit(0);
        default: fprintf(stderr, "%s", usage); return -1;
        }
    }
    if (!cfg->addr[0])
        snprintf(cfg->addr, sizeof cfg->addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    if (!cfg->pool_size)
        cfg->pool_size = cfg->autopipeline ? cfg->autopipeline * cfg->loops : cfg->clients;
    if (cfg->clients < 1 || cfg->requests < 1 || cfg->pipeline < 1 || cfg->loops < 1 || cfg->pool_size < 1 ||
        cfg->loops > cfg->clients || cfg->autopipeline < 0) {
        fprintf(stderr, "rp-bench: -c, -n, -P, --loops and --pool-size must be positive, --loops <= -c\n");
        return -1;
    }
    if (cfg->cluster && cfg->sentinel[0]) {
        fprintf(stderr, "rp-bench: --cluster and --sentinel exclude each other\n");
        return -1;
    }
    if (cfg->cache_bytes && cfg->pipeline > 1) {
        fprintf(stderr, "rp-bench: --cache is not supported with -P\n");
        return -1;
    }
    if (cfg->cluster && cfg->pipeline > 1) {
        fprintf(stderr, "rp-bench: -P is not supported with --cluster (try --autopipeline)\n");
        return -1;
    }
    return 0;
}

static bool wanted(const config *cfg, const char *flag)
{
    if (!cfg->tests[0])
        return true;
    char list[130];
    snprintf(list, sizeof list, ",%s,", cfg->tests);
    char needle[32];
    snprintf(needle, sizeof needle, ",%s,", flag);
    return strstr(list, needle) != NULL;
}

int main(int argc, char **argv)
{
    config cfg = {.clients = 50, .requests = 100000, .data_size = 3, .pipeline = 1, .loops = 1};
    if (parse(argc, argv, &cfg) < 0)
        return 2;
    char *value = malloc(cfg.data_size + 1);
    memset(value, 'x', cfg.data_size);
    if (cfg.csv)
        printf("\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\","
               "\"p99_latency_ms\",\"max_latency_ms\"\n");
    int rc = 0;
    for (size_t i = 0; i < sizeof all_tests / sizeof all_tests[0]; i++)
        if (wanted(&cfg, all_tests[i].flag) && (!all_tests[i].cached || cfg.cache_bytes))
            rc |= run_test(&cfg, &all_tests[i], value);
    if (!cfg.csv)
        printf("peak RSS (VmHWM): %ld kB\n", peak_rss_kb());
    free(value);
    return rc;
}
