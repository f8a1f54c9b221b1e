/* A cluster's layout as a node describes it (topology.c). */
#ifndef RP_TOPOLOGY_H
#define RP_TOPOLOGY_H

#include "internal.h"

#include <hiredis/hiredis.h>
#include <ringpool/cluster.h>

#define RP__MAX_REPLICAS 8
#define RP__ADDR_MAX 64

typedef struct rp__shard_desc {
    char master[RP__ADDR_MAX];
    char replicas[RP__MAX_REPLICAS][RP__ADDR_MAX]; /* those online */
    int nreplicas;
} rp__shard_desc;

typedef struct rp__topology {
    rp__shard_desc *shards;
    int nshards;
    uint16_t owner[RP_CLUSTER_SLOTS]; /* shard index + 1; 0: no shard serves it */
} rp__topology;

/* From the reply of CLUSTER SHARDS or of CLUSTER SLOTS: 0, -EPROTO for a
 * reply of another shape or one that assigns no slot, -ENOMEM. */
int rp__topology_from_shards(rp__topology *topo, const redisReply *reply);
int rp__topology_from_slots(rp__topology *topo, const redisReply *reply);
void rp__topology_free(rp__topology *topo);

#endif
