/* The fake communicator of fake_comm.h. */
#include "fake_comm.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "comm.h"
#include "registry.h"
#include "transport/transport_impl.h"

struct snapccl_comm* fake_comm_new(int nranks, int max_blocks) {
  struct snapccl_comm* c = NULL;
  cr_assert_eq(snapccl_comm_alloc(&c), ncclSuccess);
  cr_assert_eq(snapccl_config_parse(NULL, &c->config), ncclSuccess);
  c->nranks = nranks;
  c->rank = 0;
  c->cuda_dev = 0;
  c->ranks_on_dev = c->ranks_on_dev_in_proc = 1;
  atomic_store(&c->async_state, ncclSuccess);
  struct snapccl_transport* t = calloc(1, sizeof *t);
  cr_assert_not_null(t);
  t->usable = 1;
  t->max_blocks = max_blocks;
  snapccl_ws_layout_compute(&t->lay, nranks, max_blocks, 64 << 20);
  c->transport = t;
  cr_assert_eq(snapccl_registry_add(c, c), ncclSuccess);
  return c;
}

void fake_comm_free(struct snapccl_comm* c) {
  free(c->transport);
  c->transport = NULL;
  c->real_comm = NULL;
  if (snapccl_registry_remove(c) == c) snapccl_comm_free(c);
}
