/* Client-side caching over RESP2 (issue 27, docs/caching.md).
 *
 * Entries are replies of cached reads, found by their command (argv) and
 * grouped under their key (argv[1]) in one hash table of keys. Every key
 * record also carries the key's generation: a number from the cache's
 * clock, set anew by every invalidation of the key. A read that misses
 * notes its key's generation before it is sent (the pending marker; the
 * key record is kept while markers refer to it) and its reply is kept
 * only if the generation is the same when the reply comes: an
 * invalidation that overtook the reply (it travels on another connection)
 * stops it from being cached. Concurrent misses of one command share
 * one request (single flight): the first is sent and listed on its key;
 * another, while the key's generation is still the one the first noted
 * (no invalidation came since it was sent, so the first's reply is as
 * fresh as its own would be), waits for it and takes its reply. A read
 * issued after an invalidation of its key never joins a request sent
 * before it. Waiters of a leader that ends without a reply (a failure,
 * a cancel, its deadline) each send their own (see cache.h).
 *
 * Invalidations come as pub/sub messages on __redis__:invalidate to one
 * subscriber connection: an array of keys, or a null for FLUSHALL/FLUSHDB.
 * Nothing is kept until the subscriber is subscribed. In the default
 * (tracking) mode, every data connection redirects its tracking to the
 * subscriber (CLIENT TRACKING on REDIRECT <id>) in its set-up, or just
 * before a cached read if it redirects to an older subscriber (epoch);
 * the entries read through a connection are listed on its record and
 * dropped when it closes, since the server forgets what a closed
 * connection read. In BCAST mode the subscriber tracks prefixes for
 * itself. Losing the subscriber (an error, or a PING unanswered for one
 * heartbeat) flushes everything.
 *
 * A hit pins its entry until the callback has run: the callback sees the
 * cached reply itself, with no copy; an entry dropped while pinned is
 * freed at the unpin. Memory: the entries' bytes, bounded by LRU. */
#include "cache.h"
#include "commands.h"
#include "conn.h"
#include "heartbeat.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_MAX_TTL_MS 60000u
#define DEFAULT_HEARTBEAT_MS 1000u
#define RESUBSCRIBE_MS 100u
#define INVALIDATE_CHANNEL "__redis__:invalidate"

struct rp__cache_key {
    rp__cache_key *next; /* hash chain */
    uint64_t hash;
    uint64_t gen;
    uint16_t slot;  /* its hash slot, in a cluster node's cache */
    unsigned marks; /* pending reads */
    rp__list flights; /* its misses sent, each a leader (rp__cache_ref) */
    rp__cache_entry *entries;
    size_t len;
    char name[];
};

typedef struct conn_rec conn_rec;

struct rp__cache_entry {
    rp__cache_entry *next_in_key;
    rp__cache_key *key;
    rp__link lru;
    conn_rec *rec; /* the connection it was read through (tracking mode) */
    rp__link rec_link;
    uint64_t expires_ns;
    size_t bytes;
    unsigned pins;
    bool dead; /* dropped while pinned */
    int argc;
    const char **argv;
    size_t *argvlen;
    redisReply *reply; /* one block */
};

/* A data connection's tracking (its lib_data: the caller's rp_conn_data
 * is theirs). */
struct conn_rec {
    rp__cache *cache;
    uint64_t epoch; /* the subscriber it redirects to; 0: none */
    rp__list entries;
};

typedef enum { SUB_DOWN, SUB_DIALING, SUB_STARTING, SUB_UP } sub_state;

struct rp__cache {
    rp_loop *loop;
    rp_pool *pool;
    size_t max_bytes, bytes;
    uint64_t max_ttl_ns;
    int mode;
    char **prefixes;
    int prefix_count;
    rp__cache_key **buckets;
    size_t nbuckets, nkeys, nentries;
    rp__list lru; /* most recent first */
    uint64_t clock;
    uint64_t epoch; /* bumped each time a subscriber comes up */
    sub_state sub;
    rp_conn *sub_conn;
    long long sub_id;
    bool closing;
    rp__heartbeat heartbeat;
    rp__timer resubscribe;
    rp_cache_stats stats;
    rp__cache_joined_end joined_end;
    void *joined_data;
    bool by_slot; /* a cluster node's: keys record their slot */
};

