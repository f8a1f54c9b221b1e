/* The Redis layer on a connection: RESP out, hiredis's reader in, FIFO
 * matching, and every failure mode failing each owed command once. */
#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(redis, .init = fx_setup, .fini = fx_teardown, .timeout = 60);

static rp_loop *loop;
static rp_pool *pool;

static void open_pool_at(const char *addr, uint32_t read_timeout_ms)
{
    rp_pool_options opts;
    fx_pool_options(&opts, 4);
    opts.addr = addr;
    opts.read_timeout_ms = read_timeout_ms;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
}

typedef struct reply_log {
    int calls;
    int status;
    int type;
    long long integer;
    char *str;
    size_t len;
} reply_log;

static void log_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    reply_log *log = data;
    log->calls++;
    log->status = status;
    if (reply) {
        log->type = reply->type;
        log->integer = reply->integer;
        free(log->str);
        log->len = reply->len;
        log->str = reply->str ? malloc(reply->len + 1) : NULL;
        if (log->str) {
            memcpy(log->str, reply->str, reply->len);
            log->str[reply->len] = '\0';
        }
    }
}

static void run_until_replies(reply_log *logs, int n)
{
    uint64_t deadline = fx_now_ms() + 10000;
    for (int i = 0; i < n; i++)
        while (logs[i].calls == 0 && fx_now_ms() < deadline)
            rp_loop_run(loop, RP_RUN_ONCE);
}

static void command(rp_conn *conn, reply_log *log, int argc, const char **argv)
{
    cr_assert_eq(rp_conn_command(conn, log_reply, log, argc, argv, NULL), 0);
}

Test(redis, set_and_get_binary_safe_values)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    const char value[] = {'a', '\0', '\r', '\n', 'b'};
    const char *set[] = {"SET", "key", value};
    size_t set_len[] = {3, 3, sizeof value};
    reply_log logs[2] = {0};
    cr_assert_eq(rp_conn_command(conn, log_reply, &logs[0], 3, set, set_len), 0);
    command(conn, &logs[1], 2, (const char *[]){"GET", "key"});
    run_until_replies(logs, 2);
    cr_expect_eq(logs[0].status, 0);
    cr_expect_eq(logs[0].type, REDIS_REPLY_STATUS);
    cr_expect_str_eq(logs[0].str, "OK");
    cr_expect_eq(logs[1].type, REDIS_REPLY_STRING);
    cr_expect_eq(logs[1].len, sizeof value);
    cr_expect_eq(memcmp(logs[1].str, value, sizeof value), 0);
    free(logs[0].str);
    free(logs[1].str);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "a connection with no owed reply went back");
    fx_close_and_free(loop, pool);
}

Test(redis, pipelined_replies_match_commands_in_order)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    enum { N = 2000 };
    static reply_log logs[N];
    memset(logs, 0, sizeof logs);
    char num[16];
    for (int i = 0; i < N; i++) {
        snprintf(num, sizeof num, "%d", i);
        command(conn, &logs[i], 2, (const char *[]){"ECHO", num});
    }
    run_until_replies(logs, N);
    for (int i = 0; i < N; i++) {
        snprintf(num, sizeof num, "%d", i);
        cr_assert_eq(logs[i].calls, 1);
        cr_assert_str_eq(logs[i].str, num, "reply %d out of order", i);
        free(logs[i].str);
    }
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

/* A large batch leaves as soon as it is as large as what the server owes,
 * without waiting for the pass to end; small ones wait and go together. */
Test(redis, a_large_batch_leaves_early_and_a_small_one_waits)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    static reply_log logs[40];
    memset(logs, 0, sizeof logs);
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    for (int i = 0; i < 15; i++)
        command(conn, &logs[i], 1, (const char *[]){"PING"});
    rp_loop_stats_get(loop, &after);
    cr_expect_eq(after.enters, before.enters, "15 commands left before the pass ended");
    for (int i = 15; i < 40; i++)
        command(conn, &logs[i], 1, (const char *[]){"PING"});
    rp_loop_stats_get(loop, &after);
    cr_expect_eq(after.enters, before.enters + 1, "the 16th command sent the batch at once");
    run_until_replies(logs, 40);
    for (int i = 0; i < 40; i++) {
        cr_expect_eq(logs[i].calls, 1);
        cr_expect_str_eq(logs[i].str, "PONG");
        free(logs[i].str);
    }
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

Test(redis, error_reply_is_a_reply_and_the_connection_stays_good)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    reply_log logs[2] = {0};
    command(conn, &logs[0], 1, (const char *[]){"NOSUCHCOMMAND"});
    command(conn, &logs[1], 1, (const char *[]){"PING"});
    run_until_replies(logs, 2);
    cr_expect_eq(logs[0].status, 0);
    cr_expect_eq(logs[0].type, REDIS_REPLY_ERROR);
    cr_expect(logs[0].str && strncmp(logs[0].str, "ERR", 3) == 0);
    cr_expect_str_eq(logs[1].str, "PONG");
    free(logs[0].str);
    free(logs[1].str);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_idle_len(pool), 1);
    fx_close_and_free(loop, pool);
}

