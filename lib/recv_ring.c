/* A loop's provided buffer ring: receives of the Redis layer's
 * connections select their buffer when their bytes arrive
 * (IOSQE_BUFFER_SELECT), so a connection waiting for a reply, or idle,
 * holds none. The ring is registered with incremental consumption
 * (IOU_PBUF_RING_INC, Linux 6.12): a receive takes only the bytes it got
 * from the head buffer, so a thousand small replies share one buffer
 * instead of holding a thousand. A buffer goes back to the ring once the
 * kernel is done with it (a completion without IORING_CQE_F_BUF_MORE)
 * and its bytes were fed to the reader, which copies them.
 *
 * The kernel hands out consecutive pieces of a buffer in the order its
 * completions are posted, so each buffer's next piece starts where the
 * last completion's bytes ended. A completion of 0 bytes or an error takes
 * nothing (the kernel moves no head for it). When every buffer is taken a
 * receive fails with -ENOBUFS: the connection then reads into a buffer of
 * its own (conn.c, counted as a fallback), and the ring grows by as many
 * buffers again, up to RING_ENTRIES.
 *
 * The buffers are one range of address space, RING_ENTRIES buffers long
 * (MAP_NORESERVE: a page costs memory only once written), so growth
 * allocates nothing and cannot fail, and the ring can give pages back.
 * Once a second (TRIM_PERIOD_NS, a timer that does not hold the loop) it
 * looks at what the last period needed: the most buffers the kernel went
 * through in one loop iteration. If none ran dry and fewer would have
 * done, or if nothing was received at all, it unregisters, drops every
 * buffer's pages (MADV_DONTNEED: they come back zeroed when the kernel
 * next writes them), keeps what was needed (twice the peak, at least
 * RING_FIRST_BUFFERS) and registers again, each buffer whole. A receive
 * posted meanwhile selects its buffer when its bytes arrive, from the ring
 * then registered. That is safe only where no completion can hold bytes
 * of the old ring unseen: under DEFER_TASKRUN completions are posted only
 * inside the loop's own io_uring_enter, so with the CQ empty (and none
 * overflowed) none can. A loop set up for a host (COOP_TASKRUN: task work
 * may run at any return from the kernel) never shrinks its ring. An idle
 * ring's timer stops; the next receive starts it again.
 *
 * Where the kernel or liburing cannot register such a ring, or it is
 * disabled (rp_loop_options.no_recv_ring, RINGPOOL_RECV_RING=0), there is
 * none and every connection reads into its own buffer. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

#define RING_ENTRIES 256u             /* 4 KiB of ring: the most buffers */
#define RING_BUFFER_SIZE (64u * 1024) /* the largest read of a connection (redis.c) */
#define RING_FIRST_BUFFERS 2u
#define TRIM_PERIOD_NS 1000000000ull

struct rp__recv_ring {
    rp_loop *loop;
    struct io_uring *uring;
    struct io_uring_buf_ring *br;
    char *base;                  /* RING_ENTRIES buffers' address space */
    uint32_t used[RING_ENTRIES]; /* bytes of it the kernel handed out so far */
    unsigned count;              /* buffers usable, bids 0..count-1 */
    uint16_t bgid;
    bool registered;
    bool can_shrink;             /* the loop's io_uring is DEFER_TASKRUN */
    rp__timer trim;
    /* The period so far: receives that took bytes, buffers the kernel
     * finished in one loop iteration at most, and fallbacks before it. */
    uint64_t takes, fallbacks_before;
    uint64_t lap_iteration;
    unsigned laps, peak_laps;
    rp__recv_ring_stats stats;
};

static size_t ring_bytes(void) { return RING_ENTRIES * sizeof(struct io_uring_buf); }
static char *buffer(const rp__recv_ring *ring, unsigned bid) { return ring->base + (size_t)bid * RING_BUFFER_SIZE; }

