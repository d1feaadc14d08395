/* Bad input to communicator creation and to groups (part of test_api_errors): init
 * arguments and ids, ncclConfig_t of older and newer NCCL versions read field by field,
 * group nesting and errors of calls inside a group. */
#include "api_errors.h"

TestSuite(init, .init = setup);

Test(init, bad_ranks) {
  ncclUniqueId id = zero_id(); /* rank checks come before the id is looked at */
  ncclComm_t c = NULL;
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  const int cases[][2] = {{0, 0}, {-1, 0}, {INT_MIN, 0}, {2, -1}, {2, 2}, {2, 3}, {1, 1},
                          {4, INT_MIN}, {4, INT_MAX}};
  int before = snapccl_registry_count();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int nranks = cases[i][0], rank = cases[i][1];
    EXPECT2(ncclCommInitRank(&c, nranks, id, rank), ncclInvalidArgument, "ncclCommInitRank",
            "rank");
    EXPECT2(ncclCommInitRankConfig(&c, nranks, id, rank, &cfg), ncclInvalidArgument,
            "ncclCommInitRankConfig", "rank");
    EXPECT2(ncclCommInitRankScalable(&c, nranks, rank, 1, &id, &cfg), ncclInvalidArgument,
            "ncclCommInitRankScalable", "rank");
    EXPECT(pncclCommInitRank(&c, nranks, id, rank), ncclInvalidArgument, "rank");
    cr_assert_null(c, "a failed init (%d/%d) returned a communicator", rank, nranks);
  }
  EXPECT(ncclCommInitRank(NULL, 2, id, 0), ncclInvalidArgument, "comm");
  EXPECT(ncclCommInitRankConfig(NULL, 2, id, 0, &cfg), ncclInvalidArgument, "comm");
  EXPECT(ncclCommInitRankScalable(NULL, 2, 0, 1, &id, &cfg), ncclInvalidArgument, "comm");
  cr_assert_eq(snapccl_registry_count(), before);
}

Test(init, scalable_ids) {
  ncclComm_t c = NULL;
  ncclUniqueId ids[2] = {zero_id(), zero_id()};
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, 0, ids, NULL), ncclInvalidArgument, "nId");
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, -1, ids, NULL), ncclInvalidArgument, "nId");
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, 1, NULL, NULL), ncclInvalidArgument, "commIds");
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, 2, ids, NULL), ncclInvalidArgument, "unique id");
  cr_assert_null(c);
}

Test(init, id_no_root_produced) {
  ncclComm_t c = NULL;
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  int before = snapccl_registry_count();
  ncclUniqueId id = zero_id();
  EXPECT(ncclCommInitRank(&c, 2, id, 0), ncclInvalidArgument, "unique id");
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 1, &cfg), ncclInvalidArgument, "unique id");
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 1, NULL), ncclInvalidArgument, "unique id");

  /* Random bytes: different every run, never a valid id. */
  unsigned seed = (unsigned)getpid();
  for (int round = 0; round < 16; round++) {
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) id.internal[i] = (char)(rand_r(&seed) & 0xff);
    uint64_t magic;
    memcpy(&magic, id.internal, sizeof magic);
    if (magic == SNAPCCL_ID_MAGIC) continue;
    EXPECT(ncclCommInitRank(&c, 2, id, 0), ncclInvalidArgument, "unique id");
  }

  /* The right magic but no usable root address: still refused before any connect. */
  struct snapccl_unique_id u;
  memset(&u, 0, sizeof u);
  u.magic = SNAPCCL_ID_MAGIC;
  u.family = 12345;
  memcpy(id.internal, &u, sizeof u);
  EXPECT(ncclCommInitRank(&c, 2, id, 0), ncclInvalidArgument, "address");
  cr_assert_null(c);
  cr_assert_eq(snapccl_registry_count(), before);
}

