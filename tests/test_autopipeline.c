/* Auto-pipelining (rp_client_options.autopipeline_conns) against a real
 * redis-server: replies matched across callers, batching, the cap on what a
 * shared connection (lane) owes, waiting for room, the commands that take a
 * connection of their own, failures, close, abort and cancel. */
#define _XOPEN_SOURCE 700 /* nftw */
#define _DEFAULT_SOURCE
#include "fixture.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(autopipeline, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

static rp_loop *loop;
static rp_client *client;

typedef fx_result result;

#define PING 1, (const char *[]){"PING"}
#define INCR_N 2, (const char *[]){"INCR", "n"}

static void ap_options(rp_client_options *opts, int lanes, unsigned max_owed)
{
    rp_client_options_init(opts);
    opts->pool.addr = fx_redis_addr;
    opts->pool.pool_size = 8;
    opts->autopipeline_conns = lanes;
    opts->autopipeline_max_owed = max_owed;
}

static void open_client(const rp_client_options *opts)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, opts), 0);
}

static void issue(result *r, int argc, const char **argv)
{
    cr_assert_eq(rp_client_command(client, fx_result_cb, r, argc, argv, NULL), 0, "%s refused", argv[0]);
}

static int64_t issue_ex(result *r, int argc, const char **argv)
{
    int64_t id = rp_client_command_ex(client, NULL, fx_result_cb, r, argc, argv, NULL);
    cr_assert_gt(id, 0, "%s refused", argv[0]);
    return id;
}

static result run(int argc, const char **argv)
{
    result r = {0};
    issue(&r, argc, argv);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000), "no reply to %s", argv[0]);
    return r;
}

/* The first connection, idle in the pool: the COMMAND table is read, and
 * what follows shows only its own dials. */
static void warm_up(void) { cr_assert_str_eq(run(PING).str, "PONG"); }

static rp_stats stats(void)
{
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    return st;
}

/* A lane that owes nothing gives its connection back: none is held. */
static void expect_all_idle(const char *when)
{
    int idle = rp_pool_idle_len(rp_client_pool(client));
    cr_expect_eq(idle, (int)stats().total_conns, "%s: %d idle of %u", when, idle, stats().total_conns);
}

/* Runs until each of rs has been called back; then each exactly once. */
static void wait_each_once(result *rs, int n, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    for (int i = 0; i < n; i++) {
        uint64_t now = fx_now_ms();
        cr_assert(fx_run_until_count(loop, &rs[i].calls, 1, now < deadline ? (unsigned)(deadline - now) : 0),
                  "command %d of %d never called back", i, n);
    }
    fx_run_for(loop, 20); /* a second call would come now */
    for (int i = 0; i < n; i++)
        cr_assert_eq(rs[i].calls, 1, "command %d called back %d times", i, rs[i].calls);
}

static void close_client(void) { fx_client_close_and_free(loop, client); }

static void close_flag_cb(rp_client *c, void *data)
{
    (void)c;
    *(bool *)data = true;
}

/* ------------------------------------------------- matching and batching */

#define CHAINS 200
#define ROUNDS 10

/* A caller that sets its own key to a value of its own, reads it back, and
 * does it again: a reply handed to the wrong command shows as a wrong
 * value or type, or as a callback this chain was not waiting for. */
typedef struct chain {
    int index, round;
    bool reading;  /* its GET is out, else its SET */
    bool awaiting; /* a callback is owed */
    char key[16], value[32];
} chain;

static chain chains[CHAINS];
static int chains_done;

static void chain_reply(rp_client *c, const redisReply *reply, int status, void *data);

static void chain_send(chain *ch)
{
    ch->awaiting = true;
    if (!ch->reading)
        snprintf(ch->value, sizeof ch->value, "v%d.%d", ch->index, ch->round);
    int rc = ch->reading ? rp_client_command(client, chain_reply, ch, 2, (const char *[]){"GET", ch->key}, NULL)
                         : rp_client_command(client, chain_reply, ch, 3, (const char *[]){"SET", ch->key, ch->value},
                                             NULL);
    cr_assert_eq(rc, 0, "chain %d: %s", ch->index, rp_strerror(rc));
}

static void chain_reply(rp_client *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    chain *ch = data;
    cr_assert(ch->awaiting, "chain %d called back when it owed nothing", ch->index);
    ch->awaiting = false;
    cr_assert_eq(status, 0, "chain %d: %s", ch->index, rp_strerror(status));
    if (!ch->reading) {
        cr_assert(reply->type == REDIS_REPLY_STATUS && !strcmp(reply->str, "OK"), "chain %d: SET got type %d",
                  ch->index, reply->type);
    } else {
        cr_assert_eq(reply->type, REDIS_REPLY_STRING, "chain %d: GET got type %d", ch->index, reply->type);
        cr_assert_str_eq(reply->str, ch->value, "chain %d got another command's reply", ch->index);
        if (++ch->round == ROUNDS) {
            chains_done++;
            return;
        }
    }
    ch->reading = !ch->reading;
    chain_send(ch);
}

Test(autopipeline, replies_match_their_commands_across_interleaved_callers)
{
    rp_client_options opts;
    ap_options(&opts, 2, 64); /* two lanes full at 64: some commands wait */
    open_client(&opts);
    chains_done = 0;
    for (int i = 0; i < CHAINS; i++) {
        chains[i] = (chain){.index = i};
        snprintf(chains[i].key, sizeof chains[i].key, "k%d", i);
        chain_send(&chains[i]);
    }
    cr_assert(fx_run_until_count(loop, &chains_done, CHAINS, 30000), "%d of %d chains finished", chains_done, CHAINS);
    fx_run_for(loop, 20);
    for (int i = 0; i < CHAINS; i++)
        cr_expect(!chains[i].awaiting && chains[i].round == ROUNDS, "chain %d", i);
    cr_expect_leq(stats().total_conns, 2);
    expect_all_idle("after the chains");
    close_client();
}

