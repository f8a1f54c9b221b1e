/* An HDR-style latency histogram: log-linear buckets with 32 sub-buckets
 * per power of two (about 3% precision), fixed size, mergeable. */
#ifndef RP_BENCH_HISTOGRAM_H
#define RP_BENCH_HISTOGRAM_H

#include <stdint.h>
#include <string.h>

#define HIST_SUB 32
#define HIST_BUCKETS (2 * HIST_SUB + 58 * HIST_SUB)

typedef struct histogram {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total, max, min, sum;
} histogram;

static inline unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - 5; /* v >> shift in [32, 64) */
    return 2 * HIST_SUB + (shift - 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* The highest value a bucket holds, so percentiles never flatter. */
static inline uint64_t hist_value(unsigned index)
{
    if (index < 2 * HIST_SUB)
        return index;
    unsigned shift = (index - 2 * HIST_SUB) / HIST_SUB + 1;
    uint64_t sub = (index - 2 * HIST_SUB) % HIST_SUB + HIST_SUB;
    return ((sub + 1) << shift) - 1;
}

static inline void hist_record(histogram *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->total++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
    if (!h->min || v < h->min)
        h->min = v;
}

static inline void hist_merge(histogram *into, const histogram *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    into->sum += from->sum;
    if (from->max > into->max)
        into->max = from->max;
    if (from->min && (!into->min || from->min < into->min))
        into->min = from->min;
}

static inline uint64_t hist_percentile(const histogram *h, double p)
{
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->total + 0.5), seen = 0;
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank)
            return hist_value(i) < h->max ? hist_value(i) : h->max;
    }
    return h->max;
}

#endif
