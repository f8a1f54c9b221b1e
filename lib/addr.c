/* Address parsing for dials: "host:port", "[v6]:port", "unix:/path". A host
 * name is resolved here, once, when the pool is created. */
#include "internal.h"

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static int parse_port(const char *text, char *out, size_t cap)
{
    char *end;
    errno = 0;
    long port = strtol(text, &end, 10);
    if (errno || end == text || *end || port < 1 || port > 65535 || (size_t)(end - text) >= cap)
        return -EINVAL;
    memcpy(out, text, (size_t)(end - text) + 1);
    return 0;
}

static int parse_unix(rp__addr *out, const char *path)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&out->sa;
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof sun->sun_path)
        return -EINVAL;
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, len + 1);
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    return 0;
}

/* Splits "host:port" or "[v6]:port" into host and port strings. */
static int split_host_port(const char *text, char *host, size_t host_cap, char *port, size_t port_cap)
{
    const char *host_start = text, *host_end, *colon;
    if (*text == '[') {
        host_start = text + 1;
        host_end = strchr(host_start, ']');
        if (!host_end || host_end[1] != ':')
            return -EINVAL;
        colon = host_end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || memchr(text, ':', (size_t)(colon - text)))
            return -EINVAL; /* a bare v6 address needs brackets */
        host_end = colon;
    }
    size_t host_len = (size_t)(host_end - host_start);
    if (host_len == 0 || host_len >= host_cap)
        return -EINVAL;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    return parse_port(colon + 1, port, port_cap);
}

int rp__addr_parse(rp__addr *out, const char *text)
{
    if (!text)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    if (strncmp(text, "unix:", 5) == 0)
        return parse_unix(out, text + 5);
    char host[256], port[8];
    int rc = split_host_port(text, host, sizeof host, port, sizeof port);
    if (rc < 0)
        return rc;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -EINVAL;
    memcpy(&out->sa, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}
