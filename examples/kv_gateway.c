/* kv_gateway: a line server on libuv in front of Redis. Each line a client
 * sends becomes one rp_client command, and each gets one line back:
 *
 *     GET key          the value, or (nil)
 *     SET key value    OK                (the value is the rest of the line)
 *     INCR key         the new integer
 *     anything else    -ERR unknown command (or -ERR wrong number of arguments)
 *
 * A failure is a line too: -ERR and the reason (Redis's own error text, or
 * rp_strerror's while Redis is down). The pool dials again whenever a
 * command needs a connection, so the gateway recovers by itself when Redis
 * comes back.
 *
 * ringpool's loop runs inside libuv's through ringpool/libuv.h. */
#include <arpa/inet.h>
#include <signal.h>
#include <strings.h>
#include <uv.h>

#include <ringpool.h>
#include <ringpool/libuv.h>

#include "common.h"

static const char usage[] =
    "usage: kv_gateway [-a ADDR] [-l PORT]\n"
    "  Listens on 127.0.0.1:PORT (default 7379) for lines: GET key, SET key value\n"
    "  or INCR key. Each becomes a Redis command through rp_client and gets one\n"
    "  line back, in order: the value or (nil), OK, the integer, or -ERR reason.\n"
    "  Runs on libuv; SIGINT or SIGTERM shuts it down cleanly.\n"
    "  -a ADDR  Redis: host:port, [v6]:port or unix:/path (default 127.0.0.1:6379)\n"
    "  -l PORT  the port to listen on (0: any; the port is printed)\n";

#define LINE_MAX_BYTES 4096 /* a longer line closes the connection, as Redis's inline limit does */
#define MAX_OWED 128        /* replies owed to one peer before it waits: bounds its memory */

/* The process's one server, kept global as in libuv's examples. */
static struct {
    uv_loop_t uv;
    rp_loop *loop;
    rp_client *client; /* NULL once closed */
    uv_tcp_t listener;
    uv_signal_t sigint, sigterm;
} gw;

typedef struct command {
    const char *name;
    int argc;
    bool writes;
} command;

static const command commands[] = {{"GET", 2, false}, {"SET", 3, true}, {"INCR", 2, true}};

/* A reply owed to a peer: from its line until its text is written (or
 * dropped because the peer went away). */
typedef struct reply {
    struct reply *next;
    struct peer *peer;
    bool ready;
    uv_buf_t text; /* the answer and its newline; malloc'd */
    uv_write_t write;
} reply;

/* A client connection. Its memory has several owners: libuv, which holds
 * the handle until on_peer_closed, and every reply it is owed, since a
 * Redis reply may come back after the peer hung up. refs counts them: 1
 * for the connection, 1 per reply; whoever drops the last frees it.
 *
 * Order: replies wait in a FIFO and go out in line order, so one peer may
 * have many commands in flight (a pipelining client is not held to one
 * round trip per line, as it would be with one command at a time). The
 * pool runs commands on separate connections, though, so two in flight
 * together may run in either order: GETs may overlap one another, but a
 * SET or INCR waits for the peer's earlier commands and holds back its
 * later ones, so "SET k v" then "GET k" reads v, as with Redis itself. */
typedef struct peer {
    uv_tcp_t tcp; /* first: libuv's callbacks get &tcp */
    int refs;
    bool closing;
    int owed;        /* replies not yet written */
    int in_flight;   /* commands sent, not yet answered */
    bool writing;    /* the command in flight is a SET or INCR */
    reply *head, **tailp;
    size_t len;
    char in[LINE_MAX_BYTES]; /* lines received, not yet sent */
} peer;

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void *must_alloc(size_t size)
{
    void *p = calloc(1, size);
    if (!p) {
        fputs("kv_gateway: out of memory\n", stderr);
        abort();
    }
    return p;
}

/* ------------------------------------------------------------ lifetime */

static void peer_unref(peer *p)
{
    if (--p->refs == 0)
        free(p);
}

static reply *reply_new(peer *p)
{
    reply *r = must_alloc(sizeof *r);
    r->peer = p;
    r->write.data = r;
    p->refs++;
    p->owed++;
    *p->tailp = r;
    p->tailp = &r->next;
    return r;
}

/* Frees r. The caller drops the reference r held on its peer once it is
 * done with the peer itself. */
static void reply_free(reply *r)
{
    r->peer->owed--;
    free(r->text.base);
    free(r);
}

static void on_written(uv_write_t *req, int status);
static void peer_close(peer *p);

/* Writes the ready replies at the head of the queue: one that completed
 * early waits for those before it. Once the peer is closing they are
 * dropped instead. */
static void peer_flush(peer *p)
{
    p->refs++; /* dropping replies may drop the last other reference */
    for (reply *r; (r = p->head) && r->ready;) {
        if (!(p->head = r->next))
            p->tailp = &p->head;
        if (p->closing || uv_write(&r->write, (uv_stream_t *)&p->tcp, &r->text, 1, on_written) < 0) {
            reply_free(r);
            peer_unref(p);
            peer_close(p); /* nothing if it is closing already */
        }
    }
    peer_unref(p);
}

