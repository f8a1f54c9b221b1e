/* Replays the fuzz corpora (seeds and every crash found) through their
 * harnesses, the reply path's and the command format's: each input must
 * be handled without a crash. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz/format.h"
#include "fuzz/replies.h"

/* Runs every file of the corpus named by the environment variable through
 * one harness; returns how many there were. */
static int replay(const char *variable, void (*one)(const uint8_t *, size_t))
{
    const char *dir_path = getenv(variable);
    cr_assert(dir_path, "%s is not set (meson test sets it)", variable);
    DIR *dir = opendir(dir_path);
    cr_assert(dir, "no corpus at %s", dir_path);
    int inputs = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir_path, e->d_name);
        FILE *f = fopen(path, "rb");
        static uint8_t data[1 << 20];
        size_t size = fread(data, 1, sizeof data, f);
        fclose(f);
        one(data, size);
        inputs++;
    }
    closedir(dir);
    return inputs;
}

Test(fuzz_corpus, every_reply_input_is_handled, .timeout = 120)
{
    cr_expect_geq(replay("RP_FUZZ_CORPUS", fuzz_replies_one), 8, "the corpus is missing");
}

Test(fuzz_corpus, every_format_input_is_handled, .timeout = 120)
{
    cr_expect_geq(replay("RP_FUZZ_FORMAT_CORPUS", fuzz_format_one), 8, "the corpus is missing");
}
