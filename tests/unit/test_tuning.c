/* The tuning file (src/tuning.h): the parser on good and bad files (cut, other version,
 * other topology, garbage, huge, unreadable, a directory), a deterministic random
 * mutation run over a good file, the agreement of forked ranks whose files differ, and
 * the selector's choice with and without a file on a fake communicator. */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "algos/algo.h"
#include "bootstrap.h"
#include "bootstrap_util.h"
#include "comm.h"
#include "fake_comm.h"
#include "env.h"
#include "registry.h"
#include "snapccl.h"
#include "transport/transport_impl.h"
#include "tuning.h"

#define KEY "gpu=NVIDIA_H100_80GB_HBM3 link=shared gpus=1 world=2 per_gpu=2 procs=1"

/* Two allreduce rows for 4-byte types: at 1 KiB..1 MiB one-shot beats Lamport and
 * NCCL; above, NCCL beats the two-shot. */
static const char good[] =
    "snapccl-tuning 1\n"
    "# written by perf/tune.py\n"
    "topology " KEY "\n"
    "row allreduce 4 eager 1024 1048576 oneshot lamport=9.5 oneshot=8.25 twoshot=30 nccl=19\n"
    "row allreduce 4 eager 1048577 1099511627776 nccl twoshot=300 nccl=250.5\n"
    "row allreduce 4 graph 1024 1048576 lamport lamport=4 oneshot=5\n"
    "row allgather 2 eager 0 4096 direct direct=7 nccl=13\n"
    "end\n";

static struct snapccl_comm* fake_new(int nranks);
static const char* query(struct snapccl_comm* c, size_t count, ncclDataType_t dt);

static struct snapccl_tuning* parse(const char* text, const char* key, char* why) {
  why[0] = 0;
  return snapccl_tuning_parse(text, strlen(text), key, why, 300);
}

static void setup_env(void) {
  unsetenv("SNAPCCL_ALGO");
  unsetenv("SNAPCCL_TUNING_FILE");
  unsetenv("SNAPCCL_LOWPREC");
  unsetenv("SNAPCCL_NCCL_LIB");
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "10", 1);
  snapccl_env_reload();
}

TestSuite(tuning, .init = setup_env);

Test(tuning, good_file_rows_and_lookups) {
  char why[300];
  struct snapccl_tuning* t = parse(good, KEY, why);
  cr_assert(t, "refused: %s", why);
  cr_assert_eq(t->nrows, 4);
  cr_assert_str_eq(t->key, KEY);
  const struct snapccl_tuning_row* r = snapccl_tuning_find(t, COLL_ALLREDUCE, 4, TUNING_EAGER, 1024);
  cr_assert(r);
  double us = 0;
  cr_assert(snapccl_tuning_time(r, "oneshot", &us));
  cr_assert_float_eq(us, 8.25, 1e-12);
  cr_assert_not(snapccl_tuning_time(r, "direct", &us), "an algorithm the row does not time");
  cr_assert_eq(snapccl_tuning_find(t, COLL_ALLREDUCE, 4, TUNING_EAGER, 1048576), r, "hi is inclusive");
  cr_assert_neq(snapccl_tuning_find(t, COLL_ALLREDUCE, 4, TUNING_EAGER, 1048577), r);
  cr_assert_null(snapccl_tuning_find(t, COLL_ALLREDUCE, 4, TUNING_EAGER, 1023), "below every row");
  cr_assert_null(snapccl_tuning_find(t, COLL_ALLREDUCE, 2, TUNING_EAGER, 4096), "another dtype size");
  cr_assert_null(snapccl_tuning_find(t, COLL_REDUCESCATTER, 4, TUNING_EAGER, 4096), "another collective");
  cr_assert(snapccl_tuning_find(t, COLL_ALLREDUCE, 4, TUNING_GRAPH, 2000), "the graph rows apart");
  cr_assert(snapccl_tuning_find(t, COLL_ALLGATHER, 2, TUNING_EAGER, 0));
  cr_assert_null(snapccl_tuning_find(NULL, COLL_ALLGATHER, 2, TUNING_EAGER, 0), "no file");
  /* The same bytes hash the same; one byte more does not. */
  struct snapccl_tuning* t2 = parse(good, NULL, why);
  cr_assert(t2);
  cr_assert_eq(t2->hash, t->hash);
  free(t2);
  char more[sizeof good + 2];
  snprintf(more, sizeof more, "%s\n", good);
  t2 = parse(more, KEY, why);
  cr_assert(t2);
  cr_assert_neq(t2->hash, t->hash);
  free(t2);
  free(t);
}

