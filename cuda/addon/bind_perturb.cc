// The CPU addon's perturbation ops on the GPU, same arguments and bits (native/addon/bind_perturb.cc):
// perturb(w: f32 mem, byteOffset, count, alpha, seed, stream, dist, bits, srPurpose, first) -> { kernelMs }
// perturbIndices(w, byteOffset, count, indices: u32 mem, indicesByteOffset, indicesCount, alpha, seed,
//                stream, dist, bits, srPurpose, first) -> { kernelMs }
// perturbReference(same as perturb): the plain one-thread-per-element kernel.
// perturbEmulated / perturbIndicesEmulated(same): the kernels' per-thread code run on the host.
// perturbDeviceBench(n, kind, dist, bits, iters) -> { n, bytes, copyBytes, bestMs, meanMs, copyMs }:
//   device-resident benchmark (cuda/kernels/perturb.h perturb_device_bench; kind 0 f32, 1 bf16,
//   2 int8, 3 int4).
#include <memory>

#include "../../native/addon/perturb_args.h"
#include "../../native/common/check_direction.h"
#include "../kernels/perturb.h"
#include "bindings.h"

namespace zt {
namespace cuda {

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

Job parse_perturb(Args& a) {
  PerturbCall p = perturb_call(a);
  return timed_job([=] { return perturb_host(p.w, p.n, p.d, p.first, p.alpha, false); });
}
Job parse_perturb_reference(Args& a) {
  PerturbCall p = perturb_call(a);
  return timed_job([=] { return perturb_host(p.w, p.n, p.d, p.first, p.alpha, true); });
}
Job parse_perturb_emulated(Args& a) {
  PerturbCall p = perturb_call(a);
  return {[=] { perturb_emulated(p.w, p.n, p.d, p.first, p.alpha); }, nullptr};
}

Job parse_perturb_indices(Args& a) {
  PerturbCall x = perturb_indices_call(a);
  return timed_job([=] { return perturb_indices_host(x.w, x.n, x.idx->data(), x.idx->size(), x.d, x.first, x.alpha); });
}
Job parse_perturb_indices_emulated(Args& a) {
  PerturbCall x = perturb_indices_call(a);
  return {[=] { perturb_indices_emulated(x.w, x.n, x.idx->data(), x.idx->size(), x.d, x.first, x.alpha); }, nullptr};
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
