/* Internal interfaces between ringpool's layers. Nothing here is exported. */
#ifndef RP_INTERNAL_H
#define RP_INTERNAL_H

#include "ringpool.h"

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#define RP__NS_PER_MS 1000000ull
#define RP__MIN(a, b) ((a) < (b) ? (a) : (b))
#define RP__CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* ------------------------------------------------------------------ lists */

/* An intrusive doubly linked list: the owner of an element embeds a link
 * per list it can be in, and finds itself again with RP__CONTAINER_OF. */
typedef struct rp__link rp__link;
struct rp__link {
    rp__link *prev, *next;
};
typedef struct rp__list {
    rp__link *head, *tail;
    unsigned len;
} rp__list;

static inline void rp__list_push_front(rp__list *list, rp__link *link)
{
    link->prev = NULL;
    link->next = list->head;
    if (list->head)
        list->head->prev = link;
    else
        list->tail = link;
    list->head = link;
    list->len++;
}

static inline void rp__list_push_back(rp__list *list, rp__link *link)
{
    link->next = NULL;
    link->prev = list->tail;
    if (list->tail)
        list->tail->next = link;
    else
        list->head = link;
    list->tail = link;
    list->len++;
}

static inline void rp__list_unlink(rp__list *list, rp__link *link)
{
    if (link->prev)
        link->prev->next = link->next;
    else
        list->head = link->next;
    if (link->next)
        link->next->prev = link->prev;
    else
        list->tail = link->prev;
    list->len--;
}

/* Unlinks and returns the first (or last) link; NULL when empty. */
static inline rp__link *rp__list_pop(rp__list *list, bool from_back)
{
    rp__link *link = from_back ? list->tail : list->head;
    if (link)
        rp__list_unlink(list, link);
    return link;
}

/* ------------------------------------------------------------ operations */

/* An in-flight io_uring operation. Its address is the SQE's user_data, and
 * done() runs when its CQE arrives. An op with a deadline is bounded either
 * by a linked timeout or by a loop timer that cancels it (rp__op_expire).
 * A linked timeout posts no CQE (IOSQE_CQE_SKIP_SUCCESS): the kernel would
 * post it after the main one, often only after another trip into the
 * kernel, and waiting for it cost every request a second io_uring_enter.
 * A result of -ECANCELED (-EINTR for connect) that rp__op_cancel did not
 * ask for is the deadline. */
#define RP__OP_NOTIFIES 2u
typedef struct rp__op rp__op;
struct rp__op {
    void (*done)(rp__op *op);
    /* A zero-copy send's notification (IORING_CQE_F_NOTIF), which comes
     * after done() and leaves the op as it is; NULL for other ops. The
     * SQE of an op that may have one has RP__OP_NOTIFIES in its user_data
     * (the records are 8-aligned), so no other completion pays a look. */
    void (*notified)(rp__op *op, int32_t res);
    int32_t res;
    uint32_t cflags; /* the CQE's flags (IORING_CQE_F_SOCK_NONEMPTY after a recv) */
    bool has_deadline;
    bool timed_out;
    bool cancel_requested;
    bool pending;
    bool keeps_loop_alive;
    bool notifies;   /* its SQE's user_data has RP__OP_NOTIFIES */
};

/* Hands out n SQEs that go into the same submission (linked pairs need
 * that): submits what is queued when the ring is full, never drops. */
struct io_uring_sqe *rp__loop_sqe(rp_loop *loop);
void rp__loop_sqe_pair(rp_loop *loop, struct io_uring_sqe **first, struct io_uring_sqe **second);
/* Submits what is queued if fewer than n SQEs are free, so that the next
 * n taken go into one submission (n <= the ring's entries, at least 2). */
void rp__loop_sqe_room(rp_loop *loop, unsigned n);
/* The SQE taken just before sqe (the last one taken) while both wait in
 * the same submission, else NULL: lets an op be linked to the one before. */
struct io_uring_sqe *rp__loop_prev_sqe(rp_loop *loop, const struct io_uring_sqe *sqe);
/* Counts syscalls made outside the ring (socket, close, ...). */
void rp__loop_count_syscalls(rp_loop *loop, unsigned n);
/* Submits what is queued now. */
void rp__loop_submit(rp_loop *loop);
/* Marks op in flight; with_deadline: a linked timeout or rp__op_expire
 * may end it. */
void rp__op_start(rp_loop *loop, rp__op *op, bool with_deadline, bool keeps_loop_alive);
/* Ends an op as its CQE would have, for an op whose success posts none. */
void rp__op_complete(rp_loop *loop, rp__op *op, int32_t res, uint32_t cflags);
/* Fills `second` with a link timeout for the op in `first`. */
void rp__op_link_timeout(rp__op *op, struct io_uring_sqe *first, struct io_uring_sqe *second,
                         struct __kernel_timespec *ts, uint32_t ms);
