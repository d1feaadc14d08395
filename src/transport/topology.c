/* Where each GPU sits (NUMA node, PCI path), from hwloc; logged at INFO at init so
 * placement problems are visible. Loading the topology is slow, so once per process. */
#include <hwloc.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "transport/transport_impl.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static hwloc_topology_t g_topo;
static int g_topo_ok;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void load(void) {
  if (hwloc_topology_init(&g_topo) != 0) return;
  hwloc_topology_set_io_types_filter(g_topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  if (hwloc_topology_load(g_topo) != 0) {
    hwloc_topology_destroy(g_topo);
    return;
  }
  g_topo_ok = 1;
}

static void describe(const char* bus_id, char* out, size_t len) {
  unsigned dom = 0, bus = 0, dev = 0, fn = 0;
  if (sscanf(bus_id, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4) {
    snprintf(out, len, "unparsable bus id");
    return;
  }
  hwloc_obj_t o = hwloc_get_pcidev_by_busid(g_topo, dom, bus, dev, fn);
  if (!o) {
    snprintf(out, len, "not in the hwloc topology");
    return;
  }
  hwloc_obj_t cpu = hwloc_get_non_io_ancestor_obj(g_topo, o);
  int numa = -1;
  if (cpu && cpu->nodeset) numa = hwloc_bitmap_first(cpu->nodeset);
  int depth = 0;
  for (hwloc_obj_t p = o->parent; p && p->type == HWLOC_OBJ_BRIDGE; p = p->parent) depth++;
  snprintf(out, len, "NUMA node %d, %d PCI bridge(s) below %s", numa, depth,
           cpu ? hwloc_obj_type_string(cpu->type) : "?");
}

void snapccl_topology_log(const struct snapccl_comm* comm) {
  if (!snapccl_log_enabled(LOG_INFO, SUB_TRANSPORT)) return;
  pthread_once(&g_once, load);
  if (!g_topo_ok) {
    INFO(SUB_TRANSPORT, "hwloc topology unavailable");
    return;
  }
  pthread_mutex_lock(&g_lock); /* hwloc queries on one topology are not thread safe */
  for (int r = 0; r < comm->nranks; r++) {
    char where[160];
    describe(comm->peers[r].bus_id, where, sizeof where);
    INFO(SUB_TRANSPORT, "comm rank %d: rank %d GPU %s (cudaDev %d in pid %d): %s", comm->rank, r,
         comm->peers[r].bus_id, comm->peers[r].cuda_dev, comm->peers[r].pid, where);
  }
  pthread_mutex_unlock(&g_lock);
}
