// memory_readout.cuh: the fused top-k memory readout of Cutie / S3 (s3rt.model.memory_readout).
//
// The device code and the host-side planning/dispatch live here, in one header, so that the CUDA
// library (memory_readout.cu, nvcc) and the CPU harness (cpu/readout_cpu.cpp, g++ with
// cpu/cuda_on_cpu.h) compile exactly the same kernels.
//
// For every query pixel p of batch element b:
//   S(n,p) = -(s_n / sqrt(C)) * sum_c e_pc (k_nc - q_pc)^2          over valid memory slots n
//   keep the top k of S(.,p); w = softmax of those k (FP32, maximum subtracted)
//   out[b,o,v,p] = sum_j w_j * values[b,o,v,n_j]                    for every object o
//   usage[b,n_j] += w_j                                              (optional)
//
// Two kernels, no memory x pixels array anywhere:
//   1. select_kernel, grid (ceil(P/64), splits, B): a block owns 64 query pixels and one contiguous
//      range of memory slots (a "split"). It keeps the block's queries in shared memory, streams
//      the keys through shared memory in tiles of 64 slots (chunks of up to 32 channels, the next
//      chunk prefetched into registers while the current one is used), and computes S as a
//      2C-long dot product per (slot, pixel): sum_c e k^2 - 2 e q k, plus sum_c e q^2.
//      Each warp owns 8 pixels; lane l computes S for slots l and l+32 of the tile for all 8, so
//      the scores land directly in the lanes that filter them. Per pixel the warp keeps its top k
//      as 64-bit keys sorted across the lanes' registers (1 or 2 per lane) plus the warp-uniform
//      k-th key; a ballot rejects almost every candidate in one instruction, and a rare survivor
//      is broadcast, ranked with a ballot and inserted with one shfl_up.
//      The split's top k per pixel (k keys) goes to a small workspace [B, P, splits, k].
//   2. gather_kernel, grid (ceil(P/8), B): one warp per pixel merges the splits' lists with the
//      same warp top-k, takes the max-subtracted softmax, adds usage, and writes (weight, slot)
//      pairs to shared memory; then the block's 256 threads, one per output channel (object x
//      value channel), gather-sum the k selected value columns for its 8 pixels.
//
// A key packs (score, slot) so that one unsigned comparison is the total order "higher score
// first, then lower slot index": high 32 bits = the score's bits mapped to an order-preserving
// unsigned, low 32 bits = 0xffffffff - slot. The result is therefore deterministic (ties go to the
// lower slot index) and independent of the number of splits. Keys whose high half is 0 are
// "empty" (fewer than k valid slots) or unused register positions (j >= k).
#pragma once

#ifndef CUDA_ON_CPU
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif
#include <stdint.h>
#include <stdio.h>