/* Whether the op in flight keeps rp_loop_run(RP_RUN_DEFAULT) running. */
void rp__op_keep_loop_alive(rp_loop *loop, rp__op *op, bool keep);
/* Asks the kernel to cancel op; op->done still runs once it completes. */
void rp__op_cancel(rp_loop *loop, rp__op *op);
/* The op's deadline passed: cancels it so that it reports -ETIMEDOUT. */
void rp__op_expire(rp_loop *loop, rp__op *op);
/* A completed op whose error came from its own deadline. */
int rp__op_result(const rp__op *op);

/* Zero-copy sends (conn.c): whether they are used, and their counts in
 * rp_loop_stats. A refusal is counted; one because the kernel lacks
 * them turns them off for the loop. */
enum { RP__SEND_ZC_OFF, RP__SEND_ZC_ON, RP__SEND_ZC_ALWAYS };
int rp__loop_send_zc(const rp_loop *loop);
void rp__loop_send_zc_refused(rp_loop *loop, bool kernel_lacks);
/* A zero-copy send submitted, or its notification (copied: the kernel
 * says it copied the bytes after all). */
void rp__loop_send_zc_count(rp_loop *loop, bool notification, bool copied);

/* ---------------------------------------------------------------- timers */

typedef struct rp__timer rp__timer;
struct rp__timer {
    void (*fire)(rp__timer *timer);
    uint64_t deadline_ns;
    uint64_t seq; /* arming order: ties on deadline_ns fire in it */
    rp__timer *parent, *left, *right; /* the heap's links */
    bool armed;
    bool keeps_loop_alive;
};

void rp__timer_init(rp__timer *timer, void (*fire)(rp__timer *), bool keeps_loop_alive);
/* Arms (or moves) the timer; it never fails. Timers due at the same
 * moment fire in the order they were armed (as libuv's: a timer moved or
 * re-armed goes after those already waiting for that moment). */
void rp__timer_arm(rp_loop *loop, rp__timer *timer, uint64_t deadline_ns);
void rp__timer_disarm(rp_loop *loop, rp__timer *timer);
static inline bool rp__timer_armed(const rp__timer *timer) { return timer->armed; }

/* The heap itself, owned by the loop (timer.c). */
typedef struct rp__timer_heap {
    rp__timer *root;
    uint32_t len;
    uint64_t next_seq;
} rp__timer_heap;
void rp__heap_push(rp__timer_heap *heap, rp__timer *timer);
void rp__heap_remove(rp__timer_heap *heap, rp__timer *timer);
static inline rp__timer *rp__heap_min(const rp__timer_heap *heap) { return heap->root; }

/* ----------------------------------------------- deferred callbacks */

/* A ready result, delivered later in the same loop iteration. */
typedef struct rp__deferred rp__deferred;
struct rp__deferred {
    void (*run)(rp__deferred *item);
    rp__deferred *next;
    bool queued;
};
typedef struct rp__deferred_queue {
    rp__deferred *head, *tail;
    unsigned len;
} rp__deferred_queue;

void rp__defer(rp_loop *loop, rp__deferred *item, void (*run)(rp__deferred *));
/* Queues item to run right before the loop next submits, so work issued
 * in one pass (commands to one connection) goes out in one SQE. */
void rp__loop_before_submit(rp_loop *loop, rp__deferred *item, void (*run)(rp__deferred *));
/* Removes an item queued by either of the above; true if it was queued. */
bool rp__undefer(rp_loop *loop, rp__deferred *item);

uint64_t rp__loop_now(rp_loop *loop);
/* The loop's iterations so far (rp_loop_stats.iterations). */
uint64_t rp__loop_iterations(const rp_loop *loop);
/* Reads the clock into the cache: for a deadline that must count from the
 * moment its op starts, however long the callbacks before it ran. */
uint64_t rp__loop_now_fresh(rp_loop *loop);
/* Work outside the ring (a lookup on a thread) that keeps
 * rp_loop_run(RP_RUN_DEFAULT) going. */
void rp__loop_ref(rp_loop *loop);
void rp__loop_unref(rp_loop *loop);
/* Pools and user timers hold the loop: rp_loop_free waits for them. */
void rp__loop_handle_opened(rp_loop *loop);
void rp__loop_handle_closed(rp_loop *loop);
/* One uniform 32-bit random number (xorshift; not for secrets). */
uint32_t rp__loop_random(rp_loop *loop);

/* ------------------------------------------------------------ addresses */

#include <sys/socket.h>
typedef struct rp__addr {
    struct sockaddr_storage sa;
    socklen_t len;
} rp__addr;

/* The addresses a dial tries in order. The dials under way and the
 * resolver's cache share a list, which lives while any holds a reference
 * (loop thread only). */
