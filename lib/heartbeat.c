/* See heartbeat.h. The PING goes through rp_conn_unsubscribe, the call
 * that sends a command on a subscribed connection without a reply
 * callback of its own: its "pong" comes back as a message. */
#include "heartbeat.h"
#include "redis.h"

#include <errno.h>
#include <string.h>

static void arm(rp__heartbeat *hb) { rp__timer_arm(hb->loop, &hb->timer, rp__loop_now(hb->loop) + hb->interval_ns); }

static void fired(rp__timer *timer)
{
    rp__heartbeat *hb = RP__CONTAINER_OF(timer, rp__heartbeat, timer);
    int rc = hb->pong_owed ? -ETIMEDOUT : rp_conn_unsubscribe(hb->conn, 1, (const char *[]){"PING"}, NULL);
    if (rc < 0) {
        rp__heartbeat_stop(hb);
        hb->lost(hb, rc);
        return;
    }
    hb->pong_owed = true;
    arm(hb);
}

void rp__heartbeat_init(rp__heartbeat *hb, rp_loop *loop, uint32_t interval_ms,
                        void (*lost)(rp__heartbeat *hb, int reason))
{
    memset(hb, 0, sizeof *hb);
    hb->loop = loop;
    hb->interval_ns = (uint64_t)interval_ms * RP__NS_PER_MS;
    hb->lost = lost;
    rp__timer_init(&hb->timer, fired, false);
}

void rp__heartbeat_start(rp__heartbeat *hb, rp_conn *conn)
{
    hb->conn = conn;
    hb->pong_owed = false;
    rp__redis_in_background(conn); /* a watch, which holds no loop */
    arm(hb);
}

void rp__heartbeat_stop(rp__heartbeat *hb)
{
    rp__timer_disarm(hb->loop, &hb->timer);
    hb->conn = NULL;
    hb->pong_owed = false;
}

void rp__heartbeat_saw(rp__heartbeat *hb, const char *kind)
{
    if (!strcmp(kind, "pong"))
        hb->pong_owed = false;
}
