/* snapcclAllReduceResidualRMSNorm[Ex], snapcclResidualRMSNorm, snapcclQueryFusedAlgorithm:
 * options, argument checks (NCCL's codes, one-line reasons), and the route of a call
 * (docs/FUSED.md): our fused kernels when our transport runs the communicator, else the
 * real NCCL's all-reduce plus our separate kernel, else the reason. */
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "coll.h"
#include "comm.h"
#include "error.h"
#include "fused.h"
#include "group.h"
#include "interpose.h"
#include "log.h"
#include "real_nccl.h"
#include "registry.h"
#include "snapccl.h"

/* ---------------------------------------------------------------- options */

/* Anything larger is not a size but an uninitialised field. */
#define OPTIONS_MAX_SIZE 4096

ncclResult_t snapccl_fused_options_read(const snapcclFusedOptions* user, snapcclFusedOptions* out,
                                        char* why, size_t len) {
  const snapcclFusedOptions def = SNAPCCL_FUSED_OPTIONS_INITIALIZER;
  const size_t head = offsetof(snapcclFusedOptions, normOut);
  *out = def;
  if (!user) return ncclSuccess;
  if (user->magic != SNAPCCL_FUSED_OPTIONS_MAGIC) {
    snprintf(why, len, "options.magic is 0x%x, not 0x%x: initialise the options with "
             "SNAPCCL_FUSED_OPTIONS_INITIALIZER", user->magic, SNAPCCL_FUSED_OPTIONS_MAGIC);
    return ncclInvalidArgument;
  }
  if (user->size < head || user->size > OPTIONS_MAX_SIZE) {
    snprintf(why, len, "options.size %zu is not the size of any snapcclFusedOptions", user->size);
    return ncclInvalidArgument;
  }
  if (user->version == 0) {
    snprintf(why, len, "options.version is 0; initialise the options with "
             "SNAPCCL_FUSED_OPTIONS_INITIALIZER");
    return ncclInvalidArgument;
  }
  /* A newer caller may pass fields we do not know: fine while they hold their defaults
   * (zero), refused otherwise, since we could not honour them. */
  const unsigned char* raw = (const unsigned char*)user;
  for (size_t i = sizeof *out; i < user->size; i++)
    if (raw[i]) {
      snprintf(why, len, "options (version %u, %zu B) set a field at byte %zu that this snapccl "
               "(options version %u, %zu B) does not know", user->version, user->size, i,
               SNAPCCL_FUSED_OPTIONS_VERSION, sizeof *out);
      return ncclInvalidArgument;
    }
  /* An older caller's struct ends early: the fields it lacks keep their defaults. */
#define FIELD(f)                                                                          \
  if (user->size >= offsetof(snapcclFusedOptions, f) + sizeof user->f) out->f = user->f;
  FIELD(normOut)
  FIELD(skipResidualOut)
  FIELD(scale)
  FIELD(scaleOut)
  FIELD(sumOut)
#undef FIELD
  return ncclSuccess;
}

/* ---------------------------------------------------------------- argument checks */

struct span {
  const char* name;
  uintptr_t lo, hi;
  int out;
};

static int may_alias(const struct snapccl_fused* f, const struct span* o, const struct span* s) {
  if (o->lo != s->lo || o->hi != s->hi) return 0;
  if (!strcmp(o->name, "norm_out") && !strcmp(s->name, "input")) return f->quant == FUSED_QUANT_NONE;
  if (!strcmp(o->name, "residual_out") && !strcmp(s->name, "residual_in")) return 1;
  if (!strcmp(o->name, "sumOut") && !strcmp(s->name, "input")) return 1;
  return 0;
}

/* Outputs overlap nothing but the aliases the kernels allow (each pack of an aliased
 * output is written after its own thread's last read of it; see fused_row.cuh). */
