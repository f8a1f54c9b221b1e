/* Dialling: a non-blocking socket (a TCP one with TCP_NODELAY and
 * keep-alive, unless the pool's options turn them off), and
 * IORING_OP_CONNECT linked to a timeout so the kernel bounds the connect. The outcome goes to the
 * connection's owner (events->dialed): 0, -ETIMEDOUT for the deadline, or
 * the connect's own error.
 *
 * A name may give several addresses (localhost: ::1, then 127.0.0.1). They
 * are tried in order: a connect that fails (refused, unreachable, a family
 * the host lacks) moves on to the next at once, and the dial reports the
 * last error. A connect that times out ends the dial: the next address
 * would likely wait as long, and the caller's wait would grow by a
 * dial_timeout_ms per address. Each connect gets the whole timeout. */
#include "conn.h"
#include "tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

/* go-redis's dialer: the first probe after 30 s idle, then every 5 s; 3
 * unanswered probes fail the connection. */
#define KEEPALIVE_IDLE_S 30
#define KEEPALIVE_INTERVAL_S 5
#define KEEPALIVE_PROBES 3

static void connect_submit(rp_conn *conn, const rp__addr *addr)
{
    struct io_uring_sqe *connect_sqe, *timeout_sqe;
    rp__loop_sqe_pair(conn->loop, &connect_sqe, &timeout_sqe);
    io_uring_prep_connect(connect_sqe, conn->fd, (const struct sockaddr *)&addr->sa, addr->len);
    rp__op_link_timeout(&conn->dial_op, connect_sqe, timeout_sqe, &conn->dial_ts, conn->dial_timeout_ms);
    rp__op_start(conn->loop, &conn->dial_op, true, true);
}

static int set_int(rp_conn *conn, int level, int name, int value)
{
    rp__loop_count_syscalls(conn->loop, 1);
    return setsockopt(conn->fd, level, name, &value, sizeof value) == 0 ? 0 : -errno;
}

/* TCP_NODELAY and keep-alive, before the connect: a unix socket has
 * neither. Set once per dial, never on the get/put path. */
static int tcp_options(rp_conn *conn, int family)
{
    conn->is_tcp = family == AF_INET || family == AF_INET6;
    if (!conn->is_tcp)
        return 0;
    int rc = conn->tcp_nodelay ? set_int(conn, IPPROTO_TCP, TCP_NODELAY, 1) : 0;
    if (rc == 0 && conn->tcp_keepalive) {
        rc = set_int(conn, SOL_SOCKET, SO_KEEPALIVE, 1);
        if (rc == 0)
            rc = set_int(conn, IPPROTO_TCP, TCP_KEEPIDLE, KEEPALIVE_IDLE_S);
        if (rc == 0)
            rc = set_int(conn, IPPROTO_TCP, TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S);
        if (rc == 0)
            rc = set_int(conn, IPPROTO_TCP, TCP_KEEPCNT, KEEPALIVE_PROBES);
    }
    return rc;
}

/* Connects to the next address that gets a socket; called while one is left. */
static int connect_next(rp_conn *conn)
{
    const rp__addrs *addrs = conn->dial_addrs;
    int rc = 0;
    while (conn->dial_next < addrs->len) {
        const rp__addr *addr = &addrs->addr[conn->dial_next++];
        conn->fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        rp__loop_count_syscalls(conn->loop, 1);
        if (conn->fd < 0) {
            rc = -errno;
            continue;
        }
        rc = tcp_options(conn, addr->sa.ss_family);
        if (rc == 0) {
            connect_submit(conn, addr);
            return 0;
        }
        close(conn->fd);
        rp__loop_count_syscalls(conn->loop, 1);
        conn->fd = -1;
    }
    return rc;
}

static bool may_try_next(const rp_conn *conn, int status)
{
    return status < 0 && status != -ETIMEDOUT && conn->state != RP__CONN_CLOSED &&
           conn->dial_next < conn->dial_addrs->len;
}

static void dial_done(rp__op *op)
{
    rp_conn *conn = RP__CONTAINER_OF(op, rp_conn, dial_op);
    int status = rp__op_result(op);
    if (may_try_next(conn, status)) {
        close(conn->fd);
        rp__loop_count_syscalls(conn->loop, 1);
        status = connect_next(conn);
        if (status == 0)
            return;
    }
    rp__addrs_unref(conn->dial_addrs);
    conn->dial_addrs = NULL;
    if (status == 0 && conn->tls && conn->state != RP__CONN_CLOSED)
        rp__tls_handshake(conn); /* it reports the dial's end */
    else
        conn->events->dialed(conn, status);
}

int rp__conn_dial(rp_conn *conn, rp__addrs *addrs, uint32_t timeout_ms)
{
    conn->state = RP__CONN_DIALING;
    conn->dial_op.done = dial_done;
    conn->dial_addrs = addrs;
    conn->dial_next = 0;
    conn->dial_timeout_ms = timeout_ms;
    /* TLS: the handshake's deadline counts from the connect's start. */
    int rc = conn->tls_ctx ? rp__tls_conn_new(conn, timeout_ms) : 0;
    if (rc == 0)
        rc = connect_next(conn);
    if (rc < 0) {
        rp__tls_conn_free(conn);
        conn->dial_addrs = NULL;
        return rc;
    }
    rp__addrs_ref(addrs);
    return 0;
}
