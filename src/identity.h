/* Who and where we are: stable hashes that tell whether two ranks share a host or a
 * process (pids repeat across hosts and containers, so neither is enough alone). */
#ifndef SNAPCCL_IDENTITY_H
#define SNAPCCL_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

uint64_t snapccl_hash_bytes(const void* data, size_t len, uint64_t seed);
/* Kernel boot id and hostname: equal on one host, different across hosts. */
uint64_t snapccl_host_hash(void);
/* Host hash, pid and a random nonce drawn once per process (a forked child draws its
 * own, so parent and child differ even though the child inherits memory). */
uint64_t snapccl_proc_hash(void);

#endif
