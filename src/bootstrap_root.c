/* The root of a rendezvous: ncclGetUniqueId's listener and the thread that collects
 * every rank's HELLO and answers with the table of their listeners (bootstrap.h). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "bootstrap_wire.h"
#include "env.h"
#include "error.h"
#include "log.h"

struct root {
  struct acceptor acc;
  int nranks; /* 0 until the first acceptable HELLO sets it */
  int arrived;
  int* fds;   /* per rank, -1 until it arrived */
  struct snapccl_wire_addr* table;
};

static int root_admit(struct root* r, const struct pending_conn* c) {
  const struct hello* h = &c->m.u.hello;
  if (!r->nranks) {
    r->fds = malloc(sizeof *r->fds * (size_t)h->nranks);
    r->table = calloc((size_t)h->nranks, sizeof *r->table);
    if (!r->fds || !r->table) return -1;
    for (int i = 0; i < h->nranks; i++) r->fds[i] = -1;
    r->nranks = h->nranks;
  }
  r->fds[h->rank] = c->fd;
  r->table[h->rank] = h->listen;
  r->arrived++;
  TRACE(SUB_BOOT, "root: rank %d/%d arrived from %s (%d so far)", h->rank, h->nranks, c->peer,
        r->arrived);
  return 0;
}

static void root_send_tables(struct root* r) {
  struct wire_hdr h = {WIRE_MAGIC, MSG_TABLE, (uint64_t)r->nranks * sizeof *r->table};
  for (int i = 0; i < r->nranks; i++) {
    char what[96];
    snprintf(what, sizeof what, "root: send the address table to rank %d", i);
    int64_t deadline = snapccl_socket_deadline();
    /* A failure concerns that rank alone (it will time out); the others go on. */
    if (snapccl_socket_send_all(r->fds[i], &h, sizeof h, deadline, -1, what) == ncclSuccess)
      snapccl_socket_send_all(r->fds[i], r->table, h.len, deadline, -1, what);
  }
}

/* ---- used-up ids ----
 * An id serves one rendezvous. A rank that comes with it later is told so: at once in
 * this process (the table below), and by the root itself for a while after it ended
 * (root_linger), so ranks in other processes hear it too instead of "connection
 * refused" until their timeout. */

#define SPENT_IDS 64
static struct {
  pthread_mutex_t lock;
  unsigned next;
  struct {
    uint64_t nonce[2];
    char why[160];
  } e[SPENT_IDS];
} g_spent = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void spent_record(const uint64_t nonce[2], const char* why) {
  pthread_mutex_lock(&g_spent.lock);
  unsigned i = g_spent.next++ % SPENT_IDS;
  memcpy(g_spent.e[i].nonce, nonce, sizeof g_spent.e[i].nonce);
  snprintf(g_spent.e[i].why, sizeof g_spent.e[i].why, "%s", why);
  pthread_mutex_unlock(&g_spent.lock);
}

/* 1 with the reason if this process's root of that nonce has ended. */
static int spent_lookup(const uint64_t nonce[2], char* why, size_t len) {
  int found = 0;
  pthread_mutex_lock(&g_spent.lock);
  for (unsigned i = 0; i < SPENT_IDS && i < g_spent.next && !found; i++) {
    if (memcmp(g_spent.e[i].nonce, nonce, sizeof g_spent.e[i].nonce) != 0) continue;
    snprintf(why, len, "%s", g_spent.e[i].why);
    found = 1;
  }
  pthread_mutex_unlock(&g_spent.lock);
  return found;
}

/* At most this many ended roots linger at once, each at most this long (or the
 * bootstrap timeout, if shorter): a listener and a sleeping thread each. */
#define ROOT_LINGER_MAX 4
#define ROOT_LINGER_MS 10000
static atomic_int g_lingering;

/* Refuses, with the reason, every HELLO of this id that comes after the end. */
static void root_linger(struct root* r, const char* why) {
  if (atomic_fetch_add(&g_lingering, 1) >= ROOT_LINGER_MAX) {
    atomic_fetch_sub(&g_lingering, 1);
    return;
  }
  int64_t until = snapccl_socket_deadline(), cap = snapccl_now_ms() + ROOT_LINGER_MS;
  if (cap < until) until = cap;
  for (;;) {
    struct pending_conn c;
    char reason[256];
    if (snapccl_bs_acceptor_next(&r->acc, until, -1, &c, "root: used up", reason,
                                 sizeof reason) != ncclSuccess)
      break;
    snapccl_bs_refuse(&r->acc, c.fd, c.peer, REFUSE_FATAL, why);
  }
  atomic_fetch_sub(&g_lingering, 1);
}

