/* libFuzzer entry point: build with -Dfuzz=true (clang). */
#include "replies.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_replies_one(data, size);
    return 0;
}
