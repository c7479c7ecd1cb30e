// Tensor-core GEMMs (gemm_tc.h). Compiled for sm_80..90 with nvcc 13; written without a GPU at
// hand: the Emulated paths below run here, the device paths need scripts/gpu-check.js on a GPU.
#include <cuda_runtime.h>
#include <string.h>

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../../native/common/act_quant.h"
#include "../../native/common/quant_elem.h"
#include "../../native/common/status.h"
#include "../../native/cpu/gemm_int8.h"  // acc_group, w_scale, Epilogue, epilogue: the CPU's W8A8 numerics
#include "../../native/cpu/perturb.h"     // perturbed(): the one perturbation rounding
#include "device.h"
#include "gemm_tc.h"
#include "pool.h"
#include "rng_blocks.h"
#include "timed_call.h"

namespace zt {
namespace cuda {
namespace {

#define HD __host__ __device__ __forceinline__  // static member functions (ZT_HD carries `static`)

// ---- tile geometry of the tensor-core kernel --------------------------------------------------
// Operands are byte matrices A [M, lda] (activation codes) and B [N, lda] (weight codes): K runs
// along the row, 1 byte per int8 / fp8 element and 2 per bf16, zero padded to lda = round_up(K
// bytes, 16). A block computes a 128 x 128 tile of y; its 8 warps form a 2 x 4 grid of 64 x 32
// warp tiles, each 4 x 4 mma tiles of 16 x 8. K advances kBK = 64 bytes per pipeline stage
// (kStages deep, cp.async), 32 bytes per mma: m16n8k32 for 8-bit types, m16n8k16 for bf16, whose
// register fragments have the same byte layout.
constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 4, kThreads = 256;
constexpr int kWarpsN = 4, kMT = 4, kNT = 4;
constexpr int kStageBytes = (kBM + kBN) * kBK;
constexpr int kSmemBytes = kStages * kStageBytes;  // 64 KiB: above the 48 KiB default, opted in
// Packed int4 weights (W4A8, W4A16) stage the A tile, then the weight tile packed: the nibbles of
// a k-tile's kBK / elem codes, two copies per row (16 bytes for W4A8, 8 for W4A16's bf16 k-tile of
// 32), not swizzled, each dequantised by the thread that copied it. After the stages, one weight
// tile in the operand type (int8 or bf16), swizzled like a stage's, holds the current k-tile's
// dequantised values for ldmatrix.
constexpr int kStageBytesPacked = kBM * kBK + kBN * kBK / 2;               // room for W4A8's (larger) copies
constexpr int kSmemBytesPacked = kStages * kStageBytesPacked + kBN * kBK;  // 56 KiB

// Byte offset of 16-byte chunk c (0..3) of row r in a stage tile. The chunk is XOR-swizzled with
// (r >> 1) & 3, so the 8 rows one ldmatrix phase reads (and the chunks 8 threads of a cp.async
// phase write) sit in 8 different 16-byte bank groups.
ZT_HD int smem_offset(int r, int c) { return r * kBK + ((c ^ ((r >> 1) & 3)) << 4); }

// ldmatrix.x4 row addresses (lane l addresses row l % 8 of matrix l / 8).
// A, m16 tile mt of warp row wm, k-step s: matrices (rows 0-7, bytes 0-15), (rows 8-15, bytes
// 0-15), (rows 0-7, bytes 16-31), (rows 8-15, bytes 16-31) = registers a0..a3 of the mma.
ZT_HD int ldsm_a_offset(int lane, int wm, int mt, int s) { return smem_offset(wm * 64 + mt * 16 + (lane & 15), s * 2 + (lane >> 4)); }
// B, n8 tiles 2p and 2p + 1 of warp column wn: matrices (n 0-7, bytes 0-15), (n 0-7, bytes 16-31),
// (n 8-15, bytes 0-15), (n 8-15, bytes 16-31) = b0, b1 of tile 2p, then b0, b1 of tile 2p + 1.
// Offset in the B tile (a stage's at kBM * kBK, or W4A8's dequantised tile).
ZT_HD int ldsm_b_offset(int lane, int wn, int p, int s) {
  const int j = lane >> 3;
  return smem_offset(wn * 32 + p * 16 + ((j >> 1) << 3) + (lane & 7), s * 2 + (j & 1));
}
// Accumulator register r of lane l in an m16n8 tile: row l / 4 (+ 8 for r >= 2), column 2 (l % 4) + r % 2.
ZT_HD int acc_row(int lane, int r) { return (lane >> 2) + ((r >> 1) << 3); }
ZT_HD int acc_col(int lane, int r) { return ((lane & 3) << 1) + (r & 1); }

struct TcParams {
  const uint8_t* a;  // [M, lda] activation codes
  const uint8_t* b;  // [N, ldb] weight codes (W4A8 / W4A16: packed nibbles, ldb >= ceil(K / 2))
  uint64_t M, N, lda, ldb;
  uint64_t kbytes;   // K * element bytes; lda - kbytes bytes of zeros follow
  float* y;          // [M, N]
  const float* bias;
  // W8A8 / W4A8 / W4A16: the weights' scales (and int4 zero-points) as the CPU reads them
  // (w.scales, w.zeros, group layout), the CPU epilogue (ep.sx = activation scales; not W4A16) and
  // the accumulation group in bytes of an activation row (elements for the int8 kinds).
  QTensorView w;
  Epilogue ep;
  uint64_t ga;
  uint64_t srow, sgroup;  // w_scale_index(w, n, j) = n * srow + j * sgroup (set_scale_strides: no division per flush)
  // FP8: one weight scale per row (sw_per_row) or one for the tensor; activation scales in ep.sx.
  const float* sw;
  bool sw_per_row;
  bool accumulate;  // F32: every output's chain starts from y (y += x . w^T), else from +0; BF16: y + the sum
  // W8A8 / W4A8 reference kernel: a Rademacher or QuZO probe on the integer path (gemm_int8.h step 2'), its
  // direction, a_z = alpha * step and the direction index of element (0, 0).
  bool grid;
  Direction dir;
  float az;
  uint64_t first;
};

// Bytes of one packed copy: half a row's nibbles for a k-tile of kBK / elem codes (elem: bytes of
// an activation code, 1 for W4A8, 2 for W4A16).
ZT_HD int packed_copy_bytes(int elem) { return kBK / (4 * elem); }
// Copy j of thread t for k-tile kt: j < 2 copies A chunk t + 256 j of the 128 x 4 chunk tile,
// j >= 2 the same chunk of B (unpacked kinds: j = 2, 3; packed int4, `packed` = the activation
// code bytes: j = 2 copies half c = t % 2 of row t / 2's packed k-tile). Returns the source (null:
// outside the matrix, zero filled) and the destination offset in the stage.
ZT_HD const uint8_t* stage_copy(const TcParams& p, int packed, uint64_t m0, uint64_t n0, int kt, int t, int j, int* dst) {
  if (j >= 2 && packed) {
    const int r = t >> 1, c = t & 1, cs = packed_copy_bytes(packed);
    const uint64_t row = n0 + r, kb = (uint64_t)kt * (2 * cs) + c * cs;
    *dst = kBM * kBK + r * (2 * cs) + c * cs;
    return row < p.N && kb < p.ldb ? p.b + row * p.ldb + kb : nullptr;
  }
  const int idx = t + (j & 1) * kThreads, r = idx >> 2, c = idx & 3;
  const bool is_b = j >= 2;
  const uint64_t row = (is_b ? n0 : m0) + r, rows = is_b ? p.N : p.M, kb = (uint64_t)kt * kBK + c * 16;
  *dst = (is_b ? kBM * kBK : 0) + smem_offset(r, c);
  if (row >= rows || kb >= (is_b ? p.ldb : p.lda)) return nullptr;
  return (is_b ? p.b + row * p.ldb : p.a + row * p.lda) + kb;
}
ZT_HD int stage_copies(int packed) { return packed ? 3 : 4; }

ZT_HD void copy16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#else
  memcpy(dst, src, 16);
#endif
}

ZT_HD void copy8(void* dst, const void* src) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(src);
#else
  memcpy(dst, src, 8);
#endif
}

// 16 packed int4 bytes (32 codes, element 2i in the low nibble of byte i) -> 32 int8 codes u - zp,
// in registers: spread each 16-bit half's nibbles to bytes, add 0x80 - zp per byte (no carry:
// u + 0x80 - zp is in [0x71, 0x8f]) and flip bit 7, which is u - zp in two's complement.
ZT_HD void dequant_int4_chunk(const uint32_t in[4], int zp, uint32_t out[8]) {
  const uint32_t bias = (uint32_t)(0x80 - zp) * 0x01010101u;
  for (int i = 0; i < 8; ++i) {
    const uint32_t v = (in[i >> 1] >> (16 * (i & 1))) & 0xffffu;
    const uint32_t y = (v & 0xffu) | ((v & 0xff00u) << 8);
    out[i] = (((y | (y << 4)) & 0x0f0f0f0fu) + bias) ^ 0x80808080u;
  }
}

// 8 packed int4 bytes (16 codes) -> 16 bf16 values u - zp (exact: small integers), two per word.
ZT_HD void dequant_int4_bf16(const uint32_t in[2], int zp, uint32_t out[8]) {
  for (int i = 0; i < 8; ++i) {
    const uint32_t b = (in[i >> 2] >> (8 * (i & 3))) & 0xffu;
    const uint32_t lo = f32_to_bits((float)((int)(b & 15u) - zp)), hi = f32_to_bits((float)((int)(b >> 4) - zp));
    out[i] = (lo >> 16) | (hi & 0xffff0000u);
  }
}

// Packed int4: thread t dequantises the half k-tile it copied (stage_copy j = 2) into the weight
// tile `dq` (its chunks 2c and 2c + 1 of row r): one zero-point per copy, since accumulation groups
// are multiples of 32 elements. Past K the codes meet zero activations; their zero-point is 0 there.
template <int kElem>
ZT_HD void dequant_stage(const TcParams& p, const uint8_t* stage, uint8_t* dq, uint64_t n0, int kt, int t) {
  const int r = t >> 1, c = t & 1, cs = packed_copy_bytes(kElem);
  const uint64_t n = n0 + r, kb = (uint64_t)kt * kBK + c * (kBK / 2);  // activation bytes
  const int zp = n < p.N && kb < p.kbytes ? w_zero(p.w, n, kb / p.ga) : 0;
  const uint8_t* src = stage + kBM * kBK + r * (2 * cs) + c * cs;
  uint32_t in[4], out[8];
  if constexpr (kElem == 1) {
    copy16(in, src);
    dequant_int4_chunk(in, zp, out);
  } else {
    copy8(in, src);
    dequant_int4_bf16(in, zp, out);
  }
  copy16(dq + smem_offset(r, 2 * c), out);
  copy16(dq + smem_offset(r, 2 * c + 1), out + 4);
}

// ---- per-kind operations ------------------------------------------------------------------------

struct OpS8 {
  using Acc = int32_t;
  static constexpr int kElem = 1;
  static constexpr bool kGroups = true;  // int32 partial sums per accumulation group
  static constexpr bool kPackedB = false;
  static __device__ __forceinline__ void mma(int32_t* c, const uint32_t* a, const uint32_t* b) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  static HD int value(const uint8_t* row, uint64_t k) { return (int8_t)row[k]; }
  // Element k of weight row n as the reference kernel reads it from p.b.
  static HD int b_value(const TcParams&, const uint8_t* row, uint64_t, uint64_t k) { return value(row, k); }
  static HD float out(const TcParams& p, float facc, uint64_t m, uint64_t n) { return epilogue(p.ep, facc, m, n); }
};

// W4A8: the S8 kernel on int8 codes q - zp dequantised from packed int4 weights (dequant_stage).
struct OpS4 : OpS8 {
  static constexpr bool kPackedB = true;
  static HD int b_value(const TcParams& p, const uint8_t* row, uint64_t n, uint64_t k) {  // ga: elements = bytes
    return ((row[k >> 1] >> (4 * (k & 1))) & 15) - w_zero(p.w, n, k / p.ga);
  }
};

template <bool kIsE5M2>
struct OpFp8 {
  using Acc = float;
  static constexpr int kElem = 1;
  static constexpr bool kGroups = false;
  static constexpr bool kPackedB = false;
  static __device__ __forceinline__ void mma(float* c, const uint32_t* a, const uint32_t* b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    if (kIsE5M2)
      asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e5m2.e5m2.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                   : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
      asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                   : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // no fp8 MMA before sm_89: gemm_tc refuses the launch on such GPUs
#endif
  }
  static HD float value(const uint8_t* row, uint64_t k) { return minifloat_decode(row[k], kIsE5M2 ? kE5M2 : kE4M3); }
  static HD float out(const TcParams& p, float acc, uint64_t m, uint64_t n) {
    float y = zt_mul(zt_mul(acc, p.ep.sx[m]), p.sw[p.sw_per_row ? n : 0]);
    return p.bias ? zt_add(y, p.bias[n]) : y;
  }
};

struct OpBf16 {
  using Acc = float;
  static constexpr int kElem = 2;
  static constexpr bool kGroups = false;
  static constexpr bool kPackedB = false;
  static __device__ __forceinline__ void mma(float* c, const uint32_t* a, const uint32_t* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  static HD float value(const uint8_t* row, uint64_t k) { return bf16_to_f32((uint16_t)(row[2 * k] | (row[2 * k + 1] << 8))); }
  static HD float out(const TcParams& p, float acc, uint64_t m, uint64_t n) {
    if (p.ep.sx) acc = zt_mul(acc, p.ep.sx[m]);  // float(q_x) operands (gemm_bf16_launch act_scale)
    if (p.accumulate) acc = zt_add(p.y[m * p.N + n], acc);
    return p.bias ? zt_add(acc, p.bias[n]) : acc;
  }
};

// W4A16: the BF16 kernel on u - zp dequantised from packed int4 weights into bf16 (exact), fp32
// partial sums per accumulation group scaled like W8A8's: facc = fma(s_w, partial, facc).
struct OpW4Bf16 : OpBf16 {
  static constexpr bool kGroups = true;
  static constexpr bool kPackedB = true;
  static HD float b_value(const TcParams& p, const uint8_t* row, uint64_t n, uint64_t k) {
    return (float)(((row[k >> 1] >> (4 * (k & 1))) & 15) - w_zero(p.w, n, 2 * k / p.ga));
  }
  static HD float out(const TcParams& p, float facc, uint64_t m, uint64_t n) {
    if (p.accumulate) facc = zt_add(p.y[m * p.N + n], facc);
    return p.bias ? zt_add(facc, p.bias[n]) : facc;
  }
};

// Plain f32 operands (the SIMT fallback's reference): A [M, K], B [N, K] floats, lda = K * 4.
struct OpF32 {
  static constexpr int kElem = 4;
  static constexpr bool kGroups = false;
  static HD float value(const uint8_t* row, uint64_t k) { return reinterpret_cast<const float*>(row)[k]; }
  static HD float out(const TcParams& p, float acc, uint64_t, uint64_t n) { return p.bias ? zt_add(acc, p.bias[n]) : acc; }
};

// ---- per-thread code shared by the kernels and their host emulation -----------------------------

// w_scale_index(w, n, j) as two strides computed once per call (a flush would divide in 64 bits).
void set_scale_strides(TcParams* p) {
  const QTensorView& w = p->w;
  p->srow = w.group == 0 ? 0 : w.group == w.cols ? 1 : qt_groups_per_row(w);
  p->sgroup = w.group != 0 && w.group != w.cols ? 1 : 0;
}

// End of accumulation group `group` (W8A8, W4A8, W4A16): facc = fma(s_w(n, group), float(S), facc), S = 0
// (native/cpu/gemm_int8.h step 2) for the lane's outputs of a warp tile starting at column n0w.
// Registers r and r + 2 share a column: one scale load for both.
template <class Acc>
ZT_HD void flush_group(const TcParams& p, int lane, uint64_t n0w, uint64_t group, Acc (*acc)[kNT][4], float (*facc)[kNT][4]) {
  const float* const sg = p.w.scales + group * p.sgroup;
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const uint64_t n = n0w + nt * 8 + acc_col(lane, c);
      const float s = n < p.N ? sg[n * p.srow] : 0.0f;
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int r = c; r < 4; r += 2) {
          facc[mt][nt][r] = zt_fma(s, (float)acc[mt][nt][r], facc[mt][nt][r]);
          acc[mt][nt][r] = 0;
        }
    }
}

