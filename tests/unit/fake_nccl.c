/* A stand-in for NVIDIA's libnccl.so.2, for the interposition tests (test_interpose.c).
 *
 * Built as libnccl.so.2 (soname libnccl.so.2) in the tests' build directory, away from
 * snapccl's own libnccl.so.2. It exports every function of the 2.27 API plus two of
 * 2.28 (ncclAlltoAll, ncclCommRevoke) and two of 2.30 (ncclCommMemStats, ncclParamGet),
 * and does nothing but:
 *   - append one line per call to the file named by FAKE_NCCL_LOG (if set): the
 *     function's name and its arguments, "name key=value ...", in exactly the format
 *     interpose_app.c prints before making the same call, so a test can check that a
 *     forwarded call arrived with the arguments the application passed;
 *   - answer deterministically: version 22899, unique ids starting with "FAKENCCL",
 *     communicators that are pointers into a static array, "fake: <code>" error
 *     strings, "fake last error", ncclInProgress from an init whose config has
 *     blocking == 0, ncclInvalidArgument from any collective with count FAKE_BAD_COUNT
 *     (777), and from ncclAlltoAll / ncclCommRevoke a code derived from their count /
 *     flags, so arguments that went through a trampoline are visible in the result;
 *     likewise ncclCommMemStats gives comm + stat as the value, ncclParamGet copies
 *     maxLen bytes of "fake" and gives the handle as the length.
 * It never dereferences buffer or stream pointers. */
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../fnv.h"
#include "nccl.h"

#define FAKE_VERSION 22899
#define FAKE_BAD_COUNT 777
#define FAKE_MAX_COMMS 1024
#define FAKE_COMM_MAGIC 0x66616b65636f6d6dull /* "fakecomm" */

/* 2.28 functions (not in snapccl's 2.27 header). */
ncclResult_t ncclAlltoAll(const void* sendbuff, void* recvbuff, size_t count,
                          ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclCommRevoke(ncclComm_t comm, int revokeFlags);
/* 2.30 functions; the enum and the handle of 2.30's header as what they are passed as. */
ncclResult_t ncclCommMemStats(ncclComm_t comm, int stat, uint64_t* value);
ncclResult_t ncclParamGet(void* handle, void* out, int maxLen, int* len);

struct ncclComm {
  uint64_t magic;
  int index, nranks, rank, dev;
};

static struct ncclComm g_comms[FAKE_MAX_COMMS];
static int g_ncomms;
static char g_regs[256];
static int g_nregs;
static char g_pool[4096];
static int g_nops;
static unsigned char g_nids;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---------------------------------------------------------------- log */

static void fake_log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static void fake_log(const char* fmt, ...) {
  const char* path = getenv("FAKE_NCCL_LOG");
  if (!path || !*path) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  pthread_mutex_lock(&g_lock);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
  }
  pthread_mutex_unlock(&g_lock);
}

static int cfg_blocking(const ncclConfig_t* config) { return config ? config->blocking : -99; }

/* ---------------------------------------------------------------- handles */

static ncclComm_t new_comm(int nranks, int rank, int dev) {
  pthread_mutex_lock(&g_lock);
  struct ncclComm* c = NULL;
  if (g_ncomms < FAKE_MAX_COMMS) {
    c = &g_comms[g_ncomms];
    c->magic = FAKE_COMM_MAGIC;
    c->index = g_ncomms++;
    c->nranks = nranks;
    c->rank = rank;
    c->dev = dev;
  }
  pthread_mutex_unlock(&g_lock);
  return c;
}

static int valid(const struct ncclComm* c) {
  return c >= &g_comms[0] && c < &g_comms[FAKE_MAX_COMMS] && c->magic == FAKE_COMM_MAGIC;
}

static ncclResult_t init_result(const ncclConfig_t* config) {
  return config && config->blocking == 0 ? ncclInProgress : ncclSuccess;
}

/* ---------------------------------------------------------------- versions, ids, errors */

ncclResult_t ncclGetVersion(int* version) {
  fake_log("ncclGetVersion version=%p", (void*)version);
  if (!version) return ncclInvalidArgument;
  *version = FAKE_VERSION;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
  fake_log("ncclGetUniqueId uniqueId=%p", (void*)uniqueId);
  if (!uniqueId) return ncclInvalidArgument;
  memcpy(uniqueId->internal, "FAKENCCL", 8);
  pthread_mutex_lock(&g_lock);
  unsigned char seq = ++g_nids;
  pthread_mutex_unlock(&g_lock);
  for (int i = 8; i < NCCL_UNIQUE_ID_BYTES; i++) uniqueId->internal[i] = (char)(i * 7 + seq);
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  static const char* const s[] = {"fake: 0", "fake: 1", "fake: 2", "fake: 3", "fake: 4",
                                  "fake: 5", "fake: 6", "fake: 7", "fake: 8"};
  fake_log("ncclGetErrorString result=%d", (int)result);
  return (unsigned)result < sizeof s / sizeof s[0] ? s[result] : "fake: ?";
}

