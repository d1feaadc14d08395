/* The communicator: who the ranks are, where they sit, and the state each call needs.
 * In standalone mode the ncclComm_t handed to the application points at this struct;
 * in interposed/fallback mode it is the real NCCL's handle and this struct is found
 * through the registry (registry.h). */
#ifndef SNAPCCL_COMM_H
#define SNAPCCL_COMM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "algos/select_cache.h"
#include "coll.h"
#include "nccl.h"

#define SNAPCCL_COMM_MAGIC 0x736e6170636f6d6dull /* "snapcomm" */
#define SNAPCCL_MAX_REDOPS 64

/* What every rank tells every other at init (allgathered through the bootstrap). */
struct snapccl_peer_info {
  int32_t rank;
  int32_t cuda_dev;
  int32_t pid;
  int32_t sm_count;
  uint64_t host_hash; /* boot id + hostname: same host or not */
  uint64_t proc_hash; /* host, pid and a per-process random nonce: same process or not */
  uint8_t gpu_uuid[16];
  char bus_id[32];
  int32_t max_blocks; /* CTAs this rank can keep resident per call (see transport) */
  int32_t cc_major;
  int32_t cc_minor;
  int32_t pad;
};

/* ncclConfig_t, read field by field as far as the caller's .version and .size reach. */
struct snapccl_config {
  int blocking;
  int min_ctas;
  int max_ctas;
  int split_share;
  char name[64];
};

/* A PreMulSum operator made by ncclRedOpCreatePreMulSum (ours, or the real library's
 * op whose scalar we also need to run the collective ourselves). */
struct snapccl_redop {
  int in_use;
  int op_id; /* the ncclRedOp_t value the application holds */
  ncclDataType_t dtype;
  ncclScalarResidence_t residence;
  uint64_t host_scalar; /* bytes of the scalar (host-immediate) */
  const void* dev_scalar;
};

struct snapccl_transport; /* src/transport/transport.h */
struct snapccl_reg_table;  /* buffer registrations: src/transport/registration.c */

struct snapccl_comm {
  uint64_t magic;
  int rank;
  int nranks;
  int cuda_dev;
  /* Where the ranks sit; the transport and the kernels' grid sizes use these. */
  int ranks_on_dev;         /* ranks of this communicator on my GPU, any process */
  int ranks_in_proc;        /* ranks of this communicator in my process */
  int ranks_on_dev_in_proc; /* both */
  int nlocal_gpus;          /* distinct GPUs among the ranks */
  struct snapccl_peer_info* peers; /* [nranks] */
  struct snapccl_bootstrap* boot;   /* our rendezvous (communicators we created) */
  ncclComm_t real_comm;             /* the real NCCL's communicator we are attached to */
  int owns_handle;                  /* the application's handle is this struct (we created it) */
  atomic_int attach_pending;        /* adopted from the real library, not attached yet */
  cudaStream_t oob_stream;          /* private stream of exchanges through real_comm */
  struct snapccl_config config;
  uint64_t id_hash; /* of the unique id, for logs */

  /* ncclInProgress while a non-blocking init runs, then its result; later the first
   * asynchronous error (a device-side timeout, an abort). */
  _Atomic int async_state;
  char async_reason[256];

  atomic_int finalized;
  atomic_int aborted;
  int abort_fd; /* eventfd, readable once aborted: the init's bootstrap waits watch it */
  /* An init that runs while the application holds the handle (non-blocking, or deferred
   * to a group's end) is "busy" until it settles; an application that lets go of the
   * handle meanwhile (ncclCommAbort) leaves the teardown to the init's runner. */
  atomic_int init_busy; /* INIT_SETTLED, INIT_BUSY, INIT_ORPHANED */
  int teardown;         /* what an orphaned init's runner does: SNAPCCL_END_* */
  atomic_uint shrink_seq; /* tags the point-to-point messages of successive shrinks */

  struct snapccl_transport* transport;

  pthread_mutex_t lock; /* redops; creating reg */
  struct snapccl_reg_table* reg;
  struct snapccl_redop redops[SNAPCCL_MAX_REDOPS];
  /* snapcclCommSetLowPrecision's setting, packed (algos/allreduce_lowprec.c); 0: the
   * environment's. Read by every all-reduce's selection, hence one atomic word. */
  _Atomic uint64_t lowprec;
  struct snapccl_nvls* nvls; /* NVLink multicast state and gate verdict (transport/multicast.h) */
  /* The tuning file every rank agreed on at init (tuning.h), or NULL: the model decides. */
  struct snapccl_tuning* tuning;
  /* Per collective: the size classes whose choice of algorithm was logged (select.c). */
  atomic_ullong algo_logged[COLL_NKINDS];
  /* Calls taken / forwarded per collective and power-of-two size class (interposition). */
  atomic_ullong taken[COLL_NKINDS][SNAPCCL_SIZE_CLASSES];
  atomic_ullong forwarded[COLL_NKINDS][SNAPCCL_SIZE_CLASSES];
  /* The algorithms chosen for recent calls (algos/select_cache.h). */
  struct snapccl_select_cache select_cache;
};

