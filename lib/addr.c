/* Address parsing for dials: "host:port", "[v6]:port", "unix:/path". Only
 * the text is checked when the pool is created, so a typo (a space around
 * the address or in a host name included) is -EINVAL at once and creation
 * never waits for a resolver. A numeric address or a
 * path is the one address every dial uses; a host name is looked up later,
 * off the loop thread, when a dial needs it (resolve.c). */
#include "internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* Decimal digits only, 1 to 65535. */
static int parse_port(const char *text, rp__hostport *name, uint16_t *port)
{
    size_t len = strspn(text, "0123456789");
    if (len == 0 || text[len] || len >= sizeof name->port)
        return -EINVAL;
    long value = strtol(text, NULL, 10);
    if (value < 1 || value > 65535)
        return -EINVAL;
    memcpy(name->port, text, len + 1);
    *port = (uint16_t)value;
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

static bool has_space(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (isspace((unsigned char)text[i]))
            return true;
    return false;
}

/* Splits "host:port" or "[v6]:port" into host and port. */
static int split_host_port(const char *text, rp__hostport *name, uint16_t *port)
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
    if (host_len == 0 || host_len >= sizeof name->host || has_space(host_start, host_len))
        return -EINVAL; /* no name has a space: it would only fail at the lookup */
    memcpy(name->host, host_start, host_len);
    name->host[host_len] = '\0';
    return parse_port(colon + 1, name, port);
}

/* A numeric v4 or v6 host fills out; false for a name. */
static bool parse_numeric(rp__addr *out, const char *host, uint16_t port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        out->len = sizeof *sin;
        return true;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        out->len = sizeof *sin6;
        return true;
    }
    return false;
}

int rp__addr_parse(const char *text, rp__addr *addr, rp__hostport *name)
{
    if (!text)
        return -EINVAL;
    memset(addr, 0, sizeof *addr);
    size_t len = strlen(text);
    if (len && (isspace((unsigned char)text[0]) || isspace((unsigned char)text[len - 1])))
        return -EINVAL; /* a copy-paste slip, never meant */
    if (strncmp(text, "unix:", 5) == 0)
        return isspace((unsigned char)text[5]) ? -EINVAL : parse_unix(addr, text + 5);
    uint16_t port;
    int rc = split_host_port(text, name, &port);
    if (rc < 0)
        return rc;
    return parse_numeric(addr, name->host, port) ? 0 : RP__ADDR_NAME;
}

rp__addrs *rp__addrs_new(unsigned len)
{
    rp__addrs *addrs = rp__calloc(1, sizeof *addrs + len * sizeof addrs->addr[0]);
    if (addrs) {
        addrs->refs = 1;
        addrs->len = len;
    }
    return addrs;
}

void rp__addrs_unref(rp__addrs *addrs)
{
    if (--addrs->refs == 0)
        rp__free(addrs);
}
