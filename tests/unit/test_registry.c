/* The handle -> communicator registry (src/registry.c), and its per-thread memo of the
 * last lookup: a repeated lookup answers from the memo, and any add, replace or remove,
 * on this thread or another, makes the next lookup see the table as it is. */
#include <criterion/criterion.h>

#include <pthread.h>

#include "registry.h"

/* Stand-ins: the registry never looks inside a communicator. */
static char handle_a, handle_b;
static char comm_x, comm_y;
#define X ((struct snapccl_comm*)&comm_x)
#define Y ((struct snapccl_comm*)&comm_y)

Test(registry, memo_follows_add_replace_remove) {
  const int base = snapccl_registry_count();
  cr_assert_null(snapccl_registry_find(&handle_a));
  cr_assert_null(snapccl_registry_find(&handle_a), "a remembered miss");
  cr_assert_eq(snapccl_registry_add(&handle_a, X), ncclSuccess);
  cr_assert_eq(snapccl_registry_find(&handle_a), X, "the miss was remembered past the add");
  cr_assert_eq(snapccl_registry_find(&handle_a), X);
  cr_assert_eq(snapccl_registry_add(&handle_a, Y), ncclSuccess); /* replaces */
  cr_assert_eq(snapccl_registry_find(&handle_a), Y);
  cr_assert_eq(snapccl_registry_count(), base + 1);
  cr_assert_eq(snapccl_registry_add(&handle_b, X), ncclSuccess);
  cr_assert_eq(snapccl_registry_find(&handle_b), X);
  cr_assert_eq(snapccl_registry_find(&handle_a), Y, "switching handles");
  cr_assert_eq(snapccl_registry_remove(&handle_a), Y);
  cr_assert_null(snapccl_registry_find(&handle_a), "found after its removal");
  cr_assert_eq(snapccl_registry_remove(&handle_b), X);
  cr_assert_null(snapccl_registry_find(&handle_b));
  cr_assert_eq(snapccl_registry_count(), base);
}

static void* remove_a(void* p) {
  (void)p;
  cr_assert_eq(snapccl_registry_remove(&handle_a), X);
  return NULL;
}

Test(registry, change_on_another_thread_voids_the_memo) {
  cr_assert_eq(snapccl_registry_add(&handle_a, X), ncclSuccess);
  cr_assert_eq(snapccl_registry_find(&handle_a), X);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, remove_a, NULL), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_null(snapccl_registry_find(&handle_a), "this thread's memo outlived another's remove");
}
