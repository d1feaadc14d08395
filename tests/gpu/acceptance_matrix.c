/* The acceptance matrix (tests/acceptance_matrix.h) on a GPU: every cell as a real call
 * at world size 1 on GPU 0, against whichever libnccl the loader gives this program.
 * It is linked against libnccl.so.2 by soname, so:
 *   gpu_acceptance_matrix                                    snapccl (RUNPATH), standalone
 *   LD_LIBRARY_PATH=DIR gpu_acceptance_matrix                NVIDIA's libnccl.so.2 in DIR
 *   LD_LIBRARY_PATH=DIR LD_PRELOAD=.../libsnapccl.so ...     snapccl interposed over it
 *   SNAPCCL_NCCL_LIB=DIR/libnccl.so.2 gpu_acceptance_matrix  snapccl with fallback
 * (run_acceptance_matrix.sh runs all four). Each cell: buffers of 8 elements equal to 1
 * in the dtype (output poisoned), the op (built-in, or PreMulSum by 1 with a host or a
 * device scalar, made on the communicator), the call, a stream synchronisation and the
 * communicator's asynchronous error. A call that succeeds must leave the output equal
 * to the input (one rank; every op of 1 is 1).
 *
 * Prints which library served, then one line per cell whose code differs from NVIDIA
 * 2.28.3's in the table or whose output is wrong ("DIFF ..."); with --all, every cell
 * ("CELL ...", with ncclGetLastError's text for failures). Exit 0 when nothing differs,
 * 1 otherwise, 77 without a GPU. */
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../acceptance_matrix.h"
#include "nccl.h"

#define COUNT 8

static const size_t esize[ncclNumTypes] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1};
static const char* const dtype_names[ncclNumTypes] = {
    "int8", "uint8", "int32", "uint32", "int64", "uint64",
    "half", "float", "double", "bfloat16", "f8e4m3", "f8e5m2"};

static const char* library_of(const void* sym) {
  Dl_info info;
  return dladdr(sym, &info) && info.dli_fname ? info.dli_fname : "?";
}

#define CUDA_OR_DIE(call)                                                          \
  do {                                                                             \
    cudaError_t e_ = (call);                                                       \
    if (e_ != cudaSuccess) {                                                       \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call,                 \
              cudaGetErrorString(e_));                                             \
      return 1;                                                                    \
    }                                                                              \
  } while (0)

/* One cell; *res is the call's code (or the asynchronous error after it), *wrong_output
 * set when a successful call left an output unequal to its input. 1 on a CUDA failure
 * that leaves the process unable to go on. */
static int run_cell(const struct mx_cell* m, ncclComm_t comm, cudaStream_t s, void* send,
                    void* recv, void* dev_scalar, ncclResult_t* res, int* wrong_output) {
  static const ncclRedOp_t builtin[] = {[MX_SUM] = ncclSum, [MX_PROD] = ncclProd,
                                        [MX_MAX] = ncclMax, [MX_MIN] = ncclMin,
                                        [MX_AVG] = ncclAvg, [MX_NO_OP] = ncclSum};
  size_t bytes = COUNT * esize[m->dtype];
  unsigned char host_in[COUNT * 8], host_out[COUNT * 8];
  for (int i = 0; i < COUNT; i++) memcpy(host_in + i * esize[m->dtype], &mx_scalar_one[m->dtype],
                                         esize[m->dtype]);
  CUDA_OR_DIE(cudaMemcpy(send, host_in, bytes, cudaMemcpyHostToDevice));
  CUDA_OR_DIE(cudaMemset(recv, 0xee, bytes));
  *wrong_output = 0;
  ncclRedOp_t op = builtin[m->op];
  int created = 0;
  if (m->op == MX_PREMULSUM_HOST || m->op == MX_PREMULSUM_DEVICE) {
    uint64_t one = mx_scalar_one[m->dtype];
    CUDA_OR_DIE(cudaMemcpy(dev_scalar, &one, sizeof one, cudaMemcpyHostToDevice));
    ncclResult_t r = m->op == MX_PREMULSUM_HOST
                         ? ncclRedOpCreatePreMulSum(&op, &one, m->dtype, ncclScalarHostImmediate, comm)
                         : ncclRedOpCreatePreMulSum(&op, dev_scalar, m->dtype, ncclScalarDevice, comm);
    if (r != ncclSuccess) {
      *res = r;
      return 0;
    }
    created = 1;
  }
  switch (m->coll) {
    case MX_ALLREDUCE: *res = ncclAllReduce(send, recv, COUNT, m->dtype, op, comm, s); break;
    case MX_ALLGATHER: *res = ncclAllGather(send, recv, COUNT, m->dtype, comm, s); break;
    default: *res = ncclReduceScatter(send, recv, COUNT, m->dtype, op, comm, s); break;
  }
  if (*res == ncclSuccess) {
    CUDA_OR_DIE(cudaStreamSynchronize(s));
    ncclResult_t async = ncclSuccess;
    ncclResult_t q = ncclCommGetAsyncError(comm, &async);
    if (q != ncclSuccess || async != ncclSuccess) *res = q != ncclSuccess ? q : async;
    CUDA_OR_DIE(cudaMemcpy(host_out, recv, bytes, cudaMemcpyDeviceToHost));
    *wrong_output = memcmp(host_in, host_out, bytes) != 0;
  }
  if (created && ncclRedOpDestroy(op, comm) != ncclSuccess)
    fprintf(stderr, "ncclRedOpDestroy failed: %s\n", ncclGetLastError(comm));
  return 0;
}

