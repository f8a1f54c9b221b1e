/* Hostile servers: a scripted listener of our own on 127.0.0.1, run by a
 * thread, answers a real rp_client with what no real server would send.
 * Each caller's callback must run exactly once, with the right reply or a
 * clear error, in bounded time, and the client must close cleanly. */
#include "fixture.h"

#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

TestSuite(hostile, .init = fx_setup_no_redis, .fini = fx_teardown, .timeout = 60);

/* ------------------------------------------------------ scripted server */

enum { HS_CONNS = 16, HS_BUF = 8192, HS_ARGS = 8, HS_ARGLEN = 256 };

typedef struct hs_conn {
    int fd;     /* -1 once the script closed it */
    int index;  /* accept order, from 0 */
    size_t len;
    char buf[HS_BUF];
} hs_conn;

/* Called on the server thread for each whole command received. */
typedef void (*hs_script)(hs_conn *c, int argc, char argv[][HS_ARGLEN]);

static struct {
    int listener, port;
    char addr[64];
    pthread_t thread;
    atomic_bool stop;
    hs_script script;
    pthread_mutex_t lock;
    struct { char name[16]; int count; } seen[8];
} hs = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* How many times the server has received a command so far. */
static int hs_seen(const char *name)
{
    int n = 0;
    pthread_mutex_lock(&hs.lock);
    for (size_t i = 0; i < 8; i++)
        if (!strcasecmp(hs.seen[i].name, name))
            n = hs.seen[i].count;
    pthread_mutex_unlock(&hs.lock);
    return n;
}

/* Counts one more of name. */
static void hs_count(const char *name)
{
    pthread_mutex_lock(&hs.lock);
    for (size_t i = 0; i < 8; i++) {
        if (!hs.seen[i].name[0])
            snprintf(hs.seen[i].name, sizeof hs.seen[i].name, "%s", name);
        if (!strcasecmp(hs.seen[i].name, name)) {
            hs.seen[i].count++;
            break;
        }
    }
    pthread_mutex_unlock(&hs.lock);
}

static void hs_sleep_ms(unsigned ms) { usleep(ms * 1000u); }

static bool hs_write(hs_conn *c, const void *bytes, size_t len)
{
    return c->fd >= 0 && send(c->fd, bytes, len, MSG_NOSIGNAL) == (ssize_t)len;
}

static void hs_say(hs_conn *c, const char *text) { hs_write(c, text, strlen(text)); }

/* One byte at a time, delay_ms apart, until the client goes away. */
static void hs_trickle(hs_conn *c, const char *bytes, size_t len, unsigned delay_ms)
{
    for (size_t i = 0; i < len && !atomic_load(&hs.stop); i++) {
        if (!hs_write(c, bytes + i, 1))
            return;
        hs_sleep_ms(delay_ms);
    }
}

static void hs_fin(hs_conn *c)
{
    close(c->fd);
    c->fd = -1;
}

static void hs_rst(hs_conn *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    hs_fin(c);
}

/* Reads what the client sent; runs the script per whole command. */
static void hs_serve(hs_conn *c)
{
    ssize_t got = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (got <= 0) {
        hs_fin(c);
        return;
    }
    c->len += (size_t)got;
    char argv[HS_ARGS][HS_ARGLEN];
    int argc;
    long used;
    while (c->fd >= 0 && (used = fx_resp_command(c->buf, c->len, HS_ARGS, HS_ARGLEN, &argc, argv[0])) != 0) {
        if (used < 0) {
            hs_fin(c);
            return;
        }
        memmove(c->buf, c->buf + used, c->len - (size_t)used);
        c->len -= (size_t)used;
        hs_count(argv[0]);
        if (!strcasecmp(argv[0], "COMMAND")) /* the client's set-up: keep its built-in table */
            hs_say(c, "-ERR unknown command 'COMMAND'\r\n");
        else
            hs.script(c, argc, argv);
    }
}

