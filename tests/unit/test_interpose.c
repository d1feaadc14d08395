/* Interposition without a GPU: mode detection, forwarding to the real NCCL, counters,
 * the unique-id choice, the handle registry and snapccl_forward_target.
 *
 * The "real" NCCL is a stand-in (fake_nccl.c, built as libnccl.so.2 in the tests' build
 * directory) that logs every call it receives, with its arguments, to $FAKE_NCCL_LOG.
 * interpose_app.c, linked against it, prints "CALL <same format>" before each call it
 * makes and "RET <name> <code>" after. The tests run it as a subprocess in a controlled
 * environment:
 *   interposed  LD_PRELOAD=libsnapccl.so
 *   fallback    snapccl's libnccl.so.2 first on LD_LIBRARY_PATH, SNAPCCL_NCCL_LIB=fake
 *   standalone  snapccl's libnccl.so.2 first on LD_LIBRARY_PATH, no SNAPCCL_NCCL_LIB
 * and compare the application's calls with what reached the fake. snapccl makes calls
 * of its own to the real library (ncclGetVersion when it decides the mode; async error,
 * count, rank and device when it tries to attach to a new communicator); those are
 * allowed in the log, every other function must arrive exactly as often as the
 * application called it.
 *
 * The registry and snapccl_forward_target are tested in-process (core linked in). */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bootstrap.h"
#include "comm.h"
#include "env.h"
#include "interpose.h"
#include "nccl.h"
#include "real_nccl.h"
#include "registry.h"

#ifndef INTERPOSE_APP
#error "INTERPOSE_APP (path of interpose_app) must be defined by the build"
#endif

#define FAKE_VERSION 22899

/* ================================================================ subprocess runner */

enum app_mode { MODE_APP_INTERPOSED, MODE_APP_FALLBACK, MODE_APP_STANDALONE };

struct app_run {
  int exited, code, signaled, timed_out;
  double seconds;
  char* out; /* the application's stdout */
  char* err; /* its stderr (snapccl's log lines) */
  char* log; /* what the fake received */
};

static char* read_all(const char* path) {
  FILE* f = fopen(path, "rb");
  if (!f) return strdup("");
  size_t cap = 4096, len = 0;
  char* buf = malloc(cap);
  cr_assert_not_null(buf);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 2) {
      cap *= 2;
      buf = realloc(buf, cap);
      cr_assert_not_null(buf);
    }
  }
  buf[len] = 0;
  fclose(f);
  return buf;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void dir_of(const char* path, char* out, size_t n) {
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s", path);
  snprintf(out, n, "%s", dirname(tmp));
}

/* The fake under the name a program looks for (the build's file is libnccl.so.2.x.y). */
static const char* fake_path(void) {
  static char p[1100];
  char d[1024];
  dir_of(FAKE_NCCL_LIB, d, sizeof d);
  snprintf(p, sizeof p, "%s/libnccl.so.2", d);
  return p;
}

#define MAX_ENV 32
struct envp {
  char* v[MAX_ENV + 1];
  int n;
};

/* Sets "K=V", replacing an earlier K. */
static void env_set(struct envp* e, const char* kv) {
  const char* eq = strchr(kv, '=');
  cr_assert_not_null(eq, "bad environment entry %s", kv);
  size_t klen = (size_t)(eq - kv) + 1;
  for (int i = 0; i < e->n; i++)
    if (!strncmp(e->v[i], kv, klen)) {
      free(e->v[i]);
      e->v[i] = strdup(kv);
      return;
    }
  cr_assert_lt(e->n, MAX_ENV);
  e->v[e->n++] = strdup(kv);
  e->v[e->n] = NULL;
}

