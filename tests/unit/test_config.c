/* snapccl_config_parse and ncclConfig_t of older NCCL headers: a field is read only if
 * the struct's version had it and its size reaches it. Structs sit at the very end of
 * a page followed by an inaccessible one, so any read past them faults. */
#include <criterion/criterion.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "comm.h"
#include "error.h"
#include "nccl.h"

struct guarded {
  char* map;
  size_t maplen;
  void* p;
};

static struct guarded at_page_end(const void* src, size_t n) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  char* p = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert(p != MAP_FAILED);
  cr_assert_eq(mprotect(p + pg, pg, PROT_NONE), 0);
  memcpy(p + pg - n, src, n);
  return (struct guarded){p, 2 * pg, p + pg - n};
}

/* ncclConfig_t of NCCL 2.14's header: four fields, 20 bytes, padded to 24. */
struct config_v21400 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
};
_Static_assert(sizeof(struct config_v21400) == 24, "2.14 layout");

TestSuite(config);

/* The padding of a 2.14 struct lies where 2.17 put cgaClusterSize; whatever it holds
 * is not a field. (Refused before as "config.cgaClusterSize -1 is negative".) */
Test(config, v2_14_padding_is_not_a_field) {
  unsigned char raw[24];
  memset(raw, 0xff, sizeof raw); /* the padding: as uninitialised as it gets */
  struct config_v21400 c = {sizeof c, 0xcafebeef, NCCL_VERSION(2, 14, 3), 0};
  memcpy(raw, &c, offsetof(struct config_v21400, blocking) + sizeof c.blocking);
  struct guarded g = at_page_end(raw, sizeof raw);
  struct snapccl_config out;
  cr_assert_eq(snapccl_config_parse(g.p, &out), ncclSuccess, "%s", snapccl_last_error());
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 0);
  cr_assert_eq(out.max_ctas, 0);
  /* Other junk in the padding, with blocking left undefined: still the defaults. */
  const int junk[] = {-1, INT_MIN + 1, 0, 7};
  for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
    c.blocking = NCCL_CONFIG_UNDEF_INT;
    memcpy(g.p, &c, offsetof(struct config_v21400, blocking) + sizeof c.blocking);
    memcpy((char*)g.p + 20, &junk[i], sizeof junk[i]);
    cr_assert_eq(snapccl_config_parse(g.p, &out), ncclSuccess, "padding %d: %s", junk[i],
                 snapccl_last_error());
    cr_assert_eq(out.blocking, 1);
  }
  munmap(g.map, g.maplen);
}

/* A full-size struct whose version predates some fields: those are not read, whatever
 * they hold (a header's fields arrive with its version, not with its size). */
Test(config, version_bounds_the_fields) {
  ncclConfig_t c = NCCL_CONFIG_INITIALIZER;
  c.version = NCCL_VERSION(2, 17, 1);
  c.blocking = 0;
  c.minCTAs = 2;
  c.maxCTAs = 8;
  c.splitShare = 7;        /* invalid if read: 2.18 added it */
  c.commName = "from 2.27"; /* 2.27 added it */
  struct snapccl_config out;
  cr_assert_eq(snapccl_config_parse(&c, &out), ncclSuccess, "%s", snapccl_last_error());
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 2);
  cr_assert_eq(out.max_ctas, 8);
  cr_assert_eq(out.split_share, 0);
  cr_assert_str_eq(out.name, "");

  c.version = NCCL_VERSION(2, 18, 0); /* now splitShare counts, and 7 is refused */
  cr_assert_eq(snapccl_config_parse(&c, &out), ncclInvalidArgument);
  cr_assert(strstr(snapccl_last_error(), "splitShare") != NULL, "%s", snapccl_last_error());
  c.splitShare = 1;
  cr_assert_eq(snapccl_config_parse(&c, &out), ncclSuccess);
  cr_assert_eq(out.split_share, 1);
  cr_assert_str_eq(out.name, "", "2.26 had no commName");
  c.version = NCCL_VERSION(2, 27, 0);
  cr_assert_eq(snapccl_config_parse(&c, &out), ncclSuccess);
  cr_assert_str_eq(out.name, "from 2.27");

  /* 2.14: only blocking; invalid CTA values behind it are not looked at. */
  c.version = NCCL_VERSION(2, 14, 0);
  c.minCTAs = 50;
  c.maxCTAs = 1;
  c.cgaClusterSize = -1;
  cr_assert_eq(snapccl_config_parse(&c, &out), ncclSuccess, "%s", snapccl_last_error());
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 0);

  /* Older than any config (NCCL resets even blocking then): the defaults. */
  c.version = NCCL_VERSION(2, 13, 4);
  c.blocking = 7;
  cr_assert_eq(snapccl_config_parse(&c, &out), ncclSuccess, "%s", snapccl_last_error());
  cr_assert_eq(out.blocking, 1);
}
