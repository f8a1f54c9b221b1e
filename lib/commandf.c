/* The printf-style command calls (hiredis's redisAsyncCommand habit): the
 * format becomes arguments (format.c), which go to the argv call of the
 * same name, which copies them; nothing of the format outlives the call. */
#include "format.h"

#include <errno.h>

typedef struct va_source {
    rp__format_source base;
    va_list ap;
} va_source;

static const char *va_str(rp__format_source *src) { return va_arg(((va_source *)src)->ap, const char *); }
static int va_int(rp__format_source *src) { return va_arg(((va_source *)src)->ap, int); }
static long va_long(rp__format_source *src) { return va_arg(((va_source *)src)->ap, long); }
static long long va_llong(rp__format_source *src) { return va_arg(((va_source *)src)->ap, long long); }
static double va_double(rp__format_source *src) { return va_arg(((va_source *)src)->ap, double); }

static const void *va_bin(rp__format_source *src, size_t *len)
{
    const void *bytes = va_arg(((va_source *)src)->ap, const void *);
    *len = va_arg(((va_source *)src)->ap, size_t);
    return bytes;
}

/* Parses format with the values in ap. */
static int format_args(const char *format, va_list ap, rp__format_args *args)
{
    va_source src = {.base = {va_str, va_bin, va_int, va_long, va_llong, va_double}};
    va_copy(src.ap, ap);
    int rc = rp__format_parse(format, &src.base, args);
    va_end(src.ap);
    return rc;
}

int rp_conn_vcommandf(rp_conn *conn, rp_conn_reply_cb cb, void *data, const char *format, va_list ap)
{
    rp__format_args args;
    int rc = format_args(format, ap, &args);
    if (rc < 0)
        return rc;
    rc = rp_conn_command(conn, cb, data, args.argc, args.argv, args.argvlen);
    rp__format_args_free(&args);
    return rc;
}

int rp_conn_commandf(rp_conn *conn, rp_conn_reply_cb cb, void *data, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int rc = rp_conn_vcommandf(conn, cb, data, format, ap);
    va_end(ap);
    return rc;
}

int64_t rp_client_vcommandf(rp_client *client, const rp_command_options *opts, rp_reply_cb cb, void *data,
                            const char *format, va_list ap)
{
    rp__format_args args;
    int rc = format_args(format, ap, &args);
    if (rc < 0)
        return rc;
    int64_t id = rp_client_command_ex(client, opts, cb, data, args.argc, args.argv, args.argvlen);
    rp__format_args_free(&args);
    return id;
}

int rp_client_commandf(rp_client *client, rp_reply_cb cb, void *data, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int64_t id = rp_client_vcommandf(client, NULL, cb, data, format, ap);
    va_end(ap);
    return id < 0 ? (int)id : 0;
}

int64_t rp_client_commandf_ex(rp_client *client, const rp_command_options *opts, rp_reply_cb cb, void *data,
                              const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int64_t id = rp_client_vcommandf(client, opts, cb, data, format, ap);
    va_end(ap);
    return id;
}

int64_t rp_cluster_vcommandf(rp_cluster *cluster, const rp_cluster_command_options *opts, rp_cluster_reply_cb cb,
                             void *data, const char *format, va_list ap)
{
    rp__format_args args;
    int rc = format_args(format, ap, &args);
    if (rc < 0)
        return rc;
    int64_t id = rp_cluster_command_ex(cluster, opts, cb, data, args.argc, args.argv, args.argvlen);
    rp__format_args_free(&args);
    return id;
}

int rp_cluster_commandf(rp_cluster *cluster, rp_cluster_reply_cb cb, void *data, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int64_t id = rp_cluster_vcommandf(cluster, NULL, cb, data, format, ap);
    va_end(ap);
    return id < 0 ? (int)id : 0;
}
