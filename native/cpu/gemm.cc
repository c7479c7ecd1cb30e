// Scalar references of the GEMM kernels (the orders documented in gemm.h) and the threaded driver.
#include "gemm.h"

#include <algorithm>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif
#include <vector>

#include "../common/status.h"
#include "cpu_features.h"
#include "memory.h"
#include "perturb.h"
#include "threadpool.h"

namespace zt {
namespace {

// Grow-only per-thread scratch (pool threads are persistent, so this is allocated once).
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  ~Scratch() {
    if (p) host_free(p, n * sizeof(float), MemCategory::Workspace);
  }
  // Frees the buffer when it holds more than `keep` floats (one huge call must not pin its
  // workspace for the life of the thread).
  void trim(size_t keep) {
    if (n > keep) {
      host_free(p, n * sizeof(float), MemCategory::Workspace);
      p = nullptr;
      n = 0;
    }
  }
  float* get(size_t floats) {
    if (floats > n) {
      if (p) host_free(p, n * sizeof(float), MemCategory::Workspace);
      p = nullptr;
      n = 0;
      p = static_cast<float*>(host_alloc(floats * sizeof(float), MemCategory::Workspace));
      n = floats;
    }
    return p;
  }
};

// Clears DAZ/FTZ (MXCSR bits 6 and 15) for its lifetime on this thread: the int4 GEMV reads codes
// as subnormal floats, which DAZ would turn into zeros. Default MXCSR has both off (a no-op then).
struct SubnormalScope {
#if defined(__x86_64__) || defined(__i386__)
  unsigned saved = _mm_getcsr();
  SubnormalScope() {
    if (saved & 0x8040u) _mm_setcsr(saved & ~0x8040u);
  }
  ~SubnormalScope() {
    if (saved & 0x8040u) _mm_setcsr(saved);
  }
#endif
};

thread_local Scratch t_scratch;  // per-task blocks (every pool thread)
thread_local Scratch t_shared;   // the calling thread's packed Aᵀ panel (skinny path), read by every task
constexpr size_t kKeepShared = (size_t)4 << 20;  // floats of it kept between calls (16 MiB)

// Sum of 8 lanes in the AVX2 reduction order.
float hsum8(const float l[8]) {
  return zt_add(zt_add(zt_add(l[0], l[4]), zt_add(l[2], l[6])), zt_add(zt_add(l[1], l[5]), zt_add(l[3], l[7])));
}

// Element of a 64-chunk in lane l of vector j (gemm.h).
enum class Lanes { Natural, Nibble, EvenOdd };
Lanes lanes_of(const GemmWeights& w) {
  if (w.f32) return Lanes::Natural;
  if (qformat_is_4bit(w.q.format)) return Lanes::Nibble;
  return w.q.format == QFormat::Bf16 ? Lanes::EvenOdd : Lanes::Natural;
}
uint64_t lane_elem(Lanes s, int j, int l) {
  switch (s) {
    case Lanes::Nibble: return 8 * l + j;
    case Lanes::EvenOdd: return 16 * (j / 2) + 2 * l + (j & 1);
    default: return 8 * j + l;
  }
}

}  // namespace

// --- decode and perturbation ----------------------------------------------------------------

void gemm_decode_ref(const GemmWeights& w, uint64_t n0, uint64_t n1, uint64_t k0, uint64_t k1, float* out, uint64_t ld) {
  for (uint64_t n = n0; n < n1; ++n)
    for (uint64_t k = k0; k < k1; ++k) out[(n - n0) * ld + (k - k0)] = gemm_weight_at(w, n, k);
}

void gemm_perturb_ref(const GemmPerturb& p, uint64_t K, uint64_t n0, uint64_t n1, uint64_t k0, uint64_t k1, float* out,
                      uint64_t ld) {
  for (uint64_t n = n0; n < n1; ++n) {
    float* o = out + (n - n0) * ld - k0;
    if (!p.sparse) {
      for (uint64_t k = k0; k < k1; ++k) o[k] = perturbed(o[k], p.alpha, direction_at(p.dir, p.first + n * K + k));
      continue;
    }
    const uint32_t* it = std::lower_bound(p.idx, p.idx + p.nidx, (uint32_t)std::min<uint64_t>(n * K + k0, 0xffffffffu));
    for (; it < p.idx + p.nidx && *it < n * K + k1; ++it) {
      if ((uint64_t)*it < n * K + k0) continue;
      uint64_t k = *it - n * K;
      o[k] = perturbed(o[k], p.alpha, direction_at(p.dir, p.first + *it));
    }
  }
}