// The lane's outputs of a warp tile at (m0w, n0w) through the kind's epilogue.
template <class Op>
ZT_HD void store_warp_tile(const TcParams& p, int lane, uint64_t m0w, uint64_t n0w, const typename Op::Acc (*acc)[kNT][4],
                           const float (*facc)[kNT][4]) {
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const uint64_t m = m0w + mt * 16 + acc_row(lane, r), n = n0w + nt * 8 + acc_col(lane, r);
        if (m >= p.M || n >= p.N) continue;
        if constexpr (Op::kGroups)
          p.y[m * p.N + n] = Op::out(p, facc[mt][nt][r], m, n);
        else
          p.y[m * p.N + n] = Op::out(p, (float)acc[mt][nt][r], m, n);
      }
}

// Accumulation-group bookkeeping of W8A8 (uniform over the block): the group ends at byte
// `flush_at`; K-steps never straddle a group since groups are multiples of 32.
struct GroupCursor {
  uint64_t flush_at, group;
};
ZT_HD GroupCursor group_start(const TcParams& p) { return {p.ga < p.kbytes ? p.ga : p.kbytes, 0}; }
ZT_HD bool group_ends(const GroupCursor& g, uint64_t kb) { return kb + 32 >= g.flush_at; }
ZT_HD void group_next(const TcParams& p, GroupCursor* g) {
  g->group += 1;
  g->flush_at = g->flush_at + p.ga < p.kbytes ? g->flush_at + p.ga : p.kbytes;
}

// Steps 2 (and 2' for a grid probe: gemm_int8.h) of the grouped kinds for rows m0 .. m0 + mc - 1
// of output column n (mc <= kColumnRows), each row in the CPU's order: per accumulation group j,
// S_j = sum over its k of a(m, k) b(n, k) (integers: exact; W4A16: an fma chain), facc = fma(s_w(n,
// j), float(S_j), facc); then per kAccChunk chunk T_c = sum q_z(n, k) q_x(m, k), facc = fma(a_z,
// float(T_c), facc). Each weight code and direction code is read or generated once for the mc rows.
constexpr int kColumnRows = 48;
template <class Op>
ZT_HD void group_column(const TcParams& p, uint64_t n, uint64_t m0, int mc, float* facc) {
  using Acc = typename Op::Acc;
  constexpr bool kInt = std::is_same<Acc, int32_t>::value;
  const uint8_t* rb = p.b + n * p.ldb;
  const uint64_t K = p.kbytes / Op::kElem, ge = p.ga / Op::kElem;  // group in elements
  Acc s[kColumnRows];
  for (int i = 0; i < mc; ++i) facc[i] = 0.0f;
  for (uint64_t j = 0, k0 = 0; k0 < K; ++j, k0 += ge) {
    for (int i = 0; i < mc; ++i) s[i] = 0;
    for (uint64_t k = k0; k < K && k < k0 + ge; ++k) {
      const auto w = Op::b_value(p, rb, n, k);
      for (int i = 0; i < mc; ++i) {
        const auto x = Op::value(p.a + (m0 + i) * p.lda, k);
        if constexpr (kInt) s[i] += x * w;
        else s[i] = zt_fma(x, w, s[i]);
      }
    }
    const float sw = w_scale(p.w, n, j);
    for (int i = 0; i < mc; ++i) facc[i] = zt_fma(sw, (float)s[i], facc[i]);
  }
  if constexpr (kInt) {
    if (!p.grid) return;
    for (uint64_t c0 = 0; c0 < K; c0 += kAccChunk) {
      for (int i = 0; i < mc; ++i) s[i] = 0;
      for (uint64_t k = c0; k < K && k < c0 + kAccChunk; ++k) {
        const int qz = direction_code_at(p.dir, p.first + n * K + k);
        for (int i = 0; i < mc; ++i) s[i] += Op::value(p.a + (m0 + i) * p.lda, k) * qz;
      }
      for (int i = 0; i < mc; ++i) facc[i] = zt_fma(p.az, (float)s[i], facc[i]);
    }
  }
}

