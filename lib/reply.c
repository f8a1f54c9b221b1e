/* Reply objects for hiredis's reader, built with the library's allocator.
 * They are redisReply structs as hiredis builds them, with two guards
 * against a server that declares more than it sends: an array's element
 * table grows as elements arrive (a declared length costs nothing by
 * itself), and the arrays of one reply may together declare no more
 * elements than the size limit could hold.
 * A bulk string of RP__BULK_IN_PLACE bytes or more is not copied: its reply takes
 * the reader's whole buffer, where redis.c read the body in place, and
 * points into it; the reader gets a new buffer with the bytes after the
 * string (usually none: redis.c reads a big body and no further). hiredis
 * 0.14 (and 1.x) creates a bulk string's object from its buffer and only
 * then moves its cursor past the string's header, body and CRLF, so the
 * cursor is set back by as much first. Ownership rather than an object
 * of our own: the caller still sees a plain redisReply. */
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

/* A reply and, for a string that took a reader's buffer, that buffer (an
 * sds, allocated by hiredis): str points into it. */
typedef struct reply_block {
    redisReply reply;
    sds block;
} reply_block;

static redisReply *reply_new(int type)
{
    reply_block *rb = rp__calloc(1, sizeof *rb);
    if (rb)
        rb->reply.type = type;
    return rb ? &rb->reply : NULL;
}

/* The reader's buffer, which holds the bulk string str..str+len and its
 * CRLF, if it can be had: the reader then holds only what follows. The
 * bytes after the string are copied out now and may be copied back with
 * the buffer (give_back): if they outweigh half the string, copying the
 * string is cheaper, and NULL says so. */
static sds take_buffer(redisReader *reader, const char *str, size_t len)
{
    sds buf = reader ? reader->buf : NULL;
    if (!buf || str < buf || len + 2 > reader->len || (size_t)(str - buf) > reader->len - len - 2)
        return NULL;
    size_t end = (size_t)(str - buf) + len + 2;
    if (reader->len - end > len / 2)
        return NULL;
    sds rest = sdsnewlen(buf + end, reader->len - end);
    if (!rest)
        return NULL;
    reader->buf = rest;
    reader->len = sdslen(rest);
    reader->pos -= end; /* hiredis adds the string's length from pos to end: pos is then 0 (size_t wraps) */
    return buf;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *reply = reply_new(task->type);
    if (!reply)
        return NULL;
    rp__reply_limit *limit = task->privdata;
    sds block = len >= RP__BULK_IN_PLACE && task->type == REDIS_REPLY_STRING ? take_buffer(limit->reader, str, len) : NULL;
    if (block) {
        ((reply_block *)reply)->block = block;
        reply->str = str;
    } else if ((reply->str = rp__malloc(len + 1))) {
        memcpy(reply->str, str, len);
    } else {
        rp__free(reply);
        return NULL;
    }
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

/* A buffer a string took goes back to reader if it is larger than the
 * one the reader holds now, with the bytes that one holds unparsed: the
 * next big reply is read into memory already in use, not into a fresh
 * allocation whose pages fault in again (measured: that cost more than
 * the copy it saves). */
static void give_back(sds block, redisReader *reader)
{
    size_t unparsed = reader ? reader->len - reader->pos : 0;
    if (!reader || sdsalloc(block) <= sdsalloc(reader->buf) || unparsed > sdsalloc(block)) {
        sdsfree(block);
        return;
    }
    memcpy(block, reader->buf + reader->pos, unparsed);
    sdssetlen(block, unparsed);
    block[unparsed] = '\0';
    sdsfree(reader->buf);
    reader->buf = block;
    reader->pos = 0;
    reader->len = unparsed;
}

void rp__reply_free_to(void *object, redisReader *reader)
{
    redisReply *reply = object;
    if (!reply)
        return;
    for (size_t i = 0; reply->element && i < reply->elements; i++)
        rp__reply_free_to(reply->element[i], reader);
    rp__free(reply->element);
    if (((reply_block *)reply)->block)
        give_back(((reply_block *)reply)->block, reader);
    else
        rp__free(reply->str);
    rp__free(reply);
}

void rp__reply_free(void *object) { rp__reply_free_to(object, NULL); }

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

size_t rp__reader_buffer_bytes(const redisReader *reader)
{
    return reader->buf ? sdsalloc(reader->buf) : 0; /* hiredis frees it on an error */
}

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
