/* rp_client against a real redis-server: set-up, retries, queueing, close. */
#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(client, .init = fx_setup, .fini = fx_teardown, .timeout = 60);

static rp_loop *loop;
static rp_client *client;

typedef fx_result result;

static void open_client(rp_client_options *opts)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, opts), 0);
}

static void default_options(rp_client_options *opts, int pool_size)
{
    rp_client_options_init(opts);
    opts->pool.addr = fx_redis_addr;
    opts->pool.pool_size = pool_size;
}

static result run(int argc, const char **argv)
{
    result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, argc, argv, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000), "no reply to %s", argv[0]);
    return r;
}

static void close_client(void) { fx_client_close_and_free(loop, client); }

Test(client, set_then_get)
{
    rp_client_options opts;
    default_options(&opts, 4);
    open_client(&opts);
    result set = run(3, (const char *[]){"SET", "greeting", "hello"});
    cr_expect_eq(set.status, 0);
    cr_expect_str_eq(set.str, "OK");
    result get = run(2, (const char *[]){"GET", "greeting"});
    cr_expect_eq(get.type, REDIS_REPLY_STRING);
    cr_expect_str_eq(get.str, "hello");
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    cr_expect_eq(st.misses, 1);
    cr_expect_eq(st.hits, 1, "the second command did not reuse the connection");
    close_client();
}

Test(client, bad_arguments_and_closed_client)
{
    rp_client_options opts;
    default_options(&opts, 2);
    result r = {0};
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    opts.db = -1;
    cr_expect_eq(rp_client_new(&client, loop, &opts), -EINVAL);
    default_options(&opts, 2);
    opts.username = "alice"; /* a username without a password */
    cr_expect_eq(rp_client_new(&client, loop, &opts), -EINVAL);
    default_options(&opts, 2);
    opts.pool.addr = "nowhere";
    cr_expect_eq(rp_client_new(&client, loop, &opts), -EINVAL);
    default_options(&opts, 2);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    cr_expect_eq(rp_client_command(client, NULL, NULL, 1, (const char *[]){"PING"}, NULL), -EINVAL);
    cr_expect_eq(rp_client_command(client, fx_result_cb, &r, 0, (const char *[]){"PING"}, NULL), -EINVAL);
    close_client();
}

/* Argument lengths whose sum wraps a size_t describe memory nobody has:
 * refused as a failed allocation, before a byte is copied. */
Test(client, arguments_longer_than_memory_are_refused)
{
    rp_client_options opts;
    default_options(&opts, 2);
    open_client(&opts);
    result r = {0};
    const char *argv[] = {"SET", "k", "v"};
    size_t wrapping[] = {3, 1, SIZE_MAX - 8};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 3, argv, wrapping), -ENOMEM);
    fx_run_for(loop, 20);
    cr_assert_eq(r.calls, 0, "a refused command's callback ran");
    close_client();
}

Test(client, wrong_password_is_the_servers_error)
{
    fx_redis_command("CONFIG SET requirepass secret\r\n");
    rp_client_options opts;
    default_options(&opts, 2);
    opts.password = "wrong";
    open_client(&opts);
    result r = run(1, (const char *[]){"PING"});
    cr_expect_eq(r.status, 0, "a refused AUTH must not be a failure code: %s", rp_strerror(r.status));
    cr_expect_eq(r.type, REDIS_REPLY_ERROR);
    cr_expect(strstr(r.str, "WRONGPASS") != NULL, "got \"%s\"", r.str);
    cr_expect_eq(rp_pool_len(rp_client_pool(client)), 0);
    close_client();
}

Test(client, right_password_with_username_select_and_setname)
{
    fx_redis_command("ACL SETUSER alice on >pw ~* &* +@all\r\n");
    rp_client_options opts;
    default_options(&opts, 2);
    opts.username = "alice";
    opts.password = "pw";
    opts.db = 3;
    opts.client_name = "ringpool-test";
    open_client(&opts);
    result set = run(3, (const char *[]){"SET", "k", "in-db-3"});
    cr_expect_str_eq(set.str, "OK");
    result who = run(2, (const char *[]){"ACL", "WHOAMI"});
    cr_expect_str_eq(who.str, "alice");
    result name = run(2, (const char *[]){"CLIENT", "GETNAME"});
    cr_expect_str_eq(name.str, "ringpool-test");
    result moved = run(3, (const char *[]){"MOVE", "k", "0"}); /* 1 only if k lives outside db 0 */
    cr_expect_eq(moved.integer, 1, "SELECT 3 did not take effect");
    close_client();
}