static ncclResult_t check_overlaps(const struct snapccl_fused* f, char* why, size_t len) {
  const size_t es = snapccl_dtype_size(f->dtype), n = f->tokens * f->hidden;
  struct span sp[8];
  int k = 0;
#define SPAN(nm, p, bytes, isout)                                                              \
  if (p) sp[k++] = (struct span){nm, (uintptr_t)(p), (uintptr_t)(p) + (bytes), isout};
  SPAN("input", f->input, n * es, 0)
  SPAN("residual_in", f->residual_in, n * es, 0)
  SPAN("gamma", f->gamma, f->hidden * es, 0)
  SPAN("scale", f->scale, sizeof(float), 0)
  SPAN("norm_out", f->norm_out, n * (f->quant == FUSED_QUANT_NONE ? es : 1), 1)
  SPAN("residual_out", f->residual_out, n * es, 1)
  SPAN("sumOut", f->sum_out, n * es, 1)
  SPAN("scaleOut", f->scale_out, f->tokens * sizeof(float), 1)
#undef SPAN
  for (int i = 0; i < k; i++) {
    if (!sp[i].out) continue;
    for (int j = 0; j < k; j++) {
      if (i == j || sp[i].hi <= sp[j].lo || sp[j].hi <= sp[i].lo) continue;
      if (!sp[j].out && may_alias(f, &sp[i], &sp[j])) continue;
      snprintf(why, len, "%s [%p, +%zu) overlaps %s [%p, +%zu); only norm_out == input (not "
               "fp8), residual_out == residual_in and sumOut == input may alias",
               sp[i].name, (void*)sp[i].lo, (size_t)(sp[i].hi - sp[i].lo), sp[j].name,
               (void*)sp[j].lo, (size_t)(sp[j].hi - sp[j].lo));
      return ncclInvalidArgument;
    }
  }
  return ncclSuccess;
}

static ncclResult_t check(struct snapccl_fused* f, const snapcclFusedOptions* opt, int buffers,
                          char* why, size_t len) {
  if (f->dtype != ncclBfloat16 && f->dtype != ncclFloat16 && f->dtype != ncclFloat32) {
    snprintf(why, len, "datatype %d (%s) is not supported by the fused call: bfloat16, half or "
             "float", (int)f->dtype, snapccl_dtype_name(f->dtype));
    return ncclInvalidArgument;
  }
  if (opt->normOut < snapcclNormOutDefault || opt->normOut > snapcclNormOutFp8Dynamic) {
    snprintf(why, len, "options.normOut %d is not a snapcclNormOut_t", opt->normOut);
    return ncclInvalidArgument;
  }
  if (f->tokens == 0) return ncclSuccess; /* nothing to do, like a collective of count 0 */
  if (f->hidden == 0) {
    snprintf(why, len, "hidden is 0 with %zu tokens: a row needs at least one element", f->tokens);
    return ncclInvalidArgument;
  }
  if (f->tokens > SIZE_MAX / f->hidden / sizeof(float)) {
    snprintf(why, len, "%zu tokens x %zu hidden overflows the address space", f->tokens, f->hidden);
    return ncclInvalidArgument;
  }
  if (!(f->eps >= 0.0f) || isinf(f->eps)) {
    snprintf(why, len, "eps %g must be finite and not negative", (double)f->eps);
    return ncclInvalidArgument;
  }
  if (!buffers) return ncclSuccess;
  const char* null = !f->input ? "input" : !f->norm_out ? "norm_out" : NULL;
  if (!null && !f->residual_out && !opt->skipResidualOut) null = "residual_out";
  if (null) {
    snprintf(why, len, "%s is NULL with %zu tokens%s", null, f->tokens,
             !strcmp(null, "residual_out") ? " (set skipResidualOut in snapcclFusedOptions to "
                                             "leave it out)" : "");
    return ncclInvalidArgument;
  }
  if (f->quant == FUSED_QUANT_FP8_STATIC && !f->scale) {
    snprintf(why, len, "normOut is snapcclNormOutFp8Static but options.scale is NULL");
    return ncclInvalidArgument;
  }
  if (f->quant == FUSED_QUANT_FP8_DYNAMIC && !f->scale_out) {
    snprintf(why, len, "normOut is snapcclNormOutFp8Dynamic but options.scaleOut is NULL");
    return ncclInvalidArgument;
  }
  return check_overlaps(f, why, len);
}

/* Fills f from the arguments; buffers = 0 skips the pointer checks (queries). */
static ncclResult_t prepare(struct snapccl_fused* f, const void* input, const void* residual_in,
                            const void* gamma, void* norm_out, void* residual_out, size_t tokens,
                            size_t hidden, float eps, ncclDataType_t dtype,
                            const snapcclFusedOptions* opt, int buffers, char* why, size_t len) {
  memset(f, 0, sizeof *f);
  f->input = input;
  f->residual_in = residual_in;
  f->gamma = gamma;
  f->norm_out = norm_out;
  f->residual_out = opt->skipResidualOut ? NULL : residual_out;
  f->sum_out = opt->sumOut;
  f->quant = opt->normOut == snapcclNormOutFp8Static    ? FUSED_QUANT_FP8_STATIC
             : opt->normOut == snapcclNormOutFp8Dynamic ? FUSED_QUANT_FP8_DYNAMIC
                                                        : FUSED_QUANT_NONE;
  f->scale = f->quant == FUSED_QUANT_FP8_STATIC ? opt->scale : NULL;
  f->scale_out = f->quant == FUSED_QUANT_FP8_DYNAMIC ? opt->scaleOut : NULL;
  f->tokens = tokens;
  f->hidden = hidden;
  f->eps = eps;
  f->dtype = dtype;
  return check(f, opt, buffers, why, len);
}

