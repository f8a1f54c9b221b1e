/* A binary min-heap of timer deadlines, linked through the timers
 * themselves (as libuv's): arming a timer never allocates, so it cannot
 * fail, and removal is O(log n). A node's place is the binary form of its
 * 1-based position: after the leading 1, each bit says left (0) or right.
 * Equal deadlines are ordered by arming sequence, so timers due together
 * fire in the order they were started, as libuv's do. */
#include "internal.h"

static bool earlier(const rp__timer *a, const rp__timer *b)
{
    return a->deadline_ns != b->deadline_ns ? a->deadline_ns < b->deadline_ns : a->seq < b->seq;
}

/* The child takes its parent's place, and the parent the child's. */
static void swap_with_parent(rp__timer_heap *heap, rp__timer *parent, rp__timer *child)
{
    rp__timer *grand = parent->parent, *sibling;
    rp__timer *child_left = child->left, *child_right = child->right;
    if (parent->left == child) {
        sibling = parent->right;
        child->left = parent;
        child->right = sibling;
    } else {
        sibling = parent->left;
        child->right = parent;
        child->left = sibling;
    }
    if (sibling)
        sibling->parent = child;
    child->parent = grand;
    if (!grand)
        heap->root = child;
    else if (grand->left == parent)
        grand->left = child;
    else
        grand->right = child;
    parent->parent = child;
    parent->left = child_left;
    parent->right = child_right;
    if (child_left)
        child_left->parent = parent;
    if (child_right)
        child_right->parent = parent;
}

/* The link that holds (or will hold) the node at 1-based position n. */
static rp__timer **slot_at(rp__timer_heap *heap, uint32_t n, rp__timer **parent)
{
    rp__timer **slot = &heap->root;
    *parent = NULL;
    for (int bit = 30 - __builtin_clz(n); bit >= 0; bit--) {
        *parent = *slot;
        slot = (n >> bit) & 1 ? &(*parent)->right : &(*parent)->left;
    }
    return slot;
}

static void sift_up(rp__timer_heap *heap, rp__timer *timer)
{
    while (timer->parent && earlier(timer, timer->parent))
        swap_with_parent(heap, timer->parent, timer);
}

static void sift_down(rp__timer_heap *heap, rp__timer *timer)
{
    for (;;) {
        rp__timer *smallest = timer;
        if (timer->left && earlier(timer->left, smallest))
            smallest = timer->left;
        if (timer->right && earlier(timer->right, smallest))
            smallest = timer->right;
        if (smallest == timer)
            return;
        swap_with_parent(heap, timer, smallest);
    }
}

void rp__heap_push(rp__timer_heap *heap, rp__timer *timer)
{
    rp__timer *parent;
    rp__timer **slot = slot_at(heap, ++heap->len, &parent);
    timer->seq = heap->next_seq++;
    timer->left = timer->right = NULL;
    timer->parent = parent;
    *slot = timer;
    timer->armed = true;
    sift_up(heap, timer);
}

/* The last node fills the removed one's place, then finds its own. */
void rp__heap_remove(rp__timer_heap *heap, rp__timer *timer)
{
    rp__timer *parent;
    rp__timer **slot = slot_at(heap, heap->len--, &parent);
    rp__timer *last = *slot;
    *slot = NULL;
    timer->armed = false;
    if (last == timer)
        return;
    last->left = timer->left;
    last->right = timer->right;
    last->parent = timer->parent;
    if (last->left)
        last->left->parent = last;
    if (last->right)
        last->right->parent = last;
    if (!timer->parent)
        heap->root = last;
    else if (timer->parent->left == timer)
        timer->parent->left = last;
    else
        timer->parent->right = last;
    sift_down(heap, last);
    sift_up(heap, last);
}