static void provide(rp__recv_ring *ring, unsigned bid)
{
    ring->used[bid] = 0;
    io_uring_buf_ring_add(ring->br, buffer(ring, bid), RING_BUFFER_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(RING_ENTRIES), 0);
    io_uring_buf_ring_advance(ring->br, 1);
}

/* Makes up to n more buffers usable; false if none could be. */
static bool add_buffers(rp__recv_ring *ring, unsigned n)
{
    if (n > RING_ENTRIES - ring->count)
        n = RING_ENTRIES - ring->count;
    for (unsigned i = 0; i < n; i++)
        provide(ring, ring->count++);
    ring->stats.bytes = (uint64_t)ring->count * RING_BUFFER_SIZE;
    return n != 0;
}

static bool ring_register(rp__recv_ring *ring)
{
    io_uring_buf_ring_init(ring->br);
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)ring->br, .ring_entries = RING_ENTRIES, .bgid = ring->bgid};
    reg.pad = IOU_PBUF_RING_INC; /* liburing 2.3 names the flags field pad */
    rp__loop_count_syscalls(ring->loop, 1);
    ring->registered = io_uring_register_buf_ring(ring->uring, &reg, 0) == 0;
    for (unsigned bid = 0; ring->registered && bid < ring->count; bid++)
        provide(ring, bid);
    return ring->registered;
}

static void trim_fire(rp__timer *timer);