ncclResult_t snapccl_fused_prepare(struct snapccl_fused* f, const void* input, const void* residual_in,
                                   const void* gamma, void* norm_out, void* residual_out,
                                   size_t tokens, size_t hidden, float eps, ncclDataType_t dtype,
                                   const snapcclFusedOptions* opt, char* why, size_t len) {
  return prepare(f, input, residual_in, gamma, norm_out, residual_out, tokens, hidden, eps, dtype,
                 opt, 1, why, len);
}

/* ---------------------------------------------------------------- routing */

/* Our communicator state for `comm`, and whether a real one stands behind it. */
struct target {
  struct snapccl_comm* c; /* ours, or NULL */
  ncclComm_t real;        /* the real library's handle to forward to */
  int have_real;
  int ours_ready;
};

static ncclResult_t resolve(ncclComm_t comm, cudaStream_t stream, const char* func, struct target* t) {
  memset(t, 0, sizeof *t);
  if (!comm) return snapccl_error(ncclInvalidArgument, func, "comm is NULL");
  if (snapccl_forward_target(comm, &t->real)) {
    t->have_real = 1;
    t->c = snapccl_registry_find(comm);
    if (t->c) snapccl_maybe_attach(t->c, stream);
  } else {
    SNAP_CHECK(snapccl_comm_get_ready(comm, func, &t->c));
  }
  struct snapccl_comm* c = t->c;
  t->ours_ready = c && !atomic_load(&c->attach_pending) && (!t->have_real || c->transport) &&
                  atomic_load(&c->async_state) == ncclSuccess && !atomic_load(&c->aborted);
  return ncclSuccess;
}

static int real_device(ncclComm_t real, const struct snapccl_comm* c) {
  const struct snapccl_real* rl = snapccl_real();
  int dev = -1;
  if (rl && rl->ncclCommCuDevice && rl->ncclCommCuDevice(real, &dev) == ncclSuccess && dev >= 0)
    return dev;
  if (c && c->transport) return c->cuda_dev;
  if (cudaGetDevice(&dev) != cudaSuccess) dev = 0;
  return dev;
}

static ncclResult_t fused_call(const char* func, const void* input, const void* residual_in,
                               const void* gamma, void* norm_out, void* residual_out,
                               size_t tokens, size_t hidden, float eps, ncclDataType_t dtype,
                               ncclComm_t comm, cudaStream_t stream,
                               const snapcclFusedOptions* options) {
  char why[512];
  snapcclFusedOptions opt;
  ncclResult_t r = snapccl_fused_options_read(options, &opt, why, sizeof why);
  if (r != ncclSuccess) return snapccl_error(r, func, "%s", why);
  if (snapccl_group_depth() > 0) {
    /* Its all-reduce may be a deferred call of one library and its norm a kernel
     * launched now: they would run in the wrong order. */
    r = snapccl_error(ncclInvalidUsage, func, "the fused call cannot be made between "
                      "ncclGroupStart and ncclGroupEnd");
    snapccl_group_record_error(r);
    return r;
  }
  struct target t;
  SNAP_CHECK(resolve(comm, stream, func, &t));
  struct snapccl_fused f;
  r = prepare(&f, input, residual_in, gamma, norm_out, residual_out, tokens, hidden, eps, dtype,
              &opt, 1, why, sizeof why);
  if (r != ncclSuccess) return snapccl_error(r, func, "%s", why);
  if (tokens == 0) return ncclSuccess;
  f.comm = t.c;
  f.stream = stream;
  const struct snapccl_fused_algo* a = NULL;
  switch (snapccl_fused_route(&f, t.have_real, t.ours_ready, &a, why, sizeof why)) {
    case FUSED_ROUTE_OURS:
      snapccl_fused_log_choice(&f, a);
      SNAP_CHECK(snapccl_fused_ensure_loaded(t.c->cuda_dev));
      return a->launch(&f);
    case FUSED_ROUTE_REAL:
      TRACE(SUB_ALGO, "fused call of %zu x %zu: all-reduce by NVIDIA's NCCL (%s)", tokens, hidden, why);
      snapccl_fused_log_choice(&f, NULL);
      return snapccl_fused_run_real(&f, t.real, real_device(t.real, t.c));
    default:
      return snapccl_error(ncclInvalidUsage, func, "%s", why);
  }
}

