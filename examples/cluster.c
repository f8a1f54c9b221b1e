/* cluster: a Redis Cluster through rp_cluster, from one seed node. Keys
 * on different masters, a multi-key command kept on one slot by a hash
 * tag, a cross-slot command refused before it is sent, and which node
 * serves what. */
#include <ringpool.h>

#include "common.h"

static const char usage[] =
    "usage: cluster [-a ADDR]\n"
    "  Connects to a Redis Cluster through one of its nodes, SETs and GETs\n"
    "  keys that land on different masters, MSETs and MGETs two keys that\n"
    "  share a {hash tag}, shows a cross-slot MGET refused before it is sent,\n"
    "  and prints each node's role, slots and connections.\n"
    "  -a ADDR  host:port of any node, the seed (default 127.0.0.1:7000)\n";

/* Slots 8555, 13809 and 2342: one in each third of the slot space, so one
 * on each master of a three-master cluster made by redis-cli --cluster
 * create. */
static const struct {
    const char *key, *value;
} fruits[] = {{"fruit:apple", "green"}, {"fruit:banana", "yellow"}, {"fruit:cherry", "red"}};

static int failures;

typedef struct call {
    const char *what;   /* printed before the reply */
    const char *expect; /* the reply as text: a mismatch is a failure */
    bool done;
} call;

/* A reply as one line of text: strings, integers and nil, and arrays of
 * them (MGET's) as [a, b]. */
static void reply_text(const redisReply *reply, char *out, size_t size)
{
    if (reply->type == REDIS_REPLY_ARRAY) {
        size_t used = (size_t)snprintf(out, size, "[");
        for (size_t i = 0; i < reply->elements && used < size; i++) {
            reply_text(reply->element[i], out + used, size - used);
            used += strlen(out + used);
            if (i + 1 < reply->elements && used < size)
                used += (size_t)snprintf(out + used, size - used, ", ");
        }
        if (used < size)
            snprintf(out + used, size - used, "]");
    } else if (reply->type == REDIS_REPLY_INTEGER) {
        snprintf(out, size, "%lld", reply->integer);
    } else if (reply->type == REDIS_REPLY_NIL) {
        snprintf(out, size, "(nil)");
    } else {
        snprintf(out, size, "%s%.*s", reply->type == REDIS_REPLY_ERROR ? "(error) " : "", (int)reply->len,
                 reply->str ? reply->str : "");
    }
}

static void on_reply(rp_cluster *cluster, const redisReply *reply, int status, void *data)
{
    (void)cluster;
    call *c = data;
    char text[256] = "";
    if (status == 0)
        reply_text(reply, text, sizeof text);
    printf("%s: %s\n", c->what, status < 0 ? rp_strerror(status) : text);
    failures += status < 0 || strcmp(text, c->expect) != 0;
    c->done = true;
}

/* Sends one command and runs the loop until its reply has been checked:
 * one at a time, so the output reads in order. An application would send
 * them all at once; each goes to its own node. */
static void run(rp_loop *loop, rp_cluster *cluster, const char *expect, int argc, const char *const *argv)
{
    char what[128] = "";
    for (int i = 0; i < argc; i++)
        snprintf(what + strlen(what), sizeof what - strlen(what), "%s%s", i ? " " : "", argv[i]);
    call c = {.what = what, .expect = expect};
    int rc = rp_cluster_command(cluster, on_reply, &c, argc, argv, NULL);
    if (rc < 0)
        on_reply(cluster, NULL, rc, &c);
    while (!c.done)
        rp_loop_run(loop, RP_RUN_ONCE);
}

static void on_ping(rp_cluster *cluster, const redisReply *reply, int status, void *data)
{
    (void)cluster;
    (void)reply;
    *(int *)data = status < 0 ? status : 1;
}

/* The first command waits for the cluster's layout, read from the seed; a
 * PING (no keys: any master) tells when it has come, or that no seed gave
 * one. The seed's pool tells a refused or failed dial from a server that
 * answered without a layout (cluster support disabled). */
static int wait_for_layout(rp_loop *loop, rp_cluster *cluster, const char *seed)
{
    int ready = 0, rc = rp_cluster_command(cluster, on_ping, &ready, 1, (const char *[]){"PING"}, NULL);
    while (rc == 0 && !ready)
        rp_loop_run(loop, RP_RUN_ONCE);
    rc = rc < 0 ? rc : ready < 0 ? ready : 0;
    rp_cluster_node_info node;
    if (rc < 0 && rp_cluster_nodes(cluster, &node, 1) == 1 && node.stats.last_dial_error)
        fprintf(stderr, "cluster: cannot reach the seed %s: %s\n", seed, rp_strerror(node.stats.last_dial_error));
    else if (rc < 0)
        fprintf(stderr, "cluster: no cluster layout from the seed %s (is it a cluster node?): %s\n", seed,
                rp_strerror(rc));
    return rc;
}

