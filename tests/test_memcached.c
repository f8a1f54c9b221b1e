/* examples/memcached.c, the memcached client on the raw pool, against a real
 * memcached the suite starts on a free loopback port: its client part is
 * included here and driven directly, its program run as its users run it. */
#define _GNU_SOURCE
#define MC_NO_MAIN
#include "fixture.h"

#include "../examples/memcached.c"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* -I 2m: values up to MC_VALUE_MAX. */
static const char *const memcached_args[] = {"-I", "2m", "-m", "64", NULL};

static void mc_setup(void)
{
    fx_setup_no_redis();
    fx_memcached_start(memcached_args);
}

static void mc_teardown(void)
{
    fx_memcached_stop();
    fx_teardown();
}

TestSuite(memcached, .init = mc_setup, .fini = mc_teardown, .timeout = 60);

/* One command's outcome. A get's value is compared with expect. */
typedef struct outcome {
    int calls, status;
    size_t len;
    uint32_t flags;
    const char *expect;
    size_t expect_len;
    bool matches;
    char head[64]; /* the value's first bytes, for messages */
} outcome;

static void record(mc_cmd *cmd, int status, const char *value, size_t len, uint32_t flags)
{
    outcome *o = cmd->data;
    o->calls++;
    o->status = status;
    o->len = len;
    o->flags = flags;
    o->matches = value && o->expect && len == o->expect_len && !memcmp(value, o->expect, len);
    snprintf(o->head, sizeof o->head, "%.*s", value ? (int)(len < 60 ? len : 60) : 0, value ? value : "");
}

typedef struct batch_end {
    int calls, status;
} batch_end;

static void batch_done(int status, void *data)
{
    batch_end *e = data;
    e->calls++;
    e->status = status;
}

/* Runs a batch to its end; returns its status. Every callback ran once. */
static int run_batch(rp_loop *loop, rp_pool *pool, mc_cmd *cmds, int n)
{
    batch_end end = {0};
    cr_assert_eq(mc_run(pool, cmds, n, batch_done, &end), 0);
    cr_assert_eq(end.calls, 0, "a callback ran inside mc_run");
    cr_assert(fx_run_until_count(loop, &end.calls, 1, 10000), "the batch never ended");
    for (int i = 0; i < n; i++)
        cr_assert_eq(((outcome *)cmds[i].data)->calls, 1, "command %d: %d callbacks", i,
                     ((outcome *)cmds[i].data)->calls);
    fx_run_for(loop, 5);
    cr_assert_eq(end.calls, 1);
    return end.status;
}

static outcome one(rp_loop *loop, rp_pool *pool, mc_op op, const char *key, const char *value, size_t len)
{
    outcome o = {.expect = value, .expect_len = len};
    mc_cmd cmd = {op, key, op == MC_SET ? value : NULL, op == MC_SET ? len : 0, 5, record, &o};
    run_batch(loop, pool, &cmd, 1);
    return o;
}

static outcome mc_set(rp_loop *loop, rp_pool *pool, const char *key, const char *value)
{
    return one(loop, pool, MC_SET, key, value, strlen(value));
}

static outcome mc_get(rp_loop *loop, rp_pool *pool, const char *key, const char *expect)
{
    return one(loop, pool, MC_GET, key, expect, expect ? strlen(expect) : 0);
}

static rp_pool *new_pool(rp_loop **loop, int size, uint32_t read_timeout_ms)
{
    rp_pool *pool;
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = fx_memcached_addr;
    opts.pool_size = size;
    opts.read_timeout_ms = read_timeout_ms;
    opts.dial_timeout_ms = 1000;
    opts.pool_timeout_ms = 5000;
    cr_assert_eq(rp_loop_new(loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&pool, *loop, &opts), 0);
    return pool;
}

/* Asks memcached itself over a socket of the test's own: the reply to cmd,
 * read until it ends with end. */
