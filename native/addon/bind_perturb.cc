// perturb(w: f32 mem, byteOffset, count, alpha, seed, stream, dist, bits, srPurpose, first)
// perturbIndices(w: f32 mem, byteOffset, count, indices: u32 mem, indicesByteOffset, indicesCount,
//                alpha, seed, stream, dist, bits, srPurpose, first)
// dist: 0 Gaussian, 1 Rademacher; bits: 0 or 2..8 (QuZO); srPurpose: 4 (probe) or 5 (update).
#include <cmath>
#include <memory>
#include <vector>

#include "../cpu/perturb.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

float alpha_arg(Args& a, size_t i, const char* fn) {
  double v = a.num(i, "alpha");
  float f = (float)v;
  if (!std::isfinite(v) || !std::isfinite(f))
    throw coded_error(a.env(), Code::NonFinite, std::string(fn) + ": alpha must be a finite fp32 value, got " + std::to_string(v));
  return f;
}

// Arguments from `i` on: seed, stream, dist, bits, srPurpose, first.
Direction direction_arg(Args& a, size_t i, uint64_t* first) {
  Direction d{a.u64(i, "seed"), a.u32(i + 1, "stream"), a.i32(i + 2, "dist"), a.i32(i + 3, "bits"), a.u32(i + 4, "srPurpose")};
  *first = a.index(i + 5, "first");
  try {
    check_direction(d);
  } catch (const Error& e) {
    throw coded_error(a.env(), e.code, e.what());
  }
  return d;
}

Job parse_perturb(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  float* w = a.elems<float>(0, "w", off, n);
  float alpha = alpha_arg(a, 3, "perturb");
  uint64_t first;
  Direction d = direction_arg(a, 4, &first);
  return {[=] { perturb_dense(w, n, d, first, alpha); }, nullptr};
}

Job parse_perturb_indices(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  float* w = a.elems<float>(0, "w", off, n);
  if (a.has(3) && a.value(3).IsTypedArray() && a.value(3).As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw coded_error(a.env(), Code::DType, "perturbIndices: indices must be a Uint32Array or a u32 tensor");
  uint64_t ioff = a.index(4, "indicesByteOffset"), m = a.index(5, "indicesCount");
  const uint32_t* idx = a.elems<uint32_t>(3, "indices", ioff, m);
  float alpha = alpha_arg(a, 6, "perturbIndices");
  uint64_t first;
  Direction d = direction_arg(a, 7, &first);
  return {[=] {
            // A private copy: JS may write the index array while an async call runs, and it may even
            // alias w; validation and scatter must see the same indices.
            std::vector<uint32_t> copy(idx, idx + m);
            perturb_indices(w, n, copy.data(), m, d, first, alpha);
          },
          nullptr};
}

}  // namespace

void register_perturb(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "perturb", parse_perturb);
  export_op(env, exports, "perturbIndices", parse_perturb_indices);
}

}  // namespace zt
