/* ringpool's Redis Cluster client: one rp_client (and its pool) per node,
 * all on one loop; commands routed by their keys' hash slot, redirects
 * followed, the topology kept fresh. ringpool.h includes this. */
#ifndef RINGPOOL_CLUSTER_H
#define RINGPOOL_CLUSTER_H

#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RP_CLUSTER_SLOTS 16384
/* The longest node address, "host:port" with its NUL: a host name of up
 * to 255 bytes (cluster-preferred-endpoint-type hostname), or a bracketed
 * IPv6 address. Seeds, layouts and redirects naming longer ones are
 * refused. */
#define RP_CLUSTER_ADDR_MAX 264

/* The hash slot of a key: CRC16 (XMODEM) mod 16384 of the key, or of the
 * part between the first '{' and the next '}' when that part is not empty
 * ({user1000}.following and {user1000}.followers share a slot). */
RP_EXTERN int rp_cluster_key_slot(const char *key, size_t len);

/* A cluster client (docs/cluster.md). The topology comes from
 * CLUSTER SHARDS (CLUSTER SLOTS on servers without it), asked of a known
 * node or a seed; it is read again after a MOVED, when a node fails, and
 * every refresh_interval_ms (at most one read in flight, and not more often
 * than every 100 ms). Nodes that left are closed; new ones get a client.
 * A layout naming more nodes (masters and replicas) than RP_CLUSTER_SLOTS
 * is refused, as one that assigns no slot: no cluster has that many.
 *
 * Routing: a command goes to the master of its keys' slot. Its keys are
 * found as the server finds them, from its COMMAND table (read once; the
 * first commands wait for it, and if it fails, commands route by argv[1]
 * while later topology reads ask again, backing off from 1 s to 64 s): the
 * key specs of each command and subcommand (a range, a numkeys argument as
 * EVAL's, the keys after XREAD's STREAMS), or first, last and step. A
 * command whose key specs make no sense (an index, count or step out of
 * range: a server's reply is not trusted) is routed by its first, last
 * and step alone. Keys in different slots fail the command before it is
 * sent, with RP_ECROSSSLOT. A command without keys goes to any master
 * (key_index overrides: route by that argument). With read_from_replicas, read-only commands go
 * round-robin to the slot's replicas (each connection sends READONLY at
 * set-up), or its master when none is known or a replica failed it.
 *
 * Redirects: MOVED updates the slot at once (its master, and its shard:
 * the named node's, for replica reads), refreshes the topology and
 * sends the command to the node named; ASK sends ASKING and the command
 * together on one connection of the node named, once. TRYAGAIN is sent
 * again after a backoff (the node options' retry backoff); CLUSTERDOWN,
 * LOADING, MASTERDOWN and READONLY (a master became a replica) too, with
 * the topology refreshed; and so is a command whose node failed, after the
 * node client's own retries, when it provably did not run or may safely
 * run twice (rp_client's rule: an INCR whose reply was lost is not). All
 * of these together are bounded by max_redirects; past that the command
 * ends with its last reply or error. Every accepted command's callback
 * runs exactly once. */
typedef struct rp_cluster rp_cluster;
typedef struct rp_cluster_options {
    const char *const *seeds; /* "host:port" of one or more nodes */
    int nseeds;
    /* Each node's client: its pool, timeouts, password, retries,
     * auto-pipelining. node.pool.addr is set per node; node.db must be 0.
     * Over TLS (node.pool.tls) every node speaks TLS: its TLS port is the
     * one used (CLUSTER SHARDS' tls-port), and the name its certificate
     * must carry is the host name the node announces
     * (cluster-announce-hostname), else node.pool.tls.server_name, else
     * the host of its address. Redirects keep TLS. */
    rp_client_options node;
    int max_redirects;            /* rp_cluster_options_init: 3 (go-redis); 0 or less: none */
    bool read_from_replicas;      /* read-only commands to replicas */
    uint32_t refresh_interval_ms; /* periodic topology refresh; default (0) 5000 */
} rp_cluster_options;

typedef void (*rp_cluster_reply_cb)(rp_cluster *cluster, const redisReply *reply, int status, void *data);
typedef void (*rp_cluster_close_cb)(rp_cluster *cluster, void *data);

RP_EXTERN void rp_cluster_options_init(rp_cluster_options *opts);
/* -EINVAL for no seeds, a malformed seed address, or node.db not 0. The
 * first topology is read in the background; commands made before it
 * arrives wait for it (RP_ECLUSTERDOWN if no seed answers). */
