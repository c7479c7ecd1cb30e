#include "optim.h"

#include <math.h>

#include <vector>

#include "../common/mathfn.h"
#include "cpu_features.h"
#include "threadpool.h"

namespace zt {

static constexpr size_t kChunk = 1 << 16;  // elements per task (and per sum_squares partial)

AdamWStep adamw_step(double lr, double b1, double b2, double eps, double wd, double gs, double t) {
  AdamWStep s;
  s.gs = (float)gs;
  s.b1 = (float)b1;
  s.omb1 = (float)(1 - b1);
  s.b2 = (float)b2;
  s.omb2 = (float)(1 - b2);
  s.decay = (float)(1 - lr * wd);
  s.step = (float)(lr / (1 - pow(b1, t)));
  s.ibc2 = (float)(1 / (1 - pow(b2, t)));
  s.eps = (float)eps;
  return s;
}

void adamw_range_ref(float* w, const float* g, float* m, float* v, size_t n, const AdamWStep& s) {
  for (size_t i = 0; i < n; ++i) {
    const float gi = zt_mul(g[i], s.gs);
    const float mi = zt_add(zt_mul(s.b1, m[i]), zt_mul(s.omb1, gi));
    const float vi = zt_add(zt_mul(s.b2, v[i]), zt_mul(s.omb2, zt_mul(gi, gi)));
    const float den = zt_add(sqrtf(zt_mul(vi, s.ibc2)), s.eps);
    m[i] = mi;
    v[i] = vi;
    w[i] = zt_add(zt_mul(w[i], s.decay), -(zt_mul(s.step, mi) / den));
  }
}

void sgd_range_ref(float* w, const float* g, float* buf, size_t n, const SgdStep& s) {
  for (size_t i = 0; i < n; ++i) {
    float gi = zt_add(zt_mul(g[i], s.gs), zt_mul(s.wd, w[i]));
    if (buf) {
      const float b = s.first ? gi : zt_add(zt_mul(s.momentum, buf[i]), gi);
      buf[i] = b;
      gi = s.nesterov ? zt_add(gi, zt_mul(s.momentum, b)) : b;
    }
    w[i] = zt_add(w[i], -zt_mul(s.lr, gi));
  }
}

double sum_squares_range_ref(const float* g, size_t n) {
  const size_t n8 = n & ~(size_t)7;
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i < n8; i += 8)
    for (int j = 0; j < 8; ++j) l[j] += (double)g[i + j] * (double)g[i + j];
  double s = reduce8d(l);
  for (size_t i = n8; i < n; ++i) s += (double)g[i] * (double)g[i];
  return s;
}

void accumulate_squares_range_ref(float* acc, const float* g, size_t n, float s) {
  for (size_t i = 0; i < n; ++i) acc[i] = zt_add(acc[i], zt_mul(s, zt_mul(g[i], g[i])));
}

void adamw_update(float* w, const float* g, float* m, float* v, size_t n, const AdamWStep& s) {
  auto k = use_avx2() ? avx2::adamw_range : adamw_range_ref;
  parallel_chunks(n, kChunk, [&](size_t b, size_t e) { k(w + b, g + b, m + b, v + b, e - b, s); });
}

void sgd_update(float* w, const float* g, float* buf, size_t n, const SgdStep& s) {
  auto k = use_avx2() ? avx2::sgd_range : sgd_range_ref;
  parallel_chunks(n, kChunk, [&](size_t b, size_t e) { k(w + b, g + b, buf ? buf + b : nullptr, e - b, s); });
}

double sum_squares(const float* g, size_t n) {
  auto k = use_avx2() ? avx2::sum_squares_range : sum_squares_range_ref;
  std::vector<double> part((n + kChunk - 1) / kChunk);
  parallel_chunks(n, kChunk, [&](size_t b, size_t e) { part[b / kChunk] = k(g + b, e - b); });
  double s = 0;
  for (double p : part) s += p;
  return s;
}

void accumulate_squares(float* acc, const float* g, size_t n, float s) {
  auto k = use_avx2() ? avx2::accumulate_squares_range : accumulate_squares_range_ref;
  parallel_chunks(n, kChunk, [&](size_t b, size_t e) { k(acc + b, g + b, e - b, s); });
}

}  // namespace zt