namespace s3rt_readout {

typedef unsigned long long u64;

constexpr int kThreads = 256;        // both kernels
constexpr int kWarps = kThreads / 32;
constexpr int kPixPerWarp = 8;       // select: pixels owned by one warp
constexpr int kTileP = kWarps * kPixPerWarp;  // select: 64 pixels per block
constexpr int kTileM = 64;           // select: memory slots per tile (two per lane)
constexpr int kMaxK = 64;
constexpr int kGatherPix = kWarps;   // gather: 8 pixels per block, one warp each for the merge
constexpr unsigned kFull = 0xffffffffu;

enum DType { kFloat32 = 0, kFloat16 = 1 };
enum ValuesLayout {
  kChannelsFirst = 0,  // values [B, N, V, M], as the reference and the ONNX graph
  kSlotMajor = 1,      // values [B, M, N*V]: one slot's values are contiguous, so the gather is coalesced
};

struct Params {
  const void* query_key;        // [B, C, P]
  const void* query_selection;  // [B, C, P]
  const void* mem_key;          // [B, C, M]
  const void* mem_shrinkage;    // [B, 1, M]
  const void* mem_values;       // [B, N, V, M] or [B, M, N*V]
  const unsigned char* valid;   // [B, M] (uint8 / bool) or null = all valid
  void* out;                    // [B, N, V, P]
  float* usage;                 // [B, M] or null
  u64* workspace;               // [B, P, splits, k]
  int B, C, P, M, NV, k;        // k: effective k = min(top_k, M)
  int splits, slots_per_split;
  int out_f16;
  long long v_stride_slot, v_stride_chan;  // element strides of mem_values within one batch element
};

// ------------------------------------------------------------------ device helpers

__device__ __forceinline__ float load_f(const float* p) { return *p; }
__device__ __forceinline__ float load_f(const __half* p) { return __half2float(*p); }

// float -> unsigned with the same order (for every non-NaN float)
__device__ __forceinline__ unsigned order_bits(float s) {
  unsigned u = __float_as_uint(s);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float unorder_bits(unsigned h) {
  return __uint_as_float((h & 0x80000000u) ? (h & 0x7fffffffu) : ~h);
}
__device__ __forceinline__ u64 make_key(float s, int slot) {
  return ((u64)order_bits(s) << 32) | (u64)(0xffffffffu - (unsigned)slot);
}
__device__ __forceinline__ int key_slot(u64 key) { return (int)(0xffffffffu - (unsigned)key); }
__device__ __forceinline__ float key_score(u64 key) { return unorder_bits((unsigned)(key >> 32)); }
// a real (score, slot) entry, not an empty or unused position (high half 0). Real keys have a
// high half of at least order_bits(-inf) + 1 = 0x00800000, since -inf and NaN are never stored.
__device__ __forceinline__ bool key_real(u64 key) { return (key >> 32) != 0ull; }
// candidate key for score s at slot n: 0 (never taken) when s is NaN (invalid slot) or -inf.
// Tested on the bits, so that it holds under --use_fast_math too.
__device__ __forceinline__ u64 candidate_key(float s, int slot) {
  const unsigned u = __float_as_uint(s);
  return ((u & 0x7fffffffu) <= 0x7f800000u && u != 0xff800000u) ? make_key(s, slot) : 0ull;
}

// A warp's top-k list, sorted in descending key order across the warp: entry j (0 = best) is in
// register e = j / 32 of lane j % 32 (KPL = 1 register per lane for k <= 32, 2 for k <= 64).
// Entries j < k start "empty" (keys kMaxK - j: descending, distinct, below any real key);
// positions j >= k hold 0 and never move. `worst` (entry k-1, the same on every lane) is the
// threshold a candidate must beat.
template <int KPL>
__device__ __forceinline__ void list_init(u64 (&list)[KPL], u64& worst, int lane, int k) {
#pragma unroll
  for (int e = 0; e < KPL; ++e) {
    const int j = e * 32 + lane;
    list[e] = j < k ? (u64)(kMaxK - j) : 0ull;
  }
  worst = (u64)(kMaxK - (k - 1));
}

// Offer one candidate per lane. A ballot rejects everything not above `worst` at once; each
// survivor (in lane order) is broadcast, its rank is counted with one ballot per register, the
// entries below it shift down one place (shfl_up), and the new k-th entry is broadcast.
template <int KPL>
__device__ __forceinline__ void offer(u64 (&list)[KPL], u64& worst, u64 cand, int lane, int k) {
  unsigned mask = __ballot_sync(kFull, cand > worst);
  while (mask) {
    const int src = __ffs(mask) - 1;
    mask &= mask - 1;
    const u64 c = __shfl_sync(kFull, cand, src);
    if (c > worst) {  // warp-uniform
      int pos = 0;    // entries above c (positions >= k hold 0: never above)
#pragma unroll
      for (int e = 0; e < KPL; ++e) pos += __popc(__ballot_sync(kFull, list[e] > c));
      u64 up[KPL], last[KPL];
#pragma unroll
      for (int e = 0; e < KPL; ++e) {
        up[e] = __shfl_up_sync(kFull, list[e], 1);
        last[e] = KPL > 1 ? __shfl_sync(kFull, list[e], 31) : 0ull;
      }
#pragma unroll
      for (int e = 0; e < KPL; ++e) {
        const int j = e * 32 + lane;
        const u64 prev = lane == 0 ? (e > 0 ? last[e > 0 ? e - 1 : 0] : 0ull) : up[e];
        if (j < k) list[e] = j == pos ? c : (j > pos ? prev : list[e]);
      }
      worst = __shfl_sync(kFull, list[KPL - 1], (k - 1) - 32 * (KPL - 1));
    }
  }
}

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFull, v, off);
  return v;
}

