// rngFill(out: f32 host mem, byteOffset, count, dist, seed, stream, purpose, first, p) -> { kernelMs }
// Same arguments and values as the CPU addon's rngFill; the numbers are generated on the GPU.
// rngFillEmulated(same arguments): the kernel's per-thread code run on the host (no GPU needed).
#include "../../native/addon/napi_util.h"
#include "../kernels/rng.h"
#include "bindings.h"

namespace zt {
namespace cuda {
namespace {

struct FillArgs {
  float* out;
  uint64_t n, first, threshold;
  RngKey key;
  Dist dist;
};

FillArgs fill_args(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  float* out = a.elems<float>(0, "out", off, n);
  int32_t d = a.i32(3, "dist");
  if (d < 0 || d > 3) throw coded_error(a.env(), Code::InvalidArgument, "rngFill: dist must be 0..3");
  RngKey key{a.u64(4, "seed"), a.u32(5, "stream"), a.u32(6, "purpose")};
  uint64_t first = a.index(7, "first");
  double p = a.num_or(8, "p", 0.5);
  if (!(p >= 0 && p <= 1)) throw coded_error(a.env(), Code::InvalidArgument, "rngFill: p must be in [0, 1]");
  return {out, n, first, bernoulli_threshold(p), key, (Dist)d};
}

Job parse_fill(Args& a) {
  FillArgs f = fill_args(a);
  auto ms = std::make_shared<float>(0.0f);
  return {[=] { *ms = rng_fill_host(f.out, f.n, f.key, f.first, f.dist, f.threshold); },
          [ms](Napi::Env env) {
            Napi::Object r = Napi::Object::New(env);
            r.Set("kernelMs", *ms);
            return r;
          }};
}

Job parse_emulate(Args& a) {
  FillArgs f = fill_args(a);
  return {[=] { rng_fill_emulated(f.out, f.n, f.key, f.first, f.dist, f.threshold); }, nullptr};
}

}  // namespace

void register_rng(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "rngFill", parse_fill);
  export_op(env, exports, "rngFillEmulated", parse_emulate);
}

}  // namespace cuda
}  // namespace zt