Test(redis, bad_arguments)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    reply_log log = {0};
    const char *ping[] = {"PING"};
    cr_expect_eq(rp_conn_command(conn, NULL, NULL, 1, ping, NULL), -EINVAL);
    cr_expect_eq(rp_conn_command(conn, log_reply, &log, 0, ping, NULL), -EINVAL);
    cr_expect_eq(rp_conn_command(conn, log_reply, &log, 1, NULL, NULL), -EINVAL);
    cr_expect_eq(rp_conn_command(NULL, log_reply, &log, 1, ping, NULL), -EINVAL);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_conn_command(conn, log_reply, &log, 1, ping, NULL), RP_ECLOSED);
    fx_run_for(loop, 20);
    cr_expect_eq(log.calls, 0);
    fx_close_and_free(loop, pool);
}

Test(redis, server_killed_mid_pipeline_fails_each_command_once)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    reply_log logs[50] = {0};
    command(conn, &logs[0], 3, (const char *[]){"BLPOP", "nothing", "0"});
    for (int i = 1; i < 50; i++)
        command(conn, &logs[i], 1, (const char *[]){"PING"});
    fx_run_for(loop, 50);
    fx_redis_stop();
    run_until_replies(logs, 50);
    for (int i = 0; i < 50; i++) {
        cr_expect_eq(logs[i].calls, 1);
        cr_expect_lt(logs[i].status, 0, "command %d did not fail", i);
    }
    cr_expect_eq(logs[0].status, RP_EEOF, "got %s", rp_strerror(logs[0].status));
    reply_log after = {0};
    cr_expect_eq(rp_conn_command(conn, log_reply, &after, 1, (const char *[]){"PING"}, NULL), RP_EEOF,
                 "the error is not sticky");
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0, "a failed connection went back to the pool");
    fx_redis_restart();
    rp_conn *fresh = fx_get_conn(loop, pool);
    reply_log pong = {0};
    command(fresh, &pong, 1, (const char *[]){"PING"});
    run_until_replies(&pong, 1);
    cr_expect_str_eq(pong.str, "PONG");
    free(pong.str);
    rp_pool_put(pool, fresh);
    fx_close_and_free(loop, pool);
}

Test(redis, huge_value_round_trips)
{
    open_pool_at(fx_redis_addr, 10000);
    rp_conn *conn = fx_get_conn(loop, pool);
    size_t size = 32u << 20;
    char *value = malloc(size);
    for (size_t i = 0; i < size; i++)
        value[i] = (char)('a' + i % 26);
    reply_log logs[2] = {0};
    const char *set[] = {"SET", "huge", value};
    size_t set_len[] = {3, 4, size};
    cr_assert_eq(rp_conn_command(conn, log_reply, &logs[0], 3, set, set_len), 0);
    command(conn, &logs[1], 2, (const char *[]){"GET", "huge"});
    run_until_replies(logs, 2);
    cr_expect_eq(logs[0].status, 0);
    cr_assert_eq(logs[1].status, 0, "%s", rp_strerror(logs[1].status));
    cr_expect_eq(logs[1].len, size);
    cr_expect_eq(memcmp(logs[1].str, value, size), 0);
    free(value);
    free(logs[0].str);
    free(logs[1].str);
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
}

Test(redis, reply_over_the_limit_fails_with_emsgsize)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_assert_eq(rp_conn_set_max_reply_bytes(conn, 64 * 1024), 0);
    reply_log logs[3] = {0};
    command(conn, &logs[0], 4, (const char *[]){"SETRANGE", "big", "1000000", "x"});
    command(conn, &logs[1], 2, (const char *[]){"GET", "big"});
    command(conn, &logs[2], 1, (const char *[]){"PING"});
    run_until_replies(logs, 3);
    cr_expect_eq(logs[0].status, 0);
    cr_expect_eq(logs[1].status, -EMSGSIZE, "got %s", rp_strerror(logs[1].status));
    cr_expect_eq(logs[2].status, -EMSGSIZE);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0);
    fx_close_and_free(loop, pool);
}

/* A fake server: our own listener, to send what a real one never would. */
typedef struct fake {
    int listener, peer, port;
    char addr[64];
} fake;

static rp_conn *fake_connect(fake *f, uint32_t read_timeout_ms)
{
    f->listener = fx_listener(16, &f->port);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", f->port);
    open_pool_at(f->addr, read_timeout_ms);
    rp_conn *conn = fx_get_conn(loop, pool);
    f->peer = accept(f->listener, NULL, NULL);
    cr_assert_geq(f->peer, 0);
    return conn;
}