Test(init, get_unique_id) {
  EXPECT2(ncclGetUniqueId(NULL), ncclInvalidArgument, "ncclGetUniqueId", "NULL");
  EXPECT(pncclGetUniqueId(NULL), ncclInvalidArgument, "NULL");
  ncclUniqueId a, b;
  EXPECT_OK(ncclGetUniqueId(&a));
  EXPECT_OK(ncclGetUniqueId(&b));
  EXPECT_OK(snapccl_bootstrap_check_id(&a));
  cr_assert(memcmp(&a, &b, sizeof a) != 0, "two ids are identical");
}

Test(init, config_not_from_initializer) {
  ncclUniqueId id = zero_id(); /* config checks come before the id's */
  ncclComm_t c = NULL;
  ncclConfig_t cfg;
  memset(&cfg, 0, sizeof cfg);
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  ncclConfig_t cfg2 = NCCL_CONFIG_INITIALIZER;
  cfg2.magic = 0xcafebeee;
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg2), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, 1, &id, &cfg2), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  memset(&cfg2, 0xff, sizeof cfg2);
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg2), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  cr_assert_null(c);
}

Test(init, config_bad_values) {
  ncclUniqueId id = zero_id();
  ncclComm_t c = NULL;
  const int bad_blocking[] = {7, 2, -1, INT_MAX};
  for (size_t i = 0; i < sizeof bad_blocking / sizeof bad_blocking[0]; i++) {
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = bad_blocking[i];
    EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg), ncclInvalidArgument, "blocking");
  }
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.minCTAs = 8;
  cfg.maxCTAs = 2;
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg), ncclInvalidArgument, "CTAs");
  /* Valid values get past the config: the id is what fails now. */
  ncclConfig_t ok = NCCL_CONFIG_INITIALIZER;
  ok.blocking = 0;
  ok.minCTAs = 1;
  ok.maxCTAs = 4;
  ok.commName = "valid";
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &ok), ncclInvalidArgument, "unique id");
  cr_assert_null(c);
}

/* Without a GPU a well-formed init fails cleanly: a CUDA error, no communicator, no
 * registry entry, no hang. */
Test(init, valid_id_without_gpu, .timeout = 60) {
  if (have_gpu()) cr_skip_test("a GPU is present; this case is about hosts without one");
  ncclUniqueId id;
  EXPECT_OK(ncclGetUniqueId(&id));
  int before = snapccl_registry_count();
  ncclComm_t c = BOGUS_COMM;
  EXPECT(ncclCommInitRank(&c, 1, id, 0), ncclUnhandledCudaError, "cuda");
  cr_assert(c == NULL || c == BOGUS_COMM, "a failed init returned a communicator");
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  c = NULL;
  EXPECT(ncclCommInitRankConfig(&c, 1, id, 0, &cfg), ncclUnhandledCudaError, "cuda");
  cr_assert_null(c);
  cr_assert_eq(snapccl_registry_count(), before);
}

Test(init, init_all) {
  ncclComm_t comms[4] = {0};
  int devs[2] = {0, 1};
  EXPECT2(ncclCommInitAll(NULL, 1, NULL), ncclInvalidArgument, "ncclCommInitAll", "comm");
  EXPECT(ncclCommInitAll(NULL, 2, devs), ncclInvalidArgument, "comm");
  EXPECT(ncclCommInitAll(comms, 0, NULL), ncclInvalidArgument, "ndev");
  EXPECT(ncclCommInitAll(comms, -1, devs), ncclInvalidArgument, "ndev");
  EXPECT(ncclCommInitAll(comms, INT_MIN, NULL), ncclInvalidArgument, "ndev");
  for (int i = 0; i < 4; i++) cr_assert_null(comms[i]);
}

/* ================= snapccl_config_parse: older and newer ncclConfig_t ================= */

TestSuite(config, .init = setup);

/* Puts n bytes at the very end of a page followed by an inaccessible page: any read
 * past them faults, so the parser provably reads only what .size covers. */
static void* at_page_end(const void* src, size_t n, void** map, size_t* maplen) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  char* p = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert(p != MAP_FAILED);
  cr_assert_eq(mprotect(p + pg, pg, PROT_NONE), 0);
  char* dst = p + pg - n;
  memcpy(dst, src, n);
  *map = p;
  *maplen = 2 * pg;
  return dst;
}