const char* ncclGetLastError(ncclComm_t comm) {
  fake_log("ncclGetLastError comm=%p", (void*)comm);
  return "fake last error";
}

void ncclResetDebugInit(void) { fake_log("ncclResetDebugInit"); }

ncclResult_t ncclMemAlloc(void** ptr, size_t size) {
  fake_log("ncclMemAlloc ptr=%p size=%zu", (void*)ptr, size);
  if (!ptr) return ncclInvalidArgument;
  *ptr = g_pool;
  return ncclSuccess;
}

ncclResult_t ncclMemFree(void* ptr) {
  fake_log("ncclMemFree ptr=%p", ptr);
  return ncclSuccess;
}

/* ---------------------------------------------------------------- communicators */

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
  fake_log("ncclCommInitRank comm=%p nranks=%d id=%016llx rank=%d", (void*)comm, nranks,
           fnv(&commId, sizeof commId), rank);
  if (!comm || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  *comm = new_comm(nranks, rank, rank % 8);
  return *comm ? ncclSuccess : ncclSystemError;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t* config) {
  fake_log("ncclCommInitRankConfig comm=%p nranks=%d id=%016llx rank=%d config=%p blocking=%d",
           (void*)comm, nranks, fnv(&commId, sizeof commId), rank, (void*)config,
           cfg_blocking(config));
  if (!comm || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  *comm = new_comm(nranks, rank, rank % 8);
  return *comm ? init_result(config) : ncclSystemError;
}

ncclResult_t ncclCommInitRankScalable(ncclComm_t* newcomm, int nranks, int myrank, int nId,
                                      ncclUniqueId* commIds, ncclConfig_t* config) {
  fake_log("ncclCommInitRankScalable newcomm=%p nranks=%d myrank=%d nId=%d commIds=%p ids=%016llx "
           "config=%p blocking=%d",
           (void*)newcomm, nranks, myrank, nId, (void*)commIds,
           commIds && nId > 0 ? fnv(commIds, (size_t)nId * sizeof *commIds) : 0ull,
           (void*)config, cfg_blocking(config));
  if (!newcomm || nranks < 1 || myrank < 0 || myrank >= nranks || nId < 1 || !commIds)
    return ncclInvalidArgument;
  *newcomm = new_comm(nranks, myrank, myrank % 8);
  return *newcomm ? init_result(config) : ncclSystemError;
}

ncclResult_t ncclCommInitAll(ncclComm_t* comm, int ndev, const int* devlist) {
  fake_log("ncclCommInitAll comm=%p ndev=%d devlist=%p devs=%016llx", (void*)comm, ndev,
           (const void*)devlist,
           devlist && ndev > 0 ? fnv(devlist, (size_t)ndev * sizeof *devlist) : 0ull);
  if (!comm || ndev < 1) return ncclInvalidArgument;
  for (int i = 0; i < ndev; i++) {
    comm[i] = new_comm(ndev, i, devlist ? devlist[i] : i);
    if (!comm[i]) return ncclSystemError;
  }
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  fake_log("ncclCommFinalize comm=%p", (void*)comm);
  return valid(comm) ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  fake_log("ncclCommDestroy comm=%p", (void*)comm);
  return !comm || valid(comm) ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  fake_log("ncclCommAbort comm=%p", (void*)comm);
  return !comm || valid(comm) ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm,
                           ncclConfig_t* config) {
  fake_log("ncclCommSplit comm=%p color=%d key=%d newcomm=%p config=%p blocking=%d", (void*)comm,
           color, key, (void*)newcomm, (void*)config, cfg_blocking(config));
  if (!valid(comm) || !newcomm) return ncclInvalidArgument;
  if (color == NCCL_SPLIT_NOCOLOR) {
    *newcomm = NULL;
    return ncclSuccess;
  }
  *newcomm = new_comm(comm->nranks, comm->rank, comm->dev);
  return *newcomm ? init_result(config) : ncclSystemError;
}

ncclResult_t ncclCommShrink(ncclComm_t comm, int* excludeRanksList, int excludeRanksCount,
                            ncclComm_t* newcomm, ncclConfig_t* config, int shrinkFlags) {
  fake_log("ncclCommShrink comm=%p exclude=%p excludeCount=%d excl=%016llx newcomm=%p config=%p "
           "blocking=%d flags=%d",
           (void*)comm, (void*)excludeRanksList, excludeRanksCount,
           excludeRanksList && excludeRanksCount > 0
               ? fnv(excludeRanksList, (size_t)excludeRanksCount * sizeof *excludeRanksList)
               : 0ull,
           (void*)newcomm, (void*)config, cfg_blocking(config), shrinkFlags);
  if (!valid(comm) || !newcomm || excludeRanksCount < 0 || excludeRanksCount >= comm->nranks)
    return ncclInvalidArgument;
  *newcomm = new_comm(comm->nranks - excludeRanksCount, 0, comm->dev);
  return *newcomm ? init_result(config) : ncclSystemError;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  fake_log("ncclCommGetAsyncError comm=%p asyncError=%p", (void*)comm, (void*)asyncError);
  if (!valid(comm) || !asyncError) return ncclInvalidArgument;
  *asyncError = ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  fake_log("ncclCommCount comm=%p count=%p", (void*)comm, (void*)count);
  if (!valid(comm) || !count) return ncclInvalidArgument;
  *count = comm->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  fake_log("ncclCommCuDevice comm=%p device=%p", (void*)comm, (void*)device);
  if (!valid(comm) || !device) return ncclInvalidArgument;
  *device = comm->dev;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  fake_log("ncclCommUserRank comm=%p rank=%p", (void*)comm, (void*)rank);
  if (!valid(comm) || !rank) return ncclInvalidArgument;
  *rank = comm->rank;
  return ncclSuccess;
}

/* ---------------------------------------------------------------- registration, operators */

static void* new_reg(void) {
  pthread_mutex_lock(&g_lock);
  void* r = &g_regs[g_nregs++ % (int)sizeof g_regs];
  pthread_mutex_unlock(&g_lock);
  return r;
}

ncclResult_t ncclCommRegister(const ncclComm_t comm, void* buff, size_t size, void** handle) {
  fake_log("ncclCommRegister comm=%p buff=%p size=%zu handle=%p", (void*)comm, buff, size,
           (void*)handle);
  if (!valid(comm) || !handle) return ncclInvalidArgument;
  *handle = new_reg();
  return ncclSuccess;
}

ncclResult_t ncclCommDeregister(const ncclComm_t comm, void* handle) {
  fake_log("ncclCommDeregister comm=%p handle=%p", (void*)comm, handle);
  return valid(comm) ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommWindowRegister(ncclComm_t comm, void* buff, size_t size, ncclWindow_t* win,
                                    int winFlags) {
  fake_log("ncclCommWindowRegister comm=%p buff=%p size=%zu win=%p flags=%d", (void*)comm, buff,
           size, (void*)win, winFlags);
  if (!valid(comm) || !win) return ncclInvalidArgument;
  *win = (ncclWindow_t)new_reg();
  return ncclSuccess;
}

ncclResult_t ncclCommWindowDeregister(ncclComm_t comm, ncclWindow_t win) {
  fake_log("ncclCommWindowDeregister comm=%p win=%p", (void*)comm, (void*)win);
  return valid(comm) ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclRedOpCreatePreMulSum(ncclRedOp_t* op, void* scalar, ncclDataType_t datatype,
                                      ncclScalarResidence_t residence, ncclComm_t comm) {
  fake_log("ncclRedOpCreatePreMulSum op=%p scalar=%p dtype=%d residence=%d comm=%p", (void*)op,
           scalar, (int)datatype, (int)residence, (void*)comm);
  if (!valid(comm) || !op || !scalar) return ncclInvalidArgument;
  pthread_mutex_lock(&g_lock);
  *op = (ncclRedOp_t)(ncclNumOps + g_nops++ % 64);
  pthread_mutex_unlock(&g_lock);
  return ncclSuccess;
}

ncclResult_t ncclRedOpDestroy(ncclRedOp_t op, ncclComm_t comm) {
  fake_log("ncclRedOpDestroy op=%d comm=%p", (int)op, (void*)comm);
  return valid(comm) && (int)op >= ncclNumOps ? ncclSuccess : ncclInvalidArgument;
}

/* ---------------------------------------------------------------- collectives */

static ncclResult_t coll_result(ncclComm_t comm, size_t count) {
  if (!valid(comm)) return ncclInvalidArgument;
  return count == FAKE_BAD_COUNT ? ncclInvalidArgument : ncclSuccess;
}

ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count,
                        ncclDataType_t datatype, ncclRedOp_t op, int root, ncclComm_t comm,
                        cudaStream_t stream) {
  fake_log("ncclReduce send=%p recv=%p count=%zu dtype=%d op=%d root=%d comm=%p stream=%p",
           sendbuff, recvbuff, count, (int)datatype, (int)op, root, (void*)comm, (void*)stream);
  return coll_result(comm, count);
}

ncclResult_t ncclBcast(void* buff, size_t count, ncclDataType_t datatype, int root,
                       ncclComm_t comm, cudaStream_t stream) {
  fake_log("ncclBcast buff=%p count=%zu dtype=%d root=%d comm=%p stream=%p", buff, count,
           (int)datatype, root, (void*)comm, (void*)stream);
  return coll_result(comm, count);
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  fake_log("ncclBroadcast send=%p recv=%p count=%zu dtype=%d root=%d comm=%p stream=%p",
           sendbuff, recvbuff, count, (int)datatype, root, (void*)comm, (void*)stream);
  return coll_result(comm, count);
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  fake_log("ncclAllReduce send=%p recv=%p count=%zu dtype=%d op=%d comm=%p stream=%p", sendbuff,
           recvbuff, count, (int)datatype, (int)op, (void*)comm, (void*)stream);
  return coll_result(comm, count);
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
  fake_log("ncclReduceScatter send=%p recv=%p count=%zu dtype=%d op=%d comm=%p stream=%p",
           sendbuff, recvbuff, recvcount, (int)datatype, (int)op, (void*)comm, (void*)stream);
  return coll_result(comm, recvcount);
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
  fake_log("ncclAllGather send=%p recv=%p count=%zu dtype=%d comm=%p stream=%p", sendbuff,
           recvbuff, sendcount, (int)datatype, (void*)comm, (void*)stream);
  return coll_result(comm, sendcount);
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  fake_log("ncclSend send=%p count=%zu dtype=%d peer=%d comm=%p stream=%p", sendbuff, count,
           (int)datatype, peer, (void*)comm, (void*)stream);
  return coll_result(comm, count);
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  fake_log("ncclRecv recv=%p count=%zu dtype=%d peer=%d comm=%p stream=%p", recvbuff, count,
           (int)datatype, peer, (void*)comm, (void*)stream);
  return coll_result(comm, count);
}

ncclResult_t ncclGroupStart(void) {
  fake_log("ncclGroupStart");
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
  fake_log("ncclGroupEnd");
  return ncclSuccess;
}

ncclResult_t ncclGroupSimulateEnd(ncclSimInfo_t* simInfo) {
  fake_log("ncclGroupSimulateEnd simInfo=%p", (void*)simInfo);
  if (!simInfo) return ncclInvalidArgument;
  simInfo->estimatedTime = 12.5f;
  return ncclSuccess;
}

/* ---------------------------------------------------------------- 2.28 extras */

ncclResult_t ncclAlltoAll(const void* sendbuff, void* recvbuff, size_t count,
                          ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
  fake_log("ncclAlltoAll send=%p recv=%p count=%zu dtype=%d comm=%p stream=%p", sendbuff,
           recvbuff, count, (int)datatype, (void*)comm, (void*)stream);
  return (ncclResult_t)(count % 8);
}

ncclResult_t ncclCommRevoke(ncclComm_t comm, int revokeFlags) {
  fake_log("ncclCommRevoke comm=%p flags=%d", (void*)comm, revokeFlags);
  return (ncclResult_t)(revokeFlags & 7);
}

/* ---------------------------------------------------------------- 2.30 extras */

ncclResult_t ncclCommMemStats(ncclComm_t comm, int stat, uint64_t* value) {
  fake_log("ncclCommMemStats comm=%p stat=%d", (void*)comm, stat);
  if (!value) return ncclInvalidArgument;
  *value = (uint64_t)(uintptr_t)comm + (uint64_t)stat;
  return ncclSuccess;
}

ncclResult_t ncclParamGet(void* handle, void* out, int maxLen, int* len) {
  fake_log("ncclParamGet handle=%p maxLen=%d", handle, maxLen);
  if (!out || !len || maxLen < 0) return ncclInvalidArgument;
  memcpy(out, "fake", maxLen < 5 ? (size_t)maxLen : 5);
  *len = (int)(uintptr_t)handle;
  return ncclSuccess;
}