static void raw_command(const char *cmd, const char *end, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx_memcached_port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
    size_t len = 0, elen = strlen(end);
    while (len < elen || memcmp(out + len - elen, end, elen)) {
        ssize_t n = read(fd, out + len, cap - 1 - len);
        cr_assert_gt(n, 0, "memcached closed early");
        len += (size_t)n;
    }
    out[len] = '\0';
    close(fd);
}

Test(memcached, set_get_delete_round_trip)
{
    rp_loop *loop;
    rp_pool *pool = new_pool(&loop, 2, 3000);
    outcome o = mc_set(loop, pool, "greeting", "hello, memcached");
    cr_assert_eq(o.status, MC_OK, "%s", mc_status_text(o.status));
    char raw[256];
    raw_command("get greeting\r\n", "END\r\n", raw, sizeof raw);
    cr_assert_str_eq(raw, "VALUE greeting 5 16\r\nhello, memcached\r\nEND\r\n");
    o = mc_get(loop, pool, "greeting", "hello, memcached");
    cr_assert(o.status == MC_OK && o.matches && o.flags == 5, "%s: %s", mc_status_text(o.status), o.head);
    raw_command("set other 9 0 3\r\nabc\r\n", "\r\n", raw, sizeof raw);
    o = mc_get(loop, pool, "other", "abc");
    cr_assert(o.status == MC_OK && o.matches && o.flags == 9);
    o = one(loop, pool, MC_DELETE, "greeting", NULL, 0);
    cr_assert_eq(o.status, MC_OK);
    raw_command("get greeting\r\n", "END\r\n", raw, sizeof raw);
    cr_assert_str_eq(raw, "END\r\n");
    cr_assert_eq(mc_get(loop, pool, "greeting", NULL).status, MC_NOT_FOUND);
    cr_assert_eq(one(loop, pool, MC_DELETE, "greeting", NULL, 0).status, MC_NOT_FOUND);
    o = mc_set(loop, pool, "empty", "");
    cr_assert_eq(o.status, MC_OK);
    o = mc_get(loop, pool, "empty", "");
    cr_assert(o.status == MC_OK && o.len == 0);
    /* A bad key is refused by the call, with no callback. */
    mc_cmd bad = {MC_GET, "two words", .cb = record, .data = &o};
    batch_end end = {0};
    cr_assert_eq(mc_run(pool, &bad, 1, batch_done, &end), -EINVAL);
    fx_run_for(loop, 10);
    cr_assert_eq(end.calls, 0);
    rp_stats st;
    rp_pool_stats(pool, &st);
    cr_assert_eq(st.stale_conns, 0, "no connection should have been dropped");
    fx_close_and_free(loop, pool);
}

Test(memcached, a_pipelined_batch_answers_every_command_in_order)
{
    rp_loop *loop;
    rp_pool *pool = new_pool(&loop, 1, 3000);
    enum { N = 120 };
    static char keys[N][16], values[N][40];
    static outcome out[2 * N];
    static mc_cmd cmds[2 * N];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "p:%d", i);
        snprintf(values[i], sizeof values[i], "value %d %.*s", i, i % 20, "xxxxxxxxxxxxxxxxxxxx");
        out[i] = (outcome){0};
        out[N + i] = (outcome){.expect = values[i], .expect_len = strlen(values[i])};
        cmds[i] = (mc_cmd){MC_SET, keys[i], values[i], strlen(values[i]), (uint32_t)i, record, &out[i]};
        cmds[N + i] = (mc_cmd){MC_GET, keys[i], .cb = record, .data = &out[N + i]};
    }
    cr_assert_eq(run_batch(loop, pool, cmds, 2 * N), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(out[i].status, MC_OK);
        cr_assert(out[N + i].status == MC_OK && out[N + i].matches && out[N + i].flags == (uint32_t)i,
                  "get %s: %s %s", keys[i], mc_status_text(out[N + i].status), out[N + i].head);
    }
    rp_stats st;
    rp_pool_stats(pool, &st);
    cr_assert_eq(st.dials, 1, "one connection carried the whole batch");
    cr_assert_eq(st.idle_conns, 1);
    fx_close_and_free(loop, pool);
}

