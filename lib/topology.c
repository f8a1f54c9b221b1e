/* Reads a cluster's layout from CLUSTER SHARDS (Redis 7) or CLUSTER SLOTS:
 * which shard serves each slot, and the addresses of each shard's master
 * and online replicas. */
#include "topology.h"
#include "reply.h"

#include <stdio.h>
#include <string.h>

static bool as_int(const redisReply *r, long long *out)
{
    if (r && r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return true;
    }
    char *end;
    if (!rp__reply_is_text(r))
        return false;
    *out = strtoll(r->str, &end, 10);
    return end != r->str && !*end;
}

/* "host:port", bracketing an IPv6 host; false when either is missing. */
static bool format_addr(char *out, const redisReply *host, const redisReply *port)
{
    long long number;
    if (!rp__reply_is_text(host) || !host->len || !strcmp(host->str, "?") || !as_int(port, &number) || number <= 0)
        return false;
    int len = strchr(host->str, ':') ? snprintf(out, RP__ADDR_MAX, "[%s]:%lld", host->str, number)
                                     : snprintf(out, RP__ADDR_MAX, "%s:%lld", host->str, number);
    return len > 0 && len < RP__ADDR_MAX;
}

static void assign(rp__topology *topo, long long first, long long last, int shard)
{
    for (long long slot = first < 0 ? 0 : first; slot <= last && slot < RP_CLUSTER_SLOTS; slot++)
        topo->owner[slot] = (uint16_t)(shard + 1);
}

static rp__shard_desc *shard_add(rp__topology *topo, size_t cap)
{
    if ((size_t)topo->nshards >= cap)
        return NULL;
    rp__shard_desc *shard = &topo->shards[topo->nshards++];
    memset(shard, 0, sizeof *shard);
    return shard;
}

static void replica_add(rp__shard_desc *shard, const char *addr)
{
    if (shard->nreplicas < RP__MAX_REPLICAS)
        memcpy(shard->replicas[shard->nreplicas++], addr, RP__ADDR_MAX);
}

static int topology_start(rp__topology *topo, const redisReply *reply)
{
    memset(topo, 0, sizeof *topo);
    if (reply->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    topo->shards = rp__calloc(reply->elements ? reply->elements : 1, sizeof *topo->shards);
    return topo->shards ? 0 : -ENOMEM;
}

static int topology_end(rp__topology *topo)
{
    for (int slot = 0; slot < RP_CLUSTER_SLOTS; slot++)
        if (topo->owner[slot])
            return 0;
    rp__topology_free(topo);
    return -EPROTO;
}

/* A node of CLUSTER SHARDS: a flat map (id, port, ip, endpoint, role,
 * health, ...); the endpoint is the address clients should use. Returns
 * whether it is a master that is not online. */
static bool shards_node(rp__shard_desc *shard, const redisReply *node)
{
    char addr[RP__ADDR_MAX];
    const redisReply *endpoint = rp__reply_map_get(node, "endpoint"), *role = rp__reply_map_get(node, "role");
    const redisReply *health = rp__reply_map_get(node, "health");
    bool online = rp__reply_is_text(health) && !strcmp(health->str, "online");
    if (!format_addr(addr, endpoint, rp__reply_map_get(node, "port")) && !format_addr(addr, rp__reply_map_get(node, "ip"), rp__reply_map_get(node, "port")))
        return false;
    if (!rp__reply_is_text(role))
        return false;
    if (!strcmp(role->str, "master")) {
        memcpy(shard->master, addr, RP__ADDR_MAX);
        return !online;
    }
    if (online)
        replica_add(shard, addr);
    return false;
}

int rp__topology_from_shards(rp__topology *topo, const redisReply *reply)
{
    int rc = topology_start(topo, reply);
    for (size_t i = 0; rc == 0 && i < reply->elements; i++) {
        const redisReply *slots = rp__reply_map_get(reply->element[i], "slots"), *nodes = rp__reply_map_get(reply->element[i], "nodes");
        if (!slots || slots->type != REDIS_REPLY_ARRAY || !nodes || nodes->type != REDIS_REPLY_ARRAY)
            continue;
        rp__shard_desc *shard = shard_add(topo, reply->elements);
        bool master_down = false;
        for (size_t n = 0; n < nodes->elements; n++)
            master_down |= shards_node(shard, nodes->element[n]);
        /* A master that failed and whose slots went to its replica stays
         * listed, alone, until it is forgotten: it serves nothing. */
        if (!shard->master[0] || (master_down && !slots->elements)) {
            topo->nshards--;
            continue;
        }
        long long first, last;
        for (size_t s = 0; s + 1 < slots->elements; s += 2)
            if (as_int(slots->element[s], &first) && as_int(slots->element[s + 1], &last))
                assign(topo, first, last, topo->nshards - 1);
    }
    return rc ? rc : topology_end(topo);
}

static int shard_of_master(const rp__topology *topo, const char *addr)
{
    for (int i = 0; i < topo->nshards; i++)
        if (!strcmp(topo->shards[i].master, addr))
            return i;
    return -1;
}

/* A range of CLUSTER SLOTS: [first, last, master, replica...], each node
 * [host, port, id, ...]. A master serving several ranges has one shard. */
static void slots_range(rp__topology *topo, const redisReply *range, size_t cap)
{
    char addr[RP__ADDR_MAX];
    long long first, last;
    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || !as_int(range->element[0], &first) ||
        !as_int(range->element[1], &last))
        return;
    const redisReply *master = range->element[2];
    if (master->type != REDIS_REPLY_ARRAY || master->elements < 2 ||
        !format_addr(addr, master->element[0], master->element[1]))
        return;
    int index = shard_of_master(topo, addr);
    if (index < 0) {
        rp__shard_desc *shard = shard_add(topo, cap);
        if (!shard)
            return;
        memcpy(shard->master, addr, RP__ADDR_MAX);
        index = topo->nshards - 1;
        for (size_t r = 3; r < range->elements; r++) {
            const redisReply *replica = range->element[r];
            if (replica->type == REDIS_REPLY_ARRAY && replica->elements >= 2 &&
                format_addr(addr, replica->element[0], replica->element[1]))
                replica_add(shard, addr);
        }
    }
    assign(topo, first, last, index);
}

int rp__topology_from_slots(rp__topology *topo, const redisReply *reply)
{
    int rc = topology_start(topo, reply);
    for (size_t i = 0; rc == 0 && i < reply->elements; i++)
        slots_range(topo, reply->element[i], reply->elements);
    return rc ? rc : topology_end(topo);
}

void rp__topology_free(rp__topology *topo)
{
    rp__free(topo->shards);
    topo->shards = NULL;
    topo->nshards = 0;
}
