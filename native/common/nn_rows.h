// One row of each transformer op, written once for the CPU scalar references (native/cpu/nn.cc)
// and the CUDA reference kernels (cuda/kernels/nn.cu, one GPU thread per row): the operations and
// their order define the bits every faster kernel must reproduce (native/common/mathfn.h).
#pragma once
#include "mathfn.h"

#if !defined(__CUDACC__)
#include <math.h>
#endif

namespace zt {

static constexpr size_t kMaxHeadDim = 512;  // attention keeps one head's accumulators in registers / on the stack
static constexpr size_t kKeyBlock = 32;     // keys per online-softmax block

ZT_HD float neg_inf_f32() { return bits_to_f32(0xff800000u); }

// out = x * rms_inv(sum x^2) * w over dim values; the sum of squares in double in the 8-lane order
// (out may be x).
ZT_HD void rmsnorm_row(float* out, const float* x, const float* w, size_t dim, double eps) {
  const size_t n8 = dim & ~(size_t)7;
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i < n8; i += 8)
    for (int j = 0; j < 8; ++j) {
      double v = x[i + j];
      l[j] += v * v;
    }
  double ss = reduce8d(l);
  for (size_t i = n8; i < dim; ++i) ss += (double)x[i] * (double)x[i];
  float s = rms_inv(ss, dim, eps);
  for (size_t i = 0; i < dim; ++i) out[i] = zt_mul(zt_mul(x[i], s), w[i]);
}

ZT_HD float swiglu_f32(float g, float u) { return zt_mul(silu_f32(g), u); }

// The larger of a and m, keeping m on ties and when a is NaN (a NaN never wins).
ZT_HD float max_keep(float a, float m) { return a > m ? a : m; }

// Max of one row in the 8-lane order (NaN ignored; -inf if none) and sum_i exp_f32(x_i - max) in
// double in the 8-lane order.
ZT_HD void softmax_stats_row(const float* x, size_t n, float* row_max, double* row_sum) {
  const size_t n8 = n & ~(size_t)7;
  float m8[8];
  for (int j = 0; j < 8; ++j) m8[j] = neg_inf_f32();
  for (size_t i = 0; i < n8; i += 8)
    for (int j = 0; j < 8; ++j) m8[j] = max_keep(x[i + j], m8[j]);
  // lanes combined in the 8-lane order
  float a0 = max_keep(m8[4], m8[0]), a1 = max_keep(m8[5], m8[1]);
  float a2 = max_keep(m8[6], m8[2]), a3 = max_keep(m8[7], m8[3]);
  float m = max_keep(max_keep(a3, a1), max_keep(a2, a0));
  for (size_t i = n8; i < n; ++i) m = max_keep(x[i], m);
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i < n8; i += 8)
    for (int j = 0; j < 8; ++j) l[j] += (double)exp_f32(zt_add(x[i + j], -m));
  double s = reduce8d(l);
  for (size_t i = n8; i < n; ++i) s += (double)exp_f32(zt_add(x[i], -m));
  *row_max = m;
  *row_sum = s;
}

// log softmax(x)[t] from the row's max and sum of exps, in double. log() is the platform's: glibc
// on the CPU, CUDA's on the GPU (both within 1 ulp of double), the one step not bit-specified.
ZT_HD double log_prob(float x_t, float row_max, double row_sum) { return (double)x_t - (double)row_max - log(row_sum); }

// Index of the first maximum, ignoring NaN; -1 if every value is NaN (or n == 0).
ZT_HD int64_t argmax_row(const float* x, size_t n) {
  float m = neg_inf_f32();
  for (size_t i = 0; i < n; ++i) m = max_keep(x[i], m);
  for (size_t i = 0; i < n; ++i)
    if (x[i] == m) return (int64_t)i;
  return -1;
}