Test(client, set_up_commands_go_out_in_one_round_trip)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.db = 2;
    opts.client_name = "one-trip";
    open_client(&opts);
    result r = run(1, (const char *[]){"PING"});
    cr_expect_str_eq(r.str, "PONG");
    /* The set-up's two commands came in one read: the server counts one
     * command per call, but "cmd=" of CLIENT LIST shows the last only. */
    result list = run(2, (const char *[]){"CLIENT", "INFO"});
    cr_expect(strstr(list.str, "name=one-trip") != NULL, "%s", list.str);
    cr_expect(strstr(list.str, "db=2") != NULL, "%s", list.str);
    close_client();
}

typedef struct many {
    int done, failed;
} many;

static void count_result(rp_client *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    many *m = data;
    m->done++;
    if (status || !reply || reply->type != REDIS_REPLY_INTEGER)
        m->failed++;
}

Test(client, many_commands_on_few_connections_are_all_answered)
{
    rp_client_options opts;
    default_options(&opts, 3);
    opts.pool.pool_timeout_ms = 10000;
    open_client(&opts);
    many m = {0};
    for (int i = 0; i < 5000; i++)
        cr_assert_eq(rp_client_command(client, count_result, &m, 2, (const char *[]){"INCR", "counter"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &m.done, 5000, 20000));
    cr_expect_eq(m.failed, 0);
    result total = run(2, (const char *[]){"GET", "counter"});
    cr_expect_str_eq(total.str, "5000");
    cr_expect_leq(rp_pool_len(rp_client_pool(client)), 3);
    close_client();
}

Test(client, retries_after_the_server_restarts)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.pool.health_check_idle_ms = 60000; /* hand out the dead connection */
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG");
    fx_redis_restart();
    result r = run(1, (const char *[]){"PING"});
    cr_expect_eq(r.status, 0, "not retried: %s", rp_strerror(r.status));
    cr_expect_str_eq(r.str, "PONG");
    close_client();
}

Test(client, no_retry_when_max_retries_is_zero)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.pool.health_check_idle_ms = 60000;
    opts.max_retries = 0;
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG");
    fx_redis_restart();
    result r = run(1, (const char *[]){"PING"});
    cr_expect(r.status == RP_EEOF || r.status == -ECONNRESET, "got %s", rp_strerror(r.status));
    close_client();
}

Test(client, gives_up_after_max_retries_with_backoff)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.pool.read_timeout_ms = 100;
    opts.max_retries = 2;
    open_client(&opts);
    uint64_t start = fx_now_ms();
    result r = {0};
    /* Every attempt times out: the server sleeps longer than the reads.
     * Marked idempotent, so a timeout (outcome unknown) is retried. */
    rp_command_options idempotent = {.flags = RP_CMD_IDEMPOTENT};
    cr_assert_gt(rp_client_command_ex(client, &idempotent, fx_result_cb, &r, 3,
                                      (const char *[]){"DEBUG", "SLEEP", "0.3"}, NULL),
                 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000));
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(r.status, -ETIMEDOUT);
    /* Three attempts of 100 ms, plus two backoffs of 8-24 and 8-40 ms. */
    cr_expect(took >= 316 && took < 2000, "took %lu ms", (unsigned long)took);
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    cr_expect_eq(st.misses, 3, "expected a fresh connection per attempt");
    close_client();
}

Test(client, error_replies_are_not_retried)
{
    rp_client_options opts;
    default_options(&opts, 2);
    open_client(&opts);
    result r = run(1, (const char *[]){"NOSUCHCOMMAND"});
    cr_expect_eq(r.status, 0);
    cr_expect_eq(r.type, REDIS_REPLY_ERROR);
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    cr_expect_eq(st.misses, 1);
    cr_expect_eq(rp_pool_idle_len(rp_client_pool(client)), 1);
    close_client();
}

static void close_flag_cb(rp_client *c, void *data)
{
    (void)c;
    *(bool *)data = true;
}

static bool closed;
static void on_closed(rp_client *c, void *data)
{
    (void)c;
    (void)data;
    closed = true;
}

