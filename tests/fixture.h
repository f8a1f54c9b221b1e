/* Test fixture: a real redis-server on a free loopback port, fault-making
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

/* A real memcached (/usr/bin/memcached, -U 0) on a free loopback port,
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
/* A free port with nothing listening. */
int fx_closed_port(void);

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
