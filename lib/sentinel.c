/* Following a Sentinel-managed master. The sentinels are asked in turn
 * (SENTINEL get-master-addr-by-name), the one that answers moves to the
 * front, as go-redis does, and tells us the others (SENTINEL sentinels).
 * One sentinel at a time holds our subscription to +switch-master; when
 * its connection fails, or a PING on it goes unanswered for a second, the
 * next one takes it over, and a round of asking covers any switch missed
 * meanwhile. Every sentinel is an rp_client of
 * its own (its AUTH, no retries): nothing here blocks or owns a socket.
 *
 * The data pool dials what we learnt (rp__pool_set_target). Until a first
 * answer its dials wait; a round with no answer and no master known fails
 * them with RP_ENOMASTER (a sentinel said it knows no such name) or
 * RP_ESENTINEL (none answered, or only with garbage), and another round
 * follows a second later. A known master stays the target while the
 * sentinels are unreachable: they are not on the data path.
 *
 * Reads on replicas (replica_only, route_randomly): after each answer,
 * and on the subscription's +sdown, -sdown, +slave and +switch-master,
 * SENTINEL replicas; each usable replica gets an rp_client of its own
 * (the data client's options), one that leaves the list is closed, and
 * rp__sentinel_read_client picks where a read goes (client.c routes). */
#include "heartbeat.h"
#include "sentinel.h"

#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUND_MIN_GAP_MS 100u   /* rounds asked for by refusals, at most this often */
#define ROUND_RETRY_MS 1000u    /* after a round with no answer */
#define RESUBSCRIBE_MS 250u     /* after the subscription's connection failed */
#define HEARTBEAT_MS 1000u      /* a PING on the subscription; unanswered by the next: failed */
#define DEFAULT_SENTINEL_TIMEOUT_MS 3000u

typedef struct node {
    rp__link link;
    rp__sentinel *s;
    rp_client *client;
    char addr[80];
} node;

/* A usable replica, for reads: a client of its own (its pool). */
typedef struct replica {
    rp__link link;
    rp__sentinel *s;
    rp_client *client;
    bool listed;        /* in the last SENTINEL replicas answer */
    char addr[80];
} replica;

struct rp__sentinel {
    rp_loop *loop;
    rp_pool *data;
    char *name, *username, *password;
    rp_tls_options tls;     /* the client's pool.tls, for every sentinel too */
    uint32_t dial_timeout_ms, read_timeout_ms;
    rp__list nodes;         /* asking order: the last to answer first */
    /* A round: the node being asked (NULL: none under way). */
    node *asking;
    int round_status;       /* RP_ENOMASTER once a sentinel denied the name */
    char round_error[512];  /* each failed node's reason, this round */
    char error[512];        /* the last failed round's, "" after success */
    uint64_t last_round_ns;
    rp__timer round_timer;
    char master[80];        /* the data pool's target, "" while none */
    /* The subscription. */
    node *sub_node;         /* holds it, or is getting its connection */
    rp_conn *sub_conn;
    unsigned sub_next;      /* the next attempt's node, round robin */
    rp__timer sub_timer;
    rp__heartbeat heartbeat; /* while subscribed */
    void (*on_switch)(void *data);
    void *on_switch_data;
    /* Reads on replicas: their clients' options (the data client's), the
     * usable ones, and those draining (closed, not yet done). */
    bool replica_only, route_randomly;
    rp_client_options replica_opts;
    rp__list replicas, draining;
    /* Closing. */
    bool closing;
    unsigned clients_open;
    void (*done)(void *data);
    void *done_data;
};

static node *node_of(rp__link *link) { return link ? RP__CONTAINER_OF(link, node, link) : NULL; }

static void node_error(rp__sentinel *s, const node *n, const char *why)
{
    size_t used = strlen(s->round_error);
    snprintf(s->round_error + used, sizeof s->round_error - used, "%s%s: %s", used ? "; " : "", n->addr, why);
}

