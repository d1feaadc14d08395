/* Reading the tuning file at a communicator's init and agreeing on it (tuning.h). Every
 * rank must choose the same algorithm for a call, so a file counts only if every rank
 * read the very same bytes: each rank offers the hash of what it read (0: nothing
 * usable) through the init's exchange, and all of them judge the same table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algos/select_cache.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "log.h"
#include "oob.h"
#include "tuning.h"

/* NVLink peers share native atomics; PCIe peers do not: enough to tell the two apart. */
static const char* link_kind(const struct snapccl_comm* comm) {
  if (comm->nlocal_gpus <= 1) return comm->nranks > 1 ? "shared" : "none";
  int ndev = 0, atomics = 0, peer = -1;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess) return "unknown";
  for (int r = 0; r < comm->nranks && peer < 0; r++) /* another GPU of my process */
    if (comm->peers[r].proc_hash == comm->peers[comm->rank].proc_hash &&
        comm->peers[r].cuda_dev != comm->cuda_dev)
      peer = comm->peers[r].cuda_dev;
  if (peer < 0 && ndev > 1) peer = (comm->cuda_dev + 1) % ndev;
  if (peer < 0) return "unknown";
  if (cudaDeviceGetP2PAttribute(&atomics, cudaDevP2PAttrNativeAtomicSupported, comm->cuda_dev, peer) !=
      cudaSuccess)
    return "unknown";
  return atomics ? "nvlink" : "pcie";
}

void snapccl_tuning_comm_key(const struct snapccl_comm* comm, char* out, size_t len) {
  struct cudaDeviceProp prop;
  const char* model = cudaGetDeviceProperties(&prop, comm->cuda_dev) == cudaSuccess ? prop.name : "unknown";
  /* The layout from the shared table, so that every rank computes the same one. */
  int per_gpu = 0, procs = 0;
  for (int r = 0; r < comm->nranks; r++) {
    int on_gpu = 0, first_of_proc = 1;
    for (int q = 0; q < comm->nranks; q++)
      on_gpu += !memcmp(comm->peers[q].gpu_uuid, comm->peers[r].gpu_uuid, sizeof comm->peers[r].gpu_uuid);
    for (int q = 0; q < r && first_of_proc; q++) first_of_proc = comm->peers[q].proc_hash != comm->peers[r].proc_hash;
    if (on_gpu > per_gpu) per_gpu = on_gpu;
    procs += first_of_proc;
  }
  snapccl_tuning_key(out, len, model, link_kind(comm), comm->nlocal_gpus, comm->nranks, per_gpu, procs);
}

ncclResult_t snapccl_tuning_setup(struct snapccl_comm* comm, const char* key) {
  const char* set = snapccl_env()->tuning_file;
  char path[512], why[400] = "";
  struct snapccl_tuning* t = NULL;
  int got = -1;
  if (set[0]) snprintf(path, sizeof path, "%s", set);
  else if (!snapccl_tuning_default_path(key, path, sizeof path)) path[0] = 0;
  if (path[0]) got = snapccl_tuning_read(path, key, &t, why, sizeof why);
  if (got == -1 && set[0]) snprintf(why, sizeof why, "there is no such file"), got = 0;
  if (got == 0) WARN("rank %d: tuning file %s not used: %s; the cost model decides", comm->rank, path, why);

  uint64_t* hashes = calloc((size_t)comm->nranks, sizeof *hashes);
  if (!hashes) {
    free(t);
    SNAP_FAIL(ncclSystemError, "out of memory for %d hashes", comm->nranks);
  }
  hashes[comm->rank] = t ? t->hash : 0;
  ncclResult_t res = snapccl_oob_allgather(comm, hashes, sizeof *hashes);
  if (res != ncclSuccess) {
    free(hashes);
    free(t);
    return res;
  }
  int differ = -1;
  for (int r = 0; r < comm->nranks && differ < 0; r++)
    if (hashes[r] != hashes[0]) differ = r;
  if (differ >= 0) { /* some rank read a file (not all hashes are 0): say why nobody uses it */
    WARN("rank %d: ranks 0 and %d read different tuning files (hash %016llx and %016llx); every "
         "rank ignores its file and the cost model decides", comm->rank, differ,
         (unsigned long long)hashes[0], (unsigned long long)hashes[differ]);
    free(t);
    t = NULL;
  }
  free(hashes);
  comm->tuning = t;
  snapccl_select_cache_invalidate(comm); /* the measured times decide choices */
  if (t)
    INFO(SUB_ALGO, "comm rank %d: tuning file %s (%d rows, hash %016llx) decides where it covers a "
         "call; topology %s", comm->rank, t->source, t->nrows, (unsigned long long)t->hash, key);
  else
    INFO(SUB_ALGO, "comm rank %d: no tuning file used (looked for %s); the cost model decides; topology %s",
         comm->rank, path[0] ? path : "nothing: no HOME", key);
  return ncclSuccess;
}
