/* Reply objects for hiredis's reader, built with the library's allocator.
 * They are redisReply structs as hiredis builds them, with two guards
 * against a server that declares more than it sends: an array's element
 * table grows as elements arrive (a declared length costs nothing by
 * itself), and the arrays of one reply may together declare no more
 * elements than the size limit could hold. */
#include "reply.h"

#include <errno.h>

#include <hiredis/sds.h>
#include <string.h>

#define FIRST_TABLE 8

/* While an array is read, its `elements` counts the ones filled so far; the
 * table doubles when that count reaches a power of two past FIRST_TABLE. */
static void *attach(const redisReadTask *task, redisReply *reply)
{
    if (!task->parent)
        return reply;
    redisReply *parent = task->parent->obj;
    size_t filled = parent->elements;
    if (filled == 0 || (filled >= FIRST_TABLE && !(filled & (filled - 1)))) {
        size_t cap = filled ? 2 * filled : FIRST_TABLE;
        redisReply **table = rp__realloc(parent->element, cap * sizeof *table);
        if (!table) {
            rp__reply_free(reply);
            return NULL;
        }
        parent->element = table;
    }
    parent->element[filled] = reply;
    parent->elements = filled + 1;
    return reply;
}

static redisReply *reply_new(int type)
{
    redisReply *reply = rp__calloc(1, sizeof *reply);
    if (reply)
        reply->type = type;
    return reply;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *reply = reply_new(task->type);
    if (!reply)
        return NULL;
    if (!(reply->str = rp__malloc(len + 1))) {
        rp__free(reply);
        return NULL;
    }
    memcpy(reply->str, str, len);
    reply->str[len] = '\0';
    reply->len = len;
    return attach(task, reply);
}

/* Every element takes at least three bytes ("+\r\n"): what the arrays of
 * one reply declare must fit the limit. */
static void *create_array(const redisReadTask *task, int elements)
{
    rp__reply_limit *limit = task->privdata;
    size_t need = elements > 0 ? (size_t)elements * 3 : 0;
    if (elements < 0 || need > limit->max_bytes - RP__MIN(limit->declared_bytes, limit->max_bytes)) {
        limit->exceeded = true;
        return NULL;
    }
    limit->declared_bytes += need;
    redisReply *reply = reply_new(REDIS_REPLY_ARRAY);
    return reply ? attach(task, reply) : NULL;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    redisReply *reply = reply_new(REDIS_REPLY_INTEGER);
    if (!reply)
        return NULL;
    reply->integer = value;
    return attach(task, reply);
}

static void *create_nil(const redisReadTask *task)
{
    redisReply *reply = reply_new(REDIS_REPLY_NIL);
    return reply ? attach(task, reply) : NULL;
}

void rp__reply_free(void *object)
{
    redisReply *reply = object;
    if (!reply)
        return;
    for (size_t i = 0; reply->element && i < reply->elements; i++)
        rp__reply_free(reply->element[i]);
    rp__free(reply->element);
    rp__free(reply->str);
    rp__free(reply);
}

static redisReplyObjectFunctions reply_functions = {
    .createString = create_string,
    .createArray = create_array,
    .createInteger = create_integer,
    .createNil = create_nil,
    .freeObject = rp__reply_free,
};

redisReader *rp__reader_new(rp__reply_limit *limit)
{
    redisReader *reader = redisReaderCreateWithFunctions(&reply_functions);
    if (reader)
        reader->privdata = limit;
    return reader;
}

/* A bulk string the reader is waiting for: its declared length sits at the
 * reader's cursor, after the '$' it has consumed. */
bool rp__reader_declares_too_much(const redisReader *reader, size_t max_bytes)
{
    if (reader->ridx < 0 || reader->rstack[reader->ridx].type != REDIS_REPLY_STRING)
        return false;
    const char *p = reader->buf + reader->pos, *end = reader->buf + reader->len;
    size_t declared = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        size_t digit = (size_t)(*p - '0');
        if (digit > max_bytes || declared > (max_bytes - digit) / 10)
            return true; /* declared * 10 + digit > max_bytes, without wrapping */
        declared = declared * 10 + digit;
    }
    return false;
}