Test(client, close_completes_sent_commands_and_fails_the_rest)
{
    rp_client_options opts;
    default_options(&opts, 1);
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG");
    result sent = {0}, queued[3] = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &sent, 3, (const char *[]){"DEBUG", "SLEEP", "0.1"}, NULL),
                 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rp_client_command(client, fx_result_cb, &queued[i], 1, (const char *[]){"PING"}, NULL), 0);
    fx_run_for(loop, 20); /* the first is sent; the rest wait for the one connection */
    closed = false;
    cr_assert_eq(rp_client_close(client, on_closed, NULL), 0);
    cr_expect_eq(rp_client_close(client, on_closed, NULL), RP_ECLOSED);
    result late = {0};
    cr_expect_eq(rp_client_command(client, fx_result_cb, &late, 1, (const char *[]){"PING"}, NULL), RP_ECLOSED);
    cr_assert(fx_run_until(loop, &closed, 5000));
    cr_expect_eq(sent.calls, 1);
    cr_expect_eq(sent.status, 0);
    cr_expect_str_eq(sent.str, "OK");
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(queued[i].calls, 1);
        cr_expect_eq(queued[i].status, RP_ECLOSED);
    }
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* ------------------------------------------------------------ safe retries */

/* The server stalls (DEBUG SLEEP on a socket of the test's own) with an
 * INCR in flight, past the read timeout; it runs what it received once it
 * wakes. Returns the counter's value afterwards. */
static long long incr_through_a_stall(rp_client_options *opts, result *r)
{
    open_client(opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG");
    int stall = fx_redis_send("*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n1.0\r\n");
    usleep(50000); /* the server is asleep */
    cr_assert_eq(rp_client_command(client, fx_result_cb, r, 2, (const char *[]){"INCR", "k"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r->calls, 1, 10000));
    fx_redis_wait_reply(stall);
    fx_run_for(loop, 100); /* commands the stall held run now */
    result get = run(2, (const char *[]){"GET", "k"});
    close_client();
    return strtoll(get.str, NULL, 10);
}

Test(client, a_timed_out_incr_is_not_sent_again)
{
    rp_client_options opts;
    default_options(&opts, 4);
    opts.pool.read_timeout_ms = 200;
    result r = {0};
    long long counter = incr_through_a_stall(&opts, &r);
    cr_expect_eq(r.status, -ETIMEDOUT, "got %s", rp_strerror(r.status));
    cr_expect_leq(counter, 1, "INCR applied %lld times", counter);
}

Test(client, retry_unsafe_restores_go_redis_rule)
{
    rp_client_options opts;
    default_options(&opts, 4);
    opts.pool.read_timeout_ms = 200;
    opts.retry_unsafe = true;
    result r = {0};
    long long counter = incr_through_a_stall(&opts, &r);
    cr_expect_gt(counter, 1, "the unsafe INCR was not resent");
}

Test(client, a_refused_dial_is_retried_and_succeeds_when_the_server_returns)
{
    rp_client_options opts;
    default_options(&opts, 4);
    open_client(&opts);
    fx_redis_stop();
    result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 2, (const char *[]){"INCR", "k"}, NULL), 0);
    rp_stats st = {0};
    uint64_t deadline = fx_now_ms() + 3000;
    while (!st.dial_errors && !r.calls && fx_now_ms() < deadline) {
        rp_loop_run(loop, RP_RUN_ONCE);
        rp_pool_stats(rp_client_pool(client), &st);
    }
    cr_assert_eq(st.dial_errors, 1, "the first dial was not refused");
    cr_assert_eq(r.calls, 0, "a refused dial ended the command");
    fx_redis_restart(); /* back within the first backoff */
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 5000));
    cr_expect_eq(r.status, 0, "got %s", rp_strerror(r.status));
    cr_expect_eq(r.integer, 1);
    close_client();
}

Test(client, readonly_is_retried_on_another_connection_then_returned)
{
    rp_client_options opts;
    default_options(&opts, 4);
    opts.max_retries = 2;
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG");
    char replicaof[96];
    char port[8];
    snprintf(port, sizeof port, "%d", fx_closed_port());
    snprintf(replicaof, sizeof replicaof, "*3\r\n$9\r\nREPLICAOF\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n", strlen(port), port);
    fx_redis_command(replicaof);
    result r = run(3, (const char *[]){"SET", "k", "v"});
    cr_expect_eq(r.status, 0);
    cr_expect_eq(r.type, REDIS_REPLY_ERROR);
    cr_expect(!strncmp(r.str, "READONLY", 8), "%s", r.str);
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    cr_expect_eq(st.stale_conns, 3, "each READONLY connection should be removed (%u)", st.stale_conns);
    fx_redis_command("*3\r\n$9\r\nREPLICAOF\r\n$2\r\nNO\r\n$3\r\nONE\r\n");
    cr_expect_str_eq(run(3, (const char *[]){"SET", "k", "v"}).str, "OK");
    close_client();
}

/* ------------------------------------------------- what keeps a run going */

