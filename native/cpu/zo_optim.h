// Fused ZO optimiser state updates (ZO-Bench's ZO-SGD-MMT and ZO-Adam) for fp32 weights. The
// estimated gradient g(i) = sum_k coef_k * z_k(i) is regenerated from the step's directions
// (native/common/direction.h, through the perturbation kernels) a block at a time and never stored
// beyond one block per task; each weight, momentum and second-moment element is read and written
// once per step.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../common/direction.h"

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

// Throws ZOTUNE_INVALID_ARGUMENT for a bad kind, query count, direction or hyper-parameter.
void check_zo_optim(const ZoOptimStep& s);

// One optimiser step over elements [0, n) of one tensor whose direction elements are first .. first+n-1:
//   momentum: m = beta1 * m + g;                       w = w * (1 - decay) - lr * m
//   adam:     m = beta1 * m + (1 - beta1) g;  v = beta2 * v + (1 - beta2) g^2;
//             w = w * (1 - decay) - lr * (m / bias1) / (sqrt(v / bias2) + adam_eps)
// v is ignored (may be null) for momentum. Same result on any thread count and CPU path.
void zo_optim_step(float* w, float* m, float* v, size_t n, uint64_t first, const ZoOptimStep& s);

// Element kernels on [0, len): g holds the gradient estimate block.
void zo_optim_block_ref(float* w, float* m, float* v, const float* g, size_t len, const ZoOptimStep& s);
namespace avx2 {
void zo_optim_block(float* w, float* m, float* v, const float* g, size_t len, const ZoOptimStep& s);
}  // namespace avx2

}  // namespace zt