int main(int argc, char** argv) {
  int all = argc > 1 && !strcmp(argv[1], "--all");
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("no GPU: skipped\n");
    return 77;
  }
  int version = 0;
  ncclGetVersion(&version);
  int (*snap_version)(int*) = (int (*)(int*))dlsym(RTLD_DEFAULT, "snapcclGetVersion");
  struct cudaDeviceProp prop;
  CUDA_OR_DIE(cudaGetDeviceProperties(&prop, 0));
  printf("# ncclAllReduce from %s; ncclGetVersion %d; snapccl %s; GPU 0 %s (sm_%d%d)\n",
         library_of((const void*)ncclAllReduce), version,
         snap_version ? library_of((const void*)snap_version) : "not loaded", prop.name,
         prop.major, prop.minor);
  if (prop.major < 9) printf("# the table is NVIDIA's answer on sm_90 and newer: expect fp8 rows to differ\n");

  CUDA_OR_DIE(cudaSetDevice(0));
  ncclUniqueId id;
  ncclComm_t comm = NULL;
  if (ncclGetUniqueId(&id) != ncclSuccess || ncclCommInitRank(&comm, 1, id, 0) != ncclSuccess) {
    fprintf(stderr, "could not make a one-rank communicator: %s\n", ncclGetLastError(NULL));
    return 1;
  }
  cudaStream_t s;
  void *send, *recv, *dev_scalar;
  CUDA_OR_DIE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CUDA_OR_DIE(cudaMalloc(&send, COUNT * 8));
  CUDA_OR_DIE(cudaMalloc(&recv, COUNT * 8));
  CUDA_OR_DIE(cudaMalloc(&dev_scalar, 8));

  int diffs = 0;
  for (size_t i = 0; i < MX_NCELLS; i++) {
    const struct mx_cell* m = &mx_cells[i];
    ncclResult_t res = ncclInternalError;
    int wrong = 0;
    if (run_cell(m, comm, s, send, recv, dev_scalar, &res, &wrong)) return 1;
    int differs = res != m->nccl_2_28_3 || wrong;
    diffs += differs;
    if (differs || all) {
      const char* why = res != ncclSuccess ? ncclGetLastError(comm) : "";
      printf("%s %-13s %-8s %-16s got %d%s, NCCL 2.28.3: %d%s%s\n", differs ? "DIFF" : "CELL",
             mx_coll_names[m->coll], dtype_names[m->dtype], mx_op_names[m->op], (int)res,
             wrong ? " (output differs from input)" : "", (int)m->nccl_2_28_3,
             why && *why ? " | " : "", why ? why : "");
    }
  }
  cudaFree(send);
  cudaFree(recv);
  cudaFree(dev_scalar);
  cudaStreamDestroy(s);
  if (ncclCommDestroy(comm) != ncclSuccess) fprintf(stderr, "ncclCommDestroy failed\n");
  printf("%zu cells, %d differ from NVIDIA 2.28.3's answers\n", (size_t)MX_NCELLS, diffs);
  return diffs ? 1 : 0;
}