size_t rp__reader_bulk_missing(const redisReader *reader)
{
    if (reader->ridx < 0 || reader->rstack[reader->ridx].type != REDIS_REPLY_STRING)
        return 0;
    const char *p = reader->buf + reader->pos, *end = reader->buf + reader->len, *q = p;
    size_t declared = 0;
    for (; q < end && *q >= '0' && *q <= '9'; q++) {
        if (declared > (SIZE_MAX - 64) / 10)
            return 0; /* past any limit: rp__reader_declares_too_much says so */
        declared = declared * 10 + (size_t)(*q - '0');
    }
    if (q == p || end - q < 2 || q[0] != '\r' || q[1] != '\n')
        return 0; /* no length (a nil's -1) or its line not all in */
    size_t whole = (size_t)(q + 2 - p) + declared + 2, have = (size_t)(end - p);
    return whole > have ? whole - have : 0;
}

/* The reader's buffer is an sds that hiredis appends to as it is fed:
 * receiving into its free tail and growing its length is that append
 * without the copy. Only between reads: growing may move it. */
int rp__reader_reserve(redisReader *reader, size_t more)
{
    if (sdsavail(reader->buf) >= more)
        return 0;
    sds grown = sdsMakeRoomFor(reader->buf, more);
    if (!grown)
        return -ENOMEM;
    reader->buf = grown;
    return 0;
}

char *rp__reader_tail(const redisReader *reader, size_t *room)
{
    *room = sdsavail(reader->buf);
    return reader->buf + sdslen(reader->buf);
}

void rp__reader_received(redisReader *reader, size_t n)
{
    sdsIncrLen(reader->buf, (int)n);
    reader->len = sdslen(reader->buf);
}

/* hiredis consumes what it can: an array's header and whole elements, or
 * a type byte, leave nothing unread but a task begun (after a reply, its
 * first task waits with no type). */
bool rp__reader_in_reply(const redisReader *reader)
{
    return reader->pos < reader->len || reader->ridx > 0 || (reader->ridx == 0 && reader->rstack[0].type >= 0);
}

size_t rp__reader_buffer_bytes(const redisReader *reader) { return sdsalloc(reader->buf); }

/* hiredis frees a buffer it has emptied only when the next bytes arrive
 * and only past maxbuf (16 KiB), which for an idle connection may be
 * never. Between replies any buffer past a few small replies' size goes
 * (smaller ones stay: swapping them would cost an allocation per round
 * trip and save nothing). If no empty buffer can be had, it stays. */
#define READER_KEEP 128
void rp__reader_release_buffer(redisReader *reader)
{
    if (reader->pos != reader->len || sdsalloc(reader->buf) <= READER_KEEP)
        return;
    sds empty = sdsempty();
    if (!empty)
        return;
    sdsfree(reader->buf);
    reader->buf = empty;
    reader->pos = reader->len = 0;
}

/* hiredis drops the bytes it parsed only once they reach 1 KiB, so a
 * connection that reads a small reply at a time grows its buffer past a
 * kilobyte (1.2 MB at 1000 connections in flight). Once every byte fed
 * is parsed the buffer starts over, in place: no allocation, no copy. */
void rp__reader_rewind(redisReader *reader)
{
    if (reader->pos == reader->len && reader->len) {
        sdsclear(reader->buf);
        reader->pos = reader->len = 0;
    }
}

bool rp__reply_is_text(const redisReply *reply)
{
    return reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS);
}

bool rp__reply_array_has(const redisReply *array, const char *text)
{
    if (!array || array->type != REDIS_REPLY_ARRAY)
        return false;
    for (size_t i = 0; i < array->elements; i++)
        if (rp__reply_is_text(array->element[i]) && !strcmp(array->element[i]->str, text))
            return true;
    return false;
}

const redisReply *rp__reply_map_get(const redisReply *map, const char *key)
{
    if (!map || map->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < map->elements; i += 2)
        if (rp__reply_is_text(map->element[i]) && !strcmp(map->element[i]->str, key))
            return map->element[i + 1];
    return NULL;
}
