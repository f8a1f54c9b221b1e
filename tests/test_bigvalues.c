/* Big values through rp_client: their bytes go out by reference from the
 * command's own copy (and as zero-copy sends where the loop uses them),
 * held until every send that carries them, and its notification, is
 * done. Each test compares the bytes read back with those sent. Runs
 * three times (tests/meson.build): as is, with RINGPOOL_SEND_ZC=0 (the
 * plain path of a kernel without zero-copy sends) and with
 * RINGPOOL_SEND_ZC=always (every large send a zero-copy one, even where
 * the kernel copies: loopback). The last tests, on rp_client and the raw
 * pool, put a connection back while its send's notification is owed. */
#include "fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

TestSuite(bigvalues, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

#define MiB (1024u * 1024u)

static rp_loop *loop;
static rp_client *client;

/* The zero-copy mode this run is in: 0 off, 1 on (until the kernel
 * copies), 2 always. */
static int zc_mode(void)
{
    const char *env = getenv("RINGPOOL_SEND_ZC");
    return env && !strcmp(env, "0") ? 0 : env && !strcmp(env, "always") ? 2 : 1;
}

static void open_client_at(const char *addr, int autopipeline_conns, int pool_size, int max_retries)
{
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = addr;
    opts.pool.pool_size = pool_size;
    opts.pool.read_timeout_ms = 20000;
    opts.pool.write_timeout_ms = 20000;
    opts.max_retries = max_retries;
    opts.min_retry_backoff_ms = 1;
    opts.max_retry_backoff_ms = 10;
    opts.max_reply_bytes = 1024u * MiB;
    opts.autopipeline_conns = autopipeline_conns;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
}

static void open_client(int autopipeline_conns, int pool_size, int max_retries)
{
    open_client_at(fx_redis_addr, autopipeline_conns, pool_size, max_retries);
}

static int64_t set_value(const char *key, const char *value, size_t len, unsigned flags, fx_outcome *o)
{
    rp_command_options copts = {.flags = flags};
    return rp_client_command_ex(client, &copts, fx_outcome_cb, o, 3, (const char *[]){"SET", key, value},
                                (const size_t[]){3, strlen(key), len});
}

static void get_value(const char *key, const char *want, size_t len, fx_outcome *o)
{
    o->want = want;
    o->want_len = len;
    cr_assert_eq(rp_client_command(client, fx_outcome_cb, o, 2, (const char *[]){"GET", key}, NULL), 0);
}

static void expect_ok(const fx_outcome *o, const char *what)
{
    cr_expect_eq(o->calls, 1, "%s: called back %d times", what, o->calls);
    cr_expect_eq(o->status, 0, "%s: %s", what, rp_strerror(o->status));
    cr_expect_eq(o->type, REDIS_REPLY_STATUS, "%s: reply type %d", what, o->type);
}

/* SET then GET; the bytes read back are the bytes sent. While the SET's
 * bytes are on their way, rp_client_buffer_bytes counts them (a value of
 * 16 MiB or more takes several loop iterations to send: seen there). */
static void round_trip(size_t len, unsigned timeout_ms)
{
    char *value = fx_make_value(len, len);
    fx_outcome set = {0}, get = {0};
    cr_assert_geq(set_value("big", value, len, 0, &set), 0);
    size_t held = 0;
    uint64_t deadline = fx_now_ms() + timeout_ms;
    while (!set.calls && fx_now_ms() < deadline) {
        rp_loop_run(loop, RP_RUN_ONCE);
        size_t now = rp_client_buffer_bytes(client);
        held = now > held ? now : held;
    }
    expect_ok(&set, "SET");
    if (len >= 16 * MiB)
        cr_expect_geq(held, len, "the bytes on their way were counted: at most %zu of %zu", held, len);
    get_value("big", value, len, &get);
    cr_assert(fx_run_until_count(loop, &get.calls, 1, timeout_ms));
    cr_expect_eq(get.status, 0, "GET: %s", rp_strerror(get.status));
    cr_expect(get.same, "the value read back differs from the one sent");
    cr_expect_leq(rp_client_buffer_bytes(client), 64 * 1024, "%zu bytes still held after both",
                  rp_client_buffer_bytes(client));
    free(value);
}

Test(bigvalues, a_64_mb_value_round_trips_exactly)
{
    open_client(0, 2, 3);
    round_trip(64 * MiB, 20000);
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    cr_expect_eq(ls.send_zc_notifs, ls.send_zc, "every zero-copy send's notification came: %llu of %llu",
                 (unsigned long long)ls.send_zc_notifs, (unsigned long long)ls.send_zc);
    if (zc_mode() == 0)
        cr_expect_eq(ls.send_zc, 0, "RINGPOOL_SEND_ZC=0, yet %llu zero-copy sends", (unsigned long long)ls.send_zc);
    else
        cr_expect_geq(ls.send_zc, 1, "the 64 MB value went by no zero-copy send");
    fx_client_close_and_free(loop, client);
}

static bool enough_memory(unsigned long long need_kib)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib >= need_kib;
}