static void fake_answer(fake *f, const char *bytes)
{
    char request[4096];
    fx_run_for(loop, 30);
    cr_assert_gt(read(f->peer, request, sizeof request), 0, "the command never arrived");
    cr_assert_eq(write(f->peer, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
}

static void fake_close(fake *f)
{
    fx_close_and_free(loop, pool);
    close(f->peer);
    close(f->listener);
}

Test(redis, garbage_from_the_server_fails_every_owed_command_once)
{
    fake f;
    rp_conn *conn = fake_connect(&f, 3000);
    reply_log logs[3] = {0};
    for (int i = 0; i < 3; i++)
        command(conn, &logs[i], 1, (const char *[]){"PING"});
    fake_answer(&f, "+PONG\r\n!!garbage\r\n");
    run_until_replies(logs, 3);
    cr_expect_eq(logs[0].status, 0);
    cr_expect_str_eq(logs[0].str, "PONG");
    for (int i = 1; i < 3; i++) {
        cr_expect_eq(logs[i].calls, 1);
        cr_expect_eq(logs[i].status, -EPROTO, "got %s", rp_strerror(logs[i].status));
    }
    free(logs[0].str);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0);
    fake_close(&f);
}

Test(redis, more_replies_than_commands_marks_the_connection_bad)
{
    fake f;
    rp_conn *conn = fake_connect(&f, 3000);
    reply_log log = {0};
    command(conn, &log, 1, (const char *[]){"PING"});
    fake_answer(&f, "+PONG\r\n+EXTRA\r\n");
    run_until_replies(&log, 1);
    cr_expect_eq(log.status, 0);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0, "an out-of-step connection went back to the pool");
    free(log.str);
    fake_close(&f);
}

Test(redis, silent_server_times_out)
{
    fake f;
    rp_conn *conn = fake_connect(&f, 150);
    reply_log logs[2] = {0};
    command(conn, &logs[0], 1, (const char *[]){"PING"});
    command(conn, &logs[1], 1, (const char *[]){"PING"});
    uint64_t start = fx_now_ms();
    run_until_replies(logs, 2);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(logs[0].status, -ETIMEDOUT);
    cr_expect_eq(logs[1].status, -ETIMEDOUT);
    cr_expect(took >= 150 && took < 400, "timed out after %lu ms", (unsigned long)took);
    rp_pool_put(pool, conn);
    fake_close(&f);
}

/* The first reply's callback works for 200 ms, then sends a command the
 * server answers 150 ms later: the 300 ms read timeout counts from the
 * send, not from the wake-up that ran the callback. */
typedef struct slow_callback {
    rp_conn *conn;
    reply_log first, second;
} slow_callback;

static void work_then_command(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    slow_callback *slow = data;
    log_reply(conn, reply, status, &slow->first);
    uint64_t until = fx_now_ms() + 200;
    while (fx_now_ms() < until)
        ;
    command(slow->conn, &slow->second, 3, (const char *[]){"DEBUG", "SLEEP", "0.15"});
}

Test(redis, read_timeout_counts_from_the_send_after_a_slow_callback)
{
    open_pool_at(fx_redis_addr, 300);
    slow_callback slow = {.conn = fx_get_conn(loop, pool)};
    const char *ping[] = {"PING"};
    cr_assert_eq(rp_conn_command(slow.conn, work_then_command, &slow, 1, ping, NULL), 0);
    run_until_replies(&slow.second, 1);
    cr_expect_eq(slow.first.status, 0);
    cr_expect_eq(slow.second.status, 0, "DEBUG SLEEP ended with %s", rp_strerror(slow.second.status));
    cr_expect_eq(slow.second.type, REDIS_REPLY_STATUS);
    rp_pool_put(pool, slow.conn);
    free(slow.first.str);
    free(slow.second.str);
    fx_close_and_free(loop, pool);
}

Test(redis, commands_leave_in_one_send)
{
    fake f;
    rp_conn *conn = fake_connect(&f, 3000);
    reply_log logs[3] = {0};
    for (int i = 0; i < 3; i++)
        command(conn, &logs[i], 1, (const char *[]){"PING"});
    fx_run_for(loop, 30);
    char request[256];
    ssize_t n = recv(f.peer, request, sizeof request, MSG_DONTWAIT);
    const char *three = "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
    cr_expect_eq(n, (ssize_t)strlen(three));
    cr_expect_eq(memcmp(request, three, strlen(three)), 0);
    cr_assert_eq(write(f.peer, "+PONG\r\n+PONG\r\n+PONG\r\n", 21), 21);
    run_until_replies(logs, 3);
    for (int i = 0; i < 3; i++) {
        cr_expect_str_eq(logs[i].str, "PONG");
        free(logs[i].str);
    }
    rp_pool_put(pool, conn);
    fake_close(&f);
}

Test(redis, removing_a_connection_cancels_owed_commands)
{
    fake f;
    rp_conn *conn = fake_connect(&f, 3000);
    reply_log logs[2] = {0};
    command(conn, &logs[0], 1, (const char *[]){"PING"});
    fx_run_for(loop, 20);
    command(conn, &logs[1], 1, (const char *[]){"PING"}); /* not yet sent */
    rp_pool_remove(pool, conn, 0);
    run_until_replies(logs, 2);
    cr_expect_eq(logs[0].status, -ECANCELED);
    cr_expect_eq(logs[1].status, -ECANCELED);
    fake_close(&f);
}