static int node_add(rp__sentinel *s, const char *addr)
{
    for (rp__link *link = s->nodes.head; link; link = link->next)
        if (!strcmp(node_of(link)->addr, addr))
            return 0;
    node *n = rp__calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    n->s = s;
    snprintf(n->addr, sizeof n->addr, "%s", addr);
    rp_client_options opts;
    rp_client_options_init(&opts);
    opts.pool.addr = n->addr;
    opts.pool.pool_size = 2; /* a question and the subscription */
    opts.pool.dial_timeout_ms = s->dial_timeout_ms;
    opts.pool.read_timeout_ms = s->read_timeout_ms;
    opts.pool.write_timeout_ms = s->read_timeout_ms;
    opts.pool.pool_timeout_ms = s->dial_timeout_ms + s->read_timeout_ms;
    opts.pool.tls = s->tls;
    opts.username = s->username;
    opts.password = s->password;
    opts.max_retries = 0; /* the next sentinel is the retry */
    int rc = rp_client_new(&n->client, s->loop, &opts);
    if (rc < 0) {
        rp__free(n);
        return rc;
    }
    rp__list_push_back(&s->nodes, &n->link);
    return 0;
}

/* "host:port", with brackets for a v6 host. */
static bool format_addr(char *out, size_t size, const char *host, size_t host_len, const char *port, size_t port_len)
{
    if (!host_len || !port_len || port_len > 5 || strspn(port, "0123456789") < port_len)
        return false;
    bool v6 = memchr(host, ':', host_len) != NULL;
    int n = snprintf(out, size, "%s%.*s%s:%.*s", v6 ? "[" : "", (int)host_len, host, v6 ? "]" : "", (int)port_len,
                     port);
    return n > 0 && (size_t)n < size;
}

/* ---------------------------------------------------------------- target */

static void set_master(rp__sentinel *s, const char *addr)
{
    if (!strcmp(s->master, addr))
        return;
    if (rp__pool_set_target(s->data, addr, 0) < 0)
        return;
    snprintf(s->master, sizeof s->master, "%s", addr);
    if (s->on_switch)
        s->on_switch(s->on_switch_data);
}

void rp__sentinel_on_switch(rp__sentinel *s, void (*on_switch)(void *data), void *data)
{
    s->on_switch = on_switch;
    s->on_switch_data = data;
}

/* ------------------------------------------------------------ the rounds */

static void round_start(rp__sentinel *s);
static void ask_from(rp__sentinel *s, node *n);
static void subscribe_ensure(rp__sentinel *s);
static void replicas_ask(rp__sentinel *s, node *n);

static void round_timer_fired(rp__timer *timer)
{
    rp__sentinel *s = RP__CONTAINER_OF(timer, rp__sentinel, round_timer);
    round_start(s);
}

static void round_later(rp__sentinel *s, uint64_t at_ns)
{
    if (!rp__timer_armed(&s->round_timer) || at_ns < s->round_timer.deadline_ns)
        rp__timer_arm(s->loop, &s->round_timer, at_ns);
}

/* No sentinel answered: a known master stays; without one, dials fail. */
static void round_failed(rp__sentinel *s)
{
    s->asking = NULL;
    snprintf(s->error, sizeof s->error, "%s", s->round_error);
    if (!s->master[0])
        rp__pool_set_target(s->data, NULL, s->round_status);
    round_later(s, rp__loop_now(s->loop) + ROUND_RETRY_MS * RP__NS_PER_MS);
}

static void sentinels_reply(rp_client *client, const redisReply *reply, int status, void *data);

static void round_answered(rp__sentinel *s, node *n, const char *addr)
{
    s->asking = NULL;
    s->error[0] = '\0';
    rp__list_unlink(&s->nodes, &n->link);
    rp__list_push_front(&s->nodes, &n->link);
    set_master(s, addr);
    replicas_ask(s, n);
    const char *argv[] = {"SENTINEL", "sentinels", s->name};
    rp_client_command(n->client, sentinels_reply, n, 3, argv, NULL); /* learning others is a bonus */
    subscribe_ensure(s);
}

/* [ip, port], nil for a name the sentinel does not know, or anything else:
 * garbage. */
