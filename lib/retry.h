/* rp_client's retry rule and the facts it rests on (retry.c). */
#ifndef RP_RETRY_H
#define RP_RETRY_H

#include "internal.h"

#include <errno.h>
#include <hiredis/hiredis.h>

/* Names of the commands COMMAND flags readonly; empty until loaded, and
 * then a built-in table answers. */
typedef struct rp__readonly_table {
    char **names; /* lower case, sorted */
    size_t count;
} rp__readonly_table;

int rp__readonly_table_load(rp__readonly_table *table, const redisReply *command_reply);
void rp__readonly_table_free(rp__readonly_table *table);
bool rp__command_readonly(const rp__readonly_table *table, const char *name, size_t len);

/* LOADING, READONLY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, max clients. */
bool rp__reply_not_executed(const redisReply *reply);
/* READONLY or max clients: the connection is no use for this command. */
bool rp__reply_conn_unusable(const redisReply *reply);

uint64_t rp__retry_backoff_ns(rp_loop *loop, int attempt, uint32_t min_ms, uint32_t max_ms);

#endif