/* ------------------------------------------------------------ commands */

/* Reads whose reply depends on argv[1] alone. */
static const char *const cacheable[] = {
    "exists", "get", "getrange", "hexists", "hget", "hgetall", "hkeys", "hlen", "hmget", "hstrlen",
    "hvals", "lindex", "llen", "lrange", "pttl", "scard", "sismember", "smembers", "smismember",
    "strlen", "ttl", "type", "zcard", "zcount", "zmscore", "zrange", "zrank", "zrevrank", "zscore",
};

bool rp__cache_cacheable(int argc, const char *const *argv, const size_t *argvlen)
{
    if (argc < 2)
        return false;
    size_t lo = 0, hi = sizeof cacheable / sizeof *cacheable;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = rp__command_name_cmp(argv[0], argvlen[0], cacheable[mid]);
        if (cmp == 0)
            return strcmp(cacheable[mid], "exists") || argc == 2;
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

static bool command_flushes(const char *name, size_t len)
{
    return !rp__command_name_cmp(name, len, "flushall") || !rp__command_name_cmp(name, len, "flushdb") ||
           !rp__command_name_cmp(name, len, "swapdb");
}

int64_t rp__cache_accepts(const rp__cache *cache, uint32_t ttl_ms, int argc, const char *const *argv,
                          const size_t *argvlen)
{
    if (!cache || !rp__cache_cacheable(argc, argv, argvlen))
        return -EINVAL;
    uint64_t max_ms = cache->max_ttl_ns / RP__NS_PER_MS;
    return ttl_ms && ttl_ms < max_ms ? ttl_ms : (int64_t)max_ms;
}

/* --------------------------------------------------------------- keys */

/* A word at a time: keys are short, and a hit hashes one. */
static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ len, w;
    for (; len >= 8; s += 8, len -= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    w = 0;
    for (size_t i = 0; i < len; i++)
        w |= (uint64_t)(unsigned char)s[i] << (8 * i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
}

static rp__cache_key **key_slot(rp__cache *cache, const char *name, size_t len, uint64_t hash)
{
    rp__cache_key **slot = &cache->buckets[hash & (cache->nbuckets - 1)];
    for (; *slot; slot = &(*slot)->next)
        if ((*slot)->hash == hash && (*slot)->len == len && !memcmp((*slot)->name, name, len))
            break;
    return slot;
}

static rp__cache_key *key_find(rp__cache *cache, const char *name, size_t len)
{
    return *key_slot(cache, name, len, hash_bytes(name, len));
}

/* Doubles the table when keys outnumber buckets; a failed growth keeps
 * the old one (longer chains, still correct). */
static void keys_grow(rp__cache *cache)
{
    size_t n = cache->nbuckets * 2;
    rp__cache_key **buckets = rp__calloc(n, sizeof *buckets);
    if (!buckets)
        return;
    for (size_t i = 0; i < cache->nbuckets; i++) {
        rp__cache_key *key = cache->buckets[i], *next;
        for (; key; key = next) {
            next = key->next;
            key->next = buckets[key->hash & (n - 1)];
            buckets[key->hash & (n - 1)] = key;
        }
    }
    rp__free(cache->buckets);
    cache->buckets = buckets;
    cache->nbuckets = n;
}

static rp__cache_key *key_get(rp__cache *cache, const char *name, size_t len)
{
    uint64_t hash = hash_bytes(name, len);
    rp__cache_key **slot = key_slot(cache, name, len, hash);
    if (*slot)
        return *slot;
    rp__cache_key *key = rp__malloc(sizeof *key + len + 1);
    if (!key)
        return NULL;
    *key = (rp__cache_key){.hash = hash, .gen = ++cache->clock, .len = len};
    if (cache->by_slot)
        key->slot = (uint16_t)rp_cluster_key_slot(name, len);
    memcpy(key->name, name, len);
    key->name[len] = '\0';
    *slot = key;
    if (++cache->nkeys > cache->nbuckets)
        keys_grow(cache);
    return key;
}

/* A key with no entry and no pending read goes. */
static void key_release(rp__cache *cache, rp__cache_key *key)
{
    if (key->entries || key->marks)
        return;
    rp__cache_key **slot = key_slot(cache, key->name, key->len, key->hash);
    *slot = key->next;
    cache->nkeys--;
    rp__free(key);
}

/* ------------------------------------------------------------ entries */

static void entry_free(rp__cache_entry *entry)
{
    rp__free(entry->reply);
    rp__free(entry);
}

/* Out of every list; freed now, or at its unpin. Its key stays: the
 * caller releases it (key_release) when done with it. */
static void entry_drop(rp__cache *cache, rp__cache_entry *entry)
{
    rp__cache_key *key = entry->key;
    rp__cache_entry **p = &key->entries;
    while (*p != entry)
        p = &(*p)->next_in_key;
    *p = entry->next_in_key;
    rp__list_unlink(&cache->lru, &entry->lru);
    if (entry->rec)
        rp__list_unlink(&entry->rec->entries, &entry->rec_link);
    cache->bytes -= entry->bytes;
    cache->nentries--;
    if (entry->pins)
        entry->dead = true;
    else
        entry_free(entry);
}

/* The key changed: its entries go, and replies under way are not kept. */
static void key_invalidate(rp__cache *cache, rp__cache_key *key)
{
    key->gen = ++cache->clock;
    while (key->entries)
        entry_drop(cache, key->entries);
    key_release(cache, key);
}

static bool invalidate_name(rp__cache *cache, const char *name, size_t len)
{
    rp__cache_key *key = key_find(cache, name, len);
    if (key)
        key_invalidate(cache, key);
    return key != NULL;
}

/* Every key of the slots (NULL: every key) goes, as if invalidated. */
static void drop_keys(rp__cache *cache, const uint8_t *slots)
{
    for (size_t i = 0; i < cache->nbuckets; i++) {
        rp__cache_key *key = cache->buckets[i], *next;
        for (; key; key = next) {
            next = key->next;
            if (!slots || (slots[key->slot / 8] & (1u << (key->slot % 8))))
                key_invalidate(cache, key);
        }
    }
}

static void cache_flush(rp__cache *cache)
{
    cache->stats.flushes++;
    drop_keys(cache, NULL);
}

void rp__cache_by_slot(rp__cache *cache)
{
    if (cache)
        cache->by_slot = true;
}

void rp__cache_drop_slots(rp__cache *cache, const uint8_t *slots)
{
    if (cache)
        drop_keys(cache, slots);
}

/* Two commands of one key (argv[1], not compared) are the same read. */
static bool same_args(int ac, const char *const *av, const size_t *al, int bc, const char *const *bv,
                      const size_t *bl)
{
    if (ac != bc || al[0] != bl[0])
        return false;
    for (size_t i = 0; i < al[0]; i++) { /* the name, in any case (mostly the same) */
        char a = av[0][i], b = bv[0][i];
        if (a != b && rp__ascii_lower(a) != rp__ascii_lower(b))
            return false;
    }
    for (int i = 2; i < ac; i++)
        if (al[i] != bl[i] || memcmp(av[i], bv[i], al[i]))
            return false;
    return true;
}

static bool same_command(const rp__cache_entry *entry, int argc, const char *const *argv, const size_t *argvlen)
{
    return same_args(entry->argc, entry->argv, entry->argvlen, argc, argv, argvlen);
}

/* ------------------------------------------------------- reply copies */

#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

static size_t reply_size(const redisReply *r)
{
    size_t n = sizeof *r;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        n += ALIGN8(r->len + 1);
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++)
            n += sizeof(redisReply *) + reply_size(r->element[i]);
    return n;
}

static redisReply *reply_copy_into(const redisReply *r, char **cursor)
{
    redisReply *c = (redisReply *)*cursor;
    *cursor += sizeof *c;
    memset(c, 0, sizeof *c);
    c->type = r->type;
    c->integer = r->integer;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        c->str = *cursor;
        c->len = r->len;
        memcpy(c->str, r->str, r->len);
        c->str[r->len] = '\0';
        *cursor += ALIGN8(r->len + 1);
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements) {
        c->elements = r->elements;
        c->element = (redisReply **)*cursor;
        *cursor += r->elements * sizeof(redisReply *);
        for (size_t i = 0; i < r->elements; i++)
            c->element[i] = reply_copy_into(r->element[i], cursor);
    }
    return c;
}

