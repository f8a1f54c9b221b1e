/* The reply-path fuzz harness, shared by the libFuzzer target and the
 * corpus replay test. */
#ifndef RP_FUZZ_REPLIES_H
#define RP_FUZZ_REPLIES_H

#include <stddef.h>
#include <stdint.h>

/* Sends data as a server's replies to a few pipelined commands, through a
 * real connection; aborts if a command's callback does not run exactly
 * once or the connection is handed back in a bad state. */
void fuzz_replies_one(const uint8_t *data, size_t size);

#endif
