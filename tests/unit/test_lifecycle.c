/* A communicator's end, without a GPU: ncclCommDestroy, ncclCommAbort, ncclCommFinalize
 * and ncclCommShrink on communicators whose init is deferred to an open group or still
 * running, and the bookkeeping of shrinks. Every call must return, with NCCL's code. */
#include <criterion/criterion.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "env.h"
#include "error.h"
#include "nccl.h"

static void setup(void) {
  unsetenv("SNAPCCL_NCCL_LIB");
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "5", 1);
  unsetenv("SNAPCCL_SOCKET_IFNAME");
  unsetenv("NCCL_SOCKET_IFNAME");
  snapccl_env_reload();
}

TestSuite(shrink, .init = setup);

/* The tag that carries a shrunk communicator's id: never negative (it was computed
 * with a signed multiplication that overflowed from the 32768th shrink on), and
 * distinct between shrinks close in sequence. */
Test(shrink, tag_stays_in_range) {
  const unsigned seqs[] = {0, 1, 32767, 32768, 32769, 65535, 65536, 1u << 20, UINT_MAX};
  for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
    int t = snapccl_shrink_tag(seqs[i]);
    cr_assert_geq(t, 0, "shrink %u: tag %d", seqs[i], t);
    cr_assert_neq(t, snapccl_shrink_tag(seqs[i] + 1), "shrinks %u and %u share a tag", seqs[i],
                  seqs[i] + 1);
  }
  for (unsigned s = 0; s < 70000; s++) cr_assert_geq(snapccl_shrink_tag(s), 0, "shrink %u", s);
}
