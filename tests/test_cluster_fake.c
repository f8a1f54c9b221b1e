/* rp_cluster against fake nodes of our own (cluster_fixture.c's fxf_*), for
 * what no healthy cluster sends: hostile COMMAND tables and layouts, long
 * host names, a COMMAND that never answers. Each node answers a command
 * it has no script for with its own number ("0", "1", ...), so a test
 * sees where a command went. */
#include "cluster_fixture.h"
#include "fixture.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

TestSuite(cluster_fake, .init = fx_setup_no_redis, .fini = fx_teardown, .timeout = 60);

static rp_loop *loop;
static rp_cluster *cluster;

/* ------------------------------------------------------- RESP building */

typedef struct resp {
    char *buf;
    size_t len, cap;
} resp;

static void resp_add(resp *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (r->len + (size_t)n + 1 > r->cap) {
        r->cap = (r->len + (size_t)n + 1) * 2;
        r->buf = realloc(r->buf, r->cap);
        cr_assert(r->buf);
    }
    va_start(ap, fmt);
    vsnprintf(r->buf + r->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    r->len += (size_t)n;
}

static void resp_bulk(resp *r, const char *text) { resp_add(r, "$%zu\r\n%s\r\n", strlen(text), text); }

/* The head of a COMMAND entry (name, arity, flags, first, last, step, no
 * categories, no tips) up to its array of nspecs key specs; the caller
 * adds the specs, then command_end. */
static void command_start(resp *r, const char *name, bool readonly, long long first, long long last,
                          long long step, int nspecs)
{
    resp_add(r, "*10\r\n");
    resp_bulk(r, name);
    resp_add(r, ":-2\r\n");
    resp_add(r, readonly ? "*1\r\n+readonly\r\n" : "*0\r\n");
    resp_add(r, ":%lld\r\n:%lld\r\n:%lld\r\n*0\r\n*0\r\n*%d\r\n", first, last, step, nspecs);
}

static void command_end(resp *r) { resp_add(r, "*0\r\n"); }

/* A key spec: begin_search by index or keyword, find_keys by range or keynum. */
static void spec_index(resp *r, long long index)
{
    resp_add(r, "*4\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n"
                "*2\r\n$5\r\nindex\r\n:%lld\r\n",
             index);
}

static void spec_keyword(resp *r, const char *keyword, long long startfrom)
{
    resp_add(r, "*4\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$7\r\nkeyword\r\n$4\r\nspec\r\n*4\r\n");
    resp_bulk(r, "keyword");
    resp_bulk(r, keyword);
    resp_add(r, "$9\r\nstartfrom\r\n:%lld\r\n", startfrom);
}

static void spec_range(resp *r, long long lastkey, long long keystep, long long limit)
{
    resp_add(r, "$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n"
                "*6\r\n$7\r\nlastkey\r\n:%lld\r\n$7\r\nkeystep\r\n:%lld\r\n$5\r\nlimit\r\n:%lld\r\n",
             lastkey, keystep, limit);
}

static void spec_keynum(resp *r, long long keynumidx, long long firstkey, long long keystep)
{
    resp_add(r, "$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$6\r\nkeynum\r\n$4\r\nspec\r\n"
                "*6\r\n$9\r\nkeynumidx\r\n:%lld\r\n$8\r\nfirstkey\r\n:%lld\r\n$7\r\nkeystep\r\n:%lld\r\n",
             keynumidx, firstkey, keystep);
}

/* A range of CLUSTER SLOTS: its master, and a replica when replica_port. */
static void slots_range(resp *r, int first, int last, const char *host, int port, int replica_port)
{
    resp_add(r, "*%d\r\n:%d\r\n:%d\r\n*2\r\n", replica_port ? 4 : 3, first, last);
    resp_bulk(r, host);
    resp_add(r, ":%d\r\n", port);
    if (replica_port)
        resp_add(r, "*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n", replica_port);
}

/* ------------------------------------------------------- the fake nodes */

/* What the nodes answer; set before fxf_start, read by its thread. */
static struct {
    resp command;           /* COMMAND's answer; empty: refused */
    resp layout;            /* CLUSTER SLOTS's answer (SHARDS is unknown) */
    bool layout_once;       /* later layout reads fail */
    bool hold_command;      /* COMMAND is never answered */
    atomic_int layouts;     /* SLOTS answered */
    fxf_script other;       /* the rest; NULL: the node's number */
} fake;

static void fake_node(fxf_conn *c, int node, int argc, char argv[][FXF_ARGLEN])
{
    char number[16];
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcasecmp(argv[0], "COMMAND")) {
        if (fake.hold_command)
            return;
        if (fake.command.len)
            fxf_write(c, fake.command.buf, fake.command.len);
        else
            fxf_say(c, "-ERR unknown command 'COMMAND'\r\n");
    } else if (!strcasecmp(argv[0], "CLUSTER") && !strcasecmp(sub, "SLOTS")) {
        if (atomic_fetch_add(&fake.layouts, 1) > 0 && fake.layout_once)
            fxf_say(c, "-ERR no layout for you\r\n");
        else
            fxf_write(c, fake.layout.buf, fake.layout.len);
    } else if (!strcasecmp(argv[0], "CLUSTER")) {
        fxf_say(c, "-ERR unknown subcommand 'shards'. Try CLUSTER HELP.\r\n");
    } else if (!strcasecmp(argv[0], "READONLY") || !strcasecmp(argv[0], "ASKING")) {
        fxf_say(c, "+OK\r\n");
    } else if (fake.other) {
        fake.other(c, node, argc, argv);
    } else {
        snprintf(number, sizeof number, "$1\r\n%d\r\n", node);
        fxf_say(c, number);
    }
}