static void *hs_main(void *arg)
{
    (void)arg;
    static hs_conn conns[HS_CONNS];
    int n = 0;
    while (!atomic_load(&hs.stop)) {
        struct pollfd pfd[HS_CONNS + 1] = {{.fd = hs.listener, .events = POLLIN}};
        for (int i = 0; i < n; i++)
            pfd[i + 1] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n + 1, 10) <= 0)
            continue;
        for (int i = 0; i < n; i++)
            if (conns[i].fd >= 0 && pfd[i + 1].revents)
                hs_serve(&conns[i]);
        if ((pfd[0].revents & POLLIN) && n < HS_CONNS) {
            int fd = accept(hs.listener, NULL, NULL);
            int one = 1;
            struct timeval bound = {.tv_sec = 2}; /* a write never hangs the thread */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof bound);
            conns[n] = (hs_conn){.fd = fd, .index = n};
            n++;
        }
    }
    for (int i = 0; i < n; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    close(hs.listener);
    return NULL;
}

static void hs_start(hs_script script)
{
    atomic_store(&hs.stop, false);
    hs.script = script;
    hs.listener = fx_listener(16, &hs.port);
    snprintf(hs.addr, sizeof hs.addr, "127.0.0.1:%d", hs.port);
    cr_assert_eq(pthread_create(&hs.thread, NULL, hs_main, NULL), 0);
}

static void hs_stop(void)
{
    atomic_store(&hs.stop, true);
    pthread_join(hs.thread, NULL);
}

/* ---------------------------------------------------------------- client */

static rp_loop *loop;
static rp_client *client;

typedef fx_result result;

/* A client of one connection to a server running script. */
static void hostile_open(hs_script script, uint32_t read_timeout_ms, int max_retries)
{
    hs_start(script);
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = hs.addr;
    opts.pool.pool_size = 1;
    opts.pool.read_timeout_ms = read_timeout_ms;
    opts.max_retries = max_retries;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
}

/* Runs one command to its end; *took_ms is how long that was. The callback
 * must run once, and not again a little later. */
static result run_ex(unsigned flags, uint64_t *took_ms, int argc, const char **argv)
{
    result r = {0};
    rp_command_options opts = {.flags = flags};
    uint64_t start = fx_now_ms();
    cr_assert_gt(rp_client_command_ex(client, &opts, fx_result_cb, &r, argc, argv, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000), "no reply to %s", argv[0]);
    if (took_ms)
        *took_ms = fx_now_ms() - start;
    fx_run_for(loop, 20);
    cr_assert_eq(r.calls, 1, "%s: the callback ran %d times", argv[0], r.calls);
    return r;
}

#define RUN(...) run_ex(0, NULL, sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *), (const char *[]){__VA_ARGS__})

static rp_stats client_stats(void)
{
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    return st;
}

static void hostile_close(void)
{
    fx_client_close_and_free(loop, client);
    hs_stop();
}

/* ----------------------------------------------------------------- tests */

/* Each ECHO answered, then 30 ms later a reply nobody asked for. */
static void echo_then_stray(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    char reply[300];
    snprintf(reply, sizeof reply, "$%zu\r\n%s\r\n", strlen(argv[argc - 1]), argv[argc - 1]);
    hs_say(c, reply);
    hs_sleep_ms(30);
    hs_say(c, "+STRAY\r\n");
}

Test(hostile, stray_reply_never_reaches_the_wrong_caller)
{
    hostile_open(echo_then_stray, 3000, 0);
    for (int i = 0; i < 6; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "tok-%d", i);
        result r = RUN("ECHO", tok);
        cr_expect_eq(r.status, 0, "ECHO %s: %s", tok, rp_strerror(r.status));
        cr_expect_str_eq(r.str, tok, "ECHO %s got \"%s\"", tok, r.str);
        fx_run_for(loop, 30); /* with run_ex's 20: the next ECHO 50 ms after the reply */
    }
    rp_stats st = client_stats();
    cr_expect(st.stale_conns >= 1 && st.misses > 1, "bad connections kept: stale %u, dials %u", st.stale_conns,
              st.misses);
    hostile_close();
}

/* The stray bytes arrive while the loop is not running, before the next
 * command is queued on the connection: they are seen before it is sent,
 * and it goes to another connection. */
Test(hostile, stray_bytes_that_arrived_before_a_command_are_not_its_reply)
{
    hostile_open(echo_then_stray, 3000, 3);
    for (int i = 0; i < 4; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "tok-%d", i);
        result r = RUN("ECHO", tok);
        cr_expect_eq(r.status, 0, "ECHO %s: %s", tok, rp_strerror(r.status));
        cr_expect_str_eq(r.str, tok, "ECHO %s got \"%s\"", tok, r.str);
        usleep(60000);
    }
    hostile_close();
}