enum { INIT_SETTLED = 0, INIT_BUSY, INIT_ORPHANED };
/* How the application let go of a communicator. */
enum snapccl_end { SNAPCCL_END_DESTROY = 1, SNAPCCL_END_ABORT, SNAPCCL_END_FINALIZE };

/* Parses an ncclConfig_t (NULL = defaults); rejects a config that did not come from
 * NCCL_CONFIG_INITIALIZER. */
ncclResult_t snapccl_config_parse(const ncclConfig_t* user, struct snapccl_config* out);

/* Allocates a communicator in the "init in progress" state. */
ncclResult_t snapccl_comm_alloc(struct snapccl_comm** out);
/* The rendezvous and everything after it; sets async_state to the result. */
ncclResult_t snapccl_comm_init(struct snapccl_comm* comm, const ncclUniqueId* id, int nranks,
                               int rank, int cuda_dev);
/* A communicator we rendezvous ourselves: allocated, registered under its own address
 * (the handle the application gets), then initialised now, at the group's end, or on a
 * thread (non-blocking config). On failure nothing remains and *out is NULL. */
ncclResult_t snapccl_comm_create(ncclComm_t* out, const ncclUniqueId* id, int nranks, int rank,
                                 const struct snapccl_config* cfg, int cuda_dev);
/* Interposed and fallback modes: our state for a communicator the real NCCL created
 * (exchanges go through real_comm). On failure the caller forwards every call. */
ncclResult_t snapccl_comm_attach(struct snapccl_comm* comm, ncclComm_t real_comm);
/* Runs snapccl_comm_init on a detached thread (non-blocking configs); the result lands
 * in async_state. The communicator must be busy (snapccl_comm_create marks it). */
ncclResult_t snapccl_comm_init_async(struct snapccl_comm* comm, const ncclUniqueId* id,
                                     int nranks, int rank, int cuda_dev);
/* The init of a busy communicator (deferred or non-blocking), then settles it: if the
 * application let go of it meanwhile, the teardown it asked for happens here, and the
 * communicator is gone on return. An init aborted by the application returns success
 * (its failure is nobody's news). */
ncclResult_t snapccl_comm_run_init(struct snapccl_comm* comm, const ncclUniqueId* id, int nranks,
                                   int rank, int cuda_dev);
/* A busy communicator whose init could not even start: records res (with the last
 * error's text) and settles it, as snapccl_comm_run_init would have. */
void snapccl_comm_settle_failed(struct snapccl_comm* comm, ncclResult_t res);
/* The application lets go of a communicator it no longer reaches through the registry:
 * waits for its kernels (bounded by the timeout for a destroy, 1 s for an abort) and
 * frees it, or, while its init is busy, leaves that to the init's runner. An abort
 * first waits up to 1 s for the init, which the abort cancels, to settle. */
void snapccl_comm_release(struct snapccl_comm* comm, enum snapccl_end how);
/* ncclCommFinalize's work: waits (bounded by the timeout) for this communicator's
 * kernels and marks it finalized; a busy one has run none. */
ncclResult_t snapccl_comm_finalize(struct snapccl_comm* comm, const char* func);
/* ncclCommAbort's first step: the abort word for kernels, the eventfd for the bootstrap
 * (of an init still running, too), the flag for everyone else. */
void snapccl_comm_signal_abort(struct snapccl_comm* comm);
/* Frees everything; the caller made sure no kernel of this communicator still runs. */
void snapccl_comm_free(struct snapccl_comm* comm);

/* Records an asynchronous error once (the first one wins). */
void snapccl_comm_set_async_error(struct snapccl_comm* comm, ncclResult_t code,
                                  const char* reason);

/* The bootstrap tag of the shrink with sequence number seq (always >= 0). */
int snapccl_shrink_tag(unsigned seq);

/* Looks up a communicator handle the application gave us. Fails with
 * ncclInvalidArgument and a reason for NULL, destroyed or foreign handles. */
ncclResult_t snapccl_comm_get(ncclComm_t handle, const char* func, struct snapccl_comm** out);
/* As above, and also fails with ncclInvalidUsage unless init completed. */
ncclResult_t snapccl_comm_get_ready(ncclComm_t handle, const char* func,
                                    struct snapccl_comm** out);

#endif
