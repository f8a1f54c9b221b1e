/* ringpool/core.h alone: what a raw-pool user includes, with no hiredis. */
#include <ringpool/core.h>

#ifdef REDIS_REPLY_STRING
#error "ringpool/core.h pulls in hiredis"
#endif

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Whether libssl is mapped into this process. */
static bool libssl_mapped(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    cr_assert(maps);
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, maps))
        found = strstr(line, "/libssl.so") != NULL;
    fclose(maps);
    return found;
}

Test(core_header, a_loop_and_a_pool_need_nothing_from_hiredis)
{
    rp_loop *loop;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = "127.0.0.1:1";
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    cr_expect_str_eq(rp_strerror(RP_ECLOSED), "pool or loop closed");
    cr_assert_eq(rp_pool_close(pool, NULL, NULL), 0);
    cr_assert_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* The build-time macro and the run-time answer agree; a library without
 * TLS refuses TLS options rather than dialling in plaintext. OpenSSL is
 * loaded when the first TLS pool is made, not before: a process that
 * never uses TLS never maps it. */
Test(core_header, tls_support_is_reported_at_build_and_run_time)
{
    cr_expect_eq(rp_tls_available(), RP_HAVE_TLS == 1);
    rp_loop *loop;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = "127.0.0.1:1";
    opts.tls.enable = true;
    opts.tls.insecure = true;
    rp_pool *pool = NULL;
    cr_expect(!libssl_mapped(), "OpenSSL is loaded before any TLS pool");
    int rc = rp_pool_new(&pool, loop, &opts);
#if RP_HAVE_TLS
    cr_assert_eq(rc, 0);
    cr_expect(libssl_mapped(), "a TLS pool was made without loading OpenSSL");
    cr_assert_eq(rp_pool_close(pool, NULL, NULL), 0);
    cr_assert_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
#else
    cr_expect_eq(rc, -ENOTSUP);
    cr_expect_null(pool);
#endif
    cr_expect_eq(rp_loop_free(loop), 0);
}