// Causal grouped-query attention over a KV layout: keys transposed, k [B][Hkv][hd][cap] (so the
// scores of consecutive slots are consecutive in memory), values v [B][Hkv][cap][hd]. Sequence b
// has queries q rows [q_off[b], q_off[b+1]) (row stride ld, heads of hd values, Hq = Hkv * group);
// query i of sequence b sits at KV slot q_start[b] + i and sees the slots [0, q_start[b] + i]
// whose kmask byte is nonzero (kmask null: all). A query that sees no slot outputs zeros. scale
// multiplies q.k (1/sqrt(hd) for LLaMA). out may equal q (each row and head is read, then written,
// by one task).
struct AttnArgs {
  float* out;  // [Nq][ld_out]
  const float* q;
  const float* k;
  const float* v;
  const int32_t* q_off;    // [B + 1]
  const int32_t* q_start;  // [B]
  const uint8_t* kmask;    // [B][cap] or null
  size_t B, Hq, Hkv, hd, cap, ld_q, ld_out;
  float scale;
};

// Query i of sequence b, query head h. Keys in blocks of 32 with an online softmax: scores summed
// in d order; the block max; when it rises, o and l are rescaled by exp_f32(m_old - m_new); the
// block's p_j = exp_f32(s_j - m) summed in double in the 8-lane order; the block's value sum
// sum_j p_j v_j in j order added to o; finally o / l in double.
ZT_HD void attention_row(const AttnArgs& a, size_t b, size_t i, size_t h) {
  const size_t hd = a.hd, cap = a.cap, kvh = h / (a.Hq / a.Hkv);
  const float* kt = a.k + (b * a.Hkv + kvh) * hd * cap;  // [hd][cap]
  const float* vb = a.v + (b * a.Hkv + kvh) * cap * hd;  // [cap][hd]
  const uint8_t* mb = a.kmask ? a.kmask + b * a.cap : nullptr;
  const size_t row = (size_t)a.q_off[b] + i, last = (size_t)a.q_start[b] + i;
  const float* qh = a.q + row * a.ld_q + h * hd;
  float* oh = a.out + row * a.ld_out + h * hd;
  const float ninf = neg_inf_f32();
  float o[kMaxHeadDim], ob[kMaxHeadDim], s[kKeyBlock];
  float m = ninf;
  double l = 0;
  for (size_t d = 0; d < hd; ++d) o[d] = 0;
  for (size_t j0 = 0; j0 <= last; j0 += kKeyBlock) {
    const size_t j1 = last + 1 < j0 + kKeyBlock ? last + 1 : j0 + kKeyBlock;
    float bm = ninf;
    for (size_t j = j0; j < j1; ++j) {
      float acc = 0;
      for (size_t d = 0; d < hd; ++d) acc = zt_add(acc, zt_mul(qh[d], kt[d * cap + j]));
      float sj = (mb && !mb[j]) ? ninf : zt_mul(acc, a.scale);
      s[j - j0] = sj;
      bm = max_keep(sj, bm);
    }
    if (bm == ninf) continue;  // every key of the block masked
    if (bm > m) {
      float corr = exp_f32(zt_add(m, -bm));
      l *= (double)corr;
      for (size_t d = 0; d < hd; ++d) o[d] = zt_mul(o[d], corr);
      m = bm;
    }
    for (size_t d = 0; d < hd; ++d) ob[d] = 0;
    double l8[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // the block's sum of p in the 8-lane order
    for (size_t j = j0; j < j1; ++j) {
      if (mb && !mb[j]) continue;
      float p = exp_f32(zt_add(s[j - j0], -m));
      l8[(j - j0) & 7] += (double)p;
      const float* vj = vb + j * hd;
      for (size_t d = 0; d < hd; ++d) ob[d] = zt_add(ob[d], zt_mul(p, vj[d]));
    }
    l += reduce8d(l8);
    for (size_t d = 0; d < hd; ++d) o[d] = zt_add(o[d], ob[d]);
  }
  if (l > 0) {
    for (size_t d = 0; d < hd; ++d) oh[d] = (float)((double)o[d] / l);
  } else {
    for (size_t d = 0; d < hd; ++d) oh[d] = 0;
  }
}

}  // namespace zt
