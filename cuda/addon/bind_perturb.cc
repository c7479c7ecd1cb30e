// The CPU addon's perturbation ops on the GPU, same arguments and bits (native/addon/bind_perturb.cc):
// perturb(w: f32 mem, byteOffset, count, alpha, seed, stream, dist, bits, srPurpose, first) -> { kernelMs }
// perturbIndices(w, byteOffset, count, indices: u32 mem, indicesByteOffset, indicesCount, alpha, seed,
//                stream, dist, bits, srPurpose, first) -> { kernelMs }
// perturbReference(same as perturb): the plain one-thread-per-element kernel.
// perturbEmulated / perturbIndicesEmulated(same): the kernels' per-thread code run on the host.
// perturbDeviceBench(n, kind, dist, bits, iters) -> { n, bytes, copyBytes, bestMs, meanMs, copyMs }:
//   device-resident benchmark (cuda/kernels/perturb.h perturb_device_bench; kind 0 f32, 1 bf16,
//   2 int8, 3 int4).
#include <cmath>
#include <memory>
#include <vector>

#include "../../native/addon/napi_util.h"
#include "../../native/common/check_direction.h"
#include "../kernels/perturb.h"
#include "bindings.h"

namespace zt {
namespace cuda {

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

Job timed_job(std::function<float()> run) {
  auto ms = std::make_shared<float>(0.0f);
  return {[=] { *ms = run(); },
          [ms](Napi::Env env) {
            Napi::Object r = Napi::Object::New(env);
            r.Set("kernelMs", *ms);
            return r;
          }};
}

namespace {

struct PerturbArgs {
  float* w;
  uint64_t n, first;
  float alpha;
  Direction d;
};

PerturbArgs perturb_args(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  float* w = a.elems<float>(0, "w", off, n);
  float alpha = alpha_arg(a, 3, "perturb");
  Direction d = direction_arg(a, 4);
  return {w, n, a.index(9, "first"), alpha, d};
}

Job parse_perturb(Args& a) {
  PerturbArgs p = perturb_args(a);
  return timed_job([=] { return perturb_host(p.w, p.n, p.d, p.first, p.alpha, false); });
}
Job parse_perturb_reference(Args& a) {
  PerturbArgs p = perturb_args(a);
  return timed_job([=] { return perturb_host(p.w, p.n, p.d, p.first, p.alpha, true); });
}
Job parse_perturb_emulated(Args& a) {
  PerturbArgs p = perturb_args(a);
  return {[=] { perturb_emulated(p.w, p.n, p.d, p.first, p.alpha); }, nullptr};
}

struct IndicesArgs {
  PerturbArgs p;
  std::shared_ptr<std::vector<uint32_t>> idx;  // a private copy: JS may write the array during an async call
};

IndicesArgs indices_args(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  float* w = a.elems<float>(0, "w", off, n);
  if (a.has(3) && a.value(3).IsTypedArray() && a.value(3).As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw coded_error(a.env(), Code::DType, "perturbIndices: indices must be a Uint32Array or a u32 tensor");
  uint64_t ioff = a.index(4, "indicesByteOffset"), m = a.index(5, "indicesCount");
  const uint32_t* idx = a.elems<uint32_t>(3, "indices", ioff, m);
  float alpha = alpha_arg(a, 6, "perturbIndices");
  Direction d = direction_arg(a, 7);
  return {{w, n, a.index(12, "first"), alpha, d}, std::make_shared<std::vector<uint32_t>>(idx, idx + m)};
}

Job parse_perturb_indices(Args& a) {
  IndicesArgs x = indices_args(a);
  return timed_job([=] { return perturb_indices_host(x.p.w, x.p.n, x.idx->data(), x.idx->size(), x.p.d, x.p.first, x.p.alpha); });
}
Job parse_perturb_indices_emulated(Args& a) {
  IndicesArgs x = indices_args(a);
  return {[=] { perturb_indices_emulated(x.p.w, x.p.n, x.idx->data(), x.idx->size(), x.p.d, x.p.first, x.p.alpha); }, nullptr};
}

Job parse_device_bench(Args& a) {
  uint64_t n = a.index(0, "n");
  int32_t kind = a.i32(1, "kind");
  if (kind < 0 || kind > 3) throw coded_error(a.env(), Code::InvalidArgument, "perturbDeviceBench: kind must be 0 (f32), 1 (bf16), 2 (int8) or 3 (int4)");
  Direction d{0x5eedull, 1, a.i32(2, "dist"), a.i32(3, "bits"), (uint32_t)kPurposeSrProbe};
  try {
    check_direction(d);
  } catch (const Error& e) {
    throw coded_error(a.env(), e.code, e.what());
  }
  int32_t iters = a.i32(4, "iters");
  if (iters < 1) throw coded_error(a.env(), Code::InvalidArgument, "perturbDeviceBench: iters must be >= 1");
  auto r = std::make_shared<DeviceBench>();
  return {[=] { *r = perturb_device_bench(n, kind, d, iters); },
          [r](Napi::Env env) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("n", (double)r->n);
            o.Set("bytes", (double)r->bytes);
            o.Set("copyBytes", (double)r->copy_bytes);
            o.Set("bestMs", r->best_ms);
            o.Set("meanMs", r->mean_ms);
            o.Set("copyMs", r->copy_ms);
            return o;
          }};
}

}  // namespace

void register_perturb(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "perturb", parse_perturb);
  export_op(env, exports, "perturbReference", parse_perturb_reference);
  export_op(env, exports, "perturbEmulated", parse_perturb_emulated);
  export_op(env, exports, "perturbIndices", parse_perturb_indices);
  export_op(env, exports, "perturbIndicesEmulated", parse_perturb_indices_emulated);
  export_op(env, exports, "perturbDeviceBench", parse_device_bench);
}

}  // namespace cuda
}  // namespace zt