/* A cluster client seeded with node 0; opts may be NULL (defaults). */
static void client_open(rp_cluster_options *opts)
{
    rp_cluster_options defaults;
    const char *seeds[] = {fxf_addr(0)};
    if (!opts) {
        rp_cluster_options_init(&defaults);
        opts = &defaults;
    }
    opts->seeds = seeds;
    opts->nseeds = 1;
    opts->node.pool.pool_size = 4;
    fxc_client_open(&loop, &cluster, opts);
}

static void all_close(void)
{
    fxc_client_close(loop, cluster);
    fxf_stop();
    free(fake.command.buf);
    free(fake.layout.buf);
}

static rp_cluster_stats stats(void)
{
    rp_cluster_stats st;
    rp_cluster_get_stats(cluster, &st);
    return st;
}

#define RUN(...) \
    fxc_run(loop, cluster, sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *), (const char *[]){__VA_ARGS__})

/* The first "k<n>" whose slot is in [lo, hi]. */
static const char *key_between(int lo, int hi, char *buf, size_t size)
{
    for (int n = 0;; n++) {
        snprintf(buf, size, "k%d", n);
        int slot = rp_cluster_key_slot(buf, strlen(buf));
        if (slot >= lo && slot <= hi)
            return buf;
    }
}

/* ---------------------------------------------------- hostile key specs */

/* Two masters, 0-8191 and 8192-16383. */
static void two_halves(void)
{
    resp_add(&fake.layout, "*2\r\n");
    slots_range(&fake.layout, 0, 8191, "127.0.0.1", fxf_port(0), 0);
    slots_range(&fake.layout, 8192, 16383, "127.0.0.1", fxf_port(1), 0);
}

/* issue 21, finding 2: every integer of a key spec comes from the wire. A
 * spec that makes no sense (out of range, or truncated to a sensible int)
 * is dropped with the command's other specs, and first/last/step route it;
 * before, a negative firstkey or keynumidx read far before argv (SEGV), a
 * begin index of 2^32+1 was taken for 1, keystep 0 for 1, and INT_MAX
 * overflowed an int. */
