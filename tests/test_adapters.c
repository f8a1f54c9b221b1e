/* The libuv and libevent adapters in real host loops: attach, commands to
 * a real redis-server, timers, no syscall of ringpool's per chained get,
 * detach leaving nothing registered, and close. Each test runs once per
 * host through the same steps. */
#include "fixture.h"

#include <errno.h>

#include "../examples/hosts.h"

/* libuv opens a process-wide pipe pair on its first loop and never closes
 * it: open it before the fixture counts fds. */
static void setup(void)
{
    uv_loop_t first;
    uv_loop_init(&first);
    uv_loop_close(&first);
    fx_setup();
}

TestSuite(adapters, .init = setup, .fini = fx_teardown);

/* One host loop, behind the steps every test takes. */
typedef struct host {
    const char *name;
    void (*open)(struct host *h);
    int (*attach)(struct host *h, rp_loop *loop);
    int (*detach)(rp_loop *loop);
    /* Runs the host until *count reaches want or timeout_ms passes. */
    void (*run_until)(struct host *h, const int *count, int want, unsigned timeout_ms);
    /* Frees the host loop; false if anything was still registered on it. */
    bool (*close)(struct host *h);
    uv_loop_t uv;
    struct event_base *base;
} host;

/* ----------------------------------------------------------------- libuv */

static void uv_open(host *h) { cr_assert_eq(uv_loop_init(&h->uv), 0); }
static int uv_attach(host *h, rp_loop *loop) { return rp_libuv_attach(loop, &h->uv); }

static void uv_end_pass(uv_timer_t *t) { uv_stop(t->loop); }

static void uv_run_until(host *h, const int *count, int want, unsigned timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(&h->uv, &tick);
    uint64_t deadline = fx_now_ms() + timeout_ms;
    while (*count < want && fx_now_ms() < deadline) {
        uv_timer_start(&tick, uv_end_pass, 10, 0); /* bounds one pass */
        uv_run(&h->uv, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&h->uv, UV_RUN_NOWAIT);
}

static bool uv_close_host(host *h)
{
    uv_run(&h->uv, UV_RUN_NOWAIT); /* the adapter's close callbacks */
    return uv_loop_close(&h->uv) == 0;
}

/* -------------------------------------------------------------- libevent */

static void ev_open(host *h)
{
    h->base = event_base_new();
    cr_assert_not_null(h->base);
}

static int ev_attach(host *h, rp_loop *loop) { return rp_libevent_attach(loop, h->base); }

static void ev_end_pass(evutil_socket_t fd, short events, void *base)
{
    (void)fd;
    (void)events;
    event_base_loopbreak(base);
}

static void ev_run_until(host *h, const int *count, int want, unsigned timeout_ms)
{
    uint64_t deadline = fx_now_ms() + timeout_ms;
    struct event *tick = evtimer_new(h->base, ev_end_pass, h->base);
    struct timeval pass = {0, 10000};
    while (*count < want && fx_now_ms() < deadline) {
        evtimer_add(tick, &pass); /* bounds one pass */
        event_base_loop(h->base, EVLOOP_ONCE);
    }
    event_free(tick);
}

static bool ev_close_host(host *h)
{
    int left = event_base_get_num_events(h->base, EVENT_BASE_COUNT_ADDED | EVENT_BASE_COUNT_ACTIVE);
    event_base_free(h->base);
    return left == 0;
}

static host hosts[] = {
    {.name = "libuv", .open = uv_open, .attach = uv_attach, .detach = rp_libuv_detach,
     .run_until = uv_run_until, .close = uv_close_host},
    {.name = "libevent", .open = ev_open, .attach = ev_attach, .detach = rp_libevent_detach,
     .run_until = ev_run_until, .close = ev_close_host},
};

/* ----------------------------------------------------------------- steps */

static rp_loop *loop;

static rp_client *attach_client(host *h)
{
    h->open(h);
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(h->attach(h, loop), 0, "%s attach", h->name);
    cr_expect_eq(h->attach(h, loop), -EBUSY, "%s: a second host", h->name);
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = fx_redis_addr;
    opts.pool.pool_size = 2;
    rp_client *client;
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    return client;
}

static void closed_cb(rp_client *client, void *data)
{
    (void)client;
    (*(int *)data)++;
}

/* Close inside the host, detach, and nothing may stay behind. */
static void close_and_detach(host *h, rp_client *client)
{
    int closed = 0;
    cr_assert_eq(rp_client_close(client, closed_cb, &closed), 0);
    h->run_until(h, &closed, 1, 5000);
    cr_assert_eq(closed, 1, "%s: the close callback never ran", h->name);
    cr_expect_eq(rp_loop_free(loop), -EBUSY, "%s: freed while attached", h->name);
    cr_assert_eq(h->detach(loop), 0);
    cr_expect_eq(h->detach(loop), -EINVAL, "%s: detached twice", h->name);
    cr_expect(h->close(h), "%s: the adapter left something registered", h->name);
    cr_expect_eq(rp_loop_free(loop), 0);
}

static void command(rp_client *client, fx_result *r, int argc, const char *const *argv)
{
    cr_assert_eq(rp_client_command(client, fx_result_cb, r, argc, argv, NULL), 0);
}

static void commands_reach_redis(host *h)
{
    rp_client *client = attach_client(h);
    fx_result set = {0}, get = {0};
    command(client, &set, 3, (const char *[]){"SET", "adapter:key", h->name});
    command(client, &get, 2, (const char *[]){"GET", "adapter:key"});
    h->run_until(h, &get.calls, 1, 5000);
    cr_expect_eq(set.calls, 1, "%s", h->name);
    cr_expect_eq(get.calls, 1, "%s", h->name);
    cr_expect_str_eq(get.str, h->name);
    close_and_detach(h, client);
}

Test(adapters, libuv_commands_reach_redis) { commands_reach_redis(&hosts[0]); }
Test(adapters, libevent_commands_reach_redis) { commands_reach_redis(&hosts[1]); }

static void count_timer(rp_timer *timer, void *data)
{
    (void)timer;
    (*(int *)data)++;
}

static void timers_fire(host *h)
{
    rp_client *client = attach_client(h);
    rp_timer *timer;
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    int fired = 0;
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_timer_start(timer, count_timer, &fired, 80, 0), 0);
    h->run_until(h, &fired, 1, 3000);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(fired, 1, "%s: the timer never fired", h->name);
    cr_expect(took >= 80 && took < 1000, "%s: an 80 ms timer fired after %lu ms", h->name, (unsigned long)took);
    rp_timer_free(timer);
    close_and_detach(h, client);
}

