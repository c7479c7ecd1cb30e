// Integer GEMMs with dynamic int8 activations: y = x · Wᵀ (+ bias) (+ residual) for int8 weights
// (W8A8) and int4 weights (W4A8), W [N, K] as in nn.Linear, x [M, K] f32, y [M, N] f32.
//
// The canonical result (every path, scalar or AVX2, GEMV or GEMM, gives these exact bits):
//   1. Each activation row is quantized on its own (dynamic symmetric int8, formats.h):
//      s_x = absmax / 127, q_x = clamp(rtne(x * (1 / s_x)), -127, 127) (native/common/act_quant.h). Non-finite x is refused;
//      a row whose 1 / s_x overflows (absmax < 3.7e-37) or is all zero gets q_x = 0.
//   2. K is cut into accumulation groups: the weights' scale groups (32/64/128), or, for per-row
//      and per-tensor scales, chunks of kAccChunk (int32 partial sums can then never overflow).
//      Per group j: S_j = sum_k (q_w - zp) * q_x, exact in integers (zp = 8 for symmetric int4,
//      the stored zero-point for asymmetric int4, 0 for int8), then acc = fma(s_w(n, j), float(S_j), acc)
//      in group order, acc starting at +0.
//   3. y = acc * s_x, then y = y + bias[n], then y = y + residual[m, n].
//
// Perturb-on-load (ZO probes): y = x · (W + alpha·Z)ᵀ with Z[n, k] = direction_at(dir, first + n*K + k)
// (first: the direction index of element (0, 0), for a weight that is a slice of a larger stream),
// regenerated inside the kernel; W is never written, so +alpha / -alpha probes restore exactly.
// The perturbed weight is not on the int8 grid, so perturbed tiles are decoded to f32 and run on
// an f32 micro-kernel (on Zen 1 its FMA rate equals the int8 maddubs rate; see README/bench):
//   w' = fma(alpha, z, s_w * float(q_w - zp)),  acc = fma(float(q_x), w', acc) over k = 0..K-1,
//   then step 3. Z is generated once per weight per call and reused by all M rows.
// The fma is perturb.h's `perturbed` (w' is what perturb_range would make of the dequantized W).
// QuZO and Rademacher probes on the integer path: a direction on the b-bit grid (direction.h
// dir_on_grid: Gaussian, bits > 0) is z = q_z * step_b with integer codes |q_z| <= 2^(b-1) - 1,
// a Rademacher one z = q_z * 1 with q_z = +-1 (direction_code_at, dir_code_step), so
// x · (W + alpha·Z)ᵀ needs one more exact integer sum per output and no f32 micro-kernel:
//   2'. after step 2, with a_z = alpha * step (one f32 rounding; exact for Rademacher) and K cut into chunks of
//       kAccChunk: per chunk c, T_c = sum_k q_z(n, k) * q_x(m, k) exact in integers, then
//       acc = fma(a_z, float(T_c), acc) in chunk order;
//   then step 3. It takes the packed GEMM for every M: the codes are generated once per weight per
//   call as u_z = q_z + 8 into panels that int4's nibble micro-kernel reads (T_c = sum u_z * q_x
//   - 8 * sum q_x). Both paths are within the float32 bound of the float64 product
//   x_q · (W + alpha·Z)ᵀ (test/gemm-int8.test.ts); which one a call takes is grid_probe_on_int.
// Which path: the integer one makes a second integer pass over the weights (the codes) and skips
// the f32 decode of perturbed weights; the f32 one makes one f32 pass. Both generate the same
// Gaussian + rounding per weight (most of the cost at small M). The integer path is taken at every
// M for Rademacher and 2..4-bit directions (codes within a nibble): on a VNNI CPU it is the faster one at every M
// (Zen 5, 2 threads, 4096², quzo4 over unperturbed, f32 -> integer path: W8A8 M = 512 +374 % ->
// +131 %, M = 64 +503 % -> +252 %; W4A8 g32 M = 512 +272 % -> +91 %; tiny-llama 256 x 688 at
// M = 342 W8A8 +200 % -> +88 %, W4A8 +129 % -> +39 %). Only on CPUs whose f32 FMA rate equals
// their int8 rate (Zen 1: integer ÷ f32 path 1.31 (int4) / 1.57 (int8) at M = 342) would the f32
// path win at large M, and the choice must not depend on the machine (the same call gives the same
// bits everywhere). Rademacher probes take the integer path too (Zen 5: W8A8 4096² M = 512 +320 %
// -> +102 %, M = 16 +496 % -> +257 %), though on CPUs without VNNI their f32 path was +4-9 %.
// With an index subset (sparse ZO; strictly increasing flat indices i = n*K + k), Z is zero
// outside the subset. Sparse enough subsets (sparse_correction_pays) keep the integer path and add
//   acc = fma(alpha * z_i, float(q_x[m, k_i]), acc) for the row's indices in order, after step 2;
// denser ones take the f32 path with w' = s_w * float(q_w - zp) outside the subset.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../common/act_quant.h"
#include "../common/direction.h"
#include "../common/formats.h"
#include "perturb.h"