Test(cluster_fake, key_specs_out_of_range_are_dropped)
{
    fxf_start(2, fake_node);
    two_halves();
    resp *t = &fake.command;
    resp_add(t, "*9\r\n");
    command_start(t, "okx", true, 1, 1, 1, 1); /* sane: argv[1] */
    spec_index(t, 1);
    spec_range(t, 0, 1, 0);
    command_end(t);
    command_start(t, "evalx", false, 3, 3, 1, 1); /* firstkey far before argv */
    spec_index(t, 2);
    spec_keynum(t, 0, -1000000, 1);
    command_end(t);
    command_start(t, "numx", false, 2, 2, 1, 1); /* keynumidx far before argv */
    spec_index(t, 1);
    spec_keynum(t, -1000000, 1, 1);
    command_end(t);
    command_start(t, "getx", true, 2, 2, 1, 1); /* index 2^32 + 1: not 1 */
    spec_index(t, 4294967297LL);
    spec_range(t, 0, 1, 0);
    command_end(t);
    command_start(t, "stepx", false, 2, 2, 1, 1); /* keystep 0 */
    spec_index(t, 1);
    spec_range(t, -1, 0, 0);
    command_end(t);
    command_start(t, "lastx", false, 1, 1, 1, 1); /* lastkey INT_MAX */
    spec_index(t, 2);
    spec_range(t, 2147483647LL, 1, 0);
    command_end(t);
    command_start(t, "limitx", false, 3, 3, 1, 1); /* a limit the server asserts against */
    spec_index(t, 1);
    spec_range(t, -2, 1, 2);
    command_end(t);
    command_start(t, "kwx", false, 1, 1, 1, 1); /* startfrom 2^32 + 1: not 1 */
    spec_keyword(t, "KEYS", 4294967297LL);
    spec_range(t, 0, 1, 0);
    command_end(t);
    command_start(t, "legx", false, 4294967298LL, 4294967298LL, 1, 0); /* first 2^32 + 2: not 2 */
    command_end(t);
    client_open(NULL);

    char k0[16], k1[16];
    key_between(0, 8191, k0, sizeof k0);
    key_between(8192, 16383, k1, sizeof k1);
    for (int half = 0; half < 2; half++) {
        const char *key = half ? k1 : k0, *other = half ? k0 : k1, *want = half ? "1" : "0";
        const char *cmds[][5] = {
            {"OKX", key},
            {"EVALX", "return 1", "1", key},
            {"NUMX", "1", key},
            {"GETX", other, key},
            {"STEPX", other, key},
            {"LASTX", key, other},
            {"LIMITX", other, other, key},
            {"KWX", key, "KEYS", other},
        };
        for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
            int argc = 0;
            while (argc < 5 && cmds[i][argc])
                argc++;
            fx_result r = fxc_run(loop, cluster, argc, cmds[i]);
            cr_expect_eq(r.status, 0, "%s: %s", cmds[i][0], rp_strerror(r.status));
            cr_expect_str_eq(r.str, want, "%s %s went to node %s", cmds[i][0], key, r.str);
        }
        fx_result legx = RUN("LEGX", other, key);
        cr_expect_eq(legx.status, 0, "LEGX: %s", rp_strerror(legx.status));
    }
    all_close();
}

/* ------------------------------------------------------------- redirects */

/* Node 1 is node 0's replica; node 2 took the slot: both others say so. */
static void moved_to_node_2(fxf_conn *c, int node, int argc, char argv[][FXF_ARGLEN])
{
    char text[128];
    if (node == 2)
        snprintf(text, sizeof text, "$1\r\n2\r\n");
    else
        snprintf(text, sizeof text, "-MOVED %d %s\r\n", rp_cluster_key_slot(argv[1], strlen(argv[1])), fxf_addr(2));
    fxf_say(c, text);
}

/* issue 21 (suspected): MOVED gave the slot a new master but left it in
 * its old shard, so with read_from_replicas every read of the slot went
 * to the old master's replica (and was moved again) until a layout read
 * landed. Here no later layout read succeeds: the window stays open. */
