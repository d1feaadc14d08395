/* The tuning file on a real communicator (two ranks sharing this GPU): without a file the
 * cost model chooses; a file written for this communicator's topology key, naming another
 * winner, changes the choice on every rank, and the call it now takes is still correct; a
 * garbage file or one for another topology leaves the model's choice, on every rank. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm.h"
#include "common.h"
#include "fixture.h"
#include "registry.h"
#include "snapccl.h"
#include "tuning.h"

#define COUNT 1024 /* floats: 4 KiB, which Lamport and the one-shot both run */

static const char* query(ncclComm_t comm) {
  const char* name = NULL;
  cr_assert_eq(snapcclQueryAlgorithm(comm, "allreduce", COUNT, ncclFloat32, ncclSum, &name), ncclSuccess);
  return name;
}

/* The choice on every rank, which must agree. */
static const char* choice(struct t_fixture* f) {
  const char* first = query(f->w.comm[0]);
  for (int r = 1; r < f->w.n; r++) cr_assert_str_eq(query(f->w.comm[r]), first, "rank %d differs", r);
  return first;
}

static void open_with(struct t_fixture* f, const char* file) {
  t_env_defaults();
  t_env_set("SNAPCCL_TUNING_FILE", file);
  t_fixture_init(f, 2, COUNT * 4, COUNT * 4);
}

Test(tuning_ws2, file_changes_choice, .timeout = 300) {
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_with(&f, NULL);
  const char* model = choice(&f);
  struct snapccl_comm* c = snapccl_registry_find(f.w.comm[0]);
  cr_assert(c && !c->tuning);
  char key[SNAPCCL_TUNING_KEY_LEN];
  snapccl_tuning_comm_key(c, key, sizeof key);
  t_fixture_close(&f);

  const char* want = strcmp(model, "lamport") ? "lamport" : "oneshot";
  const char* other = strcmp(want, "lamport") ? "lamport" : "oneshot";
  char path[] = "/tmp/snapccl_gpu_tuning_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  FILE* fp = fdopen(fd, "w");
  fprintf(fp, "snapccl-tuning 1\ntopology %s\nrow allreduce 4 eager 2048 8191 %s %s=1.5 %s=3 twoshot=9\nend\n",
          key, want, want, other);
  fclose(fp);
  open_with(&f, path);
  cr_assert(((struct snapccl_comm*)snapccl_registry_find(f.w.comm[1]))->tuning, "rank 1 took the file");
  cr_assert_str_eq(choice(&f), want, "the file's winner (the model chose %s)", model);
  struct t_case k = t_case_make(T_AR, ncclFloat32, T_SUM, COUNT, 0, NULL, 0x7475ull);
  t_fixture_run(&f, &k);
  t_fixture_close(&f);

  /* Another topology's file, and garbage: the model again. */
  fp = fopen(path, "w");
  fprintf(fp, "snapccl-tuning 1\ntopology gpu=elsewhere\nrow allreduce 4 eager 2048 8191 %s %s=1.5\nend\n", want, want);
  fclose(fp);
  open_with(&f, path);
  cr_assert_str_eq(choice(&f), model);
  t_fixture_close(&f);
  fp = fopen(path, "w");
  fprintf(fp, "\x01\x02garbage");
  fclose(fp);
  open_with(&f, path);
  cr_assert_str_eq(choice(&f), model);
  t_fixture_run(&f, &k);
  t_fixture_close(&f);
  unlink(path);
}
