/* What the library knows about Redis commands: which are read-only (the
 * server's COMMAND flags, with a built-in table until they are read) and
 * how long a blocking command may block. */
#include "commands.h"
#include "reply.h"

#include <stdlib.h>
#include <string.h>

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

/* Every byte of the name counts, a NUL too: the server looks names up by
 * their length, and a NUL must not end the comparison early (nor send it
 * reading past the word). The order is the tables' (bytewise, lower case,
 * a word before the longer words it begins), for the binary search. */
int rp__command_name_cmp(const char *name, size_t len, const char *entry)
{
    size_t i = 0;
    for (; i < len && entry[i]; i++) {
        int a = (unsigned char)rp__ascii_lower(name[i]), b = (unsigned char)entry[i];
        if (a != b)
            return a - b;
    }
    return i < len ? 1 : -(entry[i] != '\0');
}

bool rp__command_word_is(const char *arg, size_t len, const char *word)
{
    const char *nul = memchr(arg, '\0', len);
    return !rp__command_name_cmp(arg, nul ? (size_t)(nul - arg) : len, word);
}

static bool sorted_contains(const char *const *names, size_t count, const char *name, size_t len)
{
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = rp__command_name_cmp(name, len, names[mid]);
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

bool rp__command_name_ok(const redisReply *name)
{
    return name->type == REDIS_REPLY_STRING && name->len && !memchr(name->str, '\0', name->len);
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
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 3 || !rp__command_name_ok(entry->element[0]) ||
            !rp__reply_array_has(entry->element[2], "readonly"))
            continue;
        if (!(names[count] = rp__strdup(entry->element[0]->str))) {
            table->names = names;
            table->count = count;
            rp__readonly_table_free(table);
            return -ENOMEM;
        }
        for (char *c = names[count]; *c; c++)
            *c = rp__ascii_lower(*c);
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

/* A blocking command's own timeout argument, and its unit. */
typedef struct blocking_command {
    const char *name;
    int timeout_arg; /* index; -1: the last argument */
    bool in_ms;      /* else seconds, possibly fractional */
} blocking_command;

static const blocking_command blocking[] = {
    {"blpop", -1, false},  {"brpop", -1, false},    {"bzpopmin", -1, false}, {"bzpopmax", -1, false},
    {"blmove", -1, false}, {"brpoplpush", -1, false}, {"blmpop", 1, false},  {"bzmpop", 1, false},
    {"wait", 2, true},     {"waitaof", 3, true},
};

static bool arg_is(const char *arg, size_t len, const char *word)
{
    return !rp__command_name_cmp(arg, len, word);
}

static size_t arg_len(const char *const *argv, const size_t *argvlen, int i)
{
    return argvlen ? argvlen[i] : strlen(argv[i]);
}

/* The BLOCK value of XREAD or XREADGROUP, found as the server finds it
 * (xreadCommand): the options before STREAMS, each with its values, the
 * last BLOCK winning; what follows STREAMS is keys and IDs, whatever they
 * spell. 0 for none, or for options the server refuses (it answers at once). */
static int xread_block_arg(bool group, int argc, const char *const *argv, const size_t *argvlen)
{
    int block = 0;
    for (int i = 1; i < argc; i++) {
        int more = argc - i - 1;
        const char *arg = argv[i];
        size_t len = arg_len(argv, argvlen, i);
        if (rp__command_word_is(arg, len, "block") && more >= 1)
            block = ++i;
        else if (rp__command_word_is(arg, len, "count") && more >= 1)
            i++;
        else if (rp__command_word_is(arg, len, "streams") && more >= 1)
            return block;
        else if (group && rp__command_word_is(arg, len, "group") && more >= 2)
            i += 2;
        else if (!group || !rp__command_word_is(arg, len, "noack"))
            return 0;
    }
    return 0; /* no STREAMS */
}

static int64_t parse_block_ms(const char *arg, size_t len, bool in_ms)
{
    char text[32];
    if (len == 0 || len >= sizeof text)
        return 0; /* the server will refuse it: no deadline of ours */
    memcpy(text, arg, len);
    text[len] = '\0';
    double value = strtod(text, NULL);
    double ms = in_ms ? value : value * 1000.0;
    if (!(ms > 0))
        return 0;
    return ms > 1e12 ? (int64_t)1e12 : (int64_t)ms + 1;
}

int64_t rp__command_block_ms(int argc, const char *const *argv, const size_t *argvlen)
{
    const char *name = argv[0];
    size_t len = arg_len(argv, argvlen, 0);
    char first = len ? rp__ascii_lower(name[0]) : '\0'; /* every command passes here: most leave at once */
    if (first != 'b' && first != 'w' && first != 'x')
        return -1;
    bool group = arg_is(name, len, "xreadgroup");
    if (group || arg_is(name, len, "xread")) {
        int at = xread_block_arg(group, argc, argv, argvlen);
        return at ? parse_block_ms(argv[at], arg_len(argv, argvlen, at), true) : -1;
    }
    for (size_t i = 0; i < sizeof blocking / sizeof *blocking; i++) {
        if (!arg_is(name, len, blocking[i].name))
            continue;
        int at = blocking[i].timeout_arg < 0 ? argc - 1 : blocking[i].timeout_arg;
        return at > 0 && at < argc ? parse_block_ms(argv[at], arg_len(argv, argvlen, at), blocking[i].in_ms) : -1;
    }
    return -1;
}

/* Commands that change or read the state of their connection, or that
 * hold it (transactions, subscriptions, MONITOR): sharing the connection
 * would hand that state to other callers' commands. */
static const char *const connection_bound[] = { /* sorted */
    "asking", "auth", "client", "discard", "exec", "hello", "monitor", "multi", "psubscribe", "punsubscribe",
    "quit", "readonly", "readwrite", "reset", "select", "ssubscribe", "subscribe", "sunsubscribe",
    "unsubscribe", "unwatch", "watch",
};

/* Asked of every command: the sorted table is searched, not scanned. */
bool rp__command_binds_conn(const char *name, size_t len)
{
    return sorted_contains(connection_bound, sizeof connection_bound / sizeof *connection_bound, name, len);
}
