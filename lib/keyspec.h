/* Where a command's keys are, for cluster routing (keyspec.c). */
#ifndef RP_KEYSPEC_H
#define RP_KEYSPEC_H

#include "internal.h"

#include <hiredis/hiredis.h>

#define RP__NO_KEYS (-1)

typedef struct rp__keyspec {
    char *name;               /* lower case; "xinfo|stream" for a subcommand */
    struct spec_rules *rules; /* where its keys are (keyspec.c) */
    bool readonly;
    bool has_subcommands;
} rp__keyspec;

typedef struct rp__keyspec_table {
    rp__keyspec *specs; /* sorted by name */
    size_t count;
} rp__keyspec_table;

/* Loads the reply of COMMAND; replaces what the table held. Any spec
 * with a number out of range (or of a kind unknown) is not kept; a
 * command with a nonsense spec keeps only its first/last/step rule. */
int rp__keyspec_load(rp__keyspec_table *table, const redisReply *command_reply);
void rp__keyspec_free(rp__keyspec_table *table);

/* The slot every key of the command hashes to, RP__NO_KEYS when it has
 * none, or RP_ECROSSSLOT. key_index > 0 names the one key that routes it.
 * *readonly: the server flags the command read-only. An empty table (COMMAND
 * unread) takes argv[1] as the key. */
int rp__command_slot(const rp__keyspec_table *table, int key_index, int argc, const char *const *argv,
                     const size_t *argvlen, bool *readonly);

#endif
