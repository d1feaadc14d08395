/* The rule every algorithm table is chosen by, the collectives' (select.c) and the fused
 * call's (fused_select.c) alike:
 *   - SNAPCCL_ALGO names an algorithm for the table's key: that one, or the reason it
 *     cannot run the call (the caller fails the call or hands it to NVIDIA's NCCL);
 *   - else every algorithm serving the call is asked; an opt-in one that can run wins
 *     (the user asked for it), otherwise the cheapest estimate, ties to the earlier entry;
 *     algorithms that run only when named are not asked;
 *   - none can: the reason of the first that declined.
 * The table stays its owner's: the rule sees entries only through the callbacks. */
#ifndef SNAPCCL_ALGOS_PICK_H
#define SNAPCCL_ALGOS_PICK_H

#include <stddef.h>

/* How the rule treats an entry. */
enum snapccl_pick_flags {
  PICK_OPT_IN = 1u << 0,     /* wins over every estimate whenever it can run */
  PICK_NAMED_ONLY = 1u << 1, /* considered only when SNAPCCL_ALGO names it */
};

struct snapccl_menu {
  const char* key;  /* SNAPCCL_ALGO's key: a collective's name, or "fused" */
  const char* noun; /* the call in reasons: "snapccl cannot run this <noun>: ..." */
  const char* kind; /* what an entry is, in "... which is not <kind> of snapccl" */
  const char* none; /* the reason when no entry serves the call at all */
  int count;
  const void* call;
  /* Entry i's name and flags for this call; 0 when it does not serve it (another
   * collective's algorithm). */
  int (*entry)(const struct snapccl_menu* m, int i, const char** name, unsigned* flags);
  /* NULL if entry i can run the call, else why not (static, or written into buf). */
  const char* (*can_run)(const struct snapccl_menu* m, int i, char* buf, size_t len);
  double (*cost_us)(const struct snapccl_menu* m, int i);
};

struct snapccl_pick {
  int index;     /* the chosen entry, or -1 */
  int forced;    /* SNAPCCL_ALGO named the entry (or named one that is not there) */
  char why[320]; /* index < 0: the reason, a whole sentence */
};

/* Applies the rule; `forced` is SNAPCCL_ALGO's name for the key, or NULL. The caller
 * handles the name "nccl" (hand the call to NVIDIA's library) before asking. */
void snapccl_pick(const struct snapccl_menu* m, const char* forced, struct snapccl_pick* out);

#endif
