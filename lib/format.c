/* hiredis's command format, read as hiredis 0.14's redisvFormatCommand
 * reads it, so a hiredis user's format strings send the same bytes:
 * arguments are separated by spaces; %s (a C string), %b (a pointer and a
 * size_t length), %% and printf's integer and floating conversions (flags,
 * width, precision, and the hh, h, l and ll sizes of the integer ones) are
 * interpolated into the argument they stand in. An argument a conversion
 * touched exists even when it adds no byte ("SET k %s" with "" sends an
 * empty value). Anything else after a % is a malformed format (-EINVAL,
 * where hiredis returns its own error), as are a NULL %s and a NULL %b
 * with a length; a % that ends the format is a byte.
 *
 * The arguments are built in buffers inside the caller's rp__format_args,
 * moved to the heap only when a command outgrows them, so a small
 * formatted command costs no allocation beyond the command's own copy. */
#include "format.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void rp__format_args_free(rp__format_args *out)
{
    if (out->bytes != out->inline_bytes)
        rp__free(out->bytes);
    if (out->argvlen != out->inline_lens)
        rp__free(out->argvlen);
    if (out->argv != out->inline_argv)
        rp__free((void *)out->argv);
}


/* Grows an array that starts inside the args record: the first growth
 * copies it out. */
static void *grow(void *array, const void *inline_array, size_t *cap, size_t need, size_t elem)
{
    if (need > SIZE_MAX / elem)
        return NULL;
    size_t cap_new = *cap;
    while (cap_new < need)
        cap_new = cap_new <= SIZE_MAX / elem / 2 ? cap_new * 2 : need;
    void *grown = array == inline_array ? rp__malloc(cap_new * elem) : rp__realloc(array, cap_new * elem);
    if (grown && array == inline_array)
        memcpy(grown, array, *cap * elem);
    if (grown)
        *cap = cap_new;
    return grown;
}

/* Makes room for len more bytes; returns where they go, or NULL. */
static char *reserve(rp__format_args *out, size_t len)
{
    if (out->len + len < out->len)
        return NULL;
    if (out->len + len > out->bytes_cap) {
        char *grown = grow(out->bytes, out->inline_bytes, &out->bytes_cap, out->len + len, 1);
        if (!grown)
            return NULL;
        out->bytes = grown;
    }
    char *at = out->bytes + out->len;
    out->len += len;
    return at;
}

static int append(rp__format_args *out, const void *data, size_t len)
{
    char *at = reserve(out, len);
    if (!at)
        return -ENOMEM;
    if (len)
        memcpy(at, data, len);
    return 0;
}