rp__recv_ring *rp__recv_ring_new(rp_loop *loop, struct io_uring *uring, uint16_t bgid)
{
    rp__recv_ring *ring = rp__calloc(1, sizeof *ring);
    if (!ring)
        return NULL;
    size_t space = (size_t)RING_ENTRIES * RING_BUFFER_SIZE;
    void *mem = mmap(NULL, ring_bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *base = mmap(NULL, space, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    /* No huge pages (a touched byte would hold 2 MiB), and a mapping of
     * its own (not merged with malloc's, which is MAP_NORESERVE too). */
    if (base != MAP_FAILED)
        madvise(base, space, MADV_NOHUGEPAGE);
    ring->loop = loop;
    ring->uring = uring;
    ring->br = mem;
    ring->base = base;
    ring->bgid = bgid;
    ring->can_shrink = uring->flags & IORING_SETUP_DEFER_TASKRUN;
    rp__timer_init(&ring->trim, trim_fire, false);
    if (mem == MAP_FAILED || base == MAP_FAILED || !ring_register(ring) || !add_buffers(ring, RING_FIRST_BUFFERS)) {
        if (ring->registered)
            io_uring_unregister_buf_ring(uring, bgid);
        if (mem != MAP_FAILED)
            munmap(mem, ring_bytes());
        if (base != MAP_FAILED)
            munmap(base, space);
        rp__free(ring);
        return NULL;
    }
    return ring;
}

void rp__recv_ring_free(rp__recv_ring *ring, bool unregister)
{
    if (!ring)
        return;
    if (unregister && ring->registered)
        io_uring_unregister_buf_ring(ring->uring, ring->bgid);
    rp__timer_disarm(ring->loop, &ring->trim);
    munmap(ring->base, (size_t)RING_ENTRIES * RING_BUFFER_SIZE);
    munmap(ring->br, ring_bytes());
    rp__free(ring);
}

char *rp__recv_ring_take(rp__recv_ring *ring, int32_t res, uint32_t cflags)
{
    unsigned bid = cflags >> IORING_CQE_BUFFER_SHIFT;
    if (!(cflags & IORING_CQE_F_BUFFER) || res <= 0 || bid >= ring->count)
        return NULL;
    char *data = buffer(ring, bid) + ring->used[bid];
    ring->used[bid] += (uint32_t)res;
    ring->stats.bytes_in_use += (uint32_t)res;
    ring->takes++;
    if (!rp__timer_armed(&ring->trim) && ring->can_shrink)
        rp__timer_arm(ring->loop, &ring->trim, rp__loop_now(ring->loop) + TRIM_PERIOD_NS);
    return data;
}

/* The kernel is done with a buffer: counted for the period's peak of
 * buffers gone through in one iteration (what the ring must hold). */
static void count_lap(rp__recv_ring *ring)
{
    uint64_t iteration = rp__loop_iterations(ring->loop);
    if (iteration != ring->lap_iteration) {
        ring->lap_iteration = iteration;
        ring->laps = 0;
    }
    if (++ring->laps > ring->peak_laps)
        ring->peak_laps = ring->laps;
}

void rp__recv_ring_put(rp__recv_ring *ring, int32_t res, uint32_t cflags)
{
    unsigned bid = cflags >> IORING_CQE_BUFFER_SHIFT;
    if (!(cflags & IORING_CQE_F_BUFFER) || res <= 0 || bid >= ring->count)
        return;
    ring->stats.bytes_in_use -= (uint32_t)res;
    if (!(cflags & IORING_CQE_F_BUF_MORE)) {
        count_lap(ring);
        provide(ring, bid);
    }
}

void rp__recv_ring_ran_dry(rp__recv_ring *ring)
{
    ring->stats.fallbacks++;
    if (ring->registered || ring_register(ring))
        add_buffers(ring, ring->count);
}

/* No completion can name a buffer of the ring unseen (see the top). */
static bool quiet_now(const rp__recv_ring *ring)
{
    return ring->can_shrink && ring->stats.bytes_in_use == 0 && io_uring_cq_ready(ring->uring) == 0 &&
           !(IO_URING_READ_ONCE(*ring->uring->sq.kflags) & IORING_SQ_CQ_OVERFLOW);
}

/* Registers the ring anew with want buffers, all their pages dropped. */
static bool resize(rp__recv_ring *ring, unsigned want)
{
    if (!quiet_now(ring))
        return false;
    rp__loop_count_syscalls(ring->loop, 1);
    if (ring->registered && io_uring_unregister_buf_ring(ring->uring, ring->bgid) < 0)
        return false;
    ring->registered = false;
    rp__loop_count_syscalls(ring->loop, 1);
    madvise(ring->base, (size_t)ring->count * RING_BUFFER_SIZE, MADV_DONTNEED);
    ring->count = want < ring->count ? want : ring->count;
    ring->stats.bytes = (uint64_t)ring->count * RING_BUFFER_SIZE;
    ring->stats.trims++;
    /* If the kernel refuses now, receives fall back and the next one to
     * find the ring empty registers it again (rp__recv_ring_ran_dry). */
    ring_register(ring);
    return true;
}

/* Once a period: the ring keeps what the period needed (twice its peak),
 * or only its first buffers, pages dropped, after a period with nothing
 * received. A period in which it ran dry keeps all it grew to. */
static void trim_fire(rp__timer *timer)
{
    rp__recv_ring *ring = RP__CONTAINER_OF(timer, rp__recv_ring, trim);
    bool ran_dry = ring->stats.fallbacks != ring->fallbacks_before;
    bool idle = ring->takes == 0;
    unsigned want = 2 * (ring->peak_laps + 1);
    if (idle || want < RING_FIRST_BUFFERS)
        want = RING_FIRST_BUFFERS;
    ring->fallbacks_before = ring->stats.fallbacks;
    ring->takes = 0;
    ring->peak_laps = 0;
    bool done = !ran_dry && (idle || want < ring->count) ? resize(ring, want) : !idle;
    if (!idle || !done) /* busy, or it could not now: look again later */
        rp__timer_arm(ring->loop, &ring->trim, rp__loop_now(ring->loop) + TRIM_PERIOD_NS);
}

void rp__recv_ring_stats_get(const rp__recv_ring *ring, rp__recv_ring_stats *out)
{
    if (ring)
        *out = ring->stats;
    else
        memset(out, 0, sizeof *out);
}
