/* The low-precision all-reduce's host side (docs/LOWPREC.md): the setting a call uses,
 * the communicator's override of it (snapcclCommSetLowPrecision, api_lowprec.c), and
 * the grid of a call. The formats, layout and kernels are kernels/lowprec.h's. */
#ifndef SNAPCCL_ALGOS_ALLREDUCE_LOWPREC_H
#define SNAPCCL_ALGOS_ALLREDUCE_LOWPREC_H

#include <stddef.h>

struct snapccl_comm;
struct snapccl_coll;
struct snapccl_geom;

struct snapccl_lowprec_setting {
  int format;                  /* SNAPCCL_LP_*; OFF when disabled */
  int group;                   /* elements per scale, valid */
  unsigned long long min_bytes; /* smaller messages stay in full precision */
  int from_comm;               /* set by snapcclCommSetLowPrecision, not the environment */
};

/* The setting a call on comm uses: the communicator's if set, else the environment's. */
void snapccl_lowprec_setting_of(const struct snapccl_comm* comm, struct snapccl_lowprec_setting* out);
/* Sets comm's override (arguments already checked: a format, a valid group or 0 for the
 * environment's); clears it with format SNAPCCL_LOWPREC_ENV. Atomic: a selection running
 * meanwhile sees the old setting or the new one, never half of each. */
void snapccl_lowprec_override(struct snapccl_comm* comm, int format, int group, size_t min_bytes);
/* The grid and chunk of a call (exposed for the unit tests). */
void snapccl_lowprec_geometry(const struct snapccl_coll* c, const struct snapccl_lowprec_setting* s,
                              struct snapccl_geom* g);

#endif