/* The frame function knows a reply's length from its first line, before
 * the value is in, and asks for more while the line is not whole. */
Test(memcached, the_frame_function_knows_a_value_reply_length_from_its_header)
{
    cr_assert_eq(mc_get_frame("VALUE k 0 10", 12, NULL), 0);
    cr_assert_eq(mc_get_frame("VALUE k 0 10\r\n", 14, NULL), 14 + 10 + 7);
    cr_assert_eq(mc_get_frame("VALUE k 0 10 77\r\nab", 19, NULL), 17 + 10 + 7);
    cr_assert_eq(mc_get_frame("END\r\nVALUE", 10, NULL), 5);
    cr_assert_eq(mc_get_frame("SERVER_ERROR out of memory\r\n", 28, NULL), 28);
    cr_assert_eq(mc_get_frame("VALUE k x y\r\n", 13, NULL), -EPROTO);
    cr_assert_eq(mc_get_frame("VALUE k 0 99999999\r\n", 20, NULL), -EMSGSIZE);
    char junk[MC_LINE_MAX + 2];
    memset(junk, 'x', sizeof junk);
    cr_assert_eq(mc_get_frame(junk, sizeof junk, NULL), -EPROTO);
}

/* Values far larger than one read, alone and pipelined with small ones:
 * each reply is put together across reads, and what follows it is kept. */
