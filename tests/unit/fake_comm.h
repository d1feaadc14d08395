/* A communicator as far as the selector can tell, for unit tests without a GPU:
 * initialized, registered, rank 0 of `nranks` on device 0, with a transport that says it
 * can run collectives with `max_blocks` blocks (and a 64 MiB staging layout). */
#ifndef SNAPCCL_TEST_FAKE_COMM_H
#define SNAPCCL_TEST_FAKE_COMM_H

struct snapccl_comm;

struct snapccl_comm* fake_comm_new(int nranks, int max_blocks);
/* Frees what fake_comm_new made (forgetting any real_comm a test set). */
void fake_comm_free(struct snapccl_comm* c);

#endif