/* The server's limit (proto-max-bulk-len 512mb) is exactly this size.
 * Held at the peak: the caller's value, the command's copy, the server's
 * query buffer and value, the reply being read and the reply: ~3 GB. */
Test(bigvalues, a_512_mb_value_round_trips_exactly, .timeout = 240)
{
    if (!enough_memory(6ull * 1024 * 1024))
        cr_skip_test("less than 6 GiB of memory available: the 512 MB round trip needs about 3 GiB");
    open_client(0, 2, 3);
    round_trip(512 * MiB, 120000);
    fx_client_close_and_free(loop, client);
}

/* Many values at once: small enough for the lanes of an auto-pipelining
 * client (many pieces in one send), then larger ones that each take a
 * connection of their own. */
static void many_at_once(int n, size_t len)
{
    char **values = calloc((size_t)n, sizeof *values);
    fx_outcome *sets = calloc((size_t)n, sizeof *sets), *gets = calloc((size_t)n, sizeof *gets);
    char key[32];
    for (int i = 0; i < n; i++) {
        values[i] = fx_make_value(len, (uint64_t)i + 7);
        snprintf(key, sizeof key, "big:%d", i);
        cr_assert_geq(set_value(key, values[i], len, 0, &sets[i]), 0);
    }
    int done = 0;
    uint64_t deadline = fx_now_ms() + 30000;
    while (done < n && fx_now_ms() < deadline) {
        rp_loop_run(loop, RP_RUN_ONCE);
        for (done = 0; done < n && sets[done].calls; done++)
            ;
    }
    for (int i = 0; i < n; i++) {
        expect_ok(&sets[i], "SET");
        snprintf(key, sizeof key, "big:%d", i);
        get_value(key, values[i], len, &gets[i]);
    }
    deadline = fx_now_ms() + 30000;
    for (done = 0; done < n && fx_now_ms() < deadline;) {
        rp_loop_run(loop, RP_RUN_ONCE);
        for (done = 0; done < n && gets[done].calls; done++)
            ;
    }
    for (int i = 0; i < n; i++) {
        cr_expect_eq(gets[i].calls, 1, "GET %d called back %d times", i, gets[i].calls);
        cr_expect(gets[i].same, "value %d read back differs (status %s)", i, rp_strerror(gets[i].status));
        free(values[i]);
    }
    free(values);
    free(sets);
    free(gets);
}

Test(bigvalues, many_big_values_at_once_on_lanes)
{
    open_client(2, 4, 3);
    many_at_once(48, 200 * 1024);
    fx_client_close_and_free(loop, client);
}

Test(bigvalues, many_big_values_at_once_on_connections_of_their_own)
{
    open_client(0, 4, 3);
    many_at_once(12, 3 * MiB + 17);
    fx_client_close_and_free(loop, client);
}

/* Unsent commands taken out of a batch that holds pieces: the pieces
 * after them move up, and what goes out is still each kept value. */
Test(bigvalues, cancelled_unsent_commands_leave_the_others_intact)
{
    open_client(1, 2, 3);
    enum { N = 6 };
    char *values[N];
    fx_outcome sets[N] = {{0}}, gets[N] = {{0}};
    int64_t ids[N];
    for (int i = 0; i < N; i++) {
        values[i] = fx_make_value(40 * 1024 + (size_t)i, (uint64_t)i + 100);
        char key[32];
        snprintf(key, sizeof key, "k:%d", i);
        ids[i] = set_value(key, values[i], 40 * 1024 + (size_t)i, 0, &sets[i]);
        cr_assert_geq(ids[i], 0);
    }
    /* Still unsent: they leave with this iteration's submit. */
    cr_assert_eq(rp_client_cancel(client, ids[1]), 0);
    cr_assert_eq(rp_client_cancel(client, ids[4]), 0);
    uint64_t deadline = fx_now_ms() + 10000;
    while (!(sets[0].calls && sets[5].calls) && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    fx_run_for(loop, 50);
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof key, "k:%d", i);
        cr_expect_eq(sets[i].calls, 1, "SET %d called back %d times", i, sets[i].calls);
        if (i == 1 || i == 4) {
            cr_expect_eq(sets[i].status, -ECANCELED, "SET %d: %s", i, rp_strerror(sets[i].status));
            get_value(key, NULL, 0, &gets[i]);
        } else {
            expect_ok(&sets[i], "SET");
            get_value(key, values[i], 40 * 1024 + (size_t)i, &gets[i]);
        }
    }
    for (int i = 0; i < N; i++) {
        cr_assert(fx_run_until_count(loop, &gets[i].calls, 1, 10000));
        if (i == 1 || i == 4)
            cr_expect_eq(gets[i].type, REDIS_REPLY_NIL, "the cancelled SET %d ran", i);
        else
            cr_expect(gets[i].same, "value %d read back differs", i);
        free(values[i]);
    }
    fx_client_close_and_free(loop, client);
}