typedef struct rp__addrs {
    unsigned refs;
    unsigned len;
    rp__addr addr[];
} rp__addrs;
/* A list of len addresses and one reference, the caller's; NULL without memory. */
rp__addrs *rp__addrs_new(unsigned len);
static inline void rp__addrs_ref(rp__addrs *addrs) { addrs->refs++; }
void rp__addrs_unref(rp__addrs *addrs);

/* A host name and port as the text gave them, for the resolver. */
typedef struct rp__hostport {
    char host[256];
    char port[6];
} rp__hostport;

enum { RP__ADDR_NAME = 1 };
/* Checks the text and looks nothing up: "host:port", "[v6]:port" or
 * "unix:/path". 0: a numeric address or a path, in *addr; RP__ADDR_NAME: a
 * host name to resolve, in *name; -EINVAL for malformed text. */
int rp__addr_parse(const char *text, rp__addr *addr, rp__hostport *name);

/* ------------------------------------------------------------- resolver */

/* Looks a host name up off the loop thread when a dial needs it, and keeps
 * the answer for a moment (resolve.c). */
typedef struct rp__resolver rp__resolver;
/* The lookup rp__resolver_addrs started has ended, on the loop thread:
 * status 0 with the answer (valid while done runs; take a reference to
 * keep it), or NULL with RP_EADDRINFO and the system's message, or
 * -ENOMEM. */
typedef void (*rp__resolved_fn)(void *data, rp__addrs *answer, int status, const char *error);

int rp__resolver_new(rp__resolver **out, rp_loop *loop, const rp__hostport *name, rp__resolved_fn done, void *data);
/* 0 with *out the addresses to dial now, or 0 with *out NULL: a lookup is
 * under way and done() reports it. < 0: no lookup could start. */
int rp__resolver_addrs(rp__resolver *res, rp__addrs **out);
/* A lookup under way is abandoned: done() never runs. */
void rp__resolver_free(rp__resolver *res);

/* Every allocation goes through rp_set_allocator's functions. */
void *rp__malloc(size_t size);
void *rp__realloc(void *ptr, size_t size);
void *rp__calloc(size_t count, size_t size);
void rp__free(void *ptr);
char *rp__strdup(const char *text);
/* One zeroed allocation: head bytes, then argc argument pointers, their
 * lengths and copies of the arguments (argvlen NULL: NUL-terminated), to
 * which *argv_out and *len_out point. Each copy is NUL-terminated too (the
 * NUL not counted). Commands keep theirs for resends. */
void *rp__calloc_with_args(size_t head, int argc, const char *const *argv, const size_t *argvlen,
                           const char ***argv_out, size_t **len_out);

/* ------------------------------------------------ provided buffer ring */

/* A loop's ring of receive buffers (recv_ring.c), shared by the receives
 * of its connections that select their buffer on arrival. */
typedef struct rp__recv_ring rp__recv_ring;
typedef struct rp__recv_ring_stats {
    uint64_t bytes;        /* the ring's buffers */
    uint64_t bytes_in_use; /* handed to receives whose bytes are not yet fed */
    uint64_t fallbacks;    /* receives that found it empty (-ENOBUFS) */
    uint64_t trims;        /* times it was registered anew, smaller or its pages dropped */
} rp__recv_ring_stats;
#define RP__RECV_RING_BGID 0
/* NULL where the kernel cannot register one, or without memory. */
rp__recv_ring *rp__recv_ring_new(rp_loop *loop, struct io_uring *uring, uint16_t bgid);
/* unregister: false when the io_uring itself is gone already. */
void rp__recv_ring_free(rp__recv_ring *ring, bool unregister);
/* The bytes a receive's completion (res, cflags) got from the ring, or
 * NULL if it got none; they stay valid until rp__recv_ring_put. */
char *rp__recv_ring_take(rp__recv_ring *ring, int32_t res, uint32_t cflags);
/* Its bytes were consumed: the buffer goes back once the kernel is done. */
void rp__recv_ring_put(rp__recv_ring *ring, int32_t res, uint32_t cflags);
/* A receive found the ring empty: counted, and the ring grows. */
void rp__recv_ring_ran_dry(rp__recv_ring *ring);
void rp__recv_ring_stats_get(const rp__recv_ring *ring, rp__recv_ring_stats *out);
/* The loop's ring, set up on first use; NULL if it has none. */
rp__recv_ring *rp__loop_recv_ring(rp_loop *loop);

/* A slot the Redis layer keeps its spare parts in (redis.c), freed with
 * the loop by free_fn (set on first use). */
void **rp__loop_spares(rp_loop *loop, void (*free_fn)(void *));

/* Reports a caller's mistake: counted by the caller, logged here. */
void rp__log_misuse(const char *what);


#endif
