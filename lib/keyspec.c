/* Where a command's keys are, from the server's COMMAND table: Redis 7's
 * key specifications (where the search begins: an index or after a
 * keyword; how keys are found from there: a range, or a count argument),
 * or first, last and step for servers without them. The cluster routes by
 * the slot these keys share. Every number of the table came from a server
 * and is range-checked once, as it is loaded: a command whose specs make
 * no sense is routed by its first, last and step (or has no keys). */
#include "keyspec.h"
#include "commands.h"
#include "reply.h"

#include <ringpool/cluster.h>
#include <stdlib.h>
#include <string.h>

typedef struct keyrule {
    int begin_index;  /* > 0: the search begins at this argument */
    char keyword[16]; /* else: just after this keyword (lower case), */
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

/* Every integer of a COMMAND entry comes from the wire and may be
 * anything; this is the one place they are read. Real specs hold small
 * offsets: SPEC_INT_MAX bounds them all, so that no sum of one with an
 * argument count can overflow. A value that is missing, not an integer or
 * out of [lo, hi] makes the spec holding it nonsense. */
#define SPEC_INT_MAX 65536

static bool wire_int(const redisReply *value, long long lo, long long hi, int *out)
{
    if (!value || value->type != REDIS_REPLY_INTEGER || value->integer < lo || value->integer > hi)
        return false;
    *out = (int)value->integer;
    return true;
}

static bool spec_int(const redisReply *map, const char *key, long long lo, long long hi, int *out)
{
    return wire_int(rp__reply_map_get(map, key), lo, hi, out);
}

typedef enum {
    SPEC_USABLE,
    SPEC_UNKNOWN,  /* a kind that cannot be followed ("unknown": SORT's STORE, found at run time) */
    SPEC_NONSENSE, /* a value no server means: the command's specs are not trusted */
} spec_kind;

static spec_kind begin_from_spec(const redisReply *begin, keyrule *rule)
{
    const redisReply *type = rp__reply_map_get(begin, "type"), *spec = rp__reply_map_get(begin, "spec");
    if (!rp__reply_is_text(type))
        return SPEC_NONSENSE;
    if (!strcmp(type->str, "index"))
        return spec_int(spec, "index", 1, SPEC_INT_MAX, &rule->begin_index) ? SPEC_USABLE : SPEC_NONSENSE;
    if (strcmp(type->str, "keyword"))
        return SPEC_UNKNOWN;
    const redisReply *keyword = rp__reply_map_get(spec, "keyword");
    if (!rp__reply_is_text(keyword) || !keyword->len || keyword->len >= sizeof rule->keyword ||
        !spec_int(spec, "startfrom", -SPEC_INT_MAX, SPEC_INT_MAX, &rule->startfrom) || !rule->startfrom)
        return SPEC_NONSENSE; /* startfrom 0 would search from the command's name */
    for (size_t i = 0; i < keyword->len; i++) /* lower case, as the words it is compared with want */
        rule->keyword[i] = rp__ascii_lower(keyword->str[i]);
    return SPEC_USABLE;
}

static spec_kind find_from_spec(const redisReply *find, keyrule *rule)
{
    const redisReply *type = rp__reply_map_get(find, "type"), *spec = rp__reply_map_get(find, "spec");
    if (!rp__reply_is_text(type))
        return SPEC_NONSENSE;
    if (!strcmp(type->str, "range")) {
        /* The server divides by limit only for lastkey -1 (it asserts so). */
        bool ok = spec_int(spec, "lastkey", -SPEC_INT_MAX, SPEC_INT_MAX, &rule->lastkey) &&
                  spec_int(spec, "keystep", 1, SPEC_INT_MAX, &rule->keystep) &&
                  spec_int(spec, "limit", 0, SPEC_INT_MAX, &rule->limit) && (rule->lastkey >= -1 || !rule->limit);
        return ok ? SPEC_USABLE : SPEC_NONSENSE;
    }
    if (!strcmp(type->str, "keynum")) {
        rule->keynum = true;
        bool ok = spec_int(spec, "keynumidx", 0, SPEC_INT_MAX, &rule->keynumidx) &&
                  spec_int(spec, "firstkey", 1, SPEC_INT_MAX, &rule->firstkey) &&
                  spec_int(spec, "keystep", 1, SPEC_INT_MAX, &rule->keystep);
        return ok ? SPEC_USABLE : SPEC_NONSENSE;
    }
    return SPEC_UNKNOWN;
}

/* One key specification: where the search begins, and how keys are
 * found from there. */
static spec_kind rule_from_spec(const redisReply *spec, keyrule *rule)
{
    *rule = (keyrule){0};
    spec_kind begin = begin_from_spec(rp__reply_map_get(spec, "begin_search"), rule);
    spec_kind find = find_from_spec(rp__reply_map_get(spec, "find_keys"), rule);
    if (begin == SPEC_NONSENSE || find == SPEC_NONSENSE)
        return SPEC_NONSENSE;
    return begin == SPEC_USABLE && find == SPEC_USABLE ? SPEC_USABLE : SPEC_UNKNOWN;
}

/* First, last and step (all Redis 6 has): 0 rules for a command without
 * keys, or for values that make no sense. */
static int legacy_rule(const redisReply *entry, keyrule *rule)
{
    int first, last, step;
    if (!wire_int(entry->element[3], 1, SPEC_INT_MAX, &first) ||
        !wire_int(entry->element[4], -SPEC_INT_MAX, SPEC_INT_MAX, &last) ||
        !wire_int(entry->element[5], 1, SPEC_INT_MAX, &step) || (last >= 0 && last < first))
        return 0;
    *rule = (keyrule){.begin_index = first, .lastkey = last >= 0 ? last - first : last, .keystep = step};
    return 1;
}

static bool valid_entry(const redisReply *e)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements >= 6 && rp__command_name_ok(e->element[0]);
}

