// Tensor-core GEMMs on the GPU: y[M, N] = x[M, K] · W[N, K]ᵀ (+ bias), x f32 in host memory, W a
// QTensor [out = N, in = K] like nn.Linear. Plain C++ header (no CUDA types) for the N-API glue.
//
//   W8A8  int8 weights (any scale layout). Activations quantized per row exactly as the CPU's
//         matmulInt8 (native/common/act_quant.h), int32 accumulation per accumulation group
//         (native/cpu/gemm_int8.h acc_group), acc = fma(s_w, float(S_j), acc), then the CPU's
//         epilogue: the output equals the CPU addon's gemmInt8 bit for bit.
//         mma.sync m16n8k32 s8.s8.s32.
//   W4A8  int4 weights (groups of 32 / 64 / 128 or per row, symmetric or with zero-points) and the
//         same int8 activations: the W8A8 kernel with its weight tile staged packed (half the
//         bytes through cp.async) and dequantised in registers to the int8 codes q - zp (exact,
//         in [-15, 15]) before ldmatrix; S_j = sum (q - zp) q_x is the CPU's step 2 for int4, so
//         the output equals the CPU addon's gemmInt8 on int4 weights bit for bit.
//   W4A16 int4 weights as W4A8, bf16 activations (RTNE): the BF16 kernel with the weight tile staged
//         packed and dequantised in registers to bf16 u - zp (exact); fp32 partial sums per
//         accumulation group, facc = fma(s_w, partial, facc), y = facc + bias. Bound: NMSE <= 1e-8
//         against float64 over the bf16-rounded activations and the dequantised weights.
//   FP8   fp8 e4m3 / e5m2 weights with one scale per tensor or per row. Activations quantized per
//         row to the same format with the CPU quantizer (quant_elem.h: s_x = absmax / max finite,
//         code = encode(x / s_x)); fp32 accumulation, y = (acc · s_x[m]) · s_w[n] + bias.
//         mma.sync m16n8k32 e4m3/e5m2 -> f32, sm_89 and newer (older GPUs: ZOTUNE_UNSUPPORTED).
//         Bound (gpu-check): NMSE <= 1e-5 against float64 over the same quantized operands
//         (Hopper's fp8 MMA keeps ~14 bits in its internal accumulation: kernels.md §3).
//   BF16  bf16 weights; activations rounded to bf16 (RTNE, formats.h bf16_rtne); fp32
//         accumulation, y = acc + bias. mma.sync m16n8k16 bf16 -> f32. Bound: NMSE <= 1e-8
//         against float64 over the bf16-rounded operands.
//   F32   f32 weights [N, K], SIMT tiles (the fallback): one fma chain per output in k order from
//         +0, then + bias, the CPU gemm's order for M > 4, so it equals the CPU bit for bit there.
//
// Every kind has three implementations with the same arguments: Fast (tensor-core / tiled kernel),
// Reference (one GPU thread per output, plain loops: W8A8 in the CPU's exact order, the float kinds
// one fma chain in k order) and Emulated (no GPU: the fast kernel's per-thread code run on the host,
// with ldmatrix / mma.sync / cp.async replaced by host code written from the PTX ISA; it checks
// the thread -> tile -> fragment -> output maps, the shared-memory swizzle and the epilogue, not
// the pipelining, which only a GPU exercises).
#pragma once
#include <stdint.h>

#include "../../native/common/direction.h"
#include "../../native/cpu/gemm.h"  // GemmWeights

