/* rp_cluster: Redis Cluster over one rp_client per node, all on one loop.
 * A command is routed by its keys' slot (keyspec.c) to the slot's master
 * (or a replica), and follows MOVED and ASK to where its slot went. The
 * layout (topology.c) is read at start, after redirects and failures
 * (at most one read in flight, rate-limited) and periodically. The node
 * clients do the sending and their own retries; the cluster adds the
 * retries a cluster needs, bounded by max_redirects. */
#include "client.h"
#include "keyspec.h"
#include "retry.h"
#include "tls.h"
#include "topology.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_REFRESH_INTERVAL_MS 5000u
#define MIN_REFRESH_GAP_NS (100 * RP__NS_PER_MS)
#define RECENT_FAILURE_NS (1000 * RP__NS_PER_MS)
#define KEYS_RETRY_MIN_NS (1000 * RP__NS_PER_MS) /* after a failed COMMAND, doubling */
#define KEYS_RETRY_MAX_NS (64000 * RP__NS_PER_MS)

typedef struct cnode {
    rp_cluster *cluster;
    rp__link link;           /* cluster->nodes */
    struct cnode *same_hash; /* the next in its cluster->by_addr bucket */
    char addr[RP__ADDR_MAX];
    rp_client *client;
    bool master;
    bool listed;  /* in the topology being applied */
    bool closing; /* left the topology: its client is closing */
    bool superseded; /* a node of the same address took its place: closed once the layout is applied */
    char *name;   /* over TLS, the host name it announced: its client's server name; NULL: the option's */
    uint64_t failed_ns;     /* its last failure, 0 if none */
    uint64_t asked_refresh; /* the refresh that last asked it */
    uint8_t *slots_gone;    /* with caches: slots that just left it (a bit each), or NULL */
    int info_index;         /* its entry in rp_cluster_nodes's answer, -1: none */
} cnode;

typedef struct cshard {
    cnode *master;
    cnode *replicas[RP__MAX_REPLICAS];
    int nreplicas;
    unsigned next; /* round-robin among the replicas */
} cshard;

/* CC_STARTING: registered, its command_start hook running, not yet routed. */
typedef enum { CC_WAITING, CC_AT_NODE, CC_BACKOFF, CC_DONE, CC_STARTING } ccmd_state;

typedef struct ccmd {
    rp_cluster *cluster;
    rp__link link;      /* cluster->cmds */
    rp__link wait_link; /* cluster->waiting, while CC_WAITING */
    rp_cluster_reply_cb cb;
    void *data;
    int argc;
    const char **argv; /* copies, lent to each node's attempt */
    size_t *argvlen;
    /* The record and its copies: a reference for the command until it
     * ends, and one for each batch on a node's connection that sends some
     * of them from the copies themselves (rp__client_attempt), until that
     * send has completed. Its bytes go out from this one copy to every
     * node it is sent to (MOVED, ASK, retries), and a command ended while
     * they are on their way (cancel, deadline, close) keeps them. */
    rp__hold hold;
    unsigned flags;
    int key_index;
    uint32_t cache_ttl_ms; /* RP_CMD_CACHE */
    int slot;            /* RP__NO_KEYS: any master */
    bool routed;         /* slot and readonly are known */
    bool readonly;
    bool avoid_replicas; /* a replica failed it: the master serves it now */
    int redirects;
    ccmd_state state;
    cnode *node;         /* while CC_AT_NODE */
    int64_t node_id;
    cnode *redirect;     /* after MOVED or ASK: the next send goes there, */
    bool asking;         /* with ASKING (ASK) */
    int abandoned;       /* cancelled or timed out at a node: its status */
    int64_t id;
    uint64_t started_ns; /* for the command_end hook, when one is set */
    rp__timer backoff;
    rp__timer deadline;
    rp__deferred finish;
    int status;
} ccmd;

struct rp_cluster {
    rp_loop *loop;
    rp_client_options node_opts; /* its strings are the cluster's copies */
    char **seeds;
    int nseeds;
    int max_redirects;
    bool read_from_replicas;
    uint64_t refresh_interval_ns;
    rp__list nodes;
    int nodes_open;  /* node clients not yet closed */
    cnode **by_addr; /* the same nodes, hashed by address: a layout of n nodes is applied in O(n) */
    size_t nbuckets; /* a power of two, at least nodes_open */
    cnode *slot_master[RP_CLUSTER_SLOTS];
    uint16_t slot_shard[RP_CLUSTER_SLOTS]; /* shards index + 1; 0: none */
    cshard *shards;
    int nshards;
    rp__keyspec_table keys;
    rp__readonly_table readonly; /* from the same COMMAND, for every node client */
    bool keys_pending; /* COMMAND asked; until one has failed, commands wait for its answer */
    bool keys_loaded;  /* answered, or refused: the fallback rule stays */
    uint64_t keys_retry_ns;   /* after a failure: not asked again before then */
    uint64_t keys_backoff_ns; /* the wait after the next failure */
    bool have_topology;
    bool refreshing;
    bool refresh_wanted; /* asked for while one was in flight */
    bool use_slots;      /* the server has no CLUSTER SHARDS */
    uint64_t refresh_count;
    uint64_t refresh_started_ns;
    rp__timer refresh_soon;
    rp__timer refresh_periodic;
    rp__list cmds;
    rp__list waiting; /* for the first topology */
    int64_t last_id;
    rp_cluster_stats stats;
    rp_cache_stats caches_closed; /* node caches' counters, of clients closed */
    rp__list spare_hits;          /* records of ended hits (cluster_hit), for the next ones */
    rp_hooks hooks;
    bool closing;
    bool finished;
    rp_cluster_close_cb close_cb;
    void *close_data;
    rp__deferred close_item;
};

static void refresh_request(rp_cluster *c);
static void cmd_dispatch(ccmd *cmd);
static void cmd_fail_later(ccmd *cmd, int status);
static void maybe_finish_close(rp_cluster *c);

/* ---------------------------------------------------------------- nodes */

static cnode **bucket_of(rp_cluster *c, const char *addr)
{
    return &c->by_addr[rp__addr_hash(addr) & (c->nbuckets - 1)];
}