static void on_peer_closed(uv_handle_t *handle) { peer_unref((peer *)handle); }

/* Stops reading and closes the socket. Replies still owed are dropped as
 * they complete; the connection's reference goes in on_peer_closed. */
static void peer_close(peer *p)
{
    if (p->closing)
        return;
    p->closing = true;
    uv_close((uv_handle_t *)&p->tcp, on_peer_closed);
    peer_flush(p);
}

/* ------------------------------------------------------------- replies */

static void reply_set(reply *r, const char *prefix, const char *text, size_t len)
{
    size_t plen = strlen(prefix);
    char *line = must_alloc(plen + len + 1);
    memcpy(line, prefix, plen);
    memcpy(line + plen, text, len);
    line[plen + len] = '\n';
    r->text = uv_buf_init(line, (unsigned)(plen + len + 1));
    r->ready = true;
}

static void reply_error(reply *r, const char *reason) { reply_set(r, "-ERR ", reason, strlen(reason)); }

/* Values go out as they are: a value holding a newline (set by another
 * Redis client) would read as two lines. */
static void reply_format(reply *r, const redisReply *rr, int status)
{
    char num[32];
    if (status < 0) {
        reply_error(r, rp_strerror(status));
    } else if (rr->type == REDIS_REPLY_ERROR) {
        reply_set(r, "-", rr->str, rr->len);
    } else if (rr->type == REDIS_REPLY_STRING || rr->type == REDIS_REPLY_STATUS) {
        reply_set(r, "", rr->str, rr->len);
    } else if (rr->type == REDIS_REPLY_INTEGER) {
        int n = snprintf(num, sizeof num, "%lld", rr->integer);
        reply_set(r, "", num, (size_t)n);
    } else if (rr->type == REDIS_REPLY_NIL) {
        reply_set(r, "", "(nil)", 5);
    } else {
        reply_error(r, "unexpected reply");
    }
}

/* ------------------------------------------------------------ commands */

/* Splits a line into the command, the key and the rest of the line (SET's
 * value may hold spaces). Returns how many fields it found. */
static int split_line(const char *line, size_t len, const char *argv[3], size_t argvlen[3])
{
    const char *end = line + len;
    int argc = 0;
    while (argc < 3) {
        while (line < end && *line == ' ')
            line++;
        if (line == end)
            break;
        const char *field_end = argc < 2 ? memchr(line, ' ', (size_t)(end - line)) : NULL;
        if (!field_end)
            field_end = end;
        argv[argc] = line;
        argvlen[argc++] = (size_t)(field_end - line);
        line = field_end;
    }
    return argc;
}

static const command *lookup(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strlen(commands[i].name) == len && !strncasecmp(commands[i].name, name, len))
            return &commands[i];
    return NULL;
}

static void on_reply(rp_client *client, const redisReply *rr, int status, void *data);

/* Turns one line into a command, or at once into an error reply. Returns
 * false, taking nothing, when the line must wait for the peer's earlier
 * commands (see struct peer). */
static bool peer_command(peer *p, const char *line, size_t len)
{
    if (len && line[len - 1] == '\r')
        len--;
    const char *argv[3];
    size_t argvlen[3];
    int argc = split_line(line, len, argv, argvlen);
    const command *cmd = argc ? lookup(argv[0], argvlen[0]) : NULL;
    bool valid = cmd && cmd->argc == argc;
    if (valid && p->in_flight && (p->writing || cmd->writes))
        return false;
    reply *r = reply_new(p);
    if (!valid) {
        reply_error(r, cmd ? "wrong number of arguments" : "unknown command");
        return true;
    }
    argv[0] = cmd->name;
    argvlen[0] = strlen(cmd->name);
    int rc = rp_client_command(gw.client, on_reply, r, argc, argv, argvlen);
    if (rc < 0) {
        reply_error(r, rp_strerror(rc));
    } else {
        p->in_flight++;
        p->writing = cmd->writes;
    }
    return true;
}

/* Sends the buffered lines that may go now, answers what is ready, and
 * reads more only while there is room for it. */
static void peer_advance(peer *p)
{
    size_t used = 0;
    for (char *nl; p->owed < MAX_OWED && (nl = memchr(p->in + used, '\n', p->len - used));) {
        size_t len = (size_t)(nl - (p->in + used));
        if (!peer_command(p, p->in + used, len))
            break;
        used += len + 1;
    }
    p->len -= used;
    memmove(p->in, p->in + used, p->len);
    peer_flush(p);
    if (p->closing)
        return;
    if (p->len == sizeof p->in && !memchr(p->in, '\n', p->len))
        peer_close(p); /* a line too long to ever end */
    else if (p->len < sizeof p->in)
        uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read); /* UV_EALREADY if reading: fine */
    else
        uv_read_stop((uv_stream_t *)&p->tcp);
}

/* Runs on ringpool's loop, inside libuv's: r holds a reference on its peer,
 * which is alive even if it hung up. */