/* The rules of the entry's key specs; if any spec makes no sense, none of
 * them is trusted and first/last/step (which the server derives from the
 * same specs) route the command alone. */
static int spec_fill(rp__keyspec *spec, const redisReply *entry)
{
    const redisReply *specs = entry->elements > 8 ? entry->element[8] : NULL;
    size_t nspecs = specs && specs->type == REDIS_REPLY_ARRAY ? specs->elements : 0;
    size_t name_len = entry->element[0]->len;
    spec_rules *rules = rp__calloc(1, sizeof *rules + (nspecs + 1) * sizeof(keyrule) + name_len + 1);
    if (!rules)
        return -ENOMEM;
    bool trusted = true;
    for (size_t i = 0; i < nspecs; i++) {
        spec_kind kind = rule_from_spec(specs->element[i], &rules->rule[rules->count]);
        rules->count += kind == SPEC_USABLE;
        trusted &= kind != SPEC_NONSENSE;
    }
    if (!nspecs || !trusted)
        rules->count = legacy_rule(entry, &rules->rule[0]);
    spec->name = (char *)&rules->rule[nspecs + 1];
    for (size_t i = 0; i < name_len; i++)
        spec->name[i] = rp__ascii_lower(entry->element[0]->str[i]);
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
    if (!spec || !spec->has_subcommands || argc < 2 || argvlen[0] >= sizeof name ||
        argvlen[1] >= sizeof name - argvlen[0] - 1)
        return spec;
    memcpy(name, argv[0], argvlen[0]);
    name[argvlen[0]] = '|';
    memcpy(name + argvlen[0] + 1, argv[1], argvlen[1]);
    const rp__keyspec *sub = spec_find(table, name, argvlen[0] + argvlen[1] + 1);
    return sub ? sub : spec;
}

/* Where a keyword rule's keys begin: after its keyword (compared as the
 * server compares it); 0 if it is absent. */
static int keyword_begin(const keyrule *rule, int argc, const char *const *argv, const size_t *argvlen)
{
    int step = rule->startfrom > 0 ? 1 : -1;
    for (int i = rule->startfrom > 0 ? rule->startfrom : argc + rule->startfrom; i >= 1 && i < argc; i += step)
        if (rp__command_word_is(argv[i], argvlen[i], rule->keyword))
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
 * slot of the keys before). The rule's numbers were range-checked when
 * loaded (each within SPEC_INT_MAX, offsets and steps positive): in a
 * long, no sum here overflows, and no index falls before argv[1]. */
static int rule_slot(const keyrule *rule, int slot, int argc, const char *const *argv, const size_t *argvlen)
{
    long begin = rule->begin_index ? rule->begin_index : keyword_begin(rule, argc, argv, argvlen);
    long first = begin, last, count;
    if (!begin)
        return slot;
    if (rule->keynum) {
        long at = begin + rule->keynumidx;
        if (at >= argc || !parse_count(argv[at], argvlen[at], &count))
            return slot;
        first = begin + rule->firstkey;
        last = first + (count < argc ? count : argc) - 1; /* a huge count must not overflow */
    } else if (rule->lastkey >= 0) {
        last = begin + rule->lastkey;
    } else {
        last = rule->limit ? begin + (argc - begin) / rule->limit + rule->lastkey : argc + rule->lastkey;
    }
    for (long i = first; i <= last && i < argc; i += rule->keystep) {
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
