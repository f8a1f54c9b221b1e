/* Test fixture: a real redis-server on a loopback port of its own, fault-making
 * listeners of our own, fd-leak accounting and loop-driving helpers. */
#ifndef RP_TEST_FIXTURE_H
#define RP_TEST_FIXTURE_H

#include <criterion/criterion.h>
#include <ringpool.h>
#include <stdbool.h>
#include <sys/types.h>

extern int fx_redis_port;
extern char fx_redis_addr[64];

void fx_redis_start(void);
/* Starts redis with more arguments (NULL-terminated, after the fixture's
 * own, so they win); restarts use them too. The array must outlive it. */
void fx_redis_start_with(const char *const *extra_args);
void fx_redis_stop(void);
void fx_redis_restart(void);
/* The running redis-server's pid, 0 if none. */
pid_t fx_redis_pid(void);

/* A real memcached (/usr/bin/memcached, -U 0) on a loopback port of its own,
 * with more arguments (NULL-terminated, kept for restarts; NULL for none).
 * Restart keeps the port; stop kills it (SIGKILL) and reaps it. */
extern int fx_memcached_port;
extern char fx_memcached_addr[64];
void fx_memcached_start(const char *const *extra_args);
void fx_memcached_stop(void);
void fx_memcached_restart(void);
pid_t fx_memcached_pid(void);

/* Suite hooks: start redis (or not), record open fds; the fini checks
 * that no fd leaked. */
void fx_setup(void);
void fx_setup_no_redis(void);
void fx_teardown(void);

/* A listener on 127.0.0.1 with the given backlog; its port goes to *port. */
int fx_listener(int backlog, int *port);
int fx_listen_at(int port, int backlog);
/* Fills a backlog-0 listener so further connects never complete. */
void fx_fill_backlog(int port, int *fds, int n);
/* A port with nothing listening, held as fx_reserve_port holds one: a
 * connect to it is refused, and only this test can listen there
 * (fx_listen_at). */
int fx_closed_port(void);

/* Servers. Every server the fixtures start (redis, memcached, cluster
 * nodes, sentinels) has ports from fx_reserve_port, and is used only once
 * it answers at its port as the process the fixture forked: suites run in
 * parallel, with other checkouts' suites too, and a test must never talk
 * to another test's server.
 *
 * fx_reserve_port: a port on 127.0.0.1 (and with pair > 0, port + pair
 * too: a cluster node's bus) that this process holds until it exits.
 * - Outside the kernel's ephemeral range (ip_local_port_range), so no
 *   client socket's local port and no port-0 listener is ever one of
 *   them, and a client never connects to itself (TCP self-connect) while
 *   the server is down.
 * - Bound here without SO_REUSEADDR, which fails if anything has the port
 *   (even a socket in TIME_WAIT), then opened to SO_REUSEADDR and never
 *   listening: the server binds it all the same (redis-server, memcached
 *   and fx_listen_at set SO_REUSEADDR), connects are refused until it
 *   listens, and no other process's fixture, whose check is that same
 *   exclusive bind, takes the port, not even while a test has our server
 *   down for a restart.
 * Candidates walk from a start drawn from the pid: processes in parallel
 * seldom even try the same ones. */
int fx_reserve_port(int pair);
/* Forks and execs the server at port (ctx: the caller's); returns its pid. */
typedef pid_t fx_spawn_fn(int port, void *ctx);
/* The server at port is the process pid (it reports that pid). */
typedef bool fx_is_self_fn(int port, pid_t pid);
/* INFO server's process_id, over plain RESP: redis-server, sentinel. */
bool fx_redis_is_self(int port, pid_t pid);
/* Reserves a port (*port), spawns the server there and waits until it
 * answers as itself; if it exited at once (it could not bind: something
 * outside the fixtures listens there), again on another port, up to 10
 * times. Returns its pid; fails the test (killing the server) if it never
 * answers as itself. */
pid_t fx_server_start(int *port, int pair, fx_spawn_fn *spawn, fx_is_self_fn *is_self, void *ctx);
/* The same at the port it had: a restart. */
pid_t fx_server_restart(int port, fx_spawn_fn *spawn, fx_is_self_fn *is_self, void *ctx);

