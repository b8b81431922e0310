// cuda_on_cpu.h: run CUDA kernel source on the CPU, faithfully enough to test it in CI.
//
// Include this header instead of the CUDA headers, then include the device code (.cuh) unchanged.
// Every CUDA thread of a block is a fiber (its own stack and registers); the fibers of one block
// run cooperatively on one OS thread and switch only at synchronisation points:
//   __syncthreads()                      block barrier
//   __syncwarp / __shfl*_sync / __ballot_sync / __any_sync / __all_sync
//                                        warp barrier: the lanes exchange values through a per-warp
//                                        buffer at the same program point, as on the GPU
// Blocks are spread over a pool of OS threads, so `__shared__` is `static thread_local` (one copy
// per worker thread, shared by the fibers of the block that worker runs) and atomicAdd is a real
// atomic. Lanes run one after another between synchronisation points, so code that relies on
// implicit warp lock-step (a shared-memory exchange without __syncwarp) fails here, as it may on
// Volta and later GPUs.
//
// Checked at run time (the launch returns an error with a message instead of hanging):
//   - a barrier that not every thread reaches (divergent __syncthreads, early return) -> deadlock
//   - lanes of one warp at different warp intrinsics at the same time (divergent shuffles)
//   - warp intrinsics called with a mask other than the whole warp (not supported here)
//
// Not emulated: dynamic shared memory, cooperative groups, clusters, memory fences beyond the
// barriers, streams (launches run synchronously), texture memory, warp-level matrix ops.
#pragma once

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <math.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(_FORTIFY_SOURCE) && _FORTIFY_SOURCE > 0
#error "cuda_on_cpu.h switches stacks with _longjmp; build with -U_FORTIFY_SOURCE"
#endif

// ------------------------------------------------------------------ qualifiers and builtin types
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __constant__ static const
#define __align__(n) __attribute__((aligned(n)))
#define CUDA_ON_CPU 1

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 719 };
typedef void* cudaStream_t;

namespace cucpu {

// ------------------------------------------------------------------ fibers and the block scheduler
enum FiberState { kReady = 0, kBlocked = 1, kDone = 2 };
enum WarpOp { kOpNone = 0, kOpSyncwarp = 1, kOpShfl = 2, kOpBallot = 3 };

struct Fiber {
  jmp_buf ctx;
  ucontext_t start_ctx;
  char* stack = nullptr;
  uint3 tid{0, 0, 0};
  int linear = 0;
  int state = kReady;
  bool started = false;
  unsigned phase = 0;  // which half of the warp exchange buffer this lane uses next
};

struct Warp {
  unsigned full_mask = 0;     // lanes that exist in this warp
  unsigned arrived = 0;       // lanes waiting at the current warp barrier
  int op = kOpNone;           // the intrinsic they are waiting in
  uint64_t buf[2][32] = {};   // double-buffered exchange slots, one per lane
  std::vector<int> waiters;
};

struct Worker {
  size_t stack_bytes = 0;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<int> ready;   // FIFO of runnable fibers
  size_t ready_head = 0;
  int current = -1;
  int nthreads = 0;
  int block_arrived = 0;
  std::vector<int> block_waiters;
  jmp_buf sched;
  const std::function<void()>* body = nullptr;
  uint3 block_idx{0, 0, 0};
  dim3 block_dim, grid_dim;
  std::string error;
  ~Worker() {
    for (auto& f : fibers)
      if (f.stack) munmap(f.stack - page(), stack_bytes + page());
  }
  static size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }
};

inline thread_local Worker* tl_worker = nullptr;
inline thread_local uint3 tl_thread_idx{0, 0, 0};

[[noreturn]] __attribute__((noinline)) inline void leave_fiber_for_good() {
  Worker& w = *tl_worker;
  _longjmp(w.sched, 1);
}

// Give the OS thread back to the scheduler; returns when this fiber is resumed.
__attribute__((noinline)) inline void yield_to_scheduler() {
  Worker& w = *tl_worker;
  Fiber& f = w.fibers[w.current];
  if (_setjmp(f.ctx) == 0) _longjmp(w.sched, 1);
}

// An error inside a fiber: record it, stop this fiber; the scheduler abandons the block.
[[noreturn]] inline void fiber_fatal(const std::string& msg) {
  Worker& w = *tl_worker;
  if (w.error.empty()) w.error = msg;
  w.fibers[w.current].state = kDone;
  leave_fiber_for_good();
}

