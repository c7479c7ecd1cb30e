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
static constexpr double kInlineWork = 1 << 16;  // multiply-adds below which attention runs inline

// --- rotary tables ------------------------------------------------------------------------

void rope_tables(float* cos_t, float* sin_t, int64_t first, size_t count, size_t hd, const RopeParams& p) {
  const size_t half = hd / 2;
  std::vector<double> inv(half);
  rope_inv_freq(inv.data(), hd, p);
  parallel_chunks(count, 256, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) rope_table_row(cos_t + r * half, sin_t + r * half, first + (int64_t)r, inv.data(), half);
  });
}

// --- scalar reference kernels -------------------------------------------------------------

void rmsnorm_rows_ref(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps) {
  for (size_t r = 0; r < rows; ++r) rmsnorm_row(out + r * dim, x + r * dim, w, dim, eps);
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
      for (size_t i = 0; i < half; ++i) rope_rotate(x1 + i, x2 + i, c[i], s[i]);
    }
  }
}

void swiglu_ref(float* out, const float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = swiglu_f32(gate[i], up[i]);
}

void softmax_stats_ref(const float* x, size_t rows, size_t n, size_t ld, float* row_max, double* row_sum) {
  for (size_t r = 0; r < rows; ++r) softmax_stats_row(x + r * ld, n, row_max + r, row_sum + r);
}

int64_t argmax_ref(const float* x, size_t n) { return argmax_row(x, n); }

void attention_block_ref(const AttnArgs& a, size_t b, size_t kvh, size_t r0, size_t r1) {
  const size_t group = a.Hq / a.Hkv;
  for (size_t i = r0; i < r1; ++i)
    for (size_t g = 0; g < group; ++g) attention_row(a, b, i, kvh * group + g);
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
  auto k = use_avx512() ? avx512::swiglu : use_avx2() ? avx2::swiglu : swiglu_ref;
  parallel_chunks(n, 1 << 14, [&](size_t b, size_t e) { k(out + b, gate + b, up + b, e - b); });
}

void attention(const AttnArgs& a) {
  struct Block {
    uint32_t b, r0, r1;
  };
  std::vector<Block> blocks;
  for (size_t b = 0; b < a.B; ++b) {
    size_t n = (size_t)(a.q_off[b + 1] - a.q_off[b]);
    for (size_t r = 0; r < n; r += kAttnQueryBlock) blocks.push_back({(uint32_t)b, (uint32_t)r, (uint32_t)std::min(n, r + kAttnQueryBlock)});
  }
  auto k = use_avx512() ? avx512::attention_block : use_avx2() ? avx2::attention_block : attention_block_ref;
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
  auto k = use_avx512() ? avx512::softmax_stats : use_avx2() ? avx2::softmax_stats : softmax_stats_ref;
  parallel_for(rows, [&](size_t r) {
    if (target[r] < 0) {
      out[r] = __builtin_nan("");
      return;
    }
    float m;
    double s;
    k(x + r * ld, 1, n, ld, &m, &s);
    out[r] = log_prob(x[r * ld + (size_t)target[r]], m, s);
  });
}

int64_t argmax(const float* x, size_t n) { return use_avx2() ? avx2::argmax(x, n) : argmax_ref(x, n); }

int64_t sample_row(const float* logits, size_t n, const SampleParams& p, float u) {
  return sample_ranked(logits, n, p, u, argmax(logits, n));
}

}  // namespace zt
