// CPU GEMM, float-accumulate family: C[M,N] (+)= A[M,K] · W'[N,K]ᵀ (+ bias), fp32 activations and
// accumulation, weights [out = N, in = K] like nn.Linear in fp32 or any QTensor format (int8,
// int4, nf4, fp8 e4m3/e5m2, bf16, fp16; native/common/formats.h), decoded in registers.
//
// Perturb-on-load (MeZO without touching W): W' = W + alpha·z with z(n, k) = direction_at(dir,
// first + n·K + k) (native/common/direction.h) regenerated inside the kernel while the weights
// are decoded; z is never stored and W never written, so +eps/-eps probes restore exactly. With an
// index subset (sparse ZO) only the listed elements are perturbed: a strictly increasing u32 list
// of element indices n·K + k (so N·K <= 2^32), validated before anything runs.
//
// Element values (each operation rounded once in f32, in this order, on every path):
//   w(n,k)  = s·q (int8), s·(u − zp) (int4), s·nf4[u], s·decode(c) (fp8), exact bf16/fp16/f32,
//             s the element's scale (per tensor / row / group), zp the int4 zero-point (8 if none)
//   w'(n,k) = fma(alpha, z, w) for perturbed elements (the rounding of the perturbation kernels),
//             w otherwise.
// fp8 is decoded arithmetically on AVX2 (e5m2 is the top byte of an fp16; e4m3 is rebiased into
// fp16 bits, NaN codes patched, then F16C) rather than through a 256-entry table: gathers are slow
// on Zen. Every code is exact and tested against the scalar minifloat_decode.
//
// Paths: M <= 4 streams the compressed rows once (GEMV, its own blocked order below); 5 <= M <= 16
// broadcasts W rows (decoded/perturbed in 256-column blocks, never transposed) against a packed Aᵀ
// panel ("skinny"); larger M packs W into 16-column panels (decoded and perturbed once per call)
// for a 6×16 register-tiled FMA micro-kernel that broadcasts A from its 6 rows in place (packing A
// into slivers cost 7-9 % of a 1024³ call on 2 threads and bought the kernel nothing).
//
// Summation orders (the scalar reference follows them, so scalar and AVX2 agree bit for bit; no
// order depends on the thread count or on blocking):
//   GEMM (M > kGemvMaxRows, both AVX2 paths): one fma chain per output in k order,
//     c = fma(a[m,K-1], w'[n,K-1], ... fma(a[m,0], w'[n,0], c0)), c0 = C (accumulating) or 0; then
//     c + bias[n]. Cache blocking over K only splits the chain (partial sums are kept exactly in C
//     or in the tile buffer), so the result is independent of KC, MC, NC and threads.
//   GEMV (M <= kGemvMaxRows): a blocked dot product per (m, n) streaming the compressed row once;
//     the order is fixed per format (gemv_rows_ref in gemm.cc is the definition):
//     - K splits into 64-element chunks (the main part) and a tail of K mod 64 elements;
//     - each chunk is 8 vectors j of 8 lanes l; lane l of vector j holds element 8j + l (fp32,
//       fp16, fp8, int8), 8l + j (int4, nf4: lane = 4 packed bytes) or 16(j/2) + 2l + (j&1)
//       (bf16: even/odd halves of 32-bit lanes);
//     - products x·v of the unscaled code value v accumulate per lane into t[j & 3] (fma); at the
//       end of each scale group (every chunk for groups of 32, and after j = 3 too for natural
//       lanes; every 64/128 elements; or at the end of the main part for row and tensor scales)
//       acc = fma(s, S, acc) per lane with the lane's scale, S = (t0 + t1) + (t2 + t3), and t
//       restarts at 0 (e4m3: v = decode/256 and s·256); int4 first takes S = fma(−zp, X, S), X the
//       lane's sum of x over the group's chunks (gemv_sum_span; v = u is unsigned, so the
//       zero-point is subtracted once per group); formats without scales accumulate into
//       acc[j & 3] directly, summed the same way;
//     - lanes reduce as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), the tail adds one fma chain over
//       w(n,k) in k order, then C (when accumulating) and bias are added.
//     int4 reads each nibble straight as float bits, no shift and no int->float conversion:
//     v = bits_to_f32(u << 4j') = u·2^(4j'−149), a subnormal (or first-binade) float that is
//     exactly u times a power of two, with j' = j for j <= 5 and j − 2 for j = 6, 7 (taken from
//     the lane shifted right by 8 bits, so that every nibble sits below bit 24). Activations are
//     prescaled to x·2^(149 − E − 4j') and the lane sums X to X·2^-E, E = gemv_int4_exponent(max
//     |x| of the row's main part) in [22, 126], so every product is x·u·2^-E; the main part's sum
//     is multiplied by 2^E before the tail is added. Powers of two commute with every rounding,
//     so this is the plain x·u order exactly unless a product falls below 2^-126 (|x| below about
//     max|x|·2^-103: it loses bits, both paths alike) or |x| >= 2^103 (overflow). Subnormal
//     inputs cost nothing extra on Zen; DAZ/FTZ are cleared for the call (SubnormalScope). Other
//     CPUs (int4_subnormal_decode(), cpu_features.h) convert instead, v = float(u << 4j'), with x
//     prescaled by 2^(−E − 4j'): the same products, so the same bits wherever no product or
//     prescaled x is subnormal; both paths of one machine always use the same form.
//   GEMV with perturbation: w' of each row is materialised (decoded and perturbed) and dotted in
//     the fp32 GEMV order (RNG-bound: one normal per weight per call).
//
// Error bounds against a float64 reference over the same decoded weights w (the decode itself is
// exact up to the one rounding of s·v, so every format's kernel error is only accumulation):
//   |c − exact| <= (K + 64)·2^-23·Σ_k |a_k·w_k| per element, every path and format, except int4
//   GEMV whose Σ x·u − zp·Σx form scales the bound by (15 + zp)/|u − zp| (tested with 24×).
//   test/gemm.test.ts checks these element bounds; observed NMSE is 1e-15..2e-13 for K <= 600
//   (random Gaussian data), i.e. ~K·2^-48. Against the unquantized weights the error is the
//   format's own quantization error, not the kernel's.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <string>