#define BATCH 200

Test(autopipeline, commands_issued_together_leave_in_one_send_on_one_connection)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    open_client(&opts);
    warm_up();
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    static result r[BATCH];
    memset(r, 0, sizeof r);
    for (int i = 0; i < BATCH; i++)
        issue(&r[i], INCR_N);
    wait_each_once(r, BATCH, 10000);
    rp_loop_stats_get(loop, &after);
    for (int i = 0; i < BATCH; i++)
        cr_expect_eq(r[i].integer, i + 1, "INCR %d got %lld", i, r[i].integer);
    /* One send and a recv or two (2 SQEs on a quiet machine): a send per
     * command, or per few, would be hundreds. */
    uint64_t sqes = after.sqes - before.sqes;
    cr_expect_leq(sqes, 6, "%lu SQEs for %d commands", (unsigned long)sqes, BATCH);
    rp_stats st = stats();
    cr_expect_eq(st.total_conns, 1);
    cr_expect_eq(st.misses, 1, "the batch dialled");
    cr_expect_eq(st.hits, 1, "the batch took the idle connection once");
    close_client();
}

Test(autopipeline, a_full_connection_spills_to_the_next_up_to_the_cap)
{
    rp_client_options opts;
    ap_options(&opts, 3, 10);
    open_client(&opts);
    warm_up();
    /* The server sleeps with the first lane's commands: no reply makes
     * room, so 25 commands need three lanes of 10. */
    result r[25] = {{0}};
    issue(&r[0], 3, (const char *[]){"DEBUG", "SLEEP", "0.2"});
    for (int i = 1; i < 25; i++)
        issue(&r[i], INCR_N);
    wait_each_once(r, 25, 5000);
    cr_expect_str_eq(r[0].str, "OK");
    bool seen[25] = {false};
    for (int i = 1; i < 25; i++) {
        cr_assert_eq(r[i].status, 0, "INCR %d: %s", i, rp_strerror(r[i].status));
        cr_assert(r[i].integer >= 1 && r[i].integer <= 24 && !seen[r[i].integer], "INCR %d got %lld", i,
                  r[i].integer);
        seen[r[i].integer] = true;
    }
    rp_stats st = stats();
    cr_expect_eq(st.total_conns, 3, "%u connections for 25 commands at 10 a lane", st.total_conns);
    expect_all_idle("after the spill");
    close_client();
}

/* ------------------------------------------------------- waiting for room */

/* One lane that owes at most one reply, held by DEBUG SLEEP 1; n INCRs wait
 * for room behind it. Returns when they were issued. */
static uint64_t wait_behind_a_sleeping_lane(uint32_t pool_timeout_ms, result *sleep, result *waiting, int n)
{
    rp_client_options opts;
    ap_options(&opts, 1, 1);
    opts.pool.pool_timeout_ms = pool_timeout_ms;
    opts.max_retries = 0; /* RP_EPOOLTIMEOUT as it is, not retried */
    open_client(&opts);
    warm_up();
    uint64_t start = fx_now_ms();
    issue(sleep, 3, (const char *[]){"DEBUG", "SLEEP", "1"});
    for (int i = 0; i < n; i++)
        issue(&waiting[i], INCR_N);
    return start;
}

Test(autopipeline, waiting_for_room_ends_at_the_pool_timeout)
{
    result sleep = {0}, waiting[3] = {{0}};
    uint64_t start = wait_behind_a_sleeping_lane(200, &sleep, waiting, 3);
    wait_each_once(waiting, 3, 5000);
    uint64_t took = fx_now_ms() - start;
    for (int i = 0; i < 3; i++)
        cr_expect_eq(waiting[i].status, RP_EPOOLTIMEOUT, "%d: %s", i, rp_strerror(waiting[i].status));
    cr_expect(took >= 190 && took < 900, "took %lu ms", (unsigned long)took);
    cr_expect_eq(sleep.calls, 0, "the wait outlasted the sleep that held the lane");
    wait_each_once(&sleep, 1, 5000);
    cr_expect_str_eq(sleep.str, "OK");
    cr_expect_eq(run(2, (const char *[]){"GET", "n"}).type, REDIS_REPLY_NIL, "a timed-out INCR ran");
    close_client();
}

Test(autopipeline, waiting_commands_go_in_order_once_room_appears)
{
    result sleep = {0}, waiting[3] = {{0}};
    uint64_t start = wait_behind_a_sleeping_lane(3000, &sleep, waiting, 3);
    wait_each_once(waiting, 3, 5000);
    uint64_t took = fx_now_ms() - start;
    cr_expect_str_eq(sleep.str, "OK");
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(waiting[i].status, 0, "%d: %s", i, rp_strerror(waiting[i].status));
        cr_expect_eq(waiting[i].integer, i + 1, "INCR %d ran as number %lld", i, waiting[i].integer);
    }
    cr_expect(took >= 950 && took < 2500, "took %lu ms", (unsigned long)took);
    close_client();
}

/* ---------------------------------------- commands with connections of their own */

