#include "zo_optim.h"

#include <cmath>
#include <string>

#include "../common/status.h"
#include "cpu_features.h"
#include "perturb.h"
#include "threadpool.h"

namespace zt {

void check_zo_optim(const ZoOptimStep& s) {
  check(s.kind == kZoMomentum || s.kind == kZoAdam, Code::InvalidArgument, "zoOptimStep: kind must be 0 (momentum) or 1 (adam)");
  check(s.queries >= 1 && s.queries <= 1024, Code::InvalidArgument, "zoOptimStep: between 1 and 1024 queries, got " + std::to_string(s.queries));
  for (int k = 0; k < s.queries; ++k) {
    check_direction(s.dirs[k]);
    check(std::isfinite(s.coefs[k]), Code::NonFinite, "zoOptimStep: coefficient " + std::to_string(k) + " is not finite");
  }
  check(std::isfinite(s.lr) && std::isfinite(s.decay) && s.decay >= 0 && s.decay <= 1, Code::InvalidArgument, "zoOptimStep: lr must be finite and decay in [0, 1]");
  check(s.beta1 >= 0 && s.beta1 < 1, Code::InvalidArgument, "zoOptimStep: beta1 must be in [0, 1)");
  if (s.kind == kZoAdam) {
    check(s.beta2 >= 0 && s.beta2 < 1, Code::InvalidArgument, "zoOptimStep: beta2 must be in [0, 1)");
    check(s.adam_eps > 0 && std::isfinite(s.adam_eps), Code::InvalidArgument, "zoOptimStep: adam eps must be a finite value > 0");
    check(s.bias1 > 0 && s.bias1 <= 1 && s.bias2 > 0 && s.bias2 <= 1, Code::InvalidArgument, "zoOptimStep: bias corrections must be in (0, 1]");
  }
}

void zo_optim_block_ref(float* w, float* m, float* v, const float* g, size_t len, const ZoOptimStep& s) {
  const float keep = 1.0f - s.decay;
  if (s.kind == kZoMomentum) {
    for (size_t i = 0; i < len; ++i) {
      m[i] = zt_fma(s.beta1, m[i], g[i]);
      w[i] = zt_fma(-s.lr, m[i], zt_mul(w[i], keep));
    }
    return;
  }
  const float c1 = 1.0f - s.beta1, c2 = 1.0f - s.beta2, inv_b1 = 1.0f / s.bias1, inv_b2 = 1.0f / s.bias2;
  for (size_t i = 0; i < len; ++i) {
    m[i] = zt_fma(s.beta1, m[i], zt_mul(c1, g[i]));
    v[i] = zt_fma(s.beta2, v[i], zt_mul(c2, zt_mul(g[i], g[i])));
    const float denom = zt_add(sqrtf(zt_mul(v[i], inv_b2)), s.adam_eps);
    w[i] = zt_fma(-s.lr, zt_mul(m[i], inv_b1) / denom, zt_mul(w[i], keep));
  }
}

// Tasks own 2^16-element windows of the direction (aligned like perturb_dense, so the split never
// depends on the thread count); inside a task the gradient estimate is built 2048 elements at a
// time on the stack by the perturbation kernels (g = sum_k fma(coef_k, z_k, g), in query order).
void zo_optim_step(float* w, float* m, float* v, size_t n, uint64_t first, const ZoOptimStep& s) {
  check_zo_optim(s);
  check(s.kind == kZoMomentum || v != nullptr, Code::InvalidArgument, "zoOptimStep: adam needs a second-moment buffer");
  if (n == 0) return;
  constexpr uint64_t chunk = 1 << 16, block = 2048;
  const uint64_t lo = first, hi = first + n, t0 = lo / chunk, t1 = (hi + chunk - 1) / chunk;
  const bool avx = use_avx2();
  auto dir_kernel = avx ? avx2::perturb_range : perturb_range_ref;
  auto elem_kernel = avx ? avx2::zo_optim_block : zo_optim_block_ref;
  parallel_for(t1 - t0, [&](size_t t) {
    uint64_t b = (t0 + t) * chunk, e = b + chunk;
    if (b < lo) b = lo;
    if (e > hi) e = hi;
    alignas(32) float g[block];
    for (uint64_t x = b; x < e;) {
      uint64_t y = (x / block + 1) * block;
      if (y > e) y = e;
      const size_t len = (size_t)(y - x);
      for (size_t i = 0; i < len; ++i) g[i] = 0.0f;
      for (int k = 0; k < s.queries; ++k) dir_kernel(g, x, y, s.dirs[k], s.coefs[k], 1.0f);
      const size_t at = (size_t)(x - lo);
      elem_kernel(w + at, m + at, v ? v + at : nullptr, g, len, s);
      x = y;
    }
  });
}

}  // namespace zt
