/* rp_timer: the loop's timers for programs built on it, as libuv's
 * uv_timer_t. A timer sits on the loop's heap behind its one kernel
 * timeout, so waiting costs no fd and no SQE of its own. */
#include "internal.h"

#include <errno.h>

struct rp_timer {
    rp__timer timer;
    rp_loop *loop;
    rp_timer_cb cb;
    void *data;
    uint64_t repeat_ms;
};

static uint64_t deadline_after(rp_loop *loop, uint64_t ms)
{
    uint64_t now = rp__loop_now(loop);
    return ms > (UINT64_MAX - now) / RP__NS_PER_MS ? UINT64_MAX : now + ms * RP__NS_PER_MS;
}

/* Re-armed before the callback runs, so the callback may stop, restart or
 * free its timer. */
static void timer_fired(rp__timer *base)
{
    rp_timer *timer = RP__CONTAINER_OF(base, rp_timer, timer);
    if (timer->repeat_ms)
        rp__timer_arm(timer->loop, &timer->timer, deadline_after(timer->loop, timer->repeat_ms));
    timer->cb(timer, timer->data);
}

int rp_timer_new(rp_timer **out, rp_loop *loop)
{
    if (!out || !loop)
        return -EINVAL;
    rp_timer *timer = rp__calloc(1, sizeof *timer);
    if (!timer)
        return -ENOMEM;
    rp__timer_init(&timer->timer, timer_fired, true);
    timer->loop = loop;
    rp__loop_handle_opened(loop);
    *out = timer;
    return 0;
}

int rp_timer_start(rp_timer *timer, rp_timer_cb cb, void *data, uint64_t timeout_ms, uint64_t repeat_ms)
{
    if (!timer || !cb)
        return -EINVAL;
    timer->cb = cb;
    timer->data = data;
    timer->repeat_ms = repeat_ms;
    rp__timer_arm(timer->loop, &timer->timer, deadline_after(timer->loop, timeout_ms));
    return 0;
}

int rp_timer_stop(rp_timer *timer)
{
    if (!timer)
        return -EINVAL;
    rp__timer_disarm(timer->loop, &timer->timer);
    return 0;
}

int rp_timer_again(rp_timer *timer)
{
    if (!timer || !timer->cb) /* never started: no callback to run */
        return -EINVAL;
    if (timer->repeat_ms)
        rp__timer_arm(timer->loop, &timer->timer, deadline_after(timer->loop, timer->repeat_ms));
    else
        rp__timer_disarm(timer->loop, &timer->timer);
    return 0;
}

int rp_timer_set_repeat(rp_timer *timer, uint64_t repeat_ms)
{
    if (!timer)
        return -EINVAL;
    timer->repeat_ms = repeat_ms;
    return 0;
}

bool rp_timer_active(const rp_timer *timer) { return timer && rp__timer_armed(&timer->timer); }

void rp_timer_free(rp_timer *timer)
{
    if (!timer)
        return;
    rp__timer_disarm(timer->loop, &timer->timer);
    rp__loop_handle_closed(timer->loop);
    rp__free(timer);
}
