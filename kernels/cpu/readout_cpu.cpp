// readout_cpu.cpp: the CPU harness of the fused top-k memory readout. It compiles the very same
// device code (../memory_readout.cuh) against cuda_on_cpu.h, so CI tests the kernels themselves:
// their indexing, tiling, barriers, warp shuffles/ballots, top-k and atomics.
//   g++ -std=c++17 -O2 -fPIC -shared -U_FORTIFY_SOURCE -pthread readout_cpu.cpp -o libs3rt_readout_cpu.so
#include "cuda_on_cpu.h"
// (cuda_on_cpu.h first: it provides what the CUDA headers would)
#include "../memory_readout.cuh"
#include "../s3rt_readout.h"

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
  if (code == 0) return "no error";
  if (code == s3rt_readout::kInvalidArgument) return g_message;
  return g_message;  // launch failures (deadlock, divergent warp intrinsics) are copied here
}

S3RT_API int s3rt_readout_cpu_launch(const void* query_key, const void* query_selection, const void* mem_key,
                                     const void* mem_shrinkage, const void* mem_values, const void* valid, void* out,
                                     float* usage, int B, int C, int P, int M, int N, int V, int top_k,
                                     int key_dtype, int value_dtype, int out_dtype, int values_layout,
                                     int num_splits, void* workspace, long long workspace_bytes, int num_threads) {
  s3rt_readout::Args a{query_key, query_selection, mem_key,   mem_shrinkage, mem_values,    valid,
                       out,       usage,           B,         C,             P,             M,
                       N,         V,               top_k,     key_dtype,     value_dtype,   out_dtype,
                       values_layout, num_splits,  workspace, workspace_bytes};
  auto launch = [&](s3rt_readout::KernelFn kernel, dim3 grid, dim3 block, const s3rt_readout::Params& prm) -> int {
    int e = cucpu::launch(grid, block, [&]() { kernel(prm); }, num_threads);
    if (e != cudaSuccess) {
      std::lock_guard<std::mutex> g(cucpu::error_mutex());
      snprintf(g_message, sizeof g_message, "CPU launch failed: %s", cucpu::last_error().c_str());
      return e;
    }
    return 0;
  };
  return s3rt_readout::run(a, launch, g_message, sizeof g_message);
}