static cnode *node_find(rp_cluster *c, const char *addr)
{
    for (cnode *node = c->nbuckets ? *bucket_of(c, addr) : NULL; node; node = node->same_hash)
        if (!node->closing && !node->superseded && !strcmp(node->addr, addr))
            return node;
    return NULL;
}

/* Room in by_addr for one more node: twice the buckets when full. */
static int by_addr_reserve(rp_cluster *c)
{
    if ((size_t)c->nodes_open < c->nbuckets)
        return 0;
    size_t grown = c->nbuckets ? c->nbuckets * 2 : 16;
    cnode **buckets = rp__calloc(grown, sizeof *buckets);
    if (!buckets)
        return -ENOMEM;
    rp__free(c->by_addr);
    c->by_addr = buckets;
    c->nbuckets = grown;
    for (rp__link *link = c->nodes.head; link; link = link->next) {
        cnode *node = RP__CONTAINER_OF(link, cnode, link), **bucket = bucket_of(c, node->addr);
        node->same_hash = *bucket;
        *bucket = node;
    }
    return 0;
}

/* The cluster's hooks but those it calls itself, once per command. */
static void node_set_hooks(cnode *node)
{
    rp_hooks hooks = node->cluster->hooks;
    hooks.command_start = NULL;
    hooks.command_end = NULL;
    rp_client_set_hooks(node->client, &hooks);
}

static bool cluster_tls(const rp_cluster *c)
{
    return c->node_opts.pool.tls.enable || c->node_opts.pool.tls.ssl_ctx;
}

/* A new node at addr with a client of its own, whose TLS server name is
 * name if not NULL; NULL without memory (or for an address the client
 * rejects). */
static cnode *node_new(rp_cluster *c, const char *addr, const char *name, int *error)
{
    if (strlen(addr) >= RP__ADDR_MAX) {
        *error = -EINVAL;
        return NULL;
    }
    cnode *node = by_addr_reserve(c) == 0 ? rp__calloc(1, sizeof *node) : NULL;
    if (!node || (name && !(node->name = rp__strdup(name)))) {
        rp__free(node);
        *error = -ENOMEM;
        return NULL;
    }
    memcpy(node->addr, addr, strlen(addr) + 1);
    rp_client_options opts = c->node_opts;
    opts.pool.addr = node->addr;
    if (name)
        opts.pool.tls.server_name = name;
    *error = rp_client_new(&node->client, c->loop, &opts);
    if (*error < 0) {
        rp__free(node->name);
        rp__free(node);
        return NULL;
    }
    node->client->readonly_conns = c->read_from_replicas;
    node->client->readonly = &c->readonly; /* the cluster reads COMMAND once */
    node->client->readonly_requested = true;
    rp__cache_by_slot(node->client->cache);
    node->cluster = c;
    node_set_hooks(node);
    c->nodes_open++;
    rp__list_push_back(&c->nodes, &node->link);
    cnode **bucket = bucket_of(c, node->addr);
    node->same_hash = *bucket;
    *bucket = node;
    return node;
}

/* The node at addr, new if there is none: seeds and redirect targets,
 * which name no host (a new one's server name is the option's). */
static cnode *node_get(rp_cluster *c, const char *addr, int *error)
{
    cnode *node = node_find(c, addr);
    return node ? node : node_new(c, addr, NULL, error);
}

/* The node a layout lists. Over TLS the name it announces is the name
 * its certificate is verified against (else the option's): a node made
 * before it was known (a seed, a redirect's target) or that announces
 * another name now gives its place to a new one. */
static cnode *node_listed(rp_cluster *c, const rp__node_desc *desc, int *error)
{
    cnode *node = node_find(c, desc->addr);
    if (!cluster_tls(c))
        return node ? node : node_new(c, desc->addr, NULL, error);
    if (node && (node->name && desc->name ? !strcmp(node->name, desc->name) : node->name == desc->name))
        return node;
    cnode *fresh = node_new(c, desc->addr, desc->name, error);
    if (fresh && node)
        node->superseded = true; /* not listed: topology_apply closes it */
    return fresh;
}

static void cache_stats_add(rp_cache_stats *sum, const rp_cache_stats *add)
{
    sum->hits += add->hits;
    sum->misses += add->misses;
    sum->invalidations += add->invalidations;
    sum->evictions += add->evictions;
    sum->flushes += add->flushes;
    sum->expired += add->expired;
    sum->joined += add->joined;
    sum->bytes += add->bytes;
    sum->entries += add->entries;
}

static void node_closed(rp_client *client, void *data)
{
    cnode *node = data;
    rp_cluster *c = node->cluster;
    rp_cache_stats cs;
    if (rp_client_cache_stats(client, &cs) == 0) {
        cs.bytes = cs.entries = 0; /* held no more */
        cache_stats_add(&c->caches_closed, &cs);
    }
    rp__list_unlink(&c->nodes, &node->link);
    cnode **at = bucket_of(c, node->addr);
    while (*at != node)
        at = &(*at)->same_hash;
    *at = node->same_hash;
    rp__free(node->name);
    rp__free(node->slots_gone);
    rp__free(node);
    c->nodes_open--;
    maybe_finish_close(c);
}

/* Commands at the node finish there; those not yet sent come back with
 * RP_ECLOSED and may_retry, and go where their slot is now. */
static void node_close(cnode *node)
{
    node->closing = true;
    rp_client_close(node->client, node_closed, node);
}

static bool recently_failed(const cnode *node, uint64_t now)
{
    return node->failed_ns && now - node->failed_ns < RECENT_FAILURE_NS;
}

/* A failure of the node, not of this client's own limits or of one reply. */
static void node_failed(cnode *node, int status)
{
    if (status == RP_ECLOSED || status == -ECANCELED || status == -ENOMEM || status == RP_EPOOLTIMEOUT ||
        status == RP_EPOOLEXHAUSTED || status == -EMSGSIZE)
        return;
    node->failed_ns = rp__loop_now(node->cluster->loop);
    refresh_request(node->cluster);
}

/* ------------------------------------------------------------- topology */

