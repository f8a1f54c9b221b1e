/* Chaos soak: one rp_client under a mixed workload while the server is
 * killed and restarted, stopped, has its clients killed and refuses new
 * ones. Nothing may be lost, applied twice or called back twice.
 *
 * RP_CHAOS_SECONDS (default 30) sets how long faults are injected;
 * RP_CHAOS_SEED replays a run (the seed is printed; it fixes the workload's
 * and the injector's choices, not the timing, so a replay is likely but
 * not certain to hit the same interleaving); RP_CHAOS_VERBOSE=1 logs each
 * fault.
 *
 * The loop thread runs the workload. A second thread injects the faults:
 * it only sends signals, forks redis-server (fx_redis_restart), runs
 * blocking hiredis commands on sockets of its own and calls rp_loop_post
 * (a heartbeat every 50 ms, so the loop's blocking runs return and it can
 * watch the clock). It lives until the checks are done: redis-server dies
 * with the thread that forked it (PR_SET_PDEATHSIG).
 *
 * Counters survive a SIGKILL because the server runs with
 * --appendonly yes --appendfsync always: Redis writes (and fsyncs) the AOF
 * before it sends any reply, so every acknowledged INCR is in the file when
 * the client sees it, and the restarted server loads it. Only the process
 * is killed, never the machine, so the file may live on /dev/shm (or /tmp),
 * in a fresh directory removed at the end. The counters are then checked
 * over the whole run, not per epoch between kills. */
#define _XOPEN_SOURCE 700 /* nftw */
#define _DEFAULT_SOURCE
#include "fixture.h"

#include <errno.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Every wait below has its own deadline; this only catches a hang. The
 * soak refuses RP_CHAOS_SECONDS that would not fit. meson's own timeout
 * (300 s) bounds the default 30 s run in CI. */
#define SUITE_TIMEOUT_S 3600
#define SLACK_S 120 /* after the faults: recovery, drain, checks, close */

#define POOL_SIZE 8
#define MAX_IN_FLIGHT 64
#define SLOTS (MAX_IN_FLIGHT + 1) /* one more for the recovery PING */
#define COUNTERS 16
#define KEYS 1000
#define BIG_KEYS 4
#define BIG_LEN (256 * 1024)
#define RECOVERY_BOUND_MS 5000
#define DRAIN_BOUND_MS 30000

static char aof_dir[64];
static const char *redis_args[] = {"--appendonly", "yes", "--appendfsync", "always",
                                   "--dir", aof_dir, NULL};