Test(adapters, libuv_timers_fire) { timers_fire(&hosts[0]); }
Test(adapters, libevent_timers_fire) { timers_fire(&hosts[1]); }

/* Commands chained from reply callbacks: the host wakes the loop in user
 * space, so ringpool's syscalls are the ring's own, not one per turn. */
typedef struct chain {
    rp_client *client;
    int done, left;
} chain;

static void chain_next(rp_client *client, const redisReply *reply, int status, void *data)
{
    chain *c = data;
    (void)reply;
    if (status < 0 || --c->left == 0) {
        c->done = 1;
        return;
    }
    rp_client_command(client, chain_next, c, 1, (const char *[]){"PING"}, NULL);
}

static void chained_commands_need_no_wake_syscall(host *h)
{
    rp_client *client = attach_client(h);
    chain c = {.client = client, .left = 2000};
    rp_client_command(client, chain_next, &c, 1, (const char *[]){"PING"}, NULL);
    rp_loop_stats before, after;
    rp_loop_stats_get(loop, &before);
    h->run_until(h, &c.done, 1, 10000);
    rp_loop_stats_get(loop, &after);
    cr_expect_eq(c.left, 0, "%s: %d commands left", h->name, c.left);
    double per_command = (double)(after.syscalls - before.syscalls) / 2000.0;
    double enters = (double)(after.enters - before.enters) / 2000.0;
    cr_expect_leq(per_command - enters, 0.05, "%s: %.2f syscalls beside io_uring_enter per command", h->name,
                  per_command - enters);
    close_and_detach(h, client);
}

Test(adapters, libuv_chained_commands_need_no_wake_syscall) { chained_commands_need_no_wake_syscall(&hosts[0]); }
Test(adapters, libevent_chained_commands_need_no_wake_syscall)
{
    chained_commands_need_no_wake_syscall(&hosts[1]);
}

/* uv_run(UV_RUN_DEFAULT) returns once ringpool has nothing pending. */
Test(adapters, libuv_default_run_returns_when_both_loops_are_idle)
{
    host *h = &hosts[0];
    rp_client *client = attach_client(h);
    fx_result pong = {0};
    command(client, &pong, 1, (const char *[]){"PING"});
    uint64_t start = fx_now_ms();
    uv_run(&h->uv, UV_RUN_DEFAULT);
    cr_expect_eq(pong.calls, 1);
    cr_expect_lt(fx_now_ms() - start, 3000);
    close_and_detach(h, client);
}