/* GET answers the key in capitals; after the first connection's first
 * reply, 30 ms later, stray bytes that leave the reader inside a reply:
 * an array's header and whole elements, or a lone type byte. */
static const char *stray_part;
static atomic_bool stray_said;

static void get_then_partial_stray(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    char reply[16];
    snprintf(reply, sizeof reply, "$1\r\n%c\r\n", argv[1][0] - 'a' + 'A');
    hs_say(c, reply);
    if (c->index == 0 && !atomic_exchange(&stray_said, true)) {
        hs_sleep_ms(30);
        hs_say(c, stray_part);
    }
}

/* A reply in progress when nothing is owed is stray, however it is split:
 * the next command never completes it. Read while the loop runs, the stray
 * bytes fail the idle connection; read only just before the next command
 * is sent, they fail it with that command unsent, which is sent again on
 * another connection (max_retries 1), never on this one. */
Test(hostile, a_stray_partial_reply_never_completes_the_next_one)
{
    const char *parts[] = {"*2\r\n$5\r\nSTALE\r\n", "+", ":", "$", "*", "-"};
    const char *names[] = {"array header and an element", "+", ":", "$", "*", "-"};
    for (size_t i = 0; i < 2 * sizeof parts / sizeof *parts; i++) {
        stray_part = parts[i / 2];
        const char *name = names[i / 2];
        bool loop_asleep = i % 2;
        atomic_store(&stray_said, false);
        memset(hs.seen, 0, sizeof hs.seen); /* the server thread is not running */
        hostile_open(get_then_partial_stray, 3000, loop_asleep);
        result a = RUN("GET", "a");
        cr_expect_str_eq(a.str, "A");
        if (loop_asleep)
            usleep(60000);
        else
            fx_run_for(loop, 60);
        result b = RUN("GET", "b");
        cr_expect_eq(b.status, 0, "stray %s (loop %s): GET b got %s", name, loop_asleep ? "asleep" : "running",
                     rp_strerror(b.status));
        cr_expect_eq(b.type, REDIS_REPLY_STRING, "stray %s: GET b got a reply of type %d", name, b.type);
        cr_expect_str_eq(b.str, "B", "stray %s: GET b got \"%s\"", name, b.str);
        cr_expect_geq(client_stats().stale_conns, 1, "stray %s: the connection was kept", name);
        cr_expect_eq(hs_seen("GET"), 2, "stray %s: GET b was sent %d times", name, hs_seen("GET") - 1);
        hostile_close();
    }
}

static const char *trickle_bytes;

static void declare_then_trickle(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    hs_say(c, trickle_bytes);
    static char body[4096];
    memset(body, 'x', sizeof body);
    hs_trickle(c, body, sizeof body, 50);
}

Test(hostile, trickle_over_the_size_limit_fails_at_once)
{
    trickle_bytes = "$99999999999\r\n";
    hostile_open(declare_then_trickle, 300, 0);
    uint64_t took;
    result r = run_ex(0, &took, 2, (const char *[]){"GET", "k"});
    cr_expect_eq(r.status, -EMSGSIZE, "got %s", rp_strerror(r.status));
    cr_expect_lt(took, 150, "took %lu ms", (unsigned long)took);
    hostile_close();
}

Test(hostile, trickle_under_the_limit_times_out_on_the_whole_reply)
{
    trickle_bytes = "$1000000\r\n";
    hostile_open(declare_then_trickle, 300, 0);
    uint64_t took;
    result r = run_ex(0, &took, 2, (const char *[]){"GET", "k"});
    cr_expect_eq(r.status, -ETIMEDOUT, "got %s", rp_strerror(r.status));
    cr_expect(took >= 290 && took < 1500, "timed out after %lu ms", (unsigned long)took);
    hostile_close();
}

/* 4 KiB of a fixed-seed generator, its first byte no RESP type. */
static void garbage(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    char bytes[4096];
    uint32_t x = 12345u + (uint32_t)c->index;
    for (size_t i = 0; i < sizeof bytes; i++) {
        x = x * 1103515245u + 12345u;
        bytes[i] = (char)(x >> 16);
    }
    if (strchr("+-:$*", bytes[0]))
        bytes[0] = '?';
    hs_write(c, bytes, sizeof bytes);
}

