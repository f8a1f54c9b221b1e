/* Test fixture: a real Redis Cluster on loopback, redis-servers with
 * --cluster-enabled yes in a temporary directory, and the steps tests need
 * to change it under a client: kills, failovers, new nodes, slot moves.
 * Nodes are numbered in the order they started; a killed node keeps its
 * number. Every helper cr_asserts on failure. */
#ifndef RP_TEST_CLUSTER_FIXTURE_H
#define RP_TEST_CLUSTER_FIXTURE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <ringpool.h>

#define FXC_MAX_NODES 8

/* Six nodes, nodes 0-2 masters of slots 0-5460, 5461-10922 and
 * 10923-16383, each with a replica among nodes 3-5 (which one is
 * redis-cli's choice: ask fxc_replica_of), joined with redis-cli --cluster
 * create; returns once fxc_wait_ok passes. */
void fxc_start(void);
/* The same cluster speaking only TLS (--port 0 --tls-port, the cluster
 * bus and replication over TLS too): each node presents cert and key,
 * trusts ca, and announces hostname (cluster-announce-hostname; NULL or
 * "": none). fxc_port is then the TLS port, and the fixture's own
 * commands (fxc_command, ...) go over TLS, trusting ca, checking no name.
 * Asserts when the build has no TLS. */
void fxc_start_tls(const char *ca, const char *cert, const char *key, const char *hostname);
/* Kills every node (SIGKILL), reaps them and removes the directory; safe
 * to call twice. fxc_count() is 0 after it. */
void fxc_stop(void);

/* Nodes started so far, killed ones included. */
int fxc_count(void);
int fxc_port(int node);
/* 0 once killed. */
pid_t fxc_pid(int node);
/* "127.0.0.1:PORT" */
const char *fxc_addr(int node);

/* Runs a command on a node over a fresh blocking TCP socket (RESP, the
 * arguments as given, NULL-terminated) and returns the reply as text in a
 * malloc'd string: status and bulk strings as is, integers in decimal,
 * errors as their message ("MOVED 3999 127.0.0.1:7002"), nil as "(nil)",
 * arrays as their elements' text joined with '\n' (nested arrays
 * flattened). NULL if the node cannot be reached or sends no reply within
 * 5 s. */
char *fxc_command(int node, const char *arg, ...);
/* The same for any redis-server (or sentinel) on 127.0.0.1:port. */
char *fxc_vcommand_at(int port, const char *arg, va_list ap);
/* The same, asserting a reply that is not an error, discarding it. */
void fxc_command_ok(int node, const char *arg, ...);

/* The node serving the slot now in the view (CLUSTER NODES) of the first
 * live master; -1 if no node does. */
int fxc_master_of_slot(int slot);
/* A live node whose ROLE says it replicates that master; -1 if none. */
int fxc_replica_of(int master);
/* ROLE's first element is "master"; false for an unreachable node. */
bool fxc_is_master(int node);
/* SIGKILL, reaped; its pid becomes 0. */
void fxc_kill(int node);
/* Starts a new empty node, introduces it with CLUSTER MEET from the first
 * live node and returns its number once fxc_wait_ok passes (so every live
 * node lists it, and it knows every slot's owner). It is a master without
 * slots. */
int fxc_add_node(void);

/* A slot's move from one master to another, in the steps a test needs. */
/* CLUSTER SETSLOT IMPORTING on `to`, then MIGRATING on `from`. */
void fxc_migrate_start(int slot, int from, int to);
/* Moves every key of the slot, CLUSTER GETKEYSINSLOT and MIGRATE ... KEYS
 * in batches of 100. */
void fxc_migrate_keys(int slot, int from, int to);
/* CLUSTER SETSLOT slot NODE <to> on `to`, `from`, then every other live
 * master; the replicas learn it by gossip (fxc_wait_ok waits for that). */
void fxc_migrate_finish(int slot, int from, int to);
/* All three. */
void fxc_migrate_slot(int slot, int from, int to);

/* CLUSTER FAILOVER on the replica; waits until its ROLE says master and
 * fxc_wait_ok passes. */
void fxc_failover(int replica);
/* The same with an option: "FORCE", "TAKEOVER", or NULL for none. */
void fxc_failover_with(int replica, const char *option);

/* Waits until every live node reports cluster_state:ok, their CLUSTER NODES
 * views agree on the owner of every slot (a live node) and on every live
 * node's role and master, no view marks a live node as failing, and every
 * live replica's link to its master is up and has caught up with the
 * master's replication offset (INFO replication): a write a master took
 * before survives its failover. Asserts, saying what was still wrong, if
 * that takes longer than timeout_ms. */
void fxc_wait_ok(unsigned timeout_ms);

/* Writes into buf a key that hashes to `slot`, the first "key:<n>" for
 * n = 0, 1, ... (a table built on first use makes it cheap). */
void fxc_key_for_slot(int slot, char *buf, size_t size);
/* The lowest slot the node serves now. */
int fxc_slot_of_node(int node);

/* ------------------------------------------- an rp_cluster client of it */

#include "fixture.h"

/* Suite hooks: a cluster for each test, and fixture.h's fd-leak check. */
void fxc_suite_setup(void);
void fxc_suite_teardown(void);

/* Options with these seeds (one) and pools of 8 connections a node. */
void fxc_client_options(rp_cluster_options *opts, const char *const *seeds);
/* The same with node 0 as the seed. */
rp_cluster_options fxc_seed_options(void);
/* A new loop and a cluster client on it. */
void fxc_client_open(rp_loop **loop, rp_cluster **cluster, const rp_cluster_options *opts);
/* A close callback that counts its calls in the int at data. */
void fxc_closed_cb(rp_cluster *cluster, void *data);
/* Waits for a close already asked for with fxc_closed_cb and *closed:
 * its callback runs once, and the loop is left empty and freed. */
void fxc_client_wait_closed(rp_loop *loop, int *closed);
/* Closes the client and waits as fxc_client_wait_closed. */
void fxc_client_close(rp_loop *loop, rp_cluster *cluster);
/* Records a reply in the fx_result at data. */
void fxc_result_cb(rp_cluster *cluster, const redisReply *reply, int status, void *data);
/* Sends argv and runs the loop until its reply. */
fx_result fxc_run(rp_loop *loop, rp_cluster *cluster, int argc, const char **argv);

/* ------------------------------------------------- fake cluster nodes */

/* Listeners of our own on 127.0.0.1, served by one thread, for what no
 * real cluster sends: hostile COMMAND tables and layouts, redirects to
 * odd addresses, silence. The script runs on that thread for each whole
 * command a node receives (arguments NUL-terminated, up to FXF_ARGLEN - 1
 * bytes each) and answers with fxf_say, or not at all. */
enum { FXF_NODES = 4, FXF_ARGS = 16, FXF_ARGLEN = 512 };
typedef struct fxf_conn fxf_conn;
typedef void (*fxf_script)(fxf_conn *c, int node, int argc, char argv[][FXF_ARGLEN]);
/* Starts `nodes` listeners (their ports are known at once) and the thread. */
void fxf_start(int nodes, fxf_script script);
/* Stops the thread and closes every socket it had. */
void fxf_stop(void);
int fxf_port(int node);
/* "127.0.0.1:PORT" */
const char *fxf_addr(int node);
/* Writes text (or len bytes) to the connection; a failed write is ignored. */
void fxf_say(fxf_conn *c, const char *text);
void fxf_write(fxf_conn *c, const void *bytes, size_t len);
/* Commands named `name` (case-insensitive) a node received; node -1: all. */
int fxf_seen(int node, const char *name);

#endif
