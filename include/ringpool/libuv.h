/* ringpool/libuv.h: runs a ringpool loop inside a libuv loop. Header-only,
 * as hiredis's adapters: include it where libuv is linked.
 *
 *     rp_libuv_attach(loop, uv_default_loop());
 *     ... rp_client_new(&client, loop, &opts); uv_run(uv, UV_RUN_DEFAULT) ...
 *     rp_libuv_detach(loop);   then uv_run once more to finish its closes
 *
 * A uv_poll_t watches rp_loop_fd (completions, posts, stop); a uv_timer_t
 * follows rp_loop_timeout for ringpool's timers; work that is ready now
 * (callbacks made ready by a call from one of your libuv callbacks) starts
 * a uv_idle_t through the loop's wake hook, so libuv polls without
 * sleeping and runs it next iteration: no syscall of ringpool's own, and
 * no busy spin when idle. The poll handle holds uv_run only while ringpool
 * has work pending (rp_loop_run returns 1), so uv_run(UV_RUN_DEFAULT)
 * returns once both loops have nothing left. A change one of your libuv
 * callbacks makes (an rp_timer started or stopped, a request made or
 * cancelled) reaches the adapter through the same hook: it runs the loop
 * next iteration, then sets its hold and its timer again. Every function
 * runs on the thread that runs both loops. */
#ifndef RINGPOOL_LIBUV_H
#define RINGPOOL_LIBUV_H

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

#include "core.h"

#define RP_LIBUV__MAGIC 0x72706c75u /* tells detach the host is ours */

typedef struct rp_libuv {
    unsigned magic;
    rp_loop *loop;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_idle_t idle;
    int open_handles; /* closes to wait for after detach */
} rp_libuv;

static inline void rp_libuv__on_timer(uv_timer_t *handle);
static inline void rp_libuv__on_idle(uv_idle_t *handle);

/* After every run: sleep as long as ringpool allows, and hold uv_run only
 * while ringpool has work pending. The adapter's memory outlives a detach
 * made by a callback of the run: libuv frees it after the closes. */
static inline void rp_libuv__run(rp_libuv *a)
{
    int alive = rp_loop_run(a->loop, RP_RUN_NOWAIT);
    if (a->magic != RP_LIBUV__MAGIC)
        return; /* a callback detached: the handles are closing */
    if (alive > 0)
        uv_ref((uv_handle_t *)&a->poll);
    else
        uv_unref((uv_handle_t *)&a->poll);
    int timeout = rp_loop_timeout(a->loop);
    if (timeout == 0) {
        uv_idle_start(&a->idle, rp_libuv__on_idle);
        return;
    }
    uv_idle_stop(&a->idle);
    if (timeout > 0)
        uv_timer_start(&a->timer, rp_libuv__on_timer, (uint64_t)timeout, 0);
    else
        uv_timer_stop(&a->timer);
}

static inline void rp_libuv__on_poll(uv_poll_t *handle, int status, int events)
{
    (void)status;
    (void)events;
    rp_libuv__run((rp_libuv *)handle->data);
}

static inline void rp_libuv__on_timer(uv_timer_t *handle) { rp_libuv__run((rp_libuv *)handle->data); }
static inline void rp_libuv__on_idle(uv_idle_t *handle) { rp_libuv__run((rp_libuv *)handle->data); }
static inline void rp_libuv__wake(void *host) { uv_idle_start(&((rp_libuv *)host)->idle, rp_libuv__on_idle); }

static inline void rp_libuv__on_close(uv_handle_t *handle)
{
    rp_libuv *a = (rp_libuv *)handle->data;
    if (--a->open_handles == 0)
        free(a);
}

/* 0, or -EINVAL, -ENOMEM, -EBUSY (another host is attached to loop), or
 * libuv's error for the poll handle. */
static inline int rp_libuv_attach(rp_loop *loop, uv_loop_t *uv)
{
    if (!loop || !uv)
        return -EINVAL;
    int fd = rp_loop_fd(loop);
    if (fd < 0)
        return fd;
    rp_libuv *a = (rp_libuv *)calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->magic = RP_LIBUV__MAGIC;
    a->loop = loop;
    int rc = rp_loop_set_host(loop, rp_libuv__wake, a);
    if (rc == 0)
        rc = uv_poll_init(uv, &a->poll, fd);
    if (rc < 0) {
        if (rc != -EBUSY)
            rp_loop_set_host(loop, NULL, NULL);
        free(a);
        return rc;
    }
    uv_timer_init(uv, &a->timer);
    uv_idle_init(uv, &a->idle);
    a->poll.data = a->timer.data = a->idle.data = a;
    uv_unref((uv_handle_t *)&a->timer);
    uv_poll_start(&a->poll, UV_READABLE, rp_libuv__on_poll);
    uv_idle_start(&a->idle, rp_libuv__on_idle); /* the first run sets the rest */
    return 0;
}

/* Stops watching and closes the adapter's handles; their memory is freed
 * by libuv's close callbacks, so run the uv loop once more (uv_run with
 * UV_RUN_NOWAIT or DEFAULT) before uv_loop_close. Call it before
 * rp_loop_free, which is -EBUSY while the adapter is attached. -EINVAL if
 * loop has no libuv adapter. */
static inline int rp_libuv_detach(rp_loop *loop)
{
    rp_libuv *a = (rp_libuv *)rp_loop_host(loop);
    if (!a || a->magic != RP_LIBUV__MAGIC)
        return -EINVAL;
    rp_loop_set_host(loop, NULL, NULL);
    a->magic = 0;
    a->open_handles = 3;
    uv_close((uv_handle_t *)&a->poll, rp_libuv__on_close);
    uv_close((uv_handle_t *)&a->timer, rp_libuv__on_close);
    uv_close((uv_handle_t *)&a->idle, rp_libuv__on_close);
    return 0;
}

#endif /* RINGPOOL_LIBUV_H */