/* ncclConfig_t as the 2.14 header had it (blocking was the only user field). */
struct config_v21400 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
};

/* ... and as 2.17 had it. */
struct config_v21700 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char* netName;
};

/* A future header that appended fields. */
struct config_future {
  ncclConfig_t base;
  int extra1;
  int extra2;
  const char* extra3;
  char extra4[40];
};

Test(config, null_is_defaults) {
  struct snapccl_config out;
  memset(&out, 0x5a, sizeof out);
  EXPECT_OK(snapccl_config_parse(NULL, &out));
  cr_assert_eq(out.blocking, 1);
  cr_assert_eq(out.min_ctas, 0);
  cr_assert_eq(out.max_ctas, 0);
  cr_assert_eq(out.name[0], '\0');
  ncclConfig_t init = NCCL_CONFIG_INITIALIZER;
  EXPECT_OK(snapccl_config_parse(&init, &out));
  cr_assert_eq(out.blocking, 1, "UNDEF blocking must mean blocking");
  cr_assert_eq(out.min_ctas, 0);
  cr_assert_eq(out.max_ctas, 0);
  cr_assert_eq(out.name[0], '\0');
}

Test(config, current_fields_read) {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  cfg.minCTAs = 2;
  cfg.maxCTAs = 16;
  cfg.splitShare = 1;
  cfg.commName = "current";
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(&cfg, &out));
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 2);
  cr_assert_eq(out.max_ctas, 16);
  cr_assert_eq(out.split_share, 1);
  cr_assert_str_eq(out.name, "current");
}

Test(config, older_smaller_struct_v2_14) {
  struct config_v21400 old = {sizeof old, 0xcafebeef, NCCL_VERSION(2, 14, 3), 0};
  void* map;
  size_t maplen;
  const ncclConfig_t* p = at_page_end(&old, sizeof old, &map, &maplen);
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(p, &out));
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 0);
  cr_assert_eq(out.max_ctas, 0);
  cr_assert_eq(out.name[0], '\0');
  /* Its blocking is still validated. */
  old.blocking = 7;
  memcpy((void*)p, &old, sizeof old);
  EXPECT(snapccl_config_parse(p, &out), ncclInvalidArgument, "blocking");
  munmap(map, maplen);
}

Test(config, older_smaller_struct_v2_17) {
  struct config_v21700 old = {sizeof old, 0xcafebeef, NCCL_VERSION(2, 17, 1), 1,
                              NCCL_CONFIG_UNDEF_INT, 3, 9, NULL};
  void* map;
  size_t maplen;
  const ncclConfig_t* p = at_page_end(&old, sizeof old, &map, &maplen);
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(p, &out));
  cr_assert_eq(out.blocking, 1);
  cr_assert_eq(out.min_ctas, 3);
  cr_assert_eq(out.max_ctas, 9);
  cr_assert_eq(out.split_share, 0);
  cr_assert_eq(out.name[0], '\0');
  munmap(map, maplen);
}

Test(config, size_field_bounds_reading) {
  /* A full struct whose .size claims the 2.14 layout: the later fields hold values
   * that would be refused (or be visible) if they were read. */
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.size = sizeof(struct config_v21400);
  cfg.blocking = 0;
  cfg.minCTAs = 50;
  cfg.maxCTAs = 1; /* min > max: invalid if read */
  cfg.commName = "must not be read";
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(&cfg, &out));
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 0);
  cr_assert_eq(out.max_ctas, 0);
  cr_assert_eq(out.name[0], '\0');
  /* Too small to hold even blocking: not a config. */
  cfg.size = 8;
  EXPECT(snapccl_config_parse(&cfg, &out), ncclInvalidArgument, "NCCL_CONFIG_INITIALIZER");
}