Test(autopipeline, a_blocking_command_takes_its_own_connection_and_holds_no_lane)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    open_client(&opts);
    warm_up();
    result blpop = {0}, incr[50] = {{0}};
    uint64_t start = fx_now_ms();
    issue(&blpop, 3, (const char *[]){"BLPOP", "q", "1"});
    for (int i = 0; i < 50; i++)
        issue(&incr[i], INCR_N);
    wait_each_once(incr, 50, 5000);
    uint64_t took = fx_now_ms() - start;
    cr_expect_lt(took, 500, "the lane waited %lu ms behind BLPOP", (unsigned long)took);
    cr_expect_eq(blpop.calls, 0, "BLPOP ended early: %s", rp_strerror(blpop.status));
    for (int i = 0; i < 50; i++)
        cr_expect_eq(incr[i].integer, i + 1);
    wait_each_once(&blpop, 1, 3000);
    cr_expect_eq(blpop.status, 0, "%s", rp_strerror(blpop.status));
    cr_expect_eq(blpop.type, REDIS_REPLY_NIL);
    cr_expect_eq(stats().total_conns, 2);
    close_client();
}

Test(autopipeline, connection_state_set_through_the_client_is_not_handed_on)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    open_client(&opts);
    warm_up();
    cr_expect_str_eq(run(2, (const char *[]){"SELECT", "1"}).str, "OK");
    cr_expect_str_eq(run(3, (const char *[]){"SET", "k", "v"}).str, "OK");
    result moved = run(3, (const char *[]){"MOVE", "k", "1"}); /* 1 only if k lives outside db 1 */
    cr_expect_eq(moved.integer, 1, "the lane ran in SELECT's db: %s", moved.str);
    cr_expect_str_eq(run(3, (const char *[]){"CLIENT", "SETNAME", "leaked"}).str, "OK");
    cr_expect_str_eq(run(PING).str, "PONG");
    result name = run(2, (const char *[]){"CLIENT", "GETNAME"});
    cr_expect_eq(name.type, REDIS_REPLY_NIL, "the name reached another command: %s", name.str);
    close_client();
}

/* A transaction needs its commands on one connection (rp_sticky_pool_new,
 * examples/transaction.c). Through rp_client each is a command of its own:
 * MULTI opens a transaction on a connection that is closed after its reply,
 * the SET runs at once, and EXEC finds no transaction. */
Test(autopipeline, multi_and_exec_through_the_client_each_take_a_connection)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    open_client(&opts);
    warm_up();
    result r[3] = {{0}};
    issue(&r[0], 1, (const char *[]){"MULTI"});
    wait_each_once(r, 1, 5000);
    issue(&r[1], 3, (const char *[]){"SET", "k", "v"});
    wait_each_once(r, 2, 5000);
    issue(&r[2], 1, (const char *[]){"EXEC"});
    wait_each_once(r, 3, 5000);
    cr_expect_str_eq(r[0].str, "OK");
    cr_expect_str_eq(r[1].str, "OK", "the SET was queued in MULTI's transaction");
    cr_expect_eq(r[2].type, REDIS_REPLY_ERROR);
    cr_expect(strstr(r[2].str, "without MULTI") != NULL, "%s", r[2].str);
    cr_expect_str_eq(run(2, (const char *[]){"GET", "k"}).str, "v");
    close_client();
}

/* rp_client_command(SUBSCRIBE) gets the server's confirmation as its reply;
 * a subscription of its own is rp_conn_subscribe's. */
Test(autopipeline, subscribe_through_the_client_leaves_no_subscriber_in_the_pool)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    open_client(&opts);
    warm_up();
    result sub = {0};
    issue(&sub, 2, (const char *[]){"SUBSCRIBE", "ch"});
    wait_each_once(&sub, 1, 5000);
    cr_expect_eq(sub.status, 0, "%s", rp_strerror(sub.status));
    cr_expect_eq(sub.type, REDIS_REPLY_ARRAY);
    result ping = run(PING); /* a subscriber would answer [pong, ""] */
    cr_expect_eq(ping.status, 0, "PING failed: %s", rp_strerror(ping.status));
    cr_expect_eq(ping.type, REDIS_REPLY_STATUS);
    cr_expect_str_eq(ping.str, "PONG");
    close_client();
}

Test(autopipeline, a_command_over_max_bytes_takes_a_connection_of_its_own)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    opts.autopipeline_max_bytes = 100;
    open_client(&opts);
    warm_up();
    char big[1001];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    result r[11] = {{0}};
    for (int i = 0; i < 10; i++) /* the lane takes the idle connection */
        issue(&r[i], INCR_N);
    issue(&r[10], 3, (const char *[]){"SET", "big", big});
    wait_each_once(r, 11, 5000);
    cr_expect_str_eq(r[10].str, "OK");
    cr_expect_eq(run(2, (const char *[]){"STRLEN", "big"}).integer, 1000);
    rp_stats st = stats();
    cr_expect_eq(st.total_conns, 2, "the big SET shared the lane");
    cr_expect_eq(st.misses, 2);
    close_client();
}

/* ------------------------------------------------------------ failures */

#define BEHIND 100
static result stalled[BEHIND + 1];

/* DEBUG SLEEP 2 on the one lane, read timeout 300 ms, BEHIND INCRs queued
 * behind it. Returns when they were issued. */
static uint64_t stall_the_lane(rp_reply_cb cb)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    opts.pool.read_timeout_ms = 300;
    open_client(&opts);
    warm_up();
    memset(stalled, 0, sizeof stalled);
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_client_command(client, cb, &stalled[0], 3, (const char *[]){"DEBUG", "SLEEP", "2"}, NULL), 0);
    for (int i = 1; i <= BEHIND; i++)
        cr_assert_eq(rp_client_command(client, cb, &stalled[i], INCR_N, NULL), 0);
    return start;
}