/* Every bad file is refused as a whole, with a reason naming what is wrong. */
Test(tuning, bad_files_refused_with_reason) {
  static const struct {
    const char* text;
    const char* reason; /* a piece of the reason */
  } cases[] = {
      {"", "empty"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 10 oneshot oneshot=1\n", "cut short"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 10 oneshot oneshot=1\nen", "neither"},
      {"snapccl-tuning 2\ntopology " KEY "\nend\n", "version 2"},
      {"snapccl-tuning 1x\nend\n", "does not start"},
      {"\x7f" "ELF\x02\x01\x01", "does not start"},
      {"snapccl-tuning 1\ntopology gpu=NVIDIA_H200 link=nvlink gpus=2 world=2 per_gpu=1 procs=1\nend\n",
       "another topology"},
      {"snapccl-tuning 1\nend\n", "topology"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 10 oneshot oneshot=1\nend\nrow\n", "follows"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow broadcast 4 eager 0 10 a a=1\nend\n", "unknown collective"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 3 eager 0 10 a a=1\nend\n", "dtype size"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 lazy 0 10 a a=1\nend\n", "mode"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 10 9 a a=1\nend\n", "size range"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager -1 9 a a=1\nend\n", "size range"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 99999999999999999999 a a=1\nend\n", "size range"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a\nend\n", "no times"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9\nend\n", "cut short"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a a=nan\nend\n", "positive"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a a=-2\nend\n", "positive"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a a=inf\nend\n", "positive"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a a=1e300\nend\n", "positive"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a a=1us\nend\n", "positive"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 A A=1\nend\n", "<algorithm>"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a a=1 a=2\nend\n", "twice"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a a=2 b=1\nend\n", "least time"},
      {"snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a a=1\n"
       "row allreduce 4 eager 9 20 a a=1\nend\n", "overlap"},
      {"snapccl-tuning 1\ntopology " KEY "\nhello\nend\n", "neither"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char why[300];
    struct snapccl_tuning* t = parse(cases[i].text, KEY, why);
    cr_assert_null(t, "case %zu accepted", i);
    cr_assert(strstr(why, cases[i].reason), "case %zu: reason \"%s\" lacks \"%s\"", i, why, cases[i].reason);
  }
  /* A NUL inside, and a line too long for any row. */
  char why[300];
  const char nul[] = "snapccl-tuning 1\n\0topology x\nend\n";
  cr_assert_null(snapccl_tuning_parse(nul, sizeof nul - 1, NULL, why, sizeof why));
  cr_assert(strstr(why, "NUL"), "%s", why);
  char* longline = malloc(5000);
  memset(longline, 'x', 4999);
  longline[4999] = 0;
  memcpy(longline, "snapccl-tuning 1\n", 17);
  cr_assert_null(parse(longline, NULL, why));
  cr_assert(strstr(why, "longer"), "%s", why);
  free(longline);
  /* More than SNAPCCL_TUNING_MAX_ALGOS times in a row. */
  char many[4096] = "snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 a0";
  for (int i = 0; i <= SNAPCCL_TUNING_MAX_ALGOS; i++)
    snprintf(many + strlen(many), sizeof many - strlen(many), " a%d=%d", i, i + 1);
  strcat(many, "\nend\n");
  cr_assert_null(parse(many, KEY, why));
  cr_assert(strstr(why, "more than"), "%s", why);
}

static char tmpdir[64];

static void write_file(const char* path, const void* data, size_t n) {
  FILE* f = fopen(path, "wb");
  cr_assert(f, "cannot write %s", path);
  cr_assert_eq(fwrite(data, 1, n, f), n);
  cr_assert_eq(fclose(f), 0);
}

static void make_tmpdir(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/snapccl_tuning_XXXXXX");
  cr_assert(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  cr_assert_eq(system(cmd), 0);
}

Test(tuning, reading_files) {
  make_tmpdir();
  char path[128], why[300];
  struct snapccl_tuning* t;
  snprintf(path, sizeof path, "%s/good.txt", tmpdir);
  write_file(path, good, strlen(good));
  cr_assert_eq(snapccl_tuning_read(path, KEY, &t, why, sizeof why), 1, "%s", why);
  cr_assert_str_eq(t->source, path);
  free(t);
  snprintf(path, sizeof path, "%s/none.txt", tmpdir);
  cr_assert_eq(snapccl_tuning_read(path, KEY, &t, why, sizeof why), -1, "no file is no news");
  cr_assert_null(t);
  cr_assert_eq(snapccl_tuning_read(tmpdir, KEY, &t, why, sizeof why), 0);
  cr_assert(strstr(why, "directory"), "%s", why);
  snprintf(path, sizeof path, "%s/fifo", tmpdir);
  cr_assert_eq(mkfifo(path, 0600), 0);
  cr_assert_eq(snapccl_tuning_read(path, KEY, &t, why, sizeof why), 0, "a FIFO, without blocking");
  cr_assert(strstr(why, "regular"), "%s", why);
  snprintf(path, sizeof path, "%s/huge.txt", tmpdir);
  int fd = open(path, O_CREAT | O_WRONLY, 0600);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)SNAPCCL_TUNING_MAX_BYTES + 1), 0);
  close(fd);
  cr_assert_eq(snapccl_tuning_read(path, KEY, &t, why, sizeof why), 0);
  cr_assert(strstr(why, "more than"), "%s", why);
  snprintf(path, sizeof path, "%s/cut.txt", tmpdir);
  write_file(path, good, strlen(good) - 5);
  cr_assert_eq(snapccl_tuning_read(path, KEY, &t, why, sizeof why), 0);
  if (geteuid() != 0) { /* root reads a file of mode 000 anyway */
    snprintf(path, sizeof path, "%s/locked.txt", tmpdir);
    write_file(path, good, strlen(good));
    cr_assert_eq(chmod(path, 0), 0);
    cr_assert_eq(snapccl_tuning_read(path, KEY, &t, why, sizeof why), 0);
    cr_assert(strstr(why, "cannot open"), "%s", why);
  }
  remove_tmpdir();
}