/* With node caches: a slot whose master changes leaves the old master's
 * cache, whose server no longer tells of the slot's keys (cached reads go
 * to masters only: replicas' caches hold nothing). Noted here, dropped by
 * slots_drop; without memory for the note, that cache empties at once. */
static void slot_leaves(rp_cluster *c, int slot, const cnode *to)
{
    cnode *from = c->slot_master[slot];
    if (!c->node_opts.cache_bytes || !from || from == to)
        return;
    if (!from->slots_gone && !(from->slots_gone = rp__calloc(RP_CLUSTER_SLOTS / 8, 1))) {
        rp__cache_drop_slots(from->client->cache, NULL);
        return;
    }
    from->slots_gone[slot / 8] |= (uint8_t)(1u << (slot % 8));
}

/* Each node's cache drops the keys of the slots that left it: one pass
 * over its keys, however many slots went. */
static void slots_drop(rp_cluster *c)
{
    if (!c->node_opts.cache_bytes)
        return;
    for (rp__link *link = c->nodes.head; link; link = link->next) {
        cnode *node = RP__CONTAINER_OF(link, cnode, link);
        if (node->slots_gone) {
            rp__cache_drop_slots(node->client->cache, node->slots_gone);
            rp__free(node->slots_gone);
            node->slots_gone = NULL;
        }
    }
}

static int shards_build(rp_cluster *c, const rp__topology *topo, cshard *shards)
{
    int error = 0;
    for (int i = 0; i < topo->nshards; i++) {
        const rp__shard_desc *desc = &topo->shards[i];
        if (!(shards[i].master = node_listed(c, &desc->master, &error)))
            return error;
        shards[i].master->listed = shards[i].master->master = true;
        for (int r = 0; r < desc->nreplicas; r++) {
            cnode *replica = node_listed(c, &desc->replicas[r], &error);
            if (!replica)
                return error;
            replica->listed = true;
            shards[i].replicas[shards[i].nreplicas++] = replica;
        }
    }
    return 0;
}

/* Routes every slot by topo; nodes it does not name are closed. */
static int topology_apply(rp_cluster *c, const rp__topology *topo)
{
    cshard *shards = rp__calloc((size_t)topo->nshards, sizeof *shards);
    if (!shards)
        return -ENOMEM;
    for (rp__link *link = c->nodes.head; link; link = link->next) {
        cnode *node = RP__CONTAINER_OF(link, cnode, link);
        node->listed = node->master = false;
    }
    int rc = shards_build(c, topo, shards);
    if (rc < 0) {
        rp__free(shards);
        return rc;
    }
    for (int slot = 0; slot < RP_CLUSTER_SLOTS; slot++) {
        cnode *master = topo->owner[slot] ? shards[topo->owner[slot] - 1].master : NULL;
        slot_leaves(c, slot, master);
        c->slot_shard[slot] = topo->owner[slot];
        c->slot_master[slot] = master;
    }
    slots_drop(c);
    rp__free(c->shards);
    c->shards = shards;
    c->nshards = topo->nshards;
    c->have_topology = true;
    for (rp__link *link = c->nodes.head, *next; link; link = next) {
        next = link->next;
        cnode *node = RP__CONTAINER_OF(link, cnode, link);
        if (!node->listed && !node->closing)
            node_close(node);
    }
    return 0;
}

static const char *const shards_argv[] = {"CLUSTER", "SHARDS"};
static const char *const slots_argv[] = {"CLUSTER", "SLOTS"};
static const size_t cluster_argvlen[] = {7, 6};
static const char *const command_argv[] = {"COMMAND"};
static const size_t command_argvlen[] = {7};

static int topology_read(rp_cluster *c, const redisReply *reply)
{
    rp__topology *topo = rp__calloc(1, sizeof *topo);
    if (!topo)
        return -ENOMEM;
    int rc = c->use_slots ? rp__topology_from_slots(topo, reply) : rp__topology_from_shards(topo, reply, cluster_tls(c));
    if (rc == 0)
        rc = topology_apply(c, topo);
    rp__topology_free(topo);
    rp__free(topo);
    return rc;
}

/* Commands wait for the first topology and the first COMMAND's answer;
 * once a COMMAND has failed they route by the fallback rule (argv[1]) while
 * it is asked again. */
static bool routing_ready(const rp_cluster *c)
{
    return c->have_topology && (!c->keys_pending || c->keys_retry_ns);
}

/* Waiting commands go once routing is ready, or fail when no node could
 * give the first topology. */
static void waiting_release(rp_cluster *c, int status)
{
    bool fail = status < 0 && !c->have_topology;
    if (!routing_ready(c) && !fail)
        return;
    rp__link *link;
    while ((link = rp__list_pop(&c->waiting, false))) {
        ccmd *cmd = RP__CONTAINER_OF(link, ccmd, wait_link);
        if (fail)
            cmd_fail_later(cmd, RP_ECLUSTERDOWN);
        else
            cmd_dispatch(cmd);
    }
}

/* ------------------------------------------------------------- refresh */

/* The next node to ask: one not asked yet in this refresh, those that
 * failed lately last; then the seeds. */
static cnode *refresh_pick(rp_cluster *c)
{
    uint64_t now = rp__loop_now(c->loop);
    cnode *fallback = NULL;
    for (rp__link *link = c->nodes.head; link; link = link->next) {
        cnode *node = RP__CONTAINER_OF(link, cnode, link);
        if (node->closing || node->asked_refresh == c->refresh_count)
            continue;
        if (!recently_failed(node, now))
            return node;
        fallback = fallback ? fallback : node;
    }
    if (fallback)
        return fallback;
    int error;
    for (int i = 0; i < c->nseeds; i++) {
        cnode *seed = node_get(c, c->seeds[i], &error);
        if (seed && seed->asked_refresh != c->refresh_count)
            return seed;
    }
    return NULL;
}

static void refresh_ask(rp_cluster *c);

static void refresh_end(rp_cluster *c, int status)
{
    c->refreshing = false;
    if (status == 0)
        c->stats.refreshes++;
    else
        c->stats.refresh_errors++;
    waiting_release(c, status);
    if (c->closing)
        return;
    rp__timer_arm(c->loop, &c->refresh_periodic, rp__loop_now(c->loop) + c->refresh_interval_ns);
    if (c->refresh_wanted)
        refresh_request(c);
}