static redisReply *reply_copy(const redisReply *r, size_t *bytes)
{
    *bytes = reply_size(r);
    char *block = rp__malloc(*bytes);
    if (!block)
        return NULL;
    char *cursor = block;
    return reply_copy_into(r, &cursor);
}

/* ----------------------------------------------------------- the path */

static void evict_for_room(rp__cache *cache)
{
    while (cache->bytes > cache->max_bytes && cache->lru.tail) {
        rp__cache_entry *entry = RP__CONTAINER_OF(cache->lru.tail, rp__cache_entry, lru);
        rp__cache_key *key = entry->key;
        cache->stats.evictions++;
        entry_drop(cache, entry);
        key_release(cache, key);
    }
}

static rp__cache_entry *lookup(rp__cache *cache, int argc, const char *const *argv, const size_t *argvlen)
{
    rp__cache_key *key = key_find(cache, argv[1], argvlen[1]);
    if (!key)
        return NULL;
    for (rp__cache_entry *entry = key->entries; entry; entry = entry->next_in_key) {
        if (!same_command(entry, argc, argv, argvlen))
            continue;
        if (entry->expires_ns <= rp__loop_now(cache->loop)) {
            cache->stats.expired++;
            entry_drop(cache, entry);
            key_release(cache, key);
            return NULL;
        }
        return entry;
    }
    return NULL;
}