// --- GEMV ------------------------------------------------------------------------------------

uint64_t gemv_prepared_floats(uint64_t m, uint64_t k) {
  uint64_t k64 = k / 64 * 64;
  return m * (k64 + k64 / 8 + 1);
}

// xs[m][e] for chunk elements in (vector j, lane l) order, int4 prescaled by 2^(149 − E − 4j'),
// then 8 lane sums of x per gemv_sum_span elements (int4 zero-point correction: chunks in order, j
// in order, then times 2^-E), then the rescale factor 2^E per row (1 for other formats); see gemm.h.
void gemv_prepare(const GemmWeights& w, const float* x, uint64_t m, bool int4_subnormal, float* xs) {
  const uint64_t K = w.k, k64 = K / 64 * 64;
  const Lanes s = lanes_of(w);
  const bool int4 = !w.f32 && w.q.format == QFormat::Int4;
  float* rescale = xs + m * (k64 + k64 / 8);
  for (uint64_t r = 0; r < m; ++r) {
    const float* xr = x + r * K;
    float* o = xs + r * k64;
    float* sums = xs + m * k64 + r * (k64 / 8);
    int E = 0;
    if (int4) {
      uint32_t maxbits = 0;  // largest finite |x| of the main part (Inf and NaN stay as they are)
      for (uint64_t k = 0; k < k64; ++k) {
        const uint32_t b = f32_to_bits(xr[k]) & 0x7fffffffu;
        if (b < 0x7f800000u && b > maxbits) maxbits = b;
      }
      E = gemv_int4_exponent(bits_to_f32(maxbits));
    }
    rescale[r] = int4 ? pow2f(E) : 1.0f;
    for (uint64_t c = 0; c < k64; c += 64) {
      for (int j = 0; j < 8; ++j)
        for (int l = 0; l < 8; ++l) {
          float v = xr[c + lane_elem(s, j, l)];
          if (int4) {
            v = zt_mul(v, pow2f(149 - E - gemv_int4_shift(j)));
            if (!int4_subnormal) v = zt_mul(v, bits_to_f32(1));  // 2^-149: converted codes are 2^149 larger
          }
          o[c + 8 * j + l] = v;
        }
    }
    const uint64_t span = gemv_sum_span(w, k64);
    for (uint64_t c0 = 0; c0 < k64; c0 += span)
      for (int l = 0; l < 8; ++l) {
        float t = 0.0f;
        for (uint64_t c = c0; c < c0 + span && c < k64; c += 64)
          for (int j = 0; j < 8; ++j) t = zt_add(t, xr[c + lane_elem(s, j, l)]);
        sums[c0 / span * 8 + l] = int4 ? zt_mul(t, pow2f(-E)) : t;
      }
  }
}

// Unscaled value of lane l, vector j of chunk c of row n (as the AVX2 decoders produce it); sets
// *nan for an e4m3 NaN code (the AVX2 kernel flags those per row).
static float gemv_code_value(const GemmWeights& w, uint64_t n, uint64_t c, int j, int l, bool int4_subnormal, bool* nan) {
  if (w.f32) return w.w32[n * w.k + c + 8 * j + l];
  const QTensorView& q = w.q;
  const uint8_t* row = gemm_row(q, n);
  switch (q.format) {
    case QFormat::Int4: {
      const uint32_t bits = gemm_nibble(row, c + 8 * l + j) << gemv_int4_shift(j);
      return int4_subnormal ? bits_to_f32(bits) : (float)(int32_t)bits;
    }
    case QFormat::Nf4: return nf4_value((int)gemm_nibble(row, c + 8 * l + j));
    case QFormat::Int8: return (float)(int8_t)row[c + 8 * j + l];
    case QFormat::Fp8E4M3: {
      uint8_t code = row[c + 8 * j + l];
      if ((code & 0x7f) == 0x7f) {
        *nan = true;
        return 0.0f;
      }
      return zt_mul(minifloat_decode(code, kE4M3), 0x1p-8f);
    }
    case QFormat::Fp8E5M2: return minifloat_decode(row[c + 8 * j + l], kE5M2);
    case QFormat::Bf16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[c + 16 * (j / 2) + 2 * l + (j & 1)]);
    case QFormat::Fp16: return minifloat_decode(reinterpret_cast<const uint16_t*>(row)[c + 8 * j + l], kFp16);
  }
  return 0.0f;
}

