// Weight-streaming GEMM for small M on the GPU: C[M,N] (+)= A[M,K] · W'[N,K]ᵀ (+ bias), fp32
// activations and accumulation, weights fp32 or any QTensor format, decoded in registers, with
// optional perturb-on-load. Semantics (layouts, scales, zero-points, w' = fma(alpha, z, w),
// dense or sparse index list) are those of the CPU gemm, native/cpu/gemm.h, through the same
// ZT_HD functions (qt_code_at, q_value/q_decode, direction_at, perturbed).
//
// Kernels:
//   fast (M <= kGemvMaxM): one warp per (row n, K split); lane l takes the 64-element chunks
//     l, l + 32, ... of its split, read with 16-byte non-coherent loads and decoded in registers.
//     Order per lane: each half chunk (32 elements, never across a scale group) sums t = Σ x·v in
//     k order (v the unscaled code value, q_value), then acc = fma(s, t, acc); formats without
//     scales, and every perturbed call, chain acc = fma(x, w', acc) with w' = fma(alpha, z, s·v).
//     Then a butterfly warp sum (xor 16, 8, 4, 2, 1); splits are added in split order by a second
//     kernel; then C (when accumulating) and bias are added. A perturbed chunk whose direction
//     index is 64-aligned takes its 64 z from 8 Philox blocks (8 normals each) instead of 64.
//   staged (M <= 4): the fast kernel's lanes, with a block's 4 warps on 4 rows of one K split and
//     the activations of each group of 32 chunks copied to shared memory first (coalesced), so a
//     lane's x loads stop touching one line each; same bits as fast.
//   reference: one thread per output, the CPU's GEMM order (one fma chain in k order from C or 0,
//     then + bias), so for M > 4 (the CPU's GEMM paths) it equals the CPU bit for bit; M > 16 runs
//     it as the fallback.
// Error bound against exact arithmetic on the decoded weights (every order here):
//   |c − exact| <= (K + 64)·2^-23·Σ_k |a_k·w'_k| per element (gemm.h; the CPU's int4 GEMV bound is
//   wider, (15 + zp)/|u − zp| times this), so GPU and CPU differ by at most the sum of their bounds.
// Every kernel's per-thread code also runs on the host (gemv_emulated), with the warp sum in the
// device order: the GPU result must equal the emulation bit for bit (compiled with -fmad=false).
#pragma once
#include <stdint.h>

#include "../../native/cpu/gemm.h"  // GemmArgs: the CPU gemm's arguments, host memory

namespace zt {
namespace cuda {

constexpr uint64_t kGemvMaxM = 16;  // the fast kernel's largest M
// Staged: the fast kernel with each block's activations staged in shared memory (M <= 4 and 16-byte
// aligned rows; otherwise the fast kernel): the same per-lane arithmetic, so the same bits and the
// same emulation. Not yet the device model's choice: it has not been timed on a GPU.
enum class GemvKernel { Fast, Reference, Staged };

// Copies the host arrays of g to the device, runs the kernel(s), copies C back. Validates the
// perturbation (index list included) first. Returns the kernel time in ms (CUDA events).
float gemv_host(const GemmArgs& g, GemvKernel kind);
// The fast kernel on device memory (the device model's linears of <= kGemvMaxM rows in its fast
// mode), on `stream`; g.m <= kGemvMaxM, the caller validates g. workspace: device memory of
// gemv_fast_workspace(g.m, g.w) floats (the activations padded to the kernel's rows, the split
// partial sums).
uint64_t gemv_fast_workspace(uint64_t m, const GemmWeights& w);
void gemv_fast_launch(const GemmArgs& g, float* workspace, void* stream);
// The same computation with each GPU thread's code run on the host, one thread after another
// (Staged: block by block, through the kernel's shared-memory tile; the same bits as Fast).
void gemv_emulated(const GemmArgs& g, GemvKernel kind);
// The reference kernel on device memory (every pointer of g, index list included) on `stream` (a
// cudaStream_t); the caller validates g (gemm_check_perturb). The device model's one GEMM.
void gemv_reference_launch(const GemmArgs& g, void* stream);
// Integer-activation GEMV (the device model's w8a8 / w4a8 linears of <= kGemvMaxM rows): y[M, N] =
// the CPU gemm_int result (native/cpu/gemm_int8.h steps 2 and 3, bit for bit) for activation codes
// [M, lda] with scales sx (gemm_tc.h act_int8_rows_launch) and int8 / int4 weights w [N, K]; + y
// when accumulating (the CPU's residual). One warp per weight row: exact int32 sums per
// accumulation group reduced across lanes, then the group chain in order. Device memory on `stream`,
// or host memory run at once when emulated; no validation beyond M.
void gemv_int_act_launch(bool emulated, const uint8_t* codes, uint64_t lda, const float* sx, uint64_t M, const QTensorView& w,
                         float* y, bool accumulate, void* stream);
// out[j] = z(first + j) as the fast kernel generates it (64-element blocks where aligned).
void gemv_directions_emulated(float* out, uint64_t n, const Direction& d, uint64_t first);

// Device-resident timing: weights (random codes, scale 2^-6 or per-group) in enough copies to
// exceed L2, CUDA graphs of launches rotating over them, CUDA events per graph.
struct GemvTiming {
  float best_ms, median_ms;  // per launch
  uint64_t weight_bytes;     // codes + scales of one copy
  uint32_t splits;
};
GemvTiming gemv_bench(bool f32, QFormat format, uint64_t m, uint64_t n, uint64_t k, uint64_t group, bool perturb,
                      int iters, GemvKernel kind = GemvKernel::Fast);
// Device read ceiling: a 16-byte-load read kernel over `bytes`, and cudaMemcpy device to device.
struct ReadTiming {
  float read_best_ms, read_median_ms, copy_best_ms, copy_median_ms;
};
ReadTiming hbm_read_bench(uint64_t bytes, int iters);

}  // namespace cuda
}  // namespace zt