// Reference: one output, plain loops over the same operands. W8A8 in the CPU's exact order.
template <class Op>
ZT_HD float reference_output(const TcParams& p, uint64_t m, uint64_t n) {
  if constexpr (Op::kGroups) {
    float facc;
    group_column<Op>(p, n, m, 1, &facc);
    return Op::out(p, facc, m, n);
  } else {
    const uint8_t *ra = p.a + m * p.lda, *rb = p.b + n * p.ldb;
    const uint64_t K = p.kbytes / Op::kElem;
    float acc = 0.0f;
    for (uint64_t k = 0; k < K; ++k) acc = zt_fma(Op::value(ra, k), Op::value(rb, k), acc);
    return Op::out(p, acc, m, n);
  }
}

// A Rademacher or QuZO probe on the integer path (gemm_int_act_launch): rows m0 .. m0 + kColumnRows - 1 (those
// below M) of output column n, the direction codes generated once per weight and row chunk.
template <class Op>
ZT_HD void grid_probe_column(const TcParams& p, uint64_t n, uint64_t m0) {
  float facc[kColumnRows];
  const int mc = (int)(p.M - m0 < (uint64_t)kColumnRows ? p.M - m0 : (uint64_t)kColumnRows);
  group_column<Op>(p, n, m0, mc, facc);
  for (int i = 0; i < mc; ++i) p.y[(m0 + i) * p.N + n] = Op::out(p, facc[i], m0 + i, n);
}

// Activation rows: one block of kThreads per row, thread t taking elements t, t + kThreads, ...
// W8A8 and FP8 first need the row's absmax, reduced as a bit pattern (an integer max: exact in any
// order, and >= 0x7f800000 flags Inf / NaN).
ZT_HD uint32_t amax_bits_part(const float* x, uint64_t K, int t) {
  uint32_t m = 0;
  for (uint64_t k = t; k < K; k += kThreads) {
    const uint32_t b = f32_to_bits(x[k]) & 0x7fffffffu;
    m = b > m ? b : m;
  }
  return m;
}
// Scale of a row (W8A8: act_quant.h; FP8: the CPU quantizer's per-row fp8 group) and its QGroup.
ZT_HD bool int_kind(TcKind kind) { return kind == TcKind::W8A8 || kind == TcKind::W4A8; }
ZT_HD QGroup row_group(TcKind kind, QFormat f, uint32_t amax_bits) {
  QGroup g{1.0f, 1.0f, 0, 0};
  if (int_kind(kind)) {
    g.scale = act_int8_scale(bits_to_f32(amax_bits), &g.inv);
  } else if (kind == TcKind::Fp8) {
    q_group_from_stats(f, QStats{amax_bits, 0.0f, 0.0f}, false, false, &g.scale, nullptr);
    g.inv = inv_scale_for(g.scale);
  }
  return g;
}
// Thread t's codes of one row (and its share of the zero padding up to lda bytes).
ZT_HD void quantize_row_part(TcKind kind, QFormat f, const float* x, uint64_t K, uint64_t lda, QGroup g, int t, uint8_t* out) {
  for (uint64_t k = t; k < K; k += kThreads) {
    if (int_kind(kind)) {
      out[k] = (uint8_t)act_int8_code(x[k], g.inv);
    } else if (kind == TcKind::Fp8) {
      out[k] = (uint8_t)q_encode(f, x[k], g, false, 0);
    } else {
      const uint16_t h = bf16_rtne(x[k]);
      out[2 * k] = (uint8_t)h, out[2 * k + 1] = (uint8_t)(h >> 8);
    }
  }
  const uint64_t kbytes = kind == TcKind::Bf16 || kind == TcKind::W4A16 ? 2 * K : K;
  for (uint64_t i = kbytes + t; i < lda; i += kThreads) out[i] = 0;
}
ZT_HD bool kind_has_act_scale(TcKind kind) { return int_kind(kind) || kind == TcKind::Fp8; }
// Element i of float(codes) [M, K] read from code rows of lda bytes (act_codes_f32_launch).
ZT_HD float code_as_f32(const uint8_t* codes, uint64_t K, uint64_t lda, uint64_t i) {
  const uint64_t m = i / K;
  return (float)(int8_t)codes[m * lda + (i - m * K)];
}

// F32 SIMT fallback: 64 x 64 output tiles, 256 threads of 4 x 4 outputs (rows ty + 16 i, columns
// tx + 16 j), K in slices of 16 staged transposed in shared memory.
constexpr int kFT = 64, kFK = 16;
ZT_HD void f32_load(const TcParams& p, uint64_t m0, uint64_t n0, uint64_t k0, int t, float* As, float* Bs) {
  const uint64_t K = p.kbytes / 4;
  const float *a = reinterpret_cast<const float*>(p.a), *b = reinterpret_cast<const float*>(p.b);
  for (int i = 0; i < 4; ++i) {
    const int e = t * 4 + i, r = e / kFK, c = e % kFK;
    const uint64_t m = m0 + r, n = n0 + r, k = k0 + c;
    As[c * kFT + r] = m < p.M && k < K ? a[m * K + k] : 0.0f;
    Bs[c * kFT + r] = n < p.N && k < K ? b[n * K + k] : 0.0f;
  }
}
// kc = the slice's valid k (no fma with padding: fma(0, 0, -0) would turn -0 into +0).
ZT_HD void f32_compute(const float* As, const float* Bs, int t, int kc, float (*acc)[4]) {
  const int tx = t % 16, ty = t / 16;
  for (int k = 0; k < kc; ++k)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] = zt_fma(As[k * kFT + ty + 16 * i], Bs[k * kFT + tx + 16 * j], acc[i][j]);
}
// The chains' start: +0, or y when accumulating (the CPU's c0 = C) without an activation scale.
ZT_HD void f32_init(const TcParams& p, uint64_t m0, uint64_t n0, int t, float (*acc)[4]) {
  const int tx = t % 16, ty = t / 16;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const uint64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      acc[i][j] = p.accumulate && !p.ep.sx && m < p.M && n < p.N ? p.y[m * p.N + n] : 0.0f;
    }
}
ZT_HD void f32_store(const TcParams& p, uint64_t m0, uint64_t n0, int t, const float (*acc)[4]) {
  const int tx = t % 16, ty = t / 16;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const uint64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < p.M && n < p.N) p.y[m * p.N + n] = p.ep.sx ? epilogue(p.ep, acc[i][j], m, n) : OpF32::out(p, acc[i][j], m, n);
    }
}