Test(hostile, random_garbage_is_a_protocol_error)
{
    hostile_open(garbage, 1000, 0);
    for (int i = 0; i < 4; i++) {
        result r = RUN("PING");
        cr_expect_eq(r.status, -EPROTO, "attempt %d got %s", i, rp_strerror(r.status));
    }
    hostile_close();
}

static void deep_arrays(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    enum { DEPTH = 100000 };
    static char bytes[DEPTH * 4 + 5];
    for (size_t i = 0; i < DEPTH; i++)
        memcpy(bytes + 4 * i, "*1\r\n", 4);
    memcpy(bytes + 4 * DEPTH, ":1\r\n", 4);
    hs_write(c, bytes, sizeof bytes - 1);
}

Test(hostile, deeply_nested_arrays_are_a_protocol_error)
{
    hostile_open(deep_arrays, 1000, 0);
    uint64_t took;
    result r = run_ex(0, &took, 1, (const char *[]){"PING"});
    cr_expect_eq(r.status, -EPROTO, "got %s", rp_strerror(r.status));
    cr_expect_lt(took, 500, "took %lu ms", (unsigned long)took);
    hostile_close();
}

/* The first connection answers one PING twice; later ones behave. */
static void double_pong(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    if (!strcasecmp(argv[0], "ECHO"))
        hs_say(c, "$5\r\nafter\r\n");
    else
        hs_say(c, c->index == 0 ? "+PONG\r\n+PONG\r\n" : "+PONG\r\n");
    (void)argc;
}

Test(hostile, more_replies_than_asked_never_reach_the_next_command)
{
    hostile_open(double_pong, 1000, 3);
    result ping = RUN("PING");
    cr_expect(ping.status == -EPROTO || (ping.status == 0 && !strcmp(ping.str, "PONG")), "PING got %s \"%s\"",
              rp_strerror(ping.status), ping.str);
    result next = RUN("ECHO", "after");
    cr_expect_eq(next.status, 0, "got %s", rp_strerror(next.status));
    cr_expect_str_eq(next.str, "after", "the extra PONG answered the next command");
    cr_expect_geq(client_stats().stale_conns, 1, "the out-of-step connection was not removed");
    hostile_close();
}

static void byte_per_write(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    hs_trickle(c, "$5\r\nhello\r\n", 11, 2);
}

Test(hostile, reply_one_byte_per_write_is_reassembled)
{
    hostile_open(byte_per_write, 3000, 0);
    result r = RUN("GET", "k");
    cr_expect_eq(r.status, 0, "got %s", rp_strerror(r.status));
    cr_expect_eq(r.type, REDIS_REPLY_STRING);
    cr_expect_str_eq(r.str, "hello");
    hostile_close();
}

static void half_then_rst(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    hs_say(c, "$10\r\nhello");
    hs_sleep_ms(10);
    hs_rst(c);
}

static void rst_mid_reply(int max_retries)
{
    hostile_open(half_then_rst, 1000, max_retries);
    result r = RUN("INCR", "k");
    cr_expect(r.status == -ECONNRESET || r.status == RP_EEOF, "got %s", rp_strerror(r.status));
    cr_expect_eq(hs_seen("INCR"), 1, "INCR, outcome unknown, was sent again");
    hostile_close();
}

Test(hostile, rst_mid_reply_fails_the_command_once) { rst_mid_reply(0); }
Test(hostile, rst_mid_reply_is_not_retried_for_incr) { rst_mid_reply(3); }

static void silent(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)c;
    (void)argc;
    (void)argv;
}

Test(hostile, silent_server_times_out)
{
    hostile_open(silent, 200, 0);
    uint64_t took;
    result r = run_ex(0, &took, 1, (const char *[]){"PING"});
    cr_expect_eq(r.status, -ETIMEDOUT, "got %s", rp_strerror(r.status));
    cr_expect(took >= 190 && took < 1000, "timed out after %lu ms", (unsigned long)took);
    hostile_close();
}

static void huge_array(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    hs_say(c, "*2000000000\r\n");
}

