/* The settings table (src/env.c) against README's "Environment variables" table: every
 * setting the library reads is listed there, with its NCCL fallback and its default. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"

/* README.md, whole, NUL-terminated. */
static char* read_readme(void) {
  FILE* f = fopen(SNAPCCL_SOURCE_ROOT "/README.md", "rb");
  cr_assert_not_null(f, "cannot open %s/README.md", SNAPCCL_SOURCE_ROOT);
  static char text[1 << 16];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  cr_assert_lt(n, sizeof text - 1, "README.md is larger than this test reads");
  text[n] = 0;
  return text;
}

/* The cell after the name cell of the row whose first cell starts with `NAME`. */
static int default_cell(const char* readme, const char* name, char* cell, size_t len, char* first,
                        size_t flen) {
  char key[128];
  snprintf(key, sizeof key, "\n| `%s`", name);
  const char* row = strstr(readme, key);
  if (!row) return 0;
  row += 3; /* past "\n| " */
  const char* bar = strchr(row, '|');
  const char* end = bar ? strchr(bar + 1, '|') : NULL;
  if (!bar || !end) return 0;
  snprintf(first, flen, "%.*s", (int)(bar - row), row);
  const char* s = bar + 1;
  while (*s == ' ' || *s == '`') s++;
  const char* e = end;
  while (e > s && (e[-1] == ' ' || e[-1] == '`')) e--;
  snprintf(cell, len, "%.*s", (int)(e - s), s);
  return 1;
}

Test(env, readme_lists_every_setting) {
  const char* readme = read_readme();
  const struct snapccl_env_entry* e;
  size_t n = snapccl_env_table(&e);
  cr_assert_gt(n, 0);
  for (size_t i = 0; i < n; i++) {
    char def[128], first[256];
    cr_assert(default_cell(readme, e[i].name, def, sizeof def, first, sizeof first),
              "README's environment table has no row for %s", e[i].name);
    if (e[i].fallback) {
      char alt[128];
      snprintf(alt, sizeof alt, "(or `%s`)", e[i].fallback);
      cr_assert(strstr(first, alt), "README's row for %s does not name its fallback %s", e[i].name,
                e[i].fallback);
    }
    if (e[i].def[0])
      cr_assert_str_eq(def, e[i].def, "README's default for %s", e[i].name);
    else
      cr_assert(!strcmp(def, "(unset)") || !strcmp(def, "(empty)"),
                "README's default for %s is \"%s\", the table's is empty", e[i].name, def);
    cr_assert(e[i].doc && e[i].doc[0], "%s has no meaning in the table", e[i].name);
  }
}
