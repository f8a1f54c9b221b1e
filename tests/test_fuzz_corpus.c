/* Replays the fuzz corpus (seeds and every crash found) through the
 * reply-path harness: each input must be handled without a crash. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz/replies.h"

Test(fuzz_corpus, every_input_is_handled, .timeout = 120)
{
    const char *dir_path = getenv("RP_FUZZ_CORPUS");
    cr_assert(dir_path, "RP_FUZZ_CORPUS is not set (meson test sets it)");
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
        fuzz_replies_one(data, size);
        inputs++;
    }
    closedir(dir);
    cr_expect_geq(inputs, 8, "the corpus is missing");
}