/* ---------------------------------------------------------------- pubsub */

typedef struct sub_log {
    int messages, confirmations, finals;
    int final_status;
    char last[64];
    char channel[64]; /* of the last message */
} sub_log;

static void on_push(rp_conn *conn, const redisReply *msg, int status, void *data)
{
    (void)conn;
    sub_log *log = data;
    if (!msg) {
        log->finals++;
        log->final_status = status;
        return;
    }
    const char *kind = msg->element[0]->str;
    if (!strcmp(kind, "message")) {
        log->messages++;
        snprintf(log->last, sizeof log->last, "%s", msg->element[2]->str);
        snprintf(log->channel, sizeof log->channel, "%s", msg->element[1]->str);
    } else {
        log->confirmations++;
    }
}

static void publish(rp_conn *publisher, const char *text)
{
    reply_log log = {0};
    command(publisher, &log, 3, (const char *[]){"PUBLISH", "news", text});
    run_until_replies(&log, 1);
    cr_expect_eq(log.integer, 1, "the subscriber did not receive it");
}

Test(redis, subscribe_delivers_messages_until_unsubscribed)
{
    open_pool_at(fx_redis_addr, 100);
    rp_conn *subscriber = fx_get_conn(loop, pool);
    rp_conn *publisher = fx_get_conn(loop, pool);
    sub_log log = {0};
    cr_assert_eq(rp_conn_subscribe(subscriber, on_push, &log, 2, (const char *[]){"SUBSCRIBE", "news"}, NULL), 0);
    reply_log refused = {0};
    cr_expect_eq(rp_conn_command(subscriber, log_reply, &refused, 1, (const char *[]){"PING"}, NULL), -EBUSY);
    uint64_t deadline = fx_now_ms() + 3000;
    while (log.confirmations < 1 && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    fx_run_for(loop, 300); /* longer than read_timeout_ms: a subscriber waits */
    publish(publisher, "one");
    publish(publisher, "two");
    while (log.messages < 2 && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_expect_eq(log.messages, 2);
    cr_expect_str_eq(log.last, "two");
    cr_assert_eq(rp_conn_unsubscribe(subscriber, 1, (const char *[]){"UNSUBSCRIBE"}, NULL), 0);
    while (log.finals < 1 && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_expect_eq(log.finals, 1);
    cr_expect_eq(log.final_status, 0);
    reply_log pong = {0};
    command(subscriber, &pong, 1, (const char *[]){"PING"});
    run_until_replies(&pong, 1);
    cr_expect_str_eq(pong.str, "PONG", "the connection did not take commands again");
    free(pong.str);
    rp_pool_put(pool, subscriber);
    rp_pool_put(pool, publisher);
    fx_close_and_free(loop, pool);
}

Test(redis, subscriber_sees_the_connection_fail_once)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *subscriber = fx_get_conn(loop, pool);
    sub_log log = {0};
    cr_assert_eq(rp_conn_subscribe(subscriber, on_push, &log, 2, (const char *[]){"SUBSCRIBE", "news"}, NULL), 0);
    fx_run_for(loop, 50);
    fx_redis_command("CLIENT KILL TYPE pubsub\r\n");
    uint64_t deadline = fx_now_ms() + 3000;
    while (log.finals < 1 && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_expect_eq(log.finals, 1);
    cr_expect_eq(log.final_status, RP_EEOF);
    rp_pool_remove(pool, subscriber, log.final_status);
    fx_close_and_free(loop, pool);
}

static void run_until_at_least(const int *count, int want)
{
    uint64_t deadline = fx_now_ms() + 1000;
    while (*count < want && fx_now_ms() < deadline)
        fx_run_for(loop, 5);
}

Test(redis, unsubscribe_then_subscribe_back_to_back_stays_subscribed)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *subscriber = fx_get_conn(loop, pool);
    sub_log log = {0};
    cr_assert_eq(rp_conn_subscribe(subscriber, on_push, &log, 2, (const char *[]){"SUBSCRIBE", "a"}, NULL), 0);
    run_until_at_least(&log.confirmations, 1);
    cr_assert_eq(log.confirmations, 1);
    /* Issued in one iteration: the server's "unsubscribe a, 0 left" comes
     * before the confirmation of b. */
    cr_assert_eq(rp_conn_unsubscribe(subscriber, 2, (const char *[]){"UNSUBSCRIBE", "a"}, NULL), 0);
    cr_assert_eq(rp_conn_subscribe(subscriber, on_push, &log, 2, (const char *[]){"SUBSCRIBE", "b"}, NULL), 0);
    run_until_at_least(&log.confirmations, 3);
    cr_expect_eq(log.confirmations, 3);
    fx_redis_command("PUBLISH b hello\r\n");
    run_until_at_least(&log.messages, 1);
    cr_expect_eq(log.messages, 1, "the message on b never arrived");
    cr_expect_str_eq(log.channel, "b");
    cr_expect_str_eq(log.last, "hello");
    cr_expect_eq(log.finals, 0, "a final (NULL, %s) call while still subscribed to b", rp_strerror(log.final_status));
    int finals = log.finals;
    int rc = rp_conn_unsubscribe(subscriber, 1, (const char *[]){"UNSUBSCRIBE"}, NULL);
    cr_expect_eq(rc, 0, "the subscriber connection went bad: %s", rp_strerror(rc));
    if (rc == 0) {
        run_until_at_least(&log.finals, finals + 1);
        cr_expect_eq(log.finals, 1);
        cr_expect_eq(log.final_status, 0);
        reply_log pong = {0};
        command(subscriber, &pong, 1, (const char *[]){"PING"});
        run_until_replies(&pong, 1);
        cr_expect_str_eq(pong.str, "PONG");
        free(pong.str);
    }
    rp_pool_put(pool, subscriber);
    cr_expect_eq(rp_pool_idle_len(pool), 1, "the subscriber connection did not go back healthy");
    fx_close_and_free(loop, pool);
}

/* ------------------------------------------- pubsub: what ends the mode */

/* Every call of a subscription's callback, in order, as text: an array's
 * elements joined by ':', a status or string as it is, an error's first
 * word after "ERR:", the last call as "end:<status>". */
typedef struct push_trace {
    rp_conn *conn;
    char text[1024];
    int events, finals, final_status;
    void (*on_push)(struct push_trace *t, const redisReply *msg); /* after it is traced */
    void (*on_final)(struct push_trace *t);
    reply_log after;   /* a command the hooks send */
    int rc;            /* what a hook's call returned */
    int command_rc;
} push_trace;

static void trace_add(push_trace *t, const char *word)
{
    size_t len = strlen(t->text);
    snprintf(t->text + len, sizeof t->text - len, "%s%s", len ? " " : "", word);
}

static void describe(const redisReply *r, char *out, size_t size)
{
    if (r->type == REDIS_REPLY_ARRAY) {
        out[0] = '\0';
        for (size_t i = 0; i < r->elements; i++) {
            char part[64];
            describe(r->element[i], part, sizeof part);
            size_t len = strlen(out);
            snprintf(out + len, size - len, "%s%s", i ? ":" : "", part);
        }
    } else if (r->type == REDIS_REPLY_INTEGER) {
        snprintf(out, size, "%lld", r->integer);
    } else if (r->type == REDIS_REPLY_NIL) {
        snprintf(out, size, "nil");
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(out, size, "ERR:%.*s", (int)strcspn(r->str, " "), r->str);
    } else {
        snprintf(out, size, "%s", r->str);
    }
}

static void trace_push(rp_conn *conn, const redisReply *msg, int status, void *data)
{
    (void)conn;
    push_trace *t = data;
    char word[128];
    t->events++;
    if (!msg) {
        snprintf(word, sizeof word, "end:%d", status);
        trace_add(t, word);
        t->finals++;
        t->final_status = status;
        if (t->on_final)
            t->on_final(t);
        return;
    }
    describe(msg, word, sizeof word);
    trace_add(t, word);
    if (t->on_push)
        t->on_push(t, msg);
}

static void trace_subscribe(push_trace *t, int argc, const char **argv)
{
    cr_assert_eq(rp_conn_subscribe(t->conn, trace_push, t, argc, argv, NULL), 0, "%s refused", argv[0]);
}

static void trace_unsubscribe(push_trace *t, int argc, const char **argv)
{
    cr_assert_eq(rp_conn_unsubscribe(t->conn, argc, argv, NULL), 0, "%s refused", argv[0]);
}

static void trace_wait(push_trace *t, int events)
{
    uint64_t deadline = fx_now_ms() + 3000;
    while (t->events < events && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    fx_run_for(loop, 20); /* anything more would come now */
    cr_assert_eq(t->events, events, "trace: %s", t->text);
}

/* The connection takes commands again and goes back to the pool healthy. */
static void expect_commands_again(rp_conn *conn)
{
    reply_log pong = {0};
    int rc = rp_conn_command(conn, log_reply, &pong, 1, (const char *[]){"PING"}, NULL);
    cr_expect_eq(rc, 0, "PING after the subscription: %s", rp_strerror(rc));
    if (rc == 0) {
        run_until_replies(&pong, 1);
        cr_expect_eq(pong.status, 0, "PING: %s", rp_strerror(pong.status));
        cr_expect_str_eq(pong.str ? pong.str : "", "PONG");
    }
    free(pong.str);
    int idle = rp_pool_idle_len(pool);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_idle_len(pool), idle + 1, "the connection did not go back healthy");
}

static void echo_on_final(push_trace *t)
{
    t->rc = rp_conn_command(t->conn, log_reply, &t->after, 2, (const char *[]){"ECHO", "hello"}, NULL);
}

/* Issue 28 (1): the reply of the second UNSUBSCRIBE, sent before the first
 * one's "0 left" came, belongs to the subscription, not to a command the
 * last call queues. */
Test(redis, subscriber_mode_ends_after_every_sent_unsubscribe_is_answered)
{
    open_pool_at(fx_redis_addr, 3000);
    push_trace t = {.conn = fx_get_conn(loop, pool), .on_final = echo_on_final};
    trace_subscribe(&t, 2, (const char *[]){"SUBSCRIBE", "a"});
    trace_wait(&t, 1);
    trace_unsubscribe(&t, 2, (const char *[]){"UNSUBSCRIBE", "a"});
    trace_unsubscribe(&t, 2, (const char *[]){"UNSUBSCRIBE", "b"});
    trace_wait(&t, 4);
    cr_expect_str_eq(t.text, "subscribe:a:1 unsubscribe:a:0 unsubscribe:b:0 end:0");
    cr_assert_eq(t.rc, 0, "ECHO from the last call: %s", rp_strerror(t.rc));
    run_until_replies(&t.after, 1);
    cr_expect_eq(t.after.status, 0, "ECHO: %s", rp_strerror(t.after.status));
    cr_expect_eq(t.after.type, REDIS_REPLY_STRING, "ECHO got a reply of type %d", t.after.type);
    cr_expect_str_eq(t.after.str ? t.after.str : "", "hello");
    free(t.after.str);
    expect_commands_again(t.conn);
    fx_close_and_free(loop, pool);
}

/* Issue 28 (1): a PING sent after the last UNSUBSCRIBE is answered after
 * subscriber mode ended on the server; its +PONG is still the
 * subscription's, never stray bytes. */
Test(redis, a_ping_after_the_last_unsubscribe_is_the_subscriptions_reply)
{
    open_pool_at(fx_redis_addr, 3000);
    push_trace t = {.conn = fx_get_conn(loop, pool)};
    trace_subscribe(&t, 2, (const char *[]){"SUBSCRIBE", "a"});
    trace_wait(&t, 1);
    trace_unsubscribe(&t, 1, (const char *[]){"UNSUBSCRIBE"});
    trace_unsubscribe(&t, 1, (const char *[]){"PING"});
    trace_wait(&t, 4);
    cr_expect_str_eq(t.text, "subscribe:a:1 unsubscribe:a:0 PONG end:0");
    expect_commands_again(t.conn);
    fx_close_and_free(loop, pool);
}

/* Issue 28 (4): an ACL refusal of SUBSCRIBE a b c is one error reply for
 * the three channels, and it ends subscriber mode. */
Test(redis, a_refused_multi_channel_subscribe_ends_the_subscription)
{
    fx_redis_command("ACL SETUSER nochan on nopass ~* +@all resetchannels\r\n");
    open_pool_at(fx_redis_addr, 3000);
    push_trace t = {.conn = fx_get_conn(loop, pool)};
    reply_log auth = {0};
    command(t.conn, &auth, 3, (const char *[]){"AUTH", "nochan", "any"});
    run_until_replies(&auth, 1);
    cr_assert_str_eq(auth.str, "OK");
    free(auth.str);
    trace_subscribe(&t, 4, (const char *[]){"SUBSCRIBE", "a", "b", "c"});
    trace_wait(&t, 2);
    cr_expect_str_eq(t.text, "ERR:NOPERM end:0");
    expect_commands_again(t.conn);
    fx_close_and_free(loop, pool);
}

/* Issue 28 (6): Redis counts shard channels apart from channels and
 * patterns: "sunsubscribe s 0" while a is subscribed, or "unsubscribe a 0"
 * while s is, ends nothing. */
Test(redis, shard_channels_are_counted_apart_from_channels)
{
    open_pool_at(fx_redis_addr, 3000);
    push_trace t = {.conn = fx_get_conn(loop, pool)};
    trace_subscribe(&t, 2, (const char *[]){"SUBSCRIBE", "a"});
    trace_subscribe(&t, 2, (const char *[]){"SSUBSCRIBE", "s"});
    trace_wait(&t, 2);
    trace_unsubscribe(&t, 2, (const char *[]){"SUNSUBSCRIBE", "s"});
    trace_wait(&t, 3);
    fx_redis_command("PUBLISH a hi\r\n");
    trace_wait(&t, 4);
    trace_subscribe(&t, 2, (const char *[]){"SSUBSCRIBE", "s"});
    trace_unsubscribe(&t, 2, (const char *[]){"UNSUBSCRIBE", "a"});
    trace_wait(&t, 6);
    fx_redis_command("SPUBLISH s ho\r\n");
    trace_wait(&t, 7);
    trace_unsubscribe(&t, 1, (const char *[]){"SUNSUBSCRIBE"});
    trace_wait(&t, 9);
    cr_expect_str_eq(t.text, "subscribe:a:1 ssubscribe:s:1 sunsubscribe:s:0 message:a:hi ssubscribe:s:1 "
                             "unsubscribe:a:0 smessage:s:ho sunsubscribe:s:0 end:0");
    expect_commands_again(t.conn);
    fx_close_and_free(loop, pool);
}

/* Inside the push that says nothing is left, the subscriber is still in
 * subscriber mode: a command is refused, a new SUBSCRIBE keeps the mode,
 * and no last call comes for the end that did not happen. */
static void subscribe_again_on_the_last_push(push_trace *t, const redisReply *msg)
{
    if (msg->type != REDIS_REPLY_ARRAY || strcmp(msg->element[0]->str, "unsubscribe") || t->command_rc)
        return;
    reply_log refused = {0};
    t->command_rc = rp_conn_command(t->conn, log_reply, &refused, 1, (const char *[]){"PING"}, NULL);
    t->rc = rp_conn_subscribe(t->conn, trace_push, t, 2, (const char *[]){"SUBSCRIBE", "b"}, NULL);
}

Test(redis, subscribing_again_in_the_last_push_keeps_subscriber_mode)
{
    open_pool_at(fx_redis_addr, 3000);
    push_trace t = {.conn = fx_get_conn(loop, pool), .on_push = subscribe_again_on_the_last_push};
    trace_subscribe(&t, 2, (const char *[]){"SUBSCRIBE", "a"});
    trace_wait(&t, 1);
    trace_unsubscribe(&t, 2, (const char *[]){"UNSUBSCRIBE", "a"});
    trace_wait(&t, 3);
    cr_expect_eq(t.command_rc, -EBUSY, "a command inside the last push: %s", rp_strerror(t.command_rc));
    cr_expect_eq(t.rc, 0, "SUBSCRIBE inside the last push: %s", rp_strerror(t.rc));
    fx_redis_command("PUBLISH b hi\r\n");
    trace_wait(&t, 4);
    t.on_push = NULL;
    trace_unsubscribe(&t, 1, (const char *[]){"UNSUBSCRIBE"});
    trace_wait(&t, 6);
    cr_expect_str_eq(t.text, "subscribe:a:1 unsubscribe:a:0 subscribe:b:1 message:b:hi unsubscribe:b:0 end:0");
    expect_commands_again(t.conn);
    fx_close_and_free(loop, pool);
}

/* ------------------------------------------ removal, early flush, limits */

static void remove_in_callback(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    log_reply(conn, reply, status, data);
    rp_pool_remove(pool, conn, 0);
}

/* Removed from the first reply's callback: the commands still owed end
 * with -ECANCELED, whether their replies are still to come or came in the
 * same read. */
Test(redis, removing_a_connection_in_a_reply_callback_cancels_the_rest)
{
    const char *answers[] = {"+PONG\r\n", "+PONG\r\n+PONG\r\n+PONG\r\n"};
    for (int round = 0; round < 2; round++) {
        fake f;
        rp_conn *conn = fake_connect(&f, 3000);
        reply_log logs[3] = {0};
        cr_assert_eq(rp_conn_command(conn, remove_in_callback, &logs[0], 1, (const char *[]){"PING"}, NULL), 0);
        command(conn, &logs[1], 1, (const char *[]){"PING"});
        command(conn, &logs[2], 1, (const char *[]){"PING"});
        fake_answer(&f, answers[round]);
        run_until_replies(logs, 3);
        fx_run_for(loop, 20);
        cr_expect_eq(logs[0].status, 0);
        for (int i = 1; i < 3; i++) {
            cr_expect_eq(logs[i].calls, 1, "round %d, command %d: %d calls", round, i, logs[i].calls);
            cr_expect_eq(logs[i].status, -ECANCELED, "round %d, command %d: %s", round, i,
                         rp_strerror(logs[i].status));
        }
        free(logs[0].str);
        fake_close(&f);
    }
}

static void count_raw_send(rp_conn *conn, ssize_t result, void *data)
{
    (void)conn;
    (void)result;
    ++*(int *)data;
}

/* The 16th command sends the batch at once; when that send cannot start
 * (here: the caller's own send is still in flight), the commands fail
 * later, from the loop, never inside rp_conn_command. */
Test(redis, a_failed_early_flush_calls_back_later_never_inside_the_call)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    int raw_sent = 0;
    cr_assert_eq(rp_conn_send(conn, ping, sizeof ping - 1, count_raw_send, &raw_sent), 0);
    reply_log logs[16] = {0};
    for (int i = 0; i < 16; i++) {
        int rc = rp_conn_command(conn, log_reply, &logs[i], 1, (const char *[]){"PING"}, NULL);
        cr_assert_eq(rc, 0, "command %d: %s", i, rp_strerror(rc));
        for (int j = 0; j <= i; j++)
            cr_assert_eq(logs[j].calls, 0, "command %d called back inside command %d's call", j, i);
    }
    run_until_replies(logs, 16);
    fx_run_for(loop, 20);
    for (int i = 0; i < 16; i++) {
        cr_expect_eq(logs[i].calls, 1);
        cr_expect_lt(logs[i].status, 0, "command %d: %s", i, rp_strerror(logs[i].status));
    }
    cr_expect_eq(raw_sent, 1);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_len(pool), 0, "the failed connection went back to the pool");
    fx_close_and_free(loop, pool);
}

