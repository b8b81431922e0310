// memory_readout.cu: the CUDA build of the fused top-k memory readout (libs3rt_readout.so).
// The kernels are in memory_readout.cuh (shared with the CPU harness); this file holds the
// extern "C" API declared in s3rt_readout.h.
#include <cuda_runtime.h>

#include "memory_readout.cuh"
#include "s3rt_readout.h"

#define S3RT_API extern "C" __attribute__((visibility("default")))

namespace {
thread_local char g_message[512] = "";
}

S3RT_API int s3rt_readout_abi_version(void) { return S3RT_READOUT_ABI_VERSION; }

S3RT_API int s3rt_readout_plan(int B, int P, int M, int top_k, int num_splits, int sm_count, int* splits_out,
                               int* k_out, long long* workspace_bytes_out) {
  s3rt_readout::Plan pl;
  int st = s3rt_readout::make_plan(B, P, M, top_k, num_splits, sm_count, &pl, g_message, sizeof g_message);
  if (st) return st;
  if (splits_out) *splits_out = pl.splits;
  if (k_out) *k_out = pl.k;
  if (workspace_bytes_out) *workspace_bytes_out = pl.workspace_bytes;
  return 0;
}

S3RT_API const char* s3rt_readout_error_string(int code) {
  if (code == s3rt_readout::kInvalidArgument) return g_message;
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

S3RT_API int s3rt_readout_device_check(int device, int* sm_count_out) {
  cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) return e;
  int sms = 0;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return e;
  if (sm_count_out) *sm_count_out = sms;
  return 0;
}

S3RT_API int s3rt_readout_launch(const void* query_key, const void* query_selection, const void* mem_key,
                                 const void* mem_shrinkage, const void* mem_values, const void* valid, void* out,
                                 float* usage, int B, int C, int P, int M, int N, int V, int top_k, int key_dtype,
                                 int value_dtype, int out_dtype, int values_layout, int num_splits, void* workspace,
                                 long long workspace_bytes, int device, void* stream) {
  s3rt_readout::Args a{query_key, query_selection, mem_key,   mem_shrinkage, mem_values,    valid,
                       out,       usage,           B,         C,             P,             M,
                       N,         V,               top_k,     key_dtype,     value_dtype,   out_dtype,
                       values_layout, num_splits,  workspace, workspace_bytes};
  bool device_set = false;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  auto launch = [&](s3rt_readout::KernelFn kernel, dim3 grid, dim3 block, const s3rt_readout::Params& prm) -> int {
    if (!device_set) {  // after the argument checks, so that bad arguments are reported as such
      cudaError_t e = cudaSetDevice(device);
      if (e != cudaSuccess) return e;
      device_set = true;
    }
    kernel<<<grid, block, 0, st>>>(prm);
    return cudaGetLastError();
  };
  return s3rt_readout::run(a, launch, g_message, sizeof g_message);
}