Test(client, a_default_run_returns_only_after_close_with_a_command_in_flight)
{
    rp_client_options opts;
    default_options(&opts, 2);
    open_client(&opts);
    result idle[2] = {{0}};
    for (int i = 0; i < 2; i++) /* two connections, both idle after this */
        cr_assert_eq(rp_client_command(client, fx_result_cb, &idle[i], 1, (const char *[]){"PING"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &idle[1].calls, 1, 5000));
    result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 1, (const char *[]){"PING"}, NULL), 0);
    bool closed_now = false;
    cr_assert_eq(rp_client_close(client, close_flag_cb, &closed_now), 0);
    cr_assert_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(r.calls, 1);
    cr_expect(closed_now, "RP_RUN_DEFAULT returned before the close callback ran");
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(client, a_small_reply_limit_still_reads_the_command_table)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.max_reply_bytes = 4096; /* COMMAND's reply is about 90 KB */
    open_client(&opts);
    result r = run(3, (const char *[]){"SET", "k", "v"});
    cr_expect_eq(r.status, 0, "got %s", rp_strerror(r.status));
    cr_expect_str_eq(r.str, "OK");
    char big[8192];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    run(3, (const char *[]){"SET", "big", big});
    cr_expect_eq(run(2, (const char *[]){"GET", "big"}).status, -EMSGSIZE, "the caller's limit no longer holds");
    close_client();
}

/* ------------------------------------------------------ blocking commands */

Test(client, a_blocking_command_may_block_past_the_read_timeout)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.pool.read_timeout_ms = 200;
    open_client(&opts);
    uint64_t start = fx_now_ms();
    result r = run(3, (const char *[]){"BLPOP", "empty", "1"});
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(r.status, 0, "got %s", rp_strerror(r.status));
    cr_expect(r.type == REDIS_REPLY_NIL || r.type == REDIS_REPLY_ARRAY, "type %d", r.type);
    cr_expect(took >= 900 && took < 3000, "took %lu ms", (unsigned long)took);
    close_client();
}

Test(client, a_command_blocking_for_ever_has_no_deadline)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.pool.read_timeout_ms = 200;
    open_client(&opts);
    result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 3, (const char *[]){"BLPOP", "q", "0"}, NULL), 0);
    fx_run_for(loop, 600);
    cr_expect_eq(r.calls, 0, "BLPOP q 0 ended after %s", rp_strerror(r.status));
    fx_redis_command("*3\r\n$5\r\nRPUSH\r\n$1\r\nq\r\n$4\r\nitem\r\n");
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 3000));
    cr_expect_eq(r.status, 0);
    cr_expect_eq(r.type, REDIS_REPLY_ARRAY);
    close_client();
}

/* ------------------------------------------------------- cancel and abort */

static int64_t command_id(result *r, int argc, const char **argv)
{
    int64_t id = rp_client_command_ex(client, NULL, fx_result_cb, r, argc, argv, NULL);
    cr_assert_gt(id, 0);
    return id;
}

Test(client, a_command_cancelled_before_its_send_is_never_sent)
{
    rp_client_options opts;
    default_options(&opts, 2);
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG"); /* a connection, idle */
    result r = {0};
    int64_t id = command_id(&r, 2, (const char *[]){"INCR", "k"});
    cr_assert_eq(rp_client_cancel(client, id), 0);
    cr_expect_eq(r.calls, 0, "the callback ran inside rp_client_cancel");
    cr_expect_eq(rp_client_cancel(client, id), -ENOENT);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 3000));
    cr_expect_eq(r.status, -ECANCELED);
    result get = run(2, (const char *[]){"GET", "k"});
    cr_expect_eq(get.type, REDIS_REPLY_NIL, "the cancelled INCR ran: %s", get.str);
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    cr_expect_eq(st.stale_conns, 0, "a connection was lost to the cancel");
    close_client();
}

Test(client, a_command_cancelled_after_its_send_ends_now_and_its_reply_is_skipped)
{
    rp_client_options opts;
    default_options(&opts, 1);
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG");
    result slow = {0};
    int64_t id = command_id(&slow, 3, (const char *[]){"DEBUG", "SLEEP", "0.2"});
    fx_run_for(loop, 50); /* sent, and running */
    cr_assert_eq(rp_client_cancel(client, id), 0);
    cr_assert(fx_run_until_count(loop, &slow.calls, 1, 100), "the cancel waited for the server");
    cr_expect_eq(slow.status, -ECANCELED);
    result ping = run(1, (const char *[]){"PING"}); /* waits for the one connection */
    cr_expect_str_eq(ping.str, "PONG", "the next command got the cancelled one's reply");
    cr_expect_eq(slow.calls, 1);
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    cr_expect_eq(st.stale_conns, 0, "the connection was closed, not kept");
    close_client();
}

