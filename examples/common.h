/* Argument handling, clocks and pool helpers shared by the examples. The
 * client helpers exist for examples that include <ringpool.h> first; the
 * raw-pool ones need only <ringpool/core.h>, so they build without hiredis. */
#ifndef RP_EXAMPLES_COMMON_H
#define RP_EXAMPLES_COMMON_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <ringpool/core.h>

/* Parses -a ADDR, -n N, -c N, -w N, -l PORT and --help; exits on --help or
 * a bad option. */
typedef struct example_args {
    const char *addr;
    long n, c, w, l;
} example_args;

static inline void example_parse(int argc, char **argv, example_args *args, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            printf("%s", usage);
            exit(0);
        }
        if (i + 1 >= argc || strlen(flag) != 2 || !strchr("ancwl", flag[1]) || flag[0] != '-') {
            fprintf(stderr, "unknown or incomplete option: %s\n\n%s", flag, usage);
            exit(2);
        }
        const char *value = argv[++i];
        /* -l is a port (0: any free one); the others count something. */
        long least = flag[1] == 'l' ? 0 : 1, most = flag[1] == 'l' ? 65535 : LONG_MAX;
        char *end;
        long number = strtol(value, &end, 10);
        if (flag[1] != 'a' && (end == value || *end || number < least || number > most)) {
            fprintf(stderr, "%s takes a number from %ld to %ld, not %s\n\n%s", flag, least, most, value, usage);
            exit(2);
        }
        switch (flag[1]) {
        case 'a': args->addr = value; break;
        case 'n': args->n = atol(value); break;
        case 'c': args->c = atol(value); break;
        case 'w': args->w = atol(value); break;
        case 'l': args->l = atol(value); break;
        }
    }
}

/* Monotonic nanoseconds now, wall-clock and CPU (user + sys) seconds, for
 * the benchmarks. */
static inline uint64_t example_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double example_seconds(void) { return (double)example_now_ns() / 1e9; }

static inline double example_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Runs the loop until the pool holds `want` idle connections; returns 0,
 * or the first dial error. */
static inline int example_wait_idle(rp_loop *loop, rp_pool *pool, int want)
{
    rp_stats st;
    for (rp_pool_stats(pool, &st); rp_pool_idle_len(pool) < want && !st.dial_errors; rp_pool_stats(pool, &st))
        rp_loop_run(loop, RP_RUN_ONCE);
    return st.dial_errors ? st.last_dial_error : 0;
}

#ifdef RINGPOOL_REDIS_H
/* A loop and a client for addr with go-redis's defaults; exits on error. */
static inline rp_client *example_client(rp_loop **loop, const char *addr, const char *name)
{
    rp_client *client = NULL;
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = addr;
    int rc = rp_loop_new(loop, NULL);
    if (rc == 0)
        rc = rp_client_new(&client, *loop, &opts);
    if (rc < 0) {
        fprintf(stderr, "%s: %s: %s\n", name, addr, rp_strerror(rc));
        exit(1);
    }
    return client;
}

/* Closes the client, runs the loop until everything is done, frees it. */
static inline void example_finish(rp_loop *loop, rp_client *client)
{
    rp_client_close(client, NULL, NULL);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    rp_loop_free(loop);
}

static inline void example_print_reply(const char *what, const redisReply *reply, int status)
{
    if (status < 0)
        printf("%s: failed: %s\n", what, rp_strerror(status));
    else if (reply->type == REDIS_REPLY_INTEGER)
        printf("%s: %lld\n", what, reply->integer);
    else if (reply->type == REDIS_REPLY_NIL)
        printf("%s: (nil)\n", what);
    else if (reply->str)
        printf("%s: %s%.*s\n", what, reply->type == REDIS_REPLY_ERROR ? "(error) " : "", (int)reply->len,
               reply->str);
    else
        printf("%s: (array of %zu)\n", what, reply->elements);
}
#endif

#endif