// ------------------------------------------------------------------ kernel 1: similarity + per-split top-k

template <int C, int KPL, typename KT>
__global__ void __launch_bounds__(kThreads, 2) select_kernel(const Params p) {
  static_assert(C == 16 || C == 32 || C == 64, "key dim must be 16, 32 or 64");
  constexpr int CK = C < 32 ? C : 32;              // key channels per shared-memory chunk
  constexpr int NCHUNK = C / CK;
  constexpr int LOADS = CK * kTileM / kThreads;    // key elements each thread loads per chunk
  static_assert(CK * kTileM % kThreads == 0, "chunk must divide over the block");

  __shared__ __align__(16) float e_s[C][kTileP];  // selection e
  __shared__ __align__(16) float f_s[C][kTileP];  // -2 e q
  __shared__ float k_s[CK][kTileM];               // key chunk
  __shared__ float coef_s[kTileM];                // -s_n / sqrt(C); NaN = invalid or past the end
  __shared__ float b_s[kTileP];                   // sum_c e q^2
  __shared__ float part_s[kThreads / kTileP][kTileP];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int b = blockIdx.z, split = blockIdx.y;
  const int p0 = blockIdx.x * kTileP;
  const int P = p.P, M = p.M;
  const int m_begin = split * p.slots_per_split;
  const int m_end = (M - m_begin < p.slots_per_split) ? M : m_begin + p.slots_per_split;

  const KT* qk = (const KT*)p.query_key + (size_t)b * C * P;
  const KT* qe = (const KT*)p.query_selection + (size_t)b * C * P;
  const KT* mk = (const KT*)p.mem_key + (size_t)b * C * M;
  const KT* ms = (const KT*)p.mem_shrinkage + (size_t)b * M;
  const unsigned char* valid = p.valid ? p.valid + (size_t)b * M : nullptr;
  const float neg_inv_sqrt_c = -1.0f / sqrtf((float)C);
  const float nan_f = __uint_as_float(0x7fc00000u);

  // 1. the block's queries -> shared memory (coalesced along pixels)
  {
    const int px = tid % kTileP, g = tid / kTileP;
    float acc = 0.f;
    for (int c = g; c < C; c += kThreads / kTileP) {
      float e = 0.f, q = 0.f;
      if (p0 + px < P) {
        e = load_f(qe + (size_t)c * P + p0 + px);
        q = load_f(qk + (size_t)c * P + p0 + px);
      }
      e_s[c][px] = e;
      f_s[c][px] = -2.f * e * q;
      acc = fmaf(e * q, q, acc);
    }
    part_s[g][px] = acc;
  }
  __syncthreads();
  if (tid < kTileP) {
    float s = 0.f;
#pragma unroll
    for (int g = 0; g < kThreads / kTileP; ++g) s += part_s[g][tid];
    b_s[tid] = s;
  }

  // 2. per-pixel top-k lists in registers
  u64 list[kPixPerWarp][KPL];
  u64 worst[kPixPerWarp];
#pragma unroll
  for (int i = 0; i < kPixPerWarp; ++i) list_init(list[i], worst[i], lane, p.k);

  // 3. stream the split's slots: tiles of 64 slots, chunks of CK channels
  const int ntiles = (m_end - m_begin + kTileM - 1) / kTileM;
  const int nsteps = ntiles * NCHUNK;
  float kreg[LOADS];
  float creg = nan_f;

  auto prefetch = [&](int step) {
    const int chunk = step % NCHUNK;
    const int m0 = m_begin + (step / NCHUNK) * kTileM;
#pragma unroll
    for (int r = 0; r < LOADS; ++r) {
      const int i = tid + r * kThreads;
      const int c = chunk * CK + i / kTileM, n = m0 + i % kTileM;
      kreg[r] = n < m_end ? load_f(mk + (size_t)c * M + n) : 0.f;
    }
    if (chunk == 0 && tid < kTileM) {
      const int n = m0 + tid;
      creg = (n < m_end && (!valid || valid[n])) ? load_f(ms + n) * neg_inv_sqrt_c : nan_f;
    }
  };

  float acc[kPixPerWarp][2];
  if (nsteps > 0) prefetch(0);
  for (int step = 0; step < nsteps; ++step) {
    const int chunk = step % NCHUNK;
    __syncthreads();  // everyone is done with the previous chunk
#pragma unroll
    for (int r = 0; r < LOADS; ++r) {
      const int i = tid + r * kThreads;
      k_s[i / kTileM][i % kTileM] = kreg[r];
    }
    if (chunk == 0 && tid < kTileM) coef_s[tid] = creg;
    __syncthreads();
    if (step + 1 < nsteps) prefetch(step + 1);  // in flight while this chunk is used

    if (chunk == 0) {
#pragma unroll
      for (int i = 0; i < kPixPerWarp; ++i) acc[i][0] = acc[i][1] = 0.f;
    }
#pragma unroll 4
    for (int c = 0; c < CK; ++c) {
      const float k0 = k_s[c][lane], k1 = k_s[c][lane + 32];
      const float k0s = k0 * k0, k1s = k1 * k1;
      const float4 ea = *reinterpret_cast<const float4*>(&e_s[chunk * CK + c][warp * kPixPerWarp]);
      const float4 eb = *reinterpret_cast<const float4*>(&e_s[chunk * CK + c][warp * kPixPerWarp + 4]);
      const float4 fa = *reinterpret_cast<const float4*>(&f_s[chunk * CK + c][warp * kPixPerWarp]);
      const float4 fb = *reinterpret_cast<const float4*>(&f_s[chunk * CK + c][warp * kPixPerWarp + 4]);
      const float ev[kPixPerWarp] = {ea.x, ea.y, ea.z, ea.w, eb.x, eb.y, eb.z, eb.w};
      const float fv[kPixPerWarp] = {fa.x, fa.y, fa.z, fa.w, fb.x, fb.y, fb.z, fb.w};
#pragma unroll
      for (int i = 0; i < kPixPerWarp; ++i) {
        acc[i][0] = fmaf(ev[i], k0s, acc[i][0]);
        acc[i][0] = fmaf(fv[i], k0, acc[i][0]);
        acc[i][1] = fmaf(ev[i], k1s, acc[i][1]);
        acc[i][1] = fmaf(fv[i], k1, acc[i][1]);
      }
    }

    if (chunk == NCHUNK - 1) {  // the tile's scores are complete: filter them into the lists
      const int m0 = m_begin + (step / NCHUNK) * kTileM;
      const float c0 = coef_s[lane], c1 = coef_s[lane + 32];
#pragma unroll
      for (int i = 0; i < kPixPerWarp; ++i) {
        const float bq = b_s[warp * kPixPerWarp + i];
        offer(list[i], worst[i], candidate_key(c0 * (acc[i][0] + bq), m0 + lane), lane, p.k);
        offer(list[i], worst[i], candidate_key(c1 * (acc[i][1] + bq), m0 + lane + 32), lane, p.k);
      }
    }
  }

  // 4. the split's lists -> workspace [B, P, splits, k]; empty entries as 0
#pragma unroll
  for (int i = 0; i < kPixPerWarp; ++i) {
    const int px = p0 + warp * kPixPerWarp + i;
    if (px < P) {
      u64* dst = p.workspace + (((size_t)b * P + px) * p.splits + split) * p.k;
#pragma unroll
      for (int e = 0; e < KPL; ++e) {
        const int j = e * 32 + lane;
        if (j < p.k) dst[j] = (list[i][e] >> 32) ? list[i][e] : 0ull;
      }
    }
  }
}