Test(cluster_fake, moved_slot_leaves_the_old_shards_replicas)
{
    fxf_start(3, fake_node);
    fake.other = moved_to_node_2;
    fake.layout_once = true;
    resp_add(&fake.layout, "*2\r\n");
    slots_range(&fake.layout, 0, 16382, "127.0.0.1", fxf_port(0), fxf_port(1));
    slots_range(&fake.layout, 16383, 16383, "127.0.0.1", fxf_port(2), 0);
    resp_add(&fake.command, "*1\r\n");
    command_start(&fake.command, "get", true, 1, 1, 1, 0);
    command_end(&fake.command);
    rp_cluster_options opts;
    rp_cluster_options_init(&opts);
    opts.read_from_replicas = true;
    client_open(&opts);
    for (int i = 0; i < 3; i++) {
        fx_result r = RUN("GET", "k");
        cr_assert_eq(r.status, 0, "%s", rp_strerror(r.status));
        cr_assert_str_eq(r.str, "2");
        if (i == 0)
            fx_run_for(loop, 300); /* the layout read MOVED asked for fails */
    }
    cr_expect_eq(fxf_seen(1, "GET"), 1, "the old shard's replica got %d reads", fxf_seen(1, "GET"));
    cr_expect_eq(fxf_seen(0, "GET"), 0);
    cr_expect_eq(stats().moved, 1);
    cr_expect_geq(stats().refresh_errors, 1, "the layout read after MOVED did not fail");
    all_close();
}

/* A host name of 200 digits that getaddrinfo reads as 127.0.0.1 (inet_aton's
 * octal: 0...0177.0.0.1), as a cluster announcing host names
 * (cluster-preferred-endpoint-type hostname) may use names past 64 bytes. */
static char long_host[256];

static const char *long_name(void)
{
    memset(long_host, '0', 200);
    snprintf(long_host + 200, sizeof long_host - 200, "177.0.0.1");
    return long_host;
}

static void moved_to_long_name(fxf_conn *c, int node, int argc, char argv[][FXF_ARGLEN])
{
    char text[512];
    if (node == 1)
        snprintf(text, sizeof text, "$5\r\nthere\r\n");
    else
        snprintf(text, sizeof text, "-MOVED %d %s:%d\r\n", rp_cluster_key_slot(argv[1], strlen(argv[1])), long_host,
                 fxf_port(1));
    fxf_say(c, text);
}

/* issue 21 (suspected): node addresses of 64 bytes or more were refused,
 * in a layout (the node dropped) and in MOVED/ASK (not followed). */
Test(cluster_fake, host_names_past_64_bytes)
{
    fxf_start(2, fake_node);
    fake.other = moved_to_long_name;
    long_name();
    resp_add(&fake.layout, "*2\r\n");
    slots_range(&fake.layout, 0, 8191, "127.0.0.1", fxf_port(0), 0);
    slots_range(&fake.layout, 8192, 16383, long_host, fxf_port(1), 0);
    client_open(NULL);
    char k0[16], k1[16];
    fx_result r = RUN("GET", key_between(0, 8191, k0, sizeof k0));
    cr_assert_eq(r.status, 0, "%s", rp_strerror(r.status));
    cr_assert_str_eq(r.str, "there", "MOVED to a long name: %s", r.str);
    cr_assert_eq(stats().moved, 1);
    r = RUN("GET", key_between(8192, 16383, k1, sizeof k1));
    cr_assert_str_eq(r.str, "there", "a long name in the layout: %s", r.str);
    cr_assert_eq(stats().moved, 1);
    char want[300];
    snprintf(want, sizeof want, "%s:%d", long_host, fxf_port(1));
    rp_cluster_node_info info[4];
    int n = rp_cluster_nodes(cluster, info, 4);
    bool listed = false;
    for (int i = 0; i < n && i < 4; i++)
        listed |= !strcmp(info[i].addr, want);
    cr_expect(listed, "rp_cluster_nodes does not list the long name whole");
    all_close();
}

/* ------------------------------------------------------- hostile layouts */

/* The largest single allocation the library asks for. */
static atomic_size_t largest;
static void note(size_t size)
{
    size_t was = atomic_load(&largest);
    while (size > was && !atomic_compare_exchange_weak(&largest, &was, size))
        ;
}
static void *count_malloc(size_t size) { note(size); return malloc(size); }
static void *count_realloc(void *p, size_t size) { note(size); return realloc(p, size); }
static void *count_calloc(size_t n, size_t size) { note(n * size); return calloc(n, size); }