/* The largest single allocation the library asks for. */
static atomic_size_t largest;
static void note(size_t size)
{
    size_t was = atomic_load(&largest);
    while (size > was && !atomic_compare_exchange_weak(&largest, &was, size))
        ;
}
static void *count_malloc(size_t size) { note(size); return malloc(size); }
static void *count_realloc(void *p, size_t size) { note(size); return realloc(p, size); }
static void *count_calloc(size_t n, size_t size) { note(n * size); return calloc(n, size); }

Test(hostile, array_longer_than_the_limit_allows_fails_before_allocating)
{
    cr_assert_eq(rp_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
    hostile_open(huge_array, 1000, 0);
    uint64_t took;
    result r = run_ex(0, &took, 2, (const char *[]){"LRANGE", "k"});
    cr_expect_eq(r.status, -EMSGSIZE, "got %s", rp_strerror(r.status));
    cr_expect_lt(took, 150, "took %lu ms", (unsigned long)took);
    cr_expect_lt(atomic_load(&largest), (size_t)1 << 20, "allocated %zu bytes at once", atomic_load(&largest));
    hostile_close();
}

/* The first of each command is read, then the connection closed (FIN)
 * unanswered; the second is answered. */
static void fin_first_time(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    if (hs_seen(argv[0]) == 1)
        hs_fin(c);
    else
        hs_say(c, !strcasecmp(argv[0], "GET") ? "$3\r\nval\r\n" : ":1\r\n");
}

static result fin_once(unsigned flags, const char *name)
{
    hostile_open(fin_first_time, 1000, 3);
    result r = run_ex(flags, NULL, 2, (const char *[]){name, "k"});
    hostile_close();
    return r;
}

Test(hostile, fin_after_incr_is_not_resent)
{
    result r = fin_once(0, "INCR");
    cr_expect_eq(r.status, RP_EEOF, "got %s", rp_strerror(r.status));
    cr_expect_eq(hs_seen("INCR"), 1, "INCR, outcome unknown, was sent again");
}

Test(hostile, fin_after_get_is_retried)
{
    result r = fin_once(0, "GET");
    cr_expect_eq(r.status, 0, "got %s", rp_strerror(r.status));
    cr_expect_str_eq(r.str, "val");
    cr_expect_eq(hs_seen("GET"), 2);
}

/* XREAD is read-only, but with BLOCK it is a blocking command: never resent. */
Test(hostile, fin_after_a_blocking_read_is_not_resent)
{
    hostile_open(fin_first_time, 1000, 3);
    result r = run_ex(0, NULL, 6, (const char *[]){"XREAD", "BLOCK", "100", "STREAMS", "s", "$"});
    hostile_close();
    cr_expect_eq(r.status, RP_EEOF, "got %s", rp_strerror(r.status));
    cr_expect_eq(hs_seen("XREAD"), 1, "a blocking XREAD was sent again");
}

Test(hostile, fin_after_idempotent_incr_is_retried)
{
    result r = fin_once(RP_CMD_IDEMPOTENT, "INCR");
    cr_expect_eq(r.status, 0, "got %s", rp_strerror(r.status));
    cr_expect_eq(r.integer, 1);
    cr_expect_eq(hs_seen("INCR"), 2);
}

/* Each refusal a server makes of a command it did not run, answered to
 * every other INCR; the ones between are answered. */
static const char *refusal;

static void refuse_every_other_incr(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    hs_say(c, hs_seen("INCR") % 2 ? refusal : ":1\r\n");
}

Test(hostile, errors_of_commands_the_server_did_not_run_are_retried)
{
    static const char *const refusals[] = {
        "-LOADING Redis is loading the dataset in memory\r\n",
        "-READONLY You can't write against a read only replica.\r\n",
        "-MASTERDOWN Link with MASTER is down\r\n",
        "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
        "-CLUSTERDOWN The cluster is down\r\n",
        "-ERR max number of clients reached\r\n",
    };
    for (size_t i = 0; i < sizeof refusals / sizeof *refusals; i++) {
        refusal = refusals[i];
        hostile_open(refuse_every_other_incr, 1000, 3);
        result r = run_ex(0, NULL, 2, (const char *[]){"INCR", "k"});
        cr_expect_eq(r.status, 0, "%s: got %s", refusal, rp_strerror(r.status));
        cr_expect_eq(r.integer, 1, "%s was not retried: %s", refusal, r.str);
        cr_expect_eq(hs_seen("INCR"), 2 * (int)(i + 1));
        hostile_close();
    }
}

Test(hostile, a_refusal_is_returned_after_the_last_retry)
{
    refusal = "-LOADING Redis is loading the dataset in memory\r\n";
    hostile_open(refuse_every_other_incr, 1000, 0);
    result r = run_ex(0, NULL, 2, (const char *[]){"INCR", "k"});
    cr_expect_eq(r.status, 0);
    cr_expect_eq(r.type, REDIS_REPLY_ERROR);
    cr_expect(!strncmp(r.str, "LOADING", 7), "%s", r.str);
    hostile_close();
}

/* Three nested arrays, each just under the per-array element cap: 36
 * bytes that no reply within the limit can follow (the outer array needs
 * 3 bytes for each of its elements, the first of which needs as many
 * again). Each is a 1.4 GB element table if it is allocated. */
static void nested_huge_arrays(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < 3; i++)
        hs_say(c, "*178956970\r\n");
}