Test(config, newer_larger_struct) {
  struct config_future f;
  memset(&f, 0x7f, sizeof f); /* trailing fields: garbage to an older library */
  ncclConfig_t init = NCCL_CONFIG_INITIALIZER;
  f.base = init;
  f.base.size = sizeof f;
  f.base.version = NCCL_VERSION(2, 99, 0);
  f.base.blocking = 0;
  f.base.minCTAs = 1;
  f.base.maxCTAs = 2;
  f.base.commName = "future";
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(&f.base, &out));
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 1);
  cr_assert_eq(out.max_ctas, 2);
  cr_assert_str_eq(out.name, "future");
  f.base.blocking = 7; /* known fields are still checked */
  EXPECT(snapccl_config_parse(&f.base, &out), ncclInvalidArgument, "blocking");
}

/* ================= groups ================= */

TestSuite(group, .init = setup);

Test(group, end_without_start) {
  EXPECT2(ncclGroupEnd(), ncclInvalidUsage, "ncclGroupEnd", "ncclGroupStart");
  EXPECT(pncclGroupEnd(), ncclInvalidUsage, "ncclGroupStart");
  cr_assert_eq(snapccl_group_depth(), 0);
}

Test(group, nested) {
  EXPECT_OK(ncclGroupStart());
  EXPECT_OK(ncclGroupStart());
  cr_assert_eq(snapccl_group_depth(), 2);
  EXPECT_OK(ncclGroupEnd());
  cr_assert_eq(snapccl_group_depth(), 1);
  EXPECT_OK(ncclGroupEnd());
  cr_assert_eq(snapccl_group_depth(), 0);
  EXPECT(ncclGroupEnd(), ncclInvalidUsage, "ncclGroupStart");
}

/* As NCCL: a NULL simInfo makes ncclGroupSimulateEnd a plain ncclGroupEnd, so outside a
 * group it is the same usage error, and inside one it closes the group. */
Test(group, simulate_end_null_sim_info) {
  EXPECT(ncclGroupSimulateEnd(NULL), ncclInvalidUsage, "ncclGroupStart");
  cr_assert_eq(snapccl_group_depth(), 0);
  EXPECT_OK(ncclGroupStart());
  EXPECT_OK(ncclGroupSimulateEnd(NULL));
  cr_assert_eq(snapccl_group_depth(), 0);
}

Test(group, simulate_end_initialized) {
  ncclSimInfo_t info = NCCL_SIM_INFO_INITIALIZER;
  EXPECT_OK(ncclGroupStart());
  EXPECT_OK(ncclGroupSimulateEnd(&info));
  cr_assert_eq(snapccl_group_depth(), 0);
  cr_assert_float_eq(info.estimatedTime, 0.0f, 1e-6, "an empty group costs nothing");
}

/* NCCL (group.cc, ncclGroupEndInternal) closes the group level first and then refuses
 * the un-initialized simInfo: the failed call must not leave the thread in a group,
 * where every later call would be deferred to an ncclGroupEnd that never comes. */
Test(group, simulate_end_uninitialized_closes_group) {
  ncclSimInfo_t info;
  memset(&info, 0, sizeof info);
  EXPECT_OK(ncclGroupStart());
  EXPECT2(ncclGroupSimulateEnd(&info), ncclInvalidArgument, "ncclGroupSimulateEnd",
          "NCCL_SIM_INFO_INITIALIZER");
  int depth = snapccl_group_depth();
  while (snapccl_group_depth() > 0) snapccl_group_end(); /* leave clean either way */
  cr_assert_eq(depth, 0, "ncclGroupSimulateEnd failed but left the group open (depth %d)",
               depth);
}

Test(group, error_in_group_fails_group_end) {
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT_OK(ncclGroupStart());
  EXPECT(ncclAllReduce(g_sendbuf, g_recvbuf, 4, ncclNumTypes, ncclSum, H(c), NULL),
         ncclInvalidArgument, "type");
  EXPECT_KEEP(ncclGroupEnd(), ncclInvalidArgument, "type");
  cr_assert_eq(snapccl_group_depth(), 0);
  /* The error belonged to that group only. */
  EXPECT_OK(ncclGroupStart());
  EXPECT_OK(ncclGroupEnd());
  fake_free(c);
}

/* ================= collectives: dtype, op, count, buffers ================= */