Test(client, a_cancelled_blocking_command_gives_its_connection_up)
{
    rp_client_options opts;
    default_options(&opts, 1);
    open_client(&opts);
    result blocked = {0};
    int64_t id = command_id(&blocked, 3, (const char *[]){"BLPOP", "q", "0"});
    fx_run_for(loop, 100); /* sent, and blocking for ever */
    cr_assert_eq(rp_client_cancel(client, id), 0);
    cr_assert(fx_run_until_count(loop, &blocked.calls, 1, 1000));
    cr_expect_eq(blocked.status, -ECANCELED);
    result ping = run(1, (const char *[]){"PING"}); /* pool_size 1: needs the connection back */
    cr_expect_str_eq(ping.str, "PONG");
    close_client();
}

Test(client, abort_ends_a_command_blocked_for_ever_at_once)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.pool.read_timeout_ms = 0;
    open_client(&opts);
    result blocked = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &blocked, 3, (const char *[]){"BLPOP", "q", "0"}, NULL), 0);
    fx_run_for(loop, 100);
    bool done = false;
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_client_abort(client, close_flag_cb, &done), 0);
    cr_expect_eq(rp_client_close(client, close_flag_cb, &done), RP_ECLOSED);
    cr_assert(fx_run_until(loop, &done, 2000), "the abort did not finish");
    cr_expect_lt(fx_now_ms() - start, 200, "the abort waited for the server");
    cr_expect_eq(blocked.calls, 1);
    cr_expect_eq(blocked.status, RP_ECLOSED);
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(client, a_command_deadline_bounds_the_whole_command)
{
    rp_client_options opts;
    default_options(&opts, 1);
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG");
    result r = {0};
    rp_command_options bounded = {.timeout_ms = 150};
    uint64_t start = fx_now_ms();
    cr_assert_gt(rp_client_command_ex(client, &bounded, fx_result_cb, &r, 3,
                                      (const char *[]){"DEBUG", "SLEEP", "0.5"}, NULL),
                 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 3000));
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(r.status, -ETIMEDOUT, "got %s", rp_strerror(r.status));
    cr_expect(took >= 140 && took < 450, "took %lu ms", (unsigned long)took);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG", "the connection was not kept in step");
    close_client();
}

/* ------------------------------------------------------------------ hooks */

typedef struct command_log {
    int starts, ends, last_status, last_retries;
    uint64_t last_ns;
    char name[16];
} command_log;

static void on_command_start(void *data, int argc, const char *const *argv, const size_t *argvlen)
{
    (void)argc;
    command_log *log = data;
    log->starts++;
    snprintf(log->name, sizeof log->name, "%.*s", (int)argvlen[0], argv[0]);
}

static void on_command_end(void *data, int argc, const char *const *argv, const size_t *argvlen,
                           uint64_t duration_ns, int status, int retries)
{
    (void)argc;
    (void)argv;
    (void)argvlen;
    command_log *log = data;
    log->ends++;
    log->last_ns = duration_ns;
    log->last_status = status;
    log->last_retries = retries;
}

Test(client, command_hooks_see_each_command_with_its_duration_status_and_retries)
{
    rp_client_options opts;
    default_options(&opts, 2);
    open_client(&opts);
    command_log log = {0};
    rp_hooks hooks = {.data = &log, .command_start = on_command_start, .command_end = on_command_end};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0);
    run(3, (const char *[]){"SET", "k", "v"});
    cr_expect_eq(log.starts, 1);
    cr_expect_eq(log.ends, 1);
    cr_expect_str_eq(log.name, "SET");
    cr_expect_eq(log.last_status, 0);
    cr_expect_eq(log.last_retries, 0);
    cr_expect_gt(log.last_ns, 0);
    run(1, (const char *[]){"NOSUCHCOMMAND"});
    cr_expect_eq(log.last_status, 0, "an error reply is a reply");
    fx_redis_restart(); /* the idle connection dies: the next command is retried */
    usleep(50000);
    run(2, (const char *[]){"GET", "k"});
    cr_expect_eq(log.ends, 3);
    cr_expect_eq(log.last_retries, 1, "the retry was not counted");
    close_client();
}

Test(client, blpop_5_completes_after_5_s_with_the_default_read_timeout)
{
    rp_client_options opts;
    default_options(&opts, 2); /* read_timeout_ms 3000 */
    open_client(&opts);
    uint64_t start = fx_now_ms();
    result r = run(3, (const char *[]){"BLPOP", "nothing", "5"});
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(r.status, 0, "got %s", rp_strerror(r.status));
    cr_expect(took >= 4900 && took < 7000, "took %lu ms", (unsigned long)took);
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    cr_expect_eq(st.misses, 1, "BLPOP was sent again on another connection");
    close_client();
}

