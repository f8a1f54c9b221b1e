/* The printf-style calls: every format sends exactly the bytes hiredis's
 * redisFormatCommand makes of it (captured by a listener of the test's
 * own), malformed ones are refused with -EINVAL and send nothing, and the
 * client forms reach a real redis-server. */
#include "fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(format, .init = fx_setup, .fini = fx_teardown);

/* A pooled connection to a listener of ours, and the peer that reads what
 * the library sends on it. */
typedef struct capture {
    rp_loop *loop;
    rp_pool *pool;
    rp_conn *conn;
    int listener, peer;
    char *want;
    size_t want_len;
    int accepted, refused, ended;
} capture;

static capture cap;

static void ended_cb(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)conn;
    (void)reply;
    cr_expect_eq(status, -ECANCELED, "a command ended with %s", rp_strerror(status));
    ((capture *)data)->ended++;
}

static void capture_open(void)
{
    int port;
    cap = (capture){.listener = fx_listener(4, &port)};
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = addr;
    cr_assert_eq(rp_loop_new(&cap.loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&cap.pool, cap.loop, &opts), 0);
    cap.conn = fx_get_conn(cap.loop, cap.pool);
    cap.peer = accept(cap.listener, NULL, NULL);
    cr_assert_geq(cap.peer, 0);
}

/* Sends format both ways: what hiredis makes of it is what must arrive. */
#define SAME(...)                                                                         \
    do {                                                                                  \
        char *cmd;                                                                        \
        int len = redisFormatCommand(&cmd, __VA_ARGS__);                                  \
        cr_assert_gt(len, 0, "hiredis refused the format");                               \
        cap.want = realloc(cap.want, cap.want_len + (size_t)len);                         \
        memcpy(cap.want + cap.want_len, cmd, (size_t)len);                                \
        cap.want_len += (size_t)len;                                                      \
        redisFreeCommand(cmd);                                                            \
        cr_assert_eq(rp_conn_commandf(cap.conn, ended_cb, &cap, __VA_ARGS__), 0);         \
        cap.accepted++;                                                                   \
    } while (0)

/* A format hiredis refuses too: -EINVAL here, and nothing sent. */
#define REFUSED(...)                                                                      \
    do {                                                                                  \
        char *cmd = NULL;                                                                 \
        cr_assert_lt(redisFormatCommand(&cmd, __VA_ARGS__), 0, "hiredis took the format"); \
        cr_assert_eq(rp_conn_commandf(cap.conn, ended_cb, &cap, __VA_ARGS__), -EINVAL);   \
        cap.refused++;                                                                    \
    } while (0)

/* Reads what arrived and compares it with hiredis's bytes, then removes
 * the connection: every accepted command ends once, cancelled. */
static void capture_check_and_close(void)
{
    fx_run_for(cap.loop, 50);
    char *got = malloc(cap.want_len + 1);
    size_t len = 0;
    uint64_t deadline = fx_now_ms() + 5000;
    while (len < cap.want_len && fx_now_ms() < deadline) {
        struct pollfd pfd = {.fd = cap.peer, .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1) {
            ssize_t n = read(cap.peer, got + len, cap.want_len + 1 - len);
            cr_assert_gt(n, 0);
            len += (size_t)n;
        }
        fx_run_for(cap.loop, 1);
    }
    cr_assert_eq(len, cap.want_len, "%zu bytes arrived, %zu expected", len, cap.want_len);
    cr_assert(!memcmp(got, cap.want, len), "the bytes differ from redisFormatCommand's");
    struct pollfd pfd = {.fd = cap.peer, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 50), 0, "more bytes than hiredis's arrived");
    rp_pool_remove(cap.pool, cap.conn, -ECANCELED);
    cr_assert(fx_run_until_count(cap.loop, &cap.ended, cap.accepted, 2000));
    free(got);
    free(cap.want);
    close(cap.peer);
    close(cap.listener);
    fx_close_and_free(cap.loop, cap.pool);
}

