/* s3rt_readout.h: C API of the fused top-k memory readout (libs3rt_readout.so, CUDA) and of its
 * CPU harness (the same kernels compiled for the CPU with kernels/cpu/cuda_on_cpu.h).
 *
 * Tensors (all contiguous, row-major):
 *   query_key, query_selection [B, C, P]   key dtype (float32 or float16)
 *   mem_key                    [B, C, M]   key dtype
 *   mem_shrinkage              [B, 1, M]   key dtype
 *   mem_values                 [B, N, V, M] (layout 0) or [B, M, N*V] (layout 1), value dtype
 *   valid                      [B, M]      uint8 / bool, nonzero = valid; NULL = all valid
 *   out                        [B, N, V, P] out dtype (float32 or float16); accumulation is FP32
 *   usage                      [B, M]      float32, NULL = not wanted; weights are ADDED to it
 * C (key dim) must be 16, 32 or 64; top_k 1..64 (k = min(top_k, M) is used); at least one valid
 * slot per batch element (with none, the readout is 0).
 *
 * Use: s3rt_readout_plan(...) gives the number of splits and the workspace size; allocate the
 * workspace (device memory for the CUDA library, host memory for the CPU harness) and pass both to
 * the launch function together with the same top_k. Return codes: 0 success; -1 invalid argument
 * (s3rt_readout_error_string(-1) then describes it); otherwise a cudaError_t from the runtime (the
 * CPU harness: 719 for a failed launch, e.g. a deadlock or divergent warp intrinsics).
 */
#ifndef S3RT_READOUT_H
#define S3RT_READOUT_H

#ifdef __cplusplus
extern "C" {
#endif

#define S3RT_READOUT_ABI_VERSION 1
#define S3RT_DTYPE_FLOAT32 0
#define S3RT_DTYPE_FLOAT16 1
#define S3RT_LAYOUT_CHANNELS_FIRST 0 /* [B, N, V, M] */
#define S3RT_LAYOUT_SLOT_MAJOR 1     /* [B, M, N*V]: coalesced gather */

int s3rt_readout_abi_version(void);

/* num_splits <= 0 chooses from sm_count (the device's multiprocessor count; 0 = one split). */
int s3rt_readout_plan(int B, int P, int M, int top_k, int num_splits, int sm_count, int* splits_out,
                      int* k_out, long long* workspace_bytes_out);

/* Message for a return code: the last invalid-argument message of this thread for -1, the CUDA
 * runtime's error string otherwise. */
const char* s3rt_readout_error_string(int code);

/* CUDA library only: launches on `stream` (a cudaStream_t; NULL = the legacy default stream) after
 * making `device` current. Asynchronous: errors inside the kernels surface at the next sync. */
int s3rt_readout_launch(const void* query_key, const void* query_selection, const void* mem_key,
                        const void* mem_shrinkage, const void* mem_values, const void* valid, void* out,
                        float* usage, int B, int C, int P, int M, int N, int V, int top_k, int key_dtype,
                        int value_dtype, int out_dtype, int values_layout, int num_splits, void* workspace,
                        long long workspace_bytes, int device, void* stream);

/* CUDA library only: 0 when `device` can run kernels, else the CUDA error (e.g. 35, no driver). */
int s3rt_readout_device_check(int device, int* sm_count_out);

/* CPU harness only: runs synchronously on host memory with num_threads OS threads (0 = all cores). */
int s3rt_readout_cpu_launch(const void* query_key, const void* query_selection, const void* mem_key,
                            const void* mem_shrinkage, const void* mem_values, const void* valid, void* out,
                            float* usage, int B, int C, int P, int M, int N, int V, int top_k, int key_dtype,
                            int value_dtype, int out_dtype, int values_layout, int num_splits, void* workspace,
                            long long workspace_bytes, int num_threads);

#ifdef __cplusplus
}
#endif

#endif /* S3RT_READOUT_H */