static void expect_ping(rp_conn *conn, int want_status)
{
    reply_log log = {0};
    command(conn, &log, 1, (const char *[]){"PING"});
    run_until_replies(&log, 1);
    cr_expect_eq(log.status, want_status, "PING: %s", rp_strerror(log.status));
    if (want_status == 0)
        cr_expect_str_eq(log.str ? log.str : "", "PONG");
    free(log.str);
}

/* Issue 21 (4): SIZE_MAX is "no limit", not a limit that wraps to a
 * 0-byte read; 1 and the exact size of a reply hold as they say. */
Test(redis, reply_size_limits_hold_at_their_extremes)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_assert_eq(rp_conn_set_max_reply_bytes(conn, SIZE_MAX), 0);
    expect_ping(conn, 0);
    cr_assert_eq(rp_conn_set_max_reply_bytes(conn, 7), 0); /* "+PONG\r\n" */
    expect_ping(conn, 0);
    cr_assert_eq(rp_conn_set_max_reply_bytes(conn, 6), 0);
    expect_ping(conn, -EMSGSIZE);
    rp_pool_put(pool, conn);
    conn = fx_get_conn(loop, pool);
    cr_assert_eq(rp_conn_set_max_reply_bytes(conn, 1), 0);
    expect_ping(conn, -EMSGSIZE);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_conn_set_max_reply_bytes(conn, 0), -EINVAL);
    fx_close_and_free(loop, pool);

    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = fx_redis_addr;
    opts.max_reply_bytes = SIZE_MAX;
    rp_client *client;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    static char value[100000];
    memset(value, 'v', sizeof value);
    fx_result r[2] = {{0}};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r[0], 3, (const char *[]){"SET", "k", value},
                                   (const size_t[]){3, 1, sizeof value}), 0);
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r[1], 2, (const char *[]){"STRLEN", "k"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r[1].calls, 1, 5000));
    cr_expect_eq(r[0].status, 0, "SET: %s", rp_strerror(r[0].status));
    cr_expect_eq(r[1].status, 0, "STRLEN: %s", rp_strerror(r[1].status));
    cr_expect_eq(r[1].integer, (long long)sizeof value);
    fx_client_close_and_free(loop, client);
}