/* A hook may call any rp_ function: closing the client from command_start
 * ends that very command with RP_ECLOSED, once, after the call returned. */
static void close_in_command_start(void *data, int argc, const char *const *argv, const size_t *argvlen)
{
    (void)argc;
    (void)argv;
    (void)argvlen;
    cr_assert_eq(rp_client_close(client, close_flag_cb, data), 0);
}

Test(client, closing_the_client_in_the_command_start_hook)
{
    rp_client_options opts;
    default_options(&opts, 2);
    open_client(&opts);
    bool closed_now = false;
    rp_hooks hooks = {.data = &closed_now, .command_start = close_in_command_start};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0);
    result r = {0};
    cr_assert_gt(rp_client_command_ex(client, NULL, fx_result_cb, &r, 2, (const char *[]){"INCR", "hooked"}, NULL), 0);
    cr_expect_eq(r.calls, 0, "the callback ran inside the call");
    cr_assert(fx_run_until(loop, &closed_now, 3000), "the close never finished");
    cr_expect_eq(r.calls, 1);
    cr_expect_eq(r.status, RP_ECLOSED, "got %s", rp_strerror(r.status));
    cr_expect_eq(rp_loop_free(loop), 0);
    default_options(&opts, 2);
    open_client(&opts);
    cr_expect_eq(run(2, (const char *[]){"GET", "hooked"}).type, REDIS_REPLY_NIL, "the closed client's INCR ran");
    close_client();
}

/* Hooks set while a command, its get and its dial are under way: none of
 * them was timed, so none is reported; what starts afterwards is. */
typedef struct timing_log {
    int dial_ends, get_ends, command_ends;
    uint64_t longest_ns;
} timing_log;

static void note_duration(timing_log *log, uint64_t ns)
{
    if (ns > log->longest_ns)
        log->longest_ns = ns;
}

static void timing_dial_end(void *data, const char *addr, uint64_t ns, int status)
{
    (void)addr;
    (void)status;
    ((timing_log *)data)->dial_ends++;
    note_duration(data, ns);
}

static void timing_get_end(void *data, uint64_t ns, int status)
{
    (void)status;
    ((timing_log *)data)->get_ends++;
    note_duration(data, ns);
}

static void timing_command_end(void *data, int argc, const char *const *argv, const size_t *argvlen, uint64_t ns,
                               int status, int retries)
{
    (void)argc;
    (void)argv;
    (void)argvlen;
    (void)status;
    (void)retries;
    ((timing_log *)data)->command_ends++;
    note_duration(data, ns);
}

Test(client, hooks_set_while_work_is_in_flight_report_only_what_they_timed)
{
    rp_client_options opts;
    default_options(&opts, 2);
    open_client(&opts);
    result first = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &first, 1, (const char *[]){"PING"}, NULL), 0);
    timing_log log = {0};
    rp_hooks hooks = {.data = &log, .dial_end = timing_dial_end, .get_end = timing_get_end,
                      .command_end = timing_command_end};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0); /* the dial, the get and PING are under way */
    cr_assert(fx_run_until_count(loop, &first.calls, 1, 5000));
    cr_expect_str_eq(first.str, "PONG");
    cr_expect_eq(log.dial_ends + log.get_ends + log.command_ends, 0,
                 "untimed work reported: %d dials, %d gets, %d commands, longest %llu ns", log.dial_ends,
                 log.get_ends, log.command_ends, (unsigned long long)log.longest_ns);
    uint64_t start = fx_now_ms();
    run(2, (const char *[]){"ECHO", "timed"});
    uint64_t took_ns = (fx_now_ms() - start + 1) * 1000000ull;
    cr_expect_eq(log.command_ends, 1, "the timed command was not reported");
    cr_expect_leq(log.longest_ns, took_ns, "a duration of %llu ns, longer than the test's %llu",
                  (unsigned long long)log.longest_ns, (unsigned long long)took_ns);
    close_client();
}

/* A server of the test's own that takes connections (the kernel's backlog
 * completes them) and never answers; a client with nothing to set up
 * (max_retries 0: no COMMAND) and no read timeout waits on it for ever. */