// ------------------------------------------------------------------ kernel 2: merge, softmax, usage, gather

__device__ __forceinline__ void store_out(void* out, size_t i, float v, int f16) {
  if (f16)
    static_cast<__half*>(out)[i] = __float2half(v);
  else
    static_cast<float*>(out)[i] = v;
}

template <int KPL, typename VT>
__global__ void __launch_bounds__(kThreads) gather_kernel(const Params p) {
  __shared__ float w_s[kGatherPix][kMaxK];
  __shared__ int n_s[kGatherPix][kMaxK];
  __shared__ int cnt_s[kGatherPix];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int b = blockIdx.y;
  const int p0 = blockIdx.x * kGatherPix;
  const int P = p.P, M = p.M, NV = p.NV;

  const int px = p0 + warp;
  if (px < P) {  // warp-uniform
    u64 list[KPL];
    u64 worst;
    list_init(list, worst, lane, p.k);
    const int total = p.splits * p.k;
    const u64* src = p.workspace + ((size_t)b * P + px) * total;
    if (p.splits == 1) {  // already the sorted top k (empty entries are 0)
#pragma unroll
      for (int e = 0; e < KPL; ++e) {
        const int j = e * 32 + lane;
        list[e] = j < p.k ? src[j] : 0ull;
      }
    } else {
      for (int base = 0; base < total; base += 32) {
        u64 c = base + lane < total ? src[base + lane] : 0ull;
        if ((c >> 32) == 0ull) c = 0ull;  // an empty entry of a split
        offer(list, worst, c, lane, p.k);
      }
    }
    // The list is sorted: the real entries are positions 0..count-1 and entry 0 is the maximum.
    // Softmax in FP32 with the maximum subtracted.
    const float smax = key_score(__shfl_sync(kFull, list[0], 0));  // unused when nothing is real
    float w[KPL];
    float sum = 0.f;
    int count = 0;
#pragma unroll
    for (int e = 0; e < KPL; ++e) {
      const bool real = key_real(list[e]);
      w[e] = real ? expf(key_score(list[e]) - smax) : 0.f;
      sum += w[e];
      count += __popc(__ballot_sync(kFull, real));
    }
    sum = warp_sum(sum);
#pragma unroll
    for (int e = 0; e < KPL; ++e) {
      const int j = e * 32 + lane;
      if (j < count) {
        const float wt = w[e] / sum;
        const int n = key_slot(list[e]);
        w_s[warp][j] = wt;
        n_s[warp][j] = n;
        if (p.usage) atomicAdd(p.usage + (size_t)b * M + n, wt);
      }
    }
    if (lane == 0) cnt_s[warp] = count;
  } else if (lane == 0) {
    cnt_s[warp] = 0;
  }
  __syncthreads();

  // gather: thread = output channel (object x value channel); 8 pixels each
  const VT* vb = (const VT*)p.mem_values + (size_t)b * M * NV;
  const long long ss = p.v_stride_slot;
  for (int c = tid; c < NV; c += kThreads) {
    const VT* vc = vb + (long long)c * p.v_stride_chan;
    const size_t orow = ((size_t)b * NV + c) * P;
#pragma unroll
    for (int i = 0; i < kGatherPix; ++i) {
      const int cnt = cnt_s[i];
      float a = 0.f;
#pragma unroll 4
      for (int j = 0; j < cnt; ++j) a = fmaf(w_s[i][j], load_f(vc + (long long)n_s[i][j] * ss), a);
      if (p0 + i < P) store_out(p.out, orow + p0 + i, a, p.out_f16);
    }
  }
}

