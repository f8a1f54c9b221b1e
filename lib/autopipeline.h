/* Auto-pipelining (autopipeline.c): commands that share connections.
 * client.c calls these; they call down into command.c, never up. */
#ifndef RP_AUTOPIPELINE_H
#define RP_AUTOPIPELINE_H

#include "command.h"

int rp__autopipeline_init(rp_client *client, const rp_client_options *opts);
/* Whether cmd shares a connection: auto-pipelining is on, and cmd may
 * leave its connection to others (not blocking, no connection state, not
 * over the size threshold, no ASKING before it). */
bool rp__autopipeline_takes(const rp_client *client, const client_cmd *cmd);
/* Sends cmd on a shared connection, or queues it for room. */
void rp__autopipeline_send(client_cmd *cmd);
/* Takes cmd (waiting, or sent on a lane) back: its reply is skipped on
 * the lane (keep_conn), or the lane fails and closes once it owes nothing. */
void rp__autopipeline_abandon(client_cmd *cmd, bool keep_conn);
/* The client closes: lanes still getting give their gets up; with abort,
 * every lane's connection closes now, skipped replies or not. */
void rp__autopipeline_close(rp_client *client, bool abort);

#endif
