// emulator_selftest.cpp: small kernels that pin down the CPU emulation (cuda_on_cpu.h) itself:
// warp shuffles and ballots against their CUDA definitions, shared-memory barriers, atomics,
// __half rounding, and that divergent barriers / shuffles are reported instead of hanging.
// Built and called by tests/test_readout_kernel_cpu.py.
#include "cuda_on_cpu.h"

#define API extern "C" __attribute__((visibility("default")))

// out[t*8 + i]: per thread t of a 64-thread block (two warps)
//  0 butterfly sum of lane ids (__shfl_xor_sync)   -> 496 on every lane
//  1 broadcast of lane 5's value (__shfl_sync)     -> 5*7+warp
//  2 __shfl_down_sync(v, 3)                        -> lane+3, or own lane when out of range
//  3 __shfl_up_sync(v, 2)
//  4 __ballot_sync(lane % 3 == 0)
//  5 __any_sync(lane == 31), 6 __all_sync(lane < 31)
//  7 64-bit shuffle (__shfl_xor_sync of unsigned long long, lane ^ 1)
__global__ void shfl_kernel(long long* out) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  int v = lane;
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  out[t * 8 + 0] = v;
  out[t * 8 + 1] = __shfl_sync(0xffffffffu, lane * 7 + warp, 5);
  out[t * 8 + 2] = __shfl_down_sync(0xffffffffu, lane, 3);
  out[t * 8 + 3] = __shfl_up_sync(0xffffffffu, lane, 2);
  out[t * 8 + 4] = (long long)__ballot_sync(0xffffffffu, lane % 3 == 0);
  out[t * 8 + 5] = __any_sync(0xffffffffu, lane == 31);
  out[t * 8 + 6] = __all_sync(0xffffffffu, lane < 31);
  unsigned long long big = (1ull << 40) + (unsigned long long)lane;
  out[t * 8 + 7] = (long long)__shfl_xor_sync(0xffffffffu, big, 1);
}

API int selftest_shfl(long long* out) {
  return cucpu::launch(dim3(1), dim3(64), [&] { shfl_kernel(out); });
}

// tree reduction in shared memory; one block per row
__global__ void reduce_kernel(const float* in, float* out, int n) {
  __shared__ float buf[256];
  const int t = threadIdx.x;
  float s = 0.f;
  for (int i = t; i < n; i += blockDim.x) s += in[(size_t)blockIdx.x * n + i];
  buf[t] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (t < w) buf[t] += buf[t + w];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = buf[0];
}

API int selftest_reduce(const float* in, float* out, int rows, int n, int workers) {
  return cucpu::launch(dim3(rows), dim3(256), [&] { reduce_kernel(in, out, n); }, workers);
}

__global__ void atomic_kernel(float* acc, int* count) {
  atomicAdd(acc + (threadIdx.x & 3), 0.5f);
  atomicAdd(count, 1);
}

API int selftest_atomics(float* acc, int* count, int blocks, int workers) {
  return cucpu::launch(dim3(blocks), dim3(128), [&] { atomic_kernel(acc, count); }, workers);
}

__global__ void divergent_sync_kernel() {
  if (threadIdx.x < 16) __syncthreads();
}
__global__ void divergent_shfl_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  if (lane < 16)
    out[threadIdx.x] = __shfl_sync(0xffffffffu, lane, 0);
  else
    out[threadIdx.x] = (int)__ballot_sync(0xffffffffu, 1);
}
__global__ void partial_mask_kernel(int* out) { out[threadIdx.x] = __shfl_sync(0x0000ffffu, 1, 0); }

// which: 0 divergent __syncthreads, 1 divergent warp intrinsics, 2 partial mask
API int selftest_fault(int which, int* scratch, char* msg, int msg_len) {
  int rc;
  if (which == 0)
    rc = cucpu::launch(dim3(2), dim3(64), [&] { divergent_sync_kernel(); });
  else if (which == 1)
    rc = cucpu::launch(dim3(1), dim3(32), [&] { divergent_shfl_kernel(scratch); });
  else
    rc = cucpu::launch(dim3(1), dim3(32), [&] { partial_mask_kernel(scratch); });
  std::lock_guard<std::mutex> g(cucpu::error_mutex());
  snprintf(msg, (size_t)msg_len, "%s", cucpu::last_error().c_str());
  return rc;
}

API void selftest_half(const float* in, unsigned short* bits, float* back, int n) {
  for (int i = 0; i < n; ++i) {
    __half h = __float2half(in[i]);
    bits[i] = h.x;
    back[i] = __half2float(h);
  }
}
