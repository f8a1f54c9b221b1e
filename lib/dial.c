/* Dialling: a non-blocking socket, and IORING_OP_CONNECT linked to a
 * timeout so the kernel bounds the connect. The outcome goes to the
 * connection's owner (events->dialed): 0, -ETIMEDOUT for the deadline, or
 * the connect's own error. */
#include "conn.h"

#include <errno.h>
#include <sys/socket.h>

static void dial_done(rp__op *op)
{
    rp_conn *conn = RP__CONTAINER_OF(op, rp_conn, dial_op);
    conn->events->dialed(conn, rp__op_result(op));
}

int rp__conn_dial(rp_conn *conn, const rp__addr *addr, uint32_t timeout_ms)
{
    conn->fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    rp__loop_count_syscalls(conn->loop, 1);
    if (conn->fd < 0)
        return -errno;
    conn->state = RP__CONN_DIALING;
    conn->dial_op.done = dial_done;
    struct io_uring_sqe *connect_sqe, *timeout_sqe;
    rp__loop_sqe_pair(conn->loop, &connect_sqe, &timeout_sqe);
    io_uring_prep_connect(connect_sqe, conn->fd, (const struct sockaddr *)&addr->sa, addr->len);
    rp__op_link_timeout(&conn->dial_op, connect_sqe, timeout_sqe, &conn->dial_ts, timeout_ms);
    rp__op_start(conn->loop, &conn->dial_op, true, true);
    return 0;
}
