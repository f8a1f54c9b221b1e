/* A binary min-heap of timer deadlines. Each timer knows its slot, so
 * removal (a waiter served before its deadline) is O(log n). */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

static void place(rp__timer_heap *heap, uint32_t index, rp__timer *timer)
{
    heap->slots[index] = timer;
    timer->heap_index = index;
}

static void sift_up(rp__timer_heap *heap, uint32_t index)
{
    rp__timer *timer = heap->slots[index];
    while (index > 0) {
        uint32_t parent = (index - 1) / 2;
        if (heap->slots[parent]->deadline_ns <= timer->deadline_ns)
            break;
        place(heap, index, heap->slots[parent]);
        index = parent;
    }
    place(heap, index, timer);
}

static void sift_down(rp__timer_heap *heap, uint32_t index)
{
    rp__timer *timer = heap->slots[index];
    for (;;) {
        uint32_t child = 2 * index + 1;
        if (child >= heap->len)
            break;
        if (child + 1 < heap->len && heap->slots[child + 1]->deadline_ns < heap->slots[child]->deadline_ns)
            child++;
        if (timer->deadline_ns <= heap->slots[child]->deadline_ns)
            break;
        place(heap, index, heap->slots[child]);
        index = child;
    }
    place(heap, index, timer);
}

int rp__heap_push(rp__timer_heap *heap, rp__timer *timer)
{
    if (heap->len == heap->cap) {
        uint32_t cap = heap->cap ? heap->cap * 2 : 64;
        rp__timer **slots = rp__realloc(heap->slots, cap * sizeof *slots);
        if (!slots)
            return -ENOMEM;
        heap->slots = slots;
        heap->cap = cap;
    }
    place(heap, heap->len++, timer);
    sift_up(heap, timer->heap_index);
    return 0;
}

void rp__heap_remove(rp__timer_heap *heap, rp__timer *timer)
{
    uint32_t index = timer->heap_index;
    rp__timer *last = heap->slots[--heap->len];
    timer->heap_index = UINT32_MAX;
    if (last == timer)
        return;
    place(heap, index, last);
    sift_up(heap, index);
    sift_down(heap, last->heap_index);
}
