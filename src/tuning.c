/* The tuning file's parser and lookups (format: tuning.h). Strict on purpose: a file
 * that is cut, from another version or host, or not what the tool writes is refused as
 * a whole with the reason, never half used, so every rank either takes it or not. */
#include "tuning.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coll.h"
#include "identity.h"

#define MAX_LINE 2048

void snapccl_tuning_key(char* out, size_t len, const char* gpu_model, const char* link, int ngpus,
                        int world, int per_gpu, int procs) {
  char model[96];
  size_t n = 0;
  /* "NVIDIA H200" -> "NVIDIA_H200": a key is one word per field. */
  for (const char* p = gpu_model; *p && n + 1 < sizeof model; p++)
    model[n++] = isalnum((unsigned char)*p) || *p == '-' || *p == '.' ? *p : '_';
  model[n] = 0;
  snprintf(out, len, "gpu=%s link=%s gpus=%d world=%d per_gpu=%d procs=%d", n ? model : "unknown",
           link, ngpus, world, per_gpu, procs);
}

static const char* const coll_names[COLL_NKINDS] = {"allreduce", "allgather", "reducescatter"};
static const char* const mode_names[] = {"eager", "graph"};

static int lookup(const char* const* names, int n, const char* s) {
  for (int i = 0; i < n; i++)
    if (!strcmp(names[i], s)) return i;
  return -1;
}

static int parse_u64(const char* s, uint64_t* out) {
  if (!isdigit((unsigned char)*s)) return 0;
  char* end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end || errno == ERANGE) return 0;
  *out = v;
  return 1;
}

static int valid_name(const char* s, size_t n) {
  if (n == 0 || n >= SNAPCCL_TUNING_NAME_LEN) return 0;
  for (size_t i = 0; i < n; i++)
    if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_') return 0;
  return 1;
}

/* "row <coll> <dsize> <mode> <lo> <hi> <winner> <name>=<us>..." into r; 0 and why if not. */
static int parse_row(char* line, struct snapccl_tuning_row* r, char* why, size_t wlen) {
  char* save = NULL;
  char* f[7];
  strtok_r(line, " \t", &save); /* "row" */
  for (int i = 0; i < 6; i++)
    if (!(f[i] = strtok_r(NULL, " \t", &save))) return snprintf(why, wlen, "a row is cut short"), 0;
  int coll = lookup(coll_names, COLL_NKINDS, f[0]);
  if (coll < 0) return snprintf(why, wlen, "unknown collective \"%.40s\"", f[0]), 0;
  uint64_t dsize, lo, hi;
  if (!parse_u64(f[1], &dsize) || (dsize != 1 && dsize != 2 && dsize != 4 && dsize != 8))
    return snprintf(why, wlen, "dtype size \"%.20s\" is not 1, 2, 4 or 8", f[1]), 0;
  int mode = lookup(mode_names, 2, f[2]);
  if (mode < 0) return snprintf(why, wlen, "mode \"%.20s\" is not eager or graph", f[2]), 0;
  if (!parse_u64(f[3], &lo) || !parse_u64(f[4], &hi) || lo > hi)
    return snprintf(why, wlen, "size range \"%.24s %.24s\" is not lo <= hi in bytes", f[3], f[4]), 0;
  const char* winner = f[5];
  *r = (struct snapccl_tuning_row){.coll = (uint8_t)coll, .dsize = (uint8_t)dsize,
                                   .mode = (uint8_t)mode, .lo = lo, .hi = hi};
  int best = -1;
  while ((f[6] = strtok_r(NULL, " \t", &save))) {
    char* eq = strchr(f[6], '=');
    if (!eq || !valid_name(f[6], (size_t)(eq - f[6])))
      return snprintf(why, wlen, "\"%.40s\" is not <algorithm>=<microseconds>", f[6]), 0;
    if (r->n == SNAPCCL_TUNING_MAX_ALGOS)
      return snprintf(why, wlen, "a row has more than %d times", SNAPCCL_TUNING_MAX_ALGOS), 0;
    char* end;
    errno = 0;
    double us = strtod(eq + 1, &end);
    /* !(us > 0) also refuses NaN. */
    if (end == eq + 1 || *end || errno == ERANGE || !(us > 0) || !isfinite(us) || us > 1e9)
      return snprintf(why, wlen, "time \"%.40s\" is not a positive number of microseconds", f[6]), 0;
    *eq = 0;
    for (int i = 0; i < r->n; i++)
      if (!strcmp(r->name[i], f[6])) return snprintf(why, wlen, "%.31s is timed twice in a row", f[6]), 0;
    memcpy(r->name[r->n], f[6], (size_t)(eq - f[6]) + 1);
    r->us[r->n] = us;
    if (best < 0 || us < r->us[best]) best = r->n;
    r->n++;
  }
  if (!r->n) return snprintf(why, wlen, "a row has no times"), 0;
  if (strcmp(winner, r->name[best]))
    return snprintf(why, wlen, "a row names %.31s the winner, but %.31s has the least time", winner,
                    r->name[best]), 0;
  return 1;
}

