/* ringpool/core.h alone: what a raw-pool user includes, with no hiredis. */
#include <ringpool/core.h>

#ifdef REDIS_REPLY_STRING
#error "ringpool/core.h pulls in hiredis"
#endif

#include <criterion/criterion.h>

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