/* Argument lengths whose sum wraps: refused, never encoded into a buffer
 * too small for them. */
Test(redis, a_command_longer_than_memory_is_refused)
{
    open_pool_at(fx_redis_addr, 3000);
    rp_conn *conn = fx_get_conn(loop, pool);
    reply_log log = {0};
    const char *argv[] = {"SET", "k", "v"};
    cr_expect_eq(rp_conn_command(conn, log_reply, &log, 3, argv, (const size_t[]){3, 1, SIZE_MAX - 8}), -ENOMEM);
    cr_expect_eq(rp_conn_command(conn, log_reply, &log, 3, argv, (const size_t[]){3, SIZE_MAX / 2, SIZE_MAX / 2}),
                 -ENOMEM);
    fx_run_for(loop, 20);
    cr_expect_eq(log.calls, 0);
    expect_ping(conn, 0);
    rp_pool_put(pool, conn);
    cr_expect_eq(rp_pool_idle_len(pool), 1);
    fx_close_and_free(loop, pool);
}

/* Pushes follow the same rule as replies: a message is the subscriber's
 * only while the server counts a subscription of its kind, and anything
 * else only answers a command that was sent. From a fake server: a message
 * before its subscription's confirmation, a message after the
 * subscription ended, and a confirmation that does not follow from the
 * counts (one too many, or any integer at all) are each stray bytes, and
 * the connection never goes back. */
