/* What the library reads from a command's own arguments: whether it blocks
 * and for how long (its read deadline), against a server that never
 * answers. A command taken for blocking for ever would wait for ever; one
 * that is not must end with the read timeout. */
#include "fixture.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

TestSuite(commands, .init = fx_setup_no_redis, .fini = fx_teardown, .timeout = 60);

#define READ_TIMEOUT_MS 300

static rp_loop *loop;
static rp_client *client;
static int listener;

/* A client of one connection to a listener that never accepts: the
 * handshake completes in its backlog, and nothing is ever answered. No
 * retries, so no COMMAND at set-up either. */
static void silent_open(void)
{
    int port;
    listener = fx_listener(64, &port);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = addr;
    opts.pool.pool_size = 1;
    opts.pool.read_timeout_ms = READ_TIMEOUT_MS;
    opts.max_retries = 0;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
}

static void silent_close(void)
{
    fx_client_close_and_free(loop, client);
    close(listener);
}

/* Sends argv (lengths from argvlen, or strlen) and waits up to wait_ms for
 * its end; returns how long it took, asserting exactly one callback with
 * -ETIMEDOUT. */
static uint64_t times_out(unsigned wait_ms, int argc, const char **argv, const size_t *argvlen)
{
    fx_result r = {0};
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_client_command(client, fx_result_cb, &r, argc, argv, argvlen), 0);
    cr_assert(fx_run_until_count(loop, &r.calls, 1, wait_ms), "%s %s %s: no end in %u ms (taken for blocking)",
              argv[0], argv[1], argc > 2 ? argv[2] : "", wait_ms);
    uint64_t took = fx_now_ms() - start;
    fx_run_for(loop, 20);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.status, -ETIMEDOUT, "%s", rp_strerror(r.status));
    return took;
}

#define ARGV(...) (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *)), (const char *[]){__VA_ARGS__}, NULL

/* issue 28, finding 5: BLOCK is an option only among those before STREAMS,
 * each taken with its values as the server takes them (xreadCommand). A
 * key, group, consumer, ID or COUNT value spelled "block" is none. */
Test(commands, xread_block_only_among_the_options)
{
    silent_open();
    unsigned wait = READ_TIMEOUT_MS * 6;
    times_out(wait, ARGV("XREAD", "COUNT", "1", "STREAMS", "block", "0-0"));
    times_out(wait, ARGV("XREAD", "STREAMS", "s", "block"));
    times_out(wait, ARGV("XREAD", "COUNT", "block", "STREAMS", "s", "0-0"));
    times_out(wait, ARGV("XREADGROUP", "GROUP", "block", "c", "STREAMS", "s", ">"));
    times_out(wait, ARGV("xreadgroup", "group", "g", "BLOCK", "count", "1", "streams", "s", ">"));
    times_out(wait, ARGV("XREADGROUP", "GROUP", "g", "c", "NOACK", "STREAMS", "block", ">"));
    /* A real BLOCK still extends the deadline by its time: the last one. */
    uint64_t took = times_out(5000, ARGV("XREAD", "BLOCK", "10", "BLOCK", "800", "STREAMS", "block", "0-0"));
    cr_expect_geq(took, 800 + READ_TIMEOUT_MS - 50, "BLOCK 800 ended after %lu ms", (unsigned long)took);
    took = times_out(5000, ARGV("XREADGROUP", "GROUP", "g", "c", "block", "800", "STREAMS", "s", ">"));
    cr_expect_geq(took, 800 + READ_TIMEOUT_MS - 50, "block 800 ended after %lu ms", (unsigned long)took);
    silent_close();
}

/* issue 21, finding 5: a name with a NUL inside is compared by its length,
 * not up to the NUL (which read past the table's word, and took
 * "BLPOP\0..." for BLPOP). Option words are the exception, as for the
 * server: it compares them with strcasecmp, so "BLOCK\0x" is BLOCK to it
 * (measured on 7.0: XREAD BLOCK\0x 500 blocks 500 ms). */
Test(commands, names_with_a_nul_are_compared_by_length)
{
    silent_open();
    unsigned wait = READ_TIMEOUT_MS * 6;
    static const char blpop[] = "BLPOP\0zzzzzzzzzzzzzzzzzzzzzzzzzzzzz", wait_name[] = "WAIT\0zzzzzzzzzzzzzzzzzzzzz",
                      xread[] = "XREAD\0zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", block[] = "BLOCK\0zzzzzzzzzzzzzzzzzzzzzzzzzzz";
    times_out(wait, 3, (const char *[]){blpop, "k", "0"}, (const size_t[]){sizeof blpop - 1, 1, 1});
    times_out(wait, 3, (const char *[]){wait_name, "1", "0"}, (const size_t[]){sizeof wait_name - 1, 1, 1});
    times_out(wait, 6, (const char *[]){xread, "BLOCK", "0", "STREAMS", "s", "0"},
              (const size_t[]){sizeof xread - 1, 5, 1, 7, 1, 1});
    times_out(wait, 3, (const char *[]){"BL", "k", "0"}, (const size_t[]){2, 1, 1});
    uint64_t took = times_out(5000, 6, (const char *[]){"XREAD", block, "800", "STREAMS", "s", "0"},
                              (const size_t[]){5, sizeof block - 1, 3, 7, 1, 1});
    cr_expect_geq(took, 800 + READ_TIMEOUT_MS - 50, "BLOCK\\0... 800 ended after %lu ms", (unsigned long)took);
    silent_close();
}