static void master_reply(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    node *n = data;
    rp__sentinel *s = n->s;
    if (s->closing)
        return;
    char addr[80];
    if (status < 0) {
        node_error(s, n, rp_strerror(status));
    } else if (reply->type == REDIS_REPLY_NIL) {
        node_error(s, n, "no master by that name");
        s->round_status = RP_ENOMASTER;
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
               reply->element[0]->type == REDIS_REPLY_STRING && reply->element[1]->type == REDIS_REPLY_STRING &&
               format_addr(addr, sizeof addr, reply->element[0]->str, reply->element[0]->len,
                           reply->element[1]->str, reply->element[1]->len)) {
        round_answered(s, n, addr);
        return;
    } else {
        node_error(s, n, reply->type == REDIS_REPLY_ERROR ? reply->str : "not an address");
    }
    ask_from(s, node_of(n->link.next));
}

/* Asks n, or the first after it that takes the question; none left: the
 * round failed. */
static void ask_from(rp__sentinel *s, node *n)
{
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", s->name};
    for (; n; n = node_of(n->link.next)) {
        int rc = rp_client_command(n->client, master_reply, n, 3, argv, NULL);
        if (rc == 0) {
            s->asking = n;
            return;
        }
        node_error(s, n, rp_strerror(rc));
    }
    round_failed(s);
}

static void round_start(rp__sentinel *s)
{
    if (s->asking || s->closing)
        return;
    rp__timer_disarm(s->loop, &s->round_timer);
    s->last_round_ns = rp__loop_now(s->loop);
    s->round_status = RP_ESENTINEL;
    s->round_error[0] = '\0';
    ask_from(s, node_of(s->nodes.head));
}

void rp__sentinel_suspect(rp__sentinel *s)
{
    if (s->asking || s->closing)
        return;
    uint64_t next = s->last_round_ns + ROUND_MIN_GAP_MS * RP__NS_PER_MS;
    if (rp__loop_now(s->loop) >= next)
        round_start(s);
    else
        round_later(s, next);
}

/* One field of a SENTINEL sentinels / replicas entry: a flat [field,
 * value, ...] array. NULL when absent, or not a string. */
static const redisReply *entry_field(const redisReply *entry, const char *name)
{
    if (entry->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t f = 0; f + 1 < entry->elements; f += 2) {
        const redisReply *key = entry->element[f], *value = entry->element[f + 1];
        if (key->type == REDIS_REPLY_STRING && value->type == REDIS_REPLY_STRING && !strcmp(key->str, name))
            return value;
    }
    return NULL;
}

/* The entry's "ip" and "port" as "host:port". */
static bool entry_addr(const redisReply *entry, char *addr, size_t size)
{
    const redisReply *ip = entry_field(entry, "ip"), *port = entry_field(entry, "port");
    return ip && port && format_addr(addr, size, ip->str, ip->len, port->str, port->len);
}

/* SENTINEL sentinels: an array of entries. */
static void sentinels_reply(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    rp__sentinel *s = ((node *)data)->s;
    if (s->closing || status < 0 || reply->type != REDIS_REPLY_ARRAY)
        return;
    char addr[80];
    for (size_t i = 0; i < reply->elements; i++)
        if (entry_addr(reply->element[i], addr, sizeof addr))
            node_add(s, addr);
}

/* ------------------------------------------------------------- replicas */

static replica *replica_of(rp__link *link) { return link ? RP__CONTAINER_OF(link, replica, link) : NULL; }

static void node_closed(rp_client *client, void *data);

static void replica_closed(rp_client *client, void *data)
{
    replica *r = data;
    rp__sentinel *s = r->s;
    rp__list_unlink(&s->draining, &r->link);
    rp__free(r);
    if (s->closing) /* counted in clients_open */
        node_closed(client, s);
}

/* No longer usable (or we close): reads under way on it finish, the
 * others go to the master (client.c), and its pool closes. */
static void replica_drain(rp__sentinel *s, replica *r)
{
    rp__list_unlink(&s->replicas, &r->link);
    rp__list_push_back(&s->draining, &r->link);
    rp_client_close(r->client, replica_closed, r);
}

