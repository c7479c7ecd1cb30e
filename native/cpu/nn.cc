#include "nn.h"

#include <math.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "../common/mathfn.h"
#include "cpu_features.h"
#include "threadpool.h"

namespace zt {

static constexpr float kNegInf = -__builtin_inff();
static constexpr size_t kMaxHeadDim = 512;  // attention keeps one head's accumulators on the stack
static constexpr size_t kKeyBlock = 32;      // keys per online-softmax block
static constexpr size_t kQueryBlock = 16;    // query rows per attention task
static constexpr double kInlineWork = 1 << 16;  // multiply-adds below which attention runs inline

// --- rotary tables ------------------------------------------------------------------------

void rope_inv_freq(double* out, size_t hd, const RopeParams& p) {
  const double two_pi = 6.283185307179586476925;
  for (size_t i = 0; i < hd / 2; ++i) {
    double f = 1.0 / pow(p.theta, (double)(2 * i) / (double)hd);
    if (p.llama3) {
      double low_wl = p.original_max_positions / p.low_freq_factor;
      double high_wl = p.original_max_positions / p.high_freq_factor;
      double wl = two_pi / f;
      if (wl > low_wl) {
        f /= p.factor;  // long wavelengths: interpolate positions
      } else if (wl >= high_wl) {  // medium: blend between scaled and unscaled
        double smooth = (p.original_max_positions / wl - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
        f = (1 - smooth) * f / p.factor + smooth * f;
      }
    }
    out[i] = f;
  }
}

void rope_tables(float* cos_t, float* sin_t, int64_t first, size_t count, size_t hd, const RopeParams& p) {
  const size_t half = hd / 2;
  std::vector<double> inv(half);
  rope_inv_freq(inv.data(), hd, p);
  parallel_chunks(count, 256, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r)
      for (size_t i = 0; i < half; ++i) {
        double a = (double)(first + (int64_t)r) * inv[i];
        cos_t[r * half + i] = (float)cos(a);
        sin_t[r * half + i] = (float)sin(a);
      }
  });
}

// --- scalar reference kernels -------------------------------------------------------------

void rmsnorm_rows_ref(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps) {
  const size_t n8 = dim & ~(size_t)7;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < n8; i += 8)
      for (int j = 0; j < 8; ++j) {
        double v = xr[i + j];
        l[j] += v * v;
      }
    double ss = reduce8d(l);
    for (size_t i = n8; i < dim; ++i) ss += (double)xr[i] * (double)xr[i];
    float s = rms_inv(ss, dim, eps);
    for (size_t i = 0; i < dim; ++i) o[i] = zt_mul(zt_mul(xr[i], s), w[i]);
  }
}

void rope_rows_ref(float* x, size_t rows, size_t ld, size_t heads, size_t hd, const int32_t* pos, const float* cos_t,
                   const float* sin_t) {
  const size_t half = hd / 2;
  for (size_t r = 0; r < rows; ++r) {
    const float* c = cos_t + (size_t)pos[r] * half;
    const float* s = sin_t + (size_t)pos[r] * half;
    for (size_t h = 0; h < heads; ++h) {
      float* x1 = x + r * ld + h * hd;
      float* x2 = x1 + half;
      for (size_t i = 0; i < half; ++i) {
        float a = x1[i], b = x2[i];
        x1[i] = zt_add(zt_mul(a, c[i]), -zt_mul(b, s[i]));
        x2[i] = zt_add(zt_mul(b, c[i]), zt_mul(a, s[i]));
      }
    }
  }
}

void swiglu_ref(float* out, const float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = zt_mul(silu_f32(gate[i]), up[i]);
}

