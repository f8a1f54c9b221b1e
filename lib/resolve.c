/* Host names, looked up when a dial needs them, as go-redis does on every
 * dial: a DNS failover reaches the next dial, and a slow resolver never
 * stalls the loop, because getaddrinfo runs on a thread of its own and the
 * answer comes back through rp_loop_post. An answer is kept for
 * RP__RESOLVE_TTL_MS, and the lookup under way is shared by every dial that
 * asks meanwhile, so a burst of dials makes one lookup. A failure is not
 * kept: the pool's fail-fast already spaces the dials that would repeat it.
 *
 * Threads: one detached thread per lookup, gone once it has handed the
 * answer over. A program that names no host never starts one. A lookup
 * stuck in the system's resolver (seconds of DNS retries) holds up no other
 * pool's lookup, and nobody ever has to join it: closing a pool or freeing
 * the loop never waits for it. With the cache, a pool starts at most one a
 * second, a clone() that costs tens of microseconds.
 *
 * Ownership: the resolver owns its lookup until the answer reaches it; when
 * the resolver is freed first, the lookup is abandoned and whoever holds it
 * last frees it: the thread, if it had not posted the answer yet (it then
 * never touches the loop, which may be gone by then), or else the posted
 * completion, which finds it abandoned. One process-wide lock orders the
 * thread's "post unless abandoned" against the abandon; the loop thread
 * takes it only when a lookup ends or is abandoned, never on the get/put
 * path. */
#include "internal.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#define RP__RESOLVE_TTL_MS 1000u

typedef struct rp__lookup {
    rp__resolver *resolver; /* NULL once abandoned; changed under lookups_lock */
    rp_loop *loop;
    rp__hostport name;
    struct addrinfo *result;
    int status; /* getaddrinfo's */
} rp__lookup;

struct rp__resolver {
    rp_loop *loop;
    rp__hostport name;
    rp__addrs *answer; /* the last lookup's, fresh until expires_ns */
    uint64_t expires_ns;
    rp__lookup *lookup; /* under way, or NULL */
    rp__resolved_fn done;
    void *data;
};

static pthread_mutex_t lookups_lock = PTHREAD_MUTEX_INITIALIZER;

static void lookup_free(rp__lookup *job)
{
    if (job->result)
        freeaddrinfo(job->result);
    rp__free(job);
}

static rp__addrs *answer_from(const struct addrinfo *result)
{
    unsigned len = 0;
    for (const struct addrinfo *ai = result; ai; ai = ai->ai_next)
        len++;
    rp__addrs *addrs = rp__addrs_new(len);
    if (!addrs)
        return NULL;
    rp__addr *addr = addrs->addr;
    for (const struct addrinfo *ai = result; ai; ai = ai->ai_next, addr++) {
        memcpy(&addr->sa, ai->ai_addr, ai->ai_addrlen);
        addr->len = ai->ai_addrlen;
    }
    return addrs;
}

/* The answer reaches the resolver that still wants it: kept, and told. */
static void answer_deliver(rp__resolver *res, const rp__lookup *job)
{
    rp__addrs *answer = NULL;
    int status = RP_EADDRINFO;
    if (job->status == 0) {
        answer = answer_from(job->result);
        status = answer ? 0 : -ENOMEM;
    }
    if (answer) {
        if (res->answer)
            rp__addrs_unref(res->answer);
        res->answer = answer;
        rp__addrs_ref(answer); /* done() may free the resolver */
        res->expires_ns = rp__loop_now(res->loop) + RP__RESOLVE_TTL_MS * RP__NS_PER_MS;
    }
    res->done(res->data, answer, status, job->status ? gai_strerror(job->status) : NULL);
    if (answer)
        rp__addrs_unref(answer);
}

/* On the loop thread, or inside rp_loop_free for an answer posted just
 * before its resolver abandoned it. rp_loop_post may still touch the loop
 * after it queued the job (its eventfd write), and the thread posts under
 * lookups_lock: taking the lock once waits for it to be done, so the
 * loop can be freed as soon as this returns. */
static void lookup_done(void *arg)
{
    rp__lookup *job = arg;
    pthread_mutex_lock(&lookups_lock);
    pthread_mutex_unlock(&lookups_lock);
    rp__resolver *res = job->resolver;
    if (res) {
        rp__loop_unref(job->loop);
        res->lookup = NULL;
        answer_deliver(res, job);
    }
    lookup_free(job);
}

/* Posts the answer, or frees an abandoned job: true once done with it.
 * After a successful post the job is the loop's, which may free it at once. */
static bool lookup_hand_over(rp__lookup *job)
{
    pthread_mutex_lock(&lookups_lock);
    bool abandoned = !job->resolver;
    int rc = abandoned ? 0 : rp_loop_post(job->loop, lookup_done, job);
    pthread_mutex_unlock(&lookups_lock);
    if (abandoned)
        lookup_free(job);
    return rc == 0;
}

static void *lookup_thread(void *arg)
{
    rp__lookup *job = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    job->status = getaddrinfo(job->name.host, job->name.port, &hints, &job->result);
    /* A post that found no memory is tried again: the loop waits for it. */
    while (!lookup_hand_over(job))
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    return NULL;
}

/* The thread starts with every signal blocked, so the host's handlers keep
 * running on the host's own threads. */
static int thread_start(rp__lookup *job)
{
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&thread, &attr, lookup_thread, job);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    rp__loop_count_syscalls(job->loop, 3);
    return -rc;
}

static int lookup_start(rp__resolver *res)
{
    rp__lookup *job = rp__calloc(1, sizeof *job);
    if (!job)
        return -ENOMEM;
    job->resolver = res;
    job->loop = res->loop;
    job->name = res->name;
    int rc = thread_start(job);
    if (rc < 0) {
        rp__free(job);
        return rc;
    }
    rp__loop_ref(res->loop); /* rp_loop_run(RP_RUN_DEFAULT) waits for a wanted answer */
    res->lookup = job;
    return 0;
}

int rp__resolver_new(rp__resolver **out, rp_loop *loop, const rp__hostport *name, rp__resolved_fn done, void *data)
{
    rp__resolver *res = rp__calloc(1, sizeof *res);
    if (!res)
        return -ENOMEM;
    res->loop = loop;
    res->name = *name;
    res->done = done;
    res->data = data;
    *out = res;
    return 0;
}

int rp__resolver_addrs(rp__resolver *res, rp__addrs **out)
{
    if (res->answer && rp__loop_now(res->loop) < res->expires_ns) {
        *out = res->answer;
        return 0;
    }
    *out = NULL;
    return res->lookup ? 0 : lookup_start(res);
}

void rp__resolver_free(rp__resolver *res)
{
    rp__lookup *job = res->lookup;
    if (job) {
        /* Before the abandon: the thread may free the job right after it. */
        rp__loop_unref(res->loop);
        pthread_mutex_lock(&lookups_lock);
        job->resolver = NULL;
        pthread_mutex_unlock(&lookups_lock);
    }
    if (res->answer)
        rp__addrs_unref(res->answer);
    rp__free(res);
}