Test(autopipeline, a_stalled_lane_fails_every_command_once_at_the_read_timeout)
{
    uint64_t start = stall_the_lane(fx_result_cb);
    wait_each_once(stalled, BEHIND + 1, 5000);
    uint64_t took = fx_now_ms() - start;
    for (int i = 0; i <= BEHIND; i++)
        cr_expect_eq(stalled[i].status, -ETIMEDOUT, "%d: %s", i, rp_strerror(stalled[i].status));
    cr_expect(took >= 280 && took < 1500, "took %lu ms", (unsigned long)took);
    fx_run_for(loop, took < 2000 ? (unsigned)(2200 - took) : 200); /* the server wakes */
    cr_expect_str_eq(run(PING).str, "PONG", "the client did not recover");
    long long n = strtoll(run(2, (const char *[]){"GET", "n"}).str, NULL, 10);
    cr_expect_leq(n, BEHIND, "an INCR ran twice: n = %lld", n);
    close_client();
}

static bool aborted, abort_closed;

static void abort_on_first_failure(rp_client *c, const redisReply *reply, int status, void *data)
{
    fx_result_cb(c, reply, status, data);
    if (status < 0 && !aborted) {
        aborted = true;
        cr_assert_eq(rp_client_abort(c, close_flag_cb, &abort_closed), 0);
    }
}

/* The lane's failure reaches its commands one by one; the first one's
 * callback ends every other. */
Test(autopipeline, a_callback_may_abort_the_client_while_its_lane_fails)
{
    aborted = abort_closed = false;
    stall_the_lane(abort_on_first_failure);
    cr_assert(fx_run_until(loop, &abort_closed, 5000), "the abort never finished");
    fx_run_for(loop, 20);
    cr_expect_eq(stalled[0].status, -ETIMEDOUT, "%s", rp_strerror(stalled[0].status));
    for (int i = 0; i <= BEHIND; i++)
        cr_expect_eq(stalled[i].calls, 1, "command %d called back %d times", i, stalled[i].calls);
    for (int i = 1; i <= BEHIND; i++)
        cr_expect_eq(stalled[i].status, RP_ECLOSED, "%d: %s", i, rp_strerror(stalled[i].status));
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(autopipeline, commands_waiting_on_a_lane_that_fails_move_to_a_new_one)
{
    rp_client_options opts;
    ap_options(&opts, 1, 1);
    opts.pool.read_timeout_ms = 400;
    opts.pool.pool_timeout_ms = 4000;
    opts.max_retries = 0;
    open_client(&opts);
    warm_up();
    result r[2] = {{0}};
    uint64_t start = fx_now_ms();
    issue(&r[0], 3, (const char *[]){"DEBUG", "SLEEP", "0.6"}); /* the lane fails at 400 ms */
    issue(&r[1], PING);                                         /* waits for room until then */
    wait_each_once(r, 2, 6000);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(r[0].status, -ETIMEDOUT, "%s", rp_strerror(r[0].status));
    cr_expect_eq(r[1].status, 0, "%s", rp_strerror(r[1].status));
    cr_expect_str_eq(r[1].str, "PONG");
    cr_expect_lt(took, 1500, "the waiting PING sat %lu ms on a dead lane", (unsigned long)took);
    close_client();
}

/* A write that times out fails the lane; the RPUSHes queued behind it
 * were provably never sent, and are sent again: in the order they were
 * issued, each reply the list's length at its own place. */
#define ORDERED 20
#define BIG_VALUE (16u << 20) /* more than loopback buffers while the server sleeps */

Test(autopipeline, commands_a_failure_proves_unsent_are_sent_again_in_their_order)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    opts.autopipeline_max_bytes = 2 * BIG_VALUE; /* the big SET takes the lane too */
    opts.pool.write_timeout_ms = 300;
    open_client(&opts);
    warm_up();
    static char big[BIG_VALUE];
    memset(big, 'x', sizeof big);
    int stall = fx_redis_send("*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n1.0\r\n");
    usleep(50000); /* the server is asleep */
    result set = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &set, 3, (const char *[]){"SET", "big", big},
                                   (const size_t[]){3, 3, sizeof big}),
                 0);
    fx_run_for(loop, 50); /* its send is stuck in flight */
    result pushes[ORDERED] = {{0}};
    for (int i = 0; i < ORDERED; i++) {
        char item[8];
        snprintf(item, sizeof item, "%d", i);
        issue(&pushes[i], 3, (const char *[]){"RPUSH", "list", item});
    }
    wait_each_once(pushes, ORDERED, 6000);
    fx_redis_wait_reply(stall);
    cr_expect_eq(set.calls, 1);
    cr_expect_eq(set.status, -ETIMEDOUT, "the big SET: %s", rp_strerror(set.status));
    for (int i = 0; i < ORDERED; i++) {
        cr_expect_eq(pushes[i].status, 0, "RPUSH %d: %s", i, rp_strerror(pushes[i].status));
        cr_expect_eq(pushes[i].integer, i + 1, "RPUSH %d ran as number %lld", i, pushes[i].integer);
    }
    cr_expect_eq(run(2, (const char *[]){"LLEN", "list"}).integer, ORDERED, "an RPUSH ran twice or not at all");
    close_client();
}

/* Counters must survive the SIGKILL: the server writes its AOF before it
 * replies (appendfsync always), and a restart reads it back. */
static char aof_dir[64];
static const char *aof_args[] = {"--appendonly", "yes", "--appendfsync", "always", "--dir", aof_dir, NULL};