void gemv_rows_ref(const GemvCtx& g, uint64_t n0, uint64_t n1) {
  const GemmWeights& w = *g.w;
  const bool scaled = !w.f32 && qformat_has_scales(w.q.format);
  const bool nibble_lanes = lanes_of(w) == Lanes::Nibble;
  const bool int4 = !w.f32 && w.q.format == QFormat::Int4;
  const bool e4m3 = !w.f32 && w.q.format == QFormat::Fp8E4M3;
  const bool half_groups = scaled && !nibble_lanes && w.q.group == 32;  // natural lanes, 2 groups a chunk
  for (uint64_t n = n0; n < n1; ++n)
    for (uint64_t m = 0; m < g.m; ++m) {
      const float* xs = g.xs + m * g.k64;
      const float* xsum = g.xs + g.m * g.k64 + m * (g.k64 / 8);
      float acc[4][8] = {}, t[4][8] = {};
      bool nan = false;
      const uint64_t span = gemv_sum_span(w, g.k64);
      // acc += s·((t0 + t1) + (t2 + t3) [− zp·X]) with each lane's scale (element k of the lane
      // decides), t = 0.
      auto flush = [&](uint64_t c, int half) {
        for (int l = 0; l < 8; ++l) {
          float s = gemm_scale_at(w.q, n, nibble_lanes ? c + 8 * l : c + 32 * half);
          if (e4m3) s = zt_mul(s, 256.0f);
          float sum = zt_add(zt_add(t[0][l], t[1][l]), zt_add(t[2][l], t[3][l]));
          if (int4) sum = zt_fma(-(float)gemm_zero_at(w.q, n, c + 8 * l), xsum[c / span * 8 + l], sum);
          acc[0][l] = zt_fma(s, sum, acc[0][l]);
          t[0][l] = t[1][l] = t[2][l] = t[3][l] = 0.0f;
        }
      };
      for (uint64_t c = 0; c < g.k64; c += 64) {
        for (int j = 0; j < 8; ++j) {
          for (int l = 0; l < 8; ++l) {
            float v = gemv_code_value(w, n, c, j, l, g.int4_subnormal, &nan);
            float* d = scaled ? &t[j & 3][l] : &acc[j & 3][l];
            *d = zt_fma(xs[c + 8 * j + l], v, *d);
          }
          if (half_groups && j == 3) flush(c, 0);
        }
        if (!scaled) continue;
        // groups of 32 end with every chunk, larger ones (64, 128, a row) at their end or the main part's
        const uint64_t grp = (w.q.group == 0 || w.q.group == w.k) ? 0 : w.q.group;
        if (grp == 32 || c + 64 == g.k64 || (grp && (c + 64) % grp == 0)) flush(c, half_groups ? 1 : 0);
      }
      float lanes[8];
      for (int l = 0; l < 8; ++l)
        lanes[l] = scaled ? acc[0][l] : zt_add(zt_add(acc[0][l], acc[1][l]), zt_add(acc[2][l], acc[3][l]));
      float r = zt_add(int4 ? zt_mul(hsum8(lanes), gemv_rescale(g)[m]) : hsum8(lanes), gemv_tail(g, m, n));
      if (nan) r = bits_to_f32(0x7fc00000u);
      gemv_store(g, m, n, r);
    }
}

