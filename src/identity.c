#include "identity.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

uint64_t snapccl_hash_bytes(const void* data, size_t len, uint64_t seed) {
  /* FNV-1a 64: good enough to tell hosts and processes apart, no dependency. */
  const unsigned char* p = data;
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t snapccl_host_hash(void) {
  char buf[512] = {0};
  size_t n = 0;
  FILE* f = fopen("/proc/sys/kernel/random/boot_id", "r");
  if (f) {
    n = fread(buf, 1, 64, f);
    fclose(f);
  }
  if (gethostname(buf + n, sizeof buf - n - 1) != 0) buf[n] = 0;
  return snapccl_hash_bytes(buf, strlen(buf), 0x68);
}

static pid_t g_nonce_pid;
static uint64_t g_nonce;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t snapccl_proc_hash(void) {
  pid_t pid = getpid();
  pthread_mutex_lock(&g_lock);
  if (g_nonce_pid != pid) { /* first call in this process (or in a forked child) */
    if (getrandom(&g_nonce, sizeof g_nonce, 0) != (ssize_t)sizeof g_nonce)
      g_nonce = (uint64_t)pid * 0x9e3779b97f4a7c15ull;
    g_nonce_pid = pid;
  }
  uint64_t nonce = g_nonce;
  pthread_mutex_unlock(&g_lock);
  uint64_t key[3] = {snapccl_host_hash(), (uint64_t)pid, nonce};
  return snapccl_hash_bytes(key, sizeof key, 0x70);
}
