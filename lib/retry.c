/* When rp_client may send a command again: the rule, and the facts it
 * rests on. A command is retried only when it provably did not run (its
 * bytes never reached the kernel, or the server said it did not run it) or
 * when running it twice is harmless (read-only by the server's COMMAND
 * flags, or marked idempotent by the caller). */
#include "retry.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Redis 7.0's top-level commands flagged readonly, for servers whose
 * COMMAND reply has not been read (or cannot be). Sorted. */
static const char *const builtin_readonly[] = {
    "bitcount", "bitfield_ro", "bitpos", "dbsize", "dump", "eval_ro", "evalsha_ro", "exists",
    "expiretime", "fcall_ro", "geodist", "geohash", "geopos", "georadius_ro", "georadiusbymember_ro",
    "geosearch", "get", "getbit", "getrange", "hexists", "hget", "hgetall", "hkeys", "hlen", "hmget",
    "hrandfield", "hscan", "hstrlen", "hvals", "keys", "lcs", "lindex", "llen", "lolwut", "lpos",
    "lrange", "mget", "pexpiretime", "pfcount", "pttl", "randomkey", "scan", "scard", "sdiff", "sinter",
    "sintercard", "sismember", "smembers", "smismember", "sort_ro", "srandmember", "sscan", "strlen",
    "substr", "sunion", "touch", "ttl", "type", "xlen", "xpending", "xrange", "xread", "xrevrange",
    "zcard", "zcount", "zdiff", "zinter", "zintercard", "zlexcount", "zmscore", "zrandmember", "zrange",
    "zrangebylex", "zrangebyscore", "zrank", "zrevrange", "zrevrangebylex", "zrevrangebyscore",
    "zrevrank", "zscan", "zscore", "zunion",
};

/* Compares a length-counted command name with a table entry, ignoring case. */
static int name_cmp(const char *name, size_t len, const char *entry)
{
    int c = strncasecmp(name, entry, len);
    return c ? c : -(unsigned char)entry[len];
}

static bool sorted_contains(const char *const *names, size_t count, const char *name, size_t len)
{
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(name, len, names[mid]);
        if (c == 0)
            return true;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

bool rp__command_readonly(const rp__readonly_table *table, const char *name, size_t len)
{
    if (table->names)
        return sorted_contains((const char *const *)table->names, table->count, name, len);
    return sorted_contains(builtin_readonly, sizeof builtin_readonly / sizeof *builtin_readonly, name, len);
}

static bool has_readonly_flag(const redisReply *flags)
{
    if (flags->type != REDIS_REPLY_ARRAY)
        return false;
    for (size_t i = 0; i < flags->elements; i++) {
        const redisReply *flag = flags->element[i];
        if ((flag->type == REDIS_REPLY_STATUS || flag->type == REDIS_REPLY_STRING) && !strcmp(flag->str, "readonly"))
            return true;
    }
    return false;
}

static int str_ptr_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* COMMAND: one [name, arity, flags, ...] entry per command. */
int rp__readonly_table_load(rp__readonly_table *table, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    char **names = rp__calloc(reply->elements ? reply->elements : 1, sizeof *names);
    if (!names)
        return -ENOMEM;
    size_t count = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *entry = reply->element[i];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 3 || entry->element[0]->type != REDIS_REPLY_STRING ||
            !has_readonly_flag(entry->element[2]))
            continue;
        if (!(names[count] = rp__strdup(entry->element[0]->str))) {
            table->names = names;
            table->count = count;
            rp__readonly_table_free(table);
            return -ENOMEM;
        }
        for (char *c = names[count]; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        count++;
    }
    qsort(names, count, sizeof *names, str_ptr_cmp);
    rp__readonly_table_free(table);
    table->names = names;
    table->count = count;
    return 0;
}

void rp__readonly_table_free(rp__readonly_table *table)
{
    for (size_t i = 0; i < table->count; i++)
        rp__free(table->names[i]);
    rp__free(table->names);
    table->names = NULL;
    table->count = 0;
}

static bool starts_with(const redisReply *reply, const char *prefix)
{
    size_t len = strlen(prefix);
    return reply->len >= len && !memcmp(reply->str, prefix, len) && (reply->len == len || reply->str[len] == ' ');
}

/* Errors with which the server refuses a command before running it. */
bool rp__reply_not_executed(const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ERROR)
        return false;
    static const char *const codes[] = {"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (starts_with(reply, codes[i]))
            return true;
    return rp__reply_conn_unusable(reply) && !starts_with(reply, "READONLY");
}

/* go-redis removes a connection that got READONLY (it talks to a replica);
 * a server at maxclients closes the connection it refused. */
bool rp__reply_conn_unusable(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR &&
           (starts_with(reply, "READONLY") || starts_with(reply, "ERR max number of clients reached"));
}

/* go-redis's RetryBackoff for the attempt-th retry (1, 2, ...): a random
 * wait in [min, min + min << attempt), capped at max. */
uint64_t rp__retry_backoff_ns(rp_loop *loop, int attempt, uint32_t min_ms, uint32_t max_ms)
{
    if (!min_ms)
        return 0;
    unsigned shift = attempt < 20 ? (unsigned)attempt : 20;
    uint64_t span = (uint64_t)min_ms << shift;
    uint64_t wait = min_ms + rp__loop_random(loop) % span;
    return RP__MIN(wait, (uint64_t)max_ms) * RP__NS_PER_MS;
}
