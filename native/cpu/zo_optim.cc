#include "zo_optim.h"

#include <cmath>
#include <string>

#include "../common/status.h"
#include "cpu_features.h"
#include "perturb.h"
#include "threadpool.h"

namespace zt {

void zo_optim_block_ref(float* w, float* m, float* v, const float* g, size_t len, const ZoOptimStep& s) {
  for (size_t i = 0; i < len; ++i) zo_optim_elem(w + i, m + i, v ? v + i : nullptr, g[i], s);
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