inline void fiber_entry() {
  Worker& w = *tl_worker;
  (*w.body)();
  w.fibers[w.current].state = kDone;
  leave_fiber_for_good();
}

inline void make_ready(Worker& w, int f) {
  w.fibers[f].state = kReady;
  w.ready.push_back(f);
}

inline void block_barrier() {
  Worker& w = *tl_worker;
  if (++w.block_arrived == w.nthreads) {
    w.block_arrived = 0;
    for (int f : w.block_waiters) make_ready(w, f);
    w.block_waiters.clear();
    return;
  }
  w.block_waiters.push_back(w.current);
  w.fibers[w.current].state = kBlocked;
  yield_to_scheduler();
}

inline const char* op_name(int op) {
  switch (op) {
    case kOpSyncwarp: return "__syncwarp";
    case kOpShfl: return "__shfl*_sync";
    case kOpBallot: return "__ballot_sync/__any_sync/__all_sync";
    default: return "?";
  }
}

inline void warp_barrier(unsigned mask, int op) {
  Worker& w = *tl_worker;
  Fiber& f = w.fibers[w.current];
  int lane = f.linear & 31;
  Warp& wp = w.warps[f.linear >> 5];
  if (mask != wp.full_mask) {
    char buf[160];
    snprintf(buf, sizeof buf, "%s called with mask 0x%08x by warp %d, whose lanes are 0x%08x: "
             "only whole-warp masks are emulated", op_name(op), mask, f.linear >> 5, wp.full_mask);
    fiber_fatal(buf);
  }
  if (wp.arrived == 0) {
    wp.op = op;
  } else if (wp.op != op) {
    char buf[200];
    snprintf(buf, sizeof buf, "divergent warp intrinsics: lane %d of warp %d is in %s while other lanes "
             "(0x%08x) wait in %s", lane, f.linear >> 5, op_name(op), wp.arrived, op_name(wp.op));
    fiber_fatal(buf);
  }
  wp.arrived |= 1u << lane;
  if (wp.arrived == wp.full_mask) {
    wp.arrived = 0;
    wp.op = kOpNone;
    for (int g : wp.waiters) make_ready(w, g);
    wp.waiters.clear();
    return;
  }
  wp.waiters.push_back(w.current);
  f.state = kBlocked;
  yield_to_scheduler();
}

