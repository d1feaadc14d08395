/* Handing one file descriptor from a process to the other processes of a host: a Unix
 * stream socket in the abstract namespace, the descriptor travelling as SCM_RIGHTS
 * ancillary data, and the kernel's word on who sits at the other end (SO_PEERCRED) on
 * both sides. Used for the POSIX-fd handle of the multicast object (multicast.c) and for
 * the cuMem segments of registered buffers (registration.c); the address travels
 * through the communicator's out-of-band allgather. A client asks for one descriptor of
 * the server's list by index (nonce, then a 32-bit index).
 *
 * Both ends must share a network namespace (abstract sockets live there) and a PID
 * namespace (the pids the ranks reported at init are checked against SO_PEERCRED);
 * otherwise the exchange fails and multicast declines with the reason. */
#ifndef SNAPCCL_FD_PASSING_H
#define SNAPCCL_FD_PASSING_H

#include <stdint.h>

#include "nccl.h"

struct snapccl_fd_address {
  char name[48];     /* abstract socket name (without the leading NUL), NUL-terminated */
  uint8_t nonce[16]; /* clients present it; random per server */
  int32_t pid;       /* the serving process, as clients must see it */
  int32_t pad;
};

struct snapccl_fd_server;

/* Listens on a fresh random address (written to *addr). */
ncclResult_t snapccl_fd_server_open(struct snapccl_fd_server** out, struct snapccl_fd_address* addr);
/* Sends fd to `clients` connections, each from a process whose pid is one of
 * pids[0..npids) and presenting the nonce; refuses (and does not count) any other.
 * Fails when timeout_s passes first. */
ncclResult_t snapccl_fd_server_serve(struct snapccl_fd_server* s, int fd, int clients,
                                     const int32_t* pids, int npids, double timeout_s);
/* The same for a list: each client fetches each of fds[0..nfds) once, by index. */
ncclResult_t snapccl_fd_server_serve_many(struct snapccl_fd_server* s, const int* fds, int nfds, int clients,
                                          const int32_t* pids, int npids, double timeout_s);
void snapccl_fd_server_close(struct snapccl_fd_server* s);

/* Connects to the server at addr (retrying until timeout_s), checks that its pid is
 * addr->pid, presents the nonce and receives the descriptor (close it when done). */
ncclResult_t snapccl_fd_receive(const struct snapccl_fd_address* addr, double timeout_s, int* fd_out);
/* The same for descriptor `index` of the server's list. */
ncclResult_t snapccl_fd_receive_index(const struct snapccl_fd_address* addr, uint32_t index, double timeout_s,
                                      int* fd_out);

#endif