static void replica_listed(rp__sentinel *s, const char *addr)
{
    for (rp__link *link = s->replicas.head; link; link = link->next)
        if (!strcmp(replica_of(link)->addr, addr)) {
            replica_of(link)->listed = true;
            return;
        }
    replica *r = rp__calloc(1, sizeof *r);
    if (!r)
        return;
    r->s = s;
    r->listed = true;
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    rp_client_options opts = s->replica_opts;
    opts.pool.addr = r->addr;
    if (rp_client_new(&r->client, s->loop, &opts) < 0) {
        rp__free(r);
        return;
    }
    rp__list_push_back(&s->replicas, &r->link);
}

/* A replica is usable when the sentinel sees it up, connected, and its
 * link to the master up (its data current). */
static bool replica_usable(const redisReply *entry)
{
    const redisReply *flags = entry_field(entry, "flags"), *link = entry_field(entry, "master-link-status");
    return flags && link && !strcmp(link->str, "ok") && !strstr(flags->str, "s_down") &&
           !strstr(flags->str, "o_down") && !strstr(flags->str, "disconnected");
}

/* SENTINEL replicas: the usable ones get a pool, the others lose theirs.
 * No answer leaves the list as it is. */
static void replicas_reply(rp_client *client, const redisReply *reply, int status, void *data)
{
    (void)client;
    rp__sentinel *s = data;
    if (s->closing || status < 0 || reply->type != REDIS_REPLY_ARRAY)
        return;
    for (rp__link *link = s->replicas.head; link; link = link->next)
        replica_of(link)->listed = false;
    char addr[80];
    for (size_t i = 0; i < reply->elements; i++)
        if (replica_usable(reply->element[i]) && entry_addr(reply->element[i], addr, sizeof addr))
            replica_listed(s, addr);
    rp__link *link = s->replicas.head, *next;
    for (; link; link = next) {
        next = link->next;
        if (!replica_of(link)->listed)
            replica_drain(s, replica_of(link));
    }
}

static void replicas_ask(rp__sentinel *s, node *n)
{
    if (!n || s->closing || !(s->replica_only || s->route_randomly))
        return;
    const char *argv[] = {"SENTINEL", "replicas", s->name};
    rp_client_command(n->client, replicas_reply, s, 3, argv, NULL);
}

rp_client *rp__sentinel_read_client(rp__sentinel *s)
{
    unsigned n = s->replicas.len;
    if (!n || s->closing || !(s->replica_only || s->route_randomly))
        return NULL;
    unsigned pick = rp__loop_random(s->loop) % (s->route_randomly ? n + 1 : n);
    rp__link *link = s->replicas.head;
    for (unsigned i = 0; link && i < pick; i++)
        link = link->next;
    return link ? replica_of(link)->client : NULL; /* past the last: the master */
}

/* ---------------------------------------------------------- subscription */

static void sub_drop(rp__sentinel *s, int reason)
{
    rp__heartbeat_stop(&s->heartbeat);
    if (s->sub_conn)
        rp_pool_remove(rp_client_pool(s->sub_node->client), s->sub_conn, reason);
    s->sub_conn = NULL;
    s->sub_node = NULL;
}

/* Its sentinel failed: it is asked last from now on, another takes the
 * subscription a moment later, and a round covers any switch told while
 * nobody listened. */
static void sub_lost(rp__sentinel *s, int reason)
{
    if (s->sub_node && s->asking != s->sub_node) {
        rp__list_unlink(&s->nodes, &s->sub_node->link);
        rp__list_push_back(&s->nodes, &s->sub_node->link);
    }
    sub_drop(s, reason);
    rp__timer_arm(s->loop, &s->sub_timer, rp__loop_now(s->loop) + RESUBSCRIBE_MS * RP__NS_PER_MS);
    rp__sentinel_suspect(s);
}