namespace zt {
namespace cuda {

enum class TcKind : int { W8A8 = 0, Fp8 = 1, Bf16 = 2, F32 = 3, W4A8 = 4, W4A16 = 5 };
enum class TcImpl : int { Fast = 0, Reference = 1, Emulated = 2 };

// Host memory, validated by the addon (sizes, formats, scale layouts).
struct TcGemm {
  TcKind kind;
  const float* x;     // [M, K]
  uint64_t M, N, K;
  QTensorView w;      // W8A8: Int8; W4A8, W4A16: Int4; Fp8: Fp8E4M3 / Fp8E5M2 (group 0 or K); Bf16: Bf16. Unused for F32.
  const float* w32;   // F32 only: [N, K]
  const float* bias;  // [N] or null
  float* y;           // [M, N]
};

// Runs one GEMM; returns the time of its kernels (activation quantization included) in ms from
// CUDA events, 0 for Emulated. Throws ZOTUNE_NONFINITE for a non-finite activation (W8A8, FP8),
// ZOTUNE_UNSUPPORTED for FP8 on a GPU older than sm_89, CUDA errors as engine errors.
float gemm_tc(const TcGemm& g, TcImpl impl);

// The F32 SIMT tiles on caller memory: y[M, N] (+)= x[M, K] . w[N, K]^T, device pointers on
// `stream` (a cudaStream_t), or host pointers run at once for Emulated; one fma chain per output in
// k order from y (accumulate) or +0, the CPU GEMM's order for M > 4. Fast or Emulated only (the
// device model's GEMM of >= 8 rows, cuda/kernels/llama.cu); no validation beyond the grid size.
// act_scale (the perturbed integer-activation linears: x = float(q_x)): each chain starts from +0
// and y = chain * act_scale[m] (+ y when accumulating), gemm_int8.h's f32 path and step 3.
void gemm_f32_launch(TcImpl impl, const float* x, const float* w, float* y, uint64_t M, uint64_t N, uint64_t K,
                     bool accumulate, void* stream, const float* act_scale = nullptr);

// The BF16 tiles on caller memory (the device model's fast linears, cuda/kernels/llama.h): operands
// are bf16 codes in rows of bf16_row_bytes(K) bytes, zero padded: a [M] rows (bf16_rows_launch),
// b [N] rows (weight_rows_launch, bf16); y[M, N] = a . b^T, or y + a . b^T when accumulating (the
// sum first, then one add: not the CPU's chain). Device pointers on `stream`, or host pointers run
// at once for Emulated; Fast or Emulated only, no validation beyond the grid size.
uint64_t bf16_row_bytes(uint64_t K);
void bf16_rows_launch(TcImpl impl, const float* x, uint64_t M, uint64_t K, uint8_t* a, void* stream);
// W' for the tiles: rows r0 .. r0 + rows - 1 of w decoded (fp32 or any QTensor format), with
// alpha * z(dir, element index row * K + k) added when dir is set (perturbed(): the CPU's
// perturb-on-load value), into out as fp32 rows [rows, K] (gemm_f32_launch) or, bf16, rounded
// (RTNE) into rows of bf16_row_bytes(K) (gemm_bf16_launch). Gaussian directions come in tiles
// (rng_blocks.h), Rademacher ones per element.
void weight_rows_launch(TcImpl impl, const GemmWeights& w, uint64_t r0, uint64_t rows, const Direction* dir, float alpha,
                        bool bf16, void* out, void* stream);
// The same on host memory (tests): rows r0 .. r0 + rows - 1 of quantized weights w into out
// ([rows, ld]: ld = K fp32 values, or bf16_row_bytes(K) / 2 bf16 codes); Fast (device, copies in
// and out; returns the kernel ms) or Emulated.
float weight_rows_host(TcImpl impl, const QTensorView& w, uint64_t r0, uint64_t rows, const Direction* dir, float alpha, bool bf16,
                       void* out);
void gemm_bf16_launch(TcImpl impl, const uint8_t* a, const uint8_t* b, float* y, uint64_t M, uint64_t N, uint64_t K,
                      bool accumulate, void* stream, const float* act_scale = nullptr);
// The W4A16 tiles on caller memory: y[M, N] (+)= a . dequant(w)^T, a as for gemm_bf16_launch, w int4
// [N, K] read packed (no W'); y + the sum when accumulating. Only for w4a16_fits(w): rows of a
// multiple of 16 bytes at a 16-byte aligned address (the tiles' cp.async chunks).
bool w4a16_fits(const GemmWeights& w);
void gemm_w4a16_launch(TcImpl impl, const uint8_t* a, const QTensorView& w, float* y, uint64_t M, bool accumulate, void* stream);

// Integer-activation linears on caller memory (the device model's w8a8 / w4a8 linears), the CPU's
// gemm_int (native/cpu/gemm_int8.h) bit for bit. Device pointers on `stream`, or host pointers run
// at once for Emulated; Fast or Emulated only, no validation beyond the grid size.
// act_int8_rows_launch: x[M, K] -> codes [M, act_int8_row_bytes(K)] (zero padded) and scales sx[M]
// (act_quant.h); a row holding Inf or NaN sets *nonfinite (an int in the same memory) instead.
uint64_t act_int8_row_bytes(uint64_t K);
void act_int8_rows_launch(TcImpl impl, const float* x, uint64_t M, uint64_t K, uint8_t* codes, float* sx, int* nonfinite,
                          void* stream);
// out[M, K] = float(codes): the perturbed linears' operand (gemm_int8.h's f32 path).
void act_codes_f32_launch(TcImpl impl, const uint8_t* codes, uint64_t M, uint64_t K, float* out, void* stream);
struct IntActGemm {
  const uint8_t* codes;  // [M, act_int8_row_bytes(K)]
  const float* sx;       // [M]
  uint64_t M;
  QTensorView w;         // Int8 / Int4 [N, K]
  float* y;              // [M, N]: step 3, then + y when accumulating (the CPU's residual)
  bool accumulate;
  // A Rademacher or QuZO probe on the integer path (gemm_int8.h grid_probe_on_int, step 2'): its
  // direction (integer codes), alpha and the direction index of element (0, 0); grid null: no perturbation.
  const Direction* grid;
  float alpha;
  uint64_t first;
};
// Unperturbed: the W8A8 / W4A8 tensor-core tiles (weight rows of a multiple of 16 bytes) or the
// reference kernel; grid probes (M <= 48): one thread per output column, each direction code
// generated once for all M rows.
void gemm_int_act_launch(TcImpl impl, const IntActGemm& g, void* stream);

// Device-resident benchmark of the Fast kernel: random operands of the kind (fp8: `fp8` picks
// e4m3 or e5m2; W4A8 / W4A16: symmetric int4 in groups of 128) allocated through the pool, `iters`
// timed launches of the GEMM kernel alone (activations already quantized), each between its own
// CUDA events.
struct TcBench {
  double best_ms, median_ms;
};
TcBench gemm_tc_bench(TcKind kind, QFormat fp8, uint64_t M, uint64_t N, uint64_t K, int iters);

}  // namespace cuda
}  // namespace zt