// ------------------------------------------------------------------ host side: plan, checks, dispatch

enum Status { kOk = 0, kInvalidArgument = -1 };  // -1: outside cudaError_t's range

struct Plan {
  int k = 0;                // effective k = min(top_k, M)
  int splits = 0;           // memory ranges searched by separate blocks
  int slots_per_split = 0;  // a multiple of kTileM
  long long workspace_bytes = 0;
};

inline int ceil_div(long long a, long long b) { return (int)((a + b - 1) / b); }

// num_splits <= 0: choose from sm_count (about two blocks per SM, at least 4 tiles per split).
inline int make_plan(int B, int P, int M, int top_k, int num_splits, int sm_count, Plan* out, char* msg,
                     size_t msg_len) {
  if (B < 1 || P < 1 || M < 1) {
    snprintf(msg, msg_len, "sizes must be positive: B=%d, P=%d, M=%d", B, P, M);
    return kInvalidArgument;
  }
  if (top_k < 1 || top_k > kMaxK) {
    snprintf(msg, msg_len, "top_k=%d is outside 1..%d", top_k, kMaxK);
    return kInvalidArgument;
  }
  if (M > (1 << 30) || P > (1 << 30)) {
    snprintf(msg, msg_len, "M=%d or P=%d is too large", M, P);
    return kInvalidArgument;
  }
  Plan pl;
  pl.k = top_k < M ? top_k : M;
  const int tiles_m = ceil_div(M, kTileM);
  const int tiles_p = ceil_div(P, kTileP);
  int s;
  if (num_splits <= 0) {
    const long long target = sm_count > 0 ? 2LL * sm_count : 1;
    s = ceil_div(target, (long long)tiles_p * B);
    const int by_size = ceil_div(M, 4 * kTileM);
    s = s < by_size ? s : by_size;
    s = s < 128 ? s : 128;
  } else {
    s = num_splits < tiles_m ? num_splits : tiles_m;
  }
  if (s < 1) s = 1;
  pl.slots_per_split = ceil_div(ceil_div(M, s), kTileM) * kTileM;
  pl.splits = ceil_div(M, pl.slots_per_split);  // every split is non-empty
  if (pl.splits > 65535) {
    snprintf(msg, msg_len, "too many splits (%d)", pl.splits);
    return kInvalidArgument;
  }
  pl.workspace_bytes = (long long)B * P * pl.splits * pl.k * (long long)sizeof(u64);
  *out = pl;
  return kOk;
}