/* "+switch-master NAME old-ip old-port new-ip new-port". */
static void switch_master(rp__sentinel *s, const redisReply *payload)
{
    char name[256], old_ip[64], old_port[8], ip[64], port[8], addr[80];
    if (payload->type != REDIS_REPLY_STRING ||
        sscanf(payload->str, "%255s %63s %7s %63s %7s", name, old_ip, old_port, ip, port) != 5 ||
        strcmp(name, s->name))
        return;
    if (format_addr(addr, sizeof addr, ip, strlen(ip), port, strlen(port)))
        set_master(s, addr);
}

/* A sentinel that stops answering (frozen, partitioned). */
static void heartbeat_lost(rp__heartbeat *hb, int reason)
{
    sub_lost(RP__CONTAINER_OF(hb, rp__sentinel, heartbeat), reason);
}

static void on_event(rp_conn *conn, const redisReply *msg, int status, void *data)
{
    rp__sentinel *s = data;
    if (!msg) { /* the connection failed, or we removed it */
        if (conn == s->sub_conn && !s->closing)
            sub_lost(s, status < 0 ? status : RP_EBADCONN);
        return;
    }
    if (s->closing || msg->type != REDIS_REPLY_ARRAY || msg->elements < 2 ||
        msg->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = msg->element[0]->str;
    rp__heartbeat_saw(&s->heartbeat, kind);
    if (!strcmp(kind, "message") && msg->elements == 3 && msg->element[1]->type == REDIS_REPLY_STRING) {
        if (!strcmp(msg->element[1]->str, "+switch-master"))
            switch_master(s, msg->element[2]);
        /* A replica (or the master) of some name went down, came back or
         * was added: ask again when it may be ours. */
        if (msg->element[2]->type == REDIS_REPLY_STRING && strstr(msg->element[2]->str, s->name))
            replicas_ask(s, s->sub_node);
    } else if (!strcmp(kind, "subscribe")) {
        rp__heartbeat_start(&s->heartbeat, conn);
        rp__sentinel_suspect(s); /* a switch before the subscription took */
    }
}

static void sub_got(rp_pool *pool, rp_conn *conn, int status, void *data)
{
    rp__sentinel *s = data;
    if (s->closing) {
        if (conn)
            rp_pool_remove(pool, conn, RP_ECLOSED);
        return;
    }
    if (status == 0) {
        s->sub_conn = conn;
        const char *argv[] = {"SUBSCRIBE", "+switch-master", "+sdown", "-sdown", "+slave"};
        status = rp_conn_subscribe(conn, on_event, s, s->replica_only || s->route_randomly ? 5 : 2, argv, NULL);
    }
    if (status < 0)
        sub_lost(s, status);
}

static void subscribe_ensure(rp__sentinel *s)
{
    if (s->sub_node || s->closing || rp__timer_armed(&s->sub_timer) || !s->nodes.len)
        return;
    rp__link *link = s->nodes.head;
    for (unsigned i = s->sub_next++ % s->nodes.len; i; i--)
        link = link->next;
    s->sub_node = node_of(link);
    int rc = rp_pool_new_conn(rp_client_pool(s->sub_node->client), sub_got, s);
    if (rc < 0)
        sub_lost(s, rc);
}

static void sub_timer_fired(rp__timer *timer)
{
    subscribe_ensure(RP__CONTAINER_OF(timer, rp__sentinel, sub_timer));
}

/* ------------------------------------------------------------ lifecycle */

static void sentinel_free(rp__sentinel *s)
{
    rp__link *link;
    while ((link = rp__list_pop(&s->nodes, false)))
        rp__free(node_of(link));
    rp__free(s->name);
    rp__free(s->username);
    rp__free((char *)s->replica_opts.username);
    rp__free((char *)s->replica_opts.client_name);
    if (s->replica_opts.password)
        explicit_bzero((char *)s->replica_opts.password, strlen(s->replica_opts.password));
    rp__free((char *)s->replica_opts.password);
    rp__tls_options_free(&s->tls);
    if (s->password)
        explicit_bzero(s->password, strlen(s->password));
    rp__free(s->password);
    rp__free(s);
}

/* A replica's client: the data client's options, its own address, no
 * retries (the master is the retry), no cache (cached reads go to the
 * master); s->tls outlives every copy. */
static int replica_opts_init(rp__sentinel *s, const rp_client_options *opts)
{
    rp_client_options *r = &s->replica_opts;
    *r = *opts;
    r->master_name = NULL;
    r->sentinel_addrs = NULL;
    r->sentinel_count = 0;
    r->sentinel_username = r->sentinel_password = NULL;
    r->replica_only = r->route_randomly = false;
    r->max_retries = 0;
    r->cache_bytes = 0; /* cached reads go to the master: no cache, no subscriber here */
    r->cache_mode = r->cache_prefix_count = 0;
    r->cache_prefixes = NULL;
    r->pool.tls = s->tls;
    r->username = r->password = r->client_name = NULL;
    if ((opts->username && !(r->username = rp__strdup(opts->username))) ||
        (opts->password && !(r->password = rp__strdup(opts->password))) ||
        (opts->client_name && !(r->client_name = rp__strdup(opts->client_name))))
        return -ENOMEM;
    return 0;
}

int rp__sentinel_new(rp__sentinel **out, rp_loop *loop, const rp_client_options *opts, rp_pool *data)
{
    rp__sentinel *s = rp__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->data = data;
    s->dial_timeout_ms = opts->pool.dial_timeout_ms ? opts->pool.dial_timeout_ms : DEFAULT_SENTINEL_TIMEOUT_MS;
    s->read_timeout_ms = opts->pool.read_timeout_ms ? opts->pool.read_timeout_ms : DEFAULT_SENTINEL_TIMEOUT_MS;
    rp__timer_init(&s->round_timer, round_timer_fired, false);
    rp__timer_init(&s->sub_timer, sub_timer_fired, false);
    rp__heartbeat_init(&s->heartbeat, loop, HEARTBEAT_MS, heartbeat_lost);
    int rc = 0;
    if (!(s->name = rp__strdup(opts->master_name)) ||
        (opts->sentinel_username && !(s->username = rp__strdup(opts->sentinel_username))) ||
        (opts->sentinel_password && !(s->password = rp__strdup(opts->sentinel_password))))
        rc = -ENOMEM;
    if (rc == 0)
        rc = rp__tls_options_copy(&s->tls, &opts->pool.tls);
    s->replica_only = opts->replica_only;
    s->route_randomly = opts->route_randomly;
    if (rc == 0)
        rc = replica_opts_init(s, opts);
    for (int i = 0; rc == 0 && i < opts->sentinel_count; i++)
        rc = node_add(s, opts->sentinel_addrs[i]);
    if (rc < 0) {
        rp__link *link;
        while ((link = rp__list_pop(&s->nodes, false))) { /* nothing sent yet: nothing to wait for */
            rp_client_abort(node_of(link)->client, NULL, NULL);
            rp__free(node_of(link));
        }
        sentinel_free(s);
        return rc;
    }
    round_start(s);
    *out = s;
    return 0;
}

const char *rp__sentinel_error(const rp__sentinel *s) { return s->error[0] ? s->error : NULL; }

static void node_closed(rp_client *client, void *data)
{
    (void)client;
    rp__sentinel *s = data;
    if (--s->clients_open)
        return;
    void (*done)(void *) = s->done;
    void *done_data = s->done_data;
    sentinel_free(s);
    done(done_data);
}

void rp__sentinel_close(rp__sentinel *s, void (*done)(void *data), void *data)
{
    s->closing = true;
    s->done = done;
    s->done_data = data;
    rp__timer_disarm(s->loop, &s->round_timer);
    rp__timer_disarm(s->loop, &s->sub_timer);
    sub_drop(s, RP_ECLOSED);
    s->clients_open = s->nodes.len + s->replicas.len + s->draining.len;
    for (rp__link *link = s->nodes.head; link; link = link->next)
        rp_client_abort(node_of(link)->client, node_closed, s);
    while (s->replicas.head)
        replica_drain(s, replica_of(s->replicas.head));
}
