/* Reply objects for hiredis's reader, built with the library's allocator.
 * They are redisReply structs as hiredis builds them, and the size limit
 * sees an array's declared length before anything is allocated for it. */
#include "reply.h"

#include <string.h>

static void *attach(const redisReadTask *task, redisReply *reply)
{
    if (task->parent) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = reply;
    }
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

/* Every element takes at least three bytes ("+\r\n"). */
static void *create_array(const redisReadTask *task, int elements)
{
    rp__reply_limit *limit = task->privdata;
    if (elements < 0 || (size_t)elements > limit->max_bytes / 3) {
        limit->exceeded = true;
        return NULL;
    }
    redisReply *reply = reply_new(REDIS_REPLY_ARRAY);
    if (!reply)
        return NULL;
    if (elements && !(reply->element = rp__calloc((size_t)elements, sizeof *reply->element))) {
        rp__free(reply);
        return NULL;
    }
    reply->elements = (size_t)elements;
    return attach(task, reply);
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
    unsigned long long declared = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (declared > max_bytes)
            return true;
        declared = declared * 10 + (unsigned long long)(*p - '0');
    }
    return declared > max_bytes;
}