static int silent_server(rp_client_options *opts, int lanes)
{
    int port;
    int fd = fx_listener(16, &port);
    static char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rp_client_options_init(opts);
    opts->pool.addr = addr;
    opts->pool.pool_size = 2;
    opts->pool.read_timeout_ms = 0;
    opts->max_retries = 0;
    opts->autopipeline_conns = lanes;
    return fd;
}

/* The cancelled command's reply never comes: its connection, held for
 * that reply, must not hold up an abort. */
static void abort_with_a_skipped_reply_held(int lanes)
{
    rp_client_options opts;
    int server = silent_server(&opts, lanes);
    open_client(&opts);
    result r = {0};
    int64_t id = command_id(&r, 2, (const char *[]){"GET", "k"});
    fx_run_for(loop, 50); /* sent */
    cr_assert_eq(rp_client_cancel(client, id), 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 1000));
    cr_expect_eq(r.status, -ECANCELED, "got %s", rp_strerror(r.status));
    bool done = false;
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_client_abort(client, close_flag_cb, &done), 0);
    cr_assert(fx_run_until(loop, &done, 2000), "the abort waited for a reply that never comes");
    cr_expect_lt(fx_now_ms() - start, 500, "the abort waited for the server");
    cr_expect_eq(r.calls, 1);
    cr_expect_eq(rp_loop_free(loop), 0);
    close(server);
}

Test(client, abort_closes_a_connection_held_for_a_cancelled_commands_reply)
{
    abort_with_a_skipped_reply_held(0);
}

Test(client, abort_closes_a_lane_held_for_a_cancelled_commands_reply)
{
    abort_with_a_skipped_reply_held(1);
}

/* ------------------------------------------------ argument copies, secrets */

/* The hooks get the client's copies of the arguments: each one ends with
 * a NUL (not counted in argvlen), so a hook may print it with %s. */
static void check_terminated(void *data, int argc, const char *const *argv, const size_t *argvlen)
{
    int *checked = data;
    for (int i = 0; i < argc; i++)
        cr_expect_eq(argv[i][argvlen[i]], '\0', "argument %d (\"%.*s\") runs on", i, (int)argvlen[i], argv[i]);
    ++*checked;
}

Test(client, hook_argument_copies_are_nul_terminated)
{
    rp_client_options opts;
    default_options(&opts, 2);
    open_client(&opts);
    int checked = 0;
    rp_hooks hooks = {.data = &checked, .command_start = check_terminated};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0);
    run(3, (const char *[]){"SET", "user", "secret"});
    const char binary[] = {'v', 0, 'x'};
    result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 3, (const char *[]){"SET", "bin", binary},
                                   (const size_t[]){3, 3, sizeof binary}),
                 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 3000));
    cr_expect_eq(checked, 2);
    cr_expect_eq(run(2, (const char *[]){"STRLEN", "bin"}).integer, 3, "the NUL was counted in the value");
    close_client();
}

/* Freed memory that held the password: every block the library frees is
 * scanned first (the fixture's allocator). */
#define SECRET "s3cr3t-pw-0123"

Test(client, the_password_is_zeroed_before_its_memory_is_freed)
{
    fx_redis_command("*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$14\r\n" SECRET "\r\n");
    fx_secret_frees_begin(SECRET);
    rp_client_options opts;
    default_options(&opts, 2);
    opts.password = SECRET;
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG", "AUTH failed");
    close_client();
    int frees = fx_secret_frees_end();
    cr_expect_eq(frees, 0, "%d blocks freed with the password in them", frees);
}

/* A password long enough that the set-up commands after AUTH grow the
 * connection's write buffer. */
Test(client, a_long_password_is_zeroed_too)
{
    static char password[400];
    memset(password, 'p', sizeof password - 1);
    memcpy(password, SECRET, strlen(SECRET));
    char config[600];
    snprintf(config, sizeof config, "*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$%zu\r\n%s\r\n",
             strlen(password), password);
    fx_redis_command(config);
    fx_secret_frees_begin(SECRET);
    rp_client_options opts;
    default_options(&opts, 2);
    opts.password = password;
    opts.db = 1;
    opts.client_name = "a-client-name-long-enough-to-grow-the-write-buffer-past-what-auth-left-in-it";
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG", "AUTH failed");
    close_client();
    int frees = fx_secret_frees_end();
    cr_expect_eq(frees, 0, "%d blocks freed with the password in them", frees);
}

/* -------------------------------------------- connection-state commands */

/* MULTI, SELECT or WATCH through the client change the state of the
 * connection they ran on; it is closed after the reply, so the state
 * never reaches a later command (pool_size 1: the next command would
 * otherwise take that very connection). */
