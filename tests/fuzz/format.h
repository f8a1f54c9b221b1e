/* The command-format fuzz harness, shared by the libFuzzer target and the
 * corpus replay test. */
#ifndef RP_FUZZ_FORMAT_H
#define RP_FUZZ_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* Parses data (up to its first NUL) as a command format whose values come
 * from the bytes after it; aborts unless the result is -EINVAL or a set
 * of arguments that covers exactly the bytes built. */
void fuzz_format_one(const uint8_t *data, size_t size);

#endif
