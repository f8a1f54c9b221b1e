/* embed_epoll: a small line server with its own epoll loop that embeds
 * ringpool through rp_loop_fd. For each line a client sends, it GETs that
 * key through rp_client and writes the value (or "(nil)") back. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ringpool.h>

#include "common.h"

static const char usage[] =
    "usage: embed_epoll [-a ADDR] [-l PORT]\n"
    "  Listens on 127.0.0.1:PORT (default 7379). Each line received is a key:\n"
    "  the server GETs it through rp_client and answers with the value.\n"
    "  Its epoll loop embeds ringpool's loop through rp_loop_fd.\n"
    "  -a ADDR  Redis: host:port, [v6]:port or unix:/path (default 127.0.0.1:6379)\n"
    "  -l PORT  the port to listen on (0: any; the port is printed)\n";

/* One GET at a time per peer, so answers come back in line order. */
typedef struct peer {
    rp_client *client;
    int fd;
    bool closed;   /* the peer hung up */
    bool asking;   /* a GET is in flight */
    char line[512];
    size_t len;
    struct peer *prev, *next; /* every peer, to free them at exit */
} peer;

static peer *peers;

static void peer_next(peer *p);

static void peer_free_if_done(peer *p)
{
    if (p->closed && !p->asking) {
        if (p->prev)
            p->prev->next = p->next;
        else
            peers = p->next;
        if (p->next)
            p->next->prev = p->prev;
        close(p->fd);
        free(p);
    }
}

static void on_value(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    peer *p = data;
    char out[600];
    int n;
    if (status < 0)
        n = snprintf(out, sizeof out, "-%s\n", rp_strerror(status));
    else if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_ERROR)
        n = snprintf(out, sizeof out, "%.*s\n", (int)(reply->len < 500 ? reply->len : 500), reply->str);
    else
        n = snprintf(out, sizeof out, "(nil)\n");
    p->asking = false;
    if (!p->closed && write(p->fd, out, (size_t)n) < 0)
        p->closed = true;
    char *nl = memchr(p->line, '\n', p->len);
    size_t used = (size_t)(nl - p->line) + 1;
    memmove(p->line, nl + 1, p->len - used);
    p->len -= used;
    peer_next(p);
    peer_free_if_done(p);
}

static void peer_next(peer *p)
{
    char *nl = p->asking || p->closed ? NULL : memchr(p->line, '\n', p->len);
    if (!nl)
        return;
    size_t key_len = (size_t)(nl - p->line);
    if (key_len && p->line[key_len - 1] == '\r')
        key_len--;
    const char *argv[] = {"GET", p->line};
    size_t argvlen[] = {3, key_len};
    p->asking = rp_client_command(p->client, on_value, p, 2, argv, argvlen) == 0;
}

static void peer_readable(peer *p, int epfd)
{
    ssize_t n = read(p->fd, p->line + p->len, sizeof p->line - 1 - p->len);
    if (n <= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, p->fd, NULL);
        p->closed = true;
        peer_free_if_done(p);
        return;
    }
    p->len += (size_t)n;
    if (p->len == sizeof p->line - 1 && !memchr(p->line, '\n', p->len))
        p->len = 0; /* a line too long: drop it */
    peer_next(p);
}

static int listen_on(long port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, 64) < 0) {
        perror("embed_epoll: listen");
        exit(1);
    }
    socklen_t len = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &len);
    printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
    fflush(stdout);
    return fd;
}

static volatile sig_atomic_t stopping;
static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:6379", .l = 7379};
    example_parse(argc, argv, &args, usage);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    rp_loop *loop;
    rp_client *client = example_client(&loop, args.addr, "embed_epoll");
    int listener = listen_on(args.l);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    /* data.ptr: the loop, NULL for the listener, else the peer. */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = loop};
    epoll_ctl(epfd, EPOLL_CTL_ADD, rp_loop_fd(loop), &ev);
    ev.data.ptr = NULL;
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
    while (!stopping) {
        struct epoll_event events[32];
        /* Asked right before sleeping: work our own handlers made ready
         * shows here as 0, with no eventfd write. */
        int n = epoll_wait(epfd, events, 32, rp_loop_timeout(loop));
        for (int i = 0; i < n; i++) {
            void *ptr = events[i].data.ptr;
            if (ptr == loop) {
                continue; /* the run below handles it */
            } else if (!ptr) {
                peer *p = calloc(1, sizeof *p);
                p->fd = accept(listener, NULL, NULL);
                p->client = client;
                p->next = peers;
                if (peers)
                    peers->prev = p;
                peers = p;
                struct epoll_event pev = {.events = EPOLLIN, .data.ptr = p};
                epoll_ctl(epfd, EPOLL_CTL_ADD, p->fd, &pev);
            } else {
                peer_readable(ptr, epfd);
            }
        }
        rp_loop_run(loop, RP_RUN_NOWAIT);
    }
    close(epfd);
    close(listener);
    for (peer *p = peers; p; p = p->next)
        p->closed = true; /* answers still owed are dropped */
    example_finish(loop, client);
    while (peers) {
        peers->asking = false;
        peer_free_if_done(peers);
    }
    return 0;
}