Test(client, a_state_command_never_hands_its_state_to_the_next_command)
{
    rp_client_options opts;
    default_options(&opts, 1);
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"MULTI"}).str, "OK");
    result set = run(3, (const char *[]){"SET", "k", "v"});
    cr_expect_str_eq(set.str, "OK", "the SET after MULTI got %s", set.str);
    cr_expect_str_eq(run(2, (const char *[]){"SELECT", "5"}).str, "OK");
    cr_expect_str_eq(run(3, (const char *[]){"SET", "where", "db0"}).str, "OK");
    cr_expect_eq(run(3, (const char *[]){"MOVE", "where", "5"}).integer, 1, "the SET after SELECT 5 left db 0");
    cr_expect_str_eq(run(2, (const char *[]){"WATCH", "w"}).str, "OK");
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    cr_expect_eq(st.total_conns, 0, "the WATCHing connection went back to the pool");
    /* The table's first, middle and last names, in any case, with and
     * without an error reply: each closes its connection. */
    const char *names[] = {"asking", "Exec", "readWrite", "UNWATCH", "watch"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        run(i == 4 ? 2 : 1, (const char *[]){names[i], "w"});
        rp_pool_stats(rp_client_pool(client), &st);
        cr_expect_eq(st.total_conns, 0, "the connection that ran %s went back to the pool", names[i]);
    }
    cr_expect_eq(run(1, (const char *[]){"PING"}).status, 0);
    rp_pool_stats(rp_client_pool(client), &st);
    cr_expect_eq(st.total_conns, 1, "PING's connection was closed");
    close_client();
}

/* The pool's get_end hook runs just before the get's callback: closing
 * the client there ends the command, and the connection the get brought
 * goes back to the pool, so the close finishes. */
static void close_in_get_end(void *data, uint64_t duration_ns, int status)
{
    (void)duration_ns;
    (void)status;
    rp_client_close(client, close_flag_cb, data); /* RP_ECLOSED after the first */
}

static void close_in_the_get_end_hook(int lanes)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.autopipeline_conns = lanes;
    open_client(&opts);
    bool closed_now = false;
    rp_hooks hooks = {.data = &closed_now, .get_end = close_in_get_end};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0);
    result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 2, (const char *[]){"INCR", "hooked"}, NULL), 0);
    cr_assert(fx_run_until(loop, &closed_now, 3000), "the close never finished");
    cr_expect_eq(r.calls, 1);
    cr_expect_eq(r.status, RP_ECLOSED, "got %s", rp_strerror(r.status));
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(client, closing_the_client_in_the_get_end_hook) { close_in_the_get_end_hook(0); }

Test(client, closing_the_client_in_the_get_end_hook_with_lanes) { close_in_the_get_end_hook(1); }

/* The command_end hook of the first reply aborts the client: the other
 * commands end with RP_ECLOSED, each once, and the abort finishes. */
static void abort_in_command_end(void *data, int argc, const char *const *argv, const size_t *argvlen,
                                 uint64_t duration_ns, int status, int retries)
{
    (void)argc, (void)argv, (void)argvlen, (void)duration_ns, (void)status, (void)retries;
    rp_client_abort(client, close_flag_cb, data); /* RP_ECLOSED after the first */
}

static void abort_in_the_command_end_hook(int lanes)
{
    rp_client_options opts;
    default_options(&opts, 2);
    opts.autopipeline_conns = lanes;
    open_client(&opts);
    cr_expect_str_eq(run(1, (const char *[]){"PING"}).str, "PONG");
    bool closed_now = false;
    rp_hooks hooks = {.data = &closed_now, .command_end = abort_in_command_end};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0);
    result r[4] = {{0}};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r[0], 1, (const char *[]){"PING"}, NULL), 0);
    for (int i = 1; i < 4; i++)
        cr_assert_eq(rp_client_command(client, fx_result_cb, &r[i], 3, (const char *[]){"DEBUG", "SLEEP", "0.3"},
                                       NULL),
                     0);
    cr_assert(fx_run_until(loop, &closed_now, 3000), "the abort never finished");
    fx_run_for(loop, 20);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(r[i].calls, 1, "command %d called back %d times", i, r[i].calls);
    cr_expect_eq(r[0].status, 0, "%s", rp_strerror(r[0].status));
    for (int i = 1; i < 4; i++)
        cr_expect_eq(r[i].status, RP_ECLOSED, "%d: %s", i, rp_strerror(r[i].status));
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(client, aborting_the_client_in_the_command_end_hook) { abort_in_the_command_end_hook(0); }

Test(client, aborting_the_client_in_the_command_end_hook_with_lanes) { abort_in_the_command_end_hook(1); }
