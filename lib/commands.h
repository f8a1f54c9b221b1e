/* What the library knows about Redis commands (commands.c). */
#ifndef RP_COMMANDS_H
#define RP_COMMANDS_H

#include "internal.h"

#include <errno.h>
#include <hiredis/hiredis.h>

/* Names of the commands COMMAND flags readonly; until it is loaded, a
 * built-in table answers. */
typedef struct rp__readonly_table {
    char **names; /* lower case, sorted */
    size_t count;
} rp__readonly_table;

int rp__readonly_table_load(rp__readonly_table *table, const redisReply *command_reply);
void rp__readonly_table_free(rp__readonly_table *table);
bool rp__command_readonly(const rp__readonly_table *table, const char *name, size_t len);
static inline char rp__ascii_lower(char c) { return (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); }

/* Orders a length-counted command name against a table entry (lower case,
 * NUL-terminated), ignoring ASCII case: 0 only for the same word, of the
 * same length (a NUL in the name is one more byte, as for the server). */
int rp__command_name_cmp(const char *name, size_t len, const char *entry);
/* Whether an option word (XREAD's BLOCK, a key spec's keyword) is word, as
 * the server decides it: with strcasecmp, so its text ends at a first NUL
 * ("BLOCK\0x" is BLOCK; measured on Redis 7.0). */
bool rp__command_word_is(const char *arg, size_t len, const char *word);
/* A name COMMAND may list: a non-empty string without a NUL. */
bool rp__command_name_ok(const redisReply *name);

/* How long a blocking command (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BZPOPMIN,
 * BZPOPMAX, BLMPOP, BZMPOP, XREAD/XREADGROUP with BLOCK, WAIT, WAITAOF)
 * may block by its own timeout argument, in ms: 0 for ever, -1 if it is
 * not a blocking command. argvlen may be NULL (NUL-terminated arguments). */
int64_t rp__command_block_ms(int argc, const char *const *argv, const size_t *argvlen);

/* Whether the command named name uses or changes its connection's state
 * (AUTH, HELLO, SELECT, CLIENT, RESET, QUIT, MONITOR, WATCH, UNWATCH,
 * MULTI, EXEC, DISCARD, the (P/S)(UN)SUBSCRIBE family, READONLY,
 * READWRITE, ASKING), so that it must not share its connection. */
bool rp__command_binds_conn(const char *name, size_t len);

#endif
