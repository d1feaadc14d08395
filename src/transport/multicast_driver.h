/* The function tables of the multicast path (multicast_driver.c), for the setup in
 * multicast.c. Tests replace them with snapccl_mc_set_driver / snapccl_mc_set_nvml. */
#ifndef SNAPCCL_TRANSPORT_MULTICAST_DRIVER_H
#define SNAPCCL_TRANSPORT_MULTICAST_DRIVER_H

#include <stddef.h>

#include "transport/multicast.h"

/* The table every multicast-path call goes through: the override if set, else the
 * driver's entry points (loaded once); NULL with the reason in why if they cannot be
 * loaded. Called only once the environment allows multicast. */
const struct snapccl_mc_driver* snapccl_mc_driver_table(char* why, size_t len);
/* NVML for the fabric query (override, else libnvidia-ml.so.1); NULL if absent. */
const struct snapccl_nvml* snapccl_mc_nvml_table(void);
/* "what failed: <driver's error string> (code)" into why. */
void snapccl_mc_cu_fail(const struct snapccl_mc_driver* d, CUresult r, const char* what, char* why,
                        size_t len);

#endif