Test(adapters, detach_without_an_adapter_is_einval)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_expect_eq(rp_libuv_detach(loop), -EINVAL);
    cr_expect_eq(rp_libevent_detach(loop), -EINVAL);
    cr_expect_eq(rp_libuv_attach(NULL, NULL), -EINVAL);
    cr_expect_eq(rp_libevent_attach(loop, NULL), -EINVAL);
    /* One adapter's detach leaves the other's attachment alone. */
    struct event_base *base = event_base_new();
    cr_assert_eq(rp_libevent_attach(loop, base), 0);
    cr_expect_eq(rp_libuv_detach(loop), -EINVAL);
    cr_expect_eq(rp_libevent_detach(loop), 0);
    event_base_free(base);
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* The example host loops (examples/hosts.h): a raw epoll loop and a host
 * running its own io_uring (multishot poll on rp_loop_fd, no epoll). Each
 * must run commands, a timer and a pool wait to the end and return once
 * ringpool is idle. */
static void host_runs_everything(example_host run)
{
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = fx_redis_addr;
    rp_client *client;
    cr_assert_eq(rp_client_new(&client, loop, &opts), 0);
    fx_result set = {0}, get = {0};
    command(client, &set, 3, (const char *[]){"SET", "adapter:host", "ring"});
    command(client, &get, 2, (const char *[]){"GET", "adapter:host"});
    rp_timer *timer;
    cr_assert_eq(rp_timer_new(&timer, loop), 0);
    int fired = 0;
    uint64_t start = fx_now_ms();
    cr_assert_eq(rp_timer_start(timer, count_timer, &fired, 100, 0), 0);
    cr_assert_eq(run(loop), 0);
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(get.calls, 1);
    cr_expect_str_eq(get.str, "ring");
    cr_expect_eq(fired, 1);
    cr_expect(took >= 100 && took < 2000, "the host returned after %lu ms", (unsigned long)took);
    rp_timer_free(timer);
    int closed = 0;
    cr_assert_eq(rp_client_close(client, closed_cb, &closed), 0);
    cr_assert_eq(run(loop), 0);
    cr_expect_eq(closed, 1);
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(adapters, an_io_uring_host_runs_commands_and_timers) { host_runs_everything(example_host_uring); }
Test(adapters, an_epoll_host_runs_commands_and_timers) { host_runs_everything(example_host_epoll); }

/* A reply callback that detaches: the adapter must not touch what the
 * detach closed or freed once the run returns. */
static host *detaching_host;

static void detach_in_callback(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    (void)reply;
    (void)status;
    cr_expect_eq(detaching_host->detach(loop), 0);
    (*(int *)data)++;
}

static void detach_inside_a_callback(host *h)
{
    rp_client *client = attach_client(h);
    detaching_host = h;
    int replies = 0;
    cr_assert_eq(rp_client_command(client, detach_in_callback, &replies, 1, (const char *[]){"PING"}, NULL), 0);
    h->run_until(h, &replies, 1, 5000);
    cr_assert_eq(replies, 1);
    cr_expect(h->close(h), "%s: the adapter left something registered", h->name);
    fx_client_close_and_free(loop, client);
}

Test(adapters, libuv_detach_inside_a_callback) { detach_inside_a_callback(&hosts[0]); }
Test(adapters, libevent_detach_inside_a_callback) { detach_inside_a_callback(&hosts[1]); }

/* Starting or stopping a timer from one of the host's own callbacks
 * changes what the adapter keeps (its hold on the host loop, its timer):
 * the change reaches it through the wake hook. A 300 ms timer started at
 * 20 ms keeps uv_run(UV_RUN_DEFAULT) until it fired; the only timer, of
 * 3 s, stopped at 20 ms lets it return at once. */
static rp_timer *host_timer;
static int host_timer_fired;

static void count_post(void *data) { ++*(int *)data; }

static void start_from_host(uv_timer_t *t)
{
    (void)t;
    cr_assert_eq(rp_timer_start(host_timer, count_timer, &host_timer_fired, 300, 0), 0);
}

static void stop_from_host(uv_timer_t *t)
{
    (void)t;
    cr_assert_eq(rp_timer_stop(host_timer), 0);
}

static uint64_t uv_run_with_host_callback(host *h, uv_timer_cb at_20ms)
{
    uv_timer_t t;
    uv_timer_init(&h->uv, &t);
    uv_timer_start(&t, at_20ms, 20, 0);
    uint64_t start = fx_now_ms();
    uv_run(&h->uv, UV_RUN_DEFAULT);
    uint64_t took = fx_now_ms() - start;
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&h->uv, UV_RUN_NOWAIT);
    return took;
}