/* COMMAND's answer: where keys are, and which commands are read-only for
 * every node client's retry rule. A refusal (ACL) leaves argv[1] routing
 * (and the built-in read-only table) for good; a failure (the node, or no
 * memory) leaves a later refresh to ask again, after a backoff. */
static void keys_reply(const redisReply *reply, int status, bool may_retry, void *data)
{
    (void)status;
    (void)may_retry;
    rp_cluster *c = data;
    c->keys_pending = false;
    if (reply && reply->type == REDIS_REPLY_ARRAY)
        c->keys_loaded =
            rp__keyspec_load(&c->keys, reply) == 0 && rp__readonly_table_load(&c->readonly, reply) == 0;
    else
        c->keys_loaded = reply != NULL;
    if (!c->keys_loaded) {
        uint64_t backoff = c->keys_backoff_ns ? c->keys_backoff_ns * 2 : KEYS_RETRY_MIN_NS;
        c->keys_backoff_ns = RP__MIN(backoff, KEYS_RETRY_MAX_NS);
        c->keys_retry_ns = rp__loop_now(c->loop) + c->keys_backoff_ns;
    }
    waiting_release(c, 0);
}

/* COMMAND goes with a layout read until it is answered: the first time at
 * once, after a failure once its backoff has passed. */
static bool keys_wanted(const rp_cluster *c)
{
    return !c->keys_loaded && !c->keys_pending && rp__loop_now(c->loop) >= c->keys_retry_ns;
}

static void topology_reply(const redisReply *reply, int status, bool may_retry, void *data)
{
    (void)may_retry;
    cnode *node = data;
    rp_cluster *c = node->cluster;
    if (c->closing) {
        refresh_end(c, RP_ECLOSED);
        return;
    }
    if (reply && reply->type == REDIS_REPLY_ERROR && !c->use_slots && strstr(reply->str, "nknown subcommand")) {
        c->use_slots = true; /* before Redis 7: ask the same node again */
        node->asked_refresh = 0;
    } else if (reply && topology_read(c, reply) == 0) {
        refresh_end(c, 0);
        return;
    } else if (status < 0) {
        node_failed(node, status);
    }
    refresh_ask(c);
}

static void refresh_ask(rp_cluster *c)
{
    cnode *node = refresh_pick(c);
    if (!node) {
        refresh_end(c, RP_ECLUSTERDOWN);
        return;
    }
    node->asked_refresh = c->refresh_count;
    if (keys_wanted(c))
        c->keys_pending = rp__client_attempt(node->client, 0, RP__ATTEMPT_SERVER_TABLE, 0, keys_reply, c, 1, command_argv,
                                             command_argvlen, NULL) > 0;
    int64_t id = rp__client_attempt(node->client, 0, RP__ATTEMPT_SERVER_TABLE, 0, topology_reply, node, 2,
                                    c->use_slots ? slots_argv : shards_argv, cluster_argvlen, NULL);
    if (id < 0)
        refresh_end(c, (int)id);
}

static void refresh_start(rp_cluster *c)
{
    c->refreshing = true;
    c->refresh_wanted = false;
    c->refresh_count++;
    c->refresh_started_ns = rp__loop_now(c->loop);
    rp__timer_disarm(c->loop, &c->refresh_soon);
    refresh_ask(c);
}

/* At most one read in flight, and one per MIN_REFRESH_GAP_NS. */
static void refresh_request(rp_cluster *c)
{
    if (c->closing)
        return;
    if (c->refreshing) {
        c->refresh_wanted = true;
        return;
    }
    uint64_t earliest = c->refresh_started_ns + MIN_REFRESH_GAP_NS;
    if (!c->refresh_started_ns || rp__loop_now(c->loop) >= earliest)
        refresh_start(c);
    else if (!rp__timer_armed(&c->refresh_soon))
        rp__timer_arm(c->loop, &c->refresh_soon, earliest);
}

static void refresh_soon_fired(rp__timer *timer)
{
    refresh_request(RP__CONTAINER_OF(timer, rp_cluster, refresh_soon));
}

static void refresh_periodic_fired(rp__timer *timer)
{
    refresh_request(RP__CONTAINER_OF(timer, rp_cluster, refresh_periodic));
}

/* ------------------------------------------------------------ routing */

static cnode *any_master(rp_cluster *c)
{
    cnode *node = c->slot_master[rp__loop_random(c->loop) % RP_CLUSTER_SLOTS];
    for (rp__link *link = c->nodes.head; !node && link; link = link->next) {
        cnode *candidate = RP__CONTAINER_OF(link, cnode, link);
        if (!candidate->closing && (candidate->master || !link->next))
            node = candidate;
    }
    return node;
}

static cnode *route(rp_cluster *c, ccmd *cmd)
{
    if (cmd->slot == RP__NO_KEYS)
        return any_master(c);
    uint16_t shard = c->slot_shard[cmd->slot];
    if (c->read_from_replicas && cmd->readonly && !cmd->avoid_replicas && shard && c->shards[shard - 1].nreplicas) {
        cshard *s = &c->shards[shard - 1];
        return s->replicas[s->next++ % (unsigned)s->nreplicas];
    }
    return c->slot_master[cmd->slot] ? c->slot_master[cmd->slot] : any_master(c);
}

/* ------------------------------------------------------------ commands */

static void cmd_complete(ccmd *cmd, const redisReply *reply, int status)
{
    rp_cluster *c = cmd->cluster;
    cmd->state = CC_DONE;
    rp__timer_disarm(c->loop, &cmd->deadline);
    rp__timer_disarm(c->loop, &cmd->backoff);
    rp__list_unlink(&c->cmds, &cmd->link);
    if (c->hooks.command_end && cmd->started_ns) /* only what was timed */
        c->hooks.command_end(c->hooks.data, cmd->argc, cmd->argv, cmd->argvlen,
                             rp__loop_now_fresh(c->loop) - cmd->started_ns, status, cmd->redirects);
    cmd->cb(c, reply, status, cmd->data);
    rp__hold_put(&cmd->hold); /* a send in flight may still read its arguments */
    maybe_finish_close(c);
}