/* A write through this client: every cached key named among its
 * arguments goes (a false match costs only a miss), and the whole cache
 * for a command that empties the database. */
static void own_write(rp__cache *cache, int argc, const char *const *argv, const size_t *argvlen)
{
    if (command_flushes(argv[0], argvlen[0])) {
        cache_flush(cache);
        return;
    }
    if (!cache->nkeys)
        return;
    for (int i = 1; i < argc; i++)
        cache->stats.invalidations += invalidate_name(cache, argv[i], argvlen[i]);
}

/* BCAST tells only of keys under its prefixes. */
static bool told_of(const rp__cache *cache, const char *key, size_t len)
{
    if (cache->mode != RP_CACHE_BCAST || !cache->prefix_count)
        return true;
    for (int i = 0; i < cache->prefix_count; i++) {
        size_t plen = strlen(cache->prefixes[i]);
        if (plen <= len && !memcmp(key, cache->prefixes[i], plen))
            return true;
    }
    return false;
}

/* Before any check of the command (rp_client_command_ex's fast path):
 * only one with a key can be looked up. */
rp__cache_entry *rp__cache_hit(rp__cache *cache, int argc, const char *const *argv, const size_t *argvlen)
{
    rp__cache_entry *entry = cache && argc >= 2 ? lookup(cache, argc, argv, argvlen) : NULL;
    if (!entry)
        return NULL;
    cache->stats.hits++;
    entry->pins++;
    if (cache->lru.head != &entry->lru) {
        rp__list_unlink(&cache->lru, &entry->lru);
        rp__list_push_front(&cache->lru, &entry->lru);
    }
    return entry;
}

void rp__cache_hit_abandon(rp__cache *cache, rp__cache_entry *entry)
{
    cache->stats.hits--;
    rp__cache_end(cache, &(rp__cache_ref){.hit = entry});
}

void rp__cache_hit_args(const rp__cache_ref *ref, int *argc, const char *const **argv, const size_t **argvlen)
{
    *argc = ref->hit->argc;
    *argv = ref->hit->argv;
    *argvlen = ref->hit->argvlen;
}

/* A leader sending this very command, marked at the key's generation of
 * now: nothing invalidated the key since it was sent. */
static rp__cache_ref *flight_find(const rp__cache_key *key, int argc, const char *const *argv,
                                  const size_t *argvlen)
{
    for (rp__link *link = key->flights.head; link; link = link->next) {
        rp__cache_ref *leader = RP__CONTAINER_OF(link, rp__cache_ref, flight);
        if (leader->gen == key->gen && same_args(leader->argc, leader->argv, leader->argvlen, argc, argv, argvlen))
            return leader;
    }
    return NULL;
}

/* ref (its key marked) is sent: listed for later misses to join. */
static void flight_lead(rp__cache *cache, rp__cache_ref *ref, int argc, const char *const *argv,
                        const size_t *argvlen)
{
    cache->stats.misses++;
    ref->leading = true;
    ref->argc = argc;
    ref->argv = argv;
    ref->argvlen = argvlen;
    rp__list_push_back(&ref->key->flights, &ref->flight);
}