RP_EXTERN int rp_cluster_new(rp_cluster **cluster, rp_loop *loop, const rp_cluster_options *opts);
/* The arguments are copied once, during the call (the caller may free
 * them on return), as rp_client_command's, and that copy serves every
 * node the command is sent to (MOVED, ASK, retries): an argument of
 * 16 KiB or more goes out from it by a vectored send, never copied again
 * into an output buffer. */
RP_EXTERN int rp_cluster_command(rp_cluster *cluster, rp_cluster_reply_cb cb, void *data, int argc,
                                 const char *const *argv, const size_t *argvlen);
typedef struct rp_cluster_command_options {
    unsigned flags;      /* RP_CMD_* */
    uint32_t timeout_ms; /* the whole command, redirects included; 0 = none */
    int key_index;       /* > 0: argv[key_index] is the key that routes it */
    uint32_t cache_ttl_ms; /* RP_CMD_CACHE: as rp_command_options' */
} rp_cluster_command_options;
/* Returns a positive id for rp_cluster_cancel, or a negative code:
 * RP_ECROSSSLOT, -EINVAL (key_index out of range), RP_ECLOSED.
 * RP_CMD_CACHE (docs/caching.md): answered from the cache of the node
 * serving the key's slot, as rp_client_command_ex's, when node.cache_bytes
 * gives every node's client a cache (and its own invalidation subscriber
 * on that node; cache_bytes bounds each node's cache). -EINVAL without
 * node caches, for a command rp_client would refuse, or with a key_index
 * other than 0 or 1. A cached read goes to the slot's master, never a
 * replica (read-your-writes: writes invalidate the master's client's
 * cache). A slot that moves away from a node (a layout read, a MOVED)
 * takes its keys out of that node's cache. A hit's completion is queued
 * at once: rp_cluster_cancel returns -ENOENT for it (with cluster hooks
 * set, which see hits as commands, a cancel ends it with -ECANCELED). */
RP_EXTERN int64_t rp_cluster_command_ex(rp_cluster *cluster, const rp_cluster_command_options *opts,
                                        rp_cluster_reply_cb cb, void *data, int argc, const char *const *argv,
                                        const size_t *argvlen);
/* The printf-style forms (the format as rp_conn_commandf's); the va_list
 * one takes options (NULL: none) and returns the command's id. */
RP_EXTERN int rp_cluster_commandf(rp_cluster *cluster, rp_cluster_reply_cb cb, void *data, const char *format, ...);
RP_EXTERN int64_t rp_cluster_vcommandf(rp_cluster *cluster, const rp_cluster_command_options *opts,
                                       rp_cluster_reply_cb cb, void *data, const char *format, va_list ap);
/* As rp_client_cancel: the callback gets -ECANCELED later in this loop
 * iteration; -ENOENT if the command has completed or its end is queued. */
RP_EXTERN int rp_cluster_cancel(rp_cluster *cluster, int64_t id);
/* Graceful, as rp_client_close: commands at a node finish there, the rest
 * (waiting for the topology or a retry) end with RP_ECLOSED; then every
 * node's client closes and cb runs. */
RP_EXTERN int rp_cluster_close(rp_cluster *cluster, rp_cluster_close_cb cb, void *data);

/* Hooks (NULL clears them): command_start and command_end once per
 * cluster command (its retries: the cluster's resends), the others from
 * every node's pool, nodes found later included. RP_ECLOSED once closing. */
RP_EXTERN int rp_cluster_set_hooks(rp_cluster *cluster, const rp_hooks *hooks);

/* Per node: its address, role, slots served, and its pool's stats. Fills
 * up to max entries; returns the number of nodes. */
typedef struct rp_cluster_node_info {
    char addr[RP_CLUSTER_ADDR_MAX];
    bool master;
    int slots;
    rp_stats stats;
} rp_cluster_node_info;
RP_EXTERN int rp_cluster_nodes(const rp_cluster *cluster, rp_cluster_node_info *out, int max);

typedef struct rp_cluster_stats {
    uint64_t moved;          /* MOVED replies followed */
    uint64_t asked;          /* ASK replies followed */
    uint64_t retries;        /* commands sent again for any other reason */
    uint64_t refreshes;      /* topologies read and applied */
    uint64_t refresh_errors; /* reads that found no node to answer */
} rp_cluster_stats;
RP_EXTERN void rp_cluster_get_stats(const rp_cluster *cluster, rp_cluster_stats *out);
/* The node caches together: counters summed over every node client since
 * rp_cluster_new (those closed since included), bytes and entries held
 * now, subscribed when every open node's subscriber is up. -EINVAL for a
 * NULL argument or a cluster without node caches. */
RP_EXTERN int rp_cluster_cache_stats(const rp_cluster *cluster, rp_cache_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* RINGPOOL_CLUSTER_H */
