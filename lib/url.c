/* rp_client_options_from_url: go-redis ParseURL's URLs into client
 * options. The decoded strings (address, user, password, client name) go
 * into the caller's buffer, so nothing is allocated and nothing needs
 * freeing; no error names any part of the URL, so no secret is echoed. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct out_buf {
    char *next;
    size_t left;
} out_buf;

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Copies text[0..len) into the buffer, %XX decoded and NUL-terminated. */
static int put_decoded(out_buf *out, const char *text, size_t len, const char **result)
{
    if (out->left < len + 1)
        return -ENOSPC;
    char *start = out->next, *w = start;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '%') {
            *w++ = text[i];
            continue;
        }
        if (i + 2 >= len)
            return -EINVAL; /* a cut escape */
        int h = hex_value(text[i + 1]), l = hex_value(text[i + 2]);
        if (h < 0 || l < 0 || (h == 0 && l == 0))
            return -EINVAL; /* not hex, or a NUL */
        *w++ = (char)(h * 16 + l);
        i += 2;
    }
    *w++ = '\0';
    out->left -= (size_t)(w - start);
    out->next = w;
    *result = start;
    return 0;
}

/* A whole decimal number in [min, max]. */
static int parse_int(const char *text, long min, long max, long *value)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < min || v > max)
        return -EINVAL;
    *value = v;
    return 0;
}

/* A duration as go-redis takes it: a Go duration with one unit ("500ms",
 * "5s", "1m", "1h") or bare seconds; -1 (none) becomes 0, as our options
 * spell "none" for the read, write and idle limits. */
static int parse_duration(const char *text, uint32_t *ms)
{
    static const struct {
        const char *unit;
        long ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"", 1000}};
    if (strcmp(text, "-1") == 0) {
        *ms = 0;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || errno || v < 0)
        return -EINVAL;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            if (v > (long)(UINT32_MAX / (unsigned long)units[i].ms))
                return -EINVAL;
            *ms = (uint32_t)(v * units[i].ms);
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_bool(const char *text, bool *value)
{
    if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)
        *value = true;
    else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0)
        *value = false;
    else
        return -EINVAL;
    return 0;
}

/* One query option, decoded: go-redis's names where they make sense here. */
static int apply_option(rp_client_options *o, const char *key, const char *value, bool tls)
{
    rp_pool_options *p = &o->pool;
    long n;
    int rc = -EINVAL;
    static const struct {
        const char *key;
        size_t offset;
    } durations[] = {
        {"dial_timeout", offsetof(rp_client_options, pool.dial_timeout_ms)},
        {"read_timeout", offsetof(rp_client_options, pool.read_timeout_ms)},
        {"write_timeout", offsetof(rp_client_options, pool.write_timeout_ms)},
        {"pool_timeout", offsetof(rp_client_options, pool.pool_timeout_ms)},
        {"conn_max_idle_time", offsetof(rp_client_options, pool.conn_max_idle_time_ms)},
        {"conn_max_lifetime", offsetof(rp_client_options, pool.conn_max_lifetime_ms)},
        {"min_retry_backoff", offsetof(rp_client_options, min_retry_backoff_ms)},
        {"max_retry_backoff", offsetof(rp_client_options, max_retry_backoff_ms)},
    };
    static const struct {
        const char *key;
        size_t offset;
    } counts[] = {
        {"pool_size", offsetof(rp_client_options, pool.pool_size)},
        {"min_idle_conns", offsetof(rp_client_options, pool.min_idle_conns)},
        {"max_idle_conns", offsetof(rp_client_options, pool.max_idle_conns)},
        {"max_active_conns", offsetof(rp_client_options, pool.max_active_conns)},
        {"max_retries", offsetof(rp_client_options, max_retries)},
        {"db", offsetof(rp_client_options, db)},
    };
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++)
        if (strcmp(key, durations[i].key) == 0)
            return parse_duration(value, (uint32_t *)((char *)o + durations[i].offset));
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        if (strcmp(key, counts[i].key) == 0) {
            /* max_retries -1 means never, as in go-redis. */
            long min = strcmp(key, "max_retries") == 0 ? -1 : 0;
            if ((rc = parse_int(value, min, 1 << 30, &n)) == 0)
                *(int *)((char *)o + counts[i].offset) = (int)n;
            return rc;
        }
    }
    if (strcmp(key, "client_name") == 0) {
        o->client_name = value;
        return 0;
    }
    if (strcmp(key, "pool_fifo") == 0)
        return parse_bool(value, &p->pool_fifo);
    if (tls && strcmp(key, "skip_verify") == 0)
        return parse_bool(value, &p->tls.insecure);
    return -EINVAL; /* an option we do not know: a typo must not pass */
}

/* "k=v&k=v" up to the end of the text. */
static int parse_query(rp_client_options *o, out_buf *out, const char *q, bool tls)
{
    while (*q) {
        size_t len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);
        const char *key, *value;
        if (!eq || eq == q)
            return -EINVAL;
        int rc = put_decoded(out, q, (size_t)(eq - q), &key);
        if (rc == 0)
            rc = put_decoded(out, eq + 1, len - (size_t)(eq + 1 - q), &value);
        if (rc == 0)
            rc = apply_option(o, key, value, tls);
        if (rc < 0)
            return rc;
        q += len + (q[len] == '&');
    }
    return 0;
}