void softmax_stats_ref(const float* x, size_t rows, size_t n, size_t ld, float* row_max, double* row_sum) {
  const size_t n8 = n & ~(size_t)7;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    float m8[8];
    for (int j = 0; j < 8; ++j) m8[j] = kNegInf;
    for (size_t i = 0; i < n8; i += 8)
      for (int j = 0; j < 8; ++j) m8[j] = xr[i + j] > m8[j] ? xr[i + j] : m8[j];
    // lanes combined in the 8-lane order; a NaN never wins a comparison
    float a0 = m8[4] > m8[0] ? m8[4] : m8[0], a1 = m8[5] > m8[1] ? m8[5] : m8[1];
    float a2 = m8[6] > m8[2] ? m8[6] : m8[2], a3 = m8[7] > m8[3] ? m8[7] : m8[3];
    float b0 = a2 > a0 ? a2 : a0, b1 = a3 > a1 ? a3 : a1;
    float m = b1 > b0 ? b1 : b0;
    for (size_t i = n8; i < n; ++i) m = xr[i] > m ? xr[i] : m;
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < n8; i += 8)
      for (int j = 0; j < 8; ++j) l[j] += (double)exp_f32(zt_add(xr[i + j], -m));
    double s = reduce8d(l);
    for (size_t i = n8; i < n; ++i) s += (double)exp_f32(zt_add(xr[i], -m));
    row_max[r] = m;
    row_sum[r] = s;
  }
}

