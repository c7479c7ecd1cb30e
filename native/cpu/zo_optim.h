// Fused ZO optimiser state updates (ZO-Bench's ZO-SGD-MMT and ZO-Adam) for fp32 weights. The
// estimated gradient g(i) = sum_k coef_k * z_k(i) is regenerated from the step's directions
// (native/common/direction.h, through the perturbation kernels) a block at a time and never stored
// beyond one block per task; each weight, momentum and second-moment element is read and written
// once per step.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <cmath>
#include <string>

#include "../common/check_direction.h"
#include "../common/direction.h"
#include "../common/status.h"

namespace zt {

struct ZoOptimStep {
  int kind;             // kZoMomentum or kZoAdam
  const Direction* dirs;  // one per query: seed, stream (= tensor id), dist, bits, sr_purpose (update)
  const float* coefs;     // g_proj / n per query
  int queries;
  float lr;
  float decay;     // multiplicative weight decay lr * lambda (0 for norms); w <- w * (1 - decay) first
  float beta1;     // momentum (ZO-SGD-MMT) or Adam's first-moment factor
  float beta2;     // Adam's second-moment factor
  float adam_eps;
  float bias1;     // Adam bias corrections 1 - beta1^t and 1 - beta2^t (t = 1-based update count)
  float bias2;
};

enum ZoOptimKind : int { kZoMomentum = 0, kZoAdam = 1 };

// The query count, checked as the caller's count before anything is sized by it (or cast to int).
inline void check_zo_queries(uint64_t q) {
  check(q >= 1 && q <= 1024, Code::InvalidArgument, "zoOptimStep: between 1 and 1024 queries, got " + std::to_string(q));
}

// Throws ZOTUNE_INVALID_ARGUMENT for a bad kind, query count, direction or hyper-parameter (inline:
// the CUDA addon checks its device steps with it too).
inline void check_zo_optim(const ZoOptimStep& s) {
  check(s.kind == kZoMomentum || s.kind == kZoAdam, Code::InvalidArgument, "zoOptimStep: kind must be 0 (momentum) or 1 (adam)");
  check_zo_queries((uint64_t)(s.queries < 0 ? 0 : s.queries));
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

// One optimiser step over elements [0, n) of one tensor whose direction elements are first .. first+n-1:
//   momentum: m = beta1 * m + g;                       w = w * (1 - decay) - lr * m
//   adam:     m = beta1 * m + (1 - beta1) g;  v = beta2 * v + (1 - beta2) g^2;
//             w = w * (1 - decay) - lr * (m / bias1) / (sqrt(v / bias2) + adam_eps)
// v is ignored (may be null) for momentum. Same result on any thread count and CPU path.
void zo_optim_step(float* w, float* m, float* v, size_t n, uint64_t first, const ZoOptimStep& s);

// The rule above for one element with its gradient estimate g (g = sum_k fma(coef_k, z_k, g) from
// +0 in query order): the scalar kernel's and the GPU's (cuda/kernels/zo_optim.cu) definition.
ZT_HD void zo_optim_elem(float* w, float* m, float* v, float g, const ZoOptimStep& s) {
  const float keep = 1.0f - s.decay;
  if (s.kind == kZoMomentum) {
    *m = zt_fma(s.beta1, *m, g);
    *w = zt_fma(-s.lr, *m, zt_mul(*w, keep));
    return;
  }
  const float c1 = 1.0f - s.beta1, c2 = 1.0f - s.beta2, inv_b1 = 1.0f / s.bias1, inv_b2 = 1.0f / s.bias2;
  *m = zt_fma(s.beta1, *m, zt_mul(c1, g));
  *v = zt_fma(s.beta2, *v, zt_mul(c2, zt_mul(g, g)));
  const float denom = zt_add(sqrtf(zt_mul(*v, inv_b2)), s.adam_eps);
  *w = zt_fma(-s.lr, zt_mul(*m, inv_b1) / denom, zt_mul(*w, keep));
}

// Element kernels on [0, len): g holds the gradient estimate block.
void zo_optim_block_ref(float* w, float* m, float* v, const float* g, size_t len, const ZoOptimStep& s);
namespace avx2 {
void zo_optim_block(float* w, float* m, float* v, const float* g, size_t len, const ZoOptimStep& s);
}  // namespace avx2

}  // namespace zt