uint64_t fx_now_ms(void);
/* The threads of this process, from /proc/self/task. */
int fx_thread_count(void);
/* Runs the loop until *flag is true or timeout_ms passes; returns *flag. */
bool fx_run_until(rp_loop *loop, const bool *flag, unsigned timeout_ms);
bool fx_run_until_count(rp_loop *loop, const int *count, int want, unsigned timeout_ms);
/* Runs the loop for about ms milliseconds. */
void fx_run_for(rp_loop *loop, unsigned ms);

/* A new loop and a pool on it with these options. */
rp_pool *fx_open_pool(rp_loop **loop, const rp_pool_options *opts);
/* Pool options for the fixture's redis with small, test-friendly sizes. */
void fx_pool_options(rp_pool_options *opts, int pool_size);
/* Closes the pool, runs the loop until its callback ran, frees the loop,
 * and checks stats' total_conns against rp_pool_len on the way. */
void fx_close_and_free(rp_loop *loop, rp_pool *pool);

/* Closes the client, runs the loop until its close callback ran, and
 * frees the loop. */
void fx_client_close_and_free(rp_loop *loop, rp_client *client);

/* A client command's outcome, for tests that record callbacks. */
typedef struct fx_result {
    int calls, status, type;
    long long integer;
    char str[128];
} fx_result;
void fx_result_cb(rp_client *client, const redisReply *reply, int status, void *data);
/* What fx_result_cb records, for callbacks of other shapes. */
void fx_result_record(fx_result *r, const redisReply *reply, int status);
/* len bytes (malloc'd) that no two seeds share, no run of them repeating:
 * a piece of a big value sent twice, out of place or from freed memory
 * shows. */
char *fx_make_value(size_t len, uint64_t seed);
/* A command's outcome, and for a GET whether its reply is exactly the
 * want_len bytes at want (big values: compared, not copied). type is -1
 * without a reply. */
typedef struct fx_outcome {
    int calls, status, type;
    const char *want;
    size_t want_len;
    bool same;
} fx_outcome;
void fx_outcome_cb(rp_client *client, const redisReply *reply, int status, void *data);
/* What fx_outcome_cb records, for callbacks of other shapes. */
void fx_outcome_record(fx_outcome *o, const redisReply *reply, int status);

/* A get's outcome, for tests that record callbacks. */
typedef struct fx_got {
    int calls;
    int status;
    rp_conn *conn;
    int order; /* sequence number across all fx_got callbacks */
} fx_got;
void fx_get_cb(rp_pool *pool, rp_conn *conn, int status, void *data);
/* A get's outcome, the loop run until its callback (asserted within
 * timeout_ms). */
fx_got fx_get_outcome(rp_loop *loop, rp_pool *pool, unsigned timeout_ms);
/* Gets a connection synchronously (running the loop); asserts success. */
rp_conn *fx_get_conn(rp_loop *loop, rp_pool *pool);
/* PING through send/recv; returns true on +PONG. */
bool fx_ping(rp_loop *loop, rp_conn *conn);
/* Replaces the library's allocator with one that scans every block it
 * frees (or moves, on realloc) for secret first; returns the count of
 * such blocks so far through fx_secret_frees_end, which puts the C
 * library's allocator back. */
void fx_secret_frees_begin(const char *secret);
int fx_secret_frees_end(void);
/* One whole command from buf, as a client sends it (an array of bulk
 * strings), for the tests' own fake servers: the bytes it took, 0 if it
 * is not all here yet, -1 if it is not one that fits max_args arguments
 * of at most arg_cap - 1 bytes. Argument i is copied, NUL-terminated, to
 * argv + i * arg_cap (a char[max_args][arg_cap] array's first row). */
long fx_resp_command(const char *buf, size_t len, int max_args, size_t arg_cap, int *argc, char *argv);
/* Sends a raw command to the fixture's redis on a separate blocking socket. */
void fx_redis_command(const char *cmd);
/* The same in two halves: send now (returns the socket), wait for the
 * reply and close later. */
int fx_redis_send(const char *cmd);
void fx_redis_wait_reply(int fd);

#endif
