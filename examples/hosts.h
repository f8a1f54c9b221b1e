/* Host loops that embed a ringpool loop, as servers write them: a raw
 * epoll loop, libuv and libevent through ringpool's adapters, and a host
 * that runs its own io_uring. Each runs until ringpool has nothing
 * pending (rp_loop_run returns 0). */
#ifndef RP_EXAMPLES_HOSTS_H
#define RP_EXAMPLES_HOSTS_H

#include <liburing.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <ringpool.h>
#include <ringpool/libevent.h>
#include <ringpool/libuv.h>

/* epoll: sleep only as long as rp_loop_timeout allows. */
static inline int example_host_epoll(rp_loop *loop)
{
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, rp_loop_fd(loop), &ev) < 0)
        return -1;
    do {
        int timeout = rp_loop_timeout(loop);
        if (timeout != 0)
            epoll_wait(epfd, &ev, 1, timeout);
    } while (rp_loop_run(loop, RP_RUN_NOWAIT) > 0);
    close(epfd);
    return 0;
}

/* libuv: uv_run returns once ringpool has nothing pending. */
static inline int example_host_libuv(rp_loop *loop)
{
    uv_loop_t uv;
    if (uv_loop_init(&uv) < 0 || rp_libuv_attach(loop, &uv) < 0)
        return -1;
    uv_run(&uv, UV_RUN_DEFAULT);
    rp_libuv_detach(loop);
    uv_run(&uv, UV_RUN_NOWAIT);
    return uv_loop_close(&uv) == 0 ? 0 : -1;
}

/* libevent: one base iteration at a time, until ringpool is idle. */
static inline int example_host_libevent(rp_loop *loop)
{
    struct event_base *base = event_base_new();
    if (!base || rp_libevent_attach(loop, base) < 0)
        return -1;
    while (rp_loop_alive(loop))
        event_base_loop(base, EVLOOP_ONCE);
    rp_libevent_detach(loop);
    event_base_free(base);
    return 0;
}

/* io_uring: the host's own ring watches rp_loop_fd with a multishot poll;
 * its wait is bounded by rp_loop_timeout. No epoll anywhere. */
static inline int example_host_uring(rp_loop *loop)
{
    struct io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) < 0)
        return -1;
    bool armed = false;
    do {
        if (!armed) {
            io_uring_prep_poll_multishot(io_uring_get_sqe(&ring), rp_loop_fd(loop), POLLIN);
            armed = true;
        }
        int timeout = rp_loop_timeout(loop);
        struct io_uring_cqe *cqe = NULL;
        if (timeout != 0) {
            struct __kernel_timespec ts = {timeout / 1000, (long long)(timeout % 1000) * 1000000};
            io_uring_submit_and_wait_timeout(&ring, &cqe, 1, timeout > 0 ? &ts : NULL, NULL);
        }
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            armed = armed && (cqe->flags & IORING_CQE_F_MORE);
            seen++;
        }
        io_uring_cq_advance(&ring, seen);
    } while (rp_loop_run(loop, RP_RUN_NOWAIT) > 0);
    io_uring_queue_exit(&ring);
    return 0;
}

/* The host loop named "epoll", "libuv", "libevent" or "uring"; NULL for
 * any other name. */
typedef int (*example_host)(rp_loop *loop);
static inline example_host example_host_find(const char *name)
{
    static const struct {
        const char *name;
        example_host run;
    } hosts[] = {{"epoll", example_host_epoll},
                 {"libuv", example_host_libuv},
                 {"libevent", example_host_libevent},
                 {"uring", example_host_uring}};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++)
        if (!strcmp(name, hosts[i].name))
            return hosts[i].run;
    return NULL;
}

#endif