Test(hostile, nested_arrays_declared_past_the_limit_fail_at_once_without_stalling_the_loop)
{
    mallopt(M_PERTURB, 0); /* meson's MALLOC_PERTURB_ would make calloc touch every byte */
    cr_assert_eq(rp_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
    hostile_open(nested_huge_arrays, 1000, 0);
    uint64_t took, start = fx_now_ms();
    result r = run_ex(0, &took, 2, (const char *[]){"LRANGE", "k"});
    cr_expect_eq(r.status, -EMSGSIZE, "got %s (largest allocation %zu bytes)", rp_strerror(r.status),
                 atomic_load(&largest));
    cr_expect_lt(took, 300, "took %lu ms", (unsigned long)took);
    hostile_close();
    uint64_t total = fx_now_ms() - start;
    cr_expect_lt(total, 1000, "the loop was stalled: command and close took %lu ms", (unsigned long)total);
}

/* ------------------------------------------------- a fake cluster node */

/* One node serving every slot; CLUSTER SHARDS unknown, as before Redis 7,
 * so the layout comes from CLUSTER SLOTS. Other commands go to
 * fake_node.command. */
static struct {
    hs_script command;
    bool asking[HS_CONNS]; /* per connection: ASKING came last */
    bool garbage_layout;
    atomic_int elsewhere; /* a port: the layout gives it slots 0-16382 */
    unsigned late_ms;     /* a layout without it comes this late */
    atomic_int late_layouts;
} fake_node;

static void say_layout(hs_conn *c)
{
    char layout[256];
    int elsewhere = atomic_load(&fake_node.elsewhere);
    if (elsewhere) {
        snprintf(layout, sizeof layout,
                 "*2\r\n*3\r\n:0\r\n:16382\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n"
                 "*3\r\n:16383\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n",
                 elsewhere, hs.port);
    } else {
        snprintf(layout, sizeof layout, "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n", hs.port);
        if (fake_node.late_ms) {
            atomic_fetch_add(&fake_node.late_layouts, 1);
            hs_sleep_ms(fake_node.late_ms);
        }
    }
    hs_say(c, layout);
}

static void fake_cluster_node(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    if (strcasecmp(argv[0], "CLUSTER"))
        fake_node.command(c, argc, argv);
    else if (fake_node.garbage_layout)
        hs_say(c, "*1\r\n$7\r\ngarbage\r\n");
    else if (argc > 1 && !strcasecmp(argv[1], "SLOTS"))
        say_layout(c);
    else
        hs_say(c, "-ERR unknown subcommand 'shards'. Try CLUSTER HELP.\r\n");
}

static rp_cluster *cluster;

/* A cluster client of the fake node; opts (NULL: the defaults) gets the
 * seed and small pools. */
static void cluster_open_with(hs_script command, rp_cluster_options *opts)
{
    rp_cluster_options defaults;
    if (!opts) {
        rp_cluster_options_init(&defaults);
        opts = &defaults;
    }
    fake_node.command = command;
    hs_start(fake_cluster_node);
    const char *seeds[] = {hs.addr};
    opts->seeds = seeds;
    opts->nseeds = 1;
    opts->node.pool.pool_size = 2;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_cluster_new(&cluster, loop, opts), 0);
}

static void cluster_open(hs_script command) { cluster_open_with(command, NULL); }

static void cluster_result_cb(rp_cluster *c, const redisReply *reply, int status, void *data)
{
    (void)c;
    fx_result_record(data, reply, status);
}