Test(format, sends_what_redisFormatCommand_makes)
{
    capture_open();
    SAME("PING");
    SAME("SET %s %s", "key", "value");
    SAME("SET %b %b", "k\0ey", (size_t)4, "v\0\r\nal", (size_t)6);
    SAME("SET key:%d %s", 42, "v");
    SAME("SET %s %b", "k", "", (size_t)0);
    SAME("SET %s %b", "k", (const char *)NULL, (size_t)0);
    SAME("SET %s %s", "k", "");
    SAME("%s %s", "", "");
    SAME("  SET   k    v  ");
    SAME("ECHO 100%%");
    SAME("ECHO %%%s%%", "x");
    SAME("ECHO abc%");
    SAME("ECHO a%sb%sc", "X", "Y");
    SAME("%s", "PING");
    SAME("INCRBY k %lld", -9223372036854775807LL);
    SAME("ECHO %ld %lu %hd %hhu %u %x %X %o %i", -5L, 7UL, -3, 300, 4000000000u, 255, 255, 8, -1);
    SAME("ECHO %5d|%-5d|%05d|%+d|% d|%.3d|%#x|%#o", 42, 42, 42, 42, 42, 42, 255, 8);
    SAME("ECHO %f %.2f %e %g %a %E %G %F %A", 1.5, 3.14159, 1e10, 0.0001, 1.0, 2.5, 1e-5, 2.0, 0.5);
    SAME("ECHO %10.4f|%-12.3e|%+.0f", 3.14159, 271.8281, 2.5);
    SAME("HSET h %s %d %s %b", "f1", 1, "f2", "xyz", (size_t)2);
    SAME("ECHO %lld%s%llu", 1LL, "-", 18446744073709551615ULL);
    char big[400];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    SAME("MSET a %s b %s c %s d %s e %s f %s", big, "2", big, "4", "5", big);
    SAME("RPUSH list %d %d %d %d %d %d %d %d %d %d %d %d", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    capture_check_and_close();
}

Test(format, malformed_formats_are_refused_and_send_nothing)
{
    capture_open();
    SAME("PING before");
    REFUSED("ECHO %c", 'x');
    REFUSED("ECHO %p", (void *)&cap);
    REFUSED("ECHO %z");
    REFUSED("ECHO %lf", 1.0);
    REFUSED("ECHO %Lf", 1.0L);
    REFUSED("ECHO %*d", 5, 3);
    REFUSED("ECHO %zu", (size_t)1);
    REFUSED("ECHO %hf", 1.0);
    REFUSED("ECHO %lls", "x");
    REFUSED("SET k %q");
    /* Refused here, where hiredis sends "*0\r\n" or reads through NULL. */
    cr_assert_eq(rp_conn_commandf(cap.conn, ended_cb, &cap, NULL), -EINVAL);
    cr_assert_eq(rp_conn_commandf(cap.conn, ended_cb, &cap, ""), -EINVAL);
    cr_assert_eq(rp_conn_commandf(cap.conn, ended_cb, &cap, "    "), -EINVAL);
    cr_assert_eq(rp_conn_commandf(cap.conn, ended_cb, &cap, "GET %s", (const char *)NULL), -EINVAL);
    cr_assert_eq(rp_conn_commandf(cap.conn, ended_cb, &cap, "SET k %b", (const char *)NULL, (size_t)3),
                 -EINVAL);
    cr_assert_eq(rp_conn_commandf(cap.conn, NULL, NULL, "PING"), -EINVAL);
    SAME("PING after");
    capture_check_and_close();
    cr_assert_eq(cap.ended, 2, "a refused command's callback ran");
}

/* ------------------------------------------------------- a real server */

static int64_t vcommandf(rp_client *client, const rp_command_options *opts, fx_result *r, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int64_t id = rp_client_vcommandf(client, opts, fx_result_cb, r, format, ap);
    va_end(ap);
    return id;
}

static rp_client *client_open(rp_loop **loop)
{
    rp_client_options opts;
    rp_client_options_init(&opts);
    fx_pool_options(&opts.pool, 4);
    cr_assert_eq(rp_loop_new(loop, NULL), 0);
    rp_client *client;
    cr_assert_eq(rp_client_new(&client, *loop, &opts), 0);
    return client;
}

/* A reply's bytes, NULs included. */
typedef struct binary_reply {
    int calls, status;
    size_t len;
    char bytes[16];
} binary_reply;

static void binary_cb(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    binary_reply *r = data;
    r->calls++;
    r->status = status;
    if (reply && reply->type == REDIS_REPLY_STRING && reply->len <= sizeof r->bytes) {
        r->len = reply->len;
        memcpy(r->bytes, reply->str, reply->len);
    }
}

Test(format, client_forms_reach_the_server)
{
    rp_loop *loop;
    rp_client *client = client_open(&loop);
    fx_result set = {0}, incr = {0}, bad = {0};
    binary_reply get = {0};
    cr_assert_eq(rp_client_commandf(client, fx_result_cb, &set, "SET fmt:%s %b", "key", "v\0x", (size_t)3), 0);
    rp_command_options opts = {.timeout_ms = 5000};
    cr_assert_gt(rp_client_commandf_ex(client, &opts, binary_cb, &get, "GET fmt:%s", "key"), 0);
    cr_assert_gt(vcommandf(client, NULL, &incr, "INCRBY fmt:n %lld", 40000000000LL), 0);
    cr_assert_eq(rp_client_commandf(client, fx_result_cb, &bad, "GET %c", 'x'), -EINVAL);
    cr_assert_eq(vcommandf(client, &(rp_command_options){.flags = 1u << 7}, &bad, "PING"), -EINVAL);
    cr_assert(fx_run_until_count(loop, &incr.calls, 1, 5000));
    cr_assert(fx_run_until_count(loop, &get.calls, 1, 5000));
    cr_assert_eq(set.status, 0);
    cr_assert_str_eq(set.str, "OK");
    cr_assert_eq(get.status, 0);
    cr_assert_eq(get.len, 3);
    cr_assert(!memcmp(get.bytes, "v\0x", 3), "the binary value did not come back");
    cr_assert_eq(incr.integer, 40000000000LL);
    fx_run_for(loop, 20);
    cr_assert_eq(bad.calls, 0, "a refused command's callback ran");
    fx_client_close_and_free(loop, client);
}
