// First-order optimiser kernels: one fused pass per tensor (the update reads the gradient once and
// each state once), plus the reductions the trainers need (global gradient norm, squared-gradient
// accumulation for the diagonal Fisher).
//
// Element operations (fp32, every multiply and add rounded separately, no FMA, in this order on
// the scalar and AVX2 paths, so both give the same bits; per-step constants are computed in double
// and rounded once):
//   AdamW  g = g_raw * gs
//          m = b1 * m + (1 - b1) * g
//          v = b2 * v + (1 - b2) * (g * g)
//          w = w * (1 - lr * wd) - (lr / bc1) * m / (sqrt(v * (1 / bc2)) + eps)
//          with bc1 = 1 - b1^t, bc2 = 1 - b2^t (PyTorch AdamW, decoupled weight decay)
//   SGD    g = g_raw * gs + wd * w
//          momentum > 0: buf = g (first step) or momentum * buf + g; g = nesterov ? g + momentum * buf : buf
//          w = w - lr * g
//   squares  acc = acc + s * (g * g)
// gs multiplies the raw gradient (gradient clipping and accumulation averaging without a pass).
// sum_squares: sum of g^2 in double, products exact, 8-lane order per 64K-element chunk
// (mathfn.h reduce8d), chunks added in order: independent of threads and path.
#pragma once
#include <stddef.h>

namespace zt {

struct AdamWStep {
  float gs, b1, omb1, b2, omb2, decay, step, ibc2, eps;
};
// From the hyper-parameters of step t (t >= 1): the rounded constants above.
AdamWStep adamw_step(double lr, double b1, double b2, double eps, double wd, double gs, double t);

struct SgdStep {
  float gs, lr, momentum, wd;
  bool nesterov, first;
};

void adamw_update(float* w, const float* g, float* m, float* v, size_t n, const AdamWStep& s);
void sgd_update(float* w, const float* g, float* buf, size_t n, const SgdStep& s);  // buf null: no momentum
double sum_squares(const float* g, size_t n);
void accumulate_squares(float* acc, const float* g, size_t n, float s);

// Range kernels (scalar reference; avx2:: the same operations 8 lanes at a time).
void adamw_range_ref(float* w, const float* g, float* m, float* v, size_t n, const AdamWStep& s);
void sgd_range_ref(float* w, const float* g, float* buf, size_t n, const SgdStep& s);
double sum_squares_range_ref(const float* g, size_t n);
void accumulate_squares_range_ref(float* acc, const float* g, size_t n, float s);
namespace avx2 {
void adamw_range(float* w, const float* g, float* m, float* v, size_t n, const AdamWStep& s);
void sgd_range(float* w, const float* g, float* buf, size_t n, const SgdStep& s);
double sum_squares_range(const float* g, size_t n);
void accumulate_squares_range(float* acc, const float* g, size_t n, float s);
}  // namespace avx2

}  // namespace zt