rp__cache_start_result rp__cache_start(rp__cache *cache, rp__cache_ref *ref, bool cached, bool readonly, int argc,
                                       const char *const *argv, const size_t *argvlen)
{
    if (!cached) {
        if (!readonly) {
            ref->write = true;
            own_write(cache, argc, argv, argvlen);
        }
        return RP__CACHE_SEND;
    }
    if ((ref->hit = rp__cache_hit(cache, argc, argv, argvlen)))
        return RP__CACHE_HIT;
    if (cache->sub != SUB_UP || !told_of(cache, argv[1], argvlen[1]) ||
        !(ref->key = key_get(cache, argv[1], argvlen[1]))) {
        cache->stats.misses++; /* nothing is kept that no invalidation would reach; nor without memory */
        return RP__CACHE_SEND;
    }
    ref->key->marks++;
    ref->gen = ref->key->gen;
    rp__cache_ref *leader = flight_find(ref->key, argc, argv, argvlen);
    if (!leader) {
        flight_lead(cache, ref, argc, argv, argvlen);
        return RP__CACHE_SEND;
    }
    ref->leader = leader;
    rp__list_push_back(&leader->waiters, &ref->flight);
    return RP__CACHE_JOINED;
}

void rp__cache_resend(rp__cache *cache, rp__cache_ref *ref, int argc, const char *const *argv,
                      const size_t *argvlen)
{
    ref->gen = ref->key->gen;
    flight_lead(cache, ref, argc, argv, argvlen);
}

void rp__cache_leave(rp__cache_ref *ref)
{
    if (ref->leader)
        rp__list_unlink(&ref->leader->waiters, &ref->flight);
    ref->leader = NULL;
}

const redisReply *rp__cache_hit_reply(const rp__cache_ref *ref) { return ref->hit ? ref->hit->reply : NULL; }

/* The leader ended: off its key's list (no miss joins it any more), and
 * each waiter ends with its reply (counted as joined: it took the reply),
 * or is let go (a miss when it is sent). One at a time from the leader's
 * list: a waiter's callback may cancel another. */
static void flight_land(rp__cache *cache, rp__cache_ref *ref, const redisReply *reply, int status)
{
    rp__list_unlink(&ref->key->flights, &ref->flight);
    ref->leading = false;
    if (status < 0)
        reply = NULL;
    rp__link *link;
    while ((link = rp__list_pop(&ref->waiters, false))) {
        rp__cache_ref *waiter = RP__CONTAINER_OF(link, rp__cache_ref, flight);
        waiter->leader = NULL;
        cache->stats.joined += reply != NULL;
        cache->joined_end(waiter, reply, cache->joined_data);
    }
}

void rp__cache_ending(rp__cache *cache, rp__cache_ref *ref, const redisReply *reply, int status, int argc,
                      const char *const *argv, const size_t *argvlen)
{
    if (ref->write) { /* read your writes: whatever was read meanwhile */
        own_write(cache, argc, argv, argvlen);
        ref->write = false;
    }
    rp__cache_leave(ref);
    if (ref->leading)
        flight_land(cache, ref, reply, status);
}

void rp__cache_end(rp__cache *cache, rp__cache_ref *ref)
{
    if (ref->hit && --ref->hit->pins == 0 && ref->hit->dead)
        entry_free(ref->hit);
    if (ref->key) {
        ref->key->marks--;
        key_release(cache, ref->key);
    }
    *ref = (rp__cache_ref){0};
}

/* ----------------------------------------------------- connections */

static void conn_rec_free(void *data)
{
    conn_rec *rec = data;
    rp__link *link;
    while ((link = rec->entries.head)) { /* untracked from now on */
        rp__cache_entry *entry = RP__CONTAINER_OF(link, rp__cache_entry, rec_link);
        rp__cache_key *key = entry->key;
        entry_drop(rec->cache, entry);
        key_release(rec->cache, key);
    }
    rp__free(rec);
}

static void tracking_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    (void)data;
    conn_rec *rec = conn->lib_data;
    if (status == 0 && reply->type == REDIS_REPLY_ERROR && rec)
        rec->epoch = 0; /* refused: nothing read on it is kept */
}

