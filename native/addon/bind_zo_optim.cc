// zoOptimStep(kind, w: f32 mem, wByteOffset, count, m: f32 mem, mByteOffset, v: f32 mem | null,
//             vByteOffset, first, stream, dist, bits, seeds: Uint32Array [lo, hi] per query,
//             coefs: Float32Array per query, lr, decay, beta1, beta2, adamEps, bias1, bias2)
// kind: 0 ZO-SGD momentum, 1 ZO-Adam; directions use the update rounding stream (srUpdate).
#include <cmath>
#include <vector>

#include "../cpu/zo_optim.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

float f32_arg(Args& a, size_t i, const char* name) {
  double d = a.num(i, name);
  float f = (float)d;
  if (!std::isfinite(d) || !std::isfinite(f)) throw coded_error(a.env(), Code::NonFinite, std::string("zoOptimStep: ") + name + " must be a finite fp32 value");
  return f;
}

Job parse_zo_optim(Args& a) {
  const int kind = a.i32(0, "kind");
  const uint64_t woff = a.index(2, "wByteOffset"), n = a.index(3, "count");
  float* w = a.elems<float>(1, "w", woff, n);
  float* m = a.elems<float>(4, "m", a.index(5, "mByteOffset"), n);
  float* v = a.has(6) ? a.elems<float>(6, "v", a.index(7, "vByteOffset"), n) : nullptr;
  const uint64_t first = a.index(8, "first");
  const uint32_t stream = a.u32(9, "stream");
  const int dist = a.i32(10, "dist"), bits = a.i32(11, "bits");
  if (!a.has(12) || !a.value(12).IsTypedArray() || a.value(12).As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw coded_error(a.env(), Code::DType, "zoOptimStep: seeds must be a Uint32Array of [lo, hi] pairs");
  if (!a.has(13) || !a.value(13).IsTypedArray() || a.value(13).As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw coded_error(a.env(), Code::DType, "zoOptimStep: coefs must be a Float32Array");
  const size_t q = a.value(13).As<Napi::TypedArray>().ElementLength();
  if (a.value(12).As<Napi::TypedArray>().ElementLength() != 2 * q)
    throw coded_error(a.env(), Code::ShapeMismatch, "zoOptimStep: seeds needs two words per coefficient");
  check_zo_queries(q);  // before sizing anything by it (std::bad_alloc) or casting it to int
  const uint32_t* seeds = a.elems<uint32_t>(12, "seeds", 0, 2 * q);
  const float* coefs = a.elems<float>(13, "coefs", 0, q);
  std::vector<Direction> dirs(q);
  for (size_t k = 0; k < q; ++k)
    dirs[k] = Direction{(uint64_t)seeds[2 * k] | ((uint64_t)seeds[2 * k + 1] << 32), stream, dist, bits, (uint32_t)kPurposeSrUpdate};
  std::vector<float> c(coefs, coefs + q);
  ZoOptimStep s{kind, nullptr, nullptr, (int)q, f32_arg(a, 14, "lr"), f32_arg(a, 15, "decay"), f32_arg(a, 16, "beta1"),
                f32_arg(a, 17, "beta2"), f32_arg(a, 18, "adamEps"), f32_arg(a, 19, "bias1"), f32_arg(a, 20, "bias2")};
  s.dirs = dirs.data();
  s.coefs = c.data();
  try {
    check_zo_optim(s);
    if (kind == kZoAdam && !v) throw Error(Code::InvalidArgument, "zoOptimStep: adam needs a second-moment buffer v");
  } catch (const Error& e) {
    throw coded_error(a.env(), e.code, e.what());
  }
  return {[=]() mutable {
            ZoOptimStep st = s;
            st.dirs = dirs.data();
            st.coefs = c.data();
            zo_optim_step(w, m, v, n, first, st);
          },
          nullptr};
}

}  // namespace

void register_zo_optim(Napi::Env env, Napi::Object exports) { export_op(env, exports, "zoOptimStep", parse_zo_optim); }

}  // namespace zt