Test(redis, pushes_nobody_is_owed_fail_the_subscriber_connection)
{
    const char *answers[] = {
        "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"
        "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:2\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:-9223372036854775808\r\n",
    };
    char eproto[16];
    snprintf(eproto, sizeof eproto, "end:%d", -EPROTO);
    const char *traces[] = {eproto, "subscribe:a:1 unsubscribe:a:0 end:0", eproto, eproto};
    for (int round = 0; round < 4; round++) {
        fake f;
        push_trace t = {.conn = fake_connect(&f, 3000)};
        trace_subscribe(&t, 2, (const char *[]){"SUBSCRIBE", "a"});
        if (round == 1)
            trace_unsubscribe(&t, 2, (const char *[]){"UNSUBSCRIBE", "a"});
        fake_answer(&f, answers[round]);
        uint64_t deadline = fx_now_ms() + 3000;
        while (!t.finals && fx_now_ms() < deadline)
            rp_loop_run(loop, RP_RUN_ONCE);
        fx_run_for(loop, 20);
        cr_assert_eq(t.finals, 1, "round %d: trace %s", round, t.text);
        cr_expect_str_eq(t.text, traces[round], "round %d", round);
        rp_pool_put(pool, t.conn);
        cr_expect_eq(rp_pool_len(pool), 0, "round %d: the connection went back to the pool", round);
        fake_close(&f);
    }
}
