/* A subscriber's heartbeat: a subscribed connection that stops answering
 * (a frozen or partitioned server) stays open, and only an unanswered
 * PING shows it. Every interval a PING goes out on the subscription; when
 * the next one is due and the last got no "pong", or a PING cannot be
 * sent, lost() runs (once: the heartbeat then stops). Used by the
 * Sentinel subscription (sentinel.c) and the cache's invalidation
 * subscriber (cache.c). */
#ifndef RP_HEARTBEAT_H
#define RP_HEARTBEAT_H

#include "internal.h"

#include <hiredis/hiredis.h>

typedef struct rp__heartbeat rp__heartbeat;
struct rp__heartbeat {
    rp__timer timer;
    rp_loop *loop;
    rp_conn *conn;
    uint64_t interval_ns;
    bool pong_owed;
    void (*lost)(rp__heartbeat *hb, int reason);
};

void rp__heartbeat_init(rp__heartbeat *hb, rp_loop *loop, uint32_t interval_ms,
                        void (*lost)(rp__heartbeat *hb, int reason));
/* The subscription on conn took: PINGs start, and the subscription, a
 * watch of the library's own, no longer holds rp_loop_run(RP_RUN_DEFAULT). */
void rp__heartbeat_start(rp__heartbeat *hb, rp_conn *conn);
void rp__heartbeat_stop(rp__heartbeat *hb);
/* Every message of the subscription, by its kind: a "pong" answers. */
void rp__heartbeat_saw(rp__heartbeat *hb, const char *kind);

#endif