static int row_order(const void* pa, const void* pb) {
  const struct snapccl_tuning_row *a = pa, *b = pb;
  if (a->coll != b->coll) return a->coll < b->coll ? -1 : 1;
  if (a->dsize != b->dsize) return a->dsize < b->dsize ? -1 : 1;
  if (a->mode != b->mode) return a->mode < b->mode ? -1 : 1;
  return a->lo < b->lo ? -1 : a->lo > b->lo;
}

static int same_group(const struct snapccl_tuning_row* a, const struct snapccl_tuning_row* b) {
  return a->coll == b->coll && a->dsize == b->dsize && a->mode == b->mode;
}

/* The next line of text (without its '\n') into buf; 0 at the end, -1 if too long. */
static int next_line(const char* text, size_t len, size_t* pos, char* buf, int* lineno) {
  if (*pos >= len) return 0;
  const char* s = text + *pos;
  const char* nl = memchr(s, '\n', len - *pos);
  size_t n = nl ? (size_t)(nl - s) : len - *pos;
  *pos += n + (nl ? 1 : 0);
  (*lineno)++;
  if (n >= MAX_LINE) return -1;
  memcpy(buf, s, n);
  buf[n] = 0;
  if (n && buf[n - 1] == '\r') buf[n - 1] = 0;
  return 1;
}

struct snapccl_tuning* snapccl_tuning_parse(const char* text, size_t len, const char* key,
                                            char* why, size_t wlen) {
  char line[MAX_LINE], reason[400] = "";
  size_t pos = 0;
  int lineno = 0, got, stage = 0; /* 0: version next, 1: topology next, 2: rows, 3: ended */
  int cap = 64;
  struct snapccl_tuning* t = calloc(1, sizeof *t + (size_t)cap * sizeof t->rows[0]);
  if (!t) return snprintf(why, wlen, "out of memory"), NULL;
  if (memchr(text, 0, len)) {
    snprintf(reason, sizeof reason, "it holds a NUL byte (not a text file)");
    goto bad;
  }
  while ((got = next_line(text, len, &pos, line, &lineno)) != 0) {
    if (got < 0) {
      snprintf(reason, sizeof reason, "line %d is longer than %d characters", lineno, MAX_LINE - 1);
      goto bad;
    }
    if (!line[0] || line[0] == '#') continue;
    if (stage == 3) {
      snprintf(reason, sizeof reason, "line %d follows \"end\"", lineno);
      goto bad;
    }
    if (stage == 0) {
      int v = 0, n = 0;
      if (sscanf(line, "snapccl-tuning %d%n", &v, &n) != 1 || line[n]) {
        snprintf(reason, sizeof reason, "it does not start with \"snapccl-tuning %d\"",
                 SNAPCCL_TUNING_VERSION);
        goto bad;
      }
      if (v != SNAPCCL_TUNING_VERSION) {
        snprintf(reason, sizeof reason, "it is version %d, this library reads version %d", v,
                 SNAPCCL_TUNING_VERSION);
        goto bad;
      }
      stage = 1;
    } else if (stage == 1) {
      if (strncmp(line, "topology ", 9) || strlen(line + 9) >= sizeof t->key) {
        snprintf(reason, sizeof reason, "line %d is not \"topology <key>\"", lineno);
        goto bad;
      }
      snprintf(t->key, sizeof t->key, "%s", line + 9);
      if (key && strcmp(t->key, key)) {
        snprintf(reason, sizeof reason, "it was measured on another topology (\"%.80s\", this is \"%.80s\")",
                 t->key, key);
        goto bad;
      }
      stage = 2;
    } else if (!strcmp(line, "end")) {
      stage = 3;
    } else if (!strncmp(line, "row ", 4)) {
      if (t->nrows == SNAPCCL_TUNING_MAX_ROWS) {
        snprintf(reason, sizeof reason, "it has more than %d rows", SNAPCCL_TUNING_MAX_ROWS);
        goto bad;
      }
      if (t->nrows == cap) {
        cap *= 2;
        struct snapccl_tuning* n = realloc(t, sizeof *t + (size_t)cap * sizeof t->rows[0]);
        if (!n) {
          snprintf(reason, sizeof reason, "out of memory");
          goto bad;
        }
        t = n;
      }
      char rwhy[160];
      if (!parse_row(line, &t->rows[t->nrows], rwhy, sizeof rwhy)) {
        snprintf(reason, sizeof reason, "line %d: %s", lineno, rwhy);
        goto bad;
      }
      t->nrows++;
    } else {
      snprintf(reason, sizeof reason, "line %d is neither a row nor \"end\"", lineno);
      goto bad;
    }
  }
  if (stage != 3) {
    snprintf(reason, sizeof reason, "%s", stage == 0 ? "it is empty" : "it is cut short (no \"end\" line)");
    goto bad;
  }
  qsort(t->rows, (size_t)t->nrows, sizeof t->rows[0], row_order);
  for (int i = 1; i < t->nrows; i++)
    if (same_group(&t->rows[i - 1], &t->rows[i]) && t->rows[i].lo <= t->rows[i - 1].hi) {
      snprintf(reason, sizeof reason, "two %s rows overlap at %llu bytes",
               coll_names[t->rows[i].coll], (unsigned long long)t->rows[i].lo);
      goto bad;
    }
  t->hash = snapccl_hash_bytes(text, len, 0x74756e65ull /* "tune" */);
  return t;
bad:
  snprintf(why, wlen, "%s", reason);
  free(t);
  return NULL;
}