#include "../common/direction.h"
#include "../common/quant_elem.h"
#include "../common/status.h"
#include "perturb.h"

namespace zt {

// --- element decode (shared by the scalar and AVX2 translation units: internal linkage) ----------

static inline float gemm_scale_at(const QTensorView& q, uint64_t n, uint64_t k) { return q.scales[qt_scale_index(q, n, k)]; }
static inline int gemm_zero_at(const QTensorView& q, uint64_t n, uint64_t k) {
  return q.zeros ? (int)q.zeros[qt_scale_index(q, n, k)] : kInt4SymZero;
}
static inline const uint8_t* gemm_row(const QTensorView& q, uint64_t n) {
  return q.data + n * qformat_row_bytes(q.format, q.cols);
}
static inline uint32_t gemm_nibble(const uint8_t* row, uint64_t k) { return (row[k >> 1] >> ((k & 1) * 4)) & 15u; }

// Scales (and int4 zero-points) of one row: element k uses s[k >> shift] (groups are powers of 2;
// one scale per row or tensor gives shift 63), so kernels never divide per element.
struct GemmRowScales {
  const float* s;
  const uint8_t* z;  // null: symmetric (zero-point 8)
  unsigned shift;
};
static inline GemmRowScales gemm_row_scales(const QTensorView& q, uint64_t n) {
  if (!q.scales) return GemmRowScales{nullptr, nullptr, 63};
  if (q.group == 0) return GemmRowScales{q.scales, q.zeros, 63};
  if (q.group == q.cols) return GemmRowScales{q.scales + n, q.zeros ? q.zeros + n : nullptr, 63};
  const uint64_t gpr = qt_groups_per_row(q);
  const unsigned shift = q.group == 32 ? 5 : (q.group == 64 ? 6 : 7);
  return GemmRowScales{q.scales + n * gpr, q.zeros ? q.zeros + n * gpr : nullptr, shift};
}
static inline float gemm_rs_scale(const GemmRowScales& r, uint64_t k) { return r.s[k >> r.shift]; }
static inline int gemm_rs_zero(const GemmRowScales& r, uint64_t k) { return r.z ? (int)r.z[k >> r.shift] : kInt4SymZero; }

static constexpr uint64_t kGemvMaxRows = 4;     // M at or below this streams weights (GEMV)
static constexpr uint64_t kSkinnyMaxRows = 16;  // up to this M the GEMM broadcasts W rows (no W packing)
// Whether products of m1 and m2 activation rows give each row the same bits: the summation order
// per output depends on M only through the GEMV / GEMM split (gemm_int8.h's integer family gives
// the same bits on every path, so this is conservative there).
static inline bool gemm_same_bits(uint64_t m1, uint64_t m2) { return (m1 <= kGemvMaxRows) == (m2 <= kGemvMaxRows); }
static inline uint64_t gemm_skinny_width(uint64_t m) { return m <= 8 ? 8 : 16; }  // lanes of the Aᵀ panel

struct GemmWeights {
  bool f32;         // plain fp32 weights in w32, else the QTensor q
  const float* w32;  // [n, k]
  QTensorView q;
  uint64_t n, k;
};

// Rows [r, r + rows) of w as weights of their own (codes, scales and zero-points offset; scales of
// one per tensor stay shared). Its element (i, k) is element (r + i, k) of w.
static inline GemmWeights gemm_rows_view(const GemmWeights& w, uint64_t r, uint64_t rows) {
  GemmWeights v = w;
  v.n = rows;
  if (w.f32) {
    v.w32 = w.w32 + r * w.k;
    return v;
  }
  QTensorView& q = v.q;
  const uint64_t scale0 = q.group == 0 ? 0 : r * qt_groups_per_row(q);
  q.data += r * qformat_row_bytes(q.format, q.cols);
  if (q.scales) q.scales += scale0;
  if (q.zeros) q.zeros += scale0;
  q.rows = rows;
  return v;
}

struct GemmPerturb {
  bool on;
  Direction dir;
  float alpha;
  uint64_t first;        // z index of element (0, 0)
  bool sparse;           // only the elements listed in idx (possibly none)
  const uint32_t* idx;   // strictly increasing n·K + k
  uint64_t nidx;
};

// w(n, k) as defined above: the raw code, then the shared decode of native/common/quant_elem.h.
static inline float gemm_weight_at(const GemmWeights& w, uint64_t n, uint64_t k) {
  if (w.f32) return w.w32[n * w.k + k];
  const QTensorView& q = w.q;
  return q_decode(q.format, qt_code_at(q, n, k), qt_group(q, qt_scale_index(q, n, k)));
}

struct GemmArgs {
  const float* a;  // [m, k]
  uint64_t m;
  GemmWeights w;
  const float* bias;  // [n] or null
  float* c;           // [m, n]
  bool accumulate;    // C += A·W'ᵀ (+ bias) instead of C = A·W'ᵀ (+ bias)
  GemmPerturb p;
};

// Throws ZOTUNE_INVALID_ARGUMENT / ZOTUNE_OUT_OF_RANGE for a bad direction or index list (here, with
// internal linkage like every header function (defs.h): the CUDA GEMV validates with it too).
static inline void gemm_check_perturb(const GemmPerturb& p, uint64_t n, uint64_t k) {
  if (!p.on) return;
  const Direction& d = p.dir;
  check(d.dist == kDirGauss || d.dist == kDirRademacher, Code::InvalidArgument, "perturb: dist must be gaussian or rademacher");
  check(d.bits == 0 || (d.bits >= 2 && d.bits <= 8), Code::InvalidArgument, "perturb: bits must be 0 or 2..8");
  if (d.bits && d.dist == kDirGauss)
    check(d.sr_purpose == kPurposeSrProbe || d.sr_purpose == kPurposeSrUpdate, Code::InvalidArgument,
          "perturb: srPurpose must be srProbe (4) or srUpdate (5)");
  check(p.alpha == p.alpha && p.alpha - p.alpha == 0.0f, Code::NonFinite, "perturb: alpha must be finite");
  check(p.first <= ~(uint64_t)0 - n * k, Code::OutOfRange, "perturb: first + N·K overflows 64 bits");
  if (!p.sparse) return;
  check(n * k <= ((uint64_t)1 << 32), Code::OutOfRange,
        "perturb: indices are u32, so a sparse weight can hold at most 2^32 elements");
  for (uint64_t i = 0; i < p.nidx; ++i) {
    if (p.idx[i] >= n * k)
      fail(Code::OutOfRange, "perturb: indices[" + std::to_string(i) + "] = " + std::to_string(p.idx[i]) +
                                 " is beyond the weight's " + std::to_string(n * k) + " elements");
    if (i && p.idx[i] <= p.idx[i - 1])
      fail(Code::InvalidArgument, "perturb: indices must be strictly increasing (sorted, no duplicates); indices[" +
                                      std::to_string(i) + "] = " + std::to_string(p.idx[i]) + " follows " +
                                      std::to_string(p.idx[i - 1]));
  }
}
// The AVX2 tasks draw a perturbation's randomness for all their rows before their first K slice:
// a dense Rademacher direction's signs (perturb.h avx2::rademacher_signs), or a sparse list's
// directions (perturb.h avx2::gather_directions) with a cursor per row. Floats that table takes
// for `rows` rows of K elements (64-byte aligned):
static inline uint64_t gemm_table_floats(const GemmPerturb& p, uint64_t rows, uint64_t K) {
  if (!p.on) return 0;
  if (p.sparse) return 2 * rows + rows * K / 16 + 1;  // u64 cursors, then the directions
  return p.dir.dist == kDirRademacher ? (rademacher_sign_bytes(rows * K) + 3) / 4 : 0;
}
void gemm(const GemmArgs& g);
// Several products of one A (same a, m and K; each its own W, C, bias, perturbation), each with the
// bits of gemm(gs[i]): on the packed path and the GEMV all outputs are one parallel job (a layer's
// q/k/v or gate/up projections), else they run one after another.
void gemm_shared_a(const GemmArgs* gs, size_t n);

// --- range kernels (scalar reference beside the AVX2 kernel) ---------------------------------

// Decodes rows [n0, n1), columns [k0, k1) of W into out (row stride ld floats).
void gemm_decode_ref(const GemmWeights& w, uint64_t n0, uint64_t n1, uint64_t k0, uint64_t k1, float* out, uint64_t ld);
// w' = fma(alpha, z, w) on the decoded block (same block coordinates), dense or sparse.
void gemm_perturb_ref(const GemmPerturb& p, uint64_t K, uint64_t n0, uint64_t n1, uint64_t k0, uint64_t k1, float* out,
                      uint64_t ld);
// GEMV rows [n0, n1) for all m < M (M <= kGemvMaxRows); xs is the activation prepared by
// gemv_prepare (layout per format), out[m·ldc + n] written (bias/accumulate applied).
struct GemvCtx {
  const GemmWeights* w;
  const float* x;    // [m, k] original activations (tails)
  const float* xs;   // prepared activations: [m][k64] permuted/prescaled, [m][k64 / 8] lane sums
                     // (8 per gemv_sum_span elements, from the start of the block),
                     // then [m] main-part rescale factors 2^E (int4; 1 otherwise)
  uint64_t m, k64;
  const float* bias;
  float* c;
  uint64_t ldc;
  bool accumulate;
  bool int4_subnormal;  // int4 codes read as subnormal floats, else converted (see above)
};
void gemv_prepare(const GemmWeights& w, const float* x, uint64_t m, bool int4_subnormal, float* xs);
static inline const float* gemv_rescale(const GemvCtx& g) { return g.xs + g.m * (g.k64 + g.k64 / 8); }
// E of the int4 prescale (see above) for a row whose largest finite |x| in the main part is
// maxabs: the smallest power with |x|·2^(149 − E) < 2^126, kept in [22, 126] so that every
// factor 2^(149 − E − 4j'), 2^-E and 2^E is a normal float.
static inline int gemv_int4_exponent(float maxabs) {
  const int e = (int)((f32_to_bits(maxabs) >> 23) & 0xff) - 126;  // maxabs < 2^e (normal maxabs)
  const int E = e + 23;
  return E < 22 ? 22 : (E > 126 ? 126 : E);
}
// j' of int4 vector j: the shift of its nibble in the lane as read (j = 6, 7 from the lane >> 8).
static inline int gemv_int4_shift(int j) { return j <= 5 ? 4 * j : 4 * (j - 2); }
uint64_t gemv_prepared_floats(uint64_t m, uint64_t k);
// Elements of the main part behind one set of 8 int4 lane sums X: a chunk for groups of 32 (each
// lane lies in one group), else a scale group (row and tensor scales: the whole main part).
static inline uint64_t gemv_sum_span(const GemmWeights& w, uint64_t k64) {
  if (w.f32 || w.q.group == 32) return 64;
  if (w.q.group == 0 || w.q.group == w.q.cols) return k64 > 64 ? k64 : 64;
  return w.q.group;
}
// Tail of a GEMV row: one fma chain over w(n, k), k in [k64, K).
static inline float gemv_tail(const GemvCtx& g, uint64_t m, uint64_t n) {
  float t = 0.0f;
  for (uint64_t k = g.k64; k < g.w->k; ++k) t = zt_fma(g.x[m * g.w->k + k], gemm_weight_at(*g.w, n, k), t);
  return t;
}
// Rows per slice of the GEMV tails buffer (gemv_tails.inc: included inside each ISA namespace, so
// that its code, vectorized for that ISA, is reached only through the dispatch).
static constexpr uint64_t kGemvTailRows = 256;
// out[m, n] = r (+ C when accumulating) (+ bias).
static inline void gemv_store(const GemvCtx& g, uint64_t m, uint64_t n, float r) {
  float* o = g.c + m * g.ldc + n;
  const float v = g.accumulate ? zt_add(*o, r) : r;
  *o = g.bias ? zt_add(v, g.bias[n]) : v;
}
void gemv_rows_ref(const GemvCtx& g, uint64_t n0, uint64_t n1);
// The fp32 GEMV order over one materialised weight row (perturbed GEMV).
void gemv_f32_row_ref(const float* wrow, const GemvCtx& g, uint64_t n);

// The GEMV's compile-time dispatch, shared by the AVX2 and AVX-512 kernels: the weight format picks
// the decoder type of an ISA's family Fam, then the group-of-32 mode and M (1..4) are template
// arguments of Fam::rows<D, M, G32>. Decoders state their lane kind: unscaled (fp32, fp16, bf16:
// products go straight into the sums), natural lanes or nibble lanes (gemm.h lane orders above).
enum GemvKind { kGemvUnscaled, kGemvNatural, kGemvNibble };
template <class Fam, class D, bool G32>
void gemv_for_m(const GemvCtx& g, uint64_t n0, uint64_t n1) {
  switch (g.m) {
    case 1: return Fam::template rows<D, 1, G32>(g, n0, n1);
    case 2: return Fam::template rows<D, 2, G32>(g, n0, n1);
    case 3: return Fam::template rows<D, 3, G32>(g, n0, n1);
    default: return Fam::template rows<D, 4, G32>(g, n0, n1);
  }
}
template <class Fam, class D>
void gemv_for_groups(const GemvCtx& g, uint64_t n0, uint64_t n1) {
  if (D::kind != kGemvUnscaled && g.w->q.group == 32) return gemv_for_m<Fam, D, true>(g, n0, n1);
  return gemv_for_m<Fam, D, false>(g, n0, n1);
}
template <class Fam>
void gemv_dispatch(const GemvCtx& g, uint64_t n0, uint64_t n1) {
  const GemmWeights& w = *g.w;
  if (w.f32) return gemv_for_groups<Fam, typename Fam::F32>(g, n0, n1);
  switch (w.q.format) {
    case QFormat::Int8: return gemv_for_groups<Fam, typename Fam::Int8>(g, n0, n1);
    case QFormat::Int4:
      if (g.int4_subnormal) return gemv_for_groups<Fam, typename Fam::template Int4<true>>(g, n0, n1);
      return gemv_for_groups<Fam, typename Fam::template Int4<false>>(g, n0, n1);
    case QFormat::Nf4: return gemv_for_groups<Fam, typename Fam::Nf4>(g, n0, n1);
    case QFormat::Fp8E4M3: return gemv_for_groups<Fam, typename Fam::template Fp8<true>>(g, n0, n1);
    case QFormat::Fp8E5M2: return gemv_for_groups<Fam, typename Fam::template Fp8<false>>(g, n0, n1);
    case QFormat::Bf16: return gemv_for_groups<Fam, typename Fam::Bf16>(g, n0, n1);
    case QFormat::Fp16: return gemv_for_groups<Fam, typename Fam::Fp16>(g, n0, n1);
  }
}

namespace avx2 {
void gemm_decode(const GemmWeights& w, uint64_t n0, uint64_t n1, uint64_t k0, uint64_t k1, float* out, uint64_t ld);
void gemm_perturb(const GemmPerturb& p, uint64_t K, uint64_t n0, uint64_t n1, uint64_t k0, uint64_t k1, float* out,
                  uint64_t ld);
// Full 6-row tile over two adjacent 16-column packed panels (avx512::gemm_kernel_6x32): A's 6 rows
// read in place from a (row stride lda).
using GemmPairKernel = void (*)(uint64_t kc, const float* a, uint64_t lda, const float* bp0, const float* bp1, float* c,
                                uint64_t ldc, bool zero, const float* bias);
// One task of the blocked GEMM: output columns [n0, n1) for all rows (per-thread workspace:
// bp >= (kNC + 16)·kKC floats, tmp >= 8·kKC floats, table >= gemm_table_floats(g.p, n1 - n0, K),
// 64-byte aligned). pair: a wider kernel for full tiles over two panels (same bits), or null.
void gemm_block(const GemmArgs& g, uint64_t n0, uint64_t n1, float* bp, float* tmp, GemmPairKernel pair, float* table);
// Skinny M (kGemvMaxRows < M <= kSkinnyMaxRows): Aᵀ packed once ([k][8 or 16], k in [k0, k1)), then
// tasks of output columns [n0, n1) (tmp >= 6·kKC floats).
void gemm_pack_at(const GemmArgs& g, uint64_t k0, uint64_t k1, float* at);
// wide: a [12 n][16 m] tile for 16-lane panels (avx512::gemm_kernel_rows12, same bits), or null;
// tmp >= 12·kKC floats when it is set.
using GemmRowsKernel = void (*)(uint64_t kc, const float* const* rows, const float* at, float* t);
// table: as gemm_block's, for 12 rows.
void gemm_block_skinny(const GemmArgs& g, uint64_t n0, uint64_t n1, const float* at, float* tmp, GemmRowsKernel wide,
                       float* table);
void gemv_rows(const GemvCtx& g, uint64_t n0, uint64_t n1);
void gemv_f32_row(const float* wrow, const GemvCtx& g, uint64_t n);
}  // namespace avx2

namespace avx512 {
void gemm_kernel_6x32(uint64_t kc, const float* a, uint64_t lda, const float* bp0, const float* bp1, float* c, uint64_t ldc,
                      bool zero, const float* bias);
void gemm_kernel_rows12(uint64_t kc, const float* const* rows, const float* at, float* t);
// The GEMV of avx2::gemv_rows on zmm (same bits).
void gemv_rows(const GemvCtx& g, uint64_t n0, uint64_t n1);
}  // namespace avx512

// Blocking of the AVX2 GEMM (6×16 micro-tile): KC columns of K per pass, MC rows of A per sweep of
// a task's W panels, NC output columns per task (small enough that 2 threads balance on a shared
// machine).
static constexpr uint64_t kMR = 6, kNR = 16, kKC = 256, kMC = 120, kNC = 64;

}  // namespace zt