static void cmd_finish_run(rp__deferred *item)
{
    ccmd *cmd = RP__CONTAINER_OF(item, ccmd, finish);
    cmd_complete(cmd, NULL, cmd->status);
}

static void cmd_fail_later(ccmd *cmd, int status)
{
    cmd->state = CC_DONE; /* a cancel or close finds nothing left to do */
    cmd->status = status;
    rp__defer(cmd->cluster->loop, &cmd->finish, cmd_finish_run);
}

/* Sends it again after a backoff, while redirects are left. */
static bool cmd_retry_later(ccmd *cmd)
{
    rp_cluster *c = cmd->cluster;
    if (c->closing || cmd->redirects >= c->max_redirects)
        return false;
    cmd->redirects++;
    c->stats.retries++;
    cmd->state = CC_BACKOFF;
    uint64_t wait = rp__retry_backoff_ns(c->loop, cmd->redirects, c->node_opts.min_retry_backoff_ms,
                                         c->node_opts.max_retry_backoff_ms);
    rp__timer_arm(c->loop, &cmd->backoff, rp__loop_now(c->loop) + wait);
    return true;
}

static bool error_is(const redisReply *reply, const char *code)
{
    size_t len = strlen(code);
    return reply->len >= len && !memcmp(reply->str, code, len) && (reply->len == len || reply->str[len] == ' ');
}

/* "MOVED <slot> <host:port>" or "ASK ...": the slot and the node named;
 * an empty host is the host of the node that answered. */
static bool parse_redirect(const redisReply *reply, const cnode *from, int *slot, char *addr)
{
    char host[RP__ADDR_MAX];
    const char *target = strchr(reply->str, ' ');
    target = target ? strchr(target + 1, ' ') : NULL;
    if (!target || !*++target)
        return false;
    long number = strtol(strchr(reply->str, ' ') + 1, NULL, 10);
    const char *port = strrchr(target, ':');
    if (!port || number < 0 || number >= RP_CLUSTER_SLOTS || (size_t)(port - target) >= sizeof host)
        return false;
    *slot = (int)number;
    if (port == target) {
        const char *from_port = strrchr(from->addr, ':');
        snprintf(host, sizeof host, "%.*s", (int)(from_port - from->addr), from->addr);
    } else {
        snprintf(host, sizeof host, "%.*s", (int)(port - target), target);
    }
    bool v6 = strchr(host, ':') && host[0] != '[';
    int len = v6 ? snprintf(addr, RP__ADDR_MAX, "[%s]%s", host, port) : snprintf(addr, RP__ADDR_MAX, "%s%s", host, port);
    return len > 0 && len < RP__ADDR_MAX;
}

/* The slot is served by node from now on, and belongs to node's shard
 * (none if node is no shard's master): read_from_replicas reads of it go
 * to that shard's replicas, not the old master's, before the layout read
 * MOVED asks for lands (or if it fails). */
static void slot_moved(rp_cluster *c, int slot, cnode *node)
{
    slot_leaves(c, slot, node);
    slots_drop(c);
    c->slot_master[slot] = node;
    c->slot_shard[slot] = 0;
    for (int i = 0; i < c->nshards; i++)
        if (c->shards[i].master == node)
            c->slot_shard[slot] = (uint16_t)(i + 1);
}

/* MOVED: the slot is the named node's from now on; ASK: this command
 * alone goes there, after ASKING. */
static bool cmd_redirect(ccmd *cmd, cnode *from, const redisReply *reply, bool moved)
{
    rp_cluster *c = cmd->cluster;
    char addr[RP__ADDR_MAX];
    int slot, error;
    if (cmd->redirects >= c->max_redirects || !parse_redirect(reply, from, &slot, addr))
        return false;
    cnode *target = node_get(c, addr, &error);
    if (!target)
        return false;
    if (moved) {
        c->stats.moved++;
        slot_moved(c, slot, target);
        refresh_request(c);
    } else {
        c->stats.asked++;
    }
    /* The node named, whatever route() would say: the slot's replicas or
     * the client's own idea of the slot may be what sent it there. */
    cmd->redirect = target;
    cmd->asking = !moved;
    cmd->redirects++;
    cmd_dispatch(cmd);
    return true;
}

/* An error reply the cluster acts on; false leaves it to the caller. */
static bool cmd_follow(ccmd *cmd, cnode *node, const redisReply *reply)
{
    if (error_is(reply, "MOVED") || error_is(reply, "ASK"))
        return cmd_redirect(cmd, node, reply, error_is(reply, "MOVED"));
    if (error_is(reply, "TRYAGAIN")) /* a migration is under way: its keys are split */
        return cmd_retry_later(cmd);
    if (error_is(reply, "CLUSTERDOWN") || error_is(reply, "LOADING") || error_is(reply, "READONLY") ||
        error_is(reply, "MASTERDOWN")) {
        cmd->avoid_replicas |= !node->master;
        refresh_request(cmd->cluster);
        return cmd_retry_later(cmd);
    }
    return false;
}

static void at_node_done(const redisReply *reply, int status, bool may_retry, void *data)
{
    ccmd *cmd = data;
    cnode *node = cmd->node;
    cmd->node = NULL;
    if (cmd->abandoned) {
        cmd_complete(cmd, NULL, cmd->abandoned);
        return;
    }
    if (!cmd->cluster->closing) {
        if (status == 0 && reply->type == REDIS_REPLY_ERROR && cmd_follow(cmd, node, reply))
            return;
        if (status == RP_ECLOSED && may_retry) { /* unsent, at a node that left the layout */
            cmd_dispatch(cmd);
            return;
        }
        if (status < 0) {
            node_failed(node, status);
            cmd->avoid_replicas |= !node->master;
            if (may_retry && cmd_retry_later(cmd))
                return;
        }
    }
    cmd_complete(cmd, reply, status);
}

/* The slot of the command's keys, once the key table is known: 0, or
 * RP_ECROSSSLOT. */
static int cmd_route(ccmd *cmd)
{
    rp_cluster *c = cmd->cluster;
    cmd->slot = rp__command_slot(&c->keys, cmd->key_index, cmd->argc, cmd->argv, cmd->argvlen, &cmd->readonly);
    cmd->routed = true;
    return cmd->slot == RP_ECROSSSLOT ? RP_ECROSSSLOT : 0;
}

