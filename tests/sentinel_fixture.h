/* Test fixture: a Sentinel-managed master on loopback. Debian's
 * redis-server as a master, one replica and three sentinels (quorum 2,
 * down-after 1000 ms) in a temporary directory, and the steps tests need:
 * kills, a forced failover, waiting for a switch. Every helper cr_asserts
 * on failure. */
#ifndef RP_TEST_SENTINEL_FIXTURE_H
#define RP_TEST_SENTINEL_FIXTURE_H

#include <stdbool.h>
#include <sys/types.h>

#define FXS_NAME "mymaster"
#define FXS_SENTINELS 3

/* Starts the master (data node 0, with min-replicas-to-write 1, so it
 * refuses writes once its replica leaves it), the replica (data node 1)
 * and the sentinels, and returns once every sentinel reports the master,
 * its replica as usable and the two other sentinels: a failover can
 * start. */
void fxs_start(void);
/* The same with TLS everywhere: each node and sentinel also listens on a
 * TLS port, which the sentinels monitor and announce (tls-replication
 * yes), replication uses, and the addresses below name. A CA and one
 * certificate (SANs localhost, 127.0.0.1) made per run with the openssl
 * CLI serve every process, as server and as client; with data_dns_only
 * the data nodes serve one whose only name is localhost (no IP SAN: a
 * client verifying the address the sentinels name refuses them). */
void fxs_start_tls(bool data_dns_only);
const char *fxs_tls_ca(void);
const char *fxs_tls_cert(void);
const char *fxs_tls_key(void);
/* Kills everything and removes the directory; safe to call twice. */
void fxs_stop(void);

/* "127.0.0.1:PORT" of data node 0 (master at start) or 1, as clients and
 * sentinels reach it (the TLS port with TLS); the plain port, for
 * fxs_command. */
const char *fxs_data_addr(int node);
int fxs_data_port(int node);
/* The sentinels' addresses (TLS ports with TLS), FXS_SENTINELS of them;
 * their plain ports. */
const char *const *fxs_sentinel_addrs(void);
int fxs_sentinel_port(int sentinel);

/* SIGKILL, reaped. */
void fxs_kill_data(int node);
void fxs_kill_sentinel(int sentinel);
/* A killed sentinel again, on its ports, with the config it rewrote. */
void fxs_restart_sentinel(int sentinel);
/* SIGSTOP (freeze: its connections stay open and silent) or SIGCONT. */
void fxs_freeze_sentinel(int sentinel, bool frozen);
void fxs_freeze_data(int node, bool frozen);

/* A command to 127.0.0.1:port over a fresh blocking socket; the reply as
 * text (arrays flattened, joined with '\n'; nil "(nil)"), malloc'd; NULL
 * if nothing answers within 5 s. NULL-terminated arguments. */
char *fxs_command(int port, const char *arg, ...);
/* The data node whose ROLE says master, -1 if none. */
int fxs_master(void);
/* SENTINEL FAILOVER on the first live sentinel (asserting OK). */
void fxs_failover(void);
/* Waits until every live sentinel (not frozen) names the other data node than `from`
 * as master and that node's ROLE says master (the old one may still think
 * it is one); returns its number. */
int fxs_wait_switch(int from, unsigned timeout_ms);
/* One look at the same: the new master's number, or -1 not yet. */
int fxs_switched(int from);

#endif
