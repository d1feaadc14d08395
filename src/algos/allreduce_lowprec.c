/* All-reduce in low precision, opt-in (docs/LOWPREC.md): the two-shot pipeline moving
 * groups quantised to fp8 E4M3, int8 or int4 with one fp32 scale per group. Sum and avg
 * of float16, bfloat16 and float32 only; lossy, so never chosen unless asked for with
 * SNAPCCL_LOWPREC or snapcclCommSetLowPrecision. Kernel: src/kernels/lowprec.cu. */
#include <stdatomic.h>

#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/launch.h"
#include "algos/allreduce_lowprec.h"
#include "algos/select_cache.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "kernels/lowprec.h"
#include "snapccl.h"

_Static_assert(SNAPCCL_LOWPREC_OFF == SNAPCCL_LP_OFF && SNAPCCL_LOWPREC_FP8 == SNAPCCL_LP_FP8 &&
                   SNAPCCL_LOWPREC_INT8 == SNAPCCL_LP_INT8 && SNAPCCL_LOWPREC_INT4 == SNAPCCL_LP_INT4,
               "format numbers of snapccl.h and kernels/lowprec.h differ");

/* ---------------------------------------------------------------- the setting */

/* A communicator's override, packed in one word so readers never see half an update:
 * bit 63 set, bits 0..3 format, 4..15 group (0: the environment's), 16..62 min_bytes. */
#define PACK_SET (1ull << 63)
#define PACK_MIN_MAX ((1ull << 47) - 1)

void snapccl_lowprec_override(struct snapccl_comm* comm, int format, int group, size_t min_bytes) {
  unsigned long long mb = min_bytes > PACK_MIN_MAX ? PACK_MIN_MAX : (unsigned long long)min_bytes;
  atomic_store(&comm->lowprec, format == SNAPCCL_LOWPREC_ENV ? 0
                               : PACK_SET | (uint64_t)(format & 0xf) | (uint64_t)(group & 0xfff) << 4 |
                                     (uint64_t)mb << 16);
  /* The all-reduce's choice reads the setting: the choices remembered before it go. */
  snapccl_select_cache_invalidate(comm);
}

void snapccl_lowprec_setting_of(const struct snapccl_comm* comm, struct snapccl_lowprec_setting* out) {
  const struct snapccl_env* env = snapccl_env(); /* its table checked all three */
  out->format = env->lowprec;
  out->group = env->lowprec_group;
  out->min_bytes = (unsigned long long)env->lowprec_min_bytes;
  out->from_comm = 0;
  uint64_t v = comm ? atomic_load_explicit((_Atomic uint64_t*)&comm->lowprec, memory_order_relaxed) : 0;
  if (!(v & PACK_SET)) return;
  int group = (int)((v >> 4) & 0xfff);
  out->format = (int)(v & 0xf);
  if (group) out->group = group; /* else the environment's */
  out->min_bytes = (v >> 16) & PACK_MIN_MAX;
  out->from_comm = 1;
}

/* ---------------------------------------------------------------- the algorithm */

static const char* off(const struct snapccl_lowprec_setting* s) {
  return s->format == SNAPCCL_LP_OFF ? "low precision is off (SNAPCCL_LOWPREC, snapcclCommSetLowPrecision)"
                                     : NULL;
}

static const char* unfit(const struct snapccl_coll* c, const struct snapccl_lowprec_setting* s) {
  if (c->dtype != ncclFloat16 && c->dtype != ncclBfloat16 && c->dtype != ncclFloat32)
    return "low precision takes float16, bfloat16 and float32 only";
  if (c->op != ncclSum && c->op != ncclAvg) return "low precision takes sum and avg only";
  if (c->comm->nranks < 2) return "one rank: nothing to exchange, and the plain copy is exact";
  if ((unsigned long long)c->count * snapccl_dtype_size(c->dtype) < s->min_bytes)
    return "the message is below the low-precision minimum size (SNAPCCL_LOWPREC_MIN_BYTES)";
  return snapccl_transport_unusable(c);
}