static void cmd_dispatch(ccmd *cmd)
{
    rp_cluster *c = cmd->cluster;
    if (!routing_ready(c)) {
        cmd->redirect = NULL; /* the layout read meanwhile may close it */
        cmd->state = CC_WAITING;
        rp__list_push_back(&c->waiting, &cmd->wait_link);
        if (!c->refreshing)
            refresh_request(c);
        return;
    }
    if (!cmd->routed && cmd_route(cmd) < 0) {
        cmd_fail_later(cmd, RP_ECROSSSLOT);
        return;
    }
    cnode *node = cmd->redirect ? cmd->redirect : route(c, cmd);
    unsigned how = cmd->redirect && cmd->asking ? RP__ATTEMPT_ASKING : 0;
    cmd->redirect = NULL;
    int64_t id = node ? rp__client_attempt(node->client, cmd->flags, how, cmd->cache_ttl_ms, at_node_done, cmd,
                                           cmd->argc, cmd->argv, cmd->argvlen, &cmd->hold)
                      : RP_ECLUSTERDOWN;
    if (id < 0) {
        cmd_fail_later(cmd, (int)id);
        return;
    }
    cmd->state = CC_AT_NODE;
    cmd->node = node;
    cmd->node_id = id;
}

static void backoff_fired(rp__timer *timer)
{
    cmd_dispatch(RP__CONTAINER_OF(timer, ccmd, backoff));
}

static int cmd_abandon(ccmd *cmd, int status);

static void deadline_fired(rp__timer *timer)
{
    cmd_abandon(RP__CONTAINER_OF(timer, ccmd, deadline), -ETIMEDOUT);
}

static void cmd_release(rp__hold *hold) { rp__free(RP__CONTAINER_OF(hold, ccmd, hold)); }

/* One allocation holds the command and copies of its arguments. */
static ccmd *cmd_new(rp_cluster *c, int argc, const char *const *argv, const size_t *argvlen)
{
    const char **args;
    size_t *lens;
    ccmd *cmd = rp__calloc_with_args(sizeof *cmd, argc, argv, argvlen, &args, &lens);
    if (!cmd)
        return NULL;
    cmd->argv = args;
    cmd->argvlen = lens;
    cmd->hold = (rp__hold){.refs = 1, .release = cmd_release};
    cmd->argc = argc;
    cmd->cluster = c;
    rp__timer_init(&cmd->backoff, backoff_fired, true);
    rp__timer_init(&cmd->deadline, deadline_fired, false);
    return cmd;
}

/* A hit answered by its node client (cluster_hit): the caller's callback. */
typedef struct chit {
    rp__link link; /* the cluster's spare_hits, once ended */
    rp_cluster *cluster;
    rp_cluster_reply_cb cb;
    void *data;
} chit;

static void hit_done(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    chit *hit = data;
    rp_cluster *c = hit->cluster;
    hit->cb(c, reply, status, hit->data);
    if (c->spare_hits.len < 64)
        rp__list_push_front(&c->spare_hits, &hit->link);
    else
        rp__free(hit);
}

/* A cached read held by the cache of its slot's master: answered by that
 * node's client, as its own hits are, with no command record here (there
 * is nothing to route again or redirect; rp_cluster_cancel finds none,
 * as it finds a hit's completion queued). 0: not held (or hooks to call:
 * the full path calls them), and the read takes the full path. */
static int64_t cluster_hit(rp_cluster *c, rp_cluster_reply_cb cb, void *data, int argc, const char *const *argv,
                           const size_t *argvlen)
{
    size_t lens[8];
    if (!routing_ready(c) || argc < 2 || c->hooks.command_start || c->hooks.command_end || (!argvlen && argc > 8))
        return 0;
    for (int i = 0; !argvlen && i < argc; i++)
        lens[i] = strlen(argv[i]);
    argvlen = argvlen ? argvlen : lens;
    cnode *node = c->slot_master[rp_cluster_key_slot(argv[1], argvlen[1])];
    rp__cache_entry *entry = node && !node->closing ? rp__cache_hit(node->client->cache, argc, argv, argvlen) : NULL;
    if (!entry)
        return 0;
    rp__link *spare = rp__list_pop(&c->spare_hits, false);
    chit *hit = spare ? RP__CONTAINER_OF(spare, chit, link) : rp__malloc(sizeof *hit);
    if (!hit) {
        rp__cache_hit_abandon(node->client->cache, entry);
        return -ENOMEM;
    }
    *hit = (chit){.cluster = c, .cb = cb, .data = data};
    int64_t id = rp__client_hit(node->client, entry, hit_done, hit);
    if (id < 0) {
        rp__free(hit);
        return id;
    }
    return ++c->last_id;
}

/* RP_CMD_CACHE is for node caches, and a command routed by its argv[1]
 * (the key the cache keeps it under). */
static bool cache_routable(const rp_cluster *c, const rp_cluster_command_options *opts)
{
    return c->node_opts.cache_bytes && opts->key_index <= 1;
}

/* RP_CMD_CACHE: routable so, and a read the node client would take. */
static bool cache_accepts(const rp_cluster *c, const rp_cluster_command_options *opts, int argc,
                          const char *const *argv, const size_t *argvlen)
{
    return cache_routable(c, opts) && rp__cache_cacheable(argc, argv, argvlen);
}