int rp__cache_track_conn(rp__cache *cache, rp_conn *conn)
{
    if (cache->mode != RP_CACHE_TRACKING || cache->sub != SUB_UP)
        return 0;
    conn_rec *rec = conn->lib_data;
    if (rec && rec->epoch == cache->epoch)
        return 0;
    if (!rec) {
        if (!(rec = rp__calloc(1, sizeof *rec)))
            return -ENOMEM;
        rec->cache = cache;
        conn->lib_data = rec;
        conn->lib_free = conn_rec_free;
    }
    char id[24];
    snprintf(id, sizeof id, "%lld", cache->sub_id);
    const char *argv[] = {"CLIENT", "TRACKING", "on", "REDIRECT", id};
    int rc = rp_conn_command(conn, tracking_reply, NULL, 5, argv, NULL);
    rec->epoch = rc == 0 ? cache->epoch : 0;
    return rc;
}

static bool conn_tracked(rp__cache *cache, rp_conn *conn, conn_rec **rec)
{
    *rec = NULL;
    if (cache->mode != RP_CACHE_TRACKING)
        return true;
    *rec = conn->lib_data;
    return *rec && (*rec)->epoch == cache->epoch;
}

void rp__cache_reply(rp__cache *cache, rp__cache_ref *ref, rp_conn *conn, const redisReply *reply, int argc,
                     const char *const *argv, const size_t *argvlen)
{
    conn_rec *rec;
    rp__cache_key *key = ref->key;
    if (!key || key->gen != ref->gen || cache->sub != SUB_UP || reply->type == REDIS_REPLY_ERROR ||
        !conn_tracked(cache, conn, &rec))
        return;
    for (rp__cache_entry *old = key->entries; old; old = old->next_in_key)
        if (same_command(old, argc, argv, argvlen))
            return; /* another read of the same kept it first */
    const char **args;
    size_t *lens, reply_bytes;
    rp__cache_entry *entry = rp__calloc_with_args(sizeof *entry, argc, argv, argvlen, &args, &lens);
    redisReply *copy = entry ? reply_copy(reply, &reply_bytes) : NULL;
    if (!copy) {
        rp__free(entry);
        return;
    }
    *entry = (rp__cache_entry){.key = key, .rec = rec, .reply = copy, .argc = argc, .argv = args, .argvlen = lens,
                               .expires_ns = rp__loop_now(cache->loop) + ref->ttl_ms * RP__NS_PER_MS};
    entry->bytes = sizeof *entry + reply_bytes + key->len;
    for (int i = 0; i < argc; i++)
        entry->bytes += lens[i] + 1 + sizeof(char *) + sizeof(size_t);
    entry->next_in_key = key->entries;
    key->entries = entry;
    rp__list_push_front(&cache->lru, &entry->lru);
    if (rec)
        rp__list_push_back(&rec->entries, &entry->rec_link);
    cache->bytes += entry->bytes;
    cache->nentries++;
    evict_for_room(cache);
}

/* ---------------------------------------------------------- subscriber */

static void subscribe_start(rp__cache *cache);

/* Whatever the lost subscriber covered goes; another comes a moment later. */
static void sub_lost(rp__cache *cache, int reason)
{
    bool was_up = cache->sub == SUB_UP;
    rp_conn *conn = cache->sub_conn;
    cache->sub = SUB_DOWN;
    cache->sub_conn = NULL;
    rp__heartbeat_stop(&cache->heartbeat);
    if (was_up)
        cache_flush(cache);
    if (conn)
        rp_pool_remove(cache->pool, conn, reason);
    if (!cache->closing)
        rp__timer_arm(cache->loop, &cache->resubscribe, rp__loop_now(cache->loop) + RESUBSCRIBE_MS * RP__NS_PER_MS);
}

/* A subscriber that stops answering: what it would have told is lost. */
static void heartbeat_lost(rp__heartbeat *hb, int reason)
{
    sub_lost(RP__CONTAINER_OF(hb, rp__cache, heartbeat), reason);
}

static void on_message(rp__cache *cache, const redisReply *payload)
{
    if (payload->type == REDIS_REPLY_NIL) {
        cache_flush(cache);
    } else if (payload->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < payload->elements; i++)
            if (payload->element[i]->type == REDIS_REPLY_STRING) {
                cache->stats.invalidations++;
                invalidate_name(cache, payload->element[i]->str, payload->element[i]->len);
            }
    }
}

