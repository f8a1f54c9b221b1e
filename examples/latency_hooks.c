/* latency_hooks: per-command latency percentiles, gathered by the client's
 * hooks rather than by the code that issues the commands. */
#include <ringpool.h>

#include "common.h"

static const char usage[] =
    "usage: latency_hooks [-a ADDR] [-n COMMANDS] [-c IN_FLIGHT]\n"
    "  Runs GETs and SETs through rp_client and prints, per command name, the\n"
    "  latency percentiles its command_end hook saw.\n"
    "  -a ADDR       host:port, [v6]:port or unix:/path (default 127.0.0.1:6379)\n"
    "  -n COMMANDS   commands in all (default 20000)\n"
    "  -c IN_FLIGHT  commands in flight at once (default 50)\n";

#define NAMES 2
static const char *const names[NAMES] = {"GET", "SET"};

typedef struct latencies {
    uint64_t *ns[NAMES];
    long count[NAMES], failed;
} latencies;

static void on_command_end(void *data, int argc, const char *const *argv, const size_t *argvlen,
                           uint64_t duration_ns, int status, int retries)
{
    (void)argc;
    (void)retries;
    latencies *lat = data;
    if (status < 0)
        lat->failed++;
    for (int i = 0; i < NAMES; i++)
        if (argvlen[0] == strlen(names[i]) && !strncmp(argv[0], names[i], argvlen[0]))
            lat->ns[i][lat->count[i]++] = duration_ns;
}

typedef struct workload {
    rp_client *client;
    long issued, total;
} workload;

static void issue(workload *w);

static void on_reply(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    (void)reply;
    (void)status;
    issue(data);
}

static void issue(workload *w)
{
    if (w->issued == w->total)
        return;
    const char *key = "latency:key";
    if (w->issued++ % 2)
        rp_client_command(w->client, on_reply, w, 2, (const char *[]){"GET", key}, NULL);
    else
        rp_client_command(w->client, on_reply, w, 3, (const char *[]){"SET", key, "value"}, NULL);
}

static int by_value(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_us(const uint64_t *sorted, long count, double p)
{
    long index = (long)(p * (double)(count - 1));
    return (double)sorted[index] / 1e3;
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:6379", .n = 20000, .c = 50};
    example_parse(argc, argv, &args, usage);
    latencies lat = {0};
    for (int i = 0; i < NAMES; i++)
        lat.ns[i] = calloc((size_t)args.n, sizeof *lat.ns[i]);
    rp_loop *loop;
    workload w = {.client = example_client(&loop, args.addr, "latency_hooks"), .total = args.n};
    rp_hooks hooks = {.data = &lat, .command_end = on_command_end};
    rp_client_set_hooks(w.client, &hooks);
    for (long i = 0; i < args.c; i++)
        issue(&w);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    example_finish(loop, w.client);
    printf("%-4s %8s %9s %9s %9s %9s\n", "cmd", "count", "p50 us", "p90 us", "p99 us", "max us");
    for (int i = 0; i < NAMES; i++) {
        qsort(lat.ns[i], (size_t)lat.count[i], sizeof *lat.ns[i], by_value);
        if (lat.count[i])
            printf("%-4s %8ld %9.1f %9.1f %9.1f %9.1f\n", names[i], lat.count[i],
                   percentile_us(lat.ns[i], lat.count[i], 0.50), percentile_us(lat.ns[i], lat.count[i], 0.90),
                   percentile_us(lat.ns[i], lat.count[i], 0.99), percentile_us(lat.ns[i], lat.count[i], 1.0));
        free(lat.ns[i]);
    }
    printf("%ld commands, %ld failed\n", lat.count[0] + lat.count[1], lat.failed);
    return lat.failed || lat.count[0] + lat.count[1] != args.n ? 1 : 0;
}
