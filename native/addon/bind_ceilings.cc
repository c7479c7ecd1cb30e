// Machine ceilings for bench/ (see native/cpu/ceilings.h); each returns its checksum.
// ceilingRead(x: f32 mem, byteOffset, count) -> sum
// ceilingUpdate(x: f32 mem, byteOffset, count, delta)
// ceilingFma(tasks, iters) -> tasks * 96 * iters;  ceilingInt8(tasks, iters) -> tasks * 192 * iters
#include <cmath>
#include <memory>

#include "../cpu/ceilings.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

Job with_number(std::function<double()> f) {
  auto out = std::make_shared<double>(0);
  return {[=] { *out = f(); }, [=](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *out); }};
}

Job parse_read(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  const float* x = a.elems<float>(0, "x", off, n);
  return with_number([=] { return ceiling_read(x, n); });
}

Job parse_update(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  float* x = a.elems<float>(0, "x", off, n);
  double delta = a.num(3, "delta");
  if (!std::isfinite(delta)) throw coded_error(a.env(), Code::NonFinite, "ceilingUpdate: delta must be finite");
  return {[=] { ceiling_update(x, n, (float)delta); }, nullptr};
}

template <double (*F)(uint64_t, uint64_t), uint64_t kMaxIters>
Job parse_compute(Args& a) {
  uint64_t tasks = a.index(0, "tasks"), iters = a.index(1, "iters");
  if (tasks < 1 || tasks > 4096) throw coded_error(a.env(), Code::InvalidArgument, "tasks must be in [1, 4096]");
  if (iters > kMaxIters)
    throw coded_error(a.env(), Code::InvalidArgument, "iters must be at most " + std::to_string(kMaxIters) + " (exact checksum)");
  return with_number([=] { return F(tasks, iters); });
}

}  // namespace

void register_ceilings(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "ceilingRead", parse_read);
  export_op(env, exports, "ceilingUpdate", parse_update);
  export_op(env, exports, "ceilingFma", parse_compute<ceiling_fma, (1u << 24) - 1>);
  export_op(env, exports, "ceilingInt8", parse_compute<ceiling_int8, (1u << 29) - 1>);
  export_op(env, exports, "ceilingFma512", parse_compute<ceiling_fma512, (1u << 20) - 1>);
  export_op(env, exports, "ceilingVnni", parse_compute<ceiling_vnni, (1u << 21) - 1>);
}

}  // namespace zt
