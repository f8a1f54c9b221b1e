/* libFuzzer entry point: build with -Dfuzz=true (clang); RP_FUZZ_ONE names
 * the harness (fuzz_replies_one, fuzz_format_one). */
#include <stddef.h>
#include <stdint.h>

void RP_FUZZ_ONE(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    RP_FUZZ_ONE(data, size);
    return 0;
}
