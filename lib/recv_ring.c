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
 * buffers again, up to RING_ENTRIES. Where the kernel or liburing cannot
 * register such a ring, or it is disabled (rp_loop_options.no_recv_ring,
 * RINGPOOL_RECV_RING=0), there is none and every connection reads into
 * its own buffer. */
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

struct rp__recv_ring {
    struct io_uring *uring;
    struct io_uring_buf_ring *br;
    char *bufs[RING_ENTRIES];
    uint32_t used[RING_ENTRIES]; /* bytes of it the kernel handed out so far */
    unsigned count;              /* buffers made */
    rp__recv_ring_stats stats;
};

static size_t ring_bytes(void) { return RING_ENTRIES * sizeof(struct io_uring_buf); }

static void provide(rp__recv_ring *ring, unsigned bid)
{
    ring->used[bid] = 0;
    io_uring_buf_ring_add(ring->br, ring->bufs[bid], RING_BUFFER_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(RING_ENTRIES), 0);
    io_uring_buf_ring_advance(ring->br, 1);
}

/* Makes up to n more buffers; false if none could be had. */
static bool add_buffers(rp__recv_ring *ring, unsigned n)
{
    unsigned made = 0;
    while (made < n && ring->count < RING_ENTRIES) {
        char *buf = rp__malloc(RING_BUFFER_SIZE);
        if (!buf)
            break;
        ring->bufs[ring->count] = buf;
        provide(ring, ring->count++);
        ring->stats.bytes += RING_BUFFER_SIZE;
        made++;
    }
    return made != 0;
}

rp__recv_ring *rp__recv_ring_new(struct io_uring *uring, uint16_t bgid)
{
    rp__recv_ring *ring = rp__calloc(1, sizeof *ring);
    if (!ring)
        return NULL;
    void *mem = mmap(NULL, ring_bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        rp__free(ring);
        return NULL;
    }
    ring->uring = uring;
    ring->br = mem;
    io_uring_buf_ring_init(ring->br);
    struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)mem, .ring_entries = RING_ENTRIES, .bgid = bgid};
    reg.pad = IOU_PBUF_RING_INC; /* liburing 2.3 names the flags field pad */
    if (io_uring_register_buf_ring(uring, &reg, 0) < 0 || !add_buffers(ring, RING_FIRST_BUFFERS)) {
        munmap(mem, ring_bytes());
        rp__free(ring);
        return NULL;
    }
    return ring;
}

void rp__recv_ring_free(rp__recv_ring *ring, uint16_t bgid, bool unregister)
{
    if (!ring)
        return;
    if (unregister)
        io_uring_unregister_buf_ring(ring->uring, bgid);
    for (unsigned i = 0; i < ring->count; i++)
        rp__free(ring->bufs[i]);
    munmap(ring->br, ring_bytes());
    rp__free(ring);
}

char *rp__recv_ring_take(rp__recv_ring *ring, int32_t res, uint32_t cflags)
{
    unsigned bid = cflags >> IORING_CQE_BUFFER_SHIFT;
    if (!(cflags & IORING_CQE_F_BUFFER) || res <= 0 || bid >= ring->count)
        return NULL;
    char *data = ring->bufs[bid] + ring->used[bid];
    ring->used[bid] += (uint32_t)res;
    ring->stats.bytes_in_use += (uint32_t)res;
    return data;
}

void rp__recv_ring_put(rp__recv_ring *ring, int32_t res, uint32_t cflags)
{
    unsigned bid = cflags >> IORING_CQE_BUFFER_SHIFT;
    if (!(cflags & IORING_CQE_F_BUFFER) || res <= 0 || bid >= ring->count)
        return;
    ring->stats.bytes_in_use -= (uint32_t)res;
    if (!(cflags & IORING_CQE_F_BUF_MORE))
        provide(ring, bid);
}

void rp__recv_ring_ran_dry(rp__recv_ring *ring)
{
    ring->stats.fallbacks++;
    add_buffers(ring, ring->count);
}

void rp__recv_ring_stats_get(const rp__recv_ring *ring, rp__recv_ring_stats *out)
{
    if (ring)
        *out = ring->stats;
    else
        memset(out, 0, sizeof *out);
}