/* "user:password@" before the host: both %-decoded; only a user is a user
 * without a password (go-redis). */
static int parse_userinfo(rp_client_options *o, out_buf *out, const char *text, size_t len)
{
    const char *colon = memchr(text, ':', len);
    size_t user_len = colon ? (size_t)(colon - text) : len;
    int rc = 0;
    if (user_len)
        rc = put_decoded(out, text, user_len, &o->username);
    if (rc == 0 && colon)
        rc = put_decoded(out, colon + 1, len - user_len - 1, &o->password);
    return rc;
}

/* "host[:port]" or "[v6][:port]": the address text, port 6379 by default
 * and localhost for an empty host. */
static int parse_host(rp_client_options *o, out_buf *out, const char *text, size_t len)
{
    const char *host = text, *port = NULL;
    size_t host_len = len;
    if (len && text[0] == '[') {
        const char *close = memchr(text, ']', len);
        if (!close)
            return -EINVAL;
        host_len = (size_t)(close - text) + 1;
        if (host_len < len && close[1] != ':')
            return -EINVAL;
    } else {
        const char *colon = memchr(text, ':', len);
        host_len = colon ? (size_t)(colon - text) : len;
    }
    if (host_len < len)
        port = text + host_len + 1;
    size_t port_len = port ? len - host_len - 1 : 0;
    if (port && (port_len == 0 || port_len > 5 || strspn(port, "0123456789") < port_len))
        return -EINVAL;
    if (memchr(host, '%', host_len) || memchr(host, '@', host_len))
        return -EINVAL;
    int n = snprintf(out->next, out->left, "%.*s:%.*s", (int)(host_len ? host_len : 9),
                     host_len ? host : "localhost", (int)(port ? port_len : 4), port ? port : "6379");
    if (n < 0 || (size_t)n >= out->left)
        return -ENOSPC;
    o->pool.addr = out->next;
    out->next += n + 1;
    out->left -= (size_t)n + 1;
    return 0;
}

/* The part after "scheme://": [userinfo@]host[:port][/db][?query]. */
static int parse_tcp(rp_client_options *o, out_buf *out, const char *rest, bool tls)
{
    size_t authority = strcspn(rest, "/?#");
    const char *at = NULL;
    for (const char *c = rest; c < rest + authority; c++)
        if (*c == '@')
            at = c; /* the last, as Go's url.Parse: a password may hold one */
    int rc = 0;
    const char *host = rest;
    if (at) {
        rc = parse_userinfo(o, out, rest, (size_t)(at - rest));
        host = at + 1;
    }
    if (rc == 0)
        rc = parse_host(o, out, host, (size_t)(rest + authority - host));
    const char *path = rest + authority;
    if (rc == 0 && *path == '#')
        return -EINVAL;
    if (rc == 0 && *path == '/') {
        size_t len = strcspn(path + 1, "?#");
        char db[16];
        long n;
        if (len >= sizeof db)
            return -EINVAL;
        memcpy(db, path + 1, len);
        db[len] = '\0';
        if (len && (rc = parse_int(db, 0, 1 << 30, &n)) == 0)
            o->db = (int)n;
        path += 1 + len;
    }
    if (rc == 0 && *path == '#')
        return -EINVAL;
    if (rc == 0 && *path == '?')
        rc = parse_query(o, out, path + 1, tls);
    return rc;
}

/* unix://[userinfo@]/path[?query] */
static int parse_unix(rp_client_options *o, out_buf *out, const char *rest)
{
    const char *slash = strchr(rest, '/');
    if (!slash)
        return -EINVAL;
    int rc = 0;
    if (slash > rest) {
        if (slash[-1] != '@')
            return -EINVAL;
        rc = parse_userinfo(o, out, rest, (size_t)(slash - 1 - rest));
    }
    size_t path_len = strcspn(slash, "?#");
    if (rc == 0 && slash[path_len] == '#')
        return -EINVAL;
    if (rc == 0 && out->left < path_len + 6)
        return -ENOSPC;
    if (rc < 0)
        return rc;
    memcpy(out->next, "unix:", 5);
    const char *path;
    out->next += 5;
    out->left -= 5;
    if ((rc = put_decoded(out, slash, path_len, &path)) < 0)
        return rc;
    o->pool.addr = path - 5;
    return slash[path_len] == '?' ? parse_query(o, out, slash + path_len + 1, false) : 0;
}

int rp_client_options_from_url(rp_client_options *opts, const char *url, char *buf, size_t cap)
{
    if (!opts || !url || !buf)
        return -EINVAL;
    rp_client_options parsed;
    rp_client_options_init(&parsed);
    out_buf out = {buf, cap};
    int rc;
    if (strncmp(url, "redis://", 8) == 0) {
        rc = parse_tcp(&parsed, &out, url + 8, false);
    } else if (strncmp(url, "rediss://", 9) == 0) {
        parsed.pool.tls.enable = true;
        rc = parse_tcp(&parsed, &out, url + 9, true);
    } else if (strncmp(url, "unix://", 7) == 0) {
        rc = parse_unix(&parsed, &out, url + 7);
    } else {
        rc = -EINVAL;
    }
    if (rc < 0)
        return rc;
    *opts = parsed;
    return 0;
}
