/* hiredis's reader with reply objects of our own (reply.c). */
#ifndef RP_REPLY_H
#define RP_REPLY_H

#include "internal.h"

#include <hiredis/hiredis.h>

/* The reader's privdata: the size limit of one reply, what the arrays of
 * the reply being read declared (reset when it completes), and whether a
 * declared length went past the limit. */
typedef struct rp__reply_limit {
    size_t max_bytes;
    size_t declared_bytes;
    bool exceeded;
    redisReader *reader; /* the reader it serves: a big bulk string's reply
                            takes that reader's buffer (reply.c); NULL: copied */
} rp__reply_limit;

/* A bulk string body this large is read straight into the reader's
 * buffer (redis.c), and its reply takes that buffer instead of a copy. */
#define RP__BULK_IN_PLACE (32 * 1024)

redisReader *rp__reader_new(rp__reply_limit *limit);
void rp__reply_free(void *reply);
/* The same, outside the reader's calls: a buffer a big string took from
 * a reader goes back to reader (or NULL) when that is worth it. */
void rp__reply_free_to(void *reply, redisReader *reader);
/* The bulk string being read declared more than max_bytes. */
bool rp__reader_declares_too_much(const redisReader *reader, size_t max_bytes);

/* Of a bulk string whose header is in but not its whole body: the bytes
 * still to come (body and CRLF), else 0. */
size_t rp__reader_bulk_missing(const redisReader *reader);
/* Room for at least `more` bytes after what the reader holds, to receive
 * into straight (rp__reader_received then counts them): -ENOMEM, or 0. */
int rp__reader_reserve(redisReader *reader, size_t more);
char *rp__reader_tail(const redisReader *reader, size_t *room);
void rp__reader_received(redisReader *reader, size_t n);

/* Part of a reply has been read (bytes unparsed, or a reply begun). */
bool rp__reader_in_reply(const redisReader *reader);

/* What the reader's own buffer holds (allocated by hiredis, with libc). */
size_t rp__reader_buffer_bytes(const redisReader *reader);
/* Between replies: gives a buffer over the reader's maxbuf back. */
void rp__reader_release_buffer(redisReader *reader);
/* Every byte fed was parsed: the buffer starts over (kept, emptied). */
void rp__reader_rewind(redisReader *reader);

/* Reading replies: a string or status; the value after key in a flat
 * [key, value, ...] array (CLUSTER SHARDS, COMMAND's key specs), or NULL. */
bool rp__reply_is_text(const redisReply *reply);
const redisReply *rp__reply_map_get(const redisReply *map, const char *key);
/* Whether an array (COMMAND's flags) holds the text. */
bool rp__reply_array_has(const redisReply *array, const char *text);

#endif
