/* Error names and the report of caller mistakes. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *rp_strerror(int code)
{
    switch (code) {
#define RP__ERR_NAME(name, value, text) \
    case RP_##name:                     \
        return text;
        RP_ERRNO_MAP(RP__ERR_NAME)
#undef RP__ERR_NAME
    case 0:
        return "success";
    default:
        return code < 0 ? strerror(-code) : "unknown error";
    }
}

void rp__log_misuse(const char *what)
{
    if (!getenv("RINGPOOL_QUIET"))
        fprintf(stderr, "ringpool: misuse: %s\n", what);
}