int snapccl_tuning_read(const char* path, const char* key, struct snapccl_tuning** out, char* why,
                        size_t wlen) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block init */
  if (fd < 0) {
    if (errno == ENOENT) return -1;
    snprintf(why, wlen, "cannot open it: %s", strerror(errno));
    return 0;
  }
  struct stat st;
  char* text = NULL;
  int ok = 0;
  if (fstat(fd, &st) != 0) {
    snprintf(why, wlen, "cannot stat it: %s", strerror(errno));
  } else if (S_ISDIR(st.st_mode)) {
    snprintf(why, wlen, "it is a directory");
  } else if (!S_ISREG(st.st_mode)) {
    snprintf(why, wlen, "it is not a regular file");
  } else if (st.st_size > SNAPCCL_TUNING_MAX_BYTES) {
    snprintf(why, wlen, "it is %lld bytes, more than the %u read", (long long)st.st_size,
             SNAPCCL_TUNING_MAX_BYTES);
  } else if (!(text = malloc((size_t)st.st_size + 1))) {
    snprintf(why, wlen, "out of memory");
  } else {
    size_t n = 0;
    ssize_t r = 1;
    /* One byte more than stat said: a file growing meanwhile is caught as too large. */
    while (n <= (size_t)st.st_size && (r = read(fd, text + n, (size_t)st.st_size + 1 - n)) > 0)
      n += (size_t)r;
    if (r < 0) snprintf(why, wlen, "reading it failed: %s", strerror(errno));
    else if (n > (size_t)st.st_size) snprintf(why, wlen, "it grew while being read");
    else if ((*out = snapccl_tuning_parse(text, n, key, why, wlen))) {
      snprintf((*out)->source, sizeof (*out)->source, "%s", path);
      ok = 1;
    }
  }
  free(text);
  close(fd);
  return ok;
}

const struct snapccl_tuning_row* snapccl_tuning_find(const struct snapccl_tuning* t, int coll,
                                                     size_t dsize, int mode, uint64_t bytes) {
  if (!t) return NULL;
  const struct snapccl_tuning_row want = {.coll = (uint8_t)coll, .dsize = (uint8_t)dsize,
                                          .mode = (uint8_t)mode, .lo = bytes};
  /* The last row at or before `want` in the sort order. */
  int lo = 0, hi = t->nrows;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (row_order(&t->rows[mid], &want) <= 0) lo = mid + 1;
    else hi = mid;
  }
  if (lo == 0) return NULL;
  const struct snapccl_tuning_row* r = &t->rows[lo - 1];
  return same_group(r, &want) && bytes >= r->lo && bytes <= r->hi ? r : NULL;
}

int snapccl_tuning_time(const struct snapccl_tuning_row* row, const char* name, double* us) {
  for (int i = 0; row && i < row->n; i++)
    if (!strcmp(row->name[i], name)) {
      *us = row->us[i];
      return 1;
    }
  return 0;
}

int snapccl_tuning_default_path(const char* key, char* out, size_t len) {
  const char* xdg = getenv("XDG_CACHE_HOME");
  const char* home = getenv("HOME");
  unsigned long long h = (unsigned long long)snapccl_hash_bytes(key, strlen(key), 0);
  int n;
  if (xdg && xdg[0] == '/') n = snprintf(out, len, "%s/snapccl/tuning-%016llx.txt", xdg, h);
  else if (home && home[0] == '/') n = snprintf(out, len, "%s/.cache/snapccl/tuning-%016llx.txt", home, h);
  else return 0;
  return n > 0 && (size_t)n < len;
}
