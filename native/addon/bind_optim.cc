// Fused optimiser updates and gradient reductions (native/cpu/optim.h), f32 buffers of `count` elements:
//   adamwUpdate(w, g, m, v, count, hyper: f64[7] = [lr, beta1, beta2, eps, weightDecay, gradScale, t])
//   sgdUpdate(w, g, buf | null, count, hyper: f64[6] = [lr, momentum, weightDecay, gradScale, nesterov, first])
//   sumSquares(g, count) -> number (sum of g^2 in double)
//   accumulateSquares(acc, g, count, scale)   acc += scale * g^2
#include <cmath>
#include <string>

#include "../cpu/optim.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

void need(Args& a, bool ok, Code c, const std::string& msg) {
  if (!ok) throw coded_error(a.env(), c, msg);
}

// The buffers of one update, n floats each, must not share memory (a partial overlap too).
void distinct(Args& a, const char* fn, uint64_t n, std::initializer_list<const void*> ptrs) {
  for (auto p = ptrs.begin(); p != ptrs.end(); ++p)
    for (auto q = p + 1; q != ptrs.end(); ++q)
      need(a, !overlaps(*p, n * 4, *q, n * 4), Code::InvalidArgument, std::string(fn) + ": weights, gradient and state must not overlap");
}

Job parse_adamw(Args& a) {
  const uint64_t n = a.index(4, "count");
  float* w = a.elems<float>(0, "w", 0, n);
  const float* g = a.elems<float>(1, "g", 0, n);
  float* m = a.elems<float>(2, "m", 0, n);
  float* v = a.elems<float>(3, "v", 0, n);
  distinct(a, "adamwUpdate", n, {w, g, m, v});
  const double* h = a.elems<double>(5, "hyper", 0, 7);
  for (int i = 0; i < 7; ++i) need(a, std::isfinite(h[i]), Code::NonFinite, "adamwUpdate: hyper-parameters must be finite");
  need(a, h[0] >= 0, Code::InvalidArgument, "adamwUpdate: lr must be >= 0");
  need(a, h[1] >= 0 && h[1] < 1 && h[2] >= 0 && h[2] < 1, Code::InvalidArgument, "adamwUpdate: betas must be in [0, 1)");
  need(a, h[3] > 0, Code::InvalidArgument, "adamwUpdate: eps must be > 0");
  need(a, h[4] >= 0, Code::InvalidArgument, "adamwUpdate: weightDecay must be >= 0");
  need(a, h[6] >= 1 && h[6] == std::floor(h[6]), Code::InvalidArgument, "adamwUpdate: the step t must be an integer >= 1");
  const AdamWStep s = adamw_step(h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
  return {[=] { adamw_update(w, g, m, v, n, s); }, nullptr};
}

Job parse_sgd(Args& a) {
  const uint64_t n = a.index(3, "count");
  float* w = a.elems<float>(0, "w", 0, n);
  const float* g = a.elems<float>(1, "g", 0, n);
  float* buf = a.has(2) ? a.elems<float>(2, "buf", 0, n) : nullptr;
  distinct(a, "sgdUpdate", n, {w, g, buf});
  const double* h = a.elems<double>(4, "hyper", 0, 6);
  for (int i = 0; i < 6; ++i) need(a, std::isfinite(h[i]), Code::NonFinite, "sgdUpdate: hyper-parameters must be finite");
  need(a, h[0] >= 0 && h[1] >= 0 && h[2] >= 0, Code::InvalidArgument, "sgdUpdate: lr, momentum and weightDecay must be >= 0");
  need(a, !buf == !(h[1] > 0), Code::InvalidArgument, "sgdUpdate: a momentum buffer is needed exactly when momentum > 0");
  SgdStep s{(float)h[3], (float)h[0], (float)h[1], (float)h[2], h[4] != 0, h[5] != 0};
  return {[=] { sgd_update(w, g, buf, n, s); }, nullptr};
}

Job parse_sum_squares(Args& a) {
  const uint64_t n = a.index(1, "count");
  const float* g = a.elems<float>(0, "g", 0, n);
  auto out = std::make_shared<double>(0);
  return {[=] { *out = sum_squares(g, n); }, [out](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *out); }};
}

Job parse_acc_squares(Args& a) {
  const uint64_t n = a.index(2, "count");
  float* acc = a.elems<float>(0, "acc", 0, n);
  const float* g = a.elems<float>(1, "g", 0, n);
  distinct(a, "accumulateSquares", n, {acc, g});
  const double s = a.num(3, "scale");
  need(a, std::isfinite(s), Code::NonFinite, "accumulateSquares: scale must be finite");
  const float sf = (float)s;
  return {[=] { accumulate_squares(acc, g, n, sf); }, nullptr};
}

}  // namespace

void register_optim(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "adamwUpdate", parse_adamw);
  export_op(env, exports, "sgdUpdate", parse_sgd);
  export_op(env, exports, "sumSquares", parse_sum_squares);
  export_op(env, exports, "accumulateSquares", parse_acc_squares);
}

}  // namespace zt
