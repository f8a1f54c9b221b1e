/* The connection pool's private parts: its record, and what each of its
 * files offers the files above it. Bottom first; a file calls only those
 * listed before it, never one above (pool.h holds the outside's view):
 *
 *   pool_record.c  connection records, and the caller's data on them
 *   pool_dial.c    dialling, fail-fast and the recovery probe
 *   pool_idle.c    idle connections and their health
 *   pool_close.c   closing, and when a closed pool is done
 *   pool.c         the hand-out: turns, gets, puts, cancels, and the
 *                  connection events, which all end up handing out
 *   pool_new.c     creation, options, and the target dials go to
 *
 * What a lower file learns that concerns a request (a dial ended, a check
 * answered, a connection broke) reaches the hand-out as a return value
 * (rp__cp_dial_settle), or by way of the outside: the connection layer's
 * events (pool.c's table, which every record carries), the resolver's
 * callback and the timers, all wired up in pool_new.c. Never by a call
 * back up. */
#ifndef RP_POOL_CONN_H
#define RP_POOL_CONN_H

#include "conn.h"
#include "pool.h"
#include "request.h"

enum {
    RP__CP_REQ_NEEDS_CONN = RP__REQ_OWN, /* holds a turn, waits for a dial */
    RP__CP_REQ_CHECKING,                 /* holds a turn, its connection is being checked */
    RP__CP_REQ_DIALING,                  /* rp_pool_new_conn: waits for its own dial */
};

typedef struct rp__conn_pool rp__conn_pool;
struct rp__conn_pool {
    rp_pool base;
    rp_pool_options opts;
    const rp__conn_events *events; /* pool.c's, given to every record */
    rp__addrs *addrs;         /* a numeric address or a path: every dial's */
    rp__resolver *resolver;   /* a host name instead (both NULL once closed) */
    rp__list resolving;       /* dials waiting for the resolver, oldest first */
    const char *resolve_error; /* the last failed lookup's message */
    struct rp__tls_ctx *tls;  /* TLS: one context for every dial; NULL: off */
    int target_error;     /* no target (rp__pool_set_target): 0, dials wait; < 0, they fail */
    char addr_text[128];  /* as given, for the dial hooks */
    bool closed;
    bool handing_out_turns;
    bool pumping, pump_again; /* pump_dials runs; it was asked again meanwhile */

    rp__reqs reqs;        /* every get, and the waiters for a turn */
    unsigned turns_used;
    rp__list needs_conn;  /* RP__CP_REQ_NEEDS_CONN, oldest first */
    rp__list idle;        /* put pushes at the front */
    unsigned pooled_open; /* pooled connections open (go-redis poolSize) */
    unsigned open_conns;  /* every open connection */
    unsigned dialing;     /* pooled dials in flight, set-up included */
    unsigned new_conn_dials;
    unsigned orphan_checks; /* checks whose get was cancelled: a connection on its way */
    unsigned parked;      /* put back while a send's notification is owed: on their way too */
    unsigned consecutive_dial_errors;
    uint32_t probe_interval_ms; /* until the next probe: doubles after each that fails */
    rp__list all;         /* every record in use */
    rp__list spare;       /* released records, reused oldest first */
    rp_stats stats;

    rp__timer maintenance; /* idle watches and expiry */
    rp__timer probe;       /* redials while dials fail fast */
};

static inline rp_loop *rp__cp_loop(const rp__conn_pool *cp) { return cp->base.loop; }
static inline uint64_t rp__cp_now(const rp__conn_pool *cp) { return rp__loop_now(rp__cp_loop(cp)); }
static inline uint64_t rp__ms_ns(uint32_t ms) { return (uint64_t)ms * RP__NS_PER_MS; }
static inline rp__conn_pool *rp__cp_of(const rp_conn *conn) { return conn->owner; }
/* The connection on an idle, spare or resolving list. */
static inline rp_conn *rp__cp_link_conn(rp__link *link)
{
    return link ? RP__CONTAINER_OF(link, rp_conn, idle_link) : NULL;
}

/* ------------------------------------------------------ pool_record.c */

/* A record for a new connection (NULL: out of memory), and back to the spares. */
rp_conn *rp__cp_record_take(rp__conn_pool *cp);
void rp__cp_record_spare(rp__conn_pool *cp, rp_conn *conn);
/* The record is drained: the caller's data goes, the record is spare. */
void rp__cp_record_release(rp__conn_pool *cp, rp_conn *conn);
/* Frees the spare records (the pool is done). */
void rp__cp_records_free(rp__conn_pool *cp);