Test(tuning, default_path_by_topology) {
  char a[512], b[512];
  setenv("XDG_CACHE_HOME", "/xdg", 1);
  cr_assert(snapccl_tuning_default_path(KEY, a, sizeof a));
  cr_assert(!strncmp(a, "/xdg/snapccl/tuning-", 20), "%s", a);
  cr_assert(snapccl_tuning_default_path("gpu=other", b, sizeof b));
  cr_assert_str_neq(a, b, "another topology, another file");
  unsetenv("XDG_CACHE_HOME");
  setenv("HOME", "/home/u", 1);
  cr_assert(snapccl_tuning_default_path(KEY, a, sizeof a));
  cr_assert(!strncmp(a, "/home/u/.cache/snapccl/tuning-", 30), "%s", a);
  unsetenv("HOME");
  cr_assert_not(snapccl_tuning_default_path(KEY, a, sizeof a));
  char key[256];
  snapccl_tuning_key(key, sizeof key, "NVIDIA H100 80GB HBM3", "shared", 1, 2, 2, 1);
  cr_assert_str_eq(key, KEY);
}

/* Deterministic mutations of the good file (xorshift, fixed seed): flipped and replaced
 * bytes, cuts, repeats and deletions. The parser must never crash or read out of
 * bounds (the sanitized build of this suite checks), always say why it refuses, and
 * what it accepts must be well formed. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

Test(tuning, random_mutations) {
  const size_t n0 = strlen(good);
  char* buf = malloc(4 * n0);
  static const char alphabet[] = "0123456789 =\n#-.eE+xrowendalgtpsch";
  int accepted = 0;
  for (int iter = 0; iter < 20000; iter++) {
    size_t n = n0;
    memcpy(buf, good, n);
    int edits = 1 + (int)(next() % 4);
    for (int e = 0; e < edits && n > 0; e++) {
      size_t at = next() % n;
      switch (next() % 6) {
        case 0: buf[at] ^= (char)(1u << (next() % 8)); break;
        case 1: buf[at] = alphabet[next() % (sizeof alphabet - 1)]; break;
        case 2: n = at; break; /* cut */
        case 3: { /* delete a span */
          size_t len = 1 + next() % 16;
          if (at + len > n) len = n - at;
          memmove(buf + at, buf + at + len, n - at - len);
          n -= len;
          break;
        }
        case 4: { /* repeat a span */
          size_t len = 1 + next() % 64;
          if (at + len > n) len = n - at;
          if (n + len > 4 * n0) break;
          memmove(buf + at + len, buf + at, n - at);
          n += len;
          break;
        }
        default: buf[at] = (char)(next() & 0xff); break;
      }
    }
    char* exact = malloc(n ? n : 1); /* exactly n bytes, no terminator */
    memcpy(exact, buf, n);
    char why[300] = "";
    struct snapccl_tuning* t = snapccl_tuning_parse(exact, n, iter & 1 ? KEY : NULL, why, sizeof why);
    if (t) {
      accepted++;
      for (int i = 0; i < t->nrows; i++) {
        const struct snapccl_tuning_row* r = &t->rows[i];
        cr_assert(r->n > 0 && r->lo <= r->hi, "iteration %d", iter);
        cr_assert_eq(snapccl_tuning_find(t, r->coll, r->dsize, r->mode, r->lo), r, "iteration %d", iter);
        for (int k = 0; k < r->n; k++) cr_assert(r->us[k] > 0 && isfinite(r->us[k]));
      }
    } else {
      cr_assert(why[0], "iteration %d refused without a reason", iter);
    }
    free(t);
    free(exact);
  }
  /* Most mutations break something, some (in comments, times) keep it valid. */
  cr_assert(accepted > 0 && accepted < 20000, "accepted %d", accepted);
  free(buf);
}

