/* ringpool/core.h alone: what a raw-pool user includes, with no hiredis. */
#define _GNU_SOURCE /* mkdtemp, readlink */
#include <ringpool/core.h>

#ifdef REDIS_REPLY_STRING
#error "ringpool/core.h pulls in hiredis"
#endif

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Whether libssl is mapped into this process. */
static bool libssl_mapped(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    cr_assert(maps);
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, maps))
        found = strstr(line, "/libssl.so") != NULL;
    fclose(maps);
    return found;
}

Test(core_header, a_loop_and_a_pool_need_nothing_from_hiredis)
{
    rp_loop *loop;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = "127.0.0.1:1";
    rp_pool *pool;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    cr_expect_str_eq(rp_strerror(RP_ECLOSED), "pool or loop closed");
    cr_assert_eq(rp_pool_close(pool, NULL, NULL), 0);
    cr_assert_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(rp_loop_free(loop), 0);
}

/* The build-time macro and the run-time answer agree; a library without
 * TLS refuses TLS options rather than dialling in plaintext. OpenSSL is
 * loaded when the first TLS pool is made, not before: a process that
 * never uses TLS never maps it. */
Test(core_header, tls_support_is_reported_at_build_and_run_time)
{
    rp_loop *loop;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = "127.0.0.1:1";
    opts.tls.enable = true;
    opts.tls.insecure = true;
    rp_pool *pool = NULL;
    cr_expect(!libssl_mapped(), "OpenSSL is loaded before any TLS pool");
    int rc = rp_pool_new(&pool, loop, &opts);
#if RP_HAVE_TLS
    cr_assert_eq(rc, 0);
    cr_expect(libssl_mapped(), "a TLS pool was made without loading OpenSSL");
    cr_expect(rp_tls_available());
    cr_assert_eq(rp_pool_close(pool, NULL, NULL), 0);
    cr_assert_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
#else
    cr_expect_eq(rc, -ENOTSUP);
    cr_expect_null(pool);
    cr_expect(!rp_tls_available());
#endif
    cr_expect_eq(rp_loop_free(loop), 0);
}

#if RP_HAVE_TLS
/* Whether a file whose path has this in it is mapped into this process. */
static bool mapped(const char *name)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    cr_assert(maps);
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, maps))
        found = strstr(line, name) != NULL;
    fclose(maps);
    return found;
}

/* A libssl that cannot be used (here: a library lacking OpenSSL's
 * functions, hiredis's, linked as libssl.so.3 first on LD_LIBRARY_PATH): a
 * TLS pool is -ENOTSUP, rp_tls_available() is false, no pool is made,
 * one line on stderr says why, the
 * library tried is not left mapped, and a pool without TLS works. The
 * loader reads LD_LIBRARY_PATH at start: the check runs in a child
 * started anew with it (this test again, RP_TEST_UNUSABLE_LIBSSL set). */
static void unusable_libssl_child(void)
{
    rp_loop *loop;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = "127.0.0.1:1";
    opts.tls.enable = true;
    rp_pool *pool = NULL;
    for (int i = 0; i < 2; i++) { /* tried once, refused every time */
        cr_expect_eq(rp_pool_new(&pool, loop, &opts), -ENOTSUP);
        cr_expect_null(pool);
        cr_expect(!rp_tls_available(), "TLS said available where a TLS pool is refused");
    }
    cr_expect(!mapped("libhiredis"), "the library that failed to load stays mapped");
    opts.tls.enable = false;
    cr_assert_eq(rp_pool_new(&pool, loop, &opts), 0);
    cr_assert_eq(rp_pool_close(pool, NULL, NULL), 0);
    cr_assert_eq(rp_loop_run(loop, RP_RUN_DEFAULT), 0);
    cr_expect_eq(rp_loop_free(loop), 0);
}

Test(core_header, a_libssl_that_cannot_be_used_is_enotsup)
{
    if (getenv("RP_TEST_UNUSABLE_LIBSSL")) {
        unusable_libssl_child();
        return;
    }
    const char *stand_in = "/usr/lib/x86_64-linux-gnu/libhiredis.so.0.14";
    if (access(stand_in, R_OK) != 0)
        cr_skip_test("no %s to stand in for an unusable libssl", stand_in);
    cr_assert(!mapped("libhiredis"), "this test needs a process without hiredis");
    char dir[] = "/tmp/rp-libssl-XXXXXX", link[64], err[64], self_exe[4096];
    cr_assert(mkdtemp(dir));
    snprintf(link, sizeof link, "%s/%s", dir, "libssl.so.3");
    snprintf(err, sizeof err, "%s/stderr", dir);
    cr_assert_eq(symlink(stand_in, link), 0);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    cr_assert_gt(n, 0);
    self_exe[n] = '\0';
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 2);
        setenv("LD_LIBRARY_PATH", dir, 1);
        setenv("RP_TEST_UNUSABLE_LIBSSL", "1", 1);
        unsetenv("RINGPOOL_QUIET");
        unsetenv("BXFI_MAP"); /* Criterion's: the child is a runner of its own, not this test's worker */
        execl(self_exe, self_exe, "--filter", "core_header/a_libssl_that_cannot_be_used_is_enotsup", "-j1",
              (char *)NULL);
        _exit(127);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    char text[4096] = "";
    FILE *f = fopen(err, "r");
    cr_assert(f);
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = '\0';
    fclose(f);
    unlink(err);
    unlink(link);
    rmdir(dir);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed (%#x):\n%s", status, text);
    const char *line = strstr(text, "ringpool: TLS: cannot load libssl.so.3: ");
    cr_expect(line && strstr(line, "undefined symbol"), "no line says why:\n%s", text);
    cr_expect(line && !strstr(line + 1, "ringpool: TLS: cannot load"), "said more than once:\n%s", text);
}
#endif

#if RP_HAVE_TLS
/* Two threads, each with a loop of its own, make the process's first TLS
 * pools at once: OpenSSL is loaded once, and both pools work. */
static pthread_barrier_t start_together;

static void *make_tls_pool(void *arg)
{
    (void)arg;
    rp_loop *loop;
    if (rp_loop_new(&loop, NULL) != 0)
        return (void *)1;
    rp_pool_options opts;
    rp_pool_options_init(&opts);
    opts.addr = "127.0.0.1:1";
    opts.tls.enable = true;
    opts.tls.insecure = true;
    rp_pool *pool = NULL;
    pthread_barrier_wait(&start_together);
    intptr_t rc = rp_pool_new(&pool, loop, &opts);
    if (rc == 0) {
        rp_pool_close(pool, NULL, NULL);
        rp_loop_run(loop, RP_RUN_DEFAULT);
    }
    rp_loop_free(loop);
    return (void *)rc;
}

Test(core_header, two_threads_loading_openssl_at_once_both_get_it)
{
    cr_expect(!libssl_mapped());
    pthread_barrier_init(&start_together, NULL, 2);
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, make_tls_pool, NULL), 0);
    for (int i = 0; i < 2; i++) {
        void *rc;
        cr_assert_eq(pthread_join(threads[i], &rc), 0);
        cr_expect_eq((intptr_t)rc, 0, "thread %d: %d", i, (int)(intptr_t)rc);
    }
    pthread_barrier_destroy(&start_together);
    cr_expect(libssl_mapped());
}
#endif