Test(adapters, libuv_follows_timers_started_and_stopped_from_uv_callbacks)
{
    host *h = &hosts[0];
    h->open(h);
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(h->attach(h, loop), 0);
    cr_assert_eq(rp_timer_new(&host_timer, loop), 0);
    uv_run(&h->uv, UV_RUN_NOWAIT); /* the adapter's first run */

    uint64_t took = uv_run_with_host_callback(h, start_from_host);
    cr_expect_eq(host_timer_fired, 1, "uv_run returned after %lu ms, the timer unfired", (unsigned long)took);
    cr_expect(took >= 300 && took < 1500, "uv_run returned after %lu ms", (unsigned long)took);
    cr_expect_eq(rp_loop_alive(loop), 0);

    cr_assert_eq(rp_timer_start(host_timer, count_timer, &host_timer_fired, 3000, 0), 0);
    took = uv_run_with_host_callback(h, stop_from_host);
    cr_expect(took < 1000, "uv_run returned %lu ms after the only timer, stopped at 20 ms", (unsigned long)took);
    cr_expect_eq(host_timer_fired, 1);

    /* A kernel timeout left at 100 ms by a stopped timer, and an adapter
     * that ran since (a post): a later timer started from a uv callback
     * must still hold uv_run. */
    cr_assert_eq(rp_timer_start(host_timer, count_timer, &host_timer_fired, 100, 0), 0);
    uv_run(&h->uv, UV_RUN_NOWAIT);
    cr_assert_eq(rp_timer_stop(host_timer), 0);
    int posted = 0;
    cr_assert_eq(rp_loop_post(loop, count_post, &posted), 0);
    for (uint64_t until = fx_now_ms() + 50; !posted && fx_now_ms() < until;)
        uv_run(&h->uv, UV_RUN_NOWAIT);
    cr_assert_eq(posted, 1);
    took = uv_run_with_host_callback(h, start_from_host);
    cr_expect_eq(host_timer_fired, 2, "uv_run returned after %lu ms, the timer unfired", (unsigned long)took);
    cr_expect(took >= 300 && took < 1500, "uv_run returned after %lu ms", (unsigned long)took);

    rp_timer_free(host_timer);
    cr_assert_eq(h->detach(loop), 0);
    cr_expect(h->close(h));
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* libevent has no unreferenced events: what it keeps is its timer event,
 * which must follow the next deadline. A stopped timer leaves none. */
static void stop_from_event(evutil_socket_t fd, short events, void *data)
{
    (void)fd;
    (void)events;
    (void)data;
    cr_assert_eq(rp_timer_stop(host_timer), 0);
}

static int added_events(struct event_base *base) { return event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED); }

Test(adapters, libevent_follows_a_timer_stopped_from_a_libevent_callback)
{
    host *h = &hosts[1];
    h->open(h);
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(h->attach(h, loop), 0);
    event_base_loop(h->base, EVLOOP_NONBLOCK);
    int idle = added_events(h->base);
    cr_assert_eq(rp_timer_new(&host_timer, loop), 0);
    cr_assert_eq(rp_timer_start(host_timer, count_timer, &host_timer_fired, 3000, 0), 0);
    event_base_loop(h->base, EVLOOP_NONBLOCK);
    cr_expect_eq(added_events(h->base), idle + 1, "no timer event for the 3 s timer");

    struct event *stop = evtimer_new(h->base, stop_from_event, NULL);
    struct timeval at = {0, 20000};
    evtimer_add(stop, &at);
    uint64_t start = fx_now_ms();
    event_base_loop(h->base, EVLOOP_ONCE); /* the stop */
    event_base_loop(h->base, EVLOOP_NONBLOCK);
    cr_expect_lt(fx_now_ms() - start, 1000);
    cr_expect_eq(added_events(h->base), idle, "the stopped timer's event is still there");
    event_free(stop);

    rp_timer_free(host_timer);
    cr_assert_eq(h->detach(loop), 0);
    cr_expect(h->close(h));
    cr_expect_eq(rp_loop_free(loop), 0);
}
