/* libFuzzer target: the bootstrap's wire parsers (src/bootstrap_wire.c) on arbitrary
 * bytes, as a hostile local peer can send them.
 *
 * The first byte picks what is parsed:
 *   0  a connection's prefix at the root (HELLO allowed), then the root's admission of
 *      a complete HELLO against a small table of ranks that arrived already;
 *   1  a connection's prefix at a rank's listener (RING_HELLO and P2P allowed);
 *   2  what a rank reads back from the root: a header, then a MSG_REFUSE body or the
 *      address table.
 * The second byte sets how the bytes are cut into reads (a peer decides how its bytes
 * arrive). Each parser's promises are checked; a broken one aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bootstrap_wire.h"

#define CHECK(cond) \
  do {              \
    if (!(cond)) abort(); \
  } while (0)

static const uint64_t nonce[2] = {0x1122334455667788ull, 0x99aabbccddeeff00ull};

static void prefix(const uint8_t* d, size_t n, unsigned allowed, uint8_t cut) {
  struct acceptor a;
  memset(&a, 0, sizeof a);
  memcpy(a.nonce, nonce, sizeof a.nonce);
  a.allowed = allowed;
  struct pending_conn c;
  memset(&c, 0, sizeof c);
  c.fd = -1;
  c.want = sizeof(struct wire_hdr);
  size_t used = 0;
  for (unsigned step = 0; c.got < c.want && used < n; step++) {
    size_t chunk = 1 + (size_t)((cut * (step + 1)) % 29);
    if (chunk > c.want - c.got) chunk = c.want - c.got; /* recv never reads beyond want */
    if (chunk > n - used) chunk = n - used;
    memcpy((char*)&c.m + c.got, d + used, chunk);
    used += chunk;
    c.got += chunk;
    enum refuse_code code = (enum refuse_code)99;
    const char* why = snapccl_bs_prefix_check(&a, &c, &code);
    CHECK(c.want <= sizeof c.m && c.got <= c.want);
    if (why) {
      CHECK(why[0] && (code == REFUSE_SILENT || code == REFUSE_FATAL));
      return;
    }
  }
  if (c.got < c.want || c.want == sizeof(struct wire_hdr)) return; /* incomplete: fine */
  /* Complete and not refused: the promises the rest of the bootstrap relies on. */
  CHECK(c.m.h.magic == WIRE_MAGIC && c.m.h.type < 32 && (allowed & (1u << c.m.h.type)));
  CHECK(memcmp(c.m.u.id.nonce, nonce, sizeof nonce) == 0);
  if (c.m.h.type == MSG_HELLO) {
    CHECK(c.m.h.len == sizeof(struct hello) && c.want == sizeof c.m.h + sizeof(struct hello));
    /* Admission against a table of up to 8 ranks (the next input bytes say which came). */
    int fds[8];
    int known = used < n ? d[used] % 9 : 0;
    for (int i = 0; i < 8; i++) fds[i] = used + 1 + (size_t)i < n && (d[used + 1 + i] & 1) ? 3 : -1;
    char buf[160];
    const char* no = snapccl_bs_hello_refusal(known, fds, &c.m.u.hello, buf, sizeof buf);
    if (!no) {
      const struct hello* h = &c.m.u.hello;
      CHECK(h->nranks > 0 && h->nranks <= MAX_RANKS && h->rank >= 0 && h->rank < h->nranks);
      CHECK(!known || (h->nranks == known && fds[h->rank] < 0));
    } else {
      CHECK(no == buf && strlen(buf) < sizeof buf);
    }
  } else {
    CHECK(c.want == sizeof c.m.h + sizeof(struct ident));
    if (c.m.h.type == MSG_P2P)
      CHECK(c.m.h.len >= sizeof(struct ident) && c.m.h.len - sizeof(struct ident) <= MAX_P2P_BYTES);
    else
      CHECK(c.m.h.type == MSG_RING_HELLO && c.m.h.len == sizeof(struct ident));
  }
}

static void reply(const uint8_t* d, size_t n) {
  struct wire_hdr h;
  if (n < sizeof h) return;
  memcpy(&h, d, sizeof h);
  d += sizeof h;
  n -= sizeof h;
  if (h.type == MSG_REFUSE) {
    enum refuse_code code = (enum refuse_code)99;
    char text[MAX_REFUSE_TEXT + 1];
    /* The rank reads h.len bytes (at most a refusal's) before parsing them. */
    if (h.len > n) return;
    if (snapccl_bs_parse_refusal(h.len, d, &code, text, sizeof text)) {
      CHECK(code == REFUSE_FATAL || code == REFUSE_RETRY || code == REFUSE_GAVE_UP);
      size_t k = strlen(text);
      CHECK(k < sizeof text && k + sizeof(struct refuse) <= h.len);
      for (size_t i = 0; i < k; i++) CHECK(text[i] >= 0x20 && text[i] <= 0x7e);
    }
    return;
  }
  /* The address table: every entry either converts to a usable address or is refused. */
  for (size_t off = 0; off + sizeof(struct snapccl_wire_addr) <= n; off += sizeof(struct snapccl_wire_addr)) {
    struct snapccl_wire_addr w;
    union snapccl_sockaddr sa;
    char s[80];
    memcpy(&w, d + off, sizeof w);
    if (snapccl_sockaddr_from_wire(&w, &sa) != 0) continue;
    CHECK(sa.sa.sa_family == AF_INET || sa.sa.sa_family == AF_INET6);
    CHECK(w.port != 0);
    snapccl_sockaddr_str(&sa, s, sizeof s);
    CHECK(strlen(s) < sizeof s);
    struct snapccl_wire_addr back;
    snapccl_sockaddr_to_wire(&sa, &back);
    CHECK(back.family == w.family && back.port == w.port);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  if (n < 2) return 0;
  uint8_t mode = d[0] % 3, cut = d[1];
  d += 2;
  n -= 2;
  if (mode == 0) prefix(d, n, 1u << MSG_HELLO, cut);
  else if (mode == 1) prefix(d, n, (1u << MSG_RING_HELLO) | (1u << MSG_P2P), cut);
  else reply(d, n);
  return 0;
}