/* What perf/tune.py writes (from its stand-in perf binary, perf/testdata/test_tune.sh keeps
 * the two equal) is a file the library takes, and its winners are what the selector picks. */
Test(tuning, the_tools_file_is_accepted) {
  char why[300];
  struct snapccl_tuning* t = NULL;
  cr_assert_eq(snapccl_tuning_read(SNAPCCL_SOURCE_ROOT "/perf/testdata/tune/expected.txt", NULL, &t, why,
                                   sizeof why), 1, "%s", why);
  cr_assert_eq(t->nrows, 64);
  struct snapccl_comm* c = fake_new(2);
  c->tuning = t;
  c->real_comm = (ncclComm_t)(uintptr_t)0x1000;
  cr_assert_str_eq(query(c, 2, ncclFloat32), "lamport", "8 B: the stub's Lamport");
  cr_assert_str_eq(query(c, 1024, ncclFloat32), "oneshot", "4 KiB: its one-shot");
  cr_assert_str_eq(query(c, 1 << 16, ncclFloat32), "nccl", "256 KiB: its NCCL");
  fake_comm_free(c);
}

/* ---- agreement: forked ranks, each reading its own SNAPCCL_TUNING_FILE ---- */

static char rank_file[8][160];
static int expect_used;

static int rank_agree(const ncclUniqueId* id, int rank, int nranks) {
  setenv("SNAPCCL_TUNING_FILE", rank_file[rank], 1);
  setenv("SNAPCCL_DEBUG", "WARN", 1);
  snapccl_env_reload();
  struct snapccl_comm* c = NULL;
  RCHECK(snapccl_comm_alloc(&c) == ncclSuccess);
  c->rank = rank;
  c->nranks = nranks;
  RCHECK(snapccl_bootstrap_init(id, rank, nranks, &c->boot) == ncclSuccess);
  RCHECK(snapccl_tuning_setup(c, KEY) == ncclSuccess);
  RCHECK((c->tuning != NULL) == expect_used);
  /* Choices remembered before are void (algos/select_cache.h). */
  RCHECK(atomic_load(&c->select_cache.generation) > 0);
  /* A second exchange after it: no rank is left behind in the first. */
  RCHECK(snapccl_bootstrap_barrier(c->boot) == ncclSuccess);
  snapccl_comm_free(c);
  return 0;
}

static void agree_case(const char* const* texts, int nranks, int used) {
  for (int r = 0; r < nranks; r++) {
    snprintf(rank_file[r], sizeof rank_file[r], "%s/rank%d.txt", tmpdir, r);
    if (texts[r]) write_file(rank_file[r], texts[r], strlen(texts[r]));
  }
  expect_used = used;
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  run_forked(&id, nranks, rank_agree, 30.0);
  for (int r = 0; r < nranks; r++) unlink(rank_file[r]);
}

