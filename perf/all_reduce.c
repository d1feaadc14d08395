/* all_reduce_perf: nccl-tests' all_reduce_perf, measured by perf_main (perf_main.c). */
#include "perf.h"

int main(int argc, char** argv) { return perf_main(argc, argv, &perf_coll_allreduce); }
