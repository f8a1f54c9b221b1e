/* hiredis's command format ("SET %s %b", key, val, len) turned into the
 * arguments rp_client_command and its kin take. */
#ifndef RP_FORMAT_H
#define RP_FORMAT_H

#include "internal.h"

#include <stdarg.h>

/* Where a format's conversions take their values: a va_list for the
 * public calls, the input bytes for the fuzzer. Each returns the value
 * as promoted by a variadic call; next_str may return NULL (-EINVAL). */
typedef struct rp__format_source {
    const char *(*next_str)(struct rp__format_source *src);
    const void *(*next_bin)(struct rp__format_source *src, size_t *len);
    int (*next_int)(struct rp__format_source *src);
    long (*next_long)(struct rp__format_source *src);
    long long (*next_llong)(struct rp__format_source *src);
    double (*next_double)(struct rp__format_source *src);
} rp__format_source;

/* A formatted command's arguments. The record holds room for a small
 * command; a larger one moves to the heap, so free it with
 * rp__format_args_free once the arguments have been copied. */
#define RP__FORMAT_INLINE_ARGS 8
typedef struct rp__format_args {
    int argc;
    const char **argv;
    size_t *argvlen;
    char *bytes;
    size_t len, bytes_cap, args_cap;
    const char *inline_argv[RP__FORMAT_INLINE_ARGS];
    size_t inline_lens[RP__FORMAT_INLINE_ARGS];
    char inline_bytes[256];
} rp__format_args;

/* 0, -EINVAL for a malformed format (or a NULL string or binary), or
 * -ENOMEM. */
int rp__format_parse(const char *format, rp__format_source *src, rp__format_args *out);
void rp__format_args_free(rp__format_args *out);

#endif