SNAPCCL_API ncclResult_t snapcclAllReduceResidualRMSNorm(const void* input, const void* residual_in,
                                                         const void* gamma, void* norm_out,
                                                         void* residual_out, size_t tokens,
                                                         size_t hidden, float eps,
                                                         ncclDataType_t datatype, ncclComm_t comm,
                                                         cudaStream_t stream) {
  return fused_call(__func__, input, residual_in, gamma, norm_out, residual_out, tokens, hidden,
                    eps, datatype, comm, stream, NULL);
}

SNAPCCL_API ncclResult_t snapcclAllReduceResidualRMSNormEx(
    const void* input, const void* residual_in, const void* gamma, void* norm_out,
    void* residual_out, size_t tokens, size_t hidden, float eps, ncclDataType_t datatype,
    ncclComm_t comm, cudaStream_t stream, const snapcclFusedOptions* options) {
  return fused_call(__func__, input, residual_in, gamma, norm_out, residual_out, tokens, hidden,
                    eps, datatype, comm, stream, options);
}

SNAPCCL_API ncclResult_t snapcclResidualRMSNorm(const void* sum, const void* residual_in,
                                                const void* gamma, void* norm_out,
                                                void* residual_out, size_t tokens, size_t hidden,
                                                float eps, ncclDataType_t datatype,
                                                cudaStream_t stream,
                                                const snapcclFusedOptions* options) {
  char why[512];
  snapcclFusedOptions opt;
  ncclResult_t r = snapccl_fused_options_read(options, &opt, why, sizeof why);
  if (r != ncclSuccess) return snapccl_error(r, __func__, "%s", why);
  if (opt.sumOut)
    SNAP_FAIL(ncclInvalidArgument, "options.sumOut is for the fused call; here the sum is the input");
  struct snapccl_fused f;
  r = prepare(&f, sum, residual_in, gamma, norm_out, residual_out, tokens, hidden, eps, datatype,
              &opt, 1, why, sizeof why);
  if (r != ncclSuccess) return snapccl_error(r, __func__, "%s", why);
  if (tokens == 0) return ncclSuccess;
  f.stream = stream;
  int dev = -1;
  CUDA_CHECK(cudaGetDevice(&dev));
  SNAP_CHECK(snapccl_fused_ensure_loaded(dev));
  return snapccl_fused_launch_norm(&f, sum, dev);
}

SNAPCCL_API ncclResult_t snapcclQueryFusedAlgorithm(ncclComm_t comm, size_t tokens, size_t hidden,
                                                    ncclDataType_t datatype,
                                                    const snapcclFusedOptions* options,
                                                    const char** name) {
  char why[512];
  if (!name) SNAP_FAIL(ncclInvalidArgument, "name is NULL");
  snapcclFusedOptions opt;
  ncclResult_t r = snapccl_fused_options_read(options, &opt, why, sizeof why);
  if (r != ncclSuccess) return snapccl_error(r, __func__, "%s", why);
  struct target t;
  SNAP_CHECK(resolve(comm, NULL, __func__, &t));
  struct snapccl_fused f;
  /* Selection never depends on buffer addresses: the buffers are left out. */
  r = prepare(&f, NULL, NULL, NULL, NULL, NULL, tokens ? tokens : 1 /* as if it had rows */,
              hidden, 1e-6f, datatype, &opt, 0, why, sizeof why);
  if (r != ncclSuccess) return snapccl_error(r, __func__, "%s", why);
  f.comm = t.c;
  const struct snapccl_fused_algo* a = NULL;
  switch (snapccl_fused_route(&f, t.have_real, t.ours_ready, &a, why, sizeof why)) {
    case FUSED_ROUTE_OURS: *name = a->name; return ncclSuccess;
    case FUSED_ROUTE_REAL: *name = "nccl"; return ncclSuccess;
    default: SNAP_FAIL(ncclInvalidUsage, "%s", why);
  }
}
