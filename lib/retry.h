/* What a server's refusal says about a command, and the backoff (retry.c). */
#ifndef RP_RETRY_H
#define RP_RETRY_H

#include "internal.h"

#include <errno.h>
#include <hiredis/hiredis.h>

/* LOADING, READONLY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, NOREPLICAS, max clients. */
bool rp__reply_not_executed(const redisReply *reply);
/* The refusals rp_cluster follows itself: all of the above but max clients. */
bool rp__reply_cluster_refusal(const redisReply *reply);
/* READONLY or max clients: the connection is no use for this command. */
bool rp__reply_conn_unusable(const redisReply *reply);

uint64_t rp__retry_backoff_ns(rp_loop *loop, int attempt, uint32_t min_ms, uint32_t max_ms);

#endif
