/* Following a Sentinel-managed master (sentinel.c): which address the
 * client's pool dials, learnt from the sentinels and kept current. */
#ifndef RP_SENTINEL_H
#define RP_SENTINEL_H

#include "pool.h"
#include "redis.h"

typedef struct rp__sentinel rp__sentinel;

/* Starts discovery at once; the data pool (rp__pool_new_untargeted) is
 * pointed at the master with rp__pool_set_target. opts are rp_client_new's
 * (already checked): master_name, sentinel_addrs and credentials, and the
 * pool's dial and read timeouts, which bound each sentinel's answer. */
int rp__sentinel_new(rp__sentinel **out, rp_loop *loop, const rp_client_options *opts, rp_pool *data);
/* on_switch(data) runs each time the target changes (rp_client: commands
 * waiting to be sent again need not wait out their backoff). */
void rp__sentinel_on_switch(rp__sentinel *s, void (*on_switch)(void *data), void *data);
/* A data node said it is not the master (ROLE, READONLY): ask again
 * (at most one round at a time, and a few per second). */
void rp__sentinel_suspect(rp__sentinel *s);
/* Where a read goes (replica_only, route_randomly): a usable replica's
 * client, picked at random, or NULL: the master. */
rp_client *rp__sentinel_read_client(rp__sentinel *s);
/* Why the last round failed, or NULL. */
const char *rp__sentinel_error(const rp__sentinel *s);
/* Stops asking, closes every sentinel connection and the replicas' clients
 * (reads sent on them finish first) and frees s; done runs
 * afterwards, never inside this call. The data pool is not touched again. */
void rp__sentinel_close(rp__sentinel *s, void (*done)(void *data), void *data);

#endif
