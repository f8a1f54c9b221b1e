/* A cluster's layout as a node describes it (topology.c). */
#ifndef RP_TOPOLOGY_H
#define RP_TOPOLOGY_H

#include "internal.h"

#include <hiredis/hiredis.h>
#include <ringpool/cluster.h>

#define RP__MAX_REPLICAS 8
#define RP__ADDR_MAX RP_CLUSTER_ADDR_MAX /* "host:port", NUL included */
/* The most nodes (masters and replicas) a layout may name: no cluster has
 * that many, each costs a node client, and owner[] keeps a shard's index
 * + 1 in 16 bits. */
#define RP__MAX_NODES RP_CLUSTER_SLOTS

typedef struct rp__node_desc {
    char *addr; /* "host:port" */
    char *name; /* the host name it announces (cluster-announce-hostname), NULL if none */
} rp__node_desc;

typedef struct rp__shard_desc {
    rp__node_desc master;
    rp__node_desc replicas[RP__MAX_REPLICAS]; /* those online */
    int nreplicas;
} rp__shard_desc;

typedef struct rp__topology {
    rp__shard_desc *shards; /* made as shards are found, not per element read */
    int nshards, cap;
    int nodes; /* addresses kept: masters and replicas */
    uint16_t owner[RP_CLUSTER_SLOTS]; /* shard index + 1; 0: no shard serves it */
} rp__topology;

/* From the reply of CLUSTER SHARDS or of CLUSTER SLOTS: 0, -EPROTO for a
 * reply of another shape, one that assigns no slot or one naming more
 * than RP__MAX_NODES nodes, -ENOMEM. Numbers out of range (a slot, a port)
 * leave out the range or node that holds them. CLUSTER SHARDS lists a
 * node's "port" (plaintext) and "tls-port" whatever the asking connection
 * is (CLUSTER SLOTS and MOVED answer with the asker's kind): tls picks
 * the TLS one, else the plaintext one, each falling back to the other. */
int rp__topology_from_shards(rp__topology *topo, const redisReply *reply, bool tls);
int rp__topology_from_slots(rp__topology *topo, const redisReply *reply);
void rp__topology_free(rp__topology *topo);
/* A hash of a node's address (FNV-1a), for tables of nodes. */
size_t rp__addr_hash(const char *addr);

#endif
