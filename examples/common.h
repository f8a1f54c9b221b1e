/* Argument handling shared by the examples. */
#ifndef RP_EXAMPLES_COMMON_H
#define RP_EXAMPLES_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses -a ADDR, -n N, -c N, -w N and --help; returns 0 or exits. */
typedef struct example_args {
    const char *addr;
    long n, c, w;
} example_args;

static inline void example_parse(int argc, char **argv, example_args *args, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            printf("%s", usage);
            exit(0);
        }
        if (i + 1 >= argc || strlen(flag) != 2 || !strchr("ancw", flag[1]) || flag[0] != '-') {
            fprintf(stderr, "unknown or incomplete option: %s\n\n%s", flag, usage);
            exit(2);
        }
        const char *value = argv[++i];
        switch (flag[1]) {
        case 'a': args->addr = value; break;
        case 'n': args->n = atol(value); break;
        case 'c': args->c = atol(value); break;
        case 'w': args->w = atol(value); break;
        }
    }
}

#endif