void gemv_f32_row_ref(const float* wrow, const GemvCtx& g, uint64_t n) {
  const uint64_t K = g.w->k;
  for (uint64_t m = 0; m < g.m; ++m) {
    const float* x = g.x + m * K;
    float acc[4][8] = {};
    for (uint64_t c = 0; c < g.k64; c += 64)
      for (int j = 0; j < 8; ++j)
        for (int l = 0; l < 8; ++l) acc[j & 3][l] = zt_fma(x[c + 8 * j + l], wrow[c + 8 * j + l], acc[j & 3][l]);
    float lanes[8], tail = 0.0f;
    for (int l = 0; l < 8; ++l) lanes[l] = zt_add(zt_add(acc[0][l], acc[1][l]), zt_add(acc[2][l], acc[3][l]));
    for (uint64_t k = g.k64; k < K; ++k) tail = zt_fma(x[k], wrow[k], tail);
    gemv_store(g, m, n, zt_add(hsum8(lanes), tail));
  }
}

// --- driver ------------------------------------------------------------------------------------

namespace {

// Output for K = 0: the empty chain.
void gemm_empty_k(const GemmArgs& g) {
  for (uint64_t m = 0; m < g.m; ++m)
    for (uint64_t n = 0; n < g.w.n; ++n) {
      float* o = g.c + m * g.w.n + n;
      float v = g.accumulate ? *o : 0.0f;
      *o = g.bias ? zt_add(v, g.bias[n]) : v;
    }
}

// Scalar GEMM: each weight row decoded (and perturbed) once, then one fma chain per output.
void gemm_rows_ref(const GemmArgs& g, uint64_t n0, uint64_t n1) {
  const uint64_t K = g.w.k, N = g.w.n;
  float* row = t_scratch.get(K);
  for (uint64_t n = n0; n < n1; ++n) {
    gemm_decode_ref(g.w, n, n + 1, 0, K, row, K);
    if (g.p.on) gemm_perturb_ref(g.p, K, n, n + 1, 0, K, row, K);
    for (uint64_t m = 0; m < g.m; ++m) {
      const float* a = g.a + m * K;
      float* o = g.c + m * N + n;
      float acc = g.accumulate ? *o : 0.0f;
      for (uint64_t k = 0; k < K; ++k) acc = zt_fma(a[k], row[k], acc);
      *o = g.bias ? zt_add(acc, g.bias[n]) : acc;
    }
  }
}

}  // namespace

namespace {

// The packed path (M > kSkinnyMaxRows, AVX2): one parallel job over the kNC-column tasks of every
// product, each task packing its own W panel (A is read in place).
void gemm_packed(const GemmArgs* gs, size_t n) {
  std::vector<uint64_t> tasks(n);
  for (size_t i = 0; i < n; ++i) tasks[i] = (gs[i].w.n + kNC - 1) / kNC;
  size_t table = 0;
  for (size_t i = 0; i < n; ++i) table = std::max<size_t>(table, gemm_table_floats(gs[i].p, kNC, gs[i].w.k));
  const size_t ws = (kNC + kNR) * kKC + 8 * kKC;
  parallel_for_groups(tasks, [&](size_t i, uint64_t t) {
    const uint64_t b = t * kNC, e = std::min<uint64_t>(b + kNC, gs[i].w.n);
    float* p = t_scratch.get(ws + table);
    avx2::gemm_block(gs[i], b, e, p, p + (kNC + kNR) * kKC, use_avx512() ? avx512::gemm_kernel_6x32 : nullptr, p + ws);
  });
}

// The streaming GEMV (M <= kGemvMaxRows, no perturbation) of every product, one parallel job over
// tasks of all of them (stream_rows_per_task rows each); each prepares its own activations (their
// layout depends on the format).
void gemv_group(const GemmArgs* gs, size_t n) {
  const uint64_t M = gs[0].m, K = gs[0].w.k, per = gemv_prepared_floats(M, K);
  std::vector<float> xs(per * n);
  std::vector<GemvCtx> ctx(n);
  std::vector<uint64_t> tasks(n), rows_per_task(n);
  for (size_t i = 0; i < n; ++i) {
    const GemmArgs& g = gs[i];
    ctx[i] = GemvCtx{&g.w, g.a, xs.data() + per * i, M, K / 64 * 64, g.bias, g.c, g.w.n, g.accumulate, int4_subnormal_decode()};
    gemv_prepare(g.w, g.a, M, ctx[i].int4_subnormal, xs.data() + per * i);
    rows_per_task[i] = stream_rows_per_task(g.w.n, g.w.f32 ? K * sizeof(float) : qt_row_stream_bytes(g.w.q));
    tasks[i] = (g.w.n + rows_per_task[i] - 1) / rows_per_task[i];
  }
  auto rows = use_avx512() ? avx512::gemv_rows : (use_avx2() ? avx2::gemv_rows : gemv_rows_ref);
  parallel_for_groups(tasks, [&](size_t i, uint64_t t) {
    const uint64_t b = t * rows_per_task[i], e = std::min<uint64_t>(b + rows_per_task[i], gs[i].w.n);
    SubnormalScope keep_subnormals;  // the int4 decode reads nibbles as subnormal floats
    rows(ctx[i], b, e);
  });
}

}  // namespace

