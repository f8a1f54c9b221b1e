/* ringpool/libevent.h: runs a ringpool loop inside a libevent event_base.
 * Header-only, as hiredis's adapters: include it where libevent is linked.
 *
 *     rp_libevent_attach(loop, base);
 *     ... rp_client_new(&client, loop, &opts); event_base_dispatch(base) ...
 *     rp_libevent_detach(loop);
 *
 * A persistent read event watches rp_loop_fd (completions, posts, stop).
 * One timer event follows rp_loop_timeout: ringpool's next timer, or 0 ms
 * when work is ready now. What one of your libevent callbacks changes
 * (callbacks made ready, an rp_timer started or stopped) reaches it
 * through the loop's wake hook, and the run that follows sets the timer
 * event again (none when no timer is left). A 0 ms timer
 * runs in the base's next iteration, after a poll that does not sleep: no
 * syscall of ringpool's own, and other events are not starved. libevent
 * has no unreferenced events, so event_base_dispatch returns only after
 * detach (or event_base_loopexit). Every function runs on the thread that
 * runs both loops. */
#ifndef RINGPOOL_LIBEVENT_H
#define RINGPOOL_LIBEVENT_H

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>

#include "core.h"

#define RP_LIBEVENT__MAGIC 0x72706c65u /* tells detach the host is ours */

typedef struct rp_libevent {
    unsigned magic;
    rp_loop *loop;
    struct event *readable;
    struct event *timer;
} rp_libevent;

static inline void rp_libevent__schedule(rp_libevent *a, int timeout_ms)
{
    if (timeout_ms < 0) {
        event_del(a->timer);
        return;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    event_add(a->timer, &tv);
}

static inline void rp_libevent__run(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    rp_libevent *a = (rp_libevent *)arg;
    rp_loop *loop = a->loop;
    rp_loop_run(loop, RP_RUN_NOWAIT);
    if (rp_loop_host(loop) != a)
        return; /* a callback detached, and a is freed */
    rp_libevent__schedule(a, rp_loop_timeout(loop));
}

static inline void rp_libevent__wake(void *host) { rp_libevent__schedule((rp_libevent *)host, 0); }

static inline void rp_libevent__free(rp_libevent *a)
{
    if (a->readable)
        event_free(a->readable);
    if (a->timer)
        event_free(a->timer);
    free(a);
}

/* 0, or -EINVAL, -ENOMEM, or -EBUSY (another host is attached to loop). */
static inline int rp_libevent_attach(rp_loop *loop, struct event_base *base)
{
    if (!loop || !base)
        return -EINVAL;
    int fd = rp_loop_fd(loop);
    if (fd < 0)
        return fd;
    rp_libevent *a = (rp_libevent *)calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->magic = RP_LIBEVENT__MAGIC;
    a->loop = loop;
    a->readable = event_new(base, fd, EV_READ | EV_PERSIST, rp_libevent__run, a);
    a->timer = event_new(base, -1, 0, rp_libevent__run, a);
    int rc = a->readable && a->timer ? rp_loop_set_host(loop, rp_libevent__wake, a) : -ENOMEM;
    if (rc == 0 && event_add(a->readable, NULL) < 0) {
        rp_loop_set_host(loop, NULL, NULL);
        rc = -ENOMEM;
    }
    if (rc < 0) {
        rp_libevent__free(a);
        return rc;
    }
    rp_libevent__schedule(a, 0); /* the first run sets the timer */
    return 0;
}

/* Removes and frees the adapter's events at once. Call it before
 * rp_loop_free, which is -EBUSY while the adapter is attached. -EINVAL if
 * loop has no libevent adapter. */
static inline int rp_libevent_detach(rp_loop *loop)
{
    rp_libevent *a = (rp_libevent *)rp_loop_host(loop);
    if (!a || a->magic != RP_LIBEVENT__MAGIC)
        return -EINVAL;
    rp_loop_set_host(loop, NULL, NULL);
    rp_libevent__free(a);
    return 0;
}

#endif /* RINGPOOL_LIBEVENT_H */