/* One command to its end; its callback must run once. */
static result cluster_run(int argc, const char **argv)
{
    result r = {0};
    cr_assert_eq(rp_cluster_command(cluster, cluster_result_cb, &r, argc, argv, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 10000), "no reply to %s", argv[0]);
    fx_run_for(loop, 50);
    cr_assert_eq(r.calls, 1, "%s: the callback ran %d times", argv[0], r.calls);
    return r;
}

static rp_cluster_stats cluster_stats(void)
{
    rp_cluster_stats st;
    rp_cluster_get_stats(cluster, &st);
    return st;
}

static void cluster_closed(rp_cluster *c, void *data)
{
    (void)c;
    *(bool *)data = true;
}

static void cluster_close(void)
{
    bool closed = false;
    cr_assert_eq(rp_cluster_close(cluster, cluster_closed, &closed), 0);
    cr_assert(fx_run_until(loop, &closed, 10000));
    cr_assert_eq(rp_loop_free(loop), 0);
    hs_stop();
}

static void answer_hello(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    hs_say(c, "$5\r\nhello\r\n");
}

Test(hostile, cluster_reads_slots_when_shards_is_unknown)
{
    cluster_open(answer_hello);
    result r = cluster_run(2, (const char *[]){"GET", "k"});
    cr_expect_str_eq(r.str, "hello");
    cr_expect_eq(cluster_stats().refreshes, 1);
    cr_expect_eq(hs_seen("CLUSTER"), 2, "SHARDS, then SLOTS");
    cr_expect_eq(hs_seen("COMMAND"), 1, "the cluster asks once for all its node clients");
    rp_cluster_node_info info[2];
    cr_assert_eq(rp_cluster_nodes(cluster, info, 2), 1);
    cr_expect(info[0].master && info[0].slots == RP_CLUSTER_SLOTS);
    cluster_close();
}

Test(hostile, cluster_layout_that_is_not_one_fails_waiting_commands)
{
    fake_node.garbage_layout = true;
    cluster_open(answer_hello);
    result r = cluster_run(2, (const char *[]){"GET", "k"});
    cr_expect_eq(r.status, RP_ECLUSTERDOWN, "%s", rp_strerror(r.status));
    cr_expect_eq(hs_seen("GET"), 0);
    cr_expect_geq(cluster_stats().refresh_errors, 1);
    cluster_close();
}

static void moved_to_itself(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    char moved[64];
    snprintf(moved, sizeof moved, "-MOVED 7 127.0.0.1:%d\r\n", hs.port);
    hs_say(c, moved);
}

Test(hostile, cluster_moved_for_ever_ends_after_max_redirects)
{
    cluster_open(moved_to_itself);
    result r = cluster_run(2, (const char *[]){"GET", "k"});
    cr_expect_eq(r.type, REDIS_REPLY_ERROR);
    cr_expect(!strncmp(r.str, "MOVED 7", 7), "%s", r.str);
    cr_expect_eq(cluster_stats().moved, 3);
    cr_expect_eq(hs_seen("GET"), 4, "the first send and three redirects");
    cluster_close();
}

/* ASK is answered only when ASKING came just before, on the same
 * connection. */
static void ask_unless_asking(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    char ask[64];
    if (!strcasecmp(argv[0], "ASKING")) {
        fake_node.asking[c->index] = true;
        hs_say(c, "+OK\r\n");
        return;
    }
    snprintf(ask, sizeof ask, "-ASK 7 127.0.0.1:%d\r\n", hs.port);
    hs_say(c, fake_node.asking[c->index] ? "$5\r\nthere\r\n" : ask);
    fake_node.asking[c->index] = false;
}

Test(hostile, cluster_ask_sends_asking_first_on_the_same_connection)
{
    cluster_open(ask_unless_asking);
    result r = cluster_run(2, (const char *[]){"GET", "k"});
    cr_expect_str_eq(r.str, "there");
    cr_expect_eq(cluster_stats().asked, 1);
    cr_expect_eq(hs_seen("ASKING"), 1);
    cluster_close();
}

/* The cluster adds retries of its own; an INCR whose connection closed
 * after it was sent may have run, and is still never sent again. */
static void fin_after_command(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    hs_fin(c);
}