void gemm(const GemmArgs& g) {
  const uint64_t M = g.m, N = g.w.n, K = g.w.k;
  if (M == 0 || N == 0) return;
  if (K == 0) return gemm_empty_k(g);
  gemm_check_perturb(g.p, N, K);
  const bool avx = use_avx2();
  if (M <= kGemvMaxRows) {
    GemvCtx ctx{&g.w, g.a, nullptr, M, K / 64 * 64, g.bias, g.c, N, g.accumulate, int4_subnormal_decode()};
    if (g.p.on) {
      // RNG-bound: one row at a time, materialised and perturbed, then the fp32 GEMV order.
      auto dec = avx ? avx2::gemm_decode : gemm_decode_ref;
      auto per = avx ? avx2::gemm_perturb : gemm_perturb_ref;
      auto dot = avx ? avx2::gemv_f32_row : gemv_f32_row_ref;
      parallel_chunks(N, 8, [&](size_t b, size_t e) {
        float* row = t_scratch.get(K);
        for (size_t n = b; n < e; ++n) {
          dec(g.w, n, n + 1, 0, K, row, K);
          per(g.p, K, n, n + 1, 0, K, row, K);
          dot(row, ctx, n);
        }
      });
      return;
    }
    return gemv_group(&g, 1);
  }
  if (!avx) {
    parallel_chunks(N, 8, [&](size_t b, size_t e) { gemm_rows_ref(g, b, e); });
    return;
  }
  if (M <= kSkinnyMaxRows) {
    float* at = t_shared.get(K * 16 + 8);
    parallel_chunks(K, 1024, [&](size_t b, size_t e) { avx2::gemm_pack_at(g, b, e, at); });
    const bool wide = use_avx512();
    const size_t tmp = (wide ? 12 : 6) * kKC, table = gemm_table_floats(g.p, 12, K);
    parallel_chunks(N, 48, [&](size_t b, size_t e) {
      float* p = t_scratch.get(tmp + table);
      avx2::gemm_block_skinny(g, b, e, at, p, wide ? avx512::gemm_kernel_rows12 : nullptr, p + tmp);
    });
    t_shared.trim(kKeepShared);
    return;
  }
  gemm_packed(&g, 1);
}

void gemm_shared_a(const GemmArgs* gs, size_t n) {
  if (n == 0) return;
  const GemmArgs& g0 = gs[0];
  bool packed = use_avx2() && g0.m > kSkinnyMaxRows && g0.w.k > 0;
  for (size_t i = 0; i < n; ++i) {
    check(gs[i].a == g0.a && gs[i].m == g0.m && gs[i].w.k == g0.w.k, Code::InvalidArgument,
          "gemm_shared_a: every product must share A (pointer, rows and K)");
    gemm_check_perturb(gs[i].p, gs[i].w.n, gs[i].w.k);
  }
  bool streamed = g0.m > 0 && g0.m <= kGemvMaxRows && g0.w.k > 0;
  for (size_t i = 0; i < n; ++i) streamed = streamed && !gs[i].p.on;
  if (streamed) return gemv_group(gs, n);
  if (!packed) {
    for (size_t i = 0; i < n; ++i) gemm(gs[i]);
    return;
  }
  gemm_packed(gs, n);
}

}  // namespace zt
