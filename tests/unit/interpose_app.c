/* The application of the interposition tests (test_interpose.c runs it as a subprocess).
 *
 * Linked against the stand-in libnccl.so.2 (fake_nccl.c); the test decides which
 * library actually serves it: LD_PRELOAD=libsnapccl.so (interposed), snapccl's
 * libnccl.so.2 first on LD_LIBRARY_PATH with or without SNAPCCL_NCCL_LIB (fallback,
 * standalone). argv[1] names a scenario.
 *
 * Before each NCCL call it prints "CALL <name> <arguments>" in exactly the format the
 * fake logs the call it receives, and after it "RET <name> <code>"; other lines report
 * what came back (VERSION, ID, QUERY, LASTERR, ...). Buffers and streams are made-up
 * addresses: no library on the forwarding path may dereference them. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../fnv.h"
#include "nccl.h"

/* 2.28 functions, which snapccl's 2.27 header does not declare. */
ncclResult_t ncclAlltoAll(const void* sendbuff, void* recvbuff, size_t count,
                          ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclCommRevoke(ncclComm_t comm, int revokeFlags);

#define P(x) ((void*)(uintptr_t)(x))
#define S(x) ((cudaStream_t)(uintptr_t)(x))

static void call(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static void call(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("CALL ", stdout);
  vprintf(fmt, ap);
  fputc('\n', stdout);
  va_end(ap);
}

static ncclResult_t ret(const char* name, ncclResult_t r) {
  printf("RET %s %d\n", name, (int)r);
  return r;
}

static void print_id(const char* tag, const ncclUniqueId* id) {
  unsigned long long head;
  memcpy(&head, id->internal, sizeof head);
  printf("%s %016llx\n", tag, head);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------- wrappers */

static ncclResult_t get_version(int* v) {
  call("ncclGetVersion version=%p", (void*)v);
  return ret("ncclGetVersion", ncclGetVersion(v));
}

static ncclResult_t get_id(ncclUniqueId* id) {
  call("ncclGetUniqueId uniqueId=%p", (void*)id);
  return ret("ncclGetUniqueId", ncclGetUniqueId(id));
}

static ncclResult_t init_rank(ncclComm_t* c, int nranks, ncclUniqueId id, int rank) {
  call("ncclCommInitRank comm=%p nranks=%d id=%016llx rank=%d", (void*)c, nranks,
       fnv(&id, sizeof id), rank);
  return ret("ncclCommInitRank", ncclCommInitRank(c, nranks, id, rank));
}

static ncclResult_t init_config(ncclComm_t* c, int nranks, ncclUniqueId id, int rank,
                                ncclConfig_t* cfg) {
  call("ncclCommInitRankConfig comm=%p nranks=%d id=%016llx rank=%d config=%p blocking=%d",
       (void*)c, nranks, fnv(&id, sizeof id), rank, (void*)cfg, cfg ? cfg->blocking : -99);
  return ret("ncclCommInitRankConfig", ncclCommInitRankConfig(c, nranks, id, rank, cfg));
}

static ncclResult_t allreduce(const void* s, void* r, size_t n, ncclDataType_t t, ncclRedOp_t op,
                              ncclComm_t c, cudaStream_t st) {
  call("ncclAllReduce send=%p recv=%p count=%zu dtype=%d op=%d comm=%p stream=%p", s, r, n,
       (int)t, (int)op, (void*)c, (void*)st);
  return ret("ncclAllReduce", ncclAllReduce(s, r, n, t, op, c, st));
}

static ncclResult_t allgather(const void* s, void* r, size_t n, ncclDataType_t t, ncclComm_t c,
                              cudaStream_t st) {
  call("ncclAllGather send=%p recv=%p count=%zu dtype=%d comm=%p stream=%p", s, r, n, (int)t,
       (void*)c, (void*)st);
  return ret("ncclAllGather", ncclAllGather(s, r, n, t, c, st));
}

static ncclResult_t reducescatter(const void* s, void* r, size_t n, ncclDataType_t t,
                                  ncclRedOp_t op, ncclComm_t c, cudaStream_t st) {
  call("ncclReduceScatter send=%p recv=%p count=%zu dtype=%d op=%d comm=%p stream=%p", s, r, n,
       (int)t, (int)op, (void*)c, (void*)st);
  return ret("ncclReduceScatter", ncclReduceScatter(s, r, n, t, op, c, st));
}

static ncclResult_t reduce(const void* s, void* r, size_t n, ncclDataType_t t, ncclRedOp_t op,
                           int root, ncclComm_t c, cudaStream_t st) {
  call("ncclReduce send=%p recv=%p count=%zu dtype=%d op=%d root=%d comm=%p stream=%p", s, r, n,
       (int)t, (int)op, root, (void*)c, (void*)st);
  return ret("ncclReduce", ncclReduce(s, r, n, t, op, root, c, st));
}

static ncclResult_t bcast(void* b, size_t n, ncclDataType_t t, int root, ncclComm_t c,
                          cudaStream_t st) {
  call("ncclBcast buff=%p count=%zu dtype=%d root=%d comm=%p stream=%p", b, n, (int)t, root,
       (void*)c, (void*)st);
  return ret("ncclBcast", ncclBcast(b, n, t, root, c, st));
}

static ncclResult_t broadcast(const void* s, void* r, size_t n, ncclDataType_t t, int root,
                              ncclComm_t c, cudaStream_t st) {
  call("ncclBroadcast send=%p recv=%p count=%zu dtype=%d root=%d comm=%p stream=%p", s, r, n,
       (int)t, root, (void*)c, (void*)st);
  return ret("ncclBroadcast", ncclBroadcast(s, r, n, t, root, c, st));
}

static ncclResult_t send_(const void* s, size_t n, ncclDataType_t t, int peer, ncclComm_t c,
                          cudaStream_t st) {
  call("ncclSend send=%p count=%zu dtype=%d peer=%d comm=%p stream=%p", s, n, (int)t, peer,
       (void*)c, (void*)st);
  return ret("ncclSend", ncclSend(s, n, t, peer, c, st));
}

static ncclResult_t recv_(void* r, size_t n, ncclDataType_t t, int peer, ncclComm_t c,
                          cudaStream_t st) {
  call("ncclRecv recv=%p count=%zu dtype=%d peer=%d comm=%p stream=%p", r, n, (int)t, peer,
       (void*)c, (void*)st);
  return ret("ncclRecv", ncclRecv(r, n, t, peer, c, st));
}

static ncclResult_t group_start(void) {
  call("ncclGroupStart");
  return ret("ncclGroupStart", ncclGroupStart());
}

static ncclResult_t group_end(void) {
  call("ncclGroupEnd");
  return ret("ncclGroupEnd", ncclGroupEnd());
}

static ncclResult_t destroy(ncclComm_t c) {
  call("ncclCommDestroy comm=%p", (void*)c);
  return ret("ncclCommDestroy", ncclCommDestroy(c));
}

static ncclResult_t abort_(ncclComm_t c) {
  call("ncclCommAbort comm=%p", (void*)c);
  return ret("ncclCommAbort", ncclCommAbort(c));
}

static ncclResult_t async_error(ncclComm_t c, ncclResult_t* st) {
  call("ncclCommGetAsyncError comm=%p asyncError=%p", (void*)c, (void*)st);
  return ret("ncclCommGetAsyncError", ncclCommGetAsyncError(c, st));
}

static ncclResult_t alltoall(const void* s, void* r, size_t n, ncclDataType_t t, ncclComm_t c,
                             cudaStream_t st) {
  call("ncclAlltoAll send=%p recv=%p count=%zu dtype=%d comm=%p stream=%p", s, r, n, (int)t,
       (void*)c, (void*)st);
  return ret("ncclAlltoAll", ncclAlltoAll(s, r, n, t, c, st));
}

static ncclResult_t revoke(ncclComm_t c, int flags) {
  call("ncclCommRevoke comm=%p flags=%d", (void*)c, flags);
  return ret("ncclCommRevoke", ncclCommRevoke(c, flags));
}

static void queries(const char* tag, ncclComm_t c) {
  int count = -1, rank = -1, dev = -1;
  call("ncclCommCount comm=%p count=%p", (void*)c, (void*)&count);
  ret("ncclCommCount", ncclCommCount(c, &count));
  call("ncclCommUserRank comm=%p rank=%p", (void*)c, (void*)&rank);
  ret("ncclCommUserRank", ncclCommUserRank(c, &rank));
  call("ncclCommCuDevice comm=%p device=%p", (void*)c, (void*)&dev);
  ret("ncclCommCuDevice", ncclCommCuDevice(c, &dev));
  printf("QUERY %s count=%d rank=%d dev=%d\n", tag, count, rank, dev);
}

/* ---------------------------------------------------------------- scenarios */

static int scenario_version(void) {
  int v = -1;
  get_version(&v);
  printf("VERSION %d\n", v);
  return 0;
}

static int scenario_uniqueid(void) {
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  get_id(&id);
  print_id("ID", &id);
  return 0;
}

/* Every 2.27 function on the real library's communicators. */
static int scenario_forward(void) {
  static char buf[8192];
  int v = -1;
  get_version(&v);
  printf("VERSION %d\n", v);

  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  get_id(&id);
  print_id("ID", &id);

  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 1;

  ncclComm_t c0 = NULL, c1 = NULL, c2 = NULL, c4 = NULL, c5 = NULL, all[2] = {NULL, NULL};
  init_rank(&c0, 4, id, 1);
  init_config(&c1, 4, id, 2, &cfg);

  ncclUniqueId ids[2];
  ids[0] = id;
  ids[1] = id;
  ids[1].internal[100] ^= 0x5a;
  call("ncclCommInitRankScalable newcomm=%p nranks=%d myrank=%d nId=%d commIds=%p ids=%016llx "
       "config=%p blocking=%d",
       (void*)&c2, 4, 3, 2, (void*)ids, fnv(ids, sizeof ids), (void*)&cfg, cfg.blocking);
  ret("ncclCommInitRankScalable", ncclCommInitRankScalable(&c2, 4, 3, 2, ids, &cfg));

  int devlist[2] = {3, 5};
  call("ncclCommInitAll comm=%p ndev=%d devlist=%p devs=%016llx", (void*)all, 2, (void*)devlist,
       fnv(devlist, sizeof devlist));
  ret("ncclCommInitAll", ncclCommInitAll(all, 2, devlist));

  call("ncclCommSplit comm=%p color=%d key=%d newcomm=%p config=%p blocking=%d", (void*)c0, 1, 5,
       (void*)&c4, (void*)NULL, -99);
  ret("ncclCommSplit", ncclCommSplit(c0, 1, 5, &c4, NULL));

  int excl[1] = {0};
  call("ncclCommShrink comm=%p exclude=%p excludeCount=%d excl=%016llx newcomm=%p config=%p "
       "blocking=%d flags=%d",
       (void*)c1, (void*)excl, 1, fnv(excl, sizeof excl), (void*)&c5, (void*)&cfg, cfg.blocking,
       NCCL_SHRINK_DEFAULT);
  ret("ncclCommShrink", ncclCommShrink(c1, excl, 1, &c5, &cfg, NCCL_SHRINK_DEFAULT));
  printf("COMMS %p %p %p %p %p %p %p\n", (void*)c0, (void*)c1, (void*)c2, (void*)all[0],
         (void*)all[1], (void*)c4, (void*)c5);

  queries("c0", c0);
  queries("c2", c2);
  queries("all1", all[1]);
  queries("c5", c5);

  void* reg = NULL;
  call("ncclCommRegister comm=%p buff=%p size=%zu handle=%p", (void*)c0, (void*)buf, sizeof buf,
       (void*)&reg);
  ret("ncclCommRegister", ncclCommRegister(c0, buf, sizeof buf, &reg));
  call("ncclCommDeregister comm=%p handle=%p", (void*)c0, reg);
  ret("ncclCommDeregister", ncclCommDeregister(c0, reg));

  ncclWindow_t win = NULL;
  call("ncclCommWindowRegister comm=%p buff=%p size=%zu win=%p flags=%d", (void*)c0, (void*)buf,
       (size_t)4096, (void*)&win, NCCL_WIN_COLL_SYMMETRIC);
  ret("ncclCommWindowRegister", ncclCommWindowRegister(c0, buf, 4096, &win,
                                                       NCCL_WIN_COLL_SYMMETRIC));
  call("ncclCommWindowDeregister comm=%p win=%p", (void*)c0, (void*)win);
  ret("ncclCommWindowDeregister", ncclCommWindowDeregister(c0, win));

  float scalar = 0.5f;
  ncclRedOp_t op = ncclSum;
  call("ncclRedOpCreatePreMulSum op=%p scalar=%p dtype=%d residence=%d comm=%p", (void*)&op,
       (void*)&scalar, (int)ncclFloat32, (int)ncclScalarHostImmediate, (void*)c0);
  ret("ncclRedOpCreatePreMulSum",
      ncclRedOpCreatePreMulSum(&op, &scalar, ncclFloat32, ncclScalarHostImmediate, c0));
  printf("REDOP %d\n", (int)op);

  /* Every collective, each with arguments of its own. */
  reduce(P(0x1100), P(0x1200), 11, ncclFloat32, ncclMax, 2, c0, S(0x5001));
  bcast(P(0x1300), 12, ncclInt32, 3, c0, S(0x5002));
  broadcast(P(0x1400), P(0x1500), 13, ncclFloat16, 1, c0, S(0x5003));
  allreduce(P(0x1600), P(0x1700), 14, ncclBfloat16, ncclSum, c0, S(0x5004));
  reducescatter(P(0x1800), P(0x1900), 15, ncclFloat64, ncclMin, c0, S(0x5005));
  allgather(P(0x1a00), P(0x1b00), 16, ncclUint8, c0, S(0x5006));
  send_(P(0x1c00), 17, ncclInt64, 2, c0, S(0x5007));
  recv_(P(0x1d00), 18, ncclUint64, 3, c0, S(0x5008));
  allreduce(P(0x1e00), P(0x1f00), 1 << 20, ncclFloat32, op, c0, S(0x5009));
  /* ... and on the communicators of every other init function. */
  allreduce(P(0x2000), P(0x2100), 4096, ncclFloat32, ncclAvg, c1, NULL);
  allreduce(P(0x2200), P(0x2300), 20, ncclInt8, ncclProd, c2, S(0x500a));
  allgather(P(0x2400), P(0x2500), 21, ncclFloat8e4m3, all[1], S(0x500b));
  reducescatter(P(0x2600), P(0x2700), 22, ncclFloat8e5m2, ncclSum, c4, S(0x500c));
  send_(P(0x2800), 23, ncclUint32, 1, c5, S(0x500d));
  recv_(P(0x2900), 24, ncclChar, 0, all[0], S(0x500e));

  call("ncclRedOpDestroy op=%d comm=%p", (int)op, (void*)c0);
  ret("ncclRedOpDestroy", ncclRedOpDestroy(op, c0));

  /* A group of point-to-point calls and a collective. */
  group_start();
  send_(P(0x3000), 25, ncclFloat32, 2, c0, S(0x5010));
  recv_(P(0x3100), 26, ncclFloat32, 3, c0, S(0x5010));
  allreduce(P(0x3200), P(0x3300), 27, ncclFloat32, ncclMax, c1, S(0x5011));
  group_end();

  group_start();
  allgather(P(0x3400), P(0x3500), 28, ncclInt32, c0, S(0x5012));
  ncclSimInfo_t sim = NCCL_SIM_INFO_INITIALIZER;
  call("ncclGroupSimulateEnd simInfo=%p", (void*)&sim);
  ret("ncclGroupSimulateEnd", ncclGroupSimulateEnd(&sim));
  printf("SIM %.2f\n", (double)sim.estimatedTime);

  /* Failures of the real library come back unchanged, with its text. */
  allreduce(P(0x4000), P(0x4100), 777, ncclFloat32, ncclSum, c0, S(0x5020));
  call("ncclGetLastError comm=%p", (void*)c0);
  printf("LASTERR %s\n", ncclGetLastError(c0));
  call("ncclGetErrorString result=%d", (int)ncclInvalidArgument);
  printf("ERRSTR %s\n", ncclGetErrorString(ncclInvalidArgument));
  send_(P(0x4200), 777, ncclFloat32, 1, c0, S(0x5021));
  reduce(P(0x4300), P(0x4400), 777, ncclFloat32, ncclSum, 0, c2, S(0x5022));
  allgather(P(0x4500), P(0x4600), 777, ncclFloat32, c1, S(0x5023));
  reducescatter(P(0x4700), P(0x4800), 777, ncclFloat32, ncclSum, c4, S(0x5024));

  ncclResult_t st = ncclInternalError;
  async_error(c0, &st);
  printf("ASYNC c0 %d\n", (int)st);
  st = ncclInternalError;
  async_error(c2, &st);
  printf("ASYNC c2 %d\n", (int)st);

  void* mem = NULL;
  call("ncclMemAlloc ptr=%p size=%zu", (void*)&mem, (size_t)1024);
  ret("ncclMemAlloc", ncclMemAlloc(&mem, 1024));
  call("ncclMemFree ptr=%p", mem);
  ret("ncclMemFree", ncclMemFree(mem));
  call("ncclResetDebugInit");
  ncclResetDebugInit();

  /* 2.28 functions: through snapccl's trampolines when its libnccl.so.2 serves. */
  alltoall(P(0x5000), P(0x5100), 1003, ncclFloat32, c2, S(0x5030));
  revoke(c2, 6);

  call("ncclCommFinalize comm=%p", (void*)c0);
  ret("ncclCommFinalize", ncclCommFinalize(c0));
  destroy(c0);
  abort_(c1);
  destroy(c2);
  destroy(all[0]);
  destroy(all[1]);
  destroy(c4);
  destroy(c5);
  printf("DONE\n");
  return 0;
}

/* Collectives on one adopted communicator, counted by snapccl (printed at destroy). */
static int scenario_counts(void) {
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  get_id(&id);
  ncclComm_t c = NULL;
  init_rank(&c, 2, id, 0);
  for (int i = 0; i < 3; i++) allreduce(P(0x1000), P(0x2000), 256, ncclFloat32, ncclSum, c, NULL);
  for (int i = 0; i < 2; i++) allreduce(P(0x1000), P(0x2000), 1000, ncclFloat32, ncclSum, c, NULL);
  group_start();
  allreduce(P(0x1000), P(0x2000), 256, ncclFloat32, ncclSum, c, NULL);
  group_end();
  for (int i = 0; i < 4; i++) allgather(P(0x1000), P(0x2000), 64, ncclInt8, c, NULL);
  reducescatter(P(0x1000), P(0x2000), 8, ncclFloat64, ncclSum, c, NULL);
  destroy(c);
  printf("DONE\n");
  return 0;
}

/* 2.28 functions before any other call: the trampolines resolve on first use. */
static int scenario_extras(void) {
  ncclComm_t c = (ncclComm_t)P(0x4242);
  alltoall(P(0x6000), P(0x6100), 1003, ncclFloat32, c, S(0x6200));
  revoke(c, 6);
  alltoall(P(0x6300), P(0x6400), 42, ncclInt8, c, S(0x6500));
  int v = -1;
  get_version(&v);
  printf("VERSION %d\n", v);
  printf("DONE\n");
  return 0;
}

static int nonblocking_init(ncclComm_t* c) {
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  get_id(&id);
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  return (int)init_config(c, 2, id, 1, &cfg);
}

/* A non-blocking init, then NCCL's documented wait: poll the async error until it is no
 * longer ncclInProgress (bounded here, at about 2 s). */
static int scenario_nb_poll(void) {
  ncclComm_t c = NULL;
  nonblocking_init(&c);
  ncclResult_t st = ncclInProgress;
  int polls = 0;
  for (; polls < 2000; polls++) {
    ncclResult_t r = ncclCommGetAsyncError(c, &st);
    if (r != ncclSuccess || st != ncclInProgress) break;
    sleep_ms(1);
  }
  printf("ASYNC %d after %d polls\n", (int)st, polls);
  if (st == ncclSuccess) {
    allreduce(P(0x1000), P(0x2000), 32, ncclFloat32, ncclSum, c, S(0x7000));
    destroy(c);
  }
  printf("DONE\n");
  return 0;
}

/* A non-blocking init, then ncclCommAbort at once (allowed at any time). */
static int scenario_nb_abort(void) {
  ncclComm_t c = NULL;
  nonblocking_init(&c);
  abort_(c);
  printf("DONE\n");
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char* s = argc > 1 ? argv[1] : "";
  if (!strcmp(s, "version")) return scenario_version();
  if (!strcmp(s, "uniqueid")) return scenario_uniqueid();
  if (!strcmp(s, "forward")) return scenario_forward();
  if (!strcmp(s, "counts")) return scenario_counts();
  if (!strcmp(s, "extras")) return scenario_extras();
  if (!strcmp(s, "nb-poll")) return scenario_nb_poll();
  if (!strcmp(s, "nb-abort")) return scenario_nb_abort();
  fprintf(stderr, "usage: %s version|uniqueid|forward|counts|extras|nb-poll|nb-abort\n",
          argv[0]);
  return 2;
}