/* -------------------------------------------------------- pool_dial.c */

/* Starts a dial; a request that must have this very connection passes
 * itself as for_req (rp_pool_new_conn), others let it go to whoever waits. */
int rp__cp_dial_start(rp__conn_pool *cp, bool pooled, rp__req *for_req);
/* Connects at once, or queues the dial for the lookup or the target. */
int rp__cp_dial_connect(rp__conn_pool *cp, rp_conn *conn);
/* A dial ends, whatever its outcome: its hook, and one dial less in flight. */
void rp__cp_dial_ended(rp__conn_pool *cp, rp_conn *conn, int status);
/* Books a dial's outcome; a failed one is closed. False when the pool
 * closed under it: the record is gone and nobody is to hear of it. */
bool rp__cp_dial_settle(rp__conn_pool *cp, rp_conn *conn, int status, bool in_setup);
void rp__cp_count_dial_error(rp__conn_pool *cp, int status);
/* The server answered: fail-fast ends. */
void rp__cp_dial_connected(rp__conn_pool *cp);
bool rp__cp_fail_fast(const rp__conn_pool *cp);
/* Fail-fast, and requests waiting for a connection that no dial covers. */
bool rp__cp_fail_fast_pending(const rp__conn_pool *cp);
/* Waiting requests or min_idle_conns call for a dial, and limits allow one. */
bool rp__cp_want_dial(const rp__conn_pool *cp);
/* Connections due to become free for requests waiting for one. */
unsigned rp__cp_conns_coming(const rp__conn_pool *cp);
/* max_active_conns is reached. */
bool rp__cp_exhausted(const rp__conn_pool *cp);
void rp__cp_probe_fired(rp__timer *timer);
/* Lets go of the addresses or the resolver. */
void rp__cp_target_release(rp__conn_pool *cp);

/* -------------------------------------------------------- pool_idle.c */

void rp__cp_idle_add(rp__conn_pool *cp, rp_conn *conn);
/* The next idle connection not expired (those closed on the way), or NULL. */
rp_conn *rp__cp_idle_take(rp__conn_pool *cp, uint64_t now);
/* The next idle connection if it may go out unchecked, else NULL and
 * nothing changes. */
rp_conn *rp__cp_idle_take_ready(rp__conn_pool *cp, uint64_t now);
/* max_idle_conns is reached. */
bool rp__cp_idle_full(const rp__conn_pool *cp);
bool rp__cp_conn_expired(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now);
bool rp__cp_conn_known_healthy(const rp__conn_pool *cp, const rp_conn *conn, uint64_t now);
/* Out of the pool's books, and closed; discard also counts it stale. */
void rp__cp_conn_remove(rp__conn_pool *cp, rp_conn *conn, rp_close_reason reason);
void rp__cp_conn_discard(rp__conn_pool *cp, rp_conn *conn, rp_close_reason reason);
uint8_t rp__cp_unread_at_put(const rp_conn *conn);
/* A check of conn for req, or for nobody (a connection on its way). */
void rp__cp_check_start(rp__conn_pool *cp, rp_conn *conn, rp__req *req);
void rp__cp_check_unheld(rp__conn_pool *cp, rp_conn *conn);
/* A connection put back while its send waits for the kernel's
 * notification waits for it, neither idle nor held; unpark gives it back
 * to the hand-out, as its holder left it, to be placed as a put places one. */
void rp__cp_park(rp__conn_pool *cp, rp_conn *conn);
void rp__cp_unpark(rp__conn_pool *cp, rp_conn *conn);
/* Watches and expiry of the idle connections, when the timer fires. */
void rp__cp_idle_maintain(rp__conn_pool *cp);

/* ------------------------------------------------------- pool_close.c */

int rp__cp_close(rp_pool *pool, rp_close_cb cb, void *data);
/* The connection events' and the requests' word that a close may be done. */
void rp__cp_conn_released(rp_conn *conn);
void rp__cp_after_callback(rp__reqs *reqs);

/* ------------------------------------------------------------- pool.c */

extern const rp__pool_vtable rp__cp_vtable;
extern const rp__conn_events rp__cp_events;
/* Hands a dial's outcome to its request or whoever waits. */
void rp__cp_dial_finish(rp__conn_pool *cp, rp_conn *conn, int status, bool in_setup);
/* Starts the dials that waiting requests and min_idle_conns call for. */
void rp__cp_pump_dials(rp__conn_pool *cp);
void rp__cp_maintenance_fired(rp__timer *timer);

#endif
