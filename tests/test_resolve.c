/* Host names: looked up at dial time on a thread of their own, shared and
 * kept for a second, tried address by address, abandoned by a close. */
#define _GNU_SOURCE
#include "fixture.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

TestSuite(resolve, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

#define SLOW_LOOKUP_MS 300

static atomic_int lookups;
static pthread_t lookup_thread;

static bool has_suffix(const char *text, const char *suffix)
{
    size_t len = strlen(text), suffix_len = strlen(suffix);
    return len >= suffix_len && strcmp(text + len - suffix_len, suffix) == 0;
}

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

/* The lists of each numeric host, joined: glibc's freeaddrinfo frees a
 * list node by node, so it frees the joined list as one. */
static int numeric_answer(getaddrinfo_fn real, const char *const *hosts, const char *service,
                          const struct addrinfo *hints, struct addrinfo **res)
{
    struct addrinfo numeric = *hints;
    numeric.ai_flags |= AI_NUMERICHOST;
    struct addrinfo **tail = res;
    for (*res = NULL; *hosts; hosts++) {
        int rc = real(*hosts, service, &numeric, tail);
        if (rc != 0) {
            if (*res)
                freeaddrinfo(*res);
            return rc;
        }
        while (*tail)
            tail = &(*tail)->ai_next;
    }
    return 0;
}

/* The library calls the C library's getaddrinfo; the dynamic linker finds
 * this one first. It answers for names under .test and .invalid (RFC 6761)
 * without the network: glibc here sends even .invalid to the DNS server.
 * "slow.test" takes SLOW_LOOKUP_MS, "two.test" gives ::1 then 127.0.0.1,
 * other .test names 127.0.0.1. Other names go to the real one. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    getaddrinfo_fn real;
    *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    atomic_fetch_add(&lookups, 1);
    lookup_thread = pthread_self();
    if (!node || !hints || !(has_suffix(node, ".test") || has_suffix(node, ".invalid")))
        return real(node, service, hints, res);
    if (has_suffix(node, ".invalid"))
        return EAI_NONAME;
    if (strcmp(node, "slow.test") == 0)
        usleep(SLOW_LOOKUP_MS * 1000);
    static const char *const v4[] = {"127.0.0.1", NULL}, *const v6_first[] = {"::1", "127.0.0.1", NULL};
    return numeric_answer(real, strcmp(node, "two.test") == 0 ? v6_first : v4, service, hints, res);
}

/* A finished lookup's thread exits on its own, soon. */
static bool threads_back_to(int want)
{
    for (int i = 0; i < 200 && fx_thread_count() != want; i++)
        usleep(10000);
    return fx_thread_count() == want;
}

static rp_loop *loop;
static rp_pool *pool;

static void open_pool_at(const char *host, int port, int pool_size)
{
    static char addr[300];
    snprintf(addr, sizeof addr, "%s:%d", host, port);
    rp_pool_options opts;
    fx_pool_options(&opts, pool_size);
    opts.addr = addr;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0, "rejected %s", addr);
}

static rp_stats stats(void)
{
    rp_stats st;
    rp_pool_stats(pool, &st);
    return st;
}

typedef struct dial_log {
    int ends, last_status;
} dial_log;

static void on_dial_end(void *data, const char *addr, uint64_t duration_ns, int status)
{
    dial_log *log = data;
    log->ends++;
    log->last_status = status;
}

static void watch_dials(dial_log *log)
{
    rp_hooks hooks = {.data = log, .dial_end = on_dial_end};
    cr_assert_eq(rp_pool_set_hooks(pool, &hooks), 0);
}

static void closed_cb(rp_pool *closed_pool, void *data) { *(bool *)data = true; }

Test(resolve, an_unknown_host_is_created_and_fails_its_dial_with_eaddrinfo)
{
    open_pool_at("nosuchhost.invalid", 6379, 2);
    cr_expect_null(rp_pool_resolve_error(pool));
    dial_log log = {0};
    watch_dials(&log);
    fx_got got = fx_get_outcome(loop, pool, 3000);
    cr_expect_eq(got.status, RP_EADDRINFO, "%s", rp_strerror(got.status));
    cr_expect_null(got.conn);
    cr_expect_str_eq(rp_strerror(RP_EADDRINFO), "address could not be resolved");
    const char *why = rp_pool_resolve_error(pool);
    cr_assert_not_null(why);
    cr_expect_str_eq(why, gai_strerror(EAI_NONAME));
    cr_expect_eq(stats().dial_errors, 1);
    cr_expect_eq(stats().last_dial_error, RP_EADDRINFO);
    cr_expect_eq(log.ends, 1);
    cr_expect_eq(log.last_status, RP_EADDRINFO);
    fx_close_and_free(loop, pool);
}

