// Weight-streaming GEMV / skinny GEMM (gemv.h). Compiled with -fmad=false: every rounding is the
// explicit zt_* operation, so the host emulation gives the device's bits.
#include <cuda_runtime.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../../native/common/status.h"
#include "../../native/cpu/gemm_int8.h"  // the integer GEMV's numerics: w_code, w_scale, acc_group, epilogue
#include "../../native/cpu/perturb.h"     // perturbed(): the one perturbation rounding
#include "device.h"
#include "gemv.h"
#include "pool.h"
#include "timed_call.h"

namespace zt {
namespace cuda {
namespace {

constexpr int kF32 = -1;        // format code of plain fp32 weights (others: the QFormat values)
constexpr int kWarps = 4;       // warps per block of the fast kernel
constexpr int kChunk = 64;      // elements per lane step: 8 Philox blocks of normals, 2 half chunks
constexpr uint64_t kTargetWarps = 132 * 32;  // fill an H100 (132 SMs); a constant so emulation splits alike

struct Params {
  QTensorView q;      // codes, scales, zeros (device memory, or host memory when emulated)
  const float* w32;   // fp32 weights [n, k]
  const float* a;     // [mt, k]; rows m .. mt-1 are zeros
  const float* bias;  // [n] or null
  float* c;           // [m, n]
  float* partial;     // [splits, m, n] when splits > 1
  uint64_t m, n, k;
  uint64_t gpr;       // scale groups per row (1 for per-row scales)
  unsigned gshift;    // element k uses group k >> gshift (63: one scale per row or tensor)
  bool accumulate;
  bool aligned;       // rows start on 16 bytes: full chunks take vector loads
  bool perturb, sparse;
  Direction dir;
  float alpha;
  uint64_t first;
  const uint32_t* idx;
  uint64_t nidx;
  uint64_t chunks, cps;  // 64-element chunks per row, chunks per split
  uint32_t splits;
};

template <int F>
__host__ __device__ constexpr int code_bits() {
  return F == kF32 ? 32
         : (F == (int)QFormat::Int4 || F == (int)QFormat::Nf4)  ? 4
         : (F == (int)QFormat::Bf16 || F == (int)QFormat::Fp16) ? 16
                                                                 : 8;
}
template <int F>
__host__ __device__ constexpr bool has_scales() {
  return F != kF32 && F != (int)QFormat::Bf16 && F != (int)QFormat::Fp16;
}

// --- memory access (device loads; plain reads when emulated) -----------------------------------

// Weights are read once: L1 evict-first (the lane's other 16 bytes of the sector still hit), L2
// prefetch of 256 bytes.
ZT_HD void load16(const uint8_t* p, uint32_t w[4]) {
#if defined(__CUDA_ARCH__)
  asm("ld.global.nc.L1::evict_first.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
      : "l"(p));
#else
  memcpy(w, p, 16);
#endif
}
ZT_HD void load_x4(const float* p, float x[4]) {
#if defined(__CUDA_ARCH__)
  const float4 v = __ldg(reinterpret_cast<const float4*>(p));
  x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
#else
  memcpy(x, p, 16);
#endif
}
ZT_HD float load_x(const float* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(p);
#else
  return *p;
#endif
}

template <int F>
ZT_HD const uint8_t* row_ptr(const Params& p, uint64_t n) {
  if constexpr (F == kF32) return reinterpret_cast<const uint8_t*>(p.w32 + n * p.k);
  return p.q.data + n * qformat_row_bytes(p.q.format, p.k);
}
template <int F>
ZT_HD uint32_t code_at(const Params& p, uint64_t n, uint64_t k) {
  if constexpr (F == kF32) return f32_to_bits(p.w32[n * p.k + k]);
  return qt_code_at(p.q, n, k);
}

// Scale and zero-point of element k of row n (k's group; groups never split a half chunk).
template <int F>
ZT_HD QGroup group_at(const Params& p, uint64_t n, uint64_t k) {
  QGroup g{1.0f, 1.0f, kInt4SymZero, 0};
  if constexpr (has_scales<F>()) {
    const uint64_t i = (p.q.group == 0 ? 0 : n * p.gpr) + (k >> p.gshift);
    g.scale = p.q.scales[i];
    if (F == (int)QFormat::Int4 && p.q.zeros) g.zp = p.q.zeros[i];
  }
  return g;
}

// Decoded weight of a code: the unscaled value (fast order) or w = q_decode (perturbed / reference).
template <int F>
ZT_HD float unscaled(uint32_t code, int zp) {
  if constexpr (F == kF32) return bits_to_f32(code);
  return q_value((QFormat)F, code, zp);
}
template <int F>
ZT_HD float decoded(uint32_t code, QGroup g) {
  if constexpr (F == kF32) return bits_to_f32(code);
  return q_decode((QFormat)F, code, g);
}

ZT_HD uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

// First position of idx (strictly increasing) holding a value >= v.
ZT_HD uint64_t lower_bound_u32(const uint32_t* idx, uint64_t n, uint64_t v) {
  uint64_t lo = 0, hi = n;
  while (lo < hi) {
    const uint64_t mid = (lo + hi) / 2;
    if ((uint64_t)idx[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// --- directions ---------------------------------------------------------------------------------

// z(e0 + j) for j < 64, e0 a multiple of 64: the 8 counters each stream uses for these elements are
// generated once (a normal block holds 8 of them, 4 words x 2 outputs) instead of once per element.
// Same values as direction_at (philox.h normal_at / rademacher_at, direction.h dir_grid_code_word).
ZT_HD void dir_block64(const Direction& d, uint64_t e0, float z[kChunk]) {
  const RngKey key = dir_key(d);
  for (int c8 = 0; c8 < 8; ++c8) {
    uint32_t w[4];
    if (d.dist == kDirRademacher) {
      philox_block(key, bit_counter(e0 + c8), w);
      for (int j = c8; j < kChunk; j += 8) {
        const uint64_t i = e0 + j;
        z[j] = ((w[bit_slot_word(i)] >> bit_slot_bit(i)) & 1u) ? -1.0f : 1.0f;
      }
      continue;
    }
    philox_block(key, normal_counter(e0 + c8), w);
    uint32_t sr[4] = {0, 0, 0, 0};
    if (d.bits) philox_block(dir_sr_key(d), normal_counter(e0 + c8), sr);
    for (int q = 0; q < 4; ++q) {
      float v[2];
      box_muller(w[q], &v[0], &v[1]);
      for (int h = 0; h < 2; ++h) {
        const int j = c8 + 8 * q + 32 * h;  // word q holds elements 8q + c8 (output 0) and 32 + 8q + c8
        z[j] = d.bits ? zt_mul(dir_grid_code_word(d, e0 + j, v[h], sr[q]), dir_grid_step(d.bits)) : v[h];
      }
    }
  }
}

// z(i) one element at a time, out of line: only unaligned and sparse chunks take it, and inlining
// direction_at at each element of an unrolled chunk would multiply the code (and compile time).
__host__ __device__ __noinline__ float direction_one(const Direction& d, uint64_t i) { return direction_at(d, i); }

// w' of element e = n·K + k: dense (z = zb when the chunk has a direction block) or sparse (cursor
// `cur` walks the sorted index list in step with k).
ZT_HD float perturb_elem(const Params& p, uint64_t e, float w, bool block, float zb, uint64_t* cur) {
  if (p.sparse) {
    if (*cur < p.nidx && p.idx[*cur] == e) {
      ++*cur;
      return perturbed(w, p.alpha, direction_one(p.dir, p.first + e));
    }
    return w;
  }
  return perturbed(w, p.alpha, block ? zb : direction_one(p.dir, p.first + e));
}

// --- fast kernel: per-lane code ------------------------------------------------------------------

// Where a lane's activations come from: x[m][k0 + 4f .. 4f + 3], f < 16 the float4 of the chunk.
// GlobalX reads them from the activation rows (each lane its own chunk: a warp's float4 loads touch
// 32 lines); the staged kernel's SharedX from the block's copy of the tile in shared memory.
struct GlobalX {
  const float* a;
  uint64_t k;
  __host__ __device__ __forceinline__ void load(int m, uint64_t k0, int f, float x[4]) const { load_x4(a + m * k + k0 + 4 * f, x); }
};

// A full, aligned chunk: all its 16-byte vectors loaded first, then two half chunks of 32. zb is
// indexed with constants only (after unrolling), so it stays in registers.
template <int F, int MT, bool P, int ZN, class X>
ZT_HD void chunk_full(const Params& p, uint64_t n, uint64_t k0, bool block, const float (&zb)[ZN], uint64_t* cur,
                      float acc[MT], const X& xs) {
  constexpr int B = code_bits<F>(), NV = kChunk * B / 128;
  constexpr uint32_t mask = B == 32 ? ~0u : (1u << B) - 1;
  constexpr bool split_scale = has_scales<F>() && !P;  // t = Σ x·v per half, then acc = fma(s, t, acc)
  uint32_t words[4 * NV];
  const uint8_t* src = row_ptr<F>(p, n) + k0 * B / 8;
#pragma unroll
  for (int v = 0; v < NV; ++v) load16(src + 16 * v, words + 4 * v);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint64_t kh = k0 + 32 * h;
    const QGroup g = group_at<F>(p, n, kh);
    float t[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) t[m] = 0.0f;
#pragma unroll
    for (int i4 = 0; i4 < 8; ++i4) {
      float w[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int j = 32 * h + 4 * i4 + u;
        const uint32_t code = (words[j * B / 32] >> (j * B % 32)) & mask;
        if constexpr (P) w[u] = perturb_elem(p, n * p.k + k0 + j, decoded<F>(code, g), block, zb[j], cur);
        else w[u] = split_scale ? unscaled<F>(code, g.zp) : decoded<F>(code, g);
      }
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        float x[4];
        xs.load(m, k0, 8 * h + i4, x);
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          if (split_scale) t[m] = zt_fma(x[u], w[u], t[m]);
          else acc[m] = zt_fma(x[u], w[u], acc[m]);
        }
      }
    }
    if (split_scale) {
#pragma unroll
      for (int m = 0; m < MT; ++m) acc[m] = zt_fma(g.scale, t[m], acc[m]);
    }
  }
}

// Any chunk (a short last chunk, or rows not on 16 bytes): element by element, the same order.
template <int F, int MT, bool P>
ZT_HD void chunk_any(const Params& p, uint64_t n, uint64_t k0, uint64_t len, uint64_t* cur, float acc[MT]) {
  constexpr bool split_scale = has_scales<F>() && !P;
  for (uint64_t h0 = 0; h0 < len; h0 += 32) {
    const uint64_t kh = k0 + h0, hl = min_u64(32, len - h0);
    const QGroup g = group_at<F>(p, n, kh);
    float t[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) t[m] = 0.0f;
    for (uint64_t i = 0; i < hl; ++i) {
      const uint32_t code = code_at<F>(p, n, kh + i);
      float w;
      if constexpr (P) w = perturb_elem(p, n * p.k + kh + i, decoded<F>(code, g), false, 0.0f, cur);
      else w = split_scale ? unscaled<F>(code, g.zp) : decoded<F>(code, g);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const float x = load_x(p.a + m * p.k + kh + i);
        if (split_scale) t[m] = zt_fma(x, w, t[m]);
        else acc[m] = zt_fma(x, w, acc[m]);
      }
    }
    if (split_scale) {
#pragma unroll
      for (int m = 0; m < MT; ++m) acc[m] = zt_fma(g.scale, t[m], acc[m]);
    }
  }
}

// Chunk c of row n into the lane's sums (x of full chunks through xs, of the others from p.a).
template <int F, int MT, bool P, class X>
ZT_HD void lane_chunk(const Params& p, uint64_t n, uint64_t c, float acc[MT], const X& xs) {
  const uint64_t k0 = c * kChunk, len = min_u64(kChunk, p.k - k0);
  const bool full = len == kChunk && p.aligned;
  uint64_t cur = 0;
  float zb[P ? kChunk : 1];
  bool block = false;
  if constexpr (P) {
    if (p.sparse) cur = lower_bound_u32(p.idx, p.nidx, n * p.k + k0);
    const uint64_t e0 = p.first + n * p.k + k0;
    block = full && !p.sparse && (e0 & (kChunk - 1)) == 0;
    if (block) dir_block64(p.dir, e0, zb);
  }
  if (full) chunk_full<F, MT, P>(p, n, k0, block, zb, &cur, acc, xs);
  else chunk_any<F, MT, P>(p, n, k0, len, &cur, acc);
}

// Lane `lane` of the warp for (row n, split s): chunks s·cps + lane, + 32, ... in order.
template <int F, int MT, bool P>
ZT_HD void lane_dot(const Params& p, uint64_t n, uint32_t s, unsigned lane, float acc[MT]) {
#pragma unroll
  for (int m = 0; m < MT; ++m) acc[m] = 0.0f;
  const uint64_t c0 = s * p.cps, c1 = min_u64(p.chunks, c0 + p.cps);
  const GlobalX xs{p.a, p.k};
  for (uint64_t c = c0 + lane; c < c1; c += 32) lane_chunk<F, MT, P>(p, n, c, acc, xs);
}

// C (when accumulating) and bias after the sum, as the CPU adds them.
ZT_HD void finish_out(const Params& p, uint64_t m, uint64_t n, float r) {
  float* o = p.c + m * p.n + n;
  if (p.accumulate) r = zt_add(*o, r);
  *o = p.bias ? zt_add(r, p.bias[n]) : r;
}
ZT_HD void store_out(const Params& p, uint64_t m, uint64_t n, uint32_t s, float r) {
  if (p.splits == 1) finish_out(p, m, n, r);
  else p.partial[(s * p.m + m) * p.n + n] = r;
}
// Thread (m, n) of the split reduction: splits added in order.
ZT_HD void reduce_out(const Params& p, uint64_t m, uint64_t n) {
  float r = p.partial[m * p.n + n];
  for (uint32_t s = 1; s < p.splits; ++s) r = zt_add(r, p.partial[(s * p.m + m) * p.n + n]);
  finish_out(p, m, n, r);
}

// --- reference kernel: per-thread code -----------------------------------------------------------

// Output (m, n): one fma chain in k order from C or 0, then + bias (the CPU GEMM order).
template <int F>
ZT_HD void ref_out(const Params& p, uint64_t m, uint64_t n) {
  const uint64_t K = p.k;
  float c = p.accumulate ? p.c[m * p.n + n] : 0.0f;
  uint64_t cur = p.perturb && p.sparse ? lower_bound_u32(p.idx, p.nidx, n * K) : 0;
  for (uint64_t k = 0; k < K; ++k) {
    float w;
    if constexpr (F == kF32) w = p.w32[n * K + k];
    else w = q_decode((QFormat)F, qt_code_at(p.q, n, k), qt_group(p.q, qt_scale_index(p.q, n, k)));
    if (p.perturb) w = perturb_elem(p, n * K + k, w, false, 0.0f, &cur);
    c = zt_fma(p.a[m * K + k], w, c);
  }
  p.c[m * p.n + n] = p.bias ? zt_add(c, p.bias[n]) : c;
}

// --- kernels -------------------------------------------------------------------------------------

// The butterfly warp sum (xor 16, 8, 4, 2, 1) of each row's lane sums; lane m stores row m.
template <int MT>
__device__ __forceinline__ void warp_sum_store(const Params& p, uint64_t n, uint32_t s, unsigned lane, float acc[MT]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
    for (int o = 16; o; o >>= 1) acc[m] = zt_add(acc[m], __shfl_xor_sync(0xffffffffu, acc[m], o));
#pragma unroll
  for (int m = 0; m < MT; ++m)
    if (lane == (unsigned)m && (uint64_t)m < p.m) store_out(p, m, n, s, acc[m]);
}

// Up to 128 registers for M <= 4 (4 blocks of 4 warps per SM to keep loads in flight), 255 above.
template <int F, int MT, bool P>
__global__ void __launch_bounds__(kWarps * 32, MT <= 4 ? 4 : 2) gemv_fast_kernel(Params p) {
  const uint64_t warp = (uint64_t)blockIdx.x * kWarps + threadIdx.x / 32;
  if (warp >= p.n * p.splits) return;  // whole warps only: the shuffles below see full warps
  const unsigned lane = threadIdx.x & 31;
  const uint64_t n = warp / p.splits;
  const uint32_t s = (uint32_t)(warp % p.splits);
  float acc[MT];
  lane_dot<F, MT, P>(p, n, s, lane, acc);
  warp_sum_store<MT>(p, n, s, lane, acc);
}

// The fast kernel with the activations staged in shared memory (MT <= 4, aligned rows): a block's
// kWarps warps take kWarps consecutive rows of one K split, so they read the same chunks, and for
// each group of 32 chunks (one per lane) the block first copies their activations into shared
// memory with coalesced loads, laid out [m][f][lane] with rows of 33 float4 (conflict-free stores
// and lane-contiguous reads); lanes then read their x there instead of one line per lane from
// global memory. Each lane does the same arithmetic on the same chunks as gemv_fast_kernel, so
// the result is the same bits (and the same host emulation).
constexpr int kStageMaxMt = 4;
constexpr int kStagePitch = 33;  // float4 per [m][f] row of the tile: 32 lanes + 1 (bank skew)

struct SharedX {
  const float4* tile;  // tile + lane
  __host__ __device__ __forceinline__ void load(int m, uint64_t, int f, float x[4]) const {
    const float4 v = tile[(m * 16 + f) * kStagePitch];
    x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
  }
};

// Element i < MT·512 of the tile of chunks [t0, t0 + 32) (zeros past c1 and the row's end): thread i
// of the copy, consecutive i reading consecutive float4 of an activation row.
template <int MT>
ZT_HD void stage_x(const Params& p, uint64_t t0, uint64_t c1, uint32_t i, float4* tile) {
  const uint32_t m = i / 512, cl = (i / 16) % 32, f = i % 16;
  const uint64_t k = (t0 + cl) * kChunk + 4 * f;
  float x[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (t0 + cl < c1 && k + 4 <= p.k) load_x4(p.a + m * p.k + k, x);
  tile[(m * 16 + f) * kStagePitch + cl] = make_float4(x[0], x[1], x[2], x[3]);
}

template <int F, int MT, bool P>
__global__ void __launch_bounds__(kWarps * 32, 4) gemv_staged_kernel(Params p) {
  static_assert(MT <= kStageMaxMt, "the staged tile holds at most kStageMaxMt rows");
  __shared__ float4 tile[MT * 16 * kStagePitch];
  const unsigned lane = threadIdx.x & 31;
  const uint32_t s = (uint32_t)(blockIdx.x % p.splits);
  const uint64_t n = (uint64_t)(blockIdx.x / p.splits) * kWarps + threadIdx.x / 32;
  const bool active = n < p.n;  // a warp past the last row still helps stage (and meets the barriers)
  float acc[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) acc[m] = 0.0f;
  const uint64_t c0 = s * p.cps, c1 = min_u64(p.chunks, c0 + p.cps);
  const SharedX xs{tile + lane};
  for (uint64_t t0 = c0; t0 < c1; t0 += 32) {
    __syncthreads();  // the previous group's reads are done
    for (uint32_t i = threadIdx.x; i < MT * 32 * 16; i += kWarps * 32) stage_x<MT>(p, t0, c1, i, tile);
    __syncthreads();
    const uint64_t c = t0 + lane;
    if (active && c < c1) lane_chunk<F, MT, P>(p, n, c, acc, xs);
  }
  if (!active) return;  // whole warps: the shuffles below see full warps
  warp_sum_store<MT>(p, n, s, lane, acc);
}

__global__ void gemv_reduce_kernel(Params p) {
  const uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t < p.m * p.n) reduce_out(p, t / p.n, t % p.n);
}

template <int F>
__global__ void gemv_ref_kernel(Params p) {
  const uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t < p.m * p.n) ref_out<F>(p, t / p.n, t % p.n);
}

// --- dispatch: (format, MT, perturb) -> kernel / host emulation of its lanes ---------------------

using KernelFn = void (*)(Params);
using LaneFn = void (*)(const Params&, uint64_t, uint32_t, unsigned, float*);
using RefFn = void (*)(const Params&, uint64_t, uint64_t);

template <int F, int MT, bool P>
void lane_host(const Params& p, uint64_t n, uint32_t s, unsigned lane, float* acc) {
  lane_dot<F, MT, P>(p, n, s, lane, acc);
}
template <int F>
void ref_host(const Params& p, uint64_t m, uint64_t n) {
  ref_out<F>(p, m, n);
}

struct FastFns {
  KernelFn kernel;
  LaneFn lane;
};
template <int F, int MT, bool P>
FastFns fast_fns() {
  return {gemv_fast_kernel<F, MT, P>, lane_host<F, MT, P>};
}
template <int F, bool P>
FastFns fast_fns_mt(int mt) {
  switch (mt) {
    case 1: return fast_fns<F, 1, P>();
    case 2: return fast_fns<F, 2, P>();
    case 4: return fast_fns<F, 4, P>();
    case 8: return fast_fns<F, 8, P>();
    default: return fast_fns<F, 16, P>();
  }
}

// The staged kernel run on the host block by block: the tile copy, then every warp's lanes reading
// it, then the device-order butterfly; the same staging and lane code as the kernel.
template <int F, int MT, bool P>
void staged_host(const Params& p) {
  std::vector<float4> tile((size_t)MT * 16 * kStagePitch);
  std::vector<float> acc((size_t)kWarps * 32 * MT), tmp(acc.size());
  const uint64_t groups = (p.n + kWarps - 1) / kWarps;
  for (uint64_t b = 0; b < groups * p.splits; ++b) {
    const uint32_t s = (uint32_t)(b % p.splits);
    const uint64_t n0 = (b / p.splits) * kWarps, c0 = s * p.cps, c1 = min_u64(p.chunks, c0 + p.cps);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (uint64_t t0 = c0; t0 < c1; t0 += 32) {
      for (uint32_t i = 0; i < MT * 32 * 16; ++i) stage_x<MT>(p, t0, c1, i, tile.data());
      for (int w = 0; w < kWarps; ++w)
        for (unsigned lane = 0; lane < 32; ++lane)
          if (n0 + w < p.n && t0 + lane < c1) lane_chunk<F, MT, P>(p, n0 + w, t0 + lane, &acc[(w * 32 + lane) * MT], SharedX{tile.data() + lane});
    }
    for (int o = 16; o; o >>= 1) {  // __shfl_xor_sync butterfly of every warp: lane l adds lane l ^ o
      for (int w = 0; w < kWarps; ++w)
        for (unsigned l = 0; l < 32; ++l)
          for (int m = 0; m < MT; ++m) tmp[(w * 32 + l) * MT + m] = zt_add(acc[(w * 32 + l) * MT + m], acc[(w * 32 + (l ^ o)) * MT + m]);
      acc.swap(tmp);
    }
    for (int w = 0; w < kWarps; ++w)
      for (uint64_t m = 0; m < p.m && n0 + w < p.n; ++m) store_out(p, m, n0 + w, s, acc[(w * 32 + m) * MT + m]);  // lane m stores row m
  }
}
// The staged kernel and its host form for (format, MT, perturb).
using StagedHostFn = void (*)(const Params&);
struct StagedFns {
  KernelFn kernel;
  StagedHostFn host;
};
template <int F, bool P>
StagedFns staged_fns_mt(int mt) {
  switch (mt) {
    case 1: return {gemv_staged_kernel<F, 1, P>, staged_host<F, 1, P>};
    case 2: return {gemv_staged_kernel<F, 2, P>, staged_host<F, 2, P>};
    default: return {gemv_staged_kernel<F, 4, P>, staged_host<F, 4, P>};
  }
}
struct MakeStaged {
  int mt;
  bool perturb;
  template <int F>
  StagedFns operator()() const {
    return perturb ? staged_fns_mt<F, true>(mt) : staged_fns_mt<F, false>(mt);
  }
};

struct RefFns {
  KernelFn kernel;
  RefFn thread;
};
template <int F>
RefFns ref_fns() {
  return {gemv_ref_kernel<F>, ref_host<F>};
}

// Calls make<F>() for the weights' format code.
template <class T, class Make>
T for_format(int f, Make make) {
  switch (f) {
    case kF32: return make.template operator()<kF32>();
    case (int)QFormat::Int8: return make.template operator()<(int)QFormat::Int8>();
    case (int)QFormat::Int4: return make.template operator()<(int)QFormat::Int4>();
    case (int)QFormat::Nf4: return make.template operator()<(int)QFormat::Nf4>();
    case (int)QFormat::Fp8E4M3: return make.template operator()<(int)QFormat::Fp8E4M3>();
    case (int)QFormat::Fp8E5M2: return make.template operator()<(int)QFormat::Fp8E5M2>();
    case (int)QFormat::Bf16: return make.template operator()<(int)QFormat::Bf16>();
    default: return make.template operator()<(int)QFormat::Fp16>();
  }
}
struct MakeFast {
  int mt;
  bool perturb;
  template <int F>
  FastFns operator()() const {
    return perturb ? fast_fns_mt<F, true>(mt) : fast_fns_mt<F, false>(mt);
  }
};
struct MakeRef {
  template <int F>
  RefFns operator()() const {
    return ref_fns<F>();
  }
};

// --- launch planning -----------------------------------------------------------------------------

int fast_mt(uint64_t m) { return m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : 16; }

// K splits: enough warps to fill the GPU, each lane keeping >= 2 chunks of its split.
uint32_t fast_splits(uint64_t n, uint64_t chunks) {
  if (n >= kTargetWarps) return 1;
  const uint64_t want = (kTargetWarps + n - 1) / n, most = std::max<uint64_t>(1, chunks / 64);
  return (uint32_t)std::min(want, most);
}

struct Plan {
  int fmt;
  bool fast;
  bool staged;        // the fast kernel's staged form where it applies (MT <= 4, aligned rows)
  int mt;             // rows of the padded activations (fast) or m (reference)
  uint32_t splits;
  uint64_t wbytes, nscales;  // code bytes, scale count (zero-points: nscales bytes when present)
};

Plan plan_for(const GemmArgs& g, GemvKernel kind) {
  Plan pl{};
  pl.fmt = g.w.f32 ? kF32 : (int)g.w.q.format;
  pl.fast = (kind == GemvKernel::Fast || kind == GemvKernel::Staged) && g.m <= kGemvMaxM;
  pl.mt = pl.fast ? fast_mt(g.m) : (int)g.m;
  pl.staged = pl.fast && kind == GemvKernel::Staged && pl.mt <= kStageMaxMt;
  pl.splits = pl.fast ? fast_splits(g.w.n, (g.w.k + kChunk - 1) / kChunk) : 1;
  pl.wbytes = g.w.f32 ? g.w.n * g.w.k * 4 : g.w.n * qformat_row_bytes(g.w.q.format, g.w.k);
  pl.nscales = !g.w.f32 && qformat_has_scales(g.w.q.format) ? qt_scale_count(g.w.q) : 0;
  return pl;
}

// Kernel parameters over the given buffers (device or host).
Params params_for(const GemmArgs& g, const Plan& pl, const uint8_t* w, const float* scales, const uint8_t* zeros,
                  const float* a, const float* bias, float* c, float* partial, const uint32_t* idx) {
  Params p{};
  p.m = g.m;
  p.n = g.w.n;
  p.k = g.w.k;
  if (g.w.f32) {
    p.w32 = reinterpret_cast<const float*>(w);
  } else {
    p.q = g.w.q;
    p.q.data = const_cast<uint8_t*>(w);
    p.q.scales = const_cast<float*>(scales);
    p.q.zeros = const_cast<uint8_t*>(zeros);
    p.gpr = qt_groups_per_row(g.w.q);
    p.gshift = g.w.q.group == 32 ? 5 : g.w.q.group == 64 ? 6 : g.w.q.group == 128 ? 7 : 63;
  }
  const uint64_t row_bytes = g.w.f32 ? g.w.k * 4 : qformat_row_bytes(g.w.q.format, g.w.k);
  // 16-byte vector loads of weight rows and of activation rows (row m starts m * K floats in):
  // every row start must be 16-byte aligned, and so must the buffers (the same bits either way)
  p.aligned = row_bytes % 16 == 0 && g.w.k % 4 == 0 && ((uintptr_t)w | (uintptr_t)a) % 16 == 0;
  p.a = a;
  p.bias = bias;
  p.c = c;
  p.partial = partial;
  p.accumulate = g.accumulate;
  p.perturb = g.p.on;
  p.sparse = g.p.on && g.p.sparse;
  p.dir = g.p.dir;
  p.alpha = g.p.alpha;
  p.first = g.p.first;
  p.idx = idx;
  p.nidx = p.sparse ? g.p.nidx : 0;
  p.chunks = (g.w.k + kChunk - 1) / kChunk;
  p.splits = pl.splits;
  p.cps = (p.chunks + pl.splits - 1) / pl.splits;
  return p;
}

unsigned blocks_for(uint64_t threads, unsigned per_block) {
  const uint64_t b = (threads + per_block - 1) / per_block;
  if (b > 0x7fffffffu) fail(Code::OutOfRange, "gemv: too many outputs for one launch");
  return (unsigned)b;
}

void launch(const Params& p, const Plan& pl, cudaStream_t stream) {
  if (pl.fast && pl.staged && p.aligned) {
    const KernelFn k = for_format<StagedFns>(pl.fmt, MakeStaged{pl.mt, p.perturb}).kernel;
    k<<<blocks_for((p.n + kWarps - 1) / kWarps * p.splits, 1), kWarps * 32, 0, stream>>>(p);
    check_launch("gemv staged kernel");
    if (p.splits > 1) gemv_reduce_kernel<<<blocks_for(p.m * p.n, 256), 256, 0, stream>>>(p);
    check_launch("gemv_reduce_kernel");
  } else if (pl.fast) {
    const FastFns f = for_format<FastFns>(pl.fmt, MakeFast{pl.mt, p.perturb});
    f.kernel<<<blocks_for(p.n * p.splits, kWarps), kWarps * 32, 0, stream>>>(p);
    check_launch("gemv kernel");
    if (p.splits > 1) gemv_reduce_kernel<<<blocks_for(p.m * p.n, 256), 256, 0, stream>>>(p);
    check_launch("gemv_reduce_kernel");
  } else {
    for_format<RefFns>(pl.fmt, MakeRef{}).kernel<<<blocks_for(p.m * p.n, 128), 128, 0, stream>>>(p);
    check_launch("gemv kernel");
  }
}

template <class T>
void to_device(DeviceBuffer<T>& d, const T* h, uint64_t count, cudaStream_t s) {
  if (count) check(cudaMemcpyAsync(d.ptr, h, count * sizeof(T), cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
}

// Activations padded to mt rows of zeros (the fast kernel's rows beyond m).
std::vector<float> padded_a(const GemmArgs& g, const Plan& pl) {
  std::vector<float> a((size_t)pl.mt * g.w.k, 0.0f);
  if (g.m * g.w.k) memcpy(a.data(), g.a, g.m * g.w.k * sizeof(float));
  return a;
}

// --- benchmark helpers ---------------------------------------------------------------------------

// words[i] = (hash(seed, i) & and_mask) | or_mask: random codes of a format without NaN/Inf.
__global__ void fill_words_kernel(uint32_t* words, uint64_t n, uint32_t seed, uint32_t and_mask, uint32_t or_mask) {
  const uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t in[4] = {(uint32_t)i, (uint32_t)(i >> 32), seed, 0x6e6d76u}, out[4];
  philox4x32_10(in, 0x1234567u, 0x89abcdefu, out);
  words[i] = (out[0] & and_mask) | or_mask;
}
void fill_words(void* p, uint64_t bytes, uint32_t seed, uint32_t and_mask, uint32_t or_mask, cudaStream_t s) {
  const uint64_t n = bytes / 4;
  if (n) fill_words_kernel<<<blocks_for(n, 256), 256, 0, s>>>((uint32_t*)p, n, seed, and_mask, or_mask);
  check_launch("fill_words_kernel");
}
// Masks keeping every code finite: f32 / bf16 / fp16 values of magnitude in [2^-8, 2^-7) .. [0.5, 1), fp8
// without the top exponent bit (no NaN/Inf), integer codes as drawn.
void format_masks(bool f32, QFormat f, uint32_t* and_mask, uint32_t* or_mask) {
  *and_mask = ~0u, *or_mask = 0;
  if (f32) *and_mask = 0x807fffffu, *or_mask = 0x3c000000u;
  else if (f == QFormat::Bf16) *and_mask = 0x807f807fu, *or_mask = 0x3c003c00u;
  else if (f == QFormat::Fp16) *and_mask = 0x83ff83ffu, *or_mask = 0x2c002c00u;
  else if (f == QFormat::Fp8E4M3 || f == QFormat::Fp8E5M2) *and_mask = 0xb7b7b7b7u;
}

// Streams `n` 16-byte vectors with the GEMV's load; the xor keeps the loads alive.
__global__ void read_kernel(const uint8_t* p, uint64_t n, uint32_t* sink) {
  const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
  uint32_t x = 0, w[4];
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    load16(p + 16 * i, w);
    x ^= w[0] ^ w[1] ^ w[2] ^ w[3];
  }
  if (x == 0x9e3779b9u) *sink = x;
}

void best_median(std::vector<float>& t, float* best, float* median) {
  std::sort(t.begin(), t.end());
  *best = t.front();
  *median = t[t.size() / 2];
}

// --- integer-activation GEMV (gemv_int_act_launch) ------------------------------------------------
// Lane `lane` of the warp of weight row n: per accumulation group, the codes k = k0 + lane, + 32, ...
// times every activation row, summed exactly in int32; the butterfly sum over lanes (exact); then
// every lane chains facc = fma(s_w(n, j), float(S), facc) in group order (the CPU's step 2). Lane m
// stores row m's output through the CPU's epilogue (step 3).
struct IntGemv {
  const uint8_t* codes;  // [M, lda]
  uint64_t lda, M;
  QTensorView w;         // Int8 / Int4 [N, K]
  float* y;              // [M, N]
  Epilogue ep;
};

// One lane's integer sums of group [k0, k1) for the M rows into s.
ZT_HD void int_gemv_lane(const IntGemv& g, uint64_t n, uint64_t k0, uint64_t k1, unsigned lane, int32_t* s) {
  for (uint64_t m = 0; m < g.M; ++m) s[m] = 0;
  for (uint64_t k = k0 + lane; k < k1; k += 32) {
    const int wk = w_code(g.w, n, k);
    for (uint64_t m = 0; m < g.M; ++m) s[m] += wk * (int)(int8_t)g.codes[m * g.lda + k];
  }
}

__global__ void __launch_bounds__(kWarps * 32) int_gemv_kernel(IntGemv g) {
  const uint64_t n = (uint64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);
  const unsigned lane = threadIdx.x & 31;
  if (n >= g.w.rows) return;  // whole warps leave together
  const uint64_t K = g.w.cols, ga = acc_group(g.w);
  int32_t s[kGemvMaxM];
  float facc[kGemvMaxM];
  for (uint64_t m = 0; m < g.M; ++m) facc[m] = 0.0f;
  for (uint64_t j = 0, k0 = 0; k0 < K; ++j, k0 += ga) {
    int_gemv_lane(g, n, k0, k0 + ga < K ? k0 + ga : K, lane, s);
    const float sw = w_scale(g.w, n, j);
    for (uint64_t m = 0; m < g.M; ++m) {
      for (int o = 16; o; o >>= 1) s[m] += __shfl_xor_sync(0xffffffffu, s[m], o);
      facc[m] = zt_fma(sw, (float)s[m], facc[m]);
    }
  }
  for (uint64_t m = lane; m < g.M; m += 32) g.y[m * g.w.rows + n] = epilogue(g.ep, facc[m], m, n);
}

}  // namespace

// --- public entry points -------------------------------------------------------------------------

float gemv_host(const GemmArgs& g, GemvKernel kind) {
  gemm_check_perturb(g.p, g.w.n, g.w.k);
  if (g.m == 0 || g.w.n == 0) return 0.0f;
  require_device();
  const Plan pl = plan_for(g, kind);
  const uint64_t M = g.m, N = g.w.n, K = g.w.k;
  const uint64_t nidx = g.p.on && g.p.sparse ? g.p.nidx : 0;
  // Buffers before the TimedCall: an error path drains the stream before they return to the pool.
  DeviceBuffer<uint8_t> w(pl.wbytes), zeros(g.w.f32 || !g.w.q.zeros ? 0 : pl.nscales);
  DeviceBuffer<float> scales(pl.nscales), a((uint64_t)pl.mt * K), c(M * N), bias(g.bias ? N : 0),
      partial(pl.splits > 1 ? pl.splits * M * N : 0);
  DeviceBuffer<uint32_t> idx(nidx);
  TimedCall call;
  const std::vector<float> ha = padded_a(g, pl);
  to_device(w, g.w.f32 ? reinterpret_cast<const uint8_t*>(g.w.w32) : g.w.q.data, pl.wbytes, call.stream);
  if (scales.count) to_device(scales, g.w.q.scales, pl.nscales, call.stream);
  if (zeros.count) to_device(zeros, g.w.q.zeros, pl.nscales, call.stream);
  to_device(a, ha.data(), ha.size(), call.stream);
  if (g.accumulate) to_device(c, g.c, M * N, call.stream);
  if (g.bias) to_device(bias, g.bias, N, call.stream);
  to_device(idx, g.p.idx, nidx, call.stream);
  const Params p = params_for(g, pl, w.ptr, scales.ptr, zeros.ptr, a.ptr, bias.ptr, c.ptr, partial.ptr, idx.ptr);
  call.begin();
  launch(p, pl, call.stream);
  call.end("gemv kernel launch");
  call.to_host(g.c, c.ptr, M * N * sizeof(float));
  return call.finish("gemv");
}

void gemv_reference_launch(const GemmArgs& g, void* stream) {
  if (g.m == 0 || g.w.n == 0) return;
  const Plan pl = plan_for(g, GemvKernel::Reference);
  const Params p = params_for(g, pl, g.w.f32 ? reinterpret_cast<const uint8_t*>(g.w.w32) : g.w.q.data,
                              g.w.f32 ? nullptr : g.w.q.scales, g.w.f32 ? nullptr : g.w.q.zeros, g.a, g.bias, g.c, nullptr,
                              g.p.on && g.p.sparse ? g.p.idx : nullptr);
  launch(p, pl, (cudaStream_t)stream);
}

uint64_t gemv_fast_workspace(uint64_t m, const GemmWeights& w) {
  GemmArgs g{};
  g.m = m;
  g.w = w;
  const Plan pl = plan_for(g, GemvKernel::Fast);
  return (uint64_t)pl.mt * w.k + (pl.splits > 1 ? pl.splits * m * w.n : 0);
}

void gemv_fast_launch(const GemmArgs& g, float* workspace, void* stream) {
  if (g.m == 0 || g.w.n == 0) return;
  if (g.m > kGemvMaxM) fail(Code::InvalidArgument, "gemv: the fast kernel takes at most 16 rows");
  const Plan pl = plan_for(g, GemvKernel::Fast);
  cudaStream_t s = (cudaStream_t)stream;
  float* a = workspace;
  const uint64_t K = g.w.k, pad = ((uint64_t)pl.mt - g.m) * K;
  if (g.m * K) check(cudaMemcpyAsync(a, g.a, g.m * K * sizeof(float), cudaMemcpyDeviceToDevice, s), "gemv: activations");
  if (pad) check(cudaMemsetAsync(a + g.m * K, 0, pad * sizeof(float), s), "gemv: padding");
  const Params p = params_for(g, pl, g.w.f32 ? reinterpret_cast<const uint8_t*>(g.w.w32) : g.w.q.data,
                              g.w.f32 ? nullptr : g.w.q.scales, g.w.f32 ? nullptr : g.w.q.zeros, a, g.bias, g.c,
                              workspace + (uint64_t)pl.mt * K, g.p.on && g.p.sparse ? g.p.idx : nullptr);
  launch(p, pl, s);
}

void gemv_emulated(const GemmArgs& g, GemvKernel kind) {
  gemm_check_perturb(g.p, g.w.n, g.w.k);
  if (g.m == 0 || g.w.n == 0) return;
  const Plan pl = plan_for(g, kind);
  const std::vector<float> a = padded_a(g, pl);
  std::vector<float> partial(pl.splits > 1 ? pl.splits * g.m * g.w.n : 0);
  const Params p = params_for(g, pl, g.w.f32 ? reinterpret_cast<const uint8_t*>(g.w.w32) : g.w.q.data,
                              g.w.f32 ? nullptr : g.w.q.scales, g.w.f32 ? nullptr : g.w.q.zeros, a.data(), g.bias, g.c,
                              partial.data(), g.p.on && g.p.sparse ? g.p.idx : nullptr);
  if (!pl.fast) {
    const RefFn t = for_format<RefFns>(pl.fmt, MakeRef{}).thread;
    for (uint64_t i = 0; i < p.m * p.n; ++i) t(p, i / p.n, i % p.n);
    return;
  }
  if (pl.staged && p.aligned) {
    for_format<StagedFns>(pl.fmt, MakeStaged{pl.mt, p.perturb}).host(p);
    if (p.splits > 1)
      for (uint64_t i = 0; i < p.m * p.n; ++i) reduce_out(p, i / p.n, i % p.n);
    return;
  }
  const LaneFn lane = for_format<FastFns>(pl.fmt, MakeFast{pl.mt, p.perturb}).lane;
  std::vector<float> acc(32 * (size_t)pl.mt), tmp(acc.size());
  for (uint64_t warp = 0; warp < p.n * p.splits; ++warp) {
    const uint64_t n = warp / p.splits;
    const uint32_t s = (uint32_t)(warp % p.splits);
    for (unsigned l = 0; l < 32; ++l) lane(p, n, s, l, &acc[l * pl.mt]);
    for (int o = 16; o; o >>= 1) {  // __shfl_xor_sync butterfly: lane l adds lane l ^ o
      for (unsigned l = 0; l < 32; ++l)
        for (int m = 0; m < pl.mt; ++m) tmp[l * pl.mt + m] = zt_add(acc[l * pl.mt + m], acc[(l ^ o) * pl.mt + m]);
      acc.swap(tmp);
    }
    for (uint64_t m = 0; m < p.m; ++m) store_out(p, m, n, s, acc[m * pl.mt + m]);  // lane m stores row m
  }
  if (p.splits > 1)
    for (uint64_t i = 0; i < p.m * p.n; ++i) reduce_out(p, i / p.n, i % p.n);
}

void gemv_int_act_launch(bool emulated, const uint8_t* codes, uint64_t lda, const float* sx, uint64_t M, const QTensorView& w,
                         float* y, bool accumulate, void* stream) {
  const uint64_t N = w.rows, K = w.cols;
  if (M == 0 || N == 0) return;
  if (M > kGemvMaxM) fail(Code::InvalidArgument, "gemvIntAct: at most 16 activation rows");
  const IntGemv g{codes, lda, M, w, y, Epilogue{sx, nullptr, accumulate ? y : nullptr, N, false}};
  if (!emulated) {
    if ((N + kWarps - 1) / kWarps > 0x7fffffffu) fail(Code::OutOfRange, "gemvIntAct: too many rows for one launch");
    int_gemv_kernel<<<(unsigned)((N + kWarps - 1) / kWarps), kWarps * 32, 0, (cudaStream_t)stream>>>(g);
    check_launch("int_gemv_kernel");
    return;
  }
  std::vector<int32_t> s(32 * M);
  std::vector<float> facc(M);
  const uint64_t ga = acc_group(w);
  for (uint64_t n = 0; n < N; ++n) {
    std::fill(facc.begin(), facc.end(), 0.0f);
    for (uint64_t j = 0, k0 = 0; k0 < K; ++j, k0 += ga) {
      for (unsigned l = 0; l < 32; ++l) int_gemv_lane(g, n, k0, k0 + ga < K ? k0 + ga : K, l, &s[l * M]);
      const float sw = w_scale(w, n, j);
      for (uint64_t m = 0; m < M; ++m) {
        int32_t t = 0;  // the butterfly's sum: integers, so any order
        for (unsigned l = 0; l < 32; ++l) t += s[l * M + m];
        facc[m] = zt_fma(sw, (float)t, facc[m]);
      }
    }
    for (uint64_t m = 0; m < M; ++m) y[m * N + n] = epilogue(g.ep, facc[m], m, n);
  }
}

void gemv_directions_emulated(float* out, uint64_t n, const Direction& d, uint64_t first) {
  GemmPerturb chk{};
  chk.on = true;
  chk.dir = d;
  chk.first = first;
  gemm_check_perturb(chk, 1, n);
  float z[kChunk];
  for (uint64_t j = 0; j < n;) {
    const uint64_t e = first + j;
    if ((e & (kChunk - 1)) == 0 && n - j >= kChunk) {
      dir_block64(d, e, z);
      memcpy(out + j, z, sizeof z);
      j += kChunk;
    } else {
      out[j++] = direction_at(d, e);
    }
  }
}

GemvTiming gemv_bench(bool f32, QFormat format, uint64_t m, uint64_t n, uint64_t k, uint64_t group, bool perturb,
                      int iters, GemvKernel kind) {
  require_device();
  GemmArgs g{};
  g.m = m;
  g.w.f32 = f32;
  g.w.n = n;
  g.w.k = k;
  g.w.q = QTensorView{format, n, k, nullptr, nullptr, nullptr, group};
  g.p.on = perturb;
  g.p.dir = Direction{1, 0, kDirGauss, 0, kPurposeSrProbe};
  g.p.alpha = 1e-3f;
  if (kind == GemvKernel::Reference) fail(Code::InvalidArgument, "gemvBench: times the fast or the staged kernel");
  const Plan pl = plan_for(g, kind);
  const uint64_t copy_bytes = pl.wbytes + pl.nscales * 4;
  const int copies = (int)std::min<uint64_t>(64, std::max<uint64_t>(1, ((uint64_t)256 << 20) / copy_bytes + 1));
  std::vector<DeviceBuffer<uint8_t>> ws;  // buffers before the TimedCall (drained before they are freed)
  std::vector<DeviceBuffer<float>> ss;
  for (int i = 0; i < copies; ++i) {
    ws.emplace_back((pl.wbytes + 3) / 4 * 4, MemCategory::Weights);
    ss.emplace_back(pl.nscales, MemCategory::Weights);
  }
  DeviceBuffer<float> a((uint64_t)pl.mt * k), c(m * n), partial(pl.splits > 1 ? pl.splits * m * n : 0);
  TimedCall call;
  uint32_t and_mask, or_mask;
  format_masks(f32, format, &and_mask, &or_mask);
  for (int i = 0; i < copies; ++i) {
    fill_words(ws[i].ptr, ws[i].bytes(), i, and_mask, or_mask, call.stream);
    fill_words(ss[i].ptr, ss[i].bytes(), 0, 0, 0x3c800000u, call.stream);  // scales 2^-6
  }
  fill_words(a.ptr, a.bytes(), 99, 0x807fffffu, 0x3f000000u, call.stream);  // |x| in [0.5, 1)
  std::vector<Params> ps;
  for (int i = 0; i < copies; ++i)
    ps.push_back(params_for(g, pl, ws[i].ptr, ss[i].ptr, nullptr, a.ptr, nullptr, c.ptr, partial.ptr, nullptr));
  for (const Params& p : ps) launch(p, pl, call.stream);  // warm-up (and module load)
  check(cudaGetLastError(), "gemvBench launch");
  check(cudaStreamSynchronize(call.stream), "gemvBench warm-up");
  // One graph of `launches` calls rotating over the copies: no host launch gaps between kernels.
  const int launches = std::max(copies, 20);
  check(cudaStreamBeginCapture(call.stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  for (int i = 0; i < launches; ++i) launch(ps[i % copies], pl, call.stream);
  check(cudaStreamEndCapture(call.stream, &call.graph), "cudaStreamEndCapture");
  check(cudaGraphInstantiate(&call.exec, call.graph, 0), "cudaGraphInstantiate");
  std::vector<float> t;
  for (int it = 0; it < std::max(iters, 1); ++it) {
    call.begin();
    check(cudaGraphLaunch(call.exec, call.stream), "cudaGraphLaunch");
    call.end("gemvBench graph launch");
    t.push_back(call.finish("gemvBench") / launches);
  }
  GemvTiming r{};
  best_median(t, &r.best_ms, &r.median_ms);
  r.weight_bytes = copy_bytes;
  r.splits = pl.splits;
  return r;
}

ReadTiming hbm_read_bench(uint64_t bytes, int iters) {
  require_device();
  bytes = bytes / 32 * 32;
  DeviceBuffer<uint8_t> buf(bytes, MemCategory::Workspace);  // before the TimedCall: freed after the drain
  DeviceBuffer<uint32_t> sink(1);
  TimedCall call;
  check(cudaMemsetAsync(buf.ptr, 1, bytes, call.stream), "cudaMemsetAsync");
  int sms = 0, dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  std::vector<float> rt, ct;
  for (int it = 0; it < std::max(iters, 1) + 1; ++it) {  // the first of each is a warm-up
    call.begin();
    read_kernel<<<sms * 8, 256, 0, call.stream>>>(buf.ptr, bytes / 16, sink.ptr);
    check_launch("read_kernel");
    call.end("read kernel launch");
    const float read_ms = call.finish("hbmReadBench");
    if (it) rt.push_back(read_ms);
    call.begin();
    check(cudaMemcpyAsync(buf.ptr + bytes / 2, buf.ptr, bytes / 2, cudaMemcpyDeviceToDevice, call.stream), "cudaMemcpyAsync");
    call.end("hbmReadBench copy");
    const float copy_ms = call.finish("hbmReadBench");
    if (it) ct.push_back(copy_ms);
  }
  ReadTiming r{};
  best_median(rt, &r.read_best_ms, &r.read_median_ms);
  best_median(ct, &r.copy_best_ms, &r.copy_median_ms);
  return r;
}

}  // namespace cuda
}  // namespace zt