static const char* opted_in(const struct snapccl_coll* c) {
  struct snapccl_lowprec_setting s;
  snapccl_lowprec_setting_of(c->comm, &s);
  return off(&s);
}

static const char* can_run(const struct snapccl_coll* c) {
  struct snapccl_lowprec_setting s;
  snapccl_lowprec_setting_of(c->comm, &s);
  return unfit(c, &s);
}

/* Not modelled: being opt-in, it wins whenever it can run (pick.h). */
static double cost(const struct snapccl_coll* c) {
  (void)c;
  return 0.0;
}

/* The grid as snapccl_split_rounds makes it, in groups (slices start on group boundaries,
 * so a group never straddles two owners). Only values every rank shares go in, so every
 * rank computes the same grid.
 *
 * A block's share of a round (m groups) is also a whole number of ALIGN_BYTES of
 * unquantised data where the chunk allows: measured on an H100 (docs/LOWPREC.md, "Where a
 * round's time goes"), shares of any other size made every step of this kernel up to 2x
 * slower per group (64 MiB fp8, 3 rounds of 342 groups: 410 us; of 344: 303 us; 2 KiB
 * multiples gained only part). Why is not known; the full-precision kernels showed no such
 * effect. The last blocks of the last round get fewer groups.
 *
 * Wide blocks (16 warps, one per SM) when every block may have an SM of its own within the
 * residency promise (one rank per GPU, or small calls): on an H100 the kernel's steps are
 * latency-bound at 8 warps per SM, and 64 wide blocks ran 256 MiB fp8 in 907 us where 64
 * of 256 threads took 1134 (two ranks sharing the GPU, perf/RESULTS.md section 4). */
#define ALIGN_BYTES 4096ull
/* Each block starts with at least this much of its slice (its grid shape as measured). */
#define LP_MIN_BLOCK_BYTES (32ull << 10)

static unsigned long long gcd(unsigned long long a, unsigned long long b) {
  while (b) {
    unsigned long long t = a % b;
    a = b;
    b = t;
  }
  return a;
}

void snapccl_lowprec_geometry(const struct snapccl_coll* c, const struct snapccl_lowprec_setting* s,
                              struct snapccl_geom* g) {
  const unsigned long long G = (unsigned long long)s->group, gbytes = G * snapccl_dtype_size(c->dtype);
  const unsigned long long groups = snapccl_lp_slice_elems(c->count, c->comm->nranks, s->group) / G;
  unsigned long long cap = snapccl_lp_chunk_groups(snapccl_coll_layout(c)->chunk_bytes,
                                                   snapccl_lp_payload_bytes(s->format, s->group));
  unsigned long long q = ALIGN_BYTES / gcd(ALIGN_BYTES, gbytes); /* groups per aligned share */
  if (cap >= q)
    cap = cap / q * q;
  else
    q = 1; /* the chunk cannot hold one aligned share */
  const unsigned long long m = snapccl_split_rounds(c, groups, gbytes, cap, q, LP_MIN_BLOCK_BYTES, &g->blocks);
  g->mode = SNAPCCL_LP_MODE(s->format, s->group, g->blocks <= snapccl_coll_whole_sms(c));
  g->count = c->count;
  g->chunk_elems = (m ? m : 1) * G;
}

static ncclResult_t launch(const struct snapccl_coll* c) {
  struct snapccl_lowprec_setting s;
  snapccl_lowprec_setting_of(c->comm, &s);
  const char* why = off(&s); /* the setting may have changed since the selection */
  if (!why) why = unfit(c, &s);
  if (why) SNAP_FAIL(ncclInvalidUsage, "low-precision all-reduce cannot run: %s", why);
  struct snapccl_geom g;
  snapccl_lowprec_geometry(c, &s, &g);
  return snapccl_launch_coll(c, snapccl_launch_lowprec, &g);
}

const struct snapccl_algo snapccl_allreduce_lowprec = {
    .name = "lowprec", .kind = COLL_ALLREDUCE,
    .can_run = can_run, .cost_us = cost, .launch = launch, .opt_in = opted_in};