static void restart_with_an_aof(void)
{
    struct stat st;
    bool shm = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0;
    snprintf(aof_dir, sizeof aof_dir, "%s/ringpool-ap-XXXXXX", shm ? "/dev/shm" : "/tmp");
    cr_assert_not_null(mkdtemp(aof_dir), "mkdtemp: %s", strerror(errno));
    fx_redis_stop();
    fx_redis_start_with(aof_args);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_the_aof(void)
{
    fx_redis_stop();
    nftw(aof_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define IN_FLIGHT 10000
#define KILL_AFTER 1000
static result flight[IN_FLIGHT];
static int flight_done;

static void count_flight(rp_client *c, const redisReply *reply, int status, void *data)
{
    fx_result_cb(c, reply, status, data);
    if (++flight_done == KILL_AFTER)
        fx_redis_restart(); /* SIGKILL with the rest in flight */
}

/* Even commands INCR n, odd ones GET n. An acknowledged INCR ran once; one
 * that failed may have run (at most once): the counter lies between. */
static void check_the_counter(long long counter)
{
    int acked = 0, unknown = 0;
    static bool seen[IN_FLIGHT + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < IN_FLIGHT; i++) {
        const result *r = &flight[i];
        bool incr = i % 2 == 0;
        cr_assert_eq(r->calls, 1, "command %d called back %d times", i, r->calls);
        if (r->status < 0 || r->type == REDIS_REPLY_ERROR) {
            unknown += incr && r->status < 0;
            continue;
        }
        cr_assert(incr ? r->type == REDIS_REPLY_INTEGER : r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL,
                  "command %d got another's reply (type %d)", i, r->type);
        if (incr) {
            cr_assert(r->integer > 0 && r->integer <= IN_FLIGHT && !seen[r->integer], "INCR %d got %lld", i,
                      r->integer);
            seen[r->integer] = true;
            acked++;
        }
    }
    cr_expect_gt(unknown, 0, "the kill met no INCR in flight");
    cr_expect(counter >= acked && counter <= acked + unknown, "counter %lld, %d acknowledged, %d unknown", counter,
              acked, unknown);
}

Test(autopipeline, a_server_killed_with_thousands_in_flight)
{
    restart_with_an_aof();
    rp_client_options opts;
    ap_options(&opts, 4, 2000); /* 8000 on the lanes, the rest waiting */
    open_client(&opts);
    warm_up();
    memset(flight, 0, sizeof flight);
    flight_done = 0;
    for (int i = 0; i < IN_FLIGHT; i++)
        cr_assert_eq(rp_client_command(client, count_flight, &flight[i], 2,
                                       (const char *[]){i % 2 ? "GET" : "INCR", "n"}, NULL),
                     0);
    cr_assert(fx_run_until_count(loop, &flight_done, IN_FLIGHT, 60000), "%d of %d called back", flight_done,
              IN_FLIGHT);
    fx_run_for(loop, 20);
    cr_expect_str_eq(run(PING).str, "PONG", "the client did not recover");
    check_the_counter(strtoll(run(2, (const char *[]){"GET", "n"}).str, NULL, 10));
    close_client();
    remove_the_aof();
}

/* ------------------------------------------------- close, abort, cancel */

/* One lane owing at most two: DEBUG SLEEP 0.2 and an INCR are sent, three
 * INCRs wait for room. */
static void two_sent_three_waiting(result *r)
{
    rp_client_options opts;
    ap_options(&opts, 1, 2);
    open_client(&opts);
    warm_up();
    issue(&r[0], 3, (const char *[]){"DEBUG", "SLEEP", "0.2"});
    for (int i = 1; i < 5; i++)
        issue(&r[i], INCR_N);
    fx_run_for(loop, 50);
    cr_assert_eq(r[0].calls + r[1].calls, 0, "the server answered before it woke");
}

Test(autopipeline, close_completes_sent_commands_and_ends_waiting_ones)
{
    result r[5] = {{0}};
    two_sent_three_waiting(r);
    bool closed = false;
    cr_assert_eq(rp_client_close(client, close_flag_cb, &closed), 0);
    cr_assert(fx_run_until(loop, &closed, 5000), "the close callback never ran");
    for (int i = 0; i < 5; i++)
        cr_expect_eq(r[i].calls, 1, "command %d called back %d times", i, r[i].calls);
    cr_expect_str_eq(r[0].str, "OK");
    cr_expect_eq(r[1].status, 0, "%s", rp_strerror(r[1].status));
    cr_expect_eq(r[1].integer, 1);
    for (int i = 2; i < 5; i++)
        cr_expect_eq(r[i].status, RP_ECLOSED, "%d: %s", i, rp_strerror(r[i].status));
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(autopipeline, abort_ends_every_command_at_once)
{
    result r[5] = {{0}};
    two_sent_three_waiting(r);
    bool closed = false;
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_client_abort(client, close_flag_cb, &closed), 0);
    cr_assert(fx_run_until(loop, &closed, 2000), "the abort never finished");
    cr_expect_lt(fx_now_ms() - start, 150, "the abort waited for the server");
    fx_run_for(loop, 300); /* past the server's sleep: nothing more comes */
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(r[i].calls, 1, "command %d called back %d times", i, r[i].calls);
        cr_expect_eq(r[i].status, RP_ECLOSED, "%d: %s", i, rp_strerror(r[i].status));
    }
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* One lane owing at most two. ECHO a is cancelled before its send; then
 * DEBUG SLEEP 0.2 and ECHO b are sent, SET k v1 and ECHO d wait, and ECHO b
 * (sent) and the SET (waiting) are cancelled. */
static void cancel_unsent_sent_and_waiting(result *r)
{
    rp_client_options opts;
    ap_options(&opts, 1, 2);
    open_client(&opts);
    cr_expect_str_eq(run(3, (const char *[]){"SET", "k", "v0"}).str, "OK");
    cr_assert_eq(rp_client_cancel(client, issue_ex(&r[0], 2, (const char *[]){"ECHO", "a"})), 0);
    issue(&r[1], 3, (const char *[]){"DEBUG", "SLEEP", "0.2"});
    int64_t sent = issue_ex(&r[2], 2, (const char *[]){"ECHO", "b"});
    int64_t waiting = issue_ex(&r[3], 3, (const char *[]){"SET", "k", "v1"});
    issue(&r[4], 2, (const char *[]){"ECHO", "d"});
    fx_run_for(loop, 50);
    cr_assert_eq(rp_client_cancel(client, sent), 0);
    cr_assert_eq(rp_client_cancel(client, waiting), 0);
    cr_expect_eq(r[2].calls + r[3].calls, 0, "a callback ran inside rp_client_cancel");
    cr_expect_eq(rp_client_cancel(client, sent), -ENOENT);
}

Test(autopipeline, cancelled_commands_end_once_and_the_lane_stays_in_step)
{
    result r[5] = {{0}};
    cancel_unsent_sent_and_waiting(r);
    wait_each_once(r, 5, 5000);
    cr_expect_eq(r[0].status, -ECANCELED, "unsent: %s", rp_strerror(r[0].status));
    cr_expect_str_eq(r[1].str, "OK");
    cr_expect_eq(r[2].status, -ECANCELED, "sent: %s", rp_strerror(r[2].status));
    cr_expect_eq(r[3].status, -ECANCELED, "waiting: %s", rp_strerror(r[3].status));
    cr_expect_str_eq(r[4].str, "d", "ECHO d got %s", r[4].str);
    for (int i = 0; i < 10; i++) {
        char word[8];
        snprintf(word, sizeof word, "e%d", i);
        cr_expect_str_eq(run(2, (const char *[]){"ECHO", word}).str, word);
    }
    cr_expect_str_eq(run(2, (const char *[]){"GET", "k"}).str, "v0", "the cancelled SET ran");
    expect_all_idle("after the cancels");
    cr_expect_eq(stats().stale_conns, 0, "a connection was lost to the cancels");
    close_client();
}

#define INCRBY(by) 3, (const char *[]){"INCRBY", "n", by}

/* Issue 21 (1): commands cancelled while still in the lane's unsent
 * buffer, the first and one in the middle, with others queued behind
 * them, are never sent: the counter shows only the third ran. */
Test(autopipeline, cancelled_commands_anywhere_in_the_unsent_buffer_are_never_sent)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    open_client(&opts);
    warm_up();
    result r[3] = {{0}};
    int64_t one = issue_ex(&r[0], INCRBY("1"));
    int64_t ten = issue_ex(&r[1], INCRBY("10"));
    issue(&r[2], INCRBY("100"));
    cr_assert_eq(rp_client_cancel(client, one), 0);
    cr_assert_eq(rp_client_cancel(client, ten), 0);
    wait_each_once(r, 3, 5000);
    cr_expect_eq(r[0].status, -ECANCELED);
    cr_expect_eq(r[1].status, -ECANCELED);
    cr_expect_eq(r[2].status, 0, "INCRBY 100: %s", rp_strerror(r[2].status));
    cr_expect_eq(r[2].integer, 100, "INCRBY 100 answered %lld", r[2].integer);
    cr_expect_str_eq(run(2, (const char *[]){"GET", "n"}).str, "100", "a cancelled INCRBY ran");
    expect_all_idle("after the cancels");
    cr_expect_eq(stats().stale_conns, 0);
    close_client();
}

/* The same when timeout_ms expires: the lane's send of a 32 MiB SET is
 * held by a sleeping server, the INCRBY 1 behind it times out unsent, and
 * only the INCRBY 10 queued after it runs. */
Test(autopipeline, a_command_timing_out_unsent_behind_a_long_send_is_never_sent)
{
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    opts.autopipeline_max_bytes = 64u << 20;
    opts.pool.write_timeout_ms = 10000;
    opts.pool.read_timeout_ms = 10000;
    open_client(&opts);
    warm_up();
    enum { BIG = 32 << 20 };
    char *value = malloc(BIG);
    cr_assert(value);
    memset(value, 'v', BIG);
    int sleeper = fx_redis_send("DEBUG SLEEP 1\r\n");
    usleep(50000); /* the server sleeps, and reads nothing */
    result r[3] = {{0}};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r[0], 3, (const char *[]){"SET", "big", value},
                                   (const size_t[]){3, 3, BIG}), 0);
    fx_run_for(loop, 50);
    rp_command_options deadline = {.timeout_ms = 100};
    cr_assert_gt(rp_client_command_ex(client, &deadline, fx_result_cb, &r[1], INCRBY("1"), NULL), 0);
    issue(&r[2], INCRBY("10"));
    cr_assert(fx_run_until_count(loop, &r[1].calls, 1, 3000));
    cr_assert_eq(r[0].calls, 0, "the SET was sent before the deadline: this proves nothing");
    cr_expect_eq(r[1].status, -ETIMEDOUT, "INCRBY 1: %s", rp_strerror(r[1].status));
    wait_each_once(r, 3, 10000);
    cr_expect_eq(r[0].status, 0, "SET: %s", rp_strerror(r[0].status));
    cr_expect_eq(r[2].integer, 10, "INCRBY 10 answered %lld", r[2].integer);
    cr_expect_str_eq(run(2, (const char *[]){"GET", "n"}).str, "10", "the timed-out INCRBY ran");
    fx_redis_wait_reply(sleeper);
    free(value);
    close_client();
}

