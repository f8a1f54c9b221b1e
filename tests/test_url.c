/* rp_client_options_from_url: go-redis ParseURL's URLs, checked field by
 * field, refused when malformed, and used against the fixture's redis. */
#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

TestSuite(url, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

static char buf[512];

static rp_client_options parse_ok(const char *url)
{
    rp_client_options o;
    int rc = rp_client_options_from_url(&o, url, buf, sizeof buf);
    cr_assert_eq(rc, 0, "%s: %s", url, rp_strerror(rc));
    return o;
}

Test(url, fields)
{
    rp_client_options o = parse_ok("redis://alice:p%40ss@cache.example:6380/4?client_name=web&dial_timeout=250ms"
                                   "&read_timeout=2s&write_timeout=-1&pool_size=7&max_retries=-1&pool_fifo=true");
    cr_expect_str_eq(o.pool.addr, "cache.example:6380");
    cr_expect_str_eq(o.username, "alice");
    cr_expect_str_eq(o.password, "p@ss");
    cr_expect_eq(o.db, 4);
    cr_expect_str_eq(o.client_name, "web");
    cr_expect_eq(o.pool.dial_timeout_ms, 250);
    cr_expect_eq(o.pool.read_timeout_ms, 2000);
    cr_expect_eq(o.pool.write_timeout_ms, 0);
    cr_expect_eq(o.pool.pool_size, 7);
    cr_expect_eq(o.max_retries, -1);
    cr_expect(o.pool.pool_fifo);
    cr_expect(!o.pool.tls.enable);

    o = parse_ok("redis://");
    cr_expect_str_eq(o.pool.addr, "localhost:6379");
    cr_expect_null(o.password);
    cr_expect_eq(o.db, 0);
    cr_expect_eq(o.max_retries, 3, "defaults as rp_client_options_init");

    o = parse_ok("redis://:secret@[::1]:7000");
    cr_expect_str_eq(o.pool.addr, "[::1]:7000");
    cr_expect_null(o.username);
    cr_expect_str_eq(o.password, "secret");

    o = parse_ok("rediss://redis.example/2?skip_verify=true&conn_max_idle_time=5m");
    cr_expect(o.pool.tls.enable);
    cr_expect(o.pool.tls.insecure);
    cr_expect_str_eq(o.pool.addr, "redis.example:6379");
    cr_expect_eq(o.db, 2);
    cr_expect_eq(o.pool.conn_max_idle_time_ms, 300000);

    o = parse_ok("unix://bob:pw@/run/redis/redis.sock?db=5");
    cr_expect_str_eq(o.pool.addr, "unix:/run/redis/redis.sock");
    cr_expect_str_eq(o.username, "bob");
    cr_expect_str_eq(o.password, "pw");
    cr_expect_eq(o.db, 5);
}

Test(url, malformed_is_einval_and_leaves_opts)
{
    static const char *bad[] = {
        "http://localhost", "redis//localhost", "redis://host:port", "redis://host:123456",
        "redis://host/db", "redis://host/1?unknown=1", "redis://host?pool_size=-2", "redis://host?dial_timeout=5x",
        "redis://host?skip_verify=true", "redis://u:p%4@host", "redis://u:p%00@host", "unix://relative",
        "redis://[::1", "redis://host?=1", "redis://host?noequals", "redis://host#frag", "rediss://h?skip_verify=maybe",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rp_client_options o;
        memset(&o, 0x5a, sizeof o);
        cr_expect_eq(rp_client_options_from_url(&o, bad[i], buf, sizeof buf), -EINVAL, "%s", bad[i]);
        cr_expect_eq(((unsigned char *)&o)[0], 0x5a, "%s: opts changed", bad[i]);
    }
    rp_client_options o;
    char small[8];
    cr_expect_eq(rp_client_options_from_url(&o, "redis://localhost:6379", small, sizeof small), -ENOSPC);
    cr_expect_eq(rp_client_options_from_url(NULL, "redis://", buf, sizeof buf), -EINVAL);
}

/* strlen(url) + 16 bytes always suffice, as the header promises. */
Test(url, documented_buffer_size_suffices)
{
    static const char *urls[] = {"redis://", "redis://:@", "redis://a=b@?a=b&c=d&e=f&g=h&i=j",
                                 "unix:///s?db=1&client_name=x", "rediss://u:p@h/1?pool_size=1&db=2"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        char exact[128];
        rp_client_options o;
        int rc = rp_client_options_from_url(&o, urls[i], exact, strlen(urls[i]) + 16);
        cr_expect(rc == 0 || rc == -EINVAL, "%s: %s", urls[i], rp_strerror(rc));
        cr_expect_neq(rc, -ENOSPC, "%s", urls[i]);
    }
}

Test(url, a_parsed_url_connects_with_db_and_name)
{
    char url[128];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/3?client_name=from-url&dial_timeout=1s", fx_redis_port);
    rp_client_options o = parse_ok(url);
    rp_loop *loop;
    rp_client *client;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &o), 0);
    fx_result r = {0};
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, 2, (const char *const[]){"CLIENT", "INFO"}, NULL), 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, 5000));
    cr_expect_eq(r.status, 0);
    cr_expect(strstr(r.str, "name=from-url"), "%s", r.str);
    cr_expect(strstr(r.str, "db=3"), "%s", r.str);
    fx_client_close_and_free(loop, client);
}