// W' rows (weight_rows_launch): rows r0 .. r0 + rows - 1 of w, elements E0 = r0 K .. E1 = E0 +
// rows K, decoded, perturbed; rows of ld fp32 values or bf16 codes.
struct WeightRows {
  GemmWeights w;
  uint64_t r0, rows, ld;
  bool perturb, bf16;
  Direction dir;
  float alpha;
  void* out;
  uint64_t gpr;  // scale groups per row
  FastDiv gdiv;  // by the group size
  bool fast;     // tile_rows_fast(K) and K * group <= 2^32: multiply-high divisions
};
// Elements e .. e + n - 1 (one run of consecutive indices, n <= 4; e at row, column k) with their
// directions z: the group found once per run; a whole aligned run is one load of its codes and
// one 8- or 16-byte store.
template <int F>
ZT_HD void weight_row_run(const WeightRows& a, uint64_t e, uint64_t row, uint64_t k, int n, const float* z) {
  const bool f32 = is_f32_weights<F>(a.w.f32);
  const uint64_t K = a.w.k;
  const QTensorView& q = a.w.q;
  uint64_t gi = 0, gend = K;  // this element's scale group and its end
  if (!f32 && q.group) {
    const uint64_t G = q.group, g = a.fast ? div_of(a.gdiv, (uint32_t)k) : k / G;
    gi = row * a.gpr + g, gend = (g + 1) * G < K ? (g + 1) * G : K;
  }
  QGroup grp{};
  if (!f32) grp = qt_group(q, gi);
  const uint64_t o0 = (row - a.r0) * a.ld + k;
  const bool whole = n == 4 && k + 4 <= gend && (o0 & 3) == 0 && ((uintptr_t)a.out & 15) == 0;  // one row and group, aligned
  const unsigned bits = f32 ? 32 : code_bits(format_of<F>(q));
  const uint8_t* cp = f32 ? nullptr : qt_row(q, row) + k * bits / 8;
  const bool packed = whole && !f32 && (k * bits) % 8 == 0 && (uintptr_t)cp % (bits / 2) == 0;
  const uint64_t codes = packed ? load_run(cp, bits / 2) : 0;
  float v[4];
#pragma unroll
  for (int l = 0; l < 4; ++l) {
    if (l >= n) break;
    float x;
    if (f32) x = a.w.w32[e + l];
    else if (packed) x = q_decode(format_of<F>(q), (uint32_t)(codes >> (bits * l)) & ((1u << (bits & 31)) - 1), grp);
    else x = q_decode(format_of<F>(q), qt_code_at(q, row, whole ? k + l : k), grp);
    if (a.perturb) x = perturbed(x, a.alpha, z[l]);
    v[l] = x;
    if (whole) continue;  // one row and group: k, row and the group stay
    const uint64_t o = (row - a.r0) * a.ld + k;
    if (a.bf16) static_cast<uint16_t*>(a.out)[o] = bf16_rtne(x);
    else static_cast<float*>(a.out)[o] = x;
    if (l + 1 == n) break;  // no group past the run's last element (it may lie past the tensor)
    if (++k == K) {
      k = 0, ++row;
      if (!f32) gi = q.group ? row * a.gpr : 0, gend = q.group && q.group < K ? q.group : K, grp = qt_group(q, gi);
    } else if (k == gend) {
      ++gi, gend = gend + q.group < K ? gend + q.group : K;
      grp = qt_group(q, gi);
    }
  }
  if (!whole) return;
  if (a.bf16) {
    uint16_t* dst = static_cast<uint16_t*>(a.out) + o0;
    const uint32_t lo = bf16_rtne(v[0]) | ((uint32_t)bf16_rtne(v[1]) << 16), hi = bf16_rtne(v[2]) | ((uint32_t)bf16_rtne(v[3]) << 16);
#if defined(__CUDA_ARCH__)
    *reinterpret_cast<uint2*>(dst) = make_uint2(lo, hi);
#else
    memcpy(dst, &lo, 4), memcpy(dst + 2, &hi, 4);
#endif
  } else {
    F4 f;
    for (int l = 0; l < 4; ++l) f.v[l] = v[l];
    store4(static_cast<float*>(a.out) + o0, f);
  }
}
// Elements e .. e + n - 1 anywhere: one division.
template <int F>
ZT_HD void weight_row_run_at(const WeightRows& a, uint64_t e, int n, const float* z) {
  const uint64_t K = a.w.k, row = (e >> 32) == 0 && (K >> 32) == 0 ? (uint64_t)((uint32_t)e / (uint32_t)K) : e / K;
  weight_row_run<F>(a, e, row, e - row * K, n, z);
}
// Gaussian directions: pair p of tile E0 (rng_blocks.h) after its stage, clipped to the rows.
template <int F>
ZT_HD void weight_rows_pair(const WeightRows& a, uint64_t E0, const TileRows& tr, unsigned p, const TileWords& sm) {
  const uint64_t lo_e = a.r0 * a.w.k, hi_e = lo_e + a.rows * a.w.k;
  float z[2][4];
  tile_pair_dirs(a.dir, E0, p, sm, z);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const unsigned o = pair_offset(p) + 32 * h;
    const uint64_t e = E0 + o, lo = e > lo_e ? e : lo_e, hi = e + 4 < hi_e ? e + 4 : hi_e;
    if (lo == e && hi == e + 4) {
      uint64_t row, k;
      tile_row_col(tr, a.w.k, o, &row, &k);
      weight_row_run<F>(a, e, row, k, 4, z[h]);
    } else if (lo < hi) {  // a clipped run: shift by selects (an indexed z would live in local memory)
      const unsigned off = (unsigned)(lo - e);
      float zs[4];
#pragma unroll
      for (int l = 0; l < 4; ++l) {
        const unsigned i = l + off;
        zs[l] = i == 0 ? z[h][0] : i == 1 ? z[h][1] : i == 2 ? z[h][2] : z[h][3];
      }
      weight_row_run_at<F>(a, lo, (int)(hi - lo), zs);
    }
  }
}
// Item t of the per-element form (unperturbed, or Rademacher z): elements E0 + 4t .. E0 + 4t + 3.
ZT_HD void weight_rows_elem(const WeightRows& a, uint64_t t) {
  const uint64_t e = a.r0 * a.w.k + 4 * t, end = (a.r0 + a.rows) * a.w.k;
  const int n = end - e < 4 ? (int)(end - e) : 4;
  float z[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (a.perturb)
#pragma unroll
    for (int l = 0; l < 4; ++l)
      if (l < n) z[l] = direction_at(a.dir, e + l);
  weight_row_run_at<kAnyFormat>(a, e, n, z);
}
// Item t of the bf16 rows' padding: code t % (ld - K) past the end of row t / (ld - K) is +0.
ZT_HD void weight_rows_pad(const WeightRows& a, uint64_t t) {
  const uint64_t pad = a.ld - a.w.k;
  static_cast<uint16_t*>(a.out)[(t / pad) * a.ld + a.w.k + t % pad] = 0;
}
enum class RowsItem { Elem, Pad };
ZT_HD void weight_rows_item(RowsItem kind, const WeightRows& a, uint64_t t) {
  if (kind == RowsItem::Elem) weight_rows_elem(a, t);
  else weight_rows_pad(a, t);
}

// ---- device kernels -------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void ldsm_x4(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 16 bytes global -> shared, asynchronous; src null: zero fill (src-size 0, the base stays a valid address).
__device__ __forceinline__ void cp_async16(uint32_t dst, const uint8_t* src, const uint8_t* base) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src ? src : base), "r"(src ? 16 : 0));
}
__device__ __forceinline__ void cp_async8(uint32_t dst, const uint8_t* src, const uint8_t* base) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src ? src : base), "r"(src ? 8 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int n>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(n)); }

// kPacked: 0, or the activation code bytes of a packed int4 kind (stage_copy).
template <int kPacked>
__device__ __forceinline__ void load_stage(const TcParams& p, uint8_t* st, uint64_t m0, uint64_t n0, int kt) {
  const uint32_t base = smem_u32(st);
  for (int j = 0; j < stage_copies(kPacked); ++j) {
    int dst;
    const uint8_t* src = stage_copy(p, kPacked, m0, n0, kt, threadIdx.x, j, &dst);
    if (j == 2 && kPacked == 2)
      cp_async8(base + dst, src, p.b);
    else
      cp_async16(base + dst, src, p.b);
  }
}

template <class Op>
__global__ void __launch_bounds__(kThreads) tc_gemm_kernel(TcParams p) {
  extern __shared__ __align__(128) uint8_t smem[];
  using Acc = typename Op::Acc;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5, wm = warp / kWarpsN, wn = warp % kWarpsN;
  const uint64_t m0 = (uint64_t)blockIdx.y * kBM, n0 = (uint64_t)blockIdx.x * kBN;
  const uint64_t m0w = m0 + wm * 64, n0w = n0 + wn * 32;
  const int KT = (int)((p.kbytes + kBK - 1) / kBK);
  constexpr int kPacked = Op::kPackedB ? Op::kElem : 0;
  constexpr int kStage = Op::kPackedB ? kStageBytesPacked : kStageBytes;
  uint8_t* const dq = smem + kStages * kStageBytesPacked;  // packed int4's dequantised weight tile
  Acc acc[kMT][kNT][4] = {};
  float facc[kMT][kNT][4] = {};
  GroupCursor gc = group_start(p);

  for (int s = 0; s < kStages - 1; ++s) {
    if (s < KT) load_stage<kPacked>(p, smem + s * kStage, m0, n0, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<kStages - 2>();  // tile kt has landed (for this thread) ...
    __syncthreads();               // ... for every thread, and tile kt - 1's slot is free to refill
    const int nk = kt + kStages - 1;
    if (nk < KT) load_stage<kPacked>(p, smem + (nk % kStages) * kStage, m0, n0, nk);
    cp_async_commit();
    uint8_t* const stage = smem + (kt % kStages) * kStage;
    const uint32_t st = smem_u32(stage);
    uint32_t bt = st + kBM * kBK;
    if constexpr (Op::kPackedB) {
      dequant_stage<Op::kElem>(p, stage, dq, n0, kt, t);  // this thread's own copy: landed, no barrier needed
      __syncthreads();                         // every thread's chunks of dq
      bt = smem_u32(dq);
    }
#pragma unroll
    for (int s = 0; s < kBK / 32; ++s) {
      const uint64_t kb = (uint64_t)kt * kBK + s * 32;
      if (kb >= p.kbytes) break;
      uint32_t a[kMT][4], b[kNT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) ldsm_x4(a[mt], st + ldsm_a_offset(lane, wm, mt, s));
#pragma unroll
      for (int q = 0; q < kNT / 2; ++q) {
        uint32_t r[4];
        ldsm_x4(r, bt + ldsm_b_offset(lane, wn, q, s));
        b[2 * q][0] = r[0], b[2 * q][1] = r[1], b[2 * q + 1][0] = r[2], b[2 * q + 1][1] = r[3];
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) Op::mma(acc[mt][nt], a[mt], b[nt]);
      if constexpr (Op::kGroups) {
        if (group_ends(gc, kb)) {
          flush_group(p, lane, n0w, gc.group, acc, facc);
          group_next(p, &gc);
        }
      }
    }
  }
  store_warp_tile<Op>(p, lane, m0w, n0w, acc, facc);
}

template <class Op>
__global__ void reference_kernel(TcParams p) {
  const uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.M * p.N) return;
  p.y[i] = reference_output<Op>(p, i / p.N, i % p.N);
}

template <class Op>
__global__ void grid_probe_kernel(TcParams p) {
  const uint64_t n = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n < p.N) grid_probe_column<Op>(p, n, (uint64_t)blockIdx.y * kColumnRows);
}

__global__ void __launch_bounds__(kThreads) f32_gemm_kernel(TcParams p) {
  __shared__ float As[kFK * kFT], Bs[kFK * kFT];
  const uint64_t m0 = (uint64_t)blockIdx.y * kFT, n0 = (uint64_t)blockIdx.x * kFT, K = p.kbytes / 4;
  float acc[4][4];
  f32_init(p, m0, n0, threadIdx.x, acc);
  for (uint64_t k0 = 0; k0 < K; k0 += kFK) {
    f32_load(p, m0, n0, k0, threadIdx.x, As, Bs);
    __syncthreads();
    f32_compute(As, Bs, threadIdx.x, (int)(K - k0 < kFK ? K - k0 : kFK), acc);
    __syncthreads();
  }
  f32_store(p, m0, n0, threadIdx.x, acc);
}