/* issue 21 (suspected): a shard record was allocated for every top-level
 * element before it was looked at: 100000 empty arrays (400 KB) cost
 * 58 MB at once. Records are made for shards found, as they are found. */
Test(cluster_fake, layout_of_empty_elements_allocates_nothing_for_them)
{
    cr_assert_eq(rp_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
    fxf_start(1, fake_node);
    resp_add(&fake.layout, "*100000\r\n");
    for (int i = 0; i < 100000; i++)
        resp_add(&fake.layout, "*0\r\n");
    client_open(NULL);
    fx_result r = RUN("GET", "k");
    cr_expect_eq(r.status, RP_ECLUSTERDOWN, "%s", rp_strerror(r.status));
    /* The connection's receive buffer for the 400 KB reply takes 1 MiB;
     * a record per element took 58 MB. */
    cr_expect_lt(atomic_load(&largest), (size_t)8 << 20, "allocated %zu bytes at once", atomic_load(&largest));
    all_close();
}

/* issue 21 (suspected): shard numbers were kept in 16 bits, so the 65537th
 * shard was shard 1 again. No cluster names more nodes than slots: such a
 * layout is refused, and quickly. */
Test(cluster_fake, layout_of_more_shards_than_slots_is_refused)
{
    fxf_start(2, fake_node);
    int ranges = 65537;
    resp_add(&fake.layout, "*%d\r\n", ranges);
    for (int i = 0; i < ranges - 1; i++) {
        char host[32];
        snprintf(host, sizeof host, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        slots_range(&fake.layout, 0, 0, host, 7000, 0);
    }
    slots_range(&fake.layout, 0, 16383, "127.0.0.1", fxf_port(1), 0);
    client_open(NULL);
    uint64_t start = fx_now_ms();
    fx_result r = RUN("GET", "k");
    cr_expect_eq(r.status, RP_ECLUSTERDOWN, "%s \"%s\"", rp_strerror(r.status), r.str);
    cr_expect_lt(fx_now_ms() - start, 5000);
    cr_expect_eq(fxf_seen(-1, "GET"), 0);
    all_close();
}

/* Each node a layout names costs a node client: 2000 shards of 8 replicas
 * (18000 nodes, 500 KB on the wire) would cost some 60 MB of them. */
Test(cluster_fake, layout_naming_more_nodes_than_slots_is_refused)
{
    fxf_start(1, fake_node);
    int shards = 2000;
    resp_add(&fake.layout, "*%d\r\n", shards);
    for (int i = 0; i < shards; i++) {
        resp_add(&fake.layout, "*11\r\n:%d\r\n:%d\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n", i, i, i ? 1 + i : fxf_port(0));
        for (int r = 0; r < 8; r++)
            resp_add(&fake.layout, "*2\r\n$8\r\n10.0.0.%d\r\n:%d\r\n", r, 1 + i);
    }
    client_open(NULL);
    fx_result r = RUN("GET", "k");
    cr_expect_eq(r.status, RP_ECLUSTERDOWN, "%s \"%s\"", rp_strerror(r.status), r.str);
    cr_expect_eq(fxf_seen(-1, "GET"), 0);
    all_close();
}

/* At the limit, 16384 masters of one slot each: the layout is applied in
 * time linear in its nodes (each node looked up by a hash of its address;
 * a scan of the nodes so far took 11 s here, every layout read). */
Test(cluster_fake, layout_of_16384_masters_is_applied_quickly)
{
    fxf_start(2, fake_node);
    resp_add(&fake.layout, "*%d\r\n", RP_CLUSTER_SLOTS);
    for (int i = 0; i < RP_CLUSTER_SLOTS - 1; i++) {
        char host[32];
        snprintf(host, sizeof host, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        slots_range(&fake.layout, i, i, host, 7000, 0);
    }
    slots_range(&fake.layout, RP_CLUSTER_SLOTS - 1, RP_CLUSTER_SLOTS - 1, "127.0.0.1", fxf_port(1), 0);
    client_open(NULL);
    uint64_t start = fx_now_ms();
    char key[16];
    fx_result r = RUN("GET", key_between(RP_CLUSTER_SLOTS - 1, RP_CLUSTER_SLOTS - 1, key, sizeof key));
    uint64_t took = fx_now_ms() - start;
    cr_expect_eq(r.status, 0, "%s", rp_strerror(r.status));
    cr_expect_str_eq(r.str, "1");
    cr_expect_lt(took, 4000, "the layout took %lu ms", (unsigned long)took);
    rp_cluster_node_info *info = calloc(RP_CLUSTER_SLOTS + 1, sizeof *info);
    cr_assert_eq(rp_cluster_nodes(cluster, info, RP_CLUSTER_SLOTS + 1), RP_CLUSTER_SLOTS);
    for (int i = 0; i < RP_CLUSTER_SLOTS; i++)
        cr_assert(info[i].master && info[i].slots == 1, "%s: %d slots", info[i].addr, info[i].slots);
    cr_assert_eq(rp_cluster_nodes(cluster, info, 1), RP_CLUSTER_SLOTS);
    cr_assert_eq(info[0].slots, 1);
    free(info);
    all_close();
}

/* ------------------------------------------------------------- COMMAND */

/* issue 21 (suspected): while COMMAND had failed, every layout read asked
 * it again and new commands waited for that answer. Once one COMMAND has
 * failed, commands route by the fallback rule and never wait for it; it
 * is asked again with a backoff. */
Test(cluster_fake, failed_command_table_holds_no_command_back)
{
    fxf_start(1, fake_node);
    fake.hold_command = true;
    resp_add(&fake.layout, "*1\r\n");
    slots_range(&fake.layout, 0, 16383, "127.0.0.1", fxf_port(0), 0);
    rp_cluster_options opts;
    rp_cluster_options_init(&opts);
    opts.refresh_interval_ms = 100;
    opts.node.pool.read_timeout_ms = 1500;
    opts.node.max_retries = 0;
    client_open(&opts);
    fx_result first = RUN("GET", "k"); /* waits for the first COMMAND: it fails */
    cr_assert_str_eq(first.str, "0");
    uint64_t until = fx_now_ms() + 3500, slowest = 0;
    while (fx_now_ms() < until) {
        uint64_t start = fx_now_ms();
        fx_result r = RUN("GET", "k");
        cr_assert_str_eq(r.str, "0");
        uint64_t took = fx_now_ms() - start;
        slowest = took > slowest ? took : slowest;
        fx_run_for(loop, 50);
    }
    cr_expect_lt(slowest, 700, "a GET waited %lu ms for COMMAND", (unsigned long)slowest);
    cr_expect_leq(fxf_seen(0, "COMMAND"), 3, "COMMAND asked %d times in 5 s", fxf_seen(0, "COMMAND"));
    all_close();
}

/* The node password the cluster keeps is zeroed before its memory is
 * freed, as rp_client's is: every block the library frees is scanned. */
#define SECRET "cl-s3cr3t-0123"

Test(cluster_fake, the_node_password_is_zeroed_before_its_memory_is_freed)
{
    fx_secret_frees_begin(SECRET);
    char seed[32];
    snprintf(seed, sizeof seed, "127.0.0.1:%d", fx_closed_port());
    const char *seeds[] = {seed};
    rp_cluster_options opts;
    rp_cluster_options_init(&opts);
    opts.seeds = seeds;
    opts.nseeds = 1;
    opts.node.password = SECRET;
    cr_assert_eq(rp_loop_new(&loop, NULL), 0);
    cr_assert_eq(rp_cluster_new(&cluster, loop, &opts), 0);
    fx_run_for(loop, 50);
    int closed = 0;
    cr_assert_eq(rp_cluster_close(cluster, fxc_closed_cb, &closed), 0);
    cr_assert(fx_run_until_count(loop, &closed, 1, 5000));
    cr_assert_eq(rp_loop_free(loop), 0);
    int frees = fx_secret_frees_end();
    cr_expect_eq(frees, 0, "%d blocks freed with the password in them", frees);
}