static void* root_main(void* arg) {
  struct root* r = arg;
  char why[160];
  /* The give-up clock restarts whenever a rank arrives. */
  int64_t deadline = snapccl_socket_deadline();
  while (!r->nranks || r->arrived < r->nranks) {
    struct pending_conn c;
    char reason[256];
    if (snapccl_bs_acceptor_next(&r->acc, deadline, -1, &c, "root: waiting for ranks", reason,
                      sizeof reason) != ncclSuccess) {
      WARN("%s; giving up with %d of %d ranks arrived", reason, r->arrived, r->nranks);
      snprintf(why, sizeof why, "the root gave up after SNAPCCL_BOOTSTRAP_TIMEOUT=%g s with "
               "%d of %d ranks arrived", snapccl_env()->bootstrap_timeout_s, r->arrived,
               r->nranks);
      for (int i = 0; i < r->nranks; i++)
        if (r->fds[i] >= 0) snapccl_bs_send_refusal(r->fds[i], REFUSE_GAVE_UP, why);
      goto done;
    }
    char buf[160];
    const char* refusal = snapccl_bs_hello_refusal(r->nranks, r->fds, &c.m.u.hello, buf, sizeof buf);
    if (refusal) {
      snapccl_bs_refuse(&r->acc, c.fd, c.peer, REFUSE_FATAL, refusal);
      continue;
    }
    if (root_admit(r, &c) != 0) {
      WARN("root: out of memory for %d ranks; giving up", c.m.u.hello.nranks);
      snprintf(why, sizeof why, "the root ran out of memory for %d ranks", c.m.u.hello.nranks);
      snapccl_bs_send_refusal(c.fd, REFUSE_GAVE_UP, why);
      close(c.fd);
      goto done;
    }
    deadline = snapccl_socket_deadline();
  }
  INFO(SUB_BOOT, "root: all %d ranks arrived; sending the address table", r->nranks);
  root_send_tables(r);
  snprintf(why, sizeof why, "this unique id is used up: its rendezvous of %d ranks has "
           "completed, and each communicator init needs an id of its own", r->nranks);
done:
  spent_record(r->acc.nonce, why);
  for (int i = 0; i < r->nranks; i++)
    if (r->fds[i] >= 0) close(r->fds[i]);
  snapccl_bs_refusals_flush(&r->acc);
  /* Connections still pending belong to no rank of this rendezvous: late ones hear why. */
  while (r->acc.n > 0) {
    struct pending_conn* c = &r->acc.p[--r->acc.n];
    snapccl_bs_refuse(&r->acc, c->fd, c->peer, REFUSE_FATAL, why);
  }
  root_linger(r, why);
  snapccl_bs_acceptor_free(&r->acc);
  free(r->fds);
  free(r->table);
  free(r);
  return NULL;
}

ncclResult_t snapccl_bootstrap_create_root(ncclUniqueId* id) {
  if (!id) SNAP_FAIL(ncclInvalidArgument, "unique id pointer is NULL");
  struct snapccl_unique_id u;
  memset(&u, 0, sizeof u);
  u.magic = SNAPCCL_ID_MAGIC;
  if (getrandom(u.nonce, sizeof u.nonce, 0) != (ssize_t)sizeof u.nonce)
    SNAP_FAIL(ncclSystemError, "getrandom for the id's nonce failed: %s", strerror(errno));

  union snapccl_sockaddr addr;
  int fd = -1;
  SNAP_CHECK(snapccl_socket_pick_addr(snapccl_env()->socket_ifname, &addr));
  SNAP_CHECK(snapccl_socket_listen(&addr, &fd));
  struct snapccl_wire_addr w;
  snapccl_sockaddr_to_wire(&addr, &w);
  u.family = w.family;
  u.port = w.port;
  u.scope_id = w.scope_id;
  memcpy(u.addr, w.addr, sizeof u.addr);

  struct root* r = calloc(1, sizeof *r);
  if (!r) {
    close(fd);
    SNAP_FAIL(ncclSystemError, "out of memory for the bootstrap root");
  }
  ncclResult_t res = snapccl_bs_acceptor_init(&r->acc, fd, "root", u.nonce, 1u << MSG_HELLO);
  if (res != ncclSuccess) {
    close(fd);
    free(r);
    return res;
  }
  r->acc.tell_refused = 1; /* the root's peers are ranks: they print why */
  pthread_attr_t attr;
  pthread_t th;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int e = pthread_create(&th, &attr, root_main, r);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    snapccl_bs_acceptor_free(&r->acc);
    free(r);
    SNAP_FAIL(ncclSystemError, "starting the bootstrap root thread failed: %s", strerror(e));
  }
  char s[80];
  INFO(SUB_BOOT, "bootstrap root listening on %s", snapccl_sockaddr_str(&addr, s, sizeof s));
  memcpy(id->internal, &u, sizeof u);
  return ncclSuccess;
}

ncclResult_t snapccl_bootstrap_check_id(const ncclUniqueId* id) {
  if (!id) SNAP_FAIL(ncclInvalidArgument, "unique id pointer is NULL");
  struct snapccl_unique_id u;
  memcpy(&u, id->internal, sizeof u); /* internal[] need not be aligned for u */
  if (u.magic != SNAPCCL_ID_MAGIC)
    SNAP_FAIL(ncclInvalidArgument, "unique id was not made by snapccl's ncclGetUniqueId "
              "(magic %#llx)", (unsigned long long)u.magic);
  struct snapccl_wire_addr w;
  union snapccl_sockaddr a;
  snapccl_bs_id_to_wire(&u, &w);
  if (snapccl_sockaddr_from_wire(&w, &a) != 0)
    SNAP_FAIL(ncclInvalidArgument, "unique id holds no usable root address (family %u, port %u)",
              u.family, ntohs(u.port));
  char why[160];
  if (spent_lookup(u.nonce, why, sizeof why)) SNAP_FAIL(ncclInvalidUsage, "%s", why);
  return ncclSuccess;
}
