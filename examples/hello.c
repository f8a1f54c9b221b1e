/* hello: SET and GET through rp_client, printing each reply. */
#include <ringpool.h>

#include "common.h"

static const char usage[] =
    "usage: hello [-a ADDR]\n"
    "  SETs greeting to \"hello, ringpool\" and GETs it back through rp_client.\n"
    "  -a ADDR  host:port, [v6]:port or unix:/path (default 127.0.0.1:6379)\n";

static int failures;

static void on_get(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    (void)data;
    example_print_reply("GET greeting", reply, status);
    failures += status < 0 || reply->type != REDIS_REPLY_STRING;
}

/* Each command takes its own connection from the pool, so the GET is
 * issued once the SET is done. */
static void on_set(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)data;
    example_print_reply("SET greeting", reply, status);
    if (status < 0 || reply->type == REDIS_REPLY_ERROR)
        failures++;
    else
        rp_client_command(client, on_get, NULL, 2, (const char *[]){"GET", "greeting"}, NULL);
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:6379"};
    example_parse(argc, argv, &args, usage);
    rp_loop *loop;
    rp_client *client = example_client(&loop, args.addr, "hello");
    rp_client_command(client, on_set, NULL, 3, (const char *[]){"SET", "greeting", "hello, ringpool"}, NULL);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    example_finish(loop, client);
    return failures ? 1 : 0;
}