__global__ void __launch_bounds__(kThreads) quantize_kernel(TcKind kind, QFormat f, const float* x, uint64_t K, uint64_t lda,
                                                            uint8_t* a, float* sx, int* nonfinite) {
  __shared__ uint32_t part[kThreads / 32];
  const uint64_t m = blockIdx.x;
  const float* row = x + m * K;
  uint32_t amax = 0;
  if (kind_has_act_scale(kind)) {
    amax = amax_bits_part(row, K, threadIdx.x);
    for (int o = 16; o > 0; o >>= 1) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = amax;
    __syncthreads();
    for (int w = 0; w < kThreads / 32; ++w) amax = max(amax, part[w]);
    if (amax >= 0x7f800000u) {
      if (threadIdx.x == 0) atomicExch(nonfinite, 1);
      return;
    }
  }
  const QGroup g = row_group(kind, f, amax);
  if (threadIdx.x == 0 && sx) sx[m] = g.scale;
  quantize_row_part(kind, f, row, K, lda, g, threadIdx.x, a + m * lda);
}

__global__ void codes_f32_kernel(const uint8_t* codes, uint64_t K, uint64_t lda, float* out, uint64_t n) {
  const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = code_as_f32(codes, K, lda, i);
}

template <int F>
__global__ void __launch_bounds__(kTileThreads) weight_rows_tile_kernel(WeightRows a, Tiles tiles) {
  __shared__ TileWords sm;
  for (uint64_t i = blockIdx.x; i < tiles.count; i += gridDim.x) {
    const uint64_t E0 = tiles.e0 + (i << kTileShift);
    const TileRows tr = tile_rows(E0, a.w.k, a.fast);
    tile_stage(a.dir, E0, threadIdx.x, sm);
    __syncthreads();
    for (unsigned p = threadIdx.x; p < kTilePairs; p += kTileThreads) weight_rows_pair<F>(a, E0, tr, p, sm);
    __syncthreads();
  }
}

__global__ void weight_rows_kernel(RowsItem kind, WeightRows a, uint64_t items) {
  const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
  for (uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; t < items; t += stride) weight_rows_item(kind, a, t);
}

// Random operands for the benchmark: finite codes of each kind from a hash of the index.
__global__ void bench_fill_kernel(TcKind kind, QFormat f, uint8_t* p, uint64_t rows, uint64_t lda, uint64_t kbytes, uint32_t salt) {
  const uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * lda) return;
  uint32_t h = (uint32_t)i * 0x9E3779B1u ^ salt;
  h ^= h >> 15, h *= 0x2C1B3C6Du, h ^= h >> 12, h *= 0x297A2D39u, h ^= h >> 15;
  uint8_t v = (uint8_t)h;
  if (kind == TcKind::W8A8 && v == 0x80) v = 0x81;                               // int8 in [-127, 127]
  if (kind == TcKind::Fp8) v &= f == QFormat::Fp8E4M3 ? 0xb7 : 0xbb;            // |value| well inside the range
  if (kind == TcKind::Bf16 && (i & 1)) v = (uint8_t)(0x3c | (v & 0x81));        // high byte: sign, exponent near 1
  if (kind == TcKind::F32) v = (i & 3) == 3 ? (uint8_t)(0x3e | (v & 0x81)) : v;  // sign, exponent near 1
  p[i] = i % lda < kbytes ? v : 0;
}

// ---- host emulation of the tensor-core kernel (ldmatrix / mma.sync written from the PTX ISA) -----

// ldmatrix.x4: register i of lane t holds bytes 4 (t % 4) .. +3 of the row lane 8 i + t / 4 addressed.
void ldsm_x4_emulated(const uint8_t* st, const int* addr, uint32_t (*out)[4]) {
  for (int t = 0; t < 32; ++t)
    for (int i = 0; i < 4; ++i) memcpy(&out[t][i], st + addr[8 * i + t / 4] + 4 * (t % 4), 4);
}

// One m16n8 MMA over 32 bytes of K (m16n8k32 8-bit, m16n8k16 bf16). Fragments (PTX ISA, "Matrix
// fragments for mma.m16n8k32" / ".m16n8k16"): lane t, group g = t / 4, thread-in-group q = t % 4:
// a_r holds A row g + 8 (r % 2), bytes 16 (r / 2) + 4 q .. +3; b_r holds B column g, K bytes
// 16 r + 4 q .. +3; c_r is D row g + 8 (r / 2), column 2 q + r % 2.
template <class Op>
void mma_emulated(typename Op::Acc (*c)[4], const uint32_t (*a)[4], const uint32_t (*b)[2]) {
  uint8_t A[16][32], B[8][32];
  for (int t = 0; t < 32; ++t) {
    for (int r = 0; r < 4; ++r) memcpy(&A[t / 4 + 8 * (r % 2)][16 * (r / 2) + 4 * (t % 4)], &a[t][r], 4);
    for (int r = 0; r < 2; ++r) memcpy(&B[t / 4][16 * r + 4 * (t % 4)], &b[t][r], 4);
  }
  for (int t = 0; t < 32; ++t)
    for (int r = 0; r < 4; ++r) {
      const uint8_t *ra = A[t / 4 + 8 * (r / 2)], *rb = B[2 * (t % 4) + r % 2];
      typename Op::Acc s = c[t][r];
      for (int k = 0; k < 32 / Op::kElem; ++k) {
        if constexpr (std::is_same<typename Op::Acc, int32_t>::value)
          s += Op::value(ra, k) * Op::value(rb, k);
        else
          s = zt_fma(Op::value(ra, k), Op::value(rb, k), s);
      }
      c[t][r] = s;
    }
}

// The whole grid, block by block: each k-tile's cp.async copies land in one stage buffer (the
// pipeline only changes when they land), then each warp's k-steps and group flushes, then the store.
template <class Op>
void tc_gemm_emulated(const TcParams& p) {
  using Acc = typename Op::Acc;
  constexpr int kPacked = Op::kPackedB ? Op::kElem : 0;
  std::vector<uint8_t> st(kStageBytes), dq(kBN * kBK);
  const uint8_t* const btile = Op::kPackedB ? dq.data() : st.data() + kBM * kBK;
  const int KT = (int)((p.kbytes + kBK - 1) / kBK), warps = kThreads / 32;
  std::vector<Acc> acc_v((size_t)kThreads * kMT * kNT * 4);
  std::vector<float> facc_v(acc_v.size());
  auto acc = [&](int w, int l) { return reinterpret_cast<Acc(*)[kNT][4]>(&acc_v[((size_t)w * 32 + l) * kMT * kNT * 4]); };
  auto facc = [&](int w, int l) { return reinterpret_cast<float(*)[kNT][4]>(&facc_v[((size_t)w * 32 + l) * kMT * kNT * 4]); };
  for (uint64_t m0 = 0; m0 < p.M; m0 += kBM)
    for (uint64_t n0 = 0; n0 < p.N; n0 += kBN) {
      std::fill(acc_v.begin(), acc_v.end(), Acc(0));
      std::fill(facc_v.begin(), facc_v.end(), 0.0f);
      GroupCursor gc = group_start(p);
      for (int kt = 0; kt < KT; ++kt) {
        for (int t = 0; t < kThreads; ++t)
          for (int j = 0; j < stage_copies(kPacked); ++j) {
            int dst;
            const uint8_t* src = stage_copy(p, kPacked, m0, n0, kt, t, j, &dst);
            const int bytes = j == 2 && kPacked ? packed_copy_bytes(kPacked) : 16;
            if (src)
              memcpy(&st[dst], src, bytes);
            else
              memset(&st[dst], 0, bytes);
          }
        if constexpr (Op::kPackedB)
          for (int t = 0; t < kThreads; ++t) dequant_stage<Op::kElem>(p, st.data(), dq.data(), n0, kt, t);
        for (int s = 0; s < kBK / 32; ++s) {
          const uint64_t kb = (uint64_t)kt * kBK + s * 32;
          if (kb >= p.kbytes) break;
          for (int w = 0; w < warps; ++w) {
            const int wm = w / kWarpsN, wn = w % kWarpsN;
            uint32_t a[kMT][32][4], b[kNT][32][2], r[32][4];
            int addr[32];
            for (int mt = 0; mt < kMT; ++mt) {
              for (int l = 0; l < 32; ++l) addr[l] = ldsm_a_offset(l, wm, mt, s);
              ldsm_x4_emulated(st.data(), addr, a[mt]);
            }
            for (int q = 0; q < kNT / 2; ++q) {
              for (int l = 0; l < 32; ++l) addr[l] = ldsm_b_offset(l, wn, q, s);
              ldsm_x4_emulated(btile, addr, r);
              for (int l = 0; l < 32; ++l)
                b[2 * q][l][0] = r[l][0], b[2 * q][l][1] = r[l][1], b[2 * q + 1][l][0] = r[l][2], b[2 * q + 1][l][1] = r[l][3];
            }
            for (int mt = 0; mt < kMT; ++mt)
              for (int nt = 0; nt < kNT; ++nt) {
                Acc c[32][4];
                for (int l = 0; l < 32; ++l) memcpy(c[l], acc(w, l)[mt][nt], sizeof c[l]);
                mma_emulated<Op>(c, a[mt], b[nt]);
                for (int l = 0; l < 32; ++l) memcpy(acc(w, l)[mt][nt], c[l], sizeof c[l]);
              }
          }
          if constexpr (Op::kGroups) {
            if (group_ends(gc, kb)) {
              for (int w = 0; w < warps; ++w)
                for (int l = 0; l < 32; ++l) flush_group(p, l, n0 + (w % kWarpsN) * 32, gc.group, acc(w, l), facc(w, l));
              group_next(p, &gc);
            }
          }
        }
      }
      for (int w = 0; w < warps; ++w)
        for (int l = 0; l < 32; ++l)
          store_warp_tile<Op>(p, l, m0 + (w / kWarpsN) * 64, n0 + (w % kWarpsN) * 32, acc(w, l), facc(w, l));
    }
}