Test(memcached, large_values_arrive_whole_across_reads)
{
    rp_loop *loop;
    rp_pool *pool = new_pool(&loop, 1, 5000);
    size_t sizes[] = {1024 * 1024, 1536 * 1024 + 13};
    char *big[2];
    for (int v = 0; v < 2; v++) {
        big[v] = malloc(sizes[v]);
        for (size_t i = 0; i < sizes[v]; i++)
            big[v][i] = (char)('a' + (i * 7 + (size_t)v) % 26);
    }
    outcome o = one(loop, pool, MC_SET, "big0", big[0], sizes[0]);
    cr_assert_eq(o.status, MC_OK, "%s", mc_status_text(o.status));
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    o = one(loop, pool, MC_GET, "big0", big[0], sizes[0]);
    rp_loop_stats_get(loop, &after);
    cr_assert(o.status == MC_OK && o.matches, "%s: %zu bytes", mc_status_text(o.status), o.len);
    cr_assert_gt(after.sqes - before.sqes, 3, "1 MiB in one read? %llu SQEs",
                 (unsigned long long)(after.sqes - before.sqes));
    outcome out[5] = {{0}, {.expect = big[1], .expect_len = sizes[1]}, {.expect = "small", .expect_len = 5},
                      {.expect = big[0], .expect_len = sizes[0]}, {0}};
    mc_cmd cmds[5] = {{MC_SET, "big1", big[1], sizes[1], 0, record, &out[0]},
                      {MC_GET, "big1", .cb = record, .data = &out[1]},
                      {MC_SET, "small", "small", 5, 0, record, &out[4]},
                      {MC_GET, "big0", .cb = record, .data = &out[3]},
                      {MC_GET, "small", .cb = record, .data = &out[2]}};
    cr_assert_eq(run_batch(loop, pool, cmds, 5), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(out[i].status, MC_OK, "command %d: %s", i, mc_status_text(out[i].status));
    cr_assert(out[1].matches && out[2].matches && out[3].matches);
    rp_stats st;
    rp_pool_stats(pool, &st);
    cr_assert_eq(st.dials, 1);
    cr_assert_eq(st.stale_conns, 0);
    free(big[0]);
    free(big[1]);
    fx_close_and_free(loop, pool);
}

/* A raw send's or read's outcome. */
typedef struct io_end {
    int calls;
    ssize_t result;
    char head[64];
} io_end;

static void io_done(rp_conn *conn, ssize_t result, void *data)
{
    io_end *e = data;
    e->calls++;
    e->result = result;
}

static void frame_done(rp_conn *conn, const char *frame, ssize_t len, void *data)
{
    io_end *e = data;
    e->calls++;
    e->result = len;
    snprintf(e->head, sizeof e->head, "%.*s", len > 0 ? (int)(len < 60 ? len : 60) : 0, len > 0 ? frame : "");
}

/* A holder asks for two keys, reads one reply and puts the connection
 * back; another sends a request and puts it back unread. Neither reply
 * may reach the next holder, who asks for "a" on the pool's only
 * connection. */
Test(memcached, a_connection_put_back_with_a_reply_pending_never_hands_it_on)
{
    rp_loop *loop;
    rp_pool *pool = new_pool(&loop, 1, 3000);
    cr_assert_eq(mc_set(loop, pool, "a", "value of a").status, MC_OK);
    cr_assert_eq(mc_set(loop, pool, "b", "value of b").status, MC_OK);
    for (int round = 0; round < 6; round++) {
        rp_conn *conn = fx_get_conn(loop, pool);
        bool read_one = round % 2 == 0;
        const char *req = read_one ? "get b\r\nget b\r\n" : "get b\r\n";
        io_end sent = {0}, got = {0};
        cr_assert_eq(rp_conn_send(conn, req, strlen(req), io_done, &sent), 0);
        cr_assert(fx_run_until_count(loop, &sent.calls, 1, 3000));
        cr_assert_eq(sent.result, (ssize_t)strlen(req));
        fx_run_for(loop, 30); /* the replies are in the socket now */
        if (read_one) {
            cr_assert_eq(rp_conn_recv_frame(conn, mc_get_frame, NULL, 0, frame_done, &got), 0);
            cr_assert(fx_run_until_count(loop, &got.calls, 1, 3000));
            cr_assert_str_eq(got.head, "VALUE b 5 10\r\nvalue of b\r\nEND\r\n");
        }
        rp_stats st0, st1;
        rp_pool_stats(pool, &st0);
        rp_pool_put(pool, conn);
        outcome o = mc_get(loop, pool, "a", "value of a");
        cr_assert(o.status == MC_OK && o.matches, "round %d: get a: %s %s", round, mc_status_text(o.status),
                  o.head);
        rp_pool_stats(pool, &st1);
        cr_assert_eq(st1.stale_conns, st0.stale_conns + 1, "round %d: the connection was kept", round);
    }
    fx_close_and_free(loop, pool);
}

/* SIGSTOP, and wait until every thread of memcached has stopped: a
 * signal reaches a process's threads one by one, and a worker not yet
 * stopped could still answer. */
static void stop_memcached(void)
{
    pid_t pid = fx_memcached_pid();
    cr_assert_eq(kill(pid, SIGSTOP), 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    for (uint64_t t0 = fx_now_ms(); fx_now_ms() - t0 < 5000; usleep(1000)) {
        DIR *dir = opendir(path);
        cr_assert(dir);
        bool all = true;
        for (struct dirent *e; (e = readdir(dir));) {
            if (e->d_name[0] == '.')
                continue;
            char stat_path[128], stat[256] = "";
            snprintf(stat_path, sizeof stat_path, "%s/%s/stat", path, e->d_name);
            FILE *f = fopen(stat_path, "r");
            if (f) {
                if (!fgets(stat, sizeof stat, f))
                    stat[0] = '\0';
                fclose(f);
            }
            const char *state = strrchr(stat, ')');
            all &= state && state[1] == ' ' && state[2] == 'T';
        }
        closedir(dir);
        if (all)
            return;
    }
    cr_assert_fail("memcached did not stop");
}

/* A stalled server (SIGSTOP): a get ends with -ETIMEDOUT after the read
 * timeout, once; after SIGCONT the pool serves again, with right values. */
Test(memcached, a_stall_times_out_then_recovers)
{
    rp_loop *loop;
    rp_pool *pool = new_pool(&loop, 2, 300);
    cr_assert_eq(mc_set(loop, pool, "s", "before the stall").status, MC_OK);
    stop_memcached();
    uint64_t t0 = fx_now_ms();
    outcome o = mc_get(loop, pool, "s", "before the stall");
    uint64_t waited = fx_now_ms() - t0;
    cr_assert_eq(o.status, -ETIMEDOUT, "%s", mc_status_text(o.status));
    cr_assert(waited >= 250 && waited < 5000, "timed out after %llu ms", (unsigned long long)waited);
    rp_stats st;
    rp_pool_stats(pool, &st);
    cr_assert(st.total_conns == 0 && st.stale_conns == 1, "the timed-out connection was removed: %u open",
              st.total_conns);
    cr_assert_eq(kill(fx_memcached_pid(), SIGCONT), 0);
    o = mc_get(loop, pool, "s", "before the stall");
    cr_assert(o.status == MC_OK && o.matches, "%s %s", mc_status_text(o.status), o.head);
    cr_assert_eq(mc_set(loop, pool, "s", "after").status, MC_OK);
    o = mc_get(loop, pool, "s", "after");
    cr_assert(o.status == MC_OK && o.matches, "%s %s", mc_status_text(o.status), o.head);
    fx_close_and_free(loop, pool);
}

/* memcached killed with requests in flight: each command's callback runs
 * once with an error and each batch ends once; while it is down gets fail;
 * restarted on the same port, the pool serves again (an empty cache). */
Test(memcached, a_kill_fails_each_command_once_and_a_restart_recovers)
{
    rp_loop *loop;
    rp_pool *pool = new_pool(&loop, 4, 3000);
    cr_assert_eq(mc_set(loop, pool, "k", "lost on restart").status, MC_OK);
    enum { B = 4 };
    outcome out[B][2];
    mc_cmd cmds[B][2];
    batch_end ends[B] = {{0}};
    stop_memcached(); /* the requests stay unanswered */
    for (int i = 0; i < B; i++) {
        memset(out[i], 0, sizeof out[i]);
        cmds[i][0] = (mc_cmd){MC_SET, "k", "x", 1, 0, record, &out[i][0]};
        cmds[i][1] = (mc_cmd){MC_GET, "k", .cb = record, .data = &out[i][1]};
        cr_assert_eq(mc_run(pool, cmds[i], 2, batch_done, &ends[i]), 0);
    }
    fx_run_for(loop, 100);
    fx_memcached_stop();
    int calls = 0;
    for (uint64_t t0 = fx_now_ms(); fx_now_ms() - t0 < 5000 && calls < B;) {
        rp_loop_run(loop, RP_RUN_ONCE);
        calls = 0;
        for (int i = 0; i < B; i++)
            calls += ends[i].calls;
    }
    fx_run_for(loop, 50);
    for (int i = 0; i < B; i++) {
        cr_assert_eq(ends[i].calls, 1, "batch %d ended %d times", i, ends[i].calls);
        cr_assert_lt(ends[i].status, 0);
        for (int j = 0; j < 2; j++) {
            cr_assert_eq(out[i][j].calls, 1);
            cr_assert_eq(out[i][j].status, ends[i].status, "batch %d command %d: %s", i, j,
                         mc_status_text(out[i][j].status));
        }
    }
    cr_assert_lt(mc_get(loop, pool, "k", NULL).status, 0, "a get with memcached down");
    fx_memcached_restart();
    outcome o = {0};
    uint64_t t0 = fx_now_ms();
    do {
        o = mc_set(loop, pool, "k", "after the restart");
    } while (o.status < 0 && fx_now_ms() - t0 < 5000 && (fx_run_for(loop, 20), true));
    cr_assert_eq(o.status, MC_OK, "no recovery: %s", mc_status_text(o.status));
    o = mc_get(loop, pool, "k", "after the restart");
    cr_assert(o.status == MC_OK && o.matches, "%s %s", mc_status_text(o.status), o.head);
    fx_close_and_free(loop, pool);
}

/* Many callers at once on a smaller pool, each with its own key: every
 * value read back is its own key's, and memcached holds them all. */
typedef struct caller_state {
    char key[32], value[96];
    outcome set, get;
    mc_cmd cmd;
    batch_end end;
    rp_pool *pool;
    int *finished;
} caller_state;

static void caller_step(int status, void *data)
{
    caller_state *c = data;
    if (c->cmd.op == MC_GET || status < 0) {
        (*c->finished)++;
        return;
    }
    c->cmd = (mc_cmd){MC_GET, c->key, .cb = record, .data = &c->get};
    cr_assert_eq(mc_run(c->pool, &c->cmd, 1, caller_step, c), 0);
}

Test(memcached, many_callers_read_their_own_values)
{
    rp_loop *loop;
    rp_pool *pool = new_pool(&loop, 16, 5000);
    enum { C = 400 };
    caller_state *callers = calloc(C, sizeof *callers);
    int finished = 0;
    for (int i = 0; i < C; i++) {
        caller_state *c = &callers[i];
        snprintf(c->key, sizeof c->key, "caller:%d", i);
        snprintf(c->value, sizeof c->value, "value of caller %d:%.*s", i, i % 50,
                 "--------------------------------------------------");
        c->get.expect = c->value;
        c->get.expect_len = strlen(c->value);
        c->pool = pool;
        c->finished = &finished;
        c->cmd = (mc_cmd){MC_SET, c->key, c->value, strlen(c->value), 0, record, &c->set};
        cr_assert_eq(mc_run(pool, &c->cmd, 1, caller_step, c), 0);
    }
    cr_assert(fx_run_until_count(loop, &finished, C, 20000), "%d of %d callers finished", finished, C);
    fx_run_for(loop, 10);
    for (int i = 0; i < C; i++) {
        caller_state *c = &callers[i];
        cr_assert(c->set.calls == 1 && c->set.status == MC_OK, "%s: set %s", c->key, mc_status_text(c->set.status));
        cr_assert(c->get.calls == 1 && c->get.status == MC_OK && c->get.matches, "%s: got %s", c->key, c->get.head);
    }
    rp_stats st;
    rp_pool_stats(pool, &st);
    cr_assert_leq(st.total_conns, 16);
    char raw[256], want[256];
    raw_command("get caller:123\r\n", "END\r\n", raw, sizeof raw);
    snprintf(want, sizeof want, "VALUE caller:123 0 %zu\r\n%s\r\nEND\r\n", strlen(callers[123].value),
             callers[123].value);
    cr_assert_str_eq(raw, want);
    free(callers);
    fx_close_and_free(loop, pool);
}

/* The program itself: the demo, and the benchmark's own check of every
 * value it reads, pipelined and not. */
static int run_example(const char *args, char *out, size_t cap)
{
    const char *dir = getenv("RP_EXAMPLES_DIR");
    cr_assert(dir, "RP_EXAMPLES_DIR is not set (meson test sets it)");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s/memcached -a %s %s 2>&1", dir, fx_memcached_addr, args);
    FILE *pipe = popen(cmd, "r");
    size_t n = fread(out, 1, cap - 1, pipe);
    out[n] = '\0';
    return WEXITSTATUS(pclose(pipe));
}

Test(memcached, the_example_program_runs_its_demo_and_benchmark)
{
    char out[4096];
    cr_assert_eq(run_example("", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "get greeting: hello, memcached (flags 7)\n") &&
                  strstr(out, "get pipelined: one batch (flags 0)\n") && strstr(out, "get greeting: not found\n"),
              "%s", out);
    cr_assert_eq(run_example("-b set -c 20 -n 4000 -d 100 -k 500", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "4000 requests, 0 errors"), "%s", out);
    cr_assert_eq(run_example("-b get -c 30 -n 6000 -p 8 -k 700", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "memcached get: c=30 depth=8") && strstr(out, "6000 requests, 0 errors"), "%s", out);
    char raw[256];
    raw_command("get k:699\r\n", "END\r\n", raw, sizeof raw);
    cr_assert(strstr(raw, "VALUE k:699 0 32\r\nk:699=....") == raw, "%s", raw);
    cr_assert_eq(run_example("-b get -c 0", out, sizeof out), 2, "%s", out);
    cr_assert_eq(run_example("--help", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "usage:") && strstr(out, "-a ADDR"), "%s", out);
}