/* The server stops reading (SIGSTOP) while a big value is on its way, so
 * the send stalls part-way. */
static void stall_server(void)
{
    cr_assert_eq(kill(fx_redis_pid(), SIGSTOP), 0);
}

static void run_until_stalled(void)
{
    fx_run_for(loop, 300);
}

/* A command taken back while its bytes are on their way ends at once;
 * the send goes on from its memory, which stays until the send is done,
 * and the server then runs it whole. Its bytes are still counted. */
Test(bigvalues, a_big_value_cancelled_while_it_is_sent_is_sent_whole)
{
    open_client(0, 2, 0);
    size_t len = 48 * MiB;
    char *value = fx_make_value(len, 3);
    fx_outcome set = {0}, get = {0};
    stall_server();
    int64_t id = set_value("big", value, len, 0, &set);
    cr_assert_geq(id, 0);
    run_until_stalled();
    cr_assert_eq(set.calls, 0, "the SET ended before the server read it: %s", rp_strerror(set.status));
    cr_assert_eq(rp_client_cancel(client, id), 0);
    memset(value, 0, len); /* the caller's own buffer never mattered after the call */
    free(value);
    cr_assert(fx_run_until_count(loop, &set.calls, 1, 2000));
    cr_expect_eq(set.status, -ECANCELED);
    cr_expect_geq(rp_client_buffer_bytes(client), len / 2, "the bytes still on their way are counted: %zu",
                  rp_client_buffer_bytes(client));
    cr_assert_eq(kill(fx_redis_pid(), SIGCONT), 0);
    fx_run_for(loop, 500);
    value = fx_make_value(len, 3);
    get_value("big", value, len, &get);
    cr_assert(fx_run_until_count(loop, &get.calls, 1, 20000));
    cr_expect(get.same, "the value the server ran differs from the one sent (status %s, type %d)",
              rp_strerror(get.status), get.type);
    cr_expect_eq(set.calls, 1);
    free(value);
    fx_client_close_and_free(loop, client);
}

/* The server dies while big values are on their way: each command ends
 * once with an error, nothing leaks (the fixture counts fds; ASan the
 * rest), and the client closes. */
Test(bigvalues, a_server_killed_while_big_values_are_sent)
{
    open_client(1, 3, 0);
    size_t len = 32 * MiB;
    char *values[3];
    fx_outcome sets[4] = {{0}};
    stall_server();
    for (int i = 0; i < 3; i++) {
        values[i] = fx_make_value(len + (size_t)i * 5 * 1024, (uint64_t)i);
        char key[8] = {'k', (char)('0' + i), 0};
        cr_assert_geq(set_value(key, values[i], len + (size_t)i * 5 * 1024, 0, &sets[i]), 0);
    }
    char *lane_value = fx_make_value(300 * 1024, 9); /* on the lane */
    cr_assert_geq(set_value("lane", lane_value, 300 * 1024, 0, &sets[3]), 0);
    run_until_stalled();
    fx_redis_stop();
    for (int i = 0; i < 4; i++) {
        cr_assert(fx_run_until_count(loop, &sets[i].calls, 1, 10000), "SET %d never ended", i);
        cr_expect_lt(sets[i].status, 0, "SET %d: %s", i, rp_strerror(sets[i].status));
    }
    fx_run_for(loop, 50);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(sets[i].calls, 1, "SET %d called back %d times", i, sets[i].calls);
    cr_expect_leq(rp_client_buffer_bytes(client), 64 * 1024, "%zu bytes held after the failure",
                  rp_client_buffer_bytes(client));
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    cr_expect_eq(ls.send_zc_notifs, ls.send_zc, "notifications %llu of %llu zero-copy sends",
                 (unsigned long long)ls.send_zc_notifs, (unsigned long long)ls.send_zc);
    for (int i = 0; i < 3; i++)
        free(values[i]);
    free(lane_value);
    fx_client_close_and_free(loop, client);
}

/* An idempotent SET whose connection is lost while its big value is on
 * its way is sent again, from the same copy, on a new connection: the
 * server that answers holds exactly the bytes. */