void f32_gemm_emulated(const TcParams& p) {
  std::vector<float> As(kFK * kFT), Bs(kFK * kFT), acc((size_t)kThreads * 16);
  const uint64_t K = p.kbytes / 4;
  for (uint64_t m0 = 0; m0 < p.M; m0 += kFT)
    for (uint64_t n0 = 0; n0 < p.N; n0 += kFT) {
      for (int t = 0; t < kThreads; ++t) f32_init(p, m0, n0, t, reinterpret_cast<float(*)[4]>(&acc[t * 16]));
      for (uint64_t k0 = 0; k0 < K; k0 += kFK) {
        for (int t = 0; t < kThreads; ++t) f32_load(p, m0, n0, k0, t, As.data(), Bs.data());
        for (int t = 0; t < kThreads; ++t)
          f32_compute(As.data(), Bs.data(), t, (int)(K - k0 < kFK ? K - k0 : kFK), reinterpret_cast<float(*)[4]>(&acc[t * 16]));
      }
      for (int t = 0; t < kThreads; ++t) f32_store(p, m0, n0, t, reinterpret_cast<const float(*)[4]>(&acc[t * 16]));
    }
}

// ---- host side ------------------------------------------------------------------------------------

uint64_t elem_bytes(TcKind kind) { return kind == TcKind::Bf16 || kind == TcKind::W4A16 ? 2 : kind == TcKind::F32 ? 4 : 1; }

// Operand layout of one call: K bytes of an activation row, its padded stride, the weights' stored
// row bytes and their padded stride (W4A8: packed, half of K).
struct Layout {
  uint64_t kbytes, lda, wbytes, ldb;
};
Layout layout(TcKind kind, uint64_t K) {
  const uint64_t kb = K * elem_bytes(kind);
  if (kind == TcKind::F32) return {kb, kb, kb, kb};
  const uint64_t wb = kind == TcKind::W4A8 || kind == TcKind::W4A16 ? (K + 1) / 2 : kb;
  return {kb, round_up(kb, 16), wb, round_up(wb, 16)};
}

TcParams params(const TcGemm& g, Layout L, const uint8_t* a, const uint8_t* b, const float* sx, const float* scales,
                const uint8_t* zeros, const float* bias, float* y) {
  TcParams p{};
  p.a = a, p.b = b, p.M = g.M, p.N = g.N, p.lda = L.lda, p.ldb = L.ldb, p.kbytes = L.kbytes, p.y = y, p.bias = bias;
  p.w = g.w;
  p.w.data = nullptr;  // the codes are read from b (padded rows), only scales and zero-points go through w
  p.w.scales = const_cast<float*>(scales);
  p.w.zeros = const_cast<uint8_t*>(zeros);
  p.ep = Epilogue{kind_has_act_scale(g.kind) ? sx : nullptr, bias, nullptr, 0, false};
  p.ga = int_kind(g.kind) ? acc_group(g.w) : g.kind == TcKind::W4A16 ? 2 * acc_group(g.w) : 0;
  set_scale_strides(&p);
  p.sw = scales;
  p.sw_per_row = g.w.group != 0;
  return p;
}

// quantize_kernel on the host: each row's thread parts, then the max over them. A non-finite row
// sets *nonfinite and is left unwritten.
void quantize_rows_emulated(TcKind kind, QFormat f, const float* x, uint64_t M, uint64_t K, uint64_t lda, uint8_t* a, float* sx,
                            int* nonfinite) {
  for (uint64_t m = 0; m < M; ++m) {
    const float* row = x + m * K;
    uint32_t amax = 0;
    if (kind_has_act_scale(kind))
      for (int t = 0; t < kThreads; ++t) amax = std::max(amax, amax_bits_part(row, K, t));
    if (amax >= 0x7f800000u) {
      *nonfinite = 1;
      continue;
    }
    const QGroup grp = row_group(kind, f, amax);
    if (sx) sx[m] = grp.scale;
    for (int t = 0; t < kThreads; ++t) quantize_row_part(kind, f, row, K, lda, grp, t, a + m * lda);
  }
}

void run_emulated(const TcGemm& g) {
  const Layout L = layout(g.kind, g.K);
  std::vector<uint8_t> a, b;
  std::vector<float> sx(g.M);
  if (g.kind == TcKind::F32) {
    a.assign((const uint8_t*)g.x, (const uint8_t*)(g.x + g.M * g.K));
    b.assign((const uint8_t*)g.w32, (const uint8_t*)(g.w32 + g.N * g.K));
  } else {
    a.resize(g.M * L.lda), b.assign(g.N * L.ldb, 0);
    int bad = 0;
    quantize_rows_emulated(g.kind, g.w.format, g.x, g.M, g.K, L.lda, a.data(), sx.data(), &bad);
    if (bad) fail(Code::NonFinite, "gemmTc: the activations hold a non-finite value");
    for (uint64_t n = 0; n < g.N; ++n) memcpy(&b[n * L.ldb], g.w.data + n * L.wbytes, L.wbytes);
  }
  const TcParams p = params(g, L, a.data(), b.data(), sx.data(), g.w.scales, g.w.zeros, g.bias, g.y);
  switch (g.kind) {
    case TcKind::W8A8: tc_gemm_emulated<OpS8>(p); break;
    case TcKind::W4A8: tc_gemm_emulated<OpS4>(p); break;
    case TcKind::W4A16: tc_gemm_emulated<OpW4Bf16>(p); break;
    case TcKind::Fp8:
      if (g.w.format == QFormat::Fp8E5M2)
        tc_gemm_emulated<OpFp8<true>>(p);
      else
        tc_gemm_emulated<OpFp8<false>>(p);
      break;
    case TcKind::Bf16: tc_gemm_emulated<OpBf16>(p); break;
    case TcKind::F32: f32_gemm_emulated(p); break;
  }
}

void require_fp8_mma() {
  int dev = 0, major = 0, minor = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute");
  if (major * 10 + minor < 89)
    fail(Code::Unsupported, "gemmTc: fp8 tensor cores need sm_89 or newer (this GPU is sm_" + std::to_string(major * 10 + minor) + ")");
  // The image the driver loads must have been compiled for sm_89+ too: PTX of an older virtual
  // arch JIT-compiled for this GPU has the fp8 mma as a trap, which would kill the context.
  cudaFuncAttributes attr{};
  check(cudaFuncGetAttributes(&attr, tc_gemm_kernel<OpFp8<true>>), "cudaFuncGetAttributes");
  if (attr.ptxVersion < 89)
    fail(Code::Unsupported, "gemmTc: this addon's kernels were compiled for compute_" + std::to_string(attr.ptxVersion) +
                                ", without fp8 tensor cores; rebuild with ZOTUNE_CUDA_ARCHS including 89 or 90");
}

template <class Op>
void launch_tc(const TcParams& p, cudaStream_t s) {
  constexpr int bytes = Op::kPackedB ? kSmemBytesPacked : kSmemBytes;
  check(cudaFuncSetAttribute(tc_gemm_kernel<Op>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), "cudaFuncSetAttribute");
  const dim3 grid((unsigned)((p.N + kBN - 1) / kBN), (unsigned)((p.M + kBM - 1) / kBM));
  tc_gemm_kernel<Op><<<grid, kThreads, bytes, s>>>(p);
  check_launch("tc_gemm_kernel");
}

template <class Op>
void launch_reference(const TcParams& p, cudaStream_t s) {
  reference_kernel<Op><<<(unsigned)((p.M * p.N + 255) / 256), 256, 0, s>>>(p);
  check_launch("reference_kernel");
}

void launch_gemm(TcKind kind, QFormat f, TcImpl impl, const TcParams& p, cudaStream_t s) {
  const bool ref = impl == TcImpl::Reference;
  switch (kind) {
    case TcKind::W8A8: ref ? launch_reference<OpS8>(p, s) : launch_tc<OpS8>(p, s); break;
    case TcKind::W4A8: ref ? launch_reference<OpS4>(p, s) : launch_tc<OpS4>(p, s); break;
    case TcKind::W4A16: ref ? launch_reference<OpW4Bf16>(p, s) : launch_tc<OpW4Bf16>(p, s); break;
    case TcKind::Fp8:
      if (f == QFormat::Fp8E5M2)
        ref ? launch_reference<OpFp8<true>>(p, s) : launch_tc<OpFp8<true>>(p, s);
      else
        ref ? launch_reference<OpFp8<false>>(p, s) : launch_tc<OpFp8<false>>(p, s);
      break;
    case TcKind::Bf16: ref ? launch_reference<OpBf16>(p, s) : launch_tc<OpBf16>(p, s); break;
    case TcKind::F32:
      if (ref) {
        launch_reference<OpF32>(p, s);
      } else {
        const dim3 grid((unsigned)((p.N + kFT - 1) / kFT), (unsigned)((p.M + kFT - 1) / kFT));
        f32_gemm_kernel<<<grid, kThreads, 0, s>>>(p);
        check_launch("f32_gemm_kernel");
      }
      break;
  }
}

void check_grid(const TcGemm& g, TcImpl impl) {
  const uint64_t rows = impl == TcImpl::Reference ? (g.M * g.N + 255) / 256 : 0;
  if (g.M > (uint64_t)65535 * kFT || g.N > (uint64_t)0x7fffffff || rows > 0x7fffffffu)
    fail(Code::OutOfRange, "gemmTc: the output is too large for one launch");
}

}  // namespace

