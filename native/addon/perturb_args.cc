#include "perturb_args.h"

#include <cmath>
#include <string>

#include "../common/check_direction.h"

namespace zt {

Direction direction_arg(Args& a, size_t i) {
  Direction d{a.u64(i, "seed"), a.u32(i + 1, "stream"), a.i32(i + 2, "dist"), a.i32(i + 3, "bits"), a.u32(i + 4, "srPurpose")};
  try {
    check_direction(d);
  } catch (const Error& e) {
    throw coded_error(a.env(), e.code, e.what());
  }
  return d;
}

float alpha_arg(Args& a, size_t i, const char* fn) {
  double v = a.num(i, "alpha");
  float f = (float)v;
  if (!std::isfinite(v) || !std::isfinite(f))
    throw coded_error(a.env(), Code::NonFinite, std::string(fn) + ": alpha must be a finite fp32 value, got " + std::to_string(v));
  return f;
}

PerturbCall perturb_call(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  float* w = a.elems<float>(0, "w", off, n);
  float alpha = alpha_arg(a, 3, "perturb");
  Direction d = direction_arg(a, 4);
  return {w, n, a.index(9, "first"), alpha, d, nullptr};
}

PerturbCall perturb_indices_call(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  float* w = a.elems<float>(0, "w", off, n);
  if (a.has(3) && a.value(3).IsTypedArray() && a.value(3).As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw coded_error(a.env(), Code::DType, "perturbIndices: indices must be a Uint32Array or a u32 tensor");
  uint64_t ioff = a.index(4, "indicesByteOffset"), m = a.index(5, "indicesCount");
  const uint32_t* idx = a.elems<uint32_t>(3, "indices", ioff, m);
  float alpha = alpha_arg(a, 6, "perturbIndices");
  Direction d = direction_arg(a, 7);
  return {w, n, a.index(12, "first"), alpha, d, std::make_shared<const std::vector<uint32_t>>(idx, idx + m)};
}

}  // namespace zt
