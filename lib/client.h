/* rp_client's internals for cluster.c: the client's record (command.h)
 * and rp__client_attempt. */
#ifndef RP_CLIENT_H
#define RP_CLIENT_H

#include "command.h"

/* For cluster.c: rp_client_command_ex with rp__attempt_cb, its arguments
 * borrowed (they must outlive the callback; argvlen is required) and held
 * by hold: a send that carries an argument of RP__BY_REF_MIN bytes or more
 * from argv itself takes a reference to it until that send has completed,
 * which may be after the callback (a cancel, a deadline, a close). hold
 * NULL: every byte is copied into each send instead. how:
 * ASKING sent just before it on its connection; a reply that is one of the
 * server's own tables (COMMAND, the layout), which the library reads
 * whatever the caller's reply limit (up to RP__SERVER_TABLE_MAX). flags
 * RP_CMD_CACHE: through the client's cache, with cache_ttl_ms (-EINVAL as
 * rp_client_command_ex's); not with ASKING (a read of a slot on its way
 * here, not yet this node's: sent, not kept). */
#define RP__ATTEMPT_ASKING 1u
#define RP__ATTEMPT_SERVER_TABLE 2u
#define RP__SERVER_TABLE_MAX (64u * 1024 * 1024)
int64_t rp__client_attempt(rp_client *client, unsigned flags, unsigned how, uint32_t cache_ttl_ms, rp__attempt_cb cb,
                           void *data, int argc, const char *const *argv, const size_t *argvlen, rp__hold *hold);

/* A hit found in the client's cache (rp__cache_hit, pinned) ends with cb
 * later in this iteration, as rp_client_command_ex's hits; returns its id,
 * or -ENOMEM (the hit abandoned: not counted, unpinned). For cluster.c's hits. */
int64_t rp__client_hit(rp_client *client, rp__cache_entry *hit, rp_reply_cb cb, void *data);

#endif