int64_t rp_cluster_command_ex(rp_cluster *c, const rp_cluster_command_options *opts, rp_cluster_reply_cb cb,
                              void *data, int argc, const char *const *argv, const size_t *argvlen)
{
    if (!c || !cb || argc <= 0 || !argv)
        return -EINVAL;
    if (opts && ((opts->flags & ~(unsigned)(RP_CMD_IDEMPOTENT | RP_CMD_CACHE)) || opts->key_index < 0 ||
                 opts->key_index >= argc))
        return -EINVAL;
    if (c->closing)
        return RP_ECLOSED;
    bool may_hit = opts && (opts->flags & RP_CMD_CACHE) && cache_routable(c, opts);
    int64_t hit = may_hit ? cluster_hit(c, cb, data, argc, argv, argvlen) : 0;
    if (hit)
        return hit;
    ccmd *cmd = cmd_new(c, argc, argv, argvlen);
    if (!cmd)
        return -ENOMEM;
    cmd->key_index = opts ? opts->key_index : 0;
    if (opts && (opts->flags & RP_CMD_CACHE) && !cache_accepts(c, opts, argc, cmd->argv, cmd->argvlen)) {
        rp__free(cmd);
        return -EINVAL;
    }
    if (routing_ready(c) && cmd_route(cmd) < 0) {
        rp__free(cmd);
        return RP_ECROSSSLOT;
    }
    cmd->cb = cb;
    cmd->data = data;
    cmd->flags = opts ? opts->flags : 0;
    cmd->cache_ttl_ms = opts ? opts->cache_ttl_ms : 0;
    cmd->avoid_replicas = cmd->flags & RP_CMD_CACHE; /* the master's cache: read-your-writes */
    if (opts && opts->timeout_ms)
        rp__timer_arm(c->loop, &cmd->deadline, rp__loop_now_fresh(c->loop) + opts->timeout_ms * RP__NS_PER_MS);
    /* It joins the commands before command_start runs, so a hook that
     * closes the cluster (or cancels it) ends it like any other. */
    int64_t id = cmd->id = ++c->last_id;
    cmd->state = CC_STARTING;
    rp__list_push_front(&c->cmds, &cmd->link);
    if (c->hooks.command_start)
        c->hooks.command_start(c->hooks.data, argc, cmd->argv, cmd->argvlen);
    if (c->hooks.command_end)
        cmd->started_ns = rp__loop_now_fresh(c->loop);
    if (cmd->state == CC_STARTING)
        cmd_dispatch(cmd);
    return id;
}

int rp_cluster_command(rp_cluster *c, rp_cluster_reply_cb cb, void *data, int argc, const char *const *argv,
                       const size_t *argvlen)
{
    int64_t id = rp_cluster_command_ex(c, NULL, cb, data, argc, argv, argvlen);
    return id < 0 ? (int)id : 0;
}

/* Ends cmd with status: at once if it waits here, through its node's
 * cancel (later in this iteration) if it is at one. */
static int cmd_abandon(ccmd *cmd, int status)
{
    rp_cluster *c = cmd->cluster;
    switch (cmd->state) {
    case CC_WAITING:
        rp__list_unlink(&c->waiting, &cmd->wait_link);
        break;
    case CC_BACKOFF:
        rp__timer_disarm(c->loop, &cmd->backoff);
        break;
    case CC_STARTING:
        break;
    case CC_AT_NODE:
        if (cmd->abandoned)
            return -ENOENT;
        /* -ENOENT: the node's end of it is queued (a node that left the
         * layout gave it back unsent); at_node_done still ends it here. */
        rp_client_cancel(cmd->node->client, cmd->node_id);
        cmd->abandoned = status;
        return 0;
    case CC_DONE:
        return -ENOENT;
    }
    cmd_fail_later(cmd, status);
    return 0;
}

int rp_cluster_cancel(rp_cluster *c, int64_t id)
{
    if (!c || id <= 0)
        return -EINVAL;
    for (rp__link *link = c->cmds.head; link; link = link->next) {
        ccmd *cmd = RP__CONTAINER_OF(link, ccmd, link);
        if (cmd->id == id)
            return cmd_abandon(cmd, -ECANCELED);
    }
    return -ENOENT;
}

/* ----------------------------------------------------------- lifecycle */

void rp_cluster_options_init(rp_cluster_options *opts)
{
    memset(opts, 0, sizeof *opts);
    rp_client_options_init(&opts->node);
    opts->max_redirects = 3;
}

static void cluster_free(rp_cluster *c)
{
    rp__link *spare;
    while ((spare = rp__list_pop(&c->spare_hits, false)))
        rp__free(RP__CONTAINER_OF(spare, chit, link));
    for (int i = 0; i < c->nseeds; i++)
        rp__free(c->seeds[i]);
    rp__free(c->seeds);
    rp__free((char *)c->node_opts.username);
    if (c->node_opts.password) /* no secret left in freed memory */
        explicit_bzero((char *)c->node_opts.password, strlen(c->node_opts.password));
    rp__free((char *)c->node_opts.password);
    rp__free((char *)c->node_opts.client_name);
    rp__tls_options_free(&c->node_opts.pool.tls);
    rp__free(c->shards);
    rp__free(c->by_addr);
    rp__keyspec_free(&c->keys);
    rp__readonly_table_free(&c->readonly);
    rp__free(c);
}

static int copy_text(const char **out, const char *in)
{
    if (in && !(*out = rp__strdup(in)))
        return -ENOMEM;
    return 0;
}

/* The caller's strings become the cluster's: nodes are made later. */
static int cluster_copy_options(rp_cluster *c, const rp_cluster_options *opts)
{
    c->node_opts = opts->node;
    c->node_opts.username = c->node_opts.password = c->node_opts.client_name = NULL;
    if (!c->node_opts.min_retry_backoff_ms)
        c->node_opts.min_retry_backoff_ms = 8;
    if (!c->node_opts.max_retry_backoff_ms)
        c->node_opts.max_retry_backoff_ms = 512;
    int rc = copy_text(&c->node_opts.username, opts->node.username);
    if (rc == 0)
        rc = copy_text(&c->node_opts.password, opts->node.password);
    if (rc == 0)
        rc = copy_text(&c->node_opts.client_name, opts->node.client_name);
    if (rc == 0)
        rc = rp__tls_options_copy(&c->node_opts.pool.tls, &opts->node.pool.tls);
    else
        memset(&c->node_opts.pool.tls, 0, sizeof c->node_opts.pool.tls); /* nothing of it copied yet */
    if (rc == 0 && !(c->seeds = rp__calloc((size_t)opts->nseeds, sizeof *c->seeds)))
        rc = -ENOMEM;
    for (int i = 0; rc == 0 && i < opts->nseeds; i++, c->nseeds++)
        if (!(c->seeds[i] = rp__strdup(opts->seeds[i])))
            rc = -ENOMEM;
    return rc;
}

