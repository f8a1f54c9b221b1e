/* Reads a cluster's layout from CLUSTER SHARDS (Redis 7) or CLUSTER SLOTS:
 * which shard serves each slot, and the addresses of each shard's master
 * and online replicas. The reply comes from a server and is not trusted:
 * memory is spent only on the shards it really describes, naming at most
 * RP__MAX_NODES nodes, and its numbers are range-checked as read. */
#include "topology.h"
#include "reply.h"

#include <stdio.h>
#include <string.h>

/* An integer (or its decimal text) within [lo, hi]. */
static bool wire_int(const redisReply *r, long long lo, long long hi, long long *out)
{
    if (r && r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
    } else {
        char *end;
        if (!rp__reply_is_text(r))
            return false;
        *out = strtoll(r->str, &end, 10);
        if (end == r->str || *end)
            return false;
    }
    return *out >= lo && *out <= hi;
}

/* "host:port", bracketing an IPv6 host; false when either is missing or
 * the whole is longer than an address may be. */
static bool format_addr(char *out, const redisReply *host, const redisReply *port)
{
    long long number;
    if (!rp__reply_is_text(host) || !host->len || !strcmp(host->str, "?") || !wire_int(port, 1, 65535, &number))
        return false;
    int len = strchr(host->str, ':') ? snprintf(out, RP__ADDR_MAX, "[%s]:%lld", host->str, number)
                                     : snprintf(out, RP__ADDR_MAX, "%s:%lld", host->str, number);
    return len > 0 && len < RP__ADDR_MAX;
}

/* A range of slots, each within 0..16383, first <= last; else none. */
static void assign(rp__topology *topo, const redisReply *first, const redisReply *last, int shard)
{
    long long from, to;
    if (!wire_int(first, 0, RP_CLUSTER_SLOTS - 1, &from) || !wire_int(last, from, RP_CLUSTER_SLOTS - 1, &to))
        return;
    for (long long slot = from; slot <= to; slot++)
        topo->owner[slot] = (uint16_t)(shard + 1);
}

/* A node as a reply names it: its address, and the host name it
 * announces (pointing into the reply), NULL if none. */
typedef struct node_ref {
    char addr[RP__ADDR_MAX];
    const char *name;
} node_ref;

/* An announced host name: text that is not empty. */
static const char *announced_name(const redisReply *name)
{
    return rp__reply_is_text(name) && name->len ? name->str : NULL;
}

/* One more node kept; -EPROTO past RP__MAX_NODES, -ENOMEM. */
static int node_keep(rp__topology *topo, rp__node_desc *out, const node_ref *node)
{
    if (topo->nodes == RP__MAX_NODES)
        return -EPROTO;
    out->addr = rp__strdup(node->addr);
    out->name = node->name && out->addr ? rp__strdup(node->name) : NULL;
    if (!out->addr || (node->name && !out->name)) {
        rp__free(out->addr);
        *out = (rp__node_desc){0};
        return -ENOMEM;
    }
    topo->nodes++;
    return 0;
}

static void node_desc_free(rp__node_desc *node)
{
    rp__free(node->addr);
    rp__free(node->name);
}

/* A new shard of that master: its index, or node_keep's error. The array
 * grows by doubling, with the shards found. */
static int shard_add(rp__topology *topo, const node_ref *master)
{
    if (topo->nodes == RP__MAX_NODES) /* and so nshards < RP__MAX_NODES: room below */
        return -EPROTO;
    if (topo->nshards == topo->cap) {
        int cap = topo->cap ? RP__MIN(topo->cap * 2, RP__MAX_NODES) : 16;
        rp__shard_desc *shards = rp__realloc(topo->shards, (size_t)cap * sizeof *shards);
        if (!shards)
            return -ENOMEM;
        topo->shards = shards;
        topo->cap = cap;
    }
    rp__shard_desc *shard = &topo->shards[topo->nshards];
    memset(shard, 0, sizeof *shard);
    int rc = node_keep(topo, &shard->master, master);
    return rc < 0 ? rc : topo->nshards++;
}

static int replica_add(rp__topology *topo, int index, const node_ref *node)
{
    rp__shard_desc *shard = &topo->shards[index];
    if (shard->nreplicas == RP__MAX_REPLICAS)
        return 0;
    int rc = node_keep(topo, &shard->replicas[shard->nreplicas], node);
    shard->nreplicas += rc == 0;
    return rc;
}

static int topology_start(rp__topology *topo, const redisReply *reply)
{
    memset(topo, 0, sizeof *topo);
    return reply->type == REDIS_REPLY_ARRAY ? 0 : -EPROTO;
}

static int topology_end(rp__topology *topo, int rc)
{
    for (int slot = 0; rc == 0 && slot < RP_CLUSTER_SLOTS; slot++)
        if (topo->owner[slot])
            return 0;
    rp__topology_free(topo);
    return rc ? rc : -EPROTO;
}

/* A node of CLUSTER SHARDS: a flat map (id, port, tls-port, ip, endpoint,
 * hostname, role, health, ...); the endpoint is the address clients
 * should use. False if it has no usable address or role. */
static bool shards_node(const redisReply *node, bool tls, node_ref *out, bool *master, bool *online)
{
    const redisReply *role = rp__reply_map_get(node, "role"), *health = rp__reply_map_get(node, "health");
    const redisReply *port = rp__reply_map_get(node, tls ? "tls-port" : "port");
    if (!port)
        port = rp__reply_map_get(node, tls ? "port" : "tls-port");
    if (!rp__reply_is_text(role) ||
        (!format_addr(out->addr, rp__reply_map_get(node, "endpoint"), port) &&
         !format_addr(out->addr, rp__reply_map_get(node, "ip"), port)))
        return false;
    out->name = announced_name(rp__reply_map_get(node, "hostname"));
    *master = !strcmp(role->str, "master");
    *online = rp__reply_is_text(health) && !strcmp(health->str, "online");
    return true;
}