/* Records where the argument being built ends. */
static int end_argument(rp__format_args *out)
{
    if ((size_t)out->argc == out->args_cap) {
        size_t cap = out->args_cap;
        size_t *lens = grow(out->argvlen, out->inline_lens, &cap, cap + 1, sizeof *lens);
        if (!lens)
            return -ENOMEM;
        out->argvlen = lens;
        out->args_cap = cap;
    }
    out->argvlen[out->argc++] = out->len;
    return 0;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral" /* the spec was checked by printf_spec */
static int append_printf(rp__format_args *out, const char *spec, ...)
{
    char small[64];
    va_list ap;
    va_start(ap, spec);
    int len = vsnprintf(small, sizeof small, spec, ap);
    va_end(ap);
    if (len < 0)
        return -EINVAL;
    if ((size_t)len < sizeof small)
        return append(out, small, (size_t)len);
    char *at = reserve(out, (size_t)len + 1); /* room for vsnprintf's NUL */
    if (!at)
        return -ENOMEM;
    va_start(ap, spec);
    vsnprintf(at, (size_t)len + 1, spec, ap);
    va_end(ap);
    out->len--;
    return 0;
}
#pragma GCC diagnostic pop

/* The length of the printf conversion at spec (its '%' included) that
 * hiredis accepts, with the type its value was passed as; 0 if none. */
typedef enum { AS_INT, AS_LONG, AS_LLONG, AS_DOUBLE } promoted;

static size_t printf_spec(const char *spec, promoted *as)
{
    const char *p = spec + 1;
    p += strspn(p, "#0-+ ");
    p += strspn(p, "0123456789");
    if (*p == '.')
        p += 1 + strspn(p + 1, "0123456789");
    static const char integers[] = "diouxX";
    if (*p && strchr("eEfFgGaA", *p)) {
        *as = AS_DOUBLE;
        return (size_t)(p + 1 - spec);
    }
    *as = AS_INT;
    if (p[0] == 'h')
        p += p[1] == 'h' ? 2 : 1;
    else if (p[0] == 'l' && p[1] == 'l')
        *as = AS_LLONG, p += 2;
    else if (p[0] == 'l')
        *as = AS_LONG, p += 1;
    return *p && strchr(integers, *p) ? (size_t)(p + 1 - spec) : 0;
}

static int interpolate_number(rp__format_args *out, const char *spec, rp__format_source *src, size_t *used)
{
    promoted as;
    char fmt[32];
    size_t len = printf_spec(spec, &as);
    if (!len || len >= sizeof fmt)
        return -EINVAL;
    memcpy(fmt, spec, len);
    fmt[len] = '\0';
    *used = len;
    switch (as) {
    case AS_DOUBLE: return append_printf(out, fmt, src->next_double(src));
    case AS_LLONG: return append_printf(out, fmt, src->next_llong(src));
    case AS_LONG: return append_printf(out, fmt, src->next_long(src));
    default: return append_printf(out, fmt, src->next_int(src));
    }
}

/* One conversion at spec (its '%'); *used is its length. */
static int interpolate(rp__format_args *out, const char *spec, rp__format_source *src, size_t *used)
{
    *used = 2;
    switch (spec[1]) {
    case 's': {
        const char *text = src->next_str(src);
        return text ? append(out, text, strlen(text)) : -EINVAL;
    }
    case 'b': {
        size_t len;
        const void *bytes = src->next_bin(src, &len);
        return bytes || !len ? append(out, bytes, len) : -EINVAL;
    }
    case '%':
        return append(out, "%", 1);
    default:
        return interpolate_number(out, spec, src, used);
    }
}

static int parse(const char *format, rp__format_source *src, rp__format_args *out)
{
    bool touched = false;
    int rc = 0;
    for (const char *c = format; *c && rc == 0;) {
        if (*c == ' ') {
            if (touched)
                rc = end_argument(out);
            touched = false;
            c++;
        } else if (*c == '%' && c[1]) {
            size_t used;
            rc = interpolate(out, c, src, &used);
            touched = true;
            c += used;
        } else {
            size_t run = 1 + strcspn(c + 1, "% ");
            rc = append(out, c, run);
            touched = true;
            c += run;
        }
    }
    if (rc == 0 && touched)
        rc = end_argument(out);
    return rc;
}

/* Lengths and pointers from the recorded ends, once the bytes stay put. */
static int point_arguments(rp__format_args *out)
{
    if (out->argc > RP__FORMAT_INLINE_ARGS) {
        out->argv = rp__malloc((size_t)out->argc * sizeof *out->argv);
        if (!out->argv)
            return -ENOMEM;
    }
    size_t start = 0;
    for (int i = 0; i < out->argc; i++) {
        size_t end = out->argvlen[i];
        out->argv[i] = out->bytes + start;
        out->argvlen[i] = end - start;
        start = end;
    }
    return 0;
}

int rp__format_parse(const char *format, rp__format_source *src, rp__format_args *out)
{
    *out = (rp__format_args){.argv = out->inline_argv, .argvlen = out->inline_lens, .bytes = out->inline_bytes,
                             .bytes_cap = sizeof out->inline_bytes, .args_cap = RP__FORMAT_INLINE_ARGS};
    int rc = format ? parse(format, src, out) : -EINVAL;
    if (rc == 0)
        rc = out->argc ? point_arguments(out) : -EINVAL;
    if (rc < 0)
        rp__format_args_free(out);
    return rc;
}