float gemm_tc(const TcGemm& g, TcImpl impl) {
  if (g.M == 0 || g.N == 0) return 0.0f;
  if (impl == TcImpl::Emulated) {
    run_emulated(g);
    return 0.0f;
  }
  require_device();
  check_grid(g, impl);
  if (g.kind == TcKind::Fp8 && impl == TcImpl::Fast) require_fp8_mma();
  const Layout L = layout(g.kind, g.K);
  const bool f32 = g.kind == TcKind::F32, scaled = kind_has_act_scale(g.kind);
  const uint64_t nscales = g.kind == TcKind::Bf16 || f32 ? 0 : qt_scale_count(g.w);
  DeviceBuffer<float> x(f32 ? 0 : g.M * g.K), y(g.M * g.N), sx(scaled ? g.M : 0), scales(nscales), bias(g.bias ? g.N : 0);
  DeviceBuffer<uint8_t> a(g.M * L.lda), b(g.N * L.ldb), zeros(g.w.zeros ? nscales : 0);
  DeviceBuffer<int> nonfinite(1);
  TimedCall call;
  if (f32) {
    call.to_device(a.ptr, g.x, g.M * L.kbytes);
    call.to_device(b.ptr, g.w32, g.N * L.kbytes);
  } else {
    call.to_device(x.ptr, g.x, x.bytes());
    check(cudaMemsetAsync(b.ptr, 0, b.bytes(), call.stream), "cudaMemsetAsync");
    if (L.wbytes)
      check(cudaMemcpy2DAsync(b.ptr, L.ldb, g.w.data, L.wbytes, L.wbytes, g.N, cudaMemcpyHostToDevice, call.stream),
            "cudaMemcpy2DAsync");
    if (nscales) call.to_device(scales.ptr, g.w.scales, scales.bytes());
    if (g.w.zeros) call.to_device(zeros.ptr, g.w.zeros, zeros.bytes());
  }
  if (g.bias) call.to_device(bias.ptr, g.bias, bias.bytes());
  check(cudaMemsetAsync(nonfinite.ptr, 0, sizeof(int), call.stream), "cudaMemsetAsync");
  const TcParams p = params(g, L, a.ptr, b.ptr, sx.ptr, scales.ptr, zeros.ptr, bias.ptr, y.ptr);

  call.begin();
  if (!f32) quantize_kernel<<<(unsigned)g.M, kThreads, 0, call.stream>>>(g.kind, g.w.format, x.ptr, g.K, L.lda, a.ptr, sx.ptr, nonfinite.ptr);
  check_launch("quantize_kernel");
  launch_gemm(g.kind, g.w.format, impl, p, call.stream);
  call.end("gemmTc kernel launch");
  int bad = 0;
  call.to_host(&bad, nonfinite.ptr, sizeof(int));
  call.to_host(g.y, y.ptr, y.bytes());
  const float ms = call.finish("gemmTc");
  if (bad) fail(Code::NonFinite, "gemmTc: the activations hold a non-finite value");
  return ms;
}

float weight_rows_host(TcImpl impl, const QTensorView& w, uint64_t r0, uint64_t rows, const Direction* dir, float alpha, bool bf16,
                       void* out) {
  const GemmWeights gw{false, nullptr, w, w.rows, w.cols};
  const uint64_t ld = bf16 ? bf16_row_bytes(w.cols) / 2 : w.cols, out_bytes = rows * ld * (bf16 ? 2 : 4);
  if (rows == 0 || w.cols == 0) return 0.0f;
  if (impl == TcImpl::Emulated) {
    weight_rows_launch(impl, gw, r0, rows, dir, alpha, bf16, out, nullptr);
    return 0.0f;
  }
  require_device();
  const uint64_t wbytes = w.rows * qformat_row_bytes(w.format, w.cols), nscales = w.scales ? qt_scale_count(w) : 0;
  DeviceBuffer<uint8_t> data(wbytes), zeros(w.zeros ? nscales : 0), dout(out_bytes);
  DeviceBuffer<float> scales(nscales);
  TimedCall call;
  call.to_device(data.ptr, w.data, wbytes);
  if (nscales) call.to_device(scales.ptr, w.scales, scales.bytes());
  if (w.zeros) call.to_device(zeros.ptr, w.zeros, zeros.bytes());
  GemmWeights dw = gw;
  dw.q.data = data.ptr, dw.q.scales = nscales ? scales.ptr : nullptr, dw.q.zeros = w.zeros ? zeros.ptr : nullptr;
  call.begin();
  weight_rows_launch(impl, dw, r0, rows, dir, alpha, bf16, dout.ptr, call.stream);
  call.end("weightRows kernel");
  call.to_host(out, dout.ptr, out_bytes);
  return call.finish("weightRows");
}

void gemm_f32_launch(TcImpl impl, const float* x, const float* w, float* y, uint64_t M, uint64_t N, uint64_t K,
                     bool accumulate, void* stream, const float* act_scale) {
  if (M == 0 || N == 0) return;
  if (M > (uint64_t)65535 * kFT || N > (uint64_t)0x7fffffff) fail(Code::OutOfRange, "gemmF32: the output is too large for one launch");
  TcParams p{};
  p.a = reinterpret_cast<const uint8_t*>(x), p.b = reinterpret_cast<const uint8_t*>(w);
  p.M = M, p.N = N, p.lda = p.ldb = p.kbytes = K * 4, p.y = y, p.accumulate = accumulate;
  p.ep = Epilogue{act_scale, nullptr, accumulate ? y : nullptr, N, false};
  if (impl == TcImpl::Emulated) return f32_gemm_emulated(p);
  const dim3 grid((unsigned)((N + kFT - 1) / kFT), (unsigned)((M + kFT - 1) / kFT));
  f32_gemm_kernel<<<grid, kThreads, 0, (cudaStream_t)stream>>>(p);
  check_launch("f32_gemm_kernel");
}

uint64_t bf16_row_bytes(uint64_t K) { return layout(TcKind::Bf16, K).lda; }

void bf16_rows_launch(TcImpl impl, const float* x, uint64_t M, uint64_t K, uint8_t* a, void* stream) {
  if (M == 0) return;
  const uint64_t lda = bf16_row_bytes(K);
  if (impl == TcImpl::Emulated) return quantize_rows_emulated(TcKind::Bf16, QFormat::Bf16, x, M, K, lda, a, nullptr, nullptr);
  if (M > 0x7fffffffu) fail(Code::OutOfRange, "bf16Rows: too many rows for one launch");
  quantize_kernel<<<(unsigned)M, kThreads, 0, (cudaStream_t)stream>>>(TcKind::Bf16, QFormat::Bf16, x, K, lda, a, nullptr, nullptr);
  check_launch("quantize_kernel");
}

void weight_rows_launch(TcImpl impl, const GemmWeights& w, uint64_t r0, uint64_t rows, const Direction* dir, float alpha,
                        bool bf16, void* out, void* stream) {
  if (rows == 0 || w.k == 0) return;
  WeightRows a{w, r0, rows, bf16 ? bf16_row_bytes(w.k) / 2 : w.k, dir != nullptr, bf16, dir ? *dir : Direction{}, alpha, out};
  const uint64_t G = w.f32 ? 0 : w.q.group;
  a.gpr = G ? (w.k + G - 1) / G : 1;
  a.fast = tile_rows_fast(w.k) && (G == 0 || (G <= 0xffffffffu && w.k * G <= ((uint64_t)1 << 32)));
  a.gdiv = fast_div(a.fast && G ? (uint32_t)G : 1u);
  const bool tiled = a.perturb && a.dir.dist == kDirGauss;  // whole Box-Muller pairs: one normal per weight
  const uint64_t items = (rows * w.k + 3) / 4;            // else runs of 4 elements
  const Tiles tiles = tiles_for(r0 * w.k, rows * w.k);
  const uint64_t pads = rows * (a.ld - w.k);
  if (impl == TcImpl::Emulated) {
    if (tiled) {
      with_weight_format(w.f32, w.q.format, [&](auto fmt) {
        constexpr int F = decltype(fmt)::value;
        std::unique_ptr<TileWords> sm(new TileWords);
        for (uint64_t i = 0; i < tiles.count; ++i) {
          const uint64_t E0 = tiles.e0 + (i << kTileShift);
          const TileRows tr = tile_rows(E0, a.w.k, a.fast);
          for (unsigned t = 0; t < kTileThreads; ++t) tile_stage(a.dir, E0, t, *sm);
          for (unsigned p = 0; p < kTilePairs; ++p) weight_rows_pair<F>(a, E0, tr, p, *sm);
        }
      });
    } else {
      for (uint64_t t = 0; t < items; ++t) weight_rows_item(RowsItem::Elem, a, t);
    }
    for (uint64_t t = 0; t < pads; ++t) weight_rows_item(RowsItem::Pad, a, t);
    return;
  }
  auto blocks = [](uint64_t n) { return (unsigned)std::min<uint64_t>((n + kThreads - 1) / kThreads, 1u << 16); };
  if (tiled) {
    with_weight_format(w.f32, w.q.format, [&](auto fmt) {
      weight_rows_tile_kernel<decltype(fmt)::value>
          <<<(unsigned)std::min<uint64_t>(tiles.count, 1u << 16), kTileThreads, 0, (cudaStream_t)stream>>>(a, tiles);
    });
    check_launch("weight_rows_tile_kernel");
  } else {
    weight_rows_kernel<<<blocks(items), kThreads, 0, (cudaStream_t)stream>>>(RowsItem::Elem, a, items);
    check_launch("weight_rows_kernel");
  }
  if (pads) weight_rows_kernel<<<blocks(pads), kThreads, 0, (cudaStream_t)stream>>>(RowsItem::Pad, a, pads);
  check_launch("weight_rows_kernel");
}