Test(resolve, a_name_is_looked_up_when_a_dial_needs_it_on_another_thread)
{
    int threads = fx_thread_count();
    open_pool_at("localhost", fx_redis_port, 2);
    cr_expect_eq(atomic_load(&lookups), 0, "rp_pool_new looked the name up");
    cr_expect_eq(fx_thread_count(), threads, "rp_pool_new started a thread");
    rp_conn *conn = fx_get_conn(loop, pool);
    cr_expect(fx_ping(loop, conn));
    cr_expect_eq(atomic_load(&lookups), 1);
    cr_expect(!pthread_equal(lookup_thread, pthread_self()), "getaddrinfo ran on the loop thread");
    rp_pool_put(pool, conn);
    fx_close_and_free(loop, pool);
    cr_expect(threads_back_to(threads), "the lookup's thread did not exit");
}

/* A dial of its own, whatever the idle list holds. */
static void dial_one(void)
{
    fx_got got = {0};
    cr_assert_eq(rp_pool_new_conn(pool, fx_get_cb, &got), 0);
    cr_assert(fx_run_until_count(loop, &got.calls, 1, 5000));
    cr_assert_eq(got.status, 0, "%s", rp_strerror(got.status));
    rp_pool_close_conn(pool, got.conn);
}

Test(resolve, a_burst_of_dials_shares_one_lookup_whose_answer_is_kept_a_second)
{
    enum { N = 50 };
    open_pool_at("redis.test", fx_redis_port, N);
    fx_got got[N] = {0};
    for (int i = 0; i < N; i++)
        cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got[i]), 0);
    cr_expect_eq(stats().dials_in_flight, N, "the dials waiting for the answer are dials in flight");
    for (int i = 0; i < N; i++) {
        cr_assert(fx_run_until_count(loop, &got[i].calls, 1, 5000));
        cr_assert_eq(got[i].status, 0, "%s", rp_strerror(got[i].status));
        rp_pool_put(pool, got[i].conn);
    }
    cr_expect_eq(atomic_load(&lookups), 1, "%d lookups for one burst", atomic_load(&lookups));
    dial_one();
    cr_expect_eq(atomic_load(&lookups), 1, "the answer was not kept");
    fx_run_for(loop, 1100);
    dial_one();
    cr_expect_eq(atomic_load(&lookups), 2, "an answer older than a second was used");
    fx_close_and_free(loop, pool);
}

/* A listener on 127.0.0.1 only; host must resolve to another address
 * first (one that refuses) and to 127.0.0.1 after it. */
