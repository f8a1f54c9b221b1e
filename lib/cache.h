/* rp_client's client-side cache (cache.c): entries by command, grouped by
 * key, invalidated by the server through one subscriber connection. The
 * client calls it at four places: a command accepted (cmd_start), sent
 * on a connection (the connection's tracking brought up to date), its
 * reply read (kept if nothing invalidated its key meanwhile), and its end
 * (the pending marker or the hit's pin released). */
#ifndef RP_CACHE_H
#define RP_CACHE_H

#include "internal.h"

#include <hiredis/hiredis.h>

typedef struct rp__cache rp__cache;
typedef struct rp__cache_key rp__cache_key;
typedef struct rp__cache_entry rp__cache_entry;

/* What a command holds in the cache while it runs: a miss its key's
 * pending marker (key, and the key's generation when it was set), a hit
 * the entry it is answered with (pinned), a write the order to invalidate
 * its keys again when it ends.
 * One request for concurrent misses of one command (single flight): a
 * miss sent is a leader, listed on its key (flight); a miss of the same
 * command while the key's generation is still the leader's joins it
 * (leader set, listed on the leader's waiters) and is not sent. When the
 * leader ends with a reply, each waiter ends with that reply; when it
 * ends without one (failed, cancelled, timed out), each waiter is let go
 * to send its own, as a leader (it never joins again). */
typedef struct rp__cache_ref rp__cache_ref;
struct rp__cache_ref {
    rp__cache_key *key;
    rp__cache_entry *hit;
    uint64_t gen;
    uint32_t ttl_ms;
    bool write;
    bool leading;  /* on key->flights */
    rp__cache_ref *leader; /* a waiter's */
    rp__list waiters;      /* a leader's */
    rp__link flight;       /* on key->flights, or on its leader's waiters */
    int argc;              /* a leader's command (its own arguments) */
    const char *const *argv;
    const size_t *argvlen;
};

/* A waiter's leader ended: with its reply (status 0), or with none
 * (reply NULL: the waiter must send its own, rp__cache_resend). Set by the
 * client (rp__cache_set_joined_end). */
typedef void (*rp__cache_joined_end)(rp__cache_ref *waiter, const redisReply *reply, void *data);

/* NULL in *out when opts->cache_bytes is 0. The subscriber is dialled on
 * pool at once. */
int rp__cache_new(rp__cache **out, rp_loop *loop, rp_pool *pool, const rp_client_options *opts);
/* The client's pool, made after the cache (its set-up calls the cache). */
void rp__cache_set_pool(rp__cache *cache, rp_pool *pool);
void rp__cache_set_joined_end(rp__cache *cache, rp__cache_joined_end fn, void *data);
/* Dials the subscriber (once the client can set connections up). */
void rp__cache_open(rp__cache *cache);
void rp__cache_stats(const rp__cache *cache, rp_cache_stats *out);
/* The server changed (a Sentinel switch): everything goes, and the
 * subscriber is dialled again, to the pool's new target. */
void rp__cache_reset(rp__cache *cache);
/* Stops the subscriber (the pool's close waits for its connection). */
void rp__cache_close(rp__cache *cache);
/* After the pool has closed: every connection's record is gone. */
void rp__cache_free(rp__cache *cache);

/* A read whose reply depends on argv[1] alone (the cacheable list). */
bool rp__cache_cacheable(int argc, const char *const *argv, const size_t *argvlen);
/* A cluster node's cache: each key records its hash slot. */
void rp__cache_by_slot(rp__cache *cache);
/* Slots that left the node (a bit each, RP_CLUSTER_SLOTS bits; NULL:
 * every slot): their keys are dropped as if invalidated, their replies
 * in flight not kept. The node's server no longer tells of those keys. */
void rp__cache_drop_slots(rp__cache *cache, const uint8_t *slots);
/* -EINVAL unless the cache is on and the command may be cached; else the
 * entry's time to live in ms. */
int64_t rp__cache_accepts(const rp__cache *cache, uint32_t ttl_ms, int argc, const char *const *argv,
                          const size_t *argvlen);
/* The fast path of a hit: the entry holding the command's reply, pinned
 * (its ref's hit), or NULL. Only a cacheable command can have one, and
 * one with no key (argc < 2) is not looked up: no other check is needed
 * first. cache may be NULL. */
rp__cache_entry *rp__cache_hit(rp__cache *cache, int argc, const char *const *argv, const size_t *argvlen);
/* A hit its caller cannot answer (no memory for its record): not a hit
 * after all, and unpinned. */
void rp__cache_hit_abandon(rp__cache *cache, rp__cache_entry *entry);
/* The hit's command, as kept (it lives while the hit is pinned). */
void rp__cache_hit_args(const rp__cache_ref *ref, int *argc, const char *const **argv, const size_t **argvlen);
/* A command accepted. A cached read: HIT when answered from memory
 * (ref->hit set and pinned), JOINED when it waits for an identical read
 * in flight (see rp__cache_ref), else SEND, with its key's pending marker
 * set. Any other (readonly false): a write, whose keys are invalidated
 * now; SEND. */
typedef enum { RP__CACHE_SEND, RP__CACHE_HIT, RP__CACHE_JOINED } rp__cache_start_result;
rp__cache_start_result rp__cache_start(rp__cache *cache, rp__cache_ref *ref, bool cached, bool readonly, int argc,
                                       const char *const *argv, const size_t *argvlen);
/* A waiter let go (rp__cache_joined_end with no reply) is about to be
 * sent: a miss of its own, leading from now on, marked with the key's
 * generation of now. */
void rp__cache_resend(rp__cache *cache, rp__cache_ref *ref, int argc, const char *const *argv,
                      const size_t *argvlen);
/* A waiter taken back (cancel, deadline, close): off its leader's list. */
void rp__cache_leave(rp__cache_ref *ref);
/* A cached read is about to leave on conn: CLIENT TRACKING goes first on a
 * connection that does not redirect to the current subscriber. Also called
 * by the set-up of every new connection. */
int rp__cache_track_conn(rp__cache *cache, rp_conn *conn);
/* A cached read's reply came on conn: kept when no invalidation of its
 * key came since the marker was set, and conn's reads are tracked. */
void rp__cache_reply(rp__cache *cache, rp__cache_ref *ref, rp_conn *conn, const redisReply *reply, int argc,
                     const char *const *argv, const size_t *argvlen);
/* The command ends with (reply, status): called just before its callback,
 * while its arguments live (a cluster's are freed by the callback). A
 * write's keys are invalidated again (whatever was read meanwhile); a
 * leader's waiters end with its reply, or are let go
 * (rp__cache_joined_end). */
void rp__cache_ending(rp__cache *cache, rp__cache_ref *ref, const redisReply *reply, int status, int argc,
                      const char *const *argv, const size_t *argvlen);
/* After the callback: a hit's pin and a miss's marker are released. */
void rp__cache_end(rp__cache *cache, rp__cache_ref *ref);
/* The reply a hit is answered with (NULL for any other command). */
const redisReply *rp__cache_hit_reply(const rp__cache_ref *ref);

#endif