Test(hostile, cluster_never_resends_an_incr_whose_outcome_is_unknown)
{
    cluster_open(fin_after_command);
    result r = cluster_run(2, (const char *[]){"INCR", "k"});
    cr_expect_eq(r.status, RP_EEOF, "%s", rp_strerror(r.status));
    fx_run_for(loop, 300);
    cr_expect_eq(hs_seen("INCR"), 1, "INCR was sent %d times", hs_seen("INCR"));
    result get = cluster_run(2, (const char *[]){"GET", "k"});
    cr_expect_lt(get.status, 0);
    cr_expect_gt(hs_seen("GET"), 1, "a GET, read-only, is sent again");
    cluster_close();
}

static void tryagain_always(hs_conn *c, int argc, char argv[][HS_ARGLEN])
{
    (void)argc;
    (void)argv;
    hs_say(c, "-TRYAGAIN Multiple keys request during rehashing of slot\r\n");
}

/* The node client leaves the refusals the cluster follows to the cluster:
 * max_redirects bounds the sends, not (1 + max_retries) times it. */
Test(hostile, cluster_refusals_are_bounded_by_max_redirects_alone)
{
    rp_cluster_options opts;
    rp_cluster_options_init(&opts);
    opts.max_redirects = 2;
    opts.node.min_retry_backoff_ms = 1;
    opts.node.max_retry_backoff_ms = 2;
    cluster_open_with(tryagain_always, &opts);
    result r = cluster_run(2, (const char *[]){"GET", "k"});
    cr_expect(!strncmp(r.str, "TRYAGAIN", 8), "%s", r.str);
    cr_expect_eq(hs_seen("GET"), 3, "GET sent %d times for max_redirects 2", hs_seen("GET"));
    cluster_close();
}

/* A command waits at a node whose connect never completes; the layout
 * that drops that node, and the command's deadline, arrive in the same
 * loop iteration. The node gives the command back unsent, and its cancel
 * says -ENOENT; the deadline still wins, and the command is not sent to
 * the slot's new master. */
Test(hostile, cluster_deadline_wins_over_a_node_leaving_in_the_same_iteration)
{
    int x_port, x_fds[8];
    int x_listener = fx_listener(0, &x_port);
    fx_fill_backlog(x_port, x_fds, 8);
    atomic_store(&fake_node.elsewhere, x_port);
    fake_node.late_ms = 300;
    rp_cluster_options opts;
    rp_cluster_options_init(&opts);
    opts.refresh_interval_ms = 100;
    opts.node.pool.dial_timeout_ms = 60000;
    opts.node.pool.pool_timeout_ms = 60000;
    cluster_open_with(answer_hello, &opts);
    uint64_t until = fx_now_ms() + 5000;
    while (cluster_stats().refreshes < 1 && fx_now_ms() < until)
        fx_run_for(loop, 10);
    cr_assert_eq(cluster_stats().refreshes, 1);
    fx_run_for(loop, 20); /* COMMAND's refusal too */
    result r = {0};
    rp_cluster_command_options deadline = {.timeout_ms = 1000};
    uint64_t started = fx_now_ms();
    cr_assert_gt(rp_cluster_command_ex(cluster, &deadline, cluster_result_cb, &r, 2, (const char *[]){"GET", "k"},
                                       NULL), 0);
    fx_run_for(loop, 20); /* at the unreachable node, its connect under way */
    atomic_store(&fake_node.elsewhere, 0);
    until = fx_now_ms() + 900;
    while (!atomic_load(&fake_node.late_layouts) && fx_now_ms() < until)
        rp_loop_run(loop, RP_RUN_NOWAIT);
    cr_assert(atomic_load(&fake_node.late_layouts), "the periodic read did not come");
    cr_assert_eq(r.calls, 0);
    while (fx_now_ms() < started + 1150) /* the layout and the deadline, both due */
        hs_sleep_ms(1);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 3000));
    cr_expect_eq(r.status, -ETIMEDOUT, "ran past its deadline: %s \"%s\"", rp_strerror(r.status), r.str);
    cr_expect_eq(hs_seen("GET"), 0);
    fx_run_for(loop, 50);
    cr_expect_eq(r.calls, 1);
    cluster_close();
    for (int i = 0; i < 8; i++)
        close(x_fds[i]);
    close(x_listener);
}
