/* What the Redis connection layer (redis.c) tells the client above it. */
#ifndef RP_REDIS_H
#define RP_REDIS_H

#include "internal.h"
#include "send_batch.h"

/* Inside a reply callback with an error: the command's bytes never reached
 * the kernel, so the server cannot have run it. */
bool rp__redis_failed_unsent(const rp_conn *conn);

/* The command queued on conn with this callback data is no longer wanted.
 * If its bytes have not been handed to a send it is taken out and never
 * sent, wherever it is among the unsent ones (returns 1); otherwise its
 * reply, when it comes, goes to cb with cb_data instead (returns 0).
 * -ENOENT if no such command is owed. */
int rp__redis_forget(rp_conn *conn, void *data, rp_conn_reply_cb cb, void *cb_data);

/* conn is in the middle of a big reply: the rest of a bulk string of
 * 32 KiB or more is still to come. A command queued now waits for it. */
bool rp__redis_receiving_big(const rp_conn *conn);

/* From now until conn is released, what its receive buffers hold is
 * counted in *total (a client's rp_client_buffer_bytes). */
int rp__redis_count_buffers(rp_conn *conn, size_t *total);

/* conn's subscription is the library's own (the cache's invalidations, a
 * sentinel client's watch): with no reply owed, its receive does not keep
 * rp_loop_run(RP_RUN_DEFAULT) going, as an idle connection's watch does
 * not. For a subscribed connection of the Redis layer. */
void rp__redis_in_background(rp_conn *conn);

/* rp_conn_command, but an argument of RP__BY_REF_MIN bytes or more goes
 * out from argv itself rather than from a copy: hold (which argv lives in)
 * gains a reference until the send that carries it has completed, its
 * zero-copy notification included, or until the command is dropped
 * unsent. hold NULL: every byte is copied, as rp_conn_command does. */
int rp__conn_command_held(rp_conn *conn, rp_conn_reply_cb cb, void *data, int argc, const char *const *argv,
                          const size_t *argvlen, rp__hold *hold);

#endif