Test(tuning, ranks_agree_or_all_ignore) {
  make_tmpdir();
  static const char other[] =
      "snapccl-tuning 1\ntopology " KEY "\nrow allreduce 4 eager 0 9 nccl nccl=1 oneshot=2\nend\n";
  static const char wrong_host[] =
      "snapccl-tuning 1\ntopology gpu=X link=pcie gpus=2 world=2 per_gpu=1 procs=2\nend\n";
  const char* same[] = {good, good, good};
  agree_case(same, 3, 1);
  const char* differ[] = {good, other, good};
  agree_case(differ, 3, 0);
  const char* missing[] = {good, good, NULL};
  agree_case(missing, 3, 0);
  const char* bad_on_one[] = {good, "garbage\n", good};
  agree_case(bad_on_one, 3, 0);
  const char* foreign[] = {wrong_host, wrong_host};
  agree_case(foreign, 2, 0);
  const char* none[] = {NULL, NULL};
  agree_case(none, 2, 0);
  remove_tmpdir();
}

/* ---- the choice with and without a file, on a fake communicator ---- */

static struct snapccl_comm* fake_new(int nranks) { return fake_comm_new(nranks, 16); }


static const char* query(struct snapccl_comm* c, size_t count, ncclDataType_t dt) {
  const char* name = NULL;
  cr_assert_eq(snapcclQueryAlgorithm((ncclComm_t)c, "allreduce", count, dt, ncclSum, &name), ncclSuccess);
  return name;
}

Test(tuning, choice_with_and_without_file) {
  struct snapccl_comm* c = fake_new(2);
  /* Without a file, the model: Lamport for small floats, the two-shot for 1 GiB. */
  cr_assert_str_eq(query(c, 1024, ncclFloat32), "lamport");
  cr_assert_str_eq(query(c, 1u << 28, ncclFloat32), "twoshot");
  char why[300];
  c->tuning = parse(good, KEY, why);
  cr_assert(c->tuning, "%s", why);
  /* 4 KiB: the row's least time among what can run. */
  cr_assert_str_eq(query(c, 1024, ncclFloat32), "oneshot");
  cr_assert_str_eq(query(c, 1024, ncclInt32), "oneshot", "the same row for every 4-byte type");
  /* Not covered (2-byte types, below 1 KiB): the model. */
  cr_assert_str_eq(query(c, 1024, ncclBfloat16), "lamport");
  cr_assert_str_eq(query(c, 16, ncclFloat32), "lamport");
  /* 1 GiB: NCCL measured fastest, but no NVIDIA library under this communicator: the
   * fastest of ours that was measured. */
  cr_assert_str_eq(query(c, 1u << 28, ncclFloat32), "twoshot");
  /* With a real communicator underneath, NCCL takes it; elsewhere ours still win. */
  c->real_comm = (ncclComm_t)(uintptr_t)0x1000; /* never called: only asked whether there */
  cr_assert_str_eq(query(c, 1u << 28, ncclFloat32), "nccl");
  cr_assert_str_eq(query(c, 1024, ncclFloat32), "oneshot");
  const struct snapccl_algo* a;
  struct snapccl_coll coll;
  static char dummy;
  cr_assert(snapccl_coll_prepare_quiet(COLL_ALLREDUCE, &dummy, &dummy, 1u << 28, ncclFloat32, ncclSum, c,
                                       NULL, &coll));
  cr_assert_neq(snapccl_algo_choose(&coll, &a), ncclSuccess, "interposed: the call goes to NCCL");
  /* SNAPCCL_ALGO still decides over the file. */
  setenv("SNAPCCL_ALGO", "allreduce:twoshot", 1);
  snapccl_env_reload();
  cr_assert_str_eq(query(c, 1u << 28, ncclFloat32), "twoshot");
  setenv("SNAPCCL_ALGO", "allreduce:nccl", 1);
  snapccl_env_reload();
  cr_assert_str_eq(query(c, 1024, ncclFloat32), "nccl");
  unsetenv("SNAPCCL_ALGO");
  snapccl_env_reload();
  /* Without the file again: the model, now with NCCL's estimate as a candidate. */
  free(c->tuning);
  c->tuning = NULL;
  cr_assert_str_eq(query(c, 1024, ncclFloat32), "lamport");
  fake_comm_free(c);
}