/* A shard of CLUSTER SHARDS: its slots (pairs of bounds) and its nodes.
 * Its master is the last node with that role; a master that failed and
 * whose slots went to its replica stays listed, alone and down, until it
 * is forgotten: it serves nothing, and is left out. */
static int shards_entry(rp__topology *topo, const redisReply *entry, bool tls)
{
    const redisReply *slots = rp__reply_map_get(entry, "slots"), *nodes = rp__reply_map_get(entry, "nodes");
    node_ref node, master_node = {.name = NULL}; /* addr "": none yet */
    bool master, online, master_down = false;
    if (!slots || slots->type != REDIS_REPLY_ARRAY || !nodes || nodes->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t n = 0; n < nodes->elements; n++)
        if (shards_node(nodes->element[n], tls, &node, &master, &online) && master) {
            master_node = node;
            master_down |= !online;
        }
    if (!master_node.addr[0] || (master_down && !slots->elements))
        return 0;
    int rc, index = shard_add(topo, &master_node);
    if (index < 0)
        return index;
    for (size_t n = 0; n < nodes->elements; n++)
        if (shards_node(nodes->element[n], tls, &node, &master, &online) && !master && online &&
            (rc = replica_add(topo, index, &node)) < 0)
            return rc;
    for (size_t s = 0; s + 1 < slots->elements; s += 2)
        assign(topo, slots->element[s], slots->element[s + 1], index);
    return 0;
}

int rp__topology_from_shards(rp__topology *topo, const redisReply *reply, bool tls)
{
    int rc = topology_start(topo, reply);
    for (size_t i = 0; rc == 0 && i < reply->elements; i++)
        rc = shards_entry(topo, reply->element[i], tls);
    return topology_end(topo, rc);
}

/* Shards by master address while CLUSTER SLOTS is read: open addressing
 * over shard index + 1, at least twice as many entries as shards can be
 * made, so that a reply of many ranges costs what it weighs, not its
 * square. */
typedef struct master_index {
    uint16_t *entry;
    size_t mask;
} master_index;

static int master_index_init(master_index *index, size_t ranges)
{
    size_t size = 64;
    while (size < 2 * RP__MIN(ranges, (size_t)RP__MAX_NODES))
        size *= 2;
    index->mask = size - 1;
    index->entry = rp__calloc(size, sizeof *index->entry);
    return index->entry ? 0 : -ENOMEM;
}

size_t rp__addr_hash(const char *addr)
{
    uint32_t hash = 2166136261u; /* FNV-1a */
    while (*addr)
        hash = (hash ^ (unsigned char)*addr++) * 16777619u;
    return hash;
}

/* The shard whose master is addr (*found), or a new one: its index, or a
 * negative code from shard_add. */
static int shard_of_master(rp__topology *topo, master_index *index, const node_ref *master, bool *found)
{
    size_t i = rp__addr_hash(master->addr) & index->mask;
    for (; index->entry[i]; i = (i + 1) & index->mask)
        if (!strcmp(topo->shards[index->entry[i] - 1].master.addr, master->addr)) {
            *found = true;
            return index->entry[i] - 1;
        }
    *found = false;
    int shard = shard_add(topo, master);
    if (shard >= 0)
        index->entry[i] = (uint16_t)(shard + 1);
    return shard;
}

/* A node of CLUSTER SLOTS: [host, port, id, {hostname, ...}] (Redis 7
 * adds the map of metadata). False without a usable address. */
static bool slots_node(const redisReply *node, node_ref *out)
{
    if (node->type != REDIS_REPLY_ARRAY || node->elements < 2 ||
        !format_addr(out->addr, node->element[0], node->element[1]))
        return false;
    out->name = node->elements > 3 ? announced_name(rp__reply_map_get(node->element[3], "hostname")) : NULL;
    return true;
}

/* A range of CLUSTER SLOTS: [first, last, master, replica...]. A master
 * serving several ranges has one shard. */
static int slots_range(rp__topology *topo, master_index *index, const redisReply *range)
{
    node_ref node;
    bool found;
    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || !slots_node(range->element[2], &node))
        return 0;
    int rc, shard = shard_of_master(topo, index, &node, &found);
    if (shard < 0)
        return shard;
    for (size_t r = 3; !found && r < range->elements; r++)
        if (slots_node(range->element[r], &node) && (rc = replica_add(topo, shard, &node)) < 0)
            return rc;
    assign(topo, range->element[0], range->element[1], shard);
    return 0;
}

int rp__topology_from_slots(rp__topology *topo, const redisReply *reply)
{
    master_index index = {0};
    int rc = topology_start(topo, reply);
    if (rc == 0)
        rc = master_index_init(&index, reply->elements);
    for (size_t i = 0; rc == 0 && i < reply->elements; i++)
        rc = slots_range(topo, &index, reply->element[i]);
    rp__free(index.entry);
    return topology_end(topo, rc);
}

void rp__topology_free(rp__topology *topo)
{
    for (int i = 0; i < topo->nshards; i++) {
        node_desc_free(&topo->shards[i].master);
        for (int r = 0; r < topo->shards[i].nreplicas; r++)
            node_desc_free(&topo->shards[i].replicas[r]);
    }
    rp__free(topo->shards);
    topo->shards = NULL;
    topo->nshards = topo->cap = topo->nodes = 0;
}
