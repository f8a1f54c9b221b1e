/* What the Redis connection layer (redis.c) tells the client above it. */
#ifndef RP_REDIS_H
#define RP_REDIS_H

#include "internal.h"

/* Inside a reply callback with an error: the command's bytes never reached
 * the kernel, so the server cannot have run it. */
bool rp__redis_failed_unsent(const rp_conn *conn);

#endif