Test(bigvalues, a_big_idempotent_command_retried_after_a_lost_connection_resends_the_same_bytes)
{
    open_client(0, 2, 3);
    size_t len = 40 * MiB;
    char *value = fx_make_value(len, 11);
    fx_outcome set = {0}, get = {0};
    stall_server();
    cr_assert_geq(set_value("big", value, len, RP_CMD_IDEMPOTENT, &set), 0);
    run_until_stalled();
    cr_assert_eq(set.calls, 0);
    fx_redis_restart();
    cr_assert(fx_run_until_count(loop, &set.calls, 1, 30000));
    expect_ok(&set, "the retried SET");
    get_value("big", value, len, &get);
    cr_assert(fx_run_until_count(loop, &get.calls, 1, 20000));
    cr_expect(get.same, "the value read back differs (status %s, type %d)", rp_strerror(get.status), get.type);
    free(value);
    fx_client_close_and_free(loop, client);
}

/* The encoder copies no argument sent by reference: a 64 MB SET costs
 * the command's one copy, not a second in the output buffer. Counted
 * through the allocator hooks. */
static size_t allocated;
static void *count_malloc(size_t size) { allocated += size; return malloc(size); }
static void *count_realloc(void *ptr, size_t size) { allocated += size; return realloc(ptr, size); }
static void *count_calloc(size_t n, size_t size) { allocated += n * size; return calloc(n, size); }