namespace zt {

static constexpr uint64_t kAccChunk = 65536;  // 65536 * 127 * 128 < 2^31
static constexpr uint64_t kActPad = 64;       // activation rows are zero padded to a multiple of this
static constexpr uint64_t kPanelCols = 16;    // columns (weight rows) per packed panel
static constexpr int kTileRowsInt = 4;        // activation rows per integer micro-tile
static constexpr int kTileRowsF32 = 6;        // activation rows per f32 micro-tile
static constexpr uint64_t kKcF32 = 256;       // K block of the f32 (perturbed) path

ZT_HD uint64_t round_up(uint64_t v, uint64_t m) { return (v + m - 1) / m * m; }

// Subset perturbation: the integer path plus one scalar correction per (row, index) costs about
// M * nidx * 1.5 ns; the masked f32 path costs the f32 GEMM's ~10 % over the integer one plus a
// decode of all N * K weights (~1 ns each). Corrections win below a density of
// (M / 256 + 1 / 2) / M: ~0.5 % at M = 512, everything at M = 1 (measured on Zen 1).
ZT_HD bool sparse_correction_pays(uint64_t M, uint64_t N, uint64_t K, uint64_t nidx) {
  return (double)nidx * (double)M < (double)N * (double)K * ((double)M / 256.0 + 0.5);
}

// Accumulation group size (see step 2 above).
ZT_HD uint64_t acc_group(const QTensorView& w) {
  return (w.group != 0 && w.group != w.cols) ? w.group : kAccChunk;
}
ZT_HD uint64_t acc_groups(const QTensorView& w) { return (w.cols + acc_group(w) - 1) / acc_group(w); }

// Scale and zero-point of row n, accumulation group j.
ZT_HD uint64_t w_scale_index(const QTensorView& w, uint64_t n, uint64_t j) {
  if (w.group == 0) return 0;
  if (w.group == w.cols) return n;
  return n * qt_groups_per_row(w) + j;
}
ZT_HD float w_scale(const QTensorView& w, uint64_t n, uint64_t j) { return w.scales[w_scale_index(w, n, j)]; }
ZT_HD int w_zero(const QTensorView& w, uint64_t n, uint64_t j) {
  if (w.format != QFormat::Int4) return 0;
  return w.zeros ? (int)w.zeros[w_scale_index(w, n, j)] : kInt4SymZero;
}
// Stored code of element (n, k): int8 q, or the int4 nibble u.
ZT_HD int w_raw(const QTensorView& w, uint64_t n, uint64_t k) {
  if (w.format == QFormat::Int8) return (int)(int8_t)w.data[n * w.cols + k];
  uint8_t b = w.data[n * ((w.cols + 1) / 2) + k / 2];
  return (k & 1) ? (b >> 4) : (b & 15);
}
// Signed code (q - zp) of element (n, k).
ZT_HD int w_code(const QTensorView& w, uint64_t n, uint64_t k) { return w_raw(w, n, k) - w_zero(w, n, k / acc_group(w)); }

// Step 3 of the canonical result.
struct Epilogue {
  const float* sx;        // [M] activation scales
  const float* bias;      // [N] or null
  const float* residual;  // [M, N] (row stride ldr) or null; may alias the output
  uint64_t ldr;
  bool raw;               // store acc itself (sparse path: the correction comes before step 3)
};
ZT_HD float epilogue(const Epilogue& e, float acc, uint64_t m, uint64_t n) {
  if (e.raw) return acc;
  float y = zt_mul(acc, e.sx[m]);
  if (e.bias) y = zt_add(y, e.bias[n]);
  if (e.residual) y = zt_add(y, e.residual[m * e.ldr + n]);
  return y;
}
// epilogue over out[0 .. cnt) = columns n0 .. n0 + cnt of row m (cnt <= 16), the flags tested once per
// run rather than per element (the f32 path's write-back); same operations, same bits. A constant
// count (full runs of 16) lets the compiler vectorize it.
template <uint64_t kCnt>
ZT_HD void epilogue_run_n(const Epilogue& e, const float* acc, uint64_t m, uint64_t n0, uint64_t cnt, float* out) {
  const uint64_t c = kCnt ? kCnt : cnt;
  float y[16];
  if (e.raw) {
    for (uint64_t j = 0; j < c; ++j) y[j] = acc[j];
  } else {
    const float s = e.sx[m];
    for (uint64_t j = 0; j < c; ++j) y[j] = zt_mul(acc[j], s);
    if (e.bias)
      for (uint64_t j = 0; j < c; ++j) y[j] = zt_add(y[j], e.bias[n0 + j]);
    if (e.residual)  // may alias out: read before the store below
      for (uint64_t j = 0; j < c; ++j) y[j] = zt_add(y[j], e.residual[m * e.ldr + n0 + j]);
  }
  for (uint64_t j = 0; j < c; ++j) out[j] = y[j];
}
ZT_HD void epilogue_run(const Epilogue& e, const float* acc, uint64_t m, uint64_t n0, uint64_t cnt, float* out) {
  if (cnt == 16)
    epilogue_run_n<16>(e, acc, m, n0, cnt, out);
  else
    epilogue_run_n<0>(e, acc, m, n0, cnt, out);
}

// Activations after the pre-pass.
struct ActQ {
  uint64_t M, K, Kp;  // Kp = round_up(K, kActPad); q is zero in [K, Kp)
  int8_t* q;          // [M, Kp]
  float* scale;       // [M]
  // int4 weights, and int8 weights on the AVX-512 kernels (else null). gsum: sums of q per
  // accumulation group, for the zero-point term zp * sum(q) (those kernels multiply unsigned codes,
  // int4 nibbles or int8 q + 128, and subtract it per group). qeo (int4 only): q
  // with each 64-block stored as its 32 even then its 32 odd elements, the order of unpacked
  // low / high nibbles (GEMV only).
  int32_t* gsum;      // [M, G]
  int8_t* qeo;        // [M, Kp]
  // QuZO probes on the integer path: sums of q per step-2' chunk [M, dir_chunks(K)] (the
  // direction panel holds q_z + 8, nibble-range codes like symmetric int4's).
  int32_t* csum = nullptr;
};

// One call of the integer GEMM (validated by the addon before it gets here).
struct IntGemm {
  const float* x;  // [M, K], row stride ldx
  uint64_t M, ldx;
  QTensorView w;   // Int8 or Int4, [N, K]
  float* y;        // [M, N], row stride ldy
  uint64_t ldy;
  const float* bias;
  const float* residual;  // row stride ldr; may alias y
  uint64_t ldr;
  const Direction* dir;   // perturb-on-load, or null
  float alpha;
  uint64_t first;         // direction index of element (0, 0)
  const uint32_t* idx;    // subset of flat indices (strictly increasing, < N*K), or null: dense
  uint64_t nidx;
};

// The whole op: quantize, then GEMV (small M) or packed GEMM, perturbed or not; multithreaded,
// thread-count invariant. Throws ZOTUNE_NONFINITE for non-finite activations.
void gemm_int(const IntGemm& g);
// Several products of the same activations (x, ldx, M, K), each with the bits of gemm_int(gs[i]):
// the rows are quantized once and the integer paths of all products run as one parallel job (a
// layer's q/k/v or gate/up projections).
void gemm_int_shared(const IntGemm* gs, size_t n);

// Raw int8 x int8 -> int32: C[m, n] = sum_k A[m, k] * B[n, k]; A in [-127, 127] (checked by the
// caller: the sign trick needs it), B any int8, K <= kRawMaxK. Same micro-kernels, no scales.
static constexpr uint64_t kRawMaxK = 131072;  // 131072 * 127 * 128 < 2^31
void gemm_s8s8s32(const int8_t* a, const int8_t* b, int32_t* c, uint64_t M, uint64_t N, uint64_t K);

// Largest M served by the streaming GEMV (no packing pass); larger M takes the packed GEMM.
static constexpr uint64_t kGemvMaxM = 4;

// ---- kernels: a scalar reference and an AVX2 version of each, selected by use_avx2(); AVX-512 VNNI
// versions of the packed GEMM's two kernels, selected by use_avx512() ----------------------------

// Shared state of one call's integer paths.
struct IntPlan {
  const ActQ* a;
  QTensorView w;
  uint64_t K, N, K4;  // K4 = ceil(K / 4): 4-element steps of the packed layout
  uint64_t ga, G;     // accumulation group size and count
  float* out;         // [M, N] row stride ldo; epilogue applied unless ep.raw
  uint64_t ldo;
  Epilogue ep;
  int32_t* raw32;     // gemm_s8s8s32: int32 output [M, N] (no scales, no epilogue), else null
  // QuZO probe on the integer path (step 2'): direction, its index of element (0, 0), a_z.
  const Direction* dir = nullptr;
  uint64_t first = 0;
  float dir_scale = 0.0f;
};
// Chunks of step 2' (the direction panel's accumulation groups).
ZT_HD uint64_t dir_chunks(uint64_t K) { return (K + kAccChunk - 1) / kAccChunk; }
// Whether a dense probe along d takes step 2' (see above): Gaussian directions of 2..4 bits and
// Rademacher directions.
ZT_HD bool grid_probe_on_int(const Direction& d) { return d.dist == kDirRademacher || (dir_on_grid(d) && d.bits <= 4); }

// Packed panel of 16 weight rows: codes at [k / 4][col][k % 4] for k < 4*K4 (zero beyond K and for
// columns beyond the matrix): int8 q, or for int4 the raw nibble u with the zero-points in `zeros`
// (S_j = sum u * q_x - zp * gsum_j); scales [G][16] (zero for missing columns).
// int8 panels also hold, in `abs` and the same layout, the unsigned operand of the kernel set's
// micro-kernel: |q| for AVX2's vpmaddubsw (packed once instead of a vpabsb per step: +5 % on Zen 1),
// q + 128 for AVX-512's vpdpbusd (gemm_int8_avx512.cc); the scalar kernels do not read it.
struct Panel {
  int8_t* codes;   // K4 * 64 bytes
  uint8_t* abs;    // int8: |codes| (AVX2) or codes + 128 (AVX-512), K4 * 64 bytes; null for int4
  float* scales;   // G * 16 floats
  int32_t* zeros;  // int4: G * 16 zero-points (0 for missing columns); null for int8
  // QuZO probe (step 2'): the same 16 columns' direction codes q_z as an int8 panel with
  // per-kAccChunk scales a_z; null otherwise. The codes are u_z = q_z + 8 in [1, 15] and the
  // kernels take T_c = sum u_z * q_x - 8 * csum_c (ActQ::csum; int4's nibble micro-kernel).
  const Panel* dir = nullptr;
};

// Quantizes one activation row of K values into q[0, Kp) (zero padded). False if x is not finite.
bool act_quantize_row_ref(const float* x, uint64_t K, uint64_t Kp, int8_t* q, float* scale);
// int4 extras of one activation row (see ActQ): sums of q per accumulation group (ga, G groups
// over K) and, if qeo is not null, the even / odd layout of the Kp codes.
void act_int4_extras_ref(const int8_t* q, uint64_t K, uint64_t Kp, uint64_t ga, uint64_t G, int32_t* gsum, int8_t* qeo);
// Rows [n0, n1) of the output, all M rows, streaming W once (no packing).
void gemv_rows_ref(const IntPlan& p, uint64_t n0, uint64_t n1);
// Packs weight rows [n0, n0 + 16) (missing rows zero) into a panel.
void pack_panel_ref(const IntPlan& p, uint64_t n0, Panel panel);
// Activation rows [m0, m0 + mr) (mr <= kTileRowsInt) times one panel: the 16 output columns
// [n0, n0 + nc), nc <= 16, through the epilogue (or raw32).
void tile_int_ref(const IntPlan& p, uint64_t m0, int mr, const Panel& panel, uint64_t n0, uint64_t nc);

// f32 (perturbed) path.
struct F32Plan {
  const ActQ* a;
  QTensorView w;
  uint64_t K, N, Kp;
  const Direction* dir;
  float alpha;
  uint64_t first;
  const uint32_t* idx;  // masked subset or null
  uint64_t nidx;
  // A dense Rademacher direction's signs for the task's rows, drawn from element signs_t0 on
  // (direction_avx2.h rademacher_signs; the AVX2 kernel reads them, the reference draws z itself).
  const uint8_t* signs;
  uint64_t signs_t0;
  const float* apack;   // activations as floats in 6-row panels: [ceil(M/6)][Kp][6], zero padded
  float* out;
  uint64_t ldo;
  Epilogue ep;
};
// Activation rows [mp*6, mp*6 + 6) of a into apack panel mp.
void pack_act_f32_ref(const ActQ& a, uint64_t mp, float* dst);
// Perturbed weights w'[k][c] = fma(alpha, z, s * (q - zp)) for columns n0..n0+15 and k in [k0, k1)
// into panel[(k - k0) * 16 + c] (zero for missing columns). zbuf: 16 * (k1 - k0) floats and rel:
// (k1 - k0) u32 of scratch.
void decode_panel_f32_ref(const F32Plan& p, uint64_t n0, uint64_t k0, uint64_t k1, float* panel, float* zbuf, uint32_t* rel);
// c[r][j] = fma(a[k][r], panel[k][j], c[r][j]) for k = 0..kc-1 in order; r < 6, j < 16.
// Activation slice a (6 rows) times panels [0, np), panel i at panels + i * kKcF32 * kPanelCols and
// its 6 x 16 tile of c at c + i * kTileRowsF32 * kPanelCols: c = c (or 0 if zero) + sum over kc of
// a * panel, one sequential fma chain over k per element on every path.
void tile_f32_ref(const float* a, const float* panels, int np, uint64_t kc, bool zero, float* c);


// One output row of the sparse correction: row[n_s] = fma(t_s, float(q[k_s]), row[n_s]), s < S in order.
void sparse_row_ref(float* row, const int8_t* q, const float* t, const uint32_t* n_s, const uint32_t* k_s, uint64_t S);

namespace avx2 {
bool act_quantize_row(const float* x, uint64_t K, uint64_t Kp, int8_t* q, float* scale);
void act_int4_extras(const int8_t* q, uint64_t K, uint64_t Kp, uint64_t ga, uint64_t G, int32_t* gsum, int8_t* qeo);
void gemv_rows(const IntPlan& p, uint64_t n0, uint64_t n1);
void pack_panel(const IntPlan& p, uint64_t n0, Panel panel);
void tile_int(const IntPlan& p, uint64_t m0, int mr, const Panel& panel, uint64_t n0, uint64_t nc);
void pack_act_f32(const ActQ& a, uint64_t mp, float* dst);
void decode_panel_f32(const F32Plan& p, uint64_t n0, uint64_t k0, uint64_t k1, float* panel, float* zbuf, uint32_t* rel);
void tile_f32(const float* a, const float* panels, int np, uint64_t kc, bool zero, float* c);
void sparse_row(float* row, const int8_t* q, const float* t, const uint32_t* n_s, const uint32_t* k_s, uint64_t S);
}  // namespace avx2

// AVX-512 VNNI kernels (use_avx512()): the packed GEMM's and the GEMV; every other kernel of that
// path is the AVX2 one. They need ActQ::gsum for int8 weights too.
namespace avx512 {
// Largest M its GEMV takes for these weights (one vpdpbusd per activation row and 64 weights,
// 16 / M weight rows per block: each weight read once, no panels packed): 12 for int8, 8
// for int4, kGemvMaxM where it hands the call to the AVX2 GEMV (groups of 32, scale indices
// beyond int32).
uint64_t gemv_max_m(const QTensorView& w, uint64_t G, uint64_t ga);
bool act_quantize_row(const float* x, uint64_t K, uint64_t Kp, int8_t* q, float* scale);
void pack_panel(const IntPlan& p, uint64_t n0, Panel panel);
// Activation rows [m0, m0 + mr) times panels [0, np), the output columns from n0 (the last panel may
// be partial): several panels per call, so each step's activation broadcast feeds more vpdpbusd.
void tile_panels(const IntPlan& p, uint64_t m0, int mr, const Panel* panels, int np, uint64_t n0);
// The streaming GEMV on vpdpbusd (needs ActQ::gsum for int8 weights too; groups of 32 take the
// AVX2 one).
void gemv_rows(const IntPlan& p, uint64_t n0, uint64_t n1);
// The f32 path's micro-tile on zmm: two panels per step (6 x 32 outputs, 12 accumulators).
void tile_f32(const float* a, const float* panels, int np, uint64_t kc, bool zero, float* c);
}  // namespace avx512

}  // namespace zt
