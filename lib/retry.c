/* When rp_client may send a command again: what a server's error reply
 * says about a command, and go-redis's backoff. The rule itself is in
 * command.c: a command is retried only when it provably did not run (its
 * bytes never reached the kernel, or the server said it did not run it) or
 * when running it twice is harmless (commands.c knows which are read-only). */
#include "retry.h"

#include <string.h>

static bool starts_with(const redisReply *reply, const char *prefix)
{
    size_t len = strlen(prefix);
    return reply->len >= len && !memcmp(reply->str, prefix, len) && (reply->len == len || reply->str[len] == ' ');
}

/* Errors with which the server refuses a command before running it. */
bool rp__reply_cluster_refusal(const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ERROR)
        return false;
    static const char *const codes[] = {"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (starts_with(reply, codes[i]))
            return true;
    return false;
}

/* NOREPLICAS: a master with min-replicas-to-write and too few replicas
 * (one whose replica was just promoted away from it) refuses writes
 * before running them. */
bool rp__reply_not_executed(const redisReply *reply)
{
    return rp__reply_cluster_refusal(reply) || (rp__reply_conn_unusable(reply) && !starts_with(reply, "READONLY")) ||
           (reply->type == REDIS_REPLY_ERROR && starts_with(reply, "NOREPLICAS"));
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