static void on_event(rp_conn *conn, const redisReply *msg, int status, void *data)
{
    rp__cache *cache = data;
    if (conn != cache->sub_conn || cache->closing)
        return;
    if (!msg) {
        sub_lost(cache, status < 0 ? status : RP_EBADCONN);
        return;
    }
    if (msg->type != REDIS_REPLY_ARRAY || msg->elements < 2 || msg->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = msg->element[0]->str;
    rp__heartbeat_saw(&cache->heartbeat, kind);
    if (!strcmp(kind, "message") && msg->elements == 3) {
        on_message(cache, msg->element[2]);
    } else if (!strcmp(kind, "subscribe")) {
        cache->sub = SUB_UP;
        cache->epoch++; /* connections redirecting elsewhere are brought over */
        rp__heartbeat_start(&cache->heartbeat, conn);
    }
}

static void subscribe(rp__cache *cache, rp_conn *conn)
{
    const char *argv[] = {"SUBSCRIBE", INVALIDATE_CHANNEL};
    int rc = rp_conn_subscribe(conn, on_event, cache, 2, argv, NULL);
    if (rc < 0)
        sub_lost(cache, rc);
}

static void bcast_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    rp__cache *cache = data;
    if (conn != cache->sub_conn || cache->closing)
        return;
    if (status == 0 && reply->type == REDIS_REPLY_ERROR)
        status = RP_ESETUP;
    if (status < 0)
        sub_lost(cache, status);
    else
        subscribe(cache, conn);
}

/* BCAST: the subscriber tracks the prefixes and redirects to itself. */
static int bcast_send(rp__cache *cache, rp_conn *conn)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", cache->sub_id);
    int argc = 0;
    const char **argv = rp__calloc(6 + 2 * (size_t)cache->prefix_count, sizeof *argv);
    if (!argv)
        return -ENOMEM;
    const char *head[] = {"CLIENT", "TRACKING", "on", "REDIRECT", id, "BCAST"};
    for (; argc < 6; argc++)
        argv[argc] = head[argc];
    for (int i = 0; i < cache->prefix_count; i++) {
        argv[argc++] = "PREFIX";
        argv[argc++] = cache->prefixes[i];
    }
    int rc = rp_conn_command(conn, bcast_reply, cache, argc, argv, NULL);
    rp__free(argv);
    return rc;
}

static void id_reply(rp_conn *conn, const redisReply *reply, int status, void *data)
{
    rp__cache *cache = data;
    if (conn != cache->sub_conn || cache->closing)
        return;
    if (status == 0 && reply->type != REDIS_REPLY_INTEGER)
        status = RP_ESETUP;
    if (status == 0) {
        cache->sub_id = reply->integer;
        if (cache->mode == RP_CACHE_BCAST)
            status = bcast_send(cache, conn);
        else
            subscribe(cache, conn);
    }
    if (status < 0)
        sub_lost(cache, status);
}

static void sub_got(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    rp__cache *cache = data;
    if (cache->closing) {
        if (conn)
            rp_pool_remove(pool, conn, RP_ECLOSED);
        return;
    }
    if (status == 0) {
        cache->sub = SUB_STARTING;
        cache->sub_conn = conn;
        status = rp_conn_command(conn, id_reply, cache, 2, (const char *[]){"CLIENT", "ID"}, NULL);
    }
    if (status < 0)
        sub_lost(cache, status);
}

static void subscribe_start(rp__cache *cache)
{
    if (cache->closing || cache->sub != SUB_DOWN)
        return;
    cache->sub = SUB_DIALING;
    int rc = rp_pool_new_conn(cache->pool, sub_got, cache);
    if (rc < 0)
        sub_lost(cache, rc);
}

static void resubscribe_fired(rp__timer *timer)
{
    subscribe_start(RP__CONTAINER_OF(timer, rp__cache, resubscribe));
}

/* ----------------------------------------------------------- lifecycle */

