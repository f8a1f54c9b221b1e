/* memcached_libmemcached: examples/memcached.c's benchmark with libmemcached
 * (text protocol, TCP_NODELAY), one thread and one memcached_st (one
 * connection) a caller, for a side-by-side run. Same options and the same
 * output line: requests/s, p50/p99 latency, CPU per request, peak RSS.
 * Built only where libmemcached is found (Debian: libmemcached-dev). */
#include <libmemcached/memcached.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char usage[] =
    "usage: memcached_libmemcached [-a HOST:PORT] [-b get|set] [-c N] [-n N] [-d BYTES] [-k KEYS]\n"
    "  examples/memcached.c's benchmark with libmemcached, one thread a caller.\n";

static const char *host = "127.0.0.1", *op = "get";
static unsigned port = 11211;
static long callers = 50, total = 100000, size = 32, keys = 10000;
static atomic_long issued, errors;
static uint32_t *latency_ns;
static atomic_long done;
static pthread_barrier_t start_line;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* As examples/memcached.c: "<key>=" then dots. */
static void make_value(char *out, size_t d, const char *key)
{
    size_t klen = strlen(key);
    memset(out, '.', d);
    memcpy(out, key, klen < d ? klen : d);
    if (klen < d)
        out[klen] = '=';
}

/* One request; true when it did what it should. */
static bool request(memcached_st *mc, bool get, long i, char *value)
{
    char key[16];
    snprintf(key, sizeof key, "k:%ld", i % keys);
    size_t klen = strlen(key), d = (size_t)size;
    memcached_return_t rc;
    if (!get) {
        make_value(value, d, key);
        return memcached_set(mc, key, klen, value, d, 0, 0) == MEMCACHED_SUCCESS;
    }
    size_t len;
    uint32_t flags;
    char *got = memcached_get(mc, key, klen, &len, &flags, &rc);
    bool ok = got && len == d && !memcmp(got, key, klen < d ? klen : d) && (klen >= d || got[klen] == '=');
    free(got);
    return ok;
}

/* Runs its share of the phase: the key set first, then the measured one. */
static void *caller_main(void *arg)
{
    (void)arg;
    memcached_st *mc = memcached_create(NULL);
    memcached_server_add(mc, host, (in_port_t)port);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    char *value = malloc((size_t)size);
    for (long i; (i = atomic_fetch_add(&issued, 1)) < keys;)
        errors += !request(mc, false, i, value);
    pthread_barrier_wait(&start_line); /* every key set */
    pthread_barrier_wait(&start_line); /* counters reset, clock started */
    bool get = !strcmp(op, "get");
    for (long i; (i = atomic_fetch_add(&issued, 1)) < total;) {
        uint64_t t0 = now_ns();
        errors += !request(mc, get, i, value);
        uint64_t ns = now_ns() - t0;
        latency_ns[atomic_fetch_add(&done, 1)] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
    }
    free(value);
    memcached_free(mc);
    return NULL;
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

static long peak_rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static void parse(int argc, char **argv)
{
    static char hostbuf[256];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("%s", usage);
            exit(0);
        }
        if (i + 1 >= argc || strlen(argv[i]) != 2) {
            fprintf(stderr, "%s", usage);
            exit(2);
        }
        const char *v = argv[++i];
        switch (argv[i - 1][1]) {
        case 'a': {
            const char *colon = strrchr(v, ':');
            if (!colon || (size_t)(colon - v) >= sizeof hostbuf)
                exit(2);
            memcpy(hostbuf, v, (size_t)(colon - v));
            host = hostbuf;
            port = (unsigned)atoi(colon + 1);
            break;
        }
        case 'b': op = v; break;
        case 'c': callers = atol(v); break;
        case 'n': total = atol(v); break;
        case 'd': size = atol(v); break;
        case 'k': keys = atol(v); break;
        default: fprintf(stderr, "%s", usage); exit(2);
        }
    }
    if (callers < 1 || total < 1 || size < 1 || keys < 1 || (strcmp(op, "get") && strcmp(op, "set"))) {
        fprintf(stderr, "%s", usage);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    latency_ns = malloc((size_t)total * sizeof *latency_ns);
    pthread_t *threads = malloc((size_t)callers * sizeof *threads);
    pthread_barrier_init(&start_line, NULL, (unsigned)callers + 1);
    for (long i = 0; i < callers; i++)
        if (pthread_create(&threads[i], NULL, caller_main, NULL)) {
            perror("pthread_create");
            return 1;
        }
    pthread_barrier_wait(&start_line);
    long set_errors = errors;
    issued = 0;
    errors = 0;
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns();
    pthread_barrier_wait(&start_line);
    for (long i = 0; i < callers; i++)
        pthread_join(threads[i], NULL);
    double secs = (double)(now_ns() - t0) / 1e9, cpu = cpu_seconds() - cpu0;
    long n = done;
    qsort(latency_ns, (size_t)n, sizeof *latency_ns, cmp_u32);
    printf("libmemcached %s: c=%ld depth=1 d=%ld: %ld requests, %ld errors, %.0f requests/s, p50 %.1f us, "
           "p99 %.1f us, cpu %.2f us/request, peak RSS %.1f MB\n",
           op, callers, size, n, errors + set_errors, (double)n / secs, latency_ns[n / 2] / 1e3,
           latency_ns[n * 99 / 100] / 1e3, cpu * 1e6 / (double)n, (double)peak_rss_kb() / 1024);
    free(threads);
    free(latency_ns);
    return errors + set_errors ? 1 : 0;
}