int64_t argmax_ref(const float* x, size_t n) {
  float m = kNegInf;
  for (size_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  for (size_t i = 0; i < n; ++i)
    if (x[i] == m) return (int64_t)i;
  return -1;
}

void attention_block_ref(const AttnArgs& a, size_t b, size_t kvh, size_t r0, size_t r1) {
  const size_t hd = a.hd, group = a.Hq / a.Hkv, cap = a.cap;
  const float* kt = a.k + (b * a.Hkv + kvh) * hd * cap;  // [hd][cap]
  const float* vb = a.v + (b * a.Hkv + kvh) * cap * hd;  // [cap][hd]
  const uint8_t* mb = a.kmask ? a.kmask + b * a.cap : nullptr;
  float o[kMaxHeadDim], ob[kMaxHeadDim], s[kKeyBlock];
  for (size_t i = r0; i < r1; ++i) {
    const size_t row = (size_t)a.q_off[b] + i, last = (size_t)a.q_start[b] + i;
    for (size_t g = 0; g < group; ++g) {
      const size_t h = kvh * group + g;
      const float* qh = a.q + row * a.ld_q + h * hd;
      float* oh = a.out + row * a.ld_out + h * hd;
      float m = kNegInf;
      double l = 0;
      for (size_t d = 0; d < hd; ++d) o[d] = 0;
      for (size_t j0 = 0; j0 <= last; j0 += kKeyBlock) {
        const size_t j1 = std::min(last + 1, j0 + kKeyBlock);
        float bm = kNegInf;
        for (size_t j = j0; j < j1; ++j) {
          float acc = 0;
          for (size_t d = 0; d < hd; ++d) acc = zt_add(acc, zt_mul(qh[d], kt[d * cap + j]));
          float sj = (mb && !mb[j]) ? kNegInf : zt_mul(acc, a.scale);
          s[j - j0] = sj;
          bm = sj > bm ? sj : bm;
        }
        if (bm == kNegInf) continue;  // every key of the block masked
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
  }
}

// --- drivers ------------------------------------------------------------------------------

void rmsnorm(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps) {
  auto k = use_avx2() ? avx2::rmsnorm_rows : rmsnorm_rows_ref;
  const size_t chunk = std::max<size_t>(1, 16384 / std::max<size_t>(dim, 1));
  parallel_chunks(rows, chunk, [&](size_t b, size_t e) { k(out + b * dim, x + b * dim, w, e - b, dim, eps); });
}

void rope(float* x, size_t rows, size_t ld, size_t heads, size_t hd, const int32_t* pos, const float* cos_t,
          const float* sin_t) {
  auto k = use_avx2() ? avx2::rope_rows : rope_rows_ref;
  const size_t chunk = std::max<size_t>(1, 16384 / std::max<size_t>(heads * hd, 1));
  parallel_chunks(rows, chunk, [&](size_t b, size_t e) { k(x + b * ld, e - b, ld, heads, hd, pos + b, cos_t, sin_t); });
}

void swiglu(float* out, const float* gate, const float* up, size_t n) {
  auto k = use_avx2() ? avx2::swiglu : swiglu_ref;
  parallel_chunks(n, 1 << 14, [&](size_t b, size_t e) { k(out + b, gate + b, up + b, e - b); });
}

void attention(const AttnArgs& a) {
  struct Block {
    uint32_t b, r0, r1;
  };
  std::vector<Block> blocks;
  for (size_t b = 0; b < a.B; ++b) {
    size_t n = (size_t)(a.q_off[b + 1] - a.q_off[b]);
    for (size_t r = 0; r < n; r += kQueryBlock) blocks.push_back({(uint32_t)b, (uint32_t)r, (uint32_t)std::min(n, r + kQueryBlock)});
  }
  auto k = use_avx2() ? avx2::attention_block : attention_block_ref;
  auto task = [&](size_t t) {
    const Block& bl = blocks[t / a.Hkv];
    k(a, bl.b, t % a.Hkv, bl.r0, bl.r1);
  };
  // Waking the pool costs more than a few thousand key visits (decoding short contexts): run the
  // same tasks inline then. Each task writes its own rows either way, so the bits are the same.
  double visits = 0;
  for (size_t b = 0; b < a.B; ++b) {
    double n = a.q_off[b + 1] - a.q_off[b];
    visits += n * ((double)a.q_start[b] + (n + 1) / 2);
  }
  if (visits * (double)(a.Hq * a.hd) < kInlineWork)
    for (size_t t = 0; t < blocks.size() * a.Hkv; ++t) task(t);
  else
    parallel_for(blocks.size() * a.Hkv, [&](size_t t) { task(t); });
}

void embed(float* out, const float* table, size_t dim, const int32_t* ids, size_t n) {
  parallel_chunks(n, std::max<size_t>(1, 65536 / std::max<size_t>(dim, 1)), [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) memcpy(out + i * dim, table + (size_t)ids[i] * dim, dim * sizeof(float));
  });
}

void log_probs(const float* x, size_t rows, size_t n, size_t ld, const int32_t* target, double* out) {
  auto k = use_avx2() ? avx2::softmax_stats : softmax_stats_ref;
  parallel_for(rows, [&](size_t r) {
    if (target[r] < 0) {
      out[r] = __builtin_nan("");
      return;
    }
    float m;
    double s;
    k(x + r * ld, 1, n, ld, &m, &s);
    out[r] = (double)x[r * ld + (size_t)target[r]] - (double)m - log(s);
  });
}

int64_t argmax(const float* x, size_t n) { return use_avx2() ? avx2::argmax(x, n) : argmax_ref(x, n); }

int64_t sample_row(const float* logits, size_t n, const SampleParams& p, float u) {
  const int64_t best = argmax(logits, n);
  if (best < 0 || !(p.temperature > 0)) return best;
  struct Cand {
    float logit;
    uint32_t id;
  };
  const float mx = logits[best];
  if (!(mx > kNegInf && mx < -kNegInf)) return best;  // infinite logits: the distribution is degenerate
  std::vector<Cand> c;
  c.reserve(n);
  for (size_t i = 0; i < n; ++i)
    if (logits[i] == logits[i]) c.push_back({logits[i], (uint32_t)i});
  auto before = [](const Cand& x, const Cand& y) { return x.logit > y.logit || (x.logit == y.logit && x.id < y.id); };
  const bool top_k = p.top_k > 0 && p.top_k < c.size(), top_p = p.top_p < 1;
  if (top_k) {
    std::nth_element(c.begin(), c.begin() + (p.top_k - 1), c.end(), before);
    c.resize(p.top_k);
  }
  if (top_k || top_p) std::sort(c.begin(), c.end(), before);
  // Probabilities relative to the largest logit, in double.
  std::vector<double> w(c.size());
  double total = 0;
  for (size_t i = 0; i < c.size(); ++i) total += (w[i] = exp(((double)c[i].logit - (double)mx) / (double)p.temperature));
  size_t keep = c.size();
  if (top_p) {
    double before_mass = 0, limit = (double)p.top_p * total;
    keep = 0;
    while (keep < c.size() && (keep == 0 || before_mass < limit)) before_mass += w[keep++];
    total = before_mass;
  }
  double target = (double)u * total, cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += w[i];
    if (cum > target) return c[i].id;
  }
  return c[keep - 1].id;
}

}  // namespace zt