static int copy_prefixes(rp__cache *cache, const rp_client_options *opts)
{
    if (opts->cache_prefix_count < 0 || (opts->cache_prefix_count && !opts->cache_prefixes))
        return -EINVAL;
    if (!opts->cache_prefix_count)
        return 0;
    if (!(cache->prefixes = rp__calloc((size_t)opts->cache_prefix_count, sizeof *cache->prefixes)))
        return -ENOMEM;
    for (; cache->prefix_count < opts->cache_prefix_count; cache->prefix_count++) {
        const char *prefix = opts->cache_prefixes[cache->prefix_count];
        if (!prefix)
            return -EINVAL;
        if (!(cache->prefixes[cache->prefix_count] = rp__strdup(prefix)))
            return -ENOMEM;
    }
    return 0;
}

void rp__cache_free(rp__cache *cache)
{
    if (!cache)
        return;
    if (cache->buckets)
        cache_flush(cache); /* pins are gone: every entry and key goes */
    for (int i = 0; i < cache->prefix_count; i++)
        rp__free(cache->prefixes[i]);
    rp__free(cache->prefixes);
    rp__free(cache->buckets);
    rp__free(cache);
}

int rp__cache_new(rp__cache **out, rp_loop *loop, rp_pool *pool, const rp_client_options *opts)
{
    *out = NULL;
    if (!opts->cache_bytes)
        return opts->cache_prefix_count || opts->cache_mode ? -EINVAL : 0;
    if (opts->cache_mode != RP_CACHE_TRACKING && opts->cache_mode != RP_CACHE_BCAST)
        return -EINVAL;
    if (opts->cache_mode == RP_CACHE_TRACKING && opts->cache_prefix_count)
        return -EINVAL; /* prefixes are BCAST's */
    rp__cache *cache = rp__calloc(1, sizeof *cache);
    if (!cache)
        return -ENOMEM;
    *cache = (rp__cache){.loop = loop, .pool = pool, .max_bytes = opts->cache_bytes, .mode = opts->cache_mode,
                         .nbuckets = 64};
    cache->max_ttl_ns = (opts->cache_max_ttl_ms ? opts->cache_max_ttl_ms : DEFAULT_MAX_TTL_MS) * RP__NS_PER_MS;
    rp__heartbeat_init(&cache->heartbeat, cache->loop,
                       opts->cache_heartbeat_ms ? opts->cache_heartbeat_ms : DEFAULT_HEARTBEAT_MS, heartbeat_lost);
    rp__timer_init(&cache->resubscribe, resubscribe_fired, false);
    int rc = copy_prefixes(cache, opts);
    if (rc == 0 && !(cache->buckets = rp__calloc(cache->nbuckets, sizeof *cache->buckets)))
        rc = -ENOMEM;
    if (rc < 0) {
        rp__cache_free(cache);
        return rc;
    }
    *out = cache;
    return 0;
}

void rp__cache_set_pool(rp__cache *cache, rp_pool *pool)
{
    if (cache)
        cache->pool = pool;
}

void rp__cache_set_joined_end(rp__cache *cache, rp__cache_joined_end fn, void *data)
{
    if (cache) {
        cache->joined_end = fn;
        cache->joined_data = data;
    }
}

/* Called once the client is set up (the subscriber's connection is set up
 * by the client's on_connect like any other). */
void rp__cache_open(rp__cache *cache)
{
    if (cache)
        subscribe_start(cache);
}

void rp__cache_reset(rp__cache *cache)
{
    if (!cache || cache->closing)
        return;
    if (cache->sub_conn)
        sub_lost(cache, RP_EBADCONN); /* empties the cache; a new one is dialled */
    else
        cache_flush(cache);
}

void rp__cache_close(rp__cache *cache)
{
    if (!cache || cache->closing)
        return;
    cache->closing = true;
    rp__heartbeat_stop(&cache->heartbeat);
    rp__timer_disarm(cache->loop, &cache->resubscribe);
    rp_conn *conn = cache->sub_conn;
    cache->sub_conn = NULL;
    cache->sub = SUB_DOWN;
    if (conn)
        rp_pool_remove(cache->pool, conn, RP_ECLOSED);
}

void rp__cache_stats(const rp__cache *cache, rp_cache_stats *out)
{
    *out = cache->stats;
    out->bytes = cache->bytes;
    out->entries = cache->nentries;
    out->subscribed = cache->sub == SUB_UP;
}