static void on_reply(rp_client *client, const redisReply *rr, int status, void *data)
{
    reply *r = data;
    peer *p = r->peer;
    reply_format(r, rr, status);
    p->in_flight--;
    if (p->closing)
        peer_flush(p); /* drops r, and maybe p */
    else
        peer_advance(p); /* lines held back behind this one may go now */
}

static void on_written(uv_write_t *req, int status)
{
    reply *r = req->data;
    peer *p = r->peer;
    reply_free(r);
    if (status < 0)
        peer_close(p); /* the peer hung up (or libuv cancelled it while closing) */
    else if (!p->closing)
        peer_advance(p); /* below MAX_OWED again */
    peer_unref(p);       /* r's reference: last, as it may free p */
}

/* -------------------------------------------------------------- server */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    peer *p = (peer *)handle;
    *buf = uv_buf_init(p->in + p->len, (unsigned)(sizeof p->in - p->len));
}

/* EOF or a read error drops what the peer is still owed, as Redis does. */
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    peer *p = (peer *)stream;
    if (nread < 0) {
        peer_close(p);
        return;
    }
    p->len += (size_t)nread;
    peer_advance(p);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        fprintf(stderr, "kv_gateway: accept: %s\n", uv_strerror(status));
        return;
    }
    peer *p = must_alloc(sizeof *p);
    p->refs = 1; /* the connection's */
    p->tailp = &p->head;
    uv_tcp_init(&gw.uv, &p->tcp);
    if (uv_accept(server, (uv_stream_t *)&p->tcp) < 0) {
        peer_close(p);
        return;
    }
    uv_tcp_nodelay(&p->tcp, 1); /* one small write per reply: no Nagle delay */
    peer_advance(p);            /* starts reading */
}

static void listen_on(int port)
{
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", port, &sin);
    int rc = uv_tcp_init(&gw.uv, &gw.listener);
    if (rc == 0)
        rc = uv_tcp_bind(&gw.listener, (const struct sockaddr *)&sin, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&gw.listener, 128, on_connection);
    if (rc < 0) {
        fprintf(stderr, "kv_gateway: listen on 127.0.0.1:%d: %s\n", port, uv_strerror(rc));
        exit(1);
    }
    int len = sizeof sin;
    uv_tcp_getsockname(&gw.listener, (struct sockaddr *)&sin, &len);
    printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
    fflush(stdout);
}

/* ------------------------------------------------------------ shutdown */

static void close_peer(uv_handle_t *handle, void *arg)
{
    if (handle->type == UV_TCP && handle != (uv_handle_t *)&gw.listener)
        peer_close((peer *)handle);
}

static void on_client_closed(rp_client *client, void *data) { gw.client = NULL; }

/* Stops taking work and closes everything the gateway opened. Commands
 * already sent finish first (rp_client_close is graceful), their replies
 * dropped with their peers; uv_run returns once all of it is closed, as
 * the adapter holds the loop only while ringpool has work pending. A
 * second signal finds libuv's handler gone and ends the process. */
static void on_signal(uv_signal_t *handle, int signum)
{
    uv_close((uv_handle_t *)&gw.listener, NULL);
    uv_close((uv_handle_t *)&gw.sigint, NULL);
    uv_close((uv_handle_t *)&gw.sigterm, NULL);
    uv_walk(&gw.uv, close_peer, NULL);
    rp_client_close(gw.client, on_client_closed, NULL);
}

static void watch_signal(uv_signal_t *handle, int signum)
{
    uv_signal_init(&gw.uv, handle);
    uv_signal_start(handle, on_signal, signum);
}

/* Detaches after uv_run has returned, not in on_client_closed: that runs
 * inside the adapter's own callback, which goes on using its handles after
 * ringpool returns (it may even restart the idle handle detach closed). */
static int finish(void)
{
    rp_libuv_detach(gw.loop);
    uv_run(&gw.uv, UV_RUN_NOWAIT); /* the adapter's close callbacks */
    int uv_rc = uv_loop_close(&gw.uv);
    int rp_rc = rp_loop_free(gw.loop);
    if (gw.client || uv_rc < 0 || rp_rc < 0) {
        fprintf(stderr, "kv_gateway: unclean shutdown: client %s, uv_loop_close: %s, rp_loop_free: %s\n",
                gw.client ? "still open" : "closed", uv_rc < 0 ? uv_strerror(uv_rc) : "ok",
                rp_rc < 0 ? rp_strerror(rp_rc) : "ok");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:6379", .l = 7379};
    example_parse(argc, argv, &args, usage);
    signal(SIGPIPE, SIG_IGN); /* a write to a peer that hung up fails instead */
    uv_loop_init(&gw.uv);
    gw.client = example_client(&gw.loop, args.addr, "kv_gateway");
    int rc = rp_libuv_attach(gw.loop, &gw.uv);
    if (rc < 0) {
        fprintf(stderr, "kv_gateway: rp_libuv_attach: %s\n", rp_strerror(rc));
        return 1;
    }
    listen_on((int)args.l);
    watch_signal(&gw.sigint, SIGINT);
    watch_signal(&gw.sigterm, SIGTERM);
    uv_run(&gw.uv, UV_RUN_DEFAULT); /* until on_signal's closes are all done */
    return finish();
}
