/* Where a command's keys are, from the server's COMMAND table: Redis 7's
 * key specifications (where the search begins: an index or after a
 * keyword; how keys are found from there: a range, or a count argument),
 * or first, last and step for servers without them. The cluster routes by
 * the slot these keys share. */
#include "keyspec.h"
#include "commands.h"
#include "reply.h"

#include <ringpool/cluster.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct keyrule {
    int begin_index;  /* > 0: the search begins at this argument */
    char keyword[16]; /* else: just after this keyword, */
    int startfrom;    /* looked for from here (negative: backwards from the end) */
    bool keynum;      /* keys: argv[begin + keynumidx] of them from begin + firstkey */
    int lastkey, keystep, limit, keynumidx, firstkey;
} keyrule;

/* Each spec's rules follow its name in one allocation. */
struct spec_rules {
    int count;
    keyrule rule[];
};
typedef struct spec_rules spec_rules;

/* ------------------------------------------------------------- loading */

static int map_int(const redisReply *map, const char *key)
{
    const redisReply *value = rp__reply_map_get(map, key);
    return value && value->type == REDIS_REPLY_INTEGER ? (int)value->integer : 0;
}

/* One key specification; false for the kinds that cannot be followed
 * ("unknown": SORT's STORE, found by the server at run time). */
static bool rule_from_spec(const redisReply *spec, keyrule *rule)
{
    const redisReply *begin = rp__reply_map_get(spec, "begin_search"), *find = rp__reply_map_get(spec, "find_keys");
    const redisReply *begin_type = rp__reply_map_get(begin, "type"), *find_type = rp__reply_map_get(find, "type");
    const redisReply *begin_spec = rp__reply_map_get(begin, "spec"), *find_spec = rp__reply_map_get(find, "spec");
    if (!rp__reply_is_text(begin_type) || !rp__reply_is_text(find_type))
        return false;
    *rule = (keyrule){0};
    if (!strcmp(begin_type->str, "index")) {
        rule->begin_index = map_int(begin_spec, "index");
    } else if (!strcmp(begin_type->str, "keyword")) {
        const redisReply *keyword = rp__reply_map_get(begin_spec, "keyword");
        if (!rp__reply_is_text(keyword) || keyword->len >= sizeof rule->keyword)
            return false;
        memcpy(rule->keyword, keyword->str, keyword->len + 1);
        rule->startfrom = map_int(begin_spec, "startfrom");
    } else {
        return false;
    }
    if (!strcmp(find_type->str, "range")) {
        rule->lastkey = map_int(find_spec, "lastkey");
        rule->limit = map_int(find_spec, "limit");
    } else if (!strcmp(find_type->str, "keynum")) {
        rule->keynum = true;
        rule->keynumidx = map_int(find_spec, "keynumidx");
        rule->firstkey = map_int(find_spec, "firstkey");
    } else {
        return false;
    }
    rule->keystep = map_int(find_spec, "keystep");
    return rule->begin_index > 0 || rule->keyword[0];
}

/* Redis 6 has no key specs: first, last and step say it all. */
static int legacy_rule(const redisReply *entry, keyrule *rule)
{
    long long first = entry->element[3]->integer, last = entry->element[4]->integer;
    if (first <= 0)
        return 0;
    *rule = (keyrule){.begin_index = (int)first, .lastkey = (int)(last >= 0 ? last - first : last),
                      .keystep = (int)entry->element[5]->integer};
    return 1;
}

static bool valid_entry(const redisReply *e)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements >= 6 && rp__reply_is_text(e->element[0]) &&
           e->element[3]->type == REDIS_REPLY_INTEGER && e->element[4]->type == REDIS_REPLY_INTEGER &&
           e->element[5]->type == REDIS_REPLY_INTEGER;
}

static int spec_fill(rp__keyspec *spec, const redisReply *entry)
{
    const redisReply *specs = entry->elements > 8 ? entry->element[8] : NULL;
    size_t nspecs = specs && specs->type == REDIS_REPLY_ARRAY ? specs->elements : 0;
    size_t name_len = entry->element[0]->len;
    spec_rules *rules = rp__calloc(1, sizeof *rules + (nspecs + 1) * sizeof(keyrule) + name_len + 1);
    if (!rules)
        return -ENOMEM;
    for (size_t i = 0; i < nspecs; i++)
        if (rule_from_spec(specs->element[i], &rules->rule[rules->count]))
            rules->count++;
    if (!nspecs)
        rules->count = legacy_rule(entry, &rules->rule[0]);
    spec->name = (char *)&rules->rule[nspecs + 1];
    for (size_t i = 0; i < name_len; i++)
        spec->name[i] = (char)tolower((unsigned char)entry->element[0]->str[i]);
    spec->rules = rules;
    spec->readonly = rp__reply_array_has(entry->element[2], "readonly");
    return 0;
}

static int spec_add(rp__keyspec_table *table, size_t *cap, const redisReply *entry)
{
    if (!valid_entry(entry))
        return 0;
    if (table->count == *cap) {
        size_t grown = *cap ? *cap * 2 : 256;
        rp__keyspec *specs = rp__realloc(table->specs, grown * sizeof *specs);
        if (!specs)
            return -ENOMEM;
        table->specs = specs;
        *cap = grown;
    }
    rp__keyspec *spec = &table->specs[table->count];
    *spec = (rp__keyspec){0};
    int rc = spec_fill(spec, entry);
    if (rc < 0)
        return rc;
    table->count++;
    const redisReply *subs = entry->elements > 9 ? entry->element[9] : NULL;
    if (!subs || subs->type != REDIS_REPLY_ARRAY || !subs->elements)
        return 0;
    table->specs[table->count - 1].has_subcommands = true;
    for (size_t i = 0; i < subs->elements && rc == 0; i++)
        rc = spec_add(table, cap, subs->element[i]);
    return rc;
}