Test(bigvalues, a_big_value_is_copied_once)
{
    open_client(0, 2, 3);
    fx_outcome ping = {0};
    cr_assert_eq(rp_client_command(client, fx_outcome_cb, &ping, 1, (const char *[]){"PING"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &ping.calls, 1, 5000)); /* connection set up */
    size_t len = 64 * MiB;
    char *value = fx_make_value(len, 5);
    fx_outcome set = {0};
    cr_assert_eq(rp_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
    allocated = 0;
    cr_assert_geq(set_value("big", value, len, 0, &set), 0);
    cr_assert(fx_run_until_count(loop, &set.calls, 1, 20000));
    size_t total = allocated;
    cr_assert_eq(rp_set_allocator(malloc, realloc, calloc, free), 0);
    expect_ok(&set, "SET");
    cr_expect_lt(total, len + len / 8, "%zu bytes allocated to send %zu", total, len);
    free(value);
    fx_client_close_and_free(loop, client);
}

/* Zero-copy sends on loopback: the kernel copies, says so in the
 * notification, and the connection sends plainly from then on (unless
 * RINGPOOL_SEND_ZC=always). Every send's notification is counted. */
Test(bigvalues, zero_copy_sends_and_their_notifications_are_counted)
{
    open_client(0, 1, 3);
    for (int i = 0; i < 3; i++)
        round_trip(1 * MiB, 10000);
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    cr_expect_eq(ls.send_zc_notifs, ls.send_zc);
    cr_expect_eq(ls.send_zc_refused, 0);
    if (zc_mode() == 0) {
        cr_expect_eq(ls.send_zc, 0);
    } else {
        cr_expect_geq(ls.send_zc, 1);
        cr_expect_eq(ls.send_zc_copied, ls.send_zc_notifs, "loopback copies: %llu of %llu said so",
                     (unsigned long long)ls.send_zc_copied, (unsigned long long)ls.send_zc_notifs);
        if (zc_mode() == 1)
            cr_expect_eq(ls.send_zc, 1, "after the kernel said it copied, %llu zero-copy sends",
                         (unsigned long long)ls.send_zc);
        else
            cr_expect_geq(ls.send_zc, 3, "RINGPOOL_SEND_ZC=always: %llu", (unsigned long long)ls.send_zc);
    }
    fx_client_close_and_free(loop, client);
}

/* A unix socket has no zero-copy sends: the kernel refuses the first
 * (-EOPNOTSUPP), which goes again plainly, and the connection sends
 * plainly from then on. The fallback every kernel without them takes. */
Test(bigvalues, a_refused_zero_copy_send_goes_again_plainly)
{
    char path[64], addr[80];
    snprintf(path, sizeof path, "/tmp/rp-bigvalues-%d.sock", (int)getpid());
    static const char *extra[5];
    extra[0] = "--unixsocket";
    extra[1] = path;
    extra[2] = "--unixsocketperm";
    extra[3] = "700";
    extra[4] = NULL;
    fx_redis_stop();
    fx_redis_start_with(extra);
    snprintf(addr, sizeof addr, "unix:%s", path);
    open_client_at(addr, 0, 1, 0);
    for (int i = 0; i < 2; i++)
        round_trip(2 * MiB, 10000);
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    if (zc_mode() == 0) {
        cr_expect_eq(ls.send_zc, 0);
    } else {
        cr_expect_eq(ls.send_zc_refused, 1, "%llu refusals", (unsigned long long)ls.send_zc_refused);
        cr_expect_eq(ls.send_zc, 1, "%llu zero-copy sends tried", (unsigned long long)ls.send_zc);
        cr_expect_eq(ls.send_zc_notifs, ls.send_zc, "the refused send's notification came");
    }
    fx_client_close_and_free(loop, client);
    unlink(path);
}

/* ------------------------------------ the reply before the notification */

/* On a real network a zero-copy send's notification comes when the peer
 * has acknowledged its bytes (the kernel frees them then), and the reply
 * to the request can come first. Loopback copies and notifies at once,
 * so the tests make the order with a peer of their own: its listening
 * socket has a small SO_RCVBUF (set before listen, so the accepted socket
 * offers a small window from the start), and it reads only the first
 * PEER_READ_FIRST bytes of a 1 MiB request before it answers. The
 * client's send buffer on loopback is large (4 MiB here: tcp_wmem's
 * maximum), so the whole request is queued and the send completes, but
 * most of it is still in the client's socket, not delivered, and the
 * kernel owes the notification until the peer reads the rest. Measured
 * with a bare io_uring (SENDMSG_ZC of a header and 1 MiB): the send's
 * CQE (F_MORE), then the reply's, then the notification only once the
 * peer read everything. The window stays larger than loopback's MSS
 * (64 KiB): 64 KiB asked, 128 KiB given; with a window of a few KiB the
 * sender waited on its persist timer, and the rest took 100 s to go.
 * Each test checks that the order held (the loop's counts: one
 * notification owed when the reply's callback ran). Zero-copy sends
 * only: skipped with RINGPOOL_SEND_ZC=0. */
#define PEER_READ_FIRST (16 * 1024)

typedef struct slow_peer {
    int listener, fd;
    char addr[64];
} slow_peer;

static void slow_peer_open(slow_peer *p)
{
    p->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(p->listener, 0);
    int small = 64 * 1024;
    cr_assert_eq(setsockopt(p->listener, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    cr_assert_eq(bind(p->listener, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(listen(p->listener, 4), 0);
    getsockname(p->listener, (struct sockaddr *)&sin, &len);
    snprintf(p->addr, sizeof p->addr, "127.0.0.1:%d", ntohs(sin.sin_port));
    p->fd = -1;
}

/* The client's connection, once it dialled (the kernel completed it). */
static void slow_peer_accept(slow_peer *p)
{
    p->fd = accept(p->listener, NULL, NULL);
    cr_assert_geq(p->fd, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* Reads exactly n bytes (the socket's timeout bounds each read). */
static void slow_peer_read(slow_peer *p, size_t n)
{
    static char sink[64 * 1024];
    size_t got = 0;
    ssize_t r = 1;
    while (got < n && (r = recv(p->fd, sink, n - got < sizeof sink ? n - got : sizeof sink, 0)) > 0)
        got += (size_t)r;
    cr_assert_eq(got, n, "the peer read %zu of %zu bytes (%s)", got, n, r < 0 ? strerror(errno) : "EOF");
}

static void slow_peer_write(slow_peer *p, const char *text)
{
    cr_assert_eq(write(p->fd, text, strlen(text)), (ssize_t)strlen(text));
}

static void slow_peer_close(slow_peer *p)
{
    if (p->fd >= 0)
        close(p->fd);
    close(p->listener);
}

/* The bytes of SET key value as the client sends them. */
static size_t set_request_len(const char *key, size_t len)
{
    char head[96];
    return (size_t)snprintf(head, sizeof head, "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(key), key, len) +
           len + 2;
}

static rp_loop_stats loop_stats(void)
{
    rp_loop_stats ls;
    rp_loop_stats_get(loop, &ls);
    return ls;
}

/* The pool's conn_close hook: how many closed, and the last reason. */
static int closes, close_reason;

static void count_close(void *data, rp_conn *conn, rp_close_reason reason)
{
    (void)data, (void)conn;
    closes++;
    close_reason = (int)reason;
}

/* A client of one connection on the peer, nothing to set up (max_retries
 * 0: no COMMAND), with these write and pool timeouts (0: none, default). */
static void open_peer_client(const slow_peer *p, uint32_t write_timeout_ms, uint32_t pool_timeout_ms)
{
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = p->addr;
    opts.pool.pool_size = 1;
    opts.pool.read_timeout_ms = 10000;
    opts.pool.write_timeout_ms = write_timeout_ms;
    opts.pool.pool_timeout_ms = pool_timeout_ms;
    opts.max_retries = 0;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    closes = 0;
    close_reason = -1;
    rp_hooks hooks = {.conn_close = count_close};
    cr_assert_eq(rp_client_set_hooks(client, &hooks), 0);
}

/* A 1 MiB SET whose +OK comes while the kernel still owes its
 * notification: the SET's callback has run, its connection is back. */
static char *set_answered_before_notification(slow_peer *p, fx_outcome *set)
{
    size_t len = 1 * MiB;
    char *value = fx_make_value(len, 21);
    cr_assert_geq(set_value("k", value, len, 0, set), 0);
    fx_run_for(loop, 50); /* dialled, and the request queued in the client's socket */
    slow_peer_accept(p);
    slow_peer_read(p, PEER_READ_FIRST);
    slow_peer_write(p, "+OK\r\n");
    cr_assert(fx_run_until_count(loop, &set->calls, 1, 5000), "the SET was not answered");
    expect_ok(set, "SET");
    rp_loop_stats ls = loop_stats();
    cr_assert_eq(ls.send_zc_notifs + 1, ls.send_zc,
                 "the order did not hold: %llu notifications of %llu zero-copy sends when the reply came",
                 (unsigned long long)ls.send_zc_notifs, (unsigned long long)ls.send_zc);
    return value;
}

static rp_stats client_pool_stats(void)
{
    rp_stats st;
    rp_pool_stats(rp_client_pool(client), &st);
    return st;
}

/* The connection waits, neither idle nor in use, for the notification;
 * the next command, issued meanwhile, goes on it once the peer read the
 * rest: one dial, nothing removed. */
Test(bigvalues, a_reply_before_the_zero_copy_notification_keeps_the_connection)
{
    if (zc_mode() == 0)
        cr_skip_test("RINGPOOL_SEND_ZC=0: no notification to wait for");
    slow_peer p;
    slow_peer_open(&p);
    open_peer_client(&p, 10000, 0);
    fx_outcome set = {0}, get = {0};
    char *value = set_answered_before_notification(&p, &set);
    rp_stats st = client_pool_stats();
    cr_expect_eq(st.stale_conns, 0, "the connection was removed at its put");
    cr_expect_eq(closes, 0, "the conn_close hook said %d", close_reason);
    cr_expect_eq(st.total_conns, 1, "%u connections open", st.total_conns);
    cr_expect_eq(st.idle_conns, 0, "idle while the kernel holds its send's memory");
    get_value("k", "abc", 3, &get);
    fx_run_for(loop, 50);
    cr_expect_eq(get.calls, 0, "the GET was answered before the peer answered it");
    cr_expect_eq(client_pool_stats().dials, 1, "the GET dialled instead of waiting for the connection");
    slow_peer_read(&p, set_request_len("k", 1 * MiB) - PEER_READ_FIRST);
    uint64_t deadline = fx_now_ms() + 5000;
    while (loop_stats().send_zc_notifs < loop_stats().send_zc && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    cr_assert_eq(loop_stats().send_zc_notifs, loop_stats().send_zc, "the notification never came");
    fx_run_for(loop, 20); /* the GET goes out */
    slow_peer_read(&p, strlen("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"));
    slow_peer_write(&p, "$3\r\nabc\r\n");
    cr_assert(fx_run_until_count(loop, &get.calls, 1, 5000), "the GET was not answered");
    cr_expect_eq(get.status, 0, "GET: %s", rp_strerror(get.status));
    cr_expect(get.same, "the GET's reply differs");
    fx_run_for(loop, 20);
    st = client_pool_stats();
    cr_expect_eq(st.dials, 1, "%u dials", st.dials);
    cr_expect_eq(st.stale_conns, 0, "%u connections removed", st.stale_conns);
    cr_expect_eq(st.total_conns, 1);
    cr_expect_eq(st.idle_conns, 1);
    cr_expect_eq(closes, 0, "the conn_close hook said %d", close_reason);
    cr_expect_eq(set.calls, 1);
    cr_expect_eq(get.calls, 1);
    free(value);
    fx_client_close_and_free(loop, client);
    slow_peer_close(&p);
}

/* A peer that answered but never reads the rest: the notification never
 * comes on its own. The wait ends at the write timeout (the send is let
 * go, as one that timed out), or with none at the pool timeout, and the
 * connection is removed as broken. */
static void never_notified(uint32_t write_timeout_ms, uint32_t pool_timeout_ms)
{
    if (zc_mode() == 0)
        cr_skip_test("RINGPOOL_SEND_ZC=0: no notification to wait for");
    slow_peer p;
    slow_peer_open(&p);
    open_peer_client(&p, write_timeout_ms, pool_timeout_ms);
    fx_outcome set = {0};
    uint64_t start = fx_now_ms();
    char *value = set_answered_before_notification(&p, &set);
    uint64_t deadline = fx_now_ms() + 5000;
    while (client_pool_stats().total_conns && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    uint64_t took = fx_now_ms() - start;
    rp_stats st = client_pool_stats();
    cr_expect_eq(st.total_conns, 0, "the connection is still held after %llu ms", (unsigned long long)took);
    cr_expect_eq(st.stale_conns, 1);
    cr_expect_eq(closes, 1);
    cr_expect_eq(close_reason, RP_CLOSE_BROKEN, "closed for reason %d", close_reason);
    cr_expect_geq(took, 250, "removed after %llu ms, before its timeout", (unsigned long long)took);
    rp_loop_stats ls = loop_stats();
    cr_expect_eq(ls.send_zc_notifs, ls.send_zc, "notifications %llu of %llu", (unsigned long long)ls.send_zc_notifs,
                 (unsigned long long)ls.send_zc);
    cr_expect_eq(set.calls, 1);
    free(value);
    fx_client_close_and_free(loop, client);
    slow_peer_close(&p);
}

Test(bigvalues, a_notification_that_never_comes_ends_at_the_write_timeout) { never_notified(300, 0); }

Test(bigvalues, a_notification_that_never_comes_ends_at_the_pool_timeout_without_a_write_timeout)
{
    never_notified(0, 300);
}

/* The peer closes while the connection waits for the notification: the
 * Redis layer's watch sees it and the connection goes at once, not at
 * the write timeout. */
Test(bigvalues, a_peer_that_closes_while_the_notification_is_owed_removes_the_connection_at_once)
{
    if (zc_mode() == 0)
        cr_skip_test("RINGPOOL_SEND_ZC=0: no notification to wait for");
    slow_peer p;
    slow_peer_open(&p);
    open_peer_client(&p, 10000, 0);
    fx_outcome set = {0};
    char *value = set_answered_before_notification(&p, &set);
    cr_expect_eq(client_pool_stats().total_conns, 1, "removed at its put");
    uint64_t start = fx_now_ms();
    close(p.fd);
    p.fd = -1;
    uint64_t deadline = fx_now_ms() + 5000;
    while (client_pool_stats().total_conns && fx_now_ms() < deadline)
        rp_loop_run(loop, RP_RUN_ONCE);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(client_pool_stats().total_conns, 0);
    cr_expect_eq(client_pool_stats().stale_conns, 1);
    cr_expect_eq(close_reason, RP_CLOSE_UNHEALTHY, "closed for reason %d", close_reason);
    cr_expect_lt(took, 3000, "removed after %llu ms", (unsigned long long)took);
    cr_expect_eq(set.calls, 1);
    free(value);
    fx_client_close_and_free(loop, client);
    slow_peer_close(&p);
}

/* Closing the client while its connection waits for the notification:
 * the close ends (the send let go), each callback once, nothing leaks. */
Test(bigvalues, closing_while_a_notification_is_owed_ends)
{
    if (zc_mode() == 0)
        cr_skip_test("RINGPOOL_SEND_ZC=0: no notification to wait for");
    slow_peer p;
    slow_peer_open(&p);
    open_peer_client(&p, 0, 60000); /* only the close ends the wait */
    fx_outcome set = {0};
    char *value = set_answered_before_notification(&p, &set);
    free(value); /* the client's copy is what the kernel holds */
    uint64_t start = fx_now_ms();
    fx_client_close_and_free(loop, client);
    cr_expect_lt(fx_now_ms() - start, 3000, "the close waited for the notification");
    cr_expect_eq(set.calls, 1);
    cr_expect_eq(closes, 1);
    cr_expect_eq(close_reason, RP_CLOSE_POOL, "closed for reason %d", close_reason);
    slow_peer_close(&p);
}

/* The raw pool: a send's callback comes after its notification, so a
 * holder that read its reply may put the connection with the send's
 * callback still to come. The put keeps the connection; the callback
 * then reports the whole send, and the connection becomes idle. */
typedef struct io_seen {
    int calls;
    ssize_t result;
} io_seen;

static void io_seen_cb(rp_conn *conn, ssize_t result, void *data)
{
    (void)conn;
    io_seen *s = data;
    s->calls++;
    s->result = result;
}

/* A raw request of len bytes on a slow peer's pool of one connection,
 * answered after the peer read its first bytes: returns with the reply
 * read, the send's callback still to come, and the connection held. */
typedef struct raw_exchange {
    rp_pool *pool;
    rp_conn *conn;
    char *request;
    char reply[16];
    io_seen sent, got;
} raw_exchange;

static void raw_reply_before_notification(slow_peer *p, rp_pool_options *opts, size_t len, raw_exchange *x)
{
    *x = (raw_exchange){0};
    x->pool = fx_open_pool(&loop, opts);
    x->conn = fx_get_conn(loop, x->pool);
    x->request = fx_make_value(len, 5);
    cr_assert_eq(rp_conn_send(x->conn, x->request, len, io_seen_cb, &x->sent), 0);
    cr_assert_eq(rp_conn_recv(x->conn, x->reply, sizeof x->reply, io_seen_cb, &x->got), 0);
    fx_run_for(loop, 50);
    slow_peer_accept(p);
    slow_peer_read(p, PEER_READ_FIRST);
    slow_peer_write(p, "+OK\r\n");
    cr_assert(fx_run_until_count(loop, &x->got.calls, 1, 5000));
    cr_assert_eq(x->got.result, 5);
    cr_assert_eq(x->sent.calls, 0, "the send called back before its notification (result %zd)", x->sent.result);
}

Test(bigvalues, a_raw_put_before_the_send_callback_keeps_the_connection)
{
    if (zc_mode() == 0)
        cr_skip_test("RINGPOOL_SEND_ZC=0: no notification to wait for");
    slow_peer p;
    slow_peer_open(&p);
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.addr = p.addr;
    size_t len = 1 * MiB;
    raw_exchange x;
    raw_reply_before_notification(&p, &opts, len, &x);
    rp_pool *pool = x.pool;
    rp_conn *conn = x.conn;
    rp_pool_put(pool, conn);
    rp_stats st;
    rp_pool_stats(pool, &st);
    cr_expect_eq(st.stale_conns, 0, "the connection was removed at its put");
    cr_expect_eq(st.total_conns, 1);
    cr_expect_eq(st.idle_conns, 0, "idle while the kernel holds the send's memory");
    slow_peer_read(&p, len - PEER_READ_FIRST);
    cr_assert(fx_run_until_count(loop, &x.sent.calls, 1, 5000), "the send never called back");
    cr_expect_eq(x.sent.result, (ssize_t)len, "the send ended with %zd", x.sent.result);
    free(x.request);
    rp_pool_stats(pool, &st);
    cr_expect_eq(st.idle_conns, 1, "not idle once the notification came");
    conn = fx_get_conn(loop, pool);
    cr_assert_eq(rp_conn_send(conn, "PING\r\n", 6, io_seen_cb, &x.sent), 0);
    fx_run_for(loop, 20);
    slow_peer_read(&p, 6);
    slow_peer_write(&p, "+PONG\r\n");
    x.got = (io_seen){0};
    cr_assert_eq(rp_conn_recv(conn, x.reply, sizeof x.reply, io_seen_cb, &x.got), 0);
    cr_assert(fx_run_until_count(loop, &x.got.calls, 1, 5000));
    cr_expect_eq(x.got.result, 7);
    cr_expect_eq(x.sent.calls, 2);
    rp_pool_put(pool, conn);
    rp_pool_stats(pool, &st);
    cr_expect_eq(st.dials, 1, "%u dials", st.dials);
    cr_expect_eq(st.stale_conns, 0);
    fx_close_and_free(loop, pool);
    slow_peer_close(&p);
}

/* A get that waits for a parked connection whose notification never
 * comes (no write timeout: the pool timeout bounds the wait) is not left
 * waiting: the connection is removed, and the get has a new one. */
Test(bigvalues, a_get_waiting_for_a_notification_that_never_comes_gets_a_new_connection)
{
    if (zc_mode() == 0)
        cr_skip_test("RINGPOOL_SEND_ZC=0: no notification to wait for");
    slow_peer p;
    slow_peer_open(&p);
    rp_pool_options opts;
    fx_pool_options(&opts, 1);
    opts.addr = p.addr;
    opts.write_timeout_ms = 0;
    opts.pool_timeout_ms = 300;
    raw_exchange x;
    raw_reply_before_notification(&p, &opts, 1 * MiB, &x);
    rp_pool *pool = x.pool;
    rp_pool_put(pool, x.conn);
    fx_got next = {0};
    cr_assert_geq(rp_pool_get(pool, fx_get_cb, &next), 0);
    fx_run_for(loop, 50);
    rp_stats st;
    rp_pool_stats(pool, &st);
    cr_expect_eq(next.calls, 0, "the get did not wait for the parked connection");
    cr_expect_eq(st.dials, 1, "the get dialled while the connection was on its way");
    uint64_t start = fx_now_ms();
    cr_assert(fx_run_until_count(loop, &next.calls, 1, 5000), "the get waits for ever");
    cr_expect_eq(next.status, 0, "%s", rp_strerror(next.status));
    cr_expect_geq(fx_now_ms() - start, 150, "the parked connection went before the pool timeout");
    cr_expect_eq(x.sent.calls, 1);
    cr_expect_eq(x.sent.result, -ETIMEDOUT, "the send ended with %zd", x.sent.result);
    rp_pool_stats(pool, &st);
    cr_expect_eq(st.dials, 2);
    cr_expect_eq(st.stale_conns, 1);
    rp_pool_put(pool, next.conn);
    free(x.request);
    fx_close_and_free(loop, pool);
    slow_peer_close(&p);
}