static void env_setf(struct envp* e, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void env_setf(struct envp* e, const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  env_set(e, buf);
}

/* Runs `interpose_app scenario` in `mode`, with the extra "K=V" entries (NULL-ended)
 * added last; kills it after timeout_s. */
static void run_app(struct app_run* r, enum app_mode mode, const char* scenario, double timeout_s,
                    ...) {
  memset(r, 0, sizeof *r);
  char dir[512];
  const char* tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/snapccl-interpose-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  cr_assert_not_null(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
  char out_path[600], err_path[600], log_path[600];
  snprintf(out_path, sizeof out_path, "%s/stdout", dir);
  snprintf(err_path, sizeof err_path, "%s/stderr", dir);
  snprintf(log_path, sizeof log_path, "%s/fake.log", dir);

  char ours_dir[1024];
  dir_of(SNAPCCL_NCCL_LIB_PATH, ours_dir, sizeof ours_dir);
  struct envp e = {.n = 0};
  e.v[0] = NULL;
  env_set(&e, "PATH=/usr/bin:/bin");
  env_setf(&e, "FAKE_NCCL_LOG=%s", log_path);
  env_set(&e, "CUDA_VISIBLE_DEVICES=-1"); /* no GPU, even on a host that has one */
  env_set(&e, "SNAPCCL_DEBUG=INFO");
  env_set(&e, "SNAPCCL_DEBUG_SUBSYS=INTERPOSE");
  env_set(&e, "SNAPCCL_BOOTSTRAP_TIMEOUT=5");
  switch (mode) {
    case MODE_APP_INTERPOSED: env_setf(&e, "LD_PRELOAD=%s", SNAPCCL_LIB); break;
    case MODE_APP_FALLBACK:
      env_setf(&e, "LD_LIBRARY_PATH=%s", ours_dir);
      env_setf(&e, "SNAPCCL_NCCL_LIB=%s", fake_path());
      break;
    case MODE_APP_STANDALONE: env_setf(&e, "LD_LIBRARY_PATH=%s", ours_dir); break;
  }
  va_list ap;
  va_start(ap, timeout_s);
  for (const char* kv = va_arg(ap, const char*); kv; kv = va_arg(ap, const char*)) env_set(&e, kv);
  va_end(ap);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  char* argv[] = {(char*)INTERPOSE_APP, (char*)scenario, NULL};
  pid_t pid;
  double t0 = now_s();
  int rc = posix_spawn(&pid, INTERPOSE_APP, &fa, NULL, argv, e.v);
  posix_spawn_file_actions_destroy(&fa);
  cr_assert_eq(rc, 0, "posix_spawn %s: %s", INTERPOSE_APP, strerror(rc));
  int status = 0;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    cr_assert(w == 0 || errno == EINTR, "waitpid: %s", strerror(errno));
    if (now_s() - t0 > timeout_s && !r->timed_out) {
      r->timed_out = 1;
      kill(pid, SIGKILL);
    }
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
  r->seconds = now_s() - t0;
  r->exited = WIFEXITED(status);
  r->code = r->exited ? WEXITSTATUS(status) : -1;
  r->signaled = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  r->out = read_all(out_path);
  r->err = read_all(err_path);
  r->log = read_all(log_path);
  unlink(out_path);
  unlink(err_path);
  unlink(log_path);
  rmdir(dir);
  for (int i = 0; i < e.n; i++) free(e.v[i]);
}

static void run_free(struct app_run* r) {
  free(r->out);
  free(r->err);
  free(r->log);
}

static const char* mode_name(enum app_mode m) {
  return m == MODE_APP_INTERPOSED ? "interposed" : m == MODE_APP_FALLBACK ? "fallback" : "standalone";
}

/* The run ended by itself with status 0. */
static void expect_clean_exit(const struct app_run* r, const char* what) {
  cr_assert(!r->timed_out, "%s: the application hung (killed after %.1f s)\nstdout:\n%s\nstderr:\n%s",
            what, r->seconds, r->out, r->err);
  cr_assert(r->exited && r->code == 0,
            "%s: the application did not exit cleanly (exit %d, signal %d)\nstdout:\n%s\nstderr:\n%s",
            what, r->code, r->signaled, r->out, r->err);
}

/* ================================================================ text helpers */

struct lines {
  char** v;
  int n;
};

static struct lines split_lines(const char* text) {
  struct lines l = {NULL, 0};
  int cap = 0;
  const char* p = text;
  while (*p) {
    const char* nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    if (l.n == cap) {
      cap = cap ? 2 * cap : 64;
      l.v = realloc(l.v, (size_t)cap * sizeof *l.v);
      cr_assert_not_null(l.v);
    }
    l.v[l.n] = strndup(p, len);
    l.n++;
    p += len + (nl ? 1 : 0);
  }
  return l;
}

static void free_lines(struct lines* l) {
  for (int i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
}

/* The application's "CALL ..." lines, without the prefix. */
static struct lines app_calls(const char* out) {
  struct lines all = split_lines(out), calls = {NULL, 0};
  calls.v = calloc((size_t)all.n + 1, sizeof *calls.v);
  for (int i = 0; i < all.n; i++)
    if (!strncmp(all.v[i], "CALL ", 5)) calls.v[calls.n++] = strdup(all.v[i] + 5);
  free_lines(&all);
  return calls;
}

/* First word of a line (the function name), in a static buffer. */
static const char* fname(const char* line) {
  static char buf[128];
  size_t n = strcspn(line, " ");
  if (n >= sizeof buf) n = sizeof buf - 1;
  memcpy(buf, line, n);
  buf[n] = 0;
  return buf;
}

static int count_name(const struct lines* l, const char* name) {
  int c = 0;
  for (int i = 0; i < l->n; i++) c += !strcmp(fname(l->v[i]), name);
  return c;
}

static int has_line(const char* text, const char* line) {
  struct lines l = split_lines(text);
  int found = 0;
  for (int i = 0; i < l.n && !found; i++) found = !strcmp(l.v[i], line);
  free_lines(&l);
  return found;
}

/* Some line contains both needles (needle2 may be NULL). */
static int line_with(const char* text, const char* needle1, const char* needle2) {
  struct lines l = split_lines(text);
  int found = 0;
  for (int i = 0; i < l.n && !found; i++)
    found = strstr(l.v[i], needle1) && (!needle2 || strstr(l.v[i], needle2));
  free_lines(&l);
  return found;
}

/* Functions snapccl itself calls on the real library (deciding the mode, attaching). */
static int internal_call(const char* name) {
  static const char* const names[] = {"ncclGetVersion", "ncclCommGetAsyncError", "ncclCommCount",
                                      "ncclCommUserRank", "ncclCommCuDevice"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(name, names[i])) return 1;
  return 0;
}

/* Every call the application made reached the fake, in order and with the same
 * arguments; and no function other than snapccl's own queries reached it more often
 * than the application called it. */
static void expect_forwarded(const struct app_run* r, const char* what) {
  struct lines calls = app_calls(r->out), log = split_lines(r->log);
  cr_assert_gt(calls.n, 0, "%s: the application made no call\nstdout:\n%s\nstderr:\n%s", what,
               r->out, r->err);
  int pos = 0;
  for (int i = 0; i < calls.n; i++) {
    int j = pos;
    while (j < log.n && strcmp(log.v[j], calls.v[i])) j++;
    cr_assert_lt(j, log.n,
                 "%s: call #%d \"%s\" did not reach the real library with these arguments "
                 "(after its log line %d)\nfake's log:\n%s\nstderr:\n%s",
                 what, i, calls.v[i], pos, r->log, r->err);
    pos = j + 1;
  }
  for (int i = 0; i < calls.n; i++) {
    char name[128];
    snprintf(name, sizeof name, "%s", fname(calls.v[i]));
    if (internal_call(name)) continue;
    int want = count_name(&calls, name), got = count_name(&log, name);
    cr_assert_eq(got, want, "%s: %s reached the real library %d times, the application called it "
                 "%d times\nfake's log:\n%s", what, name, got, want, r->log);
  }
  for (int i = 0; i < log.n; i++) {
    char name[128];
    snprintf(name, sizeof name, "%s", fname(log.v[i]));
    cr_assert(internal_call(name) || count_name(&calls, name) > 0,
              "%s: the real library received %s, which the application never called:\n%s", what,
              log.v[i], r->log);
  }
  free_lines(&calls);
  free_lines(&log);
}

/* Every RET line is ncclSuccess, except where the fake fails on purpose: count 777 ->
 * ncclInvalidArgument, ncclAlltoAll -> count % 8, ncclCommRevoke -> flags & 7. */
static void expect_results(const struct app_run* r, const char* what) {
  struct lines l = split_lines(r->out);
  const char* last = "";
  for (int i = 0; i < l.n; i++) {
    if (!strncmp(l.v[i], "CALL ", 5)) {
      last = l.v[i] + 5;
      continue;
    }
    char name[128];
    int code = -1;
    if (sscanf(l.v[i], "RET %127s %d", name, &code) != 2) continue;
    int want = 0;
    if (strstr(last, " count=777 ")) want = ncclInvalidArgument;
    if (!strcmp(name, "ncclAlltoAll")) {
      size_t n = 0;
      const char* c = strstr(last, " count=");
      cr_assert_not_null(c);
      sscanf(c, " count=%zu", &n);
      want = (int)(n % 8);
    }
    if (!strcmp(name, "ncclCommRevoke")) {
      int flags = 0;
      const char* f = strstr(last, " flags=");
      cr_assert_not_null(f);
      sscanf(f, " flags=%d", &flags);
      want = flags & 7;
    }
    cr_assert_eq(code, want, "%s: %s (\"%s\") returned %d, the real library returned %d\n"
                 "stderr:\n%s", what, name, last, code, want, r->err);
  }
  free_lines(&l);
}

static char* id_hex(const char head[8]) {
  static char buf[32];
  unsigned long long v;
  memcpy(&v, head, sizeof v);
  snprintf(buf, sizeof buf, "%016llx", v);
  return buf;
}

/* ================================================================ 1. mode detection */

TestSuite(mode, .timeout = 30);

static void check_mode(enum app_mode mode, int want_version, const char* want_log) {
  struct app_run r;
  run_app(&r, mode, "version", 10, NULL);
  expect_clean_exit(&r, mode_name(mode));
  char want[64];
  snprintf(want, sizeof want, "VERSION %d", want_version);
  cr_assert(has_line(r.out, want), "%s: expected \"%s\"\nstdout:\n%s\nstderr:\n%s",
            mode_name(mode), want, r.out, r.err);
  cr_assert(line_with(r.err, "SNAPCCL INFO", want_log),
            "%s: no INFO line \"%s\"\nstderr:\n%s", mode_name(mode), want_log, r.err);
  if (mode != MODE_APP_STANDALONE) {
    cr_assert(line_with(r.err, want_log, "(NCCL 22899)"), "%s: log does not name the real "
              "library's version\nstderr:\n%s", mode_name(mode), r.err);
    expect_forwarded(&r, mode_name(mode)); /* the application's ncclGetVersion */
  } else {
    cr_assert_str_empty(r.log, "standalone: the fake was called:\n%s", r.log);
  }
  run_free(&r);
}

Test(mode, interposed) { check_mode(MODE_APP_INTERPOSED, FAKE_VERSION, "snapccl interposed over"); }

Test(mode, fallback) {
  check_mode(MODE_APP_FALLBACK, FAKE_VERSION, "snapccl fallback over");
  /* The library named is the fake. */
  struct app_run r;
  run_app(&r, MODE_APP_FALLBACK, "version", 10, NULL);
  cr_assert(line_with(r.err, "snapccl fallback over", fake_path()), "stderr:\n%s", r.err);
  run_free(&r);
}

Test(mode, standalone) { check_mode(MODE_APP_STANDALONE, NCCL_VERSION_CODE, "snapccl standalone"); }

/* SNAPCCL_NCCL_LIB naming something that cannot serve: standalone, a WARN, no crash. */
static void check_bad_lib(const char* lib, const char* want_warn) {
  struct app_run r;
  char kv[1200];
  snprintf(kv, sizeof kv, "SNAPCCL_NCCL_LIB=%s", lib);
  run_app(&r, MODE_APP_STANDALONE, "version", 10, kv, NULL);
  expect_clean_exit(&r, lib);
  cr_assert(has_line(r.out, "VERSION 22707"), "%s: expected standalone's version\nstdout:\n%s"
            "\nstderr:\n%s", lib, r.out, r.err);
  cr_assert(line_with(r.err, "SNAPCCL WARN", want_warn), "%s: no WARN \"%s\"\nstderr:\n%s", lib,
            want_warn, r.err);
  cr_assert(line_with(r.err, "snapccl standalone", NULL), "%s: not standalone\nstderr:\n%s", lib,
            r.err);
  cr_assert_str_empty(r.log, "%s: the fake was called:\n%s", lib, r.log);
  run_free(&r);
}

Test(mode, lib_missing) { check_bad_lib("/nonexistent/dir/libnccl.so.2", "could not be loaded"); }

Test(mode, lib_is_our_libnccl) { check_bad_lib(SNAPCCL_NCCL_LIB_PATH, "is not a real NCCL"); }

Test(mode, lib_is_libsnapccl) { check_bad_lib(SNAPCCL_LIB, "is not a real NCCL"); }

/* Preloaded over snapccl's own libnccl.so.2: two copies of snapccl, no real NCCL. */
Test(mode, preload_over_snapccl) {
  struct app_run r;
  char kv[1200];
  snprintf(kv, sizeof kv, "LD_PRELOAD=%s", SNAPCCL_LIB);
  run_app(&r, MODE_APP_STANDALONE, "version", 10, kv, NULL);
  expect_clean_exit(&r, "preload over snapccl");
  cr_assert(has_line(r.out, "VERSION 22707"), "stdout:\n%s\nstderr:\n%s", r.out, r.err);
  cr_assert(line_with(r.err, "snapccl standalone", NULL), "stderr:\n%s", r.err);
  run_free(&r);
}

/* ================================================================ 2. forwarding */

TestSuite(forward, .timeout = 30);

static void check_forward_all(enum app_mode mode) {
  const char* what = mode_name(mode);
  struct app_run r;
  run_app(&r, mode, "forward", 10, NULL);
  expect_clean_exit(&r, what);
  cr_assert(has_line(r.out, "DONE"), "%s: did not finish\nstdout:\n%s", what, r.out);
  expect_forwarded(&r, what);
  expect_results(&r, what);

  char want[64];
  snprintf(want, sizeof want, "ID %s", id_hex("FAKENCCL"));
  cr_assert(has_line(r.out, "VERSION 22899"), "%s: stdout:\n%s", what, r.out);
  cr_assert(has_line(r.out, want), "%s: the unique id is not the real library's\n%s", what, r.out);
  /* Queries answered by the fake's communicators (rank and device from its init). */
  cr_assert(has_line(r.out, "QUERY c0 count=4 rank=1 dev=1"), "%s: stdout:\n%s", what, r.out);
  cr_assert(has_line(r.out, "QUERY c2 count=4 rank=3 dev=3"), "%s: stdout:\n%s", what, r.out);
  cr_assert(has_line(r.out, "QUERY all1 count=2 rank=1 dev=5"), "%s: stdout:\n%s", what, r.out);
  cr_assert(has_line(r.out, "QUERY c5 count=3 rank=0 dev=2"), "%s: stdout:\n%s", what, r.out);
  cr_assert(has_line(r.out, "REDOP 5"), "%s: stdout:\n%s", what, r.out);
  cr_assert(has_line(r.out, "SIM 12.50"), "%s: ncclGroupSimulateEnd's estimate\n%s", what, r.out);
  /* The real library's texts, after its failure. */
  cr_assert(has_line(r.out, "LASTERR fake last error"), "%s: stdout:\n%s\nstderr:\n%s", what,
            r.out, r.err);
  cr_assert(has_line(r.out, "ERRSTR fake: 4"), "%s: stdout:\n%s", what, r.out);
  /* The 2.28 functions reached the fake too (through the trampolines in fallback). */
  cr_assert(strstr(r.log, "ncclAlltoAll send=0x5000 recv=0x5100 count=1003 dtype=7 "),
            "%s: log:\n%s", what, r.log);
  cr_assert(strstr(r.log, " flags=6"), "%s: log:\n%s", what, r.log);
  run_free(&r);
}

Test(forward, interposed_all_calls) { check_forward_all(MODE_APP_INTERPOSED); }
Test(forward, fallback_all_calls) { check_forward_all(MODE_APP_FALLBACK); }

/* A communicator that snapccl could not attach to (no GPU) belongs to the real library:
 * ncclCommGetAsyncError must report what the real library says (ncclSuccess), not
 * snapccl's failed attach. */
static void check_async_error(enum app_mode mode) {
  struct app_run r;
  run_app(&r, mode, "forward", 10, NULL);
  expect_clean_exit(&r, mode_name(mode));
  cr_assert(has_line(r.out, "ASYNC c0 0") && has_line(r.out, "ASYNC c2 0"),
            "%s: ncclCommGetAsyncError on a real-library communicator did not return the real "
            "library's ncclSuccess\nstdout:\n%s\nstderr:\n%s", mode_name(mode), r.out, r.err);
  run_free(&r);
}

Test(forward, interposed_async_error) { check_async_error(MODE_APP_INTERPOSED); }
Test(forward, fallback_async_error) { check_async_error(MODE_APP_FALLBACK); }

/* The 2.28 functions as the very first calls: the trampolines resolve the real library
 * on first use and must pass every argument through (result = count % 8 / flags & 7). */
Test(forward, extras_first_fallback) {
  struct app_run r;
  run_app(&r, MODE_APP_FALLBACK, "extras", 10, NULL);
  expect_clean_exit(&r, "extras fallback");
  expect_forwarded(&r, "extras fallback");
  expect_results(&r, "extras fallback");
  cr_assert(has_line(r.out, "RET ncclAlltoAll 3") && has_line(r.out, "RET ncclCommRevoke 6") &&
                has_line(r.out, "RET ncclAlltoAll 2"),
            "stdout:\n%s", r.out);
  cr_assert(has_line(r.out, "VERSION 22899"), "stdout:\n%s", r.out);
  run_free(&r);
}

Test(forward, extras_interposed) {
  struct app_run r;
  run_app(&r, MODE_APP_INTERPOSED, "extras", 10, NULL);
  expect_clean_exit(&r, "extras interposed");
  expect_forwarded(&r, "extras interposed");
  expect_results(&r, "extras interposed");
  run_free(&r);
}

/* No real library: the trampolines answer ncclInvalidUsage, with a WARN. */
Test(forward, extras_standalone) {
  struct app_run r;
  run_app(&r, MODE_APP_STANDALONE, "extras", 10, NULL);
  expect_clean_exit(&r, "extras standalone");
  cr_assert(has_line(r.out, "RET ncclAlltoAll 5") && has_line(r.out, "RET ncclCommRevoke 5") &&
                has_line(r.out, "DONE") && has_line(r.out, "VERSION 22707"),
            "stdout:\n%s\nstderr:\n%s", r.out, r.err);
  cr_assert(line_with(r.err, "SNAPCCL WARN", "newer than snapccl"), "stderr:\n%s", r.err);
  cr_assert_str_empty(r.log, "log:\n%s", r.log);
  run_free(&r);
}

/* Non-blocking init by the real library, then NCCL's documented wait loop on
 * ncclCommGetAsyncError: it must end (the real library reports success at once). */
static void check_nb_poll(enum app_mode mode) {
  struct app_run r;
  run_app(&r, mode, "nb-poll", 10, NULL);
  expect_clean_exit(&r, mode_name(mode));
  cr_assert(has_line(r.out, "RET ncclCommInitRankConfig 7"), "%s: stdout:\n%s", mode_name(mode),
            r.out);
  cr_assert(line_with(r.out, "ASYNC 0 after", NULL),
            "%s: polling ncclCommGetAsyncError on a non-blocking real communicator never saw "
            "ncclSuccess (the real library reports success)\nstdout:\n%s\nstderr:\n%s",
            mode_name(mode), r.out, r.err);
  cr_assert(has_line(r.out, "DONE"), "stdout:\n%s", r.out);
  expect_forwarded(&r, mode_name(mode));
  run_free(&r);
}

Test(forward, interposed_nonblocking_poll) { check_nb_poll(MODE_APP_INTERPOSED); }
Test(forward, fallback_nonblocking_poll) { check_nb_poll(MODE_APP_FALLBACK); }

/* Non-blocking init, then ncclCommAbort at once: must return, and reach the fake. */
static void check_nb_abort(enum app_mode mode) {
  struct app_run r;
  run_app(&r, mode, "nb-abort", 5, NULL);
  expect_clean_exit(&r, mode_name(mode));
  cr_assert(has_line(r.out, "DONE") && has_line(r.out, "RET ncclCommAbort 0"),
            "stdout:\n%s\nstderr:\n%s", r.out, r.err);
  expect_forwarded(&r, mode_name(mode));
  run_free(&r);
}

Test(forward, interposed_nonblocking_abort) { check_nb_abort(MODE_APP_INTERPOSED); }
Test(forward, fallback_nonblocking_abort) { check_nb_abort(MODE_APP_FALLBACK); }

/* ================================================================ 3. counters */

TestSuite(counters, .timeout = 30);

static void check_counts(enum app_mode mode) {
  const char* what = mode_name(mode);
  struct app_run r;
  run_app(&r, mode, "counts", 10, NULL);
  expect_clean_exit(&r, what);
  expect_forwarded(&r, what);
  expect_results(&r, what);
  struct lines log = split_lines(r.log);
  cr_assert_eq(count_name(&log, "ncclAllReduce"), 6, "%s: log:\n%s", what, r.log);
  cr_assert_eq(count_name(&log, "ncclAllGather"), 4, "%s: log:\n%s", what, r.log);
  cr_assert_eq(count_name(&log, "ncclReduceScatter"), 1, "%s: log:\n%s", what, r.log);
  free_lines(&log);
  /* Attaching failed (no GPU), so everything was forwarded, by size class:
   * 4 x 1 KiB + 2 x 4000 B AllReduce, 4 x 64 B AllGather, 1 x 64 B ReduceScatter. */
  cr_assert(line_with(r.err, "not attached", NULL), "%s: stderr:\n%s", what, r.err);
  cr_assert(line_with(r.err, "allreduce: 0 taken by snapccl, 6 forwarded to NCCL",
                      " 1024B:0/4 2048B:0/2"),
            "%s: no AllReduce counter line\nstderr:\n%s", what, r.err);
  cr_assert(line_with(r.err, "allgather: 0 taken by snapccl, 4 forwarded to NCCL", " 64B:0/4"),
            "%s: no AllGather counter line\nstderr:\n%s", what, r.err);
  cr_assert(line_with(r.err, "reducescatter: 0 taken by snapccl, 1 forwarded to NCCL", " 64B:0/1"),
            "%s: no ReduceScatter counter line\nstderr:\n%s", what, r.err);
  run_free(&r);
}

Test(counters, interposed) { check_counts(MODE_APP_INTERPOSED); }
Test(counters, fallback) { check_counts(MODE_APP_FALLBACK); }

/* ================================================================ 4. unique ids */

TestSuite(uniqueid, .timeout = 30);

static void check_uniqueid(enum app_mode mode, int shared) {
  char what[64];
  snprintf(what, sizeof what, "%s%s", mode_name(mode), shared ? " SNAPCCL_SHARED_GPU=1" : "");
  struct app_run r;
  run_app(&r, mode, "uniqueid", 10, shared ? "SNAPCCL_SHARED_GPU=1" : "SNAPCCL_SHARED_GPU=0", NULL);
  expect_clean_exit(&r, what);
  cr_assert(has_line(r.out, "RET ncclGetUniqueId 0"), "%s: stdout:\n%s\nstderr:\n%s", what, r.out,
            r.err);
  char want[64];
  if (shared) {
    snprintf(want, sizeof want, "ID %016llx", (unsigned long long)SNAPCCL_ID_MAGIC);
    cr_assert(has_line(r.out, want), "%s: not a snapccl id\nstdout:\n%s", what, r.out);
    cr_assert_null(strstr(r.log, "ncclGetUniqueId"), "%s: the real library made the id:\n%s",
                   what, r.log);
  } else {
    snprintf(want, sizeof want, "ID %s", id_hex("FAKENCCL"));
    cr_assert(has_line(r.out, want), "%s: not the real library's id\nstdout:\n%s", what, r.out);
    expect_forwarded(&r, what);
  }
  run_free(&r);
}

Test(uniqueid, interposed_forwarded) { check_uniqueid(MODE_APP_INTERPOSED, 0); }
Test(uniqueid, interposed_shared_gpu) { check_uniqueid(MODE_APP_INTERPOSED, 1); }
Test(uniqueid, fallback_forwarded) { check_uniqueid(MODE_APP_FALLBACK, 0); }
Test(uniqueid, fallback_shared_gpu) { check_uniqueid(MODE_APP_FALLBACK, 1); }

/* ================================================================ 5. registry */

TestSuite(registry, .timeout = 60);

#define NH 6000
static char g_keys[NH];

static struct snapccl_comm* fake_comm(size_t i, int gen) {
  return (struct snapccl_comm*)(uintptr_t)(0x100000u + (uintptr_t)i * 64u + (uintptr_t)gen * 16u);
}

Test(registry, empty) {
  cr_assert_eq(snapccl_registry_count(), 0);
  cr_assert_null(snapccl_registry_find(&g_keys[0]));
  cr_assert_null(snapccl_registry_find(NULL));
  cr_assert_null(snapccl_registry_remove(&g_keys[0]));
  cr_assert_eq(snapccl_registry_count(), 0);
}

Test(registry, many_handles) {
  for (size_t i = 0; i < NH; i++) {
    cr_assert_eq(snapccl_registry_add(&g_keys[i], fake_comm(i, 0)), ncclSuccess);
    if (i % 997 == 0) /* everything added so far survives each growth */
      for (size_t j = 0; j <= i; j++)
        cr_assert_eq(snapccl_registry_find(&g_keys[j]), fake_comm(j, 0), "handle %zu after %zu adds",
                     j, i + 1);
  }
  cr_assert_eq(snapccl_registry_count(), NH);
  for (size_t i = 0; i < NH; i++) cr_assert_eq(snapccl_registry_find(&g_keys[i]), fake_comm(i, 0));
  cr_assert_null(snapccl_registry_find(&g_keys[NH - 1] + 1));

  /* Remove the odd ones: they are gone, the even ones still found past the tombstones. */
  for (size_t i = 1; i < NH; i += 2)
    cr_assert_eq(snapccl_registry_remove(&g_keys[i]), fake_comm(i, 0));
  cr_assert_eq(snapccl_registry_count(), NH / 2);
  for (size_t i = 0; i < NH; i++)
    cr_assert_eq(snapccl_registry_find(&g_keys[i]), i % 2 ? NULL : fake_comm(i, 0), "handle %zu", i);
  for (size_t i = 1; i < NH; i += 2) cr_assert_null(snapccl_registry_remove(&g_keys[i]));

  /* Re-add them with other values. */
  for (size_t i = 1; i < NH; i += 2)
    cr_assert_eq(snapccl_registry_add(&g_keys[i], fake_comm(i, 1)), ncclSuccess);
  cr_assert_eq(snapccl_registry_count(), NH);
  for (size_t i = 0; i < NH; i++)
    cr_assert_eq(snapccl_registry_find(&g_keys[i]), fake_comm(i, i % 2), "handle %zu", i);

  /* Everything out. */
  for (size_t i = 0; i < NH; i++)
    cr_assert_eq(snapccl_registry_remove(&g_keys[i]), fake_comm(i, i % 2));
  cr_assert_eq(snapccl_registry_count(), 0);
  for (size_t i = 0; i < NH; i++) cr_assert_null(snapccl_registry_find(&g_keys[i]));
}

Test(registry, re_registration_replaces) {
  cr_assert_eq(snapccl_registry_add(&g_keys[5], fake_comm(5, 0)), ncclSuccess);
  cr_assert_eq(snapccl_registry_add(&g_keys[5], fake_comm(5, 2)), ncclSuccess);
  cr_assert_eq(snapccl_registry_count(), 1);
  cr_assert_eq(snapccl_registry_find(&g_keys[5]), fake_comm(5, 2));
  cr_assert_eq(snapccl_registry_remove(&g_keys[5]), fake_comm(5, 2));
  cr_assert_null(snapccl_registry_find(&g_keys[5]));
  cr_assert_eq(snapccl_registry_count(), 0);
}

/* Endless add/remove of fresh handles leaves only tombstones behind: lookups and adds
 * must stay correct and terminate (the table is cleaned, not filled). */
Test(registry, churn_tombstones) {
  for (size_t i = 0; i < 16; i++)
    cr_assert_eq(snapccl_registry_add(&g_keys[NH - 1 - i], fake_comm(NH - 1 - i, 0)), ncclSuccess);
  for (int round = 0; round < 40; round++)
    for (size_t i = 0; i < NH - 16; i++) {
      cr_assert_eq(snapccl_registry_add(&g_keys[i], fake_comm(i, round % 3)), ncclSuccess);
      cr_assert_eq(snapccl_registry_find(&g_keys[i]), fake_comm(i, round % 3));
      cr_assert_eq(snapccl_registry_remove(&g_keys[i]), fake_comm(i, round % 3));
      if (i % 512 == 0) cr_assert_null(snapccl_registry_find(&g_keys[i]));
    }
  cr_assert_eq(snapccl_registry_count(), 16);
  for (size_t i = 0; i < 16; i++)
    cr_assert_eq(snapccl_registry_find(&g_keys[NH - 1 - i]), fake_comm(NH - 1 - i, 0));
}

#define NTHREADS 8
#define PER_THREAD 700
#define NSTABLE 64

static atomic_int g_stop;
static atomic_int g_errors;

struct worker {
  int id;
};

static void* writer(void* p) {
  int id = ((struct worker*)p)->id;
  size_t base = NSTABLE + (size_t)id * PER_THREAD;
  for (int round = 0; round < 6; round++) {
    for (size_t i = base; i < base + PER_THREAD; i++)
      if (snapccl_registry_add(&g_keys[i], fake_comm(i, round % 4)) != ncclSuccess) g_errors++;
    for (size_t i = base; i < base + PER_THREAD; i++)
      if (snapccl_registry_find(&g_keys[i]) != fake_comm(i, round % 4)) g_errors++;
    for (size_t i = base + (size_t)(round & 1); i < base + PER_THREAD; i += 2)
      if (snapccl_registry_remove(&g_keys[i]) != fake_comm(i, round % 4)) g_errors++;
    for (size_t i = base; i < base + PER_THREAD; i++) {
      int removed = ((i - base) & 1) == (size_t)(round & 1);
      struct snapccl_comm* want = removed ? NULL : fake_comm(i, round % 4);
      if (snapccl_registry_find(&g_keys[i]) != want) g_errors++;
    }
    for (size_t i = base; i < base + PER_THREAD; i++) snapccl_registry_remove(&g_keys[i]);
  }
  return NULL;
}

static void* reader(void* p) {
  (void)p;
  while (!atomic_load(&g_stop))
    for (size_t i = 0; i < NSTABLE; i++)
      if (snapccl_registry_find(&g_keys[i]) != fake_comm(i, 3)) g_errors++;
  return NULL;
}

Test(registry, threads) {
  cr_assert_lt(NSTABLE + NTHREADS * PER_THREAD, NH);
  for (size_t i = 0; i < NSTABLE; i++)
    cr_assert_eq(snapccl_registry_add(&g_keys[i], fake_comm(i, 3)), ncclSuccess);
  pthread_t w[NTHREADS], rd[2];
  struct worker args[NTHREADS];
  for (int i = 0; i < 2; i++) cr_assert_eq(pthread_create(&rd[i], NULL, reader, NULL), 0);
  for (int i = 0; i < NTHREADS; i++) {
    args[i].id = i;
    cr_assert_eq(pthread_create(&w[i], NULL, writer, &args[i]), 0);
  }
  for (int i = 0; i < NTHREADS; i++) pthread_join(w[i], NULL);
  atomic_store(&g_stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(rd[i], NULL);
  cr_assert_eq(atomic_load(&g_errors), 0, "%d wrong answers under concurrency",
               atomic_load(&g_errors));
  cr_assert_eq(snapccl_registry_count(), NSTABLE);
  for (size_t i = 0; i < NSTABLE; i++) cr_assert_eq(snapccl_registry_remove(&g_keys[i]), fake_comm(i, 3));
  cr_assert_eq(snapccl_registry_count(), 0);
}

/* ================================================================ 6. forward target */

TestSuite(forward_target, .timeout = 30);

static void use_lib(const char* lib) {
  if (lib) setenv("SNAPCCL_NCCL_LIB", lib, 1);
  else unsetenv("SNAPCCL_NCCL_LIB");
  snapccl_env_reload();
  snapccl_real_reset();
}

#define SENTINEL ((ncclComm_t)(uintptr_t)0x5e47)
#define HANDLE_A ((ncclComm_t)(uintptr_t)0x7f00aaaa0000ull)
#define HANDLE_B ((ncclComm_t)(uintptr_t)0x7f00bbbb0000ull)

Test(forward_target, standalone_returns_0) {
  use_lib(NULL);
  cr_assert_eq(snapccl_mode(), MODE_STANDALONE);
  cr_assert_null(snapccl_real());
  ncclComm_t rh = SENTINEL;
  /* A handle nobody knows, NULL, our own communicator, one with a real handle. */
  cr_assert_eq(snapccl_forward_target(HANDLE_A, &rh), 0);
  cr_assert_eq(snapccl_forward_target(NULL, &rh), 0);
  struct snapccl_comm *own, *adopted;
  cr_assert_eq(snapccl_comm_alloc(&own), ncclSuccess);
  cr_assert_eq(snapccl_comm_alloc(&adopted), ncclSuccess);
  adopted->real_comm = HANDLE_B;
  cr_assert_eq(snapccl_registry_add(own, own), ncclSuccess);
  cr_assert_eq(snapccl_registry_add(HANDLE_B, adopted), ncclSuccess);
  cr_assert_eq(snapccl_forward_target((ncclComm_t)own, &rh), 0);
  cr_assert_eq(snapccl_forward_target(HANDLE_B, &rh), 0);
  cr_assert_eq(rh, SENTINEL, "rh was written in standalone mode");
  snapccl_registry_remove(own);
  snapccl_registry_remove(HANDLE_B);
  adopted->real_comm = NULL;
  snapccl_comm_free(own);
  snapccl_comm_free(adopted);
}

Test(forward_target, fallback_in_process) {
  use_lib(fake_path());
  cr_assert_eq(snapccl_mode(), MODE_FALLBACK, "mode %s", snapccl_mode_name(snapccl_mode()));
  const struct snapccl_real* real = snapccl_real();
  cr_assert_not_null(real);
  int v = 0;
  cr_assert_not_null(real->ncclGetVersion);
  cr_assert_eq(real->ncclGetVersion(&v), ncclSuccess);
  cr_assert_eq(v, FAKE_VERSION);
  cr_assert_str_eq(snapccl_real_path(), fake_path());

  ncclComm_t rh = SENTINEL;
  /* Unknown: the real library's, passed as is. */
  cr_assert_eq(snapccl_forward_target(HANDLE_A, &rh), 1);
  cr_assert_eq(rh, HANDLE_A);
  /* Ours alone (ranks sharing a GPU): not forwarded. */
  struct snapccl_comm *own, *adopted, *underneath;
  cr_assert_eq(snapccl_comm_alloc(&own), ncclSuccess);
  cr_assert_eq(snapccl_registry_add(own, own), ncclSuccess);
  rh = SENTINEL;
  cr_assert_eq(snapccl_forward_target((ncclComm_t)own, &rh), 0);
  /* Adopted from the real library: forwarded with the real handle. */
  cr_assert_eq(snapccl_comm_alloc(&adopted), ncclSuccess);
  adopted->real_comm = HANDLE_B;
  cr_assert_eq(snapccl_registry_add(HANDLE_B, adopted), ncclSuccess);
  cr_assert_eq(snapccl_forward_target(HANDLE_B, &rh), 1);
  cr_assert_eq(rh, HANDLE_B);
  /* Ours with a real communicator underneath: forwarded with that one. */
  cr_assert_eq(snapccl_comm_alloc(&underneath), ncclSuccess);
  underneath->real_comm = HANDLE_A;
  cr_assert_eq(snapccl_registry_add(underneath, underneath), ncclSuccess);
  rh = SENTINEL;
  cr_assert_eq(snapccl_forward_target((ncclComm_t)underneath, &rh), 1);
  cr_assert_eq(rh, HANDLE_A);

  snapccl_registry_remove(own);
  snapccl_registry_remove(HANDLE_B);
  snapccl_registry_remove(underneath);
  adopted->real_comm = NULL;
  underneath->real_comm = NULL;
  snapccl_comm_free(own);
  snapccl_comm_free(adopted);
  snapccl_comm_free(underneath);
  use_lib(NULL);
  cr_assert_eq(snapccl_mode(), MODE_STANDALONE);
}
