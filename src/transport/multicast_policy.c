/* NVLink multicast policy, pure decisions without any driver: the gate (may multicast
 * objects be made at all?) and the choice of handle transport between the ranks.
 * docs/NVLS.md; the safety rule is in multicast.h. Tested on the CPU only (every input
 * combination, test_nvls_gate.c); on real GPUs it has only ever said no. */
#include "transport/multicast.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- the gate */

int snapccl_mc_env_allows(int nvls_env, const char* nccl, char* reason, size_t len) {
  if (nvls_env != 1) {
    snprintf(reason, len, "SNAPCCL_NVLS is %d; NVLink multicast needs SNAPCCL_NVLS=1 set explicitly", nvls_env);
    return 0;
  }
  if (nccl && *nccl) {
    char* end = NULL;
    errno = 0;
    long v = strtol(nccl, &end, 10);
    if (errno || end == nccl || *end) {
      snprintf(reason, len, "NCCL_NVLS_ENABLE=%.40s is not a number; multicast stays off", nccl);
      return 0;
    }
    if (v == 0) {
      snprintf(reason, len, "NCCL_NVLS_ENABLE=%.40s turns NVLink multicast off", nccl);
      return 0;
    }
  }
  return 1;
}

void snapccl_mc_gate_decide(const struct snapccl_mc_gate_in* in, struct snapccl_mc_gate* out) {
  out->open = 0;
  out->reason[0] = 0;
  if (!snapccl_mc_env_allows(in->nvls_env, in->nccl_nvls_enable, out->reason, sizeof out->reason)) return;
  if (in->device_supported < 0) {
    snprintf(out->reason, sizeof out->reason, "the GPU's multicast support is unknown (not asked)");
    return;
  }
  if (in->device_supported == 0) {
    snprintf(out->reason, sizeof out->reason,
             "the GPU does not support NVLink multicast (CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED is 0)");
    return;
  }
  if (!in->ranks_agree) {
    snprintf(out->reason, sizeof out->reason, "not every rank of the communicator can use NVLink multicast");
    return;
  }
  out->open = 1;
}

/* ---------------------------------------------------------------- handle choice */

const char* snapccl_mc_handle_name(enum snapccl_mc_handle h) {
  switch (h) {
    case MC_HANDLE_PROCESS: return "same process";
    case MC_HANDLE_POSIX_FD: return "POSIX file descriptor";
    case MC_HANDLE_FABRIC: return "fabric";
    default: return "none";
  }
}

/* Every rank in one NVLink domain, registered with the fabric manager? */
static int one_fabric_domain(const struct snapccl_mc_peer* p, int n, char* reason, size_t len) {
  static const uint8_t zero[16];
  for (int r = 0; r < n; r++) {
    const struct snapccl_mc_peer* q = &p[r];
    if (!q->fabric_supported) {
      snprintf(reason, len, "rank %d's GPU cannot export fabric handles", r);
      return 0;
    }
    if (!q->fabric_known) {
      snprintf(reason, len, "rank %d could not read its GPU's fabric information (NVML)", r);
      return 0;
    }
    if (q->fabric_state != SNAPCCL_NVML_FABRIC_STATE_COMPLETED || q->fabric_status != 0) {
      snprintf(reason, len, "rank %d's GPU is not registered with the NVLink fabric (state %d, status %d)",
               r, (int)q->fabric_state, (int)q->fabric_status);
      return 0;
    }
    if (!memcmp(q->cluster_uuid, zero, sizeof zero)) {
      snprintf(reason, len, "rank %d's GPU belongs to no NVLink cluster", r);
      return 0;
    }
    if (memcmp(q->cluster_uuid, p[0].cluster_uuid, sizeof zero) != 0 || q->clique_id != p[0].clique_id) {
      snprintf(reason, len, "rank %d is in another NVLink domain than rank 0 (cluster or clique differs)", r);
      return 0;
    }
  }
  return 1;
}

enum snapccl_mc_handle snapccl_mc_choose_handle(const struct snapccl_mc_peer* p, int n, char* reason,
                                                size_t len) {
  if (n < 1) {
    snprintf(reason, len, "no ranks");
    return MC_HANDLE_NONE;
  }
  int one_proc = 1, one_host = 1, posix = -1;
  for (int r = 0; r < n; r++) {
    one_proc &= p[r].proc_hash == p[0].proc_hash;
    one_host &= p[r].host_hash == p[0].host_hash;
    if (posix < 0 && !p[r].posix_fd_supported) posix = r;
  }
  if (one_proc) return MC_HANDLE_PROCESS;
  char fabric_why[160];
  int fabric = one_fabric_domain(p, n, fabric_why, sizeof fabric_why);
  if (one_host) {
    if (posix < 0) return MC_HANDLE_POSIX_FD;
    if (fabric) return MC_HANDLE_FABRIC;
    snprintf(reason, len, "rank %d's GPU cannot export POSIX file descriptors, and %s", posix, fabric_why);
    return MC_HANDLE_NONE;
  }
  if (fabric) return MC_HANDLE_FABRIC;
  snprintf(reason, len, "the ranks span hosts and %s", fabric_why);
  return MC_HANDLE_NONE;
}