/* The cancelled commands' replies are still owed when the client closes:
 * on the lane, and on a connection of its own (over max_bytes). */
Test(autopipeline, close_waits_for_the_replies_of_cancelled_commands)
{
    result r[5] = {{0}};
    rp_client_options opts;
    ap_options(&opts, 1, 0);
    opts.autopipeline_max_bytes = 16; /* DEBUG SLEEP 0.2 and PING share the lane */
    open_client(&opts);
    warm_up();
    issue(&r[0], 3, (const char *[]){"DEBUG", "SLEEP", "0.2"});
    int64_t on_lane = issue_ex(&r[1], 1, (const char *[]){"PING"});
    int64_t own = issue_ex(&r[2], 2, (const char *[]){"ECHO", "over sixteen bytes"});
    fx_run_for(loop, 50);
    cr_assert_eq(rp_client_cancel(client, on_lane), 0);
    cr_assert_eq(rp_client_cancel(client, own), 0);
    cr_assert_eq(rp_client_cancel(client, rp_client_command_ex(client, NULL, fx_result_cb, &r[3], PING, NULL)), 0);
    bool closed = false;
    cr_assert_eq(rp_client_close(client, close_flag_cb, &closed), 0);
    cr_assert(fx_run_until(loop, &closed, 5000), "the close callback never ran");
    cr_expect_str_eq(r[0].str, "OK");
    for (int i = 1; i < 4; i++)
        cr_expect_eq(r[i].status, -ECANCELED, "%d: %s", i, rp_strerror(r[i].status));
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* -------------------------------------------------------------- options */

Test(autopipeline, a_negative_lane_count_is_refused)
{
    rp_client_options opts;
    ap_options(&opts, -1, 0);
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    client = NULL;
    cr_expect_eq(rp_client_new(&client, loop, &opts), -EINVAL);
    cr_expect_null(client);
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(autopipeline, one_caller_at_a_time_gets_the_connection_back_after_each_reply)
{
    rp_client_options opts;
    ap_options(&opts, 2, 0);
    open_client(&opts);
    for (int i = 0; i < 20; i++) {
        cr_expect_eq(run(INCR_N).integer, i + 1);
        expect_all_idle("after a reply");
    }
    rp_stats st = stats();
    cr_expect_eq(st.total_conns, 1);
    cr_expect_eq(st.misses, 1);
    close_client();
}

/* ------------------------------------------------------------ big replies */

/* A reply checked byte for byte against the value it should carry. */
typedef struct big_result {
    int calls, status, type, order;
    size_t len;
    bool matches;
    const char *want; /* NULL: a PING's PONG */
    size_t want_len;
} big_result;

static int big_order;

static void big_cb(rp_client *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    big_result *r = data;
    r->calls++;
    r->status = status;
    r->order = ++big_order;
    if (status < 0)
        return;
    r->type = reply->type;
    r->len = reply->len;
    if (r->want)
        r->matches = reply->type == REDIS_REPLY_STRING && reply->len == r->want_len &&
                     reply->str[reply->len] == '\0' && !memcmp(reply->str, r->want, r->want_len);
    else
        r->matches = reply->type == REDIS_REPLY_STATUS && !strcmp(reply->str, "PONG");
}

/* A value whose every byte depends on its key and place: a reply handed
 * to the wrong command, or bytes out of place, do not match. */
static char *big_value(size_t len, unsigned seed)
{
    char *v = malloc(len);
    cr_assert(v);
    for (size_t i = 0; i < len; i++)
        v[i] = (char)('!' + (i * 7 + seed * 31 + i / 4093) % 90);
    return v;
}

static void set_big(const char *key, const char *value, size_t len)
{
    result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 3, (const char *[]){"SET", key, value},
                                   (const size_t[]){3, strlen(key), len}),
                 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 30000), "SET %s never answered", key);
    cr_assert_str_eq(r.str, "OK");
}