void gemm_bf16_launch(TcImpl impl, const uint8_t* a, const uint8_t* b, float* y, uint64_t M, uint64_t N, uint64_t K,
                      bool accumulate, void* stream, const float* act_scale) {
  if (M == 0 || N == 0) return;
  if (M > (uint64_t)65535 * kBM || N > (uint64_t)0x7fffffff) fail(Code::OutOfRange, "gemmBf16: the output is too large for one launch");
  TcParams p{};
  p.a = a, p.b = b, p.M = M, p.N = N, p.lda = p.ldb = bf16_row_bytes(K), p.kbytes = 2 * K, p.y = y, p.accumulate = accumulate;
  p.ep.sx = act_scale;
  if (impl == TcImpl::Emulated) return tc_gemm_emulated<OpBf16>(p);
  launch_tc<OpBf16>(p, (cudaStream_t)stream);
}

// The packed-weight tiles copy weight rows in 16-byte chunks (cp.async): rows of a multiple of 16
// bytes at a 16-byte aligned address.
bool packed_rows_fit(const QTensorView& w, TcKind kind) {
  return layout(kind, w.cols).wbytes % 16 == 0 && (uintptr_t)w.data % 16 == 0;
}

bool w4a16_fits(const GemmWeights& w) { return !w.f32 && w.q.format == QFormat::Int4 && packed_rows_fit(w.q, TcKind::W4A16); }

void gemm_w4a16_launch(TcImpl impl, const uint8_t* a, const QTensorView& w, float* y, uint64_t M, bool accumulate, void* stream) {
  const uint64_t N = w.rows, K = w.cols;
  if (M == 0 || N == 0) return;
  if (M > (uint64_t)65535 * kBM || N > (uint64_t)0x7fffffff) fail(Code::OutOfRange, "gemmW4A16: the output is too large for one launch");
  const Layout L = layout(TcKind::W4A16, K);
  TcParams p{};
  p.a = a, p.b = w.data, p.M = M, p.N = N, p.lda = L.lda, p.ldb = L.wbytes, p.kbytes = L.kbytes, p.y = y, p.accumulate = accumulate;
  p.w = w;
  p.ga = 2 * acc_group(w);
  set_scale_strides(&p);
  if (impl == TcImpl::Emulated) return tc_gemm_emulated<OpW4Bf16>(p);
  launch_tc<OpW4Bf16>(p, (cudaStream_t)stream);
}

uint64_t act_int8_row_bytes(uint64_t K) { return layout(TcKind::W8A8, K).lda; }

void act_int8_rows_launch(TcImpl impl, const float* x, uint64_t M, uint64_t K, uint8_t* codes, float* sx, int* nonfinite,
                          void* stream) {
  if (M == 0) return;
  const uint64_t lda = act_int8_row_bytes(K);
  if (impl == TcImpl::Emulated) return quantize_rows_emulated(TcKind::W8A8, QFormat::Int8, x, M, K, lda, codes, sx, nonfinite);
  if (M > 0x7fffffffu) fail(Code::OutOfRange, "actInt8Rows: too many rows for one launch");
  quantize_kernel<<<(unsigned)M, kThreads, 0, (cudaStream_t)stream>>>(TcKind::W8A8, QFormat::Int8, x, K, lda, codes, sx, nonfinite);
  check_launch("quantize_kernel");
}

void act_codes_f32_launch(TcImpl impl, const uint8_t* codes, uint64_t M, uint64_t K, float* out, void* stream) {
  const uint64_t n = M * K, lda = act_int8_row_bytes(K);
  if (n == 0) return;
  if (impl == TcImpl::Emulated) {
    for (uint64_t i = 0; i < n; ++i) out[i] = code_as_f32(codes, K, lda, i);
    return;
  }
  codes_f32_kernel<<<(unsigned)std::min<uint64_t>((n + kThreads - 1) / kThreads, 1u << 16), kThreads, 0, (cudaStream_t)stream>>>(codes, K, lda, out, n);
  check_launch("codes_f32_kernel");
}

void gemm_int_act_launch(TcImpl impl, const IntActGemm& g, void* stream) {
  const uint64_t M = g.M, N = g.w.rows, K = g.w.cols;
  if (M == 0 || N == 0) return;
  const bool int4 = g.w.format == QFormat::Int4;
  const Layout L = layout(int4 ? TcKind::W4A8 : TcKind::W8A8, K);
  TcParams p{};
  p.a = g.codes, p.b = g.w.data, p.M = M, p.N = N, p.lda = L.lda, p.ldb = L.wbytes, p.kbytes = L.kbytes, p.y = g.y;
  p.w = g.w;
  p.ep = Epilogue{g.sx, nullptr, g.accumulate ? g.y : nullptr, N, false};
  p.ga = acc_group(g.w);
  set_scale_strides(&p);
  if (g.grid) p.grid = true, p.dir = *g.grid, p.az = zt_mul(g.alpha, dir_code_step(*g.grid)), p.first = g.first;
  const bool tiles = !g.grid && packed_rows_fit(g.w, int4 ? TcKind::W4A8 : TcKind::W8A8);
  if (impl == TcImpl::Emulated) {
    if (tiles) return int4 ? tc_gemm_emulated<OpS4>(p) : tc_gemm_emulated<OpS8>(p);
    for (uint64_t n = 0; n < N; ++n)
      if (g.grid)
        for (uint64_t m0 = 0; m0 < M; m0 += kColumnRows) int4 ? grid_probe_column<OpS4>(p, n, m0) : grid_probe_column<OpS8>(p, n, m0);
      else
        for (uint64_t m = 0; m < M; ++m) g.y[m * N + n] = int4 ? reference_output<OpS4>(p, m, n) : reference_output<OpS8>(p, m, n);
    return;
  }
  if (M > (uint64_t)65535 * (g.grid ? kColumnRows : kBM) || N > (uint64_t)0x7fffffff || (M * N + 255) / 256 > 0x7fffffffu)
    fail(Code::OutOfRange, "gemmIntAct: the output is too large for one launch");
  const cudaStream_t s = (cudaStream_t)stream;
  if (g.grid) {
    const dim3 blocks((unsigned)((N + 127) / 128), (unsigned)((M + kColumnRows - 1) / kColumnRows));
    if (int4) grid_probe_kernel<OpS4><<<blocks, 128, 0, s>>>(p);
    else grid_probe_kernel<OpS8><<<blocks, 128, 0, s>>>(p);
    check_launch("grid_probe_kernel");
  } else if (tiles) {
    int4 ? launch_tc<OpS4>(p, s) : launch_tc<OpS8>(p, s);
  } else {
    int4 ? launch_reference<OpS4>(p, s) : launch_reference<OpS8>(p, s);
  }
}

TcBench gemm_tc_bench(TcKind kind, QFormat fp8, uint64_t M, uint64_t N, uint64_t K, int iters) {
  require_device();
  if (kind == TcKind::Fp8) require_fp8_mma();
  TcGemm g{kind, nullptr, M, N, K, QTensorView{}, nullptr, nullptr, nullptr};
  const bool int4 = kind == TcKind::W4A8 || kind == TcKind::W4A16;
  g.w.format = kind == TcKind::Fp8 ? fp8 : kind == TcKind::Bf16 ? QFormat::Bf16 : int4 ? QFormat::Int4 : QFormat::Int8;
  g.w.rows = N, g.w.cols = K, g.w.group = int4 ? 128 : K;  // int4 groups of 128, else per-row scales
  check_grid(g, TcImpl::Fast);
  const Layout L = layout(kind, K);
  const bool scaled = kind_has_act_scale(kind);
  const uint64_t nscales = scaled || int4 ? qt_scale_count(g.w) : 0;
  DeviceBuffer<uint8_t> a(M * L.lda), b(N * L.ldb);
  DeviceBuffer<float> y(M * N), sx(scaled ? M : 0), scales(nscales);
  TimedCall call;
  auto fill = [&](TcKind k, uint8_t* p, uint64_t rows, uint64_t ld, uint64_t bytes, uint32_t salt) {
    if (rows * ld) bench_fill_kernel<<<(unsigned)((rows * ld + 255) / 256), 256, 0, call.stream>>>(k, fp8, p, rows, ld, bytes, salt);
    check_launch("bench_fill_kernel");
  };
  fill(kind == TcKind::W4A8 ? TcKind::W8A8 : kind == TcKind::W4A16 ? TcKind::Bf16 : kind, a.ptr, M, L.lda, L.kbytes, 1);
  fill(kind, b.ptr, N, L.ldb, L.wbytes, 2);
  if (nscales) {  // scales as dynamic quantization makes them: about 1 / 127 of unit-sized values
    std::vector<float> ones(std::max(M, nscales), scaled ? 1.0f / 127 : 1.0f / 8);
    if (scaled) call.to_device(sx.ptr, ones.data(), sx.bytes());
    call.to_device(scales.ptr, ones.data(), scales.bytes());
    check(cudaStreamSynchronize(call.stream), "gemmTcBench");  // `ones` leaves scope after the copies only
  }
  const TcParams p = params(g, L, a.ptr, b.ptr, sx.ptr, scales.ptr, nullptr, nullptr, y.ptr);
  launch_gemm(kind, fp8, TcImpl::Fast, p, call.stream);  // warm-up
  check(cudaGetLastError(), "gemmTcBench kernel launch");
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    call.begin();
    launch_gemm(kind, fp8, TcImpl::Fast, p, call.stream);
    call.end("gemmTcBench kernel launch");
    ms.push_back(call.finish("gemmTcBench"));
  }
  std::sort(ms.begin(), ms.end());
  return {ms[0], ms[ms.size() / 2]};
}

}  // namespace cuda
}  // namespace zt