static void chaos_setup(void)
{
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                           ? "/dev/shm"
                           : "/tmp";
    snprintf(aof_dir, sizeof aof_dir, "%s/ringpool-chaos-XXXXXX", base);
    cr_assert_not_null(mkdtemp(aof_dir), "mkdtemp: %s", strerror(errno));
    fx_redis_start_with(redis_args);
    fx_setup_no_redis();
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void chaos_teardown(void)
{
    fx_teardown(); /* stops redis, checks fds */
    nftw(aof_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(chaos, .init = chaos_setup, .fini = chaos_teardown, .timeout = SUITE_TIMEOUT_S);

/* ------------------------------------------------------------- helpers */

static uint64_t rng_next(uint64_t *state) /* splitmix64 */
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static long vm_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* A growable bit set: which command ids were called back, which counter
 * values were acknowledged. */
typedef struct bits {
    uint64_t *words;
    size_t count;
} bits;

static bool bits_test(const bits *b, uint64_t i)
{
    return i / 64 < b->count && (b->words[i / 64] >> (i % 64) & 1);
}

/* Sets bit i; returns whether it was set already. */
static bool bits_set(bits *b, uint64_t i)
{
    if (i / 64 >= b->count) {
        size_t count = b->count ? b->count : 1024;
        while (i / 64 >= count)
            count *= 2;
        uint64_t *words = realloc(b->words, count * sizeof *words);
        cr_assert_not_null(words);
        memset(words + b->count, 0, (count - b->count) * sizeof *words);
        b->words = words;
        b->count = count;
    }
    bool was = b->words[i / 64] >> (i % 64) & 1;
    b->words[i / 64] |= 1ull << (i % 64);
    return was;
}

static void bits_free(bits *b)
{
    free(b->words);
    *b = (bits){0};
}

/* ------------------------------------------------------------ workload */

typedef enum { K_SET, K_GET, K_INCR, K_SET_BIG, K_GET_BIG, K_PING, K_KINDS } op_kind;
static const char *const kind_names[K_KINDS] = {"set", "get", "incr", "set_big", "get_big", "ping"};

/* How a command failed. "unknown" codes may come after the command's bytes
 * reached the server: it may have run. -ETIMEDOUT is also a dial's timeout
 * (the command did not run) but cannot be told apart, so it counts as
 * unknown: that only widens the upper bound. Any code not listed also
 * counts as unknown. */
typedef enum {
    E_EOF, E_RESET, E_PIPE, E_TIMEDOUT, E_PROTO, E_MSGSIZE, E_CANCELED, E_ABORTED,
    E_REFUSED, E_POOLTIMEOUT, E_CLOSED, E_EXHAUSTED, E_OTHER, E_REPLY, E_KINDS
} err_kind;
static const struct {
    int code;
    const char *name;
    bool unknown;
} err_table[E_KINDS] = {
    [E_EOF] = {RP_EEOF, "eof", true},
    [E_RESET] = {-ECONNRESET, "reset", true},
    [E_PIPE] = {-EPIPE, "pipe", true},
    [E_TIMEDOUT] = {-ETIMEDOUT, "timeout", true},
    [E_PROTO] = {-EPROTO, "proto", true},
    [E_MSGSIZE] = {-EMSGSIZE, "msgsize", true},
    [E_CANCELED] = {-ECANCELED, "canceled", true},
    [E_ABORTED] = {-ECONNABORTED, "aborted", true},
    [E_REFUSED] = {-ECONNREFUSED, "refused", false},
    [E_POOLTIMEOUT] = {RP_EPOOLTIMEOUT, "pool_timeout", false},
    [E_CLOSED] = {RP_ECLOSED, "closed", false},
    [E_EXHAUSTED] = {RP_EPOOLEXHAUSTED, "exhausted", false},
    [E_OTHER] = {0, "other", true},
    [E_REPLY] = {0, "error_reply", false}, /* -ERR ...: the server refused it unrun */
};

static err_kind classify(int status)
{
    for (int i = 0; i < E_OTHER; i++)
        if (err_table[i].code == status)
            return (err_kind)i;
    return E_OTHER;
}

typedef struct slot {
    uint64_t id; /* 0: free */
    op_kind kind;
    unsigned key;
} slot;

typedef struct counter {
    uint64_t acked, unknown, not_run;
    long long max_acked;
    uint64_t duplicate_values; /* the same INCR result acknowledged twice */
    bits values;               /* INCR results acknowledged */
} counter;

static struct {
    rp_loop *loop;
    rp_client *client;
    uint64_t rng;
    char *big; /* a 256 KiB value, its key's prefix rewritten per SET */
    slot slots[SLOTS];
    int in_flight;
    /* The callback data is the command's id, not a pointer: a second call
     * for the same command is counted, never a use after free. */
    uint64_t issued, refused_at_issue, callbacks, double_calls, bad_ids;
    uint64_t issued_by_kind[K_KINDS], ok_by_kind[K_KINDS];
    uint64_t ok, errors[E_KINDS], bursts;
    int first_other_code, first_refusal_code;
    uint64_t mismatches;
    char first_mismatch[200], first_error_reply[200];
    bits called;
    counter counters[COUNTERS];
    /* The recovery probe. */
    bool probe_pending;
    uint64_t probe_ok_ms;
    int probes, probe_last_status;
    /* rp_pool_stats sampled every iteration. */
    uint64_t stats_samples, stats_bad;
    char first_stats_bad[200];
} W;

static void note_mismatch(const slot *s, const char *what, const redisReply *reply)
{
    if (!W.mismatches++)
        snprintf(W.first_mismatch, sizeof W.first_mismatch, "%s key %u: %s (reply type %d, \"%.60s\")",
                 kind_names[s->kind], s->key, what, reply ? reply->type : -1,
                 reply && reply->str ? reply->str : "");
}

static bool has_prefix(const redisReply *reply, const char *prefix)
{
    size_t len = strlen(prefix);
    return reply->len >= len && memcmp(reply->str, prefix, len) == 0;
}

static void judge_reply(const slot *s, const redisReply *reply)
{
    char prefix[32];
    bool ok = false;
    switch (s->kind) {
    case K_SET:
    case K_SET_BIG:
        ok = reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0;
        break;
    case K_GET:
        snprintf(prefix, sizeof prefix, "v:k:%u:", s->key);
        ok = reply->type == REDIS_REPLY_NIL || (reply->type == REDIS_REPLY_STRING && has_prefix(reply, prefix));
        break;
    case K_GET_BIG:
        snprintf(prefix, sizeof prefix, "B:big:%u:", s->key);
        ok = reply->type == REDIS_REPLY_NIL || (reply->type == REDIS_REPLY_STRING && reply->len == BIG_LEN &&
                                                has_prefix(reply, prefix) && reply->str[BIG_LEN - 1] == '.');
        break;
    case K_INCR:
        ok = reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
        if (ok) {
            counter *c = &W.counters[s->key];
            c->acked++;
            if (bits_set(&c->values, (uint64_t)reply->integer))
                c->duplicate_values++;
            if (reply->integer > c->max_acked)
                c->max_acked = reply->integer;
        }
        break;
    case K_PING:
        ok = reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
        if (ok && !W.probe_ok_ms)
            W.probe_ok_ms = fx_now_ms();
        break;
    default:
        break;
    }
    if (ok) {
        W.ok++;
        W.ok_by_kind[s->kind]++;
    } else {
        note_mismatch(s, "unexpected reply", reply);
    }
}

static void on_reply(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    uint64_t id = (uint64_t)(uintptr_t)data;
    if (id == 0 || id > W.issued) {
        W.bad_ids++;
        return;
    }
    if (bits_set(&W.called, id)) {
        W.double_calls++;
        return;
    }
    W.callbacks++;
    slot *s = NULL;
    for (int i = 0; i < SLOTS && !s; i++)
        if (W.slots[i].id == id)
            s = &W.slots[i];
    cr_assert_not_null(s, "command %lu has no slot", (unsigned long)id);
    slot done = *s;
    s->id = 0;
    W.in_flight--;
    if (done.kind == K_PING) {
        W.probe_pending = false;
        W.probe_last_status = status;
    }

    if (status == 0 && !reply) {
        note_mismatch(&done, "status 0 without a reply", NULL);
    } else if (status == 0 && reply->type == REDIS_REPLY_ERROR) {
        /* The server refused it (max clients, LOADING): it did not run. */
        W.errors[E_REPLY]++;
        if (!W.first_error_reply[0])
            snprintf(W.first_error_reply, sizeof W.first_error_reply, "%s", reply->str);
        if (done.kind == K_INCR)
            W.counters[done.key].not_run++;
    } else if (status == 0) {
        judge_reply(&done, reply);
    } else {
        err_kind e = classify(status);
        W.errors[e]++;
        if (e == E_OTHER && !W.first_other_code)
            W.first_other_code = status;
        if (done.kind == K_INCR) {
            if (err_table[e].unknown)
                W.counters[done.key].unknown++;
            else
                W.counters[done.key].not_run++;
        }
    }
}

/* Issues one command; false if no slot is free or the client refused it. */
static bool issue(op_kind kind)
{
    slot *s = NULL;
    for (int i = 0; i < SLOTS && !s; i++)
        if (!W.slots[i].id)
            s = &W.slots[i];
    if (!s)
        return false;
    char key[32], value[64];
    const char *argv[3];
    size_t argvlen[3];
    int argc = 2;
    unsigned n = 0;
    switch (kind) {
    case K_SET:
    case K_GET:
        n = (unsigned)(rng_next(&W.rng) % KEYS);
        snprintf(key, sizeof key, "k:%u", n);
        if (kind == K_SET) {
            snprintf(value, sizeof value, "v:k:%u:%016llx", n, (unsigned long long)rng_next(&W.rng));
            argv[2] = value;
            argvlen[2] = strlen(value);
            argc = 3;
        }
        argv[0] = kind == K_SET ? "SET" : "GET";
        break;
    case K_INCR:
        n = (unsigned)(rng_next(&W.rng) % COUNTERS);
        snprintf(key, sizeof key, "ctr:%u", n);
        argv[0] = "INCR";
        break;
    case K_SET_BIG:
    case K_GET_BIG:
        n = (unsigned)(rng_next(&W.rng) % BIG_KEYS);
        snprintf(key, sizeof key, "big:%u", n);
        argv[0] = kind == K_SET_BIG ? "SET" : "GET";
        if (kind == K_SET_BIG) {
            memcpy(W.big, "B:big:", 6); /* the client copies the arguments */
            W.big[6] = (char)('0' + n);
            W.big[7] = ':';
            argv[2] = W.big;
            argvlen[2] = BIG_LEN;
            argc = 3;
        }
        break;
    case K_PING:
    default:
        argv[0] = "PING";
        argc = 1;
        break;
    }
    argv[1] = key;
    argvlen[1] = strlen(key);
    argvlen[0] = strlen(argv[0]);
    uint64_t id = W.issued + 1;
    *s = (slot){.id = id, .kind = kind, .key = n};
    W.issued = id; /* before the call: ids above W.issued are bogus */
    int rc = rp_client_command(W.client, on_reply, (void *)(uintptr_t)id, argc, argv, argvlen);
    if (rc < 0) {
        /* Never called back: the id is marked as answered. */
        s->id = 0;
        bits_set(&W.called, id);
        W.callbacks++;
        W.refused_at_issue++;
        if (!W.first_refusal_code)
            W.first_refusal_code = rc;
        return false;
    }
    W.issued_by_kind[kind]++;
    W.in_flight++;
    return true;
}

static op_kind pick_kind(void)
{
    unsigned r = (unsigned)(rng_next(&W.rng) % 1000);
    if (r < 4)
        return K_SET_BIG;
    if (r < 8)
        return K_GET_BIG;
    if (r < 408)
        return K_INCR;
    if (r < 700)
        return K_SET;
    return K_GET;
}

/* Keeps MAX_IN_FLIGHT commands in flight. Now and then a burst: 16-48
 * commands issued back to back in one go, once there is room for all. */
static unsigned burst_wanted;
static void refill(void)
{
    while (W.in_flight < MAX_IN_FLIGHT) {
        if (burst_wanted) {
            if (MAX_IN_FLIGHT - W.in_flight < (int)burst_wanted)
                return;
            W.bursts++;
            for (; burst_wanted; burst_wanted--)
                issue(pick_kind());
            continue;
        }
        if (rng_next(&W.rng) % 200 == 0) {
            burst_wanted = 16 + (unsigned)(rng_next(&W.rng) % 33);
            continue;
        }
        if (!issue(pick_kind()))
            return;
    }
}

static void sample_stats(void)
{
    rp_pool *pool = rp_client_pool(W.client);
    rp_stats st;
    rp_pool_stats(pool, &st);
    W.stats_samples++;
    int len = rp_pool_len(pool), idle = rp_pool_idle_len(pool);
    if (st.idle_conns > st.total_conns || (int)st.total_conns != len || (int)st.idle_conns != idle) {
        if (!W.stats_bad++)
            snprintf(W.first_stats_bad, sizeof W.first_stats_bad,
                     "total_conns %u idle_conns %u, rp_pool_len %d rp_pool_idle_len %d", st.total_conns,
                     st.idle_conns, len, idle);
    }
}

/* ------------------------------------------------------------ injector */

typedef enum { F_KILL, F_STOP, F_CLIENT_KILL, F_MAXCLIENTS, F_KINDS } fault_kind;
static const char *const fault_names[F_KINDS] = {"kill_restart", "stop_cont", "client_kill", "maxclients"};

static struct {
    pthread_t thread;
    uint64_t seed;
    bool verbose;
    atomic_bool stop_faults, faults_done, exit;
    atomic_uint_fast64_t last_fault_end_ms;
    uint64_t count[F_KINDS];
    uint64_t clients_killed, admin_errors, stopped_ms;
    char first_admin_error[200];
    bool maxclients_stuck; /* could not restore maxclients */
} I;

static void heartbeat(void *arg) { (void)arg; }

/* Sleeps, posting a heartbeat to the loop every 50 ms; false if
 * interruptible and stop_faults cut it short. */
static bool nap_or_stop(unsigned ms, bool interruptible)
{
    uint64_t until = fx_now_ms() + ms;
    for (uint64_t now = fx_now_ms(); now < until; now = fx_now_ms()) {
        if (interruptible && atomic_load(&I.stop_faults))
            return false;
        rp_loop_post(W.loop, heartbeat, NULL);
        uint64_t left = until - now;
        usleep((useconds_t)(left < 50 ? left : 50) * 1000);
    }
    return true;
}

static void nap(unsigned ms) { nap_or_stop(ms, false); }

static void admin_error(const char *what, const redisContext *c, const redisReply *reply)
{
    if (!I.admin_errors++)
        snprintf(I.first_admin_error, sizeof I.first_admin_error, "%s: %s", what,
                 reply ? reply->str : c ? c->errstr : "no context");
}

static redisContext *admin_connect(void)
{
    redisContext *c = redisConnectWithTimeout("127.0.0.1", fx_redis_port, (struct timeval){.tv_sec = 1});
    if (!c || c->err) {
        admin_error("connect", c, NULL);
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, (struct timeval){.tv_sec = 2});
    return c;
}

/* Runs one command on c; true unless it failed or got an error reply. */
static bool admin_run(redisContext *c, const char *cmd, long long *integer)
{
    char words[128];
    const char *argv[8];
    int argc = 0;
    snprintf(words, sizeof words, "%s", cmd);
    for (char *save = NULL, *w = strtok_r(words, " ", &save); w && argc < 8; w = strtok_r(NULL, " ", &save))
        argv[argc++] = w;
    redisReply *reply = redisCommandArgv(c, argc, argv, NULL);
    bool ok = reply && reply->type != REDIS_REPLY_ERROR;
    if (!ok)
        admin_error(cmd, c, reply);
    if (ok && integer && reply->type == REDIS_REPLY_INTEGER)
        *integer = reply->integer;
    if (reply)
        freeReplyObject(reply);
    return ok;
}

static void fault_client_kill(void)
{
    redisContext *c = admin_connect();
    long long killed = 0;
    if (c && admin_run(c, "CLIENT KILL TYPE normal", &killed)) /* SKIPME yes: not this one */
        I.clients_killed += (uint64_t)killed;
    if (c)
        redisFree(c);
}

/* maxclients 1 refuses every new connection while ours is open; the same
 * connection then restores it (a new one would be refused too). */
static void fault_maxclients(void)
{
    redisContext *c = admin_connect();
    if (!c)
        return;
    if (admin_run(c, "CONFIG SET maxclients 1", NULL)) {
        nap(300);
        bool restored = false;
        for (int i = 0; i < 5 && !restored; i++)
            restored = admin_run(c, "CONFIG SET maxclients 10000", NULL);
        I.maxclients_stuck = !restored;
    }
    redisFree(c);
}

static void *inject(void *arg)
{
    (void)arg;
    uint64_t rng = I.seed ^ 0x5deece66dull;
    /* When told to stop, one last fault at once: the recovery measured
     * after it then starts from a fault, not from a quiet spell. */
    for (bool last = false; !last && !I.maxclients_stuck;) {
        last = !nap_or_stop(300 + (unsigned)(rng_next(&rng) % 1201), true);
        fault_kind f = (fault_kind)(rng_next(&rng) % F_KINDS);
        unsigned stop_ms = 100 + (unsigned)(rng_next(&rng) % 1901);
        uint64_t start = fx_now_ms();
        switch (f) {
        case F_KILL:
            fx_redis_restart(); /* SIGKILL, then a new server on the same port loads the AOF */
            break;
        case F_STOP:
            kill(fx_redis_pid(), SIGSTOP);
            nap(stop_ms);
            kill(fx_redis_pid(), SIGCONT);
            I.stopped_ms += stop_ms;
            break;
        case F_CLIENT_KILL:
            fault_client_kill();
            break;
        case F_MAXCLIENTS:
        default:
            fault_maxclients();
            break;
        }
        I.count[f]++;
        uint64_t end = fx_now_ms();
        atomic_store(&I.last_fault_end_ms, end);
        if (I.verbose)
            fprintf(stderr, "chaos: fault %s took %lu ms\n", fault_names[f], (unsigned long)(end - start));
    }
    atomic_store(&I.faults_done, true);
    while (!atomic_load(&I.exit))
        nap(50);
    return NULL;
}

/* ---------------------------------------------------------------- test */

static uint64_t env_u64(const char *name, uint64_t fallback)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : fallback;
}

static long rss_max_kb;
static uint64_t rss_sampled_ms;

/* Runs the loop once, then lets the workload catch up. */
static void step(bool workload)
{
    rp_loop_run(W.loop, RP_RUN_ONCE);
    sample_stats();
    if (fx_now_ms() - rss_sampled_ms >= 1000) {
        rss_sampled_ms = fx_now_ms();
        long rss = vm_rss_kb();
        rss_max_kb = rss > rss_max_kb ? rss : rss_max_kb;
    }
    if (workload)
        refill();
}

static bool closed;
static void on_closed(rp_client *client, void *data)
{
    (void)client;
    (void)data;
    closed = true;
}

Test(chaos, client_survives_faults_and_loses_nothing)
{
    uint64_t seconds = env_u64("RP_CHAOS_SECONDS", 30);
    cr_assert_leq(seconds + SLACK_S, SUITE_TIMEOUT_S, "RP_CHAOS_SECONDS=%lu does not fit the suite's timeout",
                  (unsigned long)seconds);
    I.seed = env_u64("RP_CHAOS_SEED", fx_now_ms() ^ ((uint64_t)getpid() << 32));
    I.verbose = env_u64("RP_CHAOS_VERBOSE", 0) != 0;
    W.rng = I.seed;
    fprintf(stderr, "chaos: seed %lu, %lu s of faults (RP_CHAOS_SEED=%lu RP_CHAOS_SECONDS=%lu replays it)\n",
            (unsigned long)I.seed, (unsigned long)seconds, (unsigned long)I.seed, (unsigned long)seconds);
    long rss_start = vm_rss_kb();
    W.big = malloc(BIG_LEN);
    cr_assert_not_null(W.big);
    memset(W.big, 'x', BIG_LEN);
    W.big[BIG_LEN - 1] = '.';

    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = fx_redis_addr;
    opts.pool.pool_size = POOL_SIZE;
    opts.pool.read_timeout_ms = 400;
    opts.pool.write_timeout_ms = 400;
    opts.pool.dial_timeout_ms = 500;
    opts.pool.pool_timeout_ms = 1000;
    opts.max_retries = 3;
    /* RP_CHAOS_RETRY_UNSAFE=1 restores go-redis's rule (retry INCRs whose
     * outcome is unknown): the "applied twice" check must then fail,
     * which shows that it can. */
    opts.retry_unsafe = env_u64("RP_CHAOS_RETRY_UNSAFE", 0) != 0;
    cr_assert_eq(rp_loop_new(&W.loop, NULL), 0);
    cr_assert_eq(rp_client_new(&W.client, W.loop, &opts), 0);
    cr_assert_eq(pthread_create(&I.thread, NULL, inject, NULL), 0);

    /* Faults and workload. */
    uint64_t start = fx_now_ms(), end = start + seconds * 1000;
    refill();
    while (fx_now_ms() < end)
        step(true);
    /* The fault under way ends; the workload runs through it. */
    atomic_store(&I.stop_faults, true);
    uint64_t faults_deadline = fx_now_ms() + 10000;
    while (!atomic_load(&I.faults_done) && fx_now_ms() < faults_deadline)
        step(true);
    cr_assert(atomic_load(&I.faults_done), "the injector did not finish its last fault");
    uint64_t faults_end = fx_now_ms();
    uint64_t last_fault_ms = atomic_load(&I.last_fault_end_ms);
    if (!last_fault_ms)
        last_fault_ms = faults_end;

    /* Recovery: PINGs, one at a time, from the end of the last fault until
     * one is answered, while the workload's commands drain. */
    uint64_t recovery_deadline = last_fault_ms + 2 * RECOVERY_BOUND_MS;
    while (!W.probe_ok_ms && fx_now_ms() < recovery_deadline) {
        if (!W.probe_pending) {
            W.probes++;
            W.probe_pending = issue(K_PING);
        }
        step(false);
    }
    long recovery_ms = W.probe_ok_ms ? (long)(W.probe_ok_ms - last_fault_ms) : -1;

    /* Every command ends. */
    uint64_t drain_deadline = fx_now_ms() + DRAIN_BOUND_MS;
    while (W.in_flight && fx_now_ms() < drain_deadline)
        step(false);
    int stuck = W.in_flight;
    uint64_t missing = 0;
    for (uint64_t id = 1; id <= W.issued; id++)
        missing += !bits_test(&W.called, id);

    /* Settle: idle connections only, within pool_size. */
    fx_run_for(W.loop, 300);
    rp_pool *pool = rp_client_pool(W.client);
    rp_stats st;
    rp_pool_stats(pool, &st);
    int pool_len = rp_pool_len(pool), idle_len = rp_pool_idle_len(pool);
    uint32_t misuse = rp_pool_misuse_count(pool);

    /* The counters, read on a socket of our own. */
    long long server_value[COUNTERS];
    bool read_ok = true;
    redisContext *c = redisConnectWithTimeout("127.0.0.1", fx_redis_port, (struct timeval){.tv_sec = 2});
    cr_assert(c && !c->err, "cannot connect to read the counters");
    redisSetTimeout(c, (struct timeval){.tv_sec = 5});
    for (int i = 0; i < COUNTERS; i++) {
        redisReply *r = redisCommand(c, "GET ctr:%d", i);
        server_value[i] = r && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
        read_ok = read_ok && r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL);
        if (r)
            freeReplyObject(r);
    }
    redisFree(c);

    /* The injector's redis must outlive the reads above. */
    atomic_store(&I.exit, true);
    pthread_join(I.thread, NULL);

    closed = false;
    cr_assert_eq(rp_client_close(W.client, on_closed, NULL), 0);
    bool closed_in_time = fx_run_until(W.loop, &closed, 5000);
    int free_rc = closed_in_time ? rp_loop_free(W.loop) : -1;
    long rss_end = vm_rss_kb();

    /* The summary. */
    uint64_t acked = 0, unknown = 0, not_run = 0, faults = 0, errors = 0;
    long long server_total = 0;
    size_t own_bytes = W.called.count * sizeof(uint64_t);
    for (int i = 0; i < COUNTERS; i++) {
        server_total += server_value[i];
        own_bytes += W.counters[i].values.count * sizeof(uint64_t);
        acked += W.counters[i].acked;
        unknown += W.counters[i].unknown;
        not_run += W.counters[i].not_run;
    }
    char errs[512] = "", flts[256] = "", kinds[256] = "";
    size_t len = 0;
    for (int i = 0; i < E_KINDS; i++) {
        errors += W.errors[i];
        if (W.errors[i])
            len += (size_t)snprintf(errs + len, sizeof errs - len, "%s%s=%lu", len ? " " : "", err_table[i].name,
                                    (unsigned long)W.errors[i]);
    }
    len = 0;
    for (int i = 0; i < F_KINDS; i++) {
        faults += I.count[i];
        len += (size_t)snprintf(flts + len, sizeof flts - len, "%s%s=%lu", len ? " " : "", fault_names[i],
                                (unsigned long)I.count[i]);
    }
    len = 0;
    for (int i = 0; i < K_KINDS; i++)
        len += (size_t)snprintf(kinds + len, sizeof kinds - len, "%s%s=%lu/%lu", len ? " " : "", kind_names[i],
                                (unsigned long)W.ok_by_kind[i], (unsigned long)W.issued_by_kind[i]);
    fprintf(stderr,
            "chaos: seed=%lu secs=%lu issued=%lu ok=%lu errors=%lu {%s} ok/issued {%s} bursts=%lu "
            "incr {acked=%lu unknown=%lu not_run=%lu on_server=%lld} faults=%lu {%s} clients_killed=%lu stopped_ms=%lu "
            "admin_errors=%lu recovery_ms=%ld probes=%d pool {total=%u idle=%u misses=%u timeouts=%u stale=%u "
            "dial_errors=%u} rss_kb %ld -> %ld (max %ld, of which the test's own bit sets %lu) elapsed_ms=%lu\n",
            (unsigned long)I.seed, (unsigned long)seconds, (unsigned long)W.issued, (unsigned long)W.ok,
            (unsigned long)errors, errs, kinds, (unsigned long)W.bursts, (unsigned long)acked,
            (unsigned long)unknown, (unsigned long)not_run, server_total, (unsigned long)faults, flts,
            (unsigned long)I.clients_killed, (unsigned long)I.stopped_ms, (unsigned long)I.admin_errors,
            recovery_ms, W.probes, st.total_conns, st.idle_conns, st.misses, st.timeouts, st.stale_conns,
            st.dial_errors, rss_start, rss_end, rss_max_kb, (unsigned long)(own_bytes / 1024), (unsigned long)(fx_now_ms() - start));
    if (I.admin_errors)
        fprintf(stderr, "chaos: first admin error: %s\n", I.first_admin_error);
    if (W.first_error_reply[0])
        fprintf(stderr, "chaos: first error reply: %s\n", W.first_error_reply);
    if (W.first_other_code)
        fprintf(stderr, "chaos: first unexpected code: %d (%s)\n", W.first_other_code,
                rp_strerror(W.first_other_code));
    for (int i = 0; i < COUNTERS; i++) {
        counter *k = &W.counters[i];
        if (server_value[i] < (long long)k->acked || server_value[i] > (long long)(k->acked + k->unknown) ||
            k->duplicate_values || server_value[i] < k->max_acked)
            fprintf(stderr, "chaos: ctr:%d server=%lld acked=%lu unknown=%lu not_run=%lu max_acked=%lld dup=%lu\n",
                    i, server_value[i], (unsigned long)k->acked, (unsigned long)k->unknown,
                    (unsigned long)k->not_run, k->max_acked, (unsigned long)k->duplicate_values);
    }

    /* Every callback ran exactly once. */
    cr_expect_eq(stuck, 0, "%d commands never called back within %d ms of the end", stuck, DRAIN_BOUND_MS);
    cr_expect_eq(missing, 0, "%lu commands never called back", (unsigned long)missing);
    cr_expect_eq(W.double_calls, 0, "%lu callbacks ran a second time", (unsigned long)W.double_calls);
    cr_expect_eq(W.bad_ids, 0, "%lu callbacks for commands never issued", (unsigned long)W.bad_ids);
    cr_expect_eq(W.callbacks, W.issued, "%lu callbacks for %lu commands", (unsigned long)W.callbacks,
                 (unsigned long)W.issued);
    cr_expect_eq(W.refused_at_issue, 0, "rp_client_command refused %lu commands (first: %s)",
                 (unsigned long)W.refused_at_issue, rp_strerror(W.first_refusal_code));
    /* Replies went to their own commands. */
    cr_expect_eq(W.mismatches, 0, "%lu wrong replies; first: %s", (unsigned long)W.mismatches, W.first_mismatch);
    /* No acknowledged INCR lost, none applied twice. */
    cr_expect(read_ok, "could not read the counters back");
    for (int i = 0; i < COUNTERS; i++) {
        counter *k = &W.counters[i];
        cr_expect_geq(server_value[i], (long long)k->acked, "ctr:%d: %lld on the server, %lu acknowledged: lost", i,
                      server_value[i], (unsigned long)k->acked);
        cr_expect_leq(server_value[i], (long long)(k->acked + k->unknown),
                      "ctr:%d: %lld on the server, only %lu acknowledged + %lu unknown: applied twice", i,
                      server_value[i], (unsigned long)k->acked, (unsigned long)k->unknown);
        cr_expect_geq(server_value[i], k->max_acked, "ctr:%d: %lld on the server, INCR answered %lld", i,
                      server_value[i], k->max_acked);
        cr_expect_eq(k->duplicate_values, 0, "ctr:%d: %lu INCR results acknowledged twice", i,
                     (unsigned long)k->duplicate_values);
    }
    /* Recovery. */
    cr_expect(recovery_ms >= 0 && recovery_ms <= RECOVERY_BOUND_MS,
              "no PING answered within %d ms of the last fault (%ld ms; last status %s)", RECOVERY_BOUND_MS,
              recovery_ms, rp_strerror(W.probe_last_status));
    /* The pool's accounting. */
    cr_expect_eq(W.stats_bad, 0, "%lu inconsistent stats samples of %lu; first: %s", (unsigned long)W.stats_bad,
                 (unsigned long)W.stats_samples, W.first_stats_bad);
    cr_expect_eq((int)st.total_conns, pool_len);
    cr_expect_eq((int)st.idle_conns, idle_len);
    cr_expect_eq(st.total_conns, st.idle_conns, "nothing is in use, yet %u of %u connections are not idle",
                 st.total_conns - st.idle_conns, st.total_conns);
    cr_expect_leq(st.total_conns, POOL_SIZE);
    cr_expect_eq(misuse, 0);
    /* The run did what it claims. */
    cr_expect(!I.maxclients_stuck, "maxclients could not be restored: %s", I.first_admin_error);
    cr_expect(seconds < 3 || faults > 0, "no fault was injected");
    cr_expect_gt(acked, 0, "no INCR was acknowledged");
    /* Clean shutdown; the suite's fini checks the fds. */
    cr_expect(closed_in_time, "rp_client_close's callback never ran");
    cr_expect_eq(free_rc, 0, "rp_loop_free: %s", rp_strerror(free_rc));

    for (int i = 0; i < COUNTERS; i++)
        bits_free(&W.counters[i].values);
    bits_free(&W.called);
    free(W.big);
}