/* Every seed's text is checked before any node is made. */
static bool seeds_valid(const rp_cluster_options *opts)
{
    rp__addr addr;
    rp__hostport name;
    for (int i = 0; i < opts->nseeds; i++)
        if (!opts->seeds[i] || strlen(opts->seeds[i]) >= RP__ADDR_MAX ||
            rp__addr_parse(opts->seeds[i], &addr, &name) < 0)
            return false;
    return true;
}

/* Each seed gets its client now, which checks its address and options. */
static int cluster_add_seeds(rp_cluster *c)
{
    int rc = 0;
    for (int i = 0; i < c->nseeds; i++)
        if (!node_get(c, c->seeds[i], &rc))
            return rc;
    return 0;
}

static void cluster_close_nodes(rp_cluster *c)
{
    for (rp__link *link = c->nodes.head, *next; link; link = next) {
        next = link->next;
        cnode *node = RP__CONTAINER_OF(link, cnode, link);
        if (!node->closing)
            node_close(node);
    }
}

int rp_cluster_new(rp_cluster **out, rp_loop *loop, const rp_cluster_options *opts)
{
    if (!out || !loop || !opts || !opts->seeds || opts->nseeds <= 0 || opts->node.db != 0 || !seeds_valid(opts))
        return -EINVAL;
    rp_cluster *c = rp__calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->max_redirects = opts->max_redirects > 0 ? opts->max_redirects : 0;
    c->read_from_replicas = opts->read_from_replicas;
    c->refresh_interval_ns =
        (opts->refresh_interval_ms ? opts->refresh_interval_ms : DEFAULT_REFRESH_INTERVAL_MS) * RP__NS_PER_MS;
    rp__timer_init(&c->refresh_soon, refresh_soon_fired, true);
    rp__timer_init(&c->refresh_periodic, refresh_periodic_fired, false);
    int rc = cluster_copy_options(c, opts);
    if (rc == 0)
        rc = cluster_add_seeds(c);
    if (rc < 0) {
        /* Seed clients made so far have nothing under way: their close
         * only frees them, and nothing here waits for it. */
        c->closing = c->finished = true;
        cluster_close_nodes(c);
        if (!c->nodes_open)
            cluster_free(c);
        return rc;
    }
    refresh_start(c);
    *out = c;
    return 0;
}

static void close_run(rp__deferred *item)
{
    rp_cluster *c = RP__CONTAINER_OF(item, rp_cluster, close_item);
    if (c->close_cb)
        c->close_cb(c, c->close_data);
    cluster_free(c);
}

static void maybe_finish_close(rp_cluster *c)
{
    if (!c->closing || c->nodes_open || c->cmds.len)
        return;
    if (c->finished) { /* rp_cluster_new gave up: nothing to call */
        cluster_free(c);
        return;
    }
    c->finished = true;
    rp__defer(c->loop, &c->close_item, close_run);
}

int rp_cluster_close(rp_cluster *c, rp_cluster_close_cb cb, void *data)
{
    if (!c)
        return -EINVAL;
    if (c->closing)
        return RP_ECLOSED;
    c->closing = true;
    c->close_cb = cb;
    c->close_data = data;
    rp__timer_disarm(c->loop, &c->refresh_soon);
    rp__timer_disarm(c->loop, &c->refresh_periodic);
    for (rp__link *link = c->cmds.head; link; link = link->next) {
        ccmd *cmd = RP__CONTAINER_OF(link, ccmd, link);
        if (cmd->state == CC_WAITING || cmd->state == CC_BACKOFF || cmd->state == CC_STARTING)
            cmd_abandon(cmd, RP_ECLOSED);
    }
    cluster_close_nodes(c);
    maybe_finish_close(c);
    return 0;
}

int rp_cluster_set_hooks(rp_cluster *c, const rp_hooks *hooks)
{
    if (!c)
        return -EINVAL;
    if (c->closing)
        return RP_ECLOSED;
    c->hooks = hooks ? *hooks : (rp_hooks){0};
    for (rp__link *link = c->nodes.head; link; link = link->next) {
        cnode *node = RP__CONTAINER_OF(link, cnode, link);
        if (!node->closing)
            node_set_hooks(node);
    }
    return 0;
}

/* A node's slots are counted, not kept (a MOVED moves one between two
 * layout reads): one pass over the slots, each counted in its master's
 * entry (info_index), whatever the number of nodes. */
int rp_cluster_nodes(const rp_cluster *c, rp_cluster_node_info *out, int max)
{
    if (!c || max < 0 || (max && !out))
        return -EINVAL;
    int count = 0;
    for (rp__link *link = c->nodes.head; link; link = link->next) {
        cnode *node = RP__CONTAINER_OF(link, cnode, link);
        node->info_index = !node->closing && count < max ? count : -1;
        if (node->closing)
            continue;
        if (count < max) {
            rp_cluster_node_info *info = &out[count];
            memcpy(info->addr, node->addr, sizeof info->addr);
            info->master = node->master;
            info->slots = 0;
            rp_pool_stats(rp_client_pool(node->client), &info->stats);
        }
        count++;
    }
    for (int slot = 0; slot < RP_CLUSTER_SLOTS; slot++)
        if (c->slot_master[slot] && c->slot_master[slot]->info_index >= 0)
            out[c->slot_master[slot]->info_index].slots++;
    return count;
}

void rp_cluster_get_stats(const rp_cluster *c, rp_cluster_stats *out)
{
    if (c && out)
        *out = c->stats;
}

int rp_cluster_cache_stats(const rp_cluster *c, rp_cache_stats *out)
{
    if (!c || !out || !c->node_opts.cache_bytes)
        return -EINVAL;
    *out = c->caches_closed;
    out->subscribed = true;
    for (rp__link *link = c->nodes.head; link; link = link->next) {
        cnode *node = RP__CONTAINER_OF(link, cnode, link);
        rp_cache_stats one;
        if (rp_client_cache_stats(node->client, &one) < 0)
            continue;
        cache_stats_add(out, &one);
        out->subscribed &= node->closing || one.subscribed;
    }
    return 0;
}