struct Args {
  const void *query_key, *query_selection, *mem_key, *mem_shrinkage, *mem_values;
  const void* valid;
  void* out;
  float* usage;
  int B, C, P, M, N, V, top_k;
  int key_dtype, value_dtype, out_dtype, values_layout;
  int num_splits;
  void* workspace;
  long long workspace_bytes;
};

typedef void (*KernelFn)(const Params);

template <int C, int KPL>
inline KernelFn select_for_dtype(int key_dtype) {
  return key_dtype == kFloat16 ? (KernelFn)select_kernel<C, KPL, __half> : (KernelFn)select_kernel<C, KPL, float>;
}

template <int KPL>
inline KernelFn select_for_c(int C, int key_dtype) {
  switch (C) {
    case 16: return select_for_dtype<16, KPL>(key_dtype);
    case 32: return select_for_dtype<32, KPL>(key_dtype);
    case 64: return select_for_dtype<64, KPL>(key_dtype);
    default: return nullptr;
  }
}

// Checks the arguments, fills the kernel parameters and launches both kernels through
// `launch(kernel, grid, block, params) -> int` (0 = launched). Returns kOk, kInvalidArgument with
// `msg` filled, or the launcher's error code.
template <class Launch>
inline int run(const Args& a, Launch&& launch, char* msg, size_t msg_len) {
  Plan pl;
  if (int st = make_plan(a.B, a.P, a.M, a.top_k, a.num_splits, 0, &pl, msg, msg_len)) return st;
  if (a.num_splits < 1 || pl.splits != a.num_splits) {
    snprintf(msg, msg_len, "num_splits=%d is not a planned split count (s3rt_readout_plan gives %d)",
             a.num_splits, pl.splits);
    return kInvalidArgument;
  }
  if (a.C != 16 && a.C != 32 && a.C != 64) {
    snprintf(msg, msg_len, "key dim C=%d is not supported (16, 32 or 64)", a.C);
    return kInvalidArgument;
  }
  if (a.N < 1 || a.V < 1 || (long long)a.N * a.V > (1 << 24)) {
    snprintf(msg, msg_len, "bad value shape N=%d, V=%d", a.N, a.V);
    return kInvalidArgument;
  }
  if ((a.key_dtype != kFloat32 && a.key_dtype != kFloat16) || (a.value_dtype != kFloat32 && a.value_dtype != kFloat16) ||
      (a.out_dtype != kFloat32 && a.out_dtype != kFloat16)) {
    snprintf(msg, msg_len, "dtype codes must be 0 (float32) or 1 (float16): key %d, value %d, out %d", a.key_dtype,
             a.value_dtype, a.out_dtype);
    return kInvalidArgument;
  }
  if (a.values_layout != kChannelsFirst && a.values_layout != kSlotMajor) {
    snprintf(msg, msg_len, "values_layout=%d must be 0 ([B,N,V,M]) or 1 ([B,M,N*V])", a.values_layout);
    return kInvalidArgument;
  }
  if (!a.query_key || !a.query_selection || !a.mem_key || !a.mem_shrinkage || !a.mem_values || !a.out || !a.workspace) {
    snprintf(msg, msg_len, "a required pointer is null (only valid and usage may be null)");
    return kInvalidArgument;
  }
  if (a.workspace_bytes < pl.workspace_bytes) {
    snprintf(msg, msg_len, "workspace of %lld bytes is smaller than the %lld bytes needed", a.workspace_bytes,
             pl.workspace_bytes);
    return kInvalidArgument;
  }
  Params prm;
  prm.query_key = a.query_key;
  prm.query_selection = a.query_selection;
  prm.mem_key = a.mem_key;
  prm.mem_shrinkage = a.mem_shrinkage;
  prm.mem_values = a.mem_values;
  prm.valid = static_cast<const unsigned char*>(a.valid);
  prm.out = a.out;
  prm.usage = a.usage;
  prm.workspace = static_cast<u64*>(a.workspace);
  prm.B = a.B;
  prm.C = a.C;
  prm.P = a.P;
  prm.M = a.M;
  prm.NV = a.N * a.V;
  prm.k = pl.k;
  prm.splits = pl.splits;
  prm.slots_per_split = pl.slots_per_split;
  prm.out_f16 = a.out_dtype == kFloat16;
  if (a.values_layout == kSlotMajor) {
    prm.v_stride_slot = prm.NV;
    prm.v_stride_chan = 1;
  } else {
    prm.v_stride_slot = 1;
    prm.v_stride_chan = a.M;
  }
  const bool two = pl.k > 32;
  KernelFn sel = two ? select_for_c<2>(a.C, a.key_dtype) : select_for_c<1>(a.C, a.key_dtype);
  KernelFn gat;
  if (a.value_dtype == kFloat16)
    gat = two ? (KernelFn)gather_kernel<2, __half> : (KernelFn)gather_kernel<1, __half>;
  else
    gat = two ? (KernelFn)gather_kernel<2, float> : (KernelFn)gather_kernel<1, float>;

  const dim3 block(kThreads);
  if (int e = launch(sel, dim3(ceil_div(a.P, kTileP), pl.splits, a.B), block, prm)) return e;
  return launch(gat, dim3(ceil_div(a.P, kGatherPix), a.B, 1), block, prm);
}

}  // namespace s3rt_readout