static void issue_get(big_result *r, const char *key, const char *want, size_t want_len)
{
    *r = (big_result){.want = want, .want_len = want_len};
    cr_assert_eq(rp_client_command(client, big_cb, r, 2, (const char *[]){"GET", key}, NULL), 0);
}

static void issue_ping(big_result *r)
{
    *r = (big_result){0};
    cr_assert_eq(rp_client_command(client, big_cb, r, 1, (const char *[]){"PING"}, NULL), 0);
}

/* Runs until the client's receive buffers hold more than bytes: a reply
 * that large is being read. */
static void run_until_buffers_over(size_t bytes)
{
    uint64_t deadline = fx_now_ms() + 10000;
    while (rp_client_buffer_bytes(client) <= bytes && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_gt(rp_client_buffer_bytes(client), bytes, "no big reply is being read");
}

#define HUGE_VALUE (32u << 20)

/* Sent on the lane reading a 32 MB reply, a PING would wait for all of
 * it; a lane in the middle of a big reply takes no new command while
 * another can be opened. */
Test(autopipeline, a_small_command_after_a_big_reply_begun_takes_another_lane)
{
    rp_client_options opts;
    ap_options(&opts, 2, 1024);
    open_client(&opts);
    warm_up();
    char *value = big_value(HUGE_VALUE, 1);
    set_big("huge", value, HUGE_VALUE);
    big_result get, ping;
    big_order = 0;
    issue_get(&get, "huge", value, HUGE_VALUE);
    run_until_buffers_over(HUGE_VALUE / 2);
    cr_assert_eq(get.calls, 0, "the 32 MB reply came in before the test could look");
    issue_ping(&ping);
    cr_assert(fx_run_until_count(loop, &get.calls, 1, 30000), "the GET never came back");
    cr_assert(fx_run_until_count(loop, &ping.calls, 1, 10000), "the PING never came back");
    cr_expect(ping.matches && get.matches, "PING %d, GET %d (len %zu)", ping.matches, get.matches, get.len);
    cr_expect_lt(ping.order, get.order, "the PING waited behind the 32 MB reply");
    free(value);
    close_client();
}

/* MGET of three keys: each element checked against its value. */
typedef struct mget_result {
    int calls, status;
    bool matches;
    const char *want[3];
    size_t want_len[3];
} mget_result;

static void mget_cb(rp_client *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    mget_result *r = data;
    r->calls++;
    r->status = status;
    r->matches = status == 0 && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3;
    for (size_t i = 0; r->matches && i < 3; i++) {
        const redisReply *e = reply->element[i];
        r->matches = e->type == REDIS_REPLY_STRING && e->len == r->want_len[i] && e->str[e->len] == '\0' &&
                     !memcmp(e->str, r->want[i], e->len);
    }
}

/* Around the size from which a body is read in place and its reply takes
 * the reader's buffer (32 KiB), small enough that several share one read
 * with the replies after them, and large enough to need many reads. */
static const size_t big_sizes[] = {5, 32767, 32768, 33000, 40000, 70000, 100000, 300000, 1500000};
#define NBIG (sizeof big_sizes / sizeof big_sizes[0])
#define BIG_CMDS 240

static void big_values_come_back_whole(int lanes)
{
    rp_client_options opts;
    ap_options(&opts, lanes, 1024);
    open_client(&opts);
    warm_up();
    char *values[NBIG], keys[NBIG][16];
    for (size_t k = 0; k < NBIG; k++) {
        snprintf(keys[k], sizeof keys[k], "big%zu", k);
        values[k] = big_value(big_sizes[k], (unsigned)k);
        set_big(keys[k], values[k], big_sizes[k]);
    }
    static big_result gets[BIG_CMDS];
    static mget_result mgets[BIG_CMDS];
    int ngets = 0, nmgets = 0;
    for (int i = 0; i < BIG_CMDS; i++) {
        size_t k = (size_t)i * 7 % NBIG;
        if (i % 6 == 5) {
            mget_result *m = &mgets[nmgets++];
            *m = (mget_result){0};
            size_t ks[3] = {k, (k + 3) % NBIG, (k + 5) % NBIG};
            for (int j = 0; j < 3; j++) {
                m->want[j] = values[ks[j]];
                m->want_len[j] = big_sizes[ks[j]];
            }
            cr_assert_eq(rp_client_command(client, mget_cb, m, 4,
                                           (const char *[]){"MGET", keys[ks[0]], keys[ks[1]], keys[ks[2]]}, NULL),
                         0);
        } else if (i % 6 == 4) {
            issue_ping(&gets[ngets++]);
        } else {
            issue_get(&gets[ngets++], keys[k], values[k], big_sizes[k]);
        }
        if (i % 40 == 39) /* some leave while others are being read */
            rp_loop_run(loop, RP_RUN_NOWAIT);
    }
    uint64_t deadline = fx_now_ms() + 60000;
    for (int i = 0; i < ngets; i++)
        cr_assert(fx_run_until_count(loop, &gets[i].calls, 1, (unsigned)(deadline - fx_now_ms())), "command %d", i);
    for (int i = 0; i < nmgets; i++)
        cr_assert(fx_run_until_count(loop, &mgets[i].calls, 1, (unsigned)(deadline - fx_now_ms())), "MGET %d", i);
    fx_run_for(loop, 20);
    for (int i = 0; i < ngets; i++)
        cr_assert(gets[i].calls == 1 && gets[i].status == 0 && gets[i].matches,
                  "command %d (%zu bytes wanted): %d calls, status %d, %zu bytes, %s", i, gets[i].want_len,
                  gets[i].calls, gets[i].status, gets[i].len, gets[i].matches ? "right" : "wrong");
    for (int i = 0; i < nmgets; i++)
        cr_assert(mgets[i].calls == 1 && mgets[i].matches, "MGET %d: %d calls, %s", i, mgets[i].calls,
                  mgets[i].matches ? "right" : "wrong");
    expect_all_idle("after the big values");
    cr_expect_leq(rp_client_buffer_bytes(client), (size_t)8 * 1024 * stats().total_conns,
                  "idle connections hold %zu bytes of buffers", rp_client_buffer_bytes(client));
    for (size_t k = 0; k < NBIG; k++)
        free(values[k]);
    close_client();
}

Test(autopipeline, many_big_values_on_lanes_come_back_whole) { big_values_come_back_whole(3); }

Test(autopipeline, many_big_values_on_connections_of_their_own_come_back_whole) { big_values_come_back_whole(0); }

/* Killed while several 32 MB replies are owed on the lanes, one of them
 * half read: every command is called back once, with an error for those
 * the server never finished (no retry here), and nothing leaks (ASan). */
Test(autopipeline, a_server_killed_in_the_middle_of_big_replies_fails_each_once)
{
    rp_client_options opts;
    ap_options(&opts, 2, 1024);
    opts.max_retries = 0;
    open_client(&opts);
    warm_up();
    char *value = big_value(HUGE_VALUE, 2);
    set_big("huge", value, HUGE_VALUE);
    big_result rs[6];
    for (int i = 0; i < 6; i++) {
        if (i % 3 == 2)
            issue_ping(&rs[i]);
        else
            issue_get(&rs[i], "huge", value, HUGE_VALUE);
    }
    run_until_buffers_over(HUGE_VALUE / 2);
    cr_assert_eq(rs[0].calls, 0, "the first 32 MB reply came in before the kill");
    fx_redis_restart(); /* SIGKILL */
    uint64_t deadline = fx_now_ms() + 30000;
    for (int i = 0; i < 6; i++)
        cr_assert(fx_run_until_count(loop, &rs[i].calls, 1, (unsigned)(deadline - fx_now_ms())), "command %d", i);
    fx_run_for(loop, 20);
    for (int i = 0; i < 6; i++) {
        cr_expect_eq(rs[i].calls, 1, "command %d called back %d times", i, rs[i].calls);
        cr_expect(rs[i].status < 0 || rs[i].matches, "command %d: status %d, a wrong reply", i, rs[i].status);
    }
    cr_expect_lt(rs[0].status, 0, "the half-read reply did not fail");
    cr_expect_str_eq(run(PING).str, "PONG", "the client did not recover");
    expect_all_idle("after the kill");
    free(value);
    close_client();
}