// Runs one block to completion on the calling OS thread. Returns false (w.error set) on deadlock
// or on an error raised inside the kernel.
inline bool run_block(Worker& w) {
  const int n = w.nthreads;
  if ((int)w.fibers.size() < n) {
    size_t old = w.fibers.size();
    w.fibers.resize(n);
    for (size_t i = old; i < (size_t)n; ++i) {
      // a guard page below each stack turns an overflow into a crash instead of corruption
      size_t pg = Worker::page();
      char* base = (char*)mmap(nullptr, w.stack_bytes + pg, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (base == MAP_FAILED) {
        w.error = "mmap of a fiber stack failed";
        w.fibers.resize(i);
        return false;
      }
      mprotect(base, pg, PROT_NONE);
      w.fibers[i].stack = base + pg;
    }
  }
  const int nwarps = (n + 31) / 32;
  w.warps.assign(nwarps, Warp());
  for (int i = 0; i < nwarps; ++i) {
    int lanes = std::min(32, n - 32 * i);
    w.warps[i].full_mask = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
  }
  w.ready.clear();
  w.ready_head = 0;
  w.block_arrived = 0;
  w.block_waiters.clear();
  for (int i = 0; i < n; ++i) {
    Fiber& f = w.fibers[i];
    f.linear = i;
    f.tid = uint3{(unsigned)(i % w.block_dim.x), (unsigned)((i / w.block_dim.x) % w.block_dim.y),
                  (unsigned)(i / (w.block_dim.x * w.block_dim.y))};
    f.state = kReady;
    f.started = false;
    f.phase = 0;
    getcontext(&f.start_ctx);
    f.start_ctx.uc_stack.ss_sp = f.stack;
    f.start_ctx.uc_stack.ss_size = w.stack_bytes;
    f.start_ctx.uc_link = nullptr;
    makecontext(&f.start_ctx, (void (*)())fiber_entry, 0);
    w.ready.push_back(i);
  }
  int done = 0;
  while (done < n) {
    if (!w.error.empty()) return false;
    if (w.ready_head == w.ready.size()) {
      // nothing runnable but some threads unfinished: a barrier that not all threads reach
      int blocked_block = (int)w.block_waiters.size(), finished = 0;
      for (int i = 0; i < n; ++i) finished += w.fibers[i].state == kDone;
      char buf[240];
      snprintf(buf, sizeof buf, "deadlock in block (%u,%u,%u): %d of %d threads finished, %d wait in "
               "__syncthreads, the rest in warp intrinsics (a barrier not reached by every thread)",
               w.block_idx.x, w.block_idx.y, w.block_idx.z, finished, n, blocked_block);
      w.error = buf;
      return false;
    }
    int i = w.ready[w.ready_head++];
    if (w.ready_head > 4096 && w.ready_head * 2 > w.ready.size()) {
      w.ready.erase(w.ready.begin(), w.ready.begin() + (long)w.ready_head);
      w.ready_head = 0;
    }
    Fiber& f = w.fibers[i];
    w.current = i;
    tl_thread_idx = f.tid;
    if (_setjmp(w.sched) == 0) {
      if (!f.started) {
        f.started = true;
        setcontext(&f.start_ctx);
      } else {
        _longjmp(f.ctx, 1);
      }
    }
    if (w.fibers[i].state == kDone) ++done;
  }
  return w.error.empty();
}

inline int default_workers() {
  if (const char* s = getenv("S3RT_CPU_THREADS")) {
    int v = atoi(s);
    if (v > 0) return v;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? (int)hc : 1;
}

inline std::mutex& error_mutex() {
  static std::mutex m;
  return m;
}
inline std::string& last_error() {
  static std::string s;
  return s;
}

// Launch body() for every thread of every block. Blocks run in parallel on `workers` OS threads.
// Returns cudaSuccess, or cudaErrorLaunchFailure with last_error() describing the problem.
inline int launch(dim3 grid, dim3 block, const std::function<void()>& body, int workers = 0) {
  const long nblocks = (long)grid.x * grid.y * grid.z;
  const int nthreads = (int)(block.x * block.y * block.z);
  if (nblocks <= 0 || nthreads <= 0 || nthreads > 1024) {
    std::lock_guard<std::mutex> g(error_mutex());
    last_error() = "invalid launch configuration";
    return cudaErrorInvalidValue;
  }
  if (workers <= 0) workers = default_workers();
  workers = (int)std::min<long>(workers, nblocks);
  std::atomic<long> next{0};
  std::atomic<bool> failed{false};
  auto work = [&]() {
    Worker w;
    w.stack_bytes = 128 * 1024;
    w.nthreads = nthreads;
    w.block_dim = block;
    w.grid_dim = grid;
    w.body = &body;
    Worker* saved = tl_worker;
    tl_worker = &w;
    for (long b = next++; b < nblocks && !failed; b = next++) {
      w.block_idx = uint3{(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y),
                          (unsigned)(b / ((long)grid.x * grid.y))};
      if (!run_block(w)) {
        failed = true;
        std::lock_guard<std::mutex> g(error_mutex());
        last_error() = w.error;
        break;
      }
    }
    tl_worker = saved;
  };
  if (workers == 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (int i = 0; i < workers; ++i) pool.emplace_back(work);
    for (auto& t : pool) t.join();
  }
  return failed ? cudaErrorLaunchFailure : cudaSuccess;
}

template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type over 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <class T>
inline T shfl_exchange(unsigned mask, T var, int src_lane, int width) {
  Worker& w = *tl_worker;
  if (width != 32) fiber_fatal("__shfl*_sync with width != 32 is not emulated");
  Fiber& f = w.fibers[w.current];
  Warp& wp = w.warps[f.linear >> 5];
  const unsigned ph = f.phase;
  f.phase ^= 1u;
  wp.buf[ph][f.linear & 31] = to_bits(var);
  warp_barrier(mask, kOpShfl);
  // a lane outside the warp (partial last warp) reads its own value, as the GPU does
  int src = src_lane & 31;
  if (!((wp.full_mask >> src) & 1u)) src = f.linear & 31;
  return from_bits<T>(wp.buf[ph][src]);
}

inline unsigned ballot_exchange(unsigned mask, int pred) {
  Worker& w = *tl_worker;
  Fiber& f = w.fibers[w.current];
  Warp& wp = w.warps[f.linear >> 5];
  const unsigned ph = f.phase;
  f.phase ^= 1u;
  wp.buf[ph][f.linear & 31] = pred ? 1u : 0u;
  warp_barrier(mask, kOpBallot);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if (((mask >> l) & 1u) && wp.buf[ph][l]) r |= 1u << l;
  return r;
}

}  // namespace cucpu

// ------------------------------------------------------------------ thread indices
#define threadIdx (cucpu::tl_thread_idx)
#define blockIdx (cucpu::tl_worker->block_idx)
#define blockDim (cucpu::tl_worker->block_dim)
#define gridDim (cucpu::tl_worker->grid_dim)
static constexpr int warpSize = 32;

// ------------------------------------------------------------------ synchronisation and warp ops
inline void __syncthreads() { cucpu::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { cucpu::warp_barrier(mask, cucpu::kOpSyncwarp); }

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  return cucpu::shfl_exchange(mask, var, src_lane, width);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  int lane = cucpu::tl_worker->fibers[cucpu::tl_worker->current].linear & 31;
  return cucpu::shfl_exchange(mask, var, lane ^ lane_mask, width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  int lane = cucpu::tl_worker->fibers[cucpu::tl_worker->current].linear & 31;
  int src = lane + (int)delta;
  return cucpu::shfl_exchange(mask, var, src < 32 ? src : lane, width);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  int lane = cucpu::tl_worker->fibers[cucpu::tl_worker->current].linear & 31;
  int src = lane - (int)delta;
  return cucpu::shfl_exchange(mask, var, src >= 0 ? src : lane, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return cucpu::ballot_exchange(mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return cucpu::ballot_exchange(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return cucpu::ballot_exchange(mask, pred) == mask; }

// ------------------------------------------------------------------ bit and math intrinsics
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __fdividef(float a, float b) { return a / b; }

// ------------------------------------------------------------------ atomics (blocks run in parallel)
inline float atomicAdd(float* addr, float v) {  // compare-and-swap on the bit pattern, as the GPU's
  unsigned* a = reinterpret_cast<unsigned*>(addr);  // result: some order of the additions
  unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
  for (;;) {
    unsigned want = __float_as_uint(__uint_as_float(old) + v);
    if (__atomic_compare_exchange_n(a, &old, want, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
      return __uint_as_float(old);
  }
}
inline int atomicAdd(int* addr, int v) { return __atomic_fetch_add(addr, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* addr, unsigned v) { return __atomic_fetch_add(addr, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* addr, unsigned long long v) {
  return __atomic_fetch_add(addr, v, __ATOMIC_RELAXED);
}
inline int atomicMax(int* addr, int v) {
  int old = __atomic_load_n(addr, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(addr, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

// ------------------------------------------------------------------ __half (IEEE binary16 storage)
struct __half {
  uint16_t x;
};

inline float __half2float(__half h) {
  const uint32_t sign = (uint32_t)(h.x & 0x8000u) << 16;
  uint32_t exp = (h.x >> 10) & 0x1fu;
  uint32_t man = h.x & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400u));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  return __uint_as_float(bits);
}

// round to nearest even, as __float2half does
inline __half __float2half(float f) {
  uint32_t x = __float_as_uint(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t absx = x & 0x7fffffffu;
  __half h;
  if (absx >= 0x7f800000u) {  // inf or nan
    h.x = sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u);
    return h;
  }
  if (absx >= 0x477ff000u) {  // rounds to >= 65520 -> inf
    h.x = sign | 0x7c00u;
    return h;
  }
  if (absx < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    if (absx < 0x33000000u) {  // < 2^-25 rounds to 0
      h.x = sign;
      return h;
    }
    uint32_t man = (absx & 0x7fffffu) | 0x800000u;
    int shift = 113 - (int)(absx >> 23) + 13;  // exponent distance plus the 13 dropped bits
    uint32_t q = man >> shift, rem = man & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    h.x = sign | (uint16_t)q;
    return h;
  }
  uint32_t q = ((absx >> 13) - (112u << 10));
  uint32_t rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
  h.x = sign | (uint16_t)q;
  return h;
}