/* Each key goes to the master of its slot, on a connection of that
 * node's own pool. */
static void keys_on_different_masters(rp_loop *loop, rp_cluster *cluster)
{
    for (size_t i = 0; i < sizeof fruits / sizeof fruits[0]; i++) {
        const char *key = fruits[i].key;
        printf("%s is in slot %d\n", key, rp_cluster_key_slot(key, strlen(key)));
        run(loop, cluster, "OK", 3, (const char *[]){"SET", key, fruits[i].value});
        run(loop, cluster, fruits[i].value, 2, (const char *[]){"GET", key});
    }
}

/* Only the part in braces is hashed: both keys share slot 10778 and one
 * node serves the whole command. */
static void hash_tag(rp_loop *loop, rp_cluster *cluster)
{
    const char *name = "{user:1}name";
    printf("{user:1}name and {user:1}email are in slot %d\n", rp_cluster_key_slot(name, strlen(name)));
    run(loop, cluster, "OK", 5,
        (const char *[]){"MSET", "{user:1}name", "Ada", "{user:1}email", "ada@example.com"});
    run(loop, cluster, "[Ada, ada@example.com]", 3, (const char *[]){"MGET", "{user:1}name", "{user:1}email"});
}

/* The keys hash to different slots, which a cluster refuses in one
 * command (CROSSSLOT) even when one node serves both: rp_cluster refuses
 * it at once, before anything is sent. */
static void cross_slot(rp_loop *loop, rp_cluster *cluster)
{
    call c = {.what = "MGET, sent after all", .expect = ""};
    int rc = rp_cluster_command(cluster, on_reply, &c, 3, (const char *[]){"MGET", fruits[0].key, fruits[1].key},
                                NULL);
    printf("MGET %s %s: %s\n", fruits[0].key, fruits[1].key, rc < 0 ? rp_strerror(rc) : "accepted");
    failures += rc != RP_ECROSSSLOT;
    while (rc == 0 && !c.done) /* its callback must run before c goes */
        rp_loop_run(loop, RP_RUN_ONCE);
}

static void print_nodes(const rp_cluster *cluster)
{
    rp_cluster_node_info nodes[64];
    int count = rp_cluster_nodes(cluster, nodes, 64);
    printf("%-22s %-7s %6s %12s\n", "node", "role", "slots", "connections");
    for (int i = 0; i < count && i < 64; i++)
        printf("%-22s %-7s %6d %12u\n", nodes[i].addr, nodes[i].master ? "master" : "replica", nodes[i].slots,
               nodes[i].stats.total_conns);
    rp_cluster_stats st;
    rp_cluster_get_stats(cluster, &st);
    printf("MOVED %llu, ASK %llu, retries %llu, layouts read %llu\n", (unsigned long long)st.moved,
           (unsigned long long)st.asked, (unsigned long long)st.retries, (unsigned long long)st.refreshes);
}

static void on_closed(rp_cluster *cluster, void *data)
{
    (void)cluster;
    *(bool *)data = true;
}

int main(int argc, char **argv)
{
    example_args args = {.addr = "127.0.0.1:7000"};
    example_parse(argc, argv, &args, usage);
    rp_loop *loop;
    rp_cluster *cluster = NULL;
    rp_cluster_options opts;
    rp_cluster_options_init(&opts);
    opts.seeds = &args.addr;
    opts.nseeds = 1;
    int rc = rp_loop_new(&loop, NULL);
    if (rc == 0)
        rc = rp_cluster_new(&cluster, loop, &opts);
    if (rc < 0) {
        fprintf(stderr, "cluster: %s: %s\n", args.addr, rp_strerror(rc));
        return 1;
    }
    if (wait_for_layout(loop, cluster, args.addr) == 0) {
        keys_on_different_masters(loop, cluster);
        hash_tag(loop, cluster);
        cross_slot(loop, cluster);
        print_nodes(cluster);
    } else {
        failures++;
    }
    /* Graceful: commands still at a node finish there first. */
    bool closed = false;
    rp_cluster_close(cluster, on_closed, &closed);
    rp_loop_run(loop, RP_RUN_DEFAULT);
    rp_loop_free(loop);
    return failures || !closed ? 1 : 0;
}