static int spec_cmp(const void *a, const void *b)
{
    return strcmp(((const rp__keyspec *)a)->name, ((const rp__keyspec *)b)->name);
}

void rp__keyspec_free(rp__keyspec_table *table)
{
    for (size_t i = 0; i < table->count; i++)
        rp__free(table->specs[i].rules);
    rp__free(table->specs);
    *table = (rp__keyspec_table){0};
}

int rp__keyspec_load(rp__keyspec_table *table, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    rp__keyspec_table loaded = {0};
    size_t cap = 0;
    int rc = 0;
    for (size_t i = 0; i < reply->elements && rc == 0; i++)
        rc = spec_add(&loaded, &cap, reply->element[i]);
    if (rc < 0) {
        rp__keyspec_free(&loaded);
        return rc;
    }
    if (loaded.count) /* an empty table has no array to sort (NULL) */
        qsort(loaded.specs, loaded.count, sizeof *loaded.specs, spec_cmp);
    rp__keyspec_free(table);
    *table = loaded;
    return 0;
}

/* ------------------------------------------------------------- lookup */

static const rp__keyspec *spec_find(const rp__keyspec_table *table, const char *name, size_t len)
{
    size_t lo = 0, hi = table->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = rp__command_name_cmp(name, len, table->specs[mid].name);
        if (c == 0)
            return &table->specs[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* The command's entry, or its subcommand's ("xinfo|stream"). */
static const rp__keyspec *command_spec(const rp__keyspec_table *table, int argc, const char *const *argv,
                                       const size_t *argvlen)
{
    const rp__keyspec *spec = spec_find(table, argv[0], argvlen[0]);
    char name[64];
    if (!spec || !spec->has_subcommands || argc < 2 || argvlen[0] + argvlen[1] + 1 >= sizeof name)
        return spec;
    memcpy(name, argv[0], argvlen[0]);
    name[argvlen[0]] = '|';
    memcpy(name + argvlen[0] + 1, argv[1], argvlen[1]);
    const rp__keyspec *sub = spec_find(table, name, argvlen[0] + argvlen[1] + 1);
    return sub ? sub : spec;
}

/* Where a keyword rule's keys begin: after its keyword; 0 if it is absent. */
static int keyword_begin(const keyrule *rule, int argc, const char *const *argv, const size_t *argvlen)
{
    int step = rule->startfrom > 0 ? 1 : -1;
    for (int i = rule->startfrom > 0 ? rule->startfrom : argc + rule->startfrom; i >= 1 && i < argc; i += step)
        if (!rp__command_name_cmp(argv[i], argvlen[i], rule->keyword))
            return i + 1;
    return 0;
}

static bool parse_count(const char *text, size_t len, long *out)
{
    char buf[24];
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, text, len);
    buf[len] = 0;
    char *end;
    *out = strtol(buf, &end, 10);
    return !*end && *out >= 0;
}

/* Folds the keys the rule finds into slot (RP__NO_KEYS so far, or the
 * slot of the keys before). */
static int rule_slot(const keyrule *rule, int slot, int argc, const char *const *argv, const size_t *argvlen)
{
    int begin = rule->begin_index ? rule->begin_index : keyword_begin(rule, argc, argv, argvlen);
    long first = begin, last, count;
    if (!begin)
        return slot;
    if (rule->keynum) {
        if (begin + rule->keynumidx >= argc ||
            !parse_count(argv[begin + rule->keynumidx], argvlen[begin + rule->keynumidx], &count))
            return slot;
        first = begin + rule->firstkey;
        last = first + (count < argc ? count : argc) - 1; /* a huge count must not overflow */
    } else if (rule->lastkey >= 0) {
        last = begin + rule->lastkey;
    } else {
        last = rule->limit ? begin + (argc - begin) / rule->limit + rule->lastkey : argc + rule->lastkey;
    }
    for (long i = first; i <= last && i < argc; i += rule->keystep > 0 ? rule->keystep : 1) {
        int key_slot = rp_cluster_key_slot(argv[i], argvlen[i]);
        if (slot != RP__NO_KEYS && key_slot != slot)
            return RP_ECROSSSLOT;
        slot = key_slot;
    }
    return slot;
}

/* MIGRATE's key argument is "" when KEYS names the keys: the server
 * (migrateGetKeys, COMMAND GETKEYS) counts no key there. */
static bool migrate_placeholder(const rp__keyspec *spec, int rule, int argc, const size_t *argvlen)
{
    return rule == 0 && argc > 3 && !argvlen[3] && !strcmp(spec->name, "migrate");
}

int rp__command_slot(const rp__keyspec_table *table, int key_index, int argc, const char *const *argv,
                     const size_t *argvlen, bool *readonly)
{
    const rp__keyspec *spec = table->count ? command_spec(table, argc, argv, argvlen) : NULL;
    *readonly = spec && spec->readonly;
    if (key_index > 0 || !table->count) {
        key_index = key_index > 0 ? key_index : 1;
        return key_index < argc ? rp_cluster_key_slot(argv[key_index], argvlen[key_index]) : RP__NO_KEYS;
    }
    int slot = RP__NO_KEYS;
    for (int i = 0; spec && i < spec->rules->count && slot != RP_ECROSSSLOT; i++)
        if (!migrate_placeholder(spec, i, argc, argvlen))
            slot = rule_slot(&spec->rules->rule[i], slot, argc, argv, argvlen);
    return slot;
}
