/* Links the library statically: the parser (lib/format.c) is internal. */
#include "format.h"

#include "../../lib/format.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The values: read from the input after the format, zero once it runs
 * out. A string is at most 40 bytes of it, cut at a NUL; the byte before
 * it says whether it is NULL. */
typedef struct byte_source {
    rp__format_source base;
    const uint8_t *at, *end;
    char strings[8][41];
    unsigned nstrings;
} byte_source;

static uint64_t take(byte_source *s, size_t n)
{
    uint64_t value = 0;
    for (size_t i = 0; i < n && s->at < s->end; i++)
        value |= (uint64_t)*s->at++ << (8 * i);
    return value;
}

static const char *next_str(rp__format_source *src)
{
    byte_source *s = (byte_source *)src;
    if (take(s, 1) == 0xff)
        return NULL;
    char *text = s->strings[s->nstrings++ % 8];
    size_t len = (size_t)(s->end - s->at) < 40 ? (size_t)(s->end - s->at) : 40;
    memcpy(text, s->at, len);
    text[len] = '\0';
    s->at += strlen(text) < len ? strlen(text) + 1 : len;
    return text;
}

static const void *next_bin(rp__format_source *src, size_t *len)
{
    byte_source *s = (byte_source *)src;
    size_t want = (size_t)take(s, 1);
    *len = want <= (size_t)(s->end - s->at) ? want : (size_t)(s->end - s->at);
    const void *bytes = *len || want != 0xff ? s->at : NULL;
    s->at += *len;
    return bytes;
}

static int next_int(rp__format_source *src) { return (int)take((byte_source *)src, sizeof(int)); }
static long next_long(rp__format_source *src) { return (long)take((byte_source *)src, sizeof(long)); }
static long long next_llong(rp__format_source *src) { return (long long)take((byte_source *)src, 8); }

static double next_double(rp__format_source *src)
{
    uint64_t bits = take((byte_source *)src, 8);
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* A width or precision of millions asks printf for megabytes: legal,
 * and the same as hiredis, but not worth the fuzzer's memory. */
static bool asks_for_megabytes(const char *format)
{
    for (size_t digits = 0; *format; format++)
        if ((digits = *format >= '0' && *format <= '9' ? digits + 1 : 0) > 6)
            return true;
    return false;
}

void fuzz_format_one(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t format_len = nul ? (size_t)(nul - data) : size;
    char *format = malloc(format_len + 1);
    memcpy(format, data, format_len);
    format[format_len] = '\0';
    if (asks_for_megabytes(format)) {
        free(format);
        return;
    }
    byte_source src = {.base = {next_str, next_bin, next_int, next_long, next_llong, next_double},
                       .at = data + format_len + (nul != NULL), .end = data + size};
    rp__format_args args;
    int rc = rp__format_parse(format, &src.base, &args);
    if (rc == 0) {
        size_t total = 0;
        if (args.argc <= 0)
            abort();
        for (int i = 0; i < args.argc; i++) {
            if (args.argv[i] != args.bytes + total)
                abort();
            total += args.argvlen[i];
        }
        if (total != args.len)
            abort();
        rp__format_args_free(&args);
    } else if (rc != -EINVAL && rc != -ENOMEM) {
        abort();
    }
    free(format);
}
