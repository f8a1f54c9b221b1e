/* sentinel: follows a Sentinel-managed master through a failover. One
 * INCR every interval through an rp_client given only the master's name
 * and the sentinels; it prints which node the pool dials (the master the
 * sentinels name, at start and after each switch), each write that fails
 * (and why the sentinels could not help, if they could not), and how long
 * writes were failing. Run it, then `redis-cli -p SENTINEL_PORT SENTINEL
 * FAILOVER mymaster` (or kill the master) and watch it move. */
#include <ringpool.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: sentinel [-a SENTINEL]... [-m NAME] [-n COUNT] [-i MS] [--tls-ca FILE]\n"
    "  INCRs sentinel-example:counter every MS milliseconds on the master the\n"
    "  sentinels name, following failovers, and prints what happens.\n"
    "  -a SENTINEL  host:port of a sentinel, repeatable (default 127.0.0.1:26379)\n"
    "  -m NAME      the master's name (default mymaster)\n"
    "  -n COUNT     stop after COUNT acknowledged writes (default 0: never)\n"
    "  -i MS        the interval (default 100)\n"
    "  --tls-ca FILE  TLS to the sentinels and the nodes, trusting FILE's CAs\n";

typedef struct state {
    rp_loop *loop;
    rp_client *client;
    rp_timer *timer;
    long want, acked, failed;
    char dialling[64];
    uint64_t failing_since_ns; /* the first failure of the current run, 0 if none */
    bool stopping;
} state;

static void on_dial(void *data, const char *addr)
{
    state *s = data;
    if (addr[0] && strcmp(s->dialling, addr)) { /* "": a dial waiting for the sentinels' first answer */
        printf("dialling %s\n", addr);
        snprintf(s->dialling, sizeof s->dialling, "%s", addr);
    }
}

static void closed(rp_client *client, void *data)
{
    (void)client;
    (void)data;
}

static void stop(state *s)
{
    if (s->stopping)
        return;
    s->stopping = true;
    rp_timer_free(s->timer);
    rp_client_close(s->client, closed, NULL);
}

static void on_incr(rp_client *client, const redisReply *reply, int status, void *data)
{
    state *s = data;
    if (status < 0 || reply->type == REDIS_REPLY_ERROR) {
        const char *why = rp_client_sentinel_error(client);
        printf("write failed: %s%s%s\n", status < 0 ? rp_strerror(status) : reply->str, why ? "; sentinels: " : "",
               why ? why : "");
        if (!s->failing_since_ns)
            s->failing_since_ns = rp_loop_now(s->loop);
        s->failed++;
        return;
    }
    if (s->failing_since_ns) {
        printf("writes succeed again after %.0f ms of failures (counter %lld, on %s)\n",
               (double)(rp_loop_now(s->loop) - s->failing_since_ns) / 1e6, reply->integer, s->dialling);
        s->failing_since_ns = 0;
    } else if (!s->acked) {
        printf("first write acknowledged (counter %lld)\n", reply->integer);
    }
    if (++s->acked == s->want) {
        printf("%ld writes acknowledged, %ld failed\n", s->acked, s->failed);
        stop(s);
    }
}

static void tick(rp_timer *timer, void *data)
{
    (void)timer;
    state *s = data;
    int rc = rp_client_command(s->client, on_incr, s, 2, (const char *[]){"INCR", "sentinel-example:counter"}, NULL);
    if (rc < 0)
        printf("INCR not sent: %s\n", rp_strerror(rc));
}

static long number(const char *text)
{
    char *end;
    long n = strtol(text, &end, 10);
    if (end == text || *end || n < 0) {
        fprintf(stderr, "not a count: %s\n\n%s", text, usage);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *sentinels[16];
    int count = 0;
    const char *name = "mymaster", *ca = NULL;
    long interval = 100;
    state s = {0};
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            printf("%s", usage);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "unknown or incomplete option: %s\n\n%s", flag, usage);
            return 2;
        }
        const char *value = argv[++i];
        if (!strcmp(flag, "-a") && count < 16)
            sentinels[count++] = value;
        else if (!strcmp(flag, "-m"))
            name = value;
        else if (!strcmp(flag, "-n"))
            s.want = number(value);
        else if (!strcmp(flag, "-i") && (interval = number(value)) > 0)
            ;
        else if (!strcmp(flag, "--tls-ca"))
            ca = value;
        else {
            fprintf(stderr, "unknown or bad option: %s %s\n\n%s", flag, value, usage);
            return 2;
        }
    }
    if (!count)
        sentinels[count++] = "127.0.0.1:26379";
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines as they happen, into a pipe too */

    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.master_name = name;
    opts.sentinel_addrs = sentinels;
    opts.sentinel_count = count;
    opts.pool.pool_size = 4;
    opts.pool.dial_timeout_ms = 1000;
    opts.pool.read_timeout_ms = 1000;
    opts.max_retries = 0; /* each failure shows; the next tick is the retry */
    opts.pool.tls.enable = ca != NULL;
    opts.pool.tls.ca_file = ca;
    int rc = rp_loop_new(&s.loop, NULL);
    if (rc == 0)
        rc = rp_client_new(&s.client, s.loop, &opts);
    if (rc == 0) {
        rp_hooks hooks = {.data = &s, .dial_start = on_dial};
        rp_client_set_hooks(s.client, &hooks);
        rc = rp_timer_new(&s.timer, s.loop);
    }
    if (rc == 0)
        rc = rp_timer_start(s.timer, tick, &s, 0, (uint64_t)interval);
    if (rc < 0) {
        fprintf(stderr, "sentinel: %s\n", rp_strerror(rc));
        return 1;
    }
    printf("following %s through %d sentinel(s)\n", name, count);
    fflush(stdout);
    rp_loop_run(s.loop, RP_RUN_DEFAULT);
    return rp_loop_free(s.loop) < 0 || s.acked != s.want;
}