static void expect_fall_through(const char *host)
{
    int port, listener = fx_listener(4, &port);
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    cr_assert_eq(getaddrinfo(host, service, &hints, &res), 0);
    bool v4_later = false;
    for (struct addrinfo *ai = res->ai_next; ai; ai = ai->ai_next)
        v4_later |= ai->ai_family == AF_INET &&
                    ((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
    bool first_refuses = res->ai_family != AF_INET;
    freeaddrinfo(res);
    atomic_store(&lookups, 0);
    if (!first_refuses || !v4_later) {
        close(listener);
        cr_skip("%s does not resolve to another address before 127.0.0.1 here", host);
    }
    open_pool_at(host, port, 2);
    dial_log log = {0};
    watch_dials(&log);
    rp_conn *conn = fx_get_conn(loop, pool);
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    cr_assert_eq(getpeername(rp_conn_fd(conn), (struct sockaddr *)&peer, &len), 0);
    cr_expect_eq(peer.sin_family, AF_INET);
    cr_expect_eq(ntohs(peer.sin_port), port);
    cr_expect_eq(stats().dial_errors, 0, "a refused address that had a next one counted as a failed dial");
    cr_expect_eq(log.ends, 1);
    cr_expect_eq(log.last_status, 0);
    rp_pool_remove(pool, conn, 0);
    fx_close_and_free(loop, pool);
    close(listener);
}

Test(resolve, a_refused_first_address_falls_through_to_the_next)
{
    expect_fall_through("two.test");
}

Test(resolve, localhost_falls_through_from_a_refused_first_address)
{
    expect_fall_through("localhost");
}

Test(resolve, numeric_addresses_and_paths_need_no_lookup_and_no_thread)
{
    int threads = fx_thread_count();
    const char *hosts[] = {"127.0.0.1", "[::1]"};
    for (size_t i = 0; i < 2; i++) {
        open_pool_at(hosts[i], fx_redis_port, 2);
        rp_conn *conn = fx_get_conn(loop, pool);
        cr_expect(fx_ping(loop, conn), "no PONG through %s", hosts[i]);
        rp_pool_put(pool, conn);
        fx_close_and_free(loop, pool);
    }
    rp_pool_options opts;
    fx_pool_options(&opts, 2);
    opts.addr = "unix:/nonexistent/redis.sock";
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    fx_got got = fx_get_outcome(loop, pool, 3000);
    cr_expect_eq(got.status, -ENOENT, "%s", rp_strerror(got.status));
    fx_close_and_free(loop, pool);
    cr_expect_eq(atomic_load(&lookups), 0);
    cr_expect_eq(fx_thread_count(), threads, "a thread was started");
}

Test(resolve, a_default_run_waits_for_the_lookup)
{
    open_pool_at("slow.test", fx_redis_port, 2);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    uint64_t start = fx_now_ms();
    cr_expect_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_assert_eq(got.calls, 1, "the run returned before the answer");
    cr_expect_eq(got.status, 0, "%s", rp_strerror(got.status));
    cr_expect_geq(fx_now_ms() - start, SLOW_LOOKUP_MS - 50);
    rp_pool_put(pool, got.conn);
    fx_close_and_free(loop, pool);
}

Test(resolve, a_close_abandons_the_lookup_on_its_thread)
{
    int threads = fx_thread_count();
    open_pool_at("slow.test", fx_redis_port, 2);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    cr_expect_eq(fx_thread_count(), threads + 1, "no thread for the lookup");
    bool closed = false;
    cr_assert_eq(rp_pool_close(pool, closed_cb, &closed), 0);
    uint64_t start = fx_now_ms();
    while (rp_loop_run(loop, RP_RUN_DEFAULT))
        ;
    cr_expect_lt(fx_now_ms() - start, SLOW_LOOKUP_MS / 2, "the closed pool waited for its lookup");
    cr_expect(closed);
    cr_expect_eq(got.calls, 1);
    cr_expect_eq(got.status, RP_ECLOSED, "%s", rp_strerror(got.status));
    cr_expect_eq(rp_loop_free(loop), 0);
    /* The thread frees the abandoned lookup itself, without the loop. */
    cr_expect(threads_back_to(threads), "the lookup's thread did not exit");
}

Test(resolve, an_answer_posted_before_the_close_is_freed_by_the_loop)
{
    int threads = fx_thread_count();
    open_pool_at("redis.test", fx_redis_port, 2);
    fx_got got = {0};
    cr_assert_gt(rp_pool_get(pool, fx_get_cb, &got), 0);
    /* The thread exits once it has posted its answer to the loop. */
    cr_assert(threads_back_to(threads));
    bool closed = false;
    cr_assert_eq(rp_pool_close(pool, closed_cb, &closed), 0);
    while (rp_loop_run(loop, RP_RUN_DEFAULT))
        ;
    cr_expect(closed);
    cr_expect_eq(got.calls, 1);
    cr_expect_eq(got.status, RP_ECLOSED, "%s", rp_strerror(got.status));
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(resolve, a_client_reaches_the_lookup_error_through_its_pool)
{
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = "nosuchhost.invalid:6379";
    opts.max_retries = 0;
    rp_client *client;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    fx_result result = {0};
    const char *argv[] = {"PING"};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &result, 1, argv, NULL), 0);
    cr_assert(fx_run_until_count(loop, &result.calls, 1, 3000));
    cr_expect_eq(result.status, RP_EADDRINFO, "%s", rp_strerror(result.status));
    cr_expect_not_null(rp_pool_resolve_error(rp_client_pool(client)));
    fx_client_close_and_free(loop, client);
}
