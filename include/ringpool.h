/* ringpool: a connection pool runtime on io_uring, with an async Redis
 * client. The conventions and contracts are at the top of ringpool/core.h. */
#ifndef RINGPOOL_H
#define RINGPOOL_H

/* Raw-pool users who never touch Redis may include ringpool/core.h alone,
 * which needs no hiredis. */
#include "ringpool/core.h"
#include "ringpool/redis.h"
#include "ringpool/cluster.h"

#endif /* RINGPOOL_H */
