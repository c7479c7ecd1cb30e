// Weight-streaming GEMV on the GPU (cuda/kernels/gemv.h). The first four take the CPU gemm's
// positional arguments unchanged (native/addon/gemm_args.h), so one argument list runs on both:
//   gemv(...)                  fast kernel (M <= 16; reference above) -> { kernelMs }
//   gemvStaged(...)            the fast kernel with activations staged in shared memory (M <= 4; the
//                              fast kernel above): the same bits as gemv -> { kernelMs }
//   gemvReference(...)         one thread per output, the CPU GEMM order -> { kernelMs }
//   gemvEmulated(...)          the fast kernel's per-thread code run on the host (no GPU needed)
//   gemvStagedEmulated(...)    the staged kernel's blocks run on the host (its tile included)
//   gemvReferenceEmulated(...) the reference kernel's, likewise
//   gemvDirectionsEmulated(out, byteOffset, count, seed, stream, dist, bits, srPurpose, first)
//                              z(first + j) as the fast kernel generates it (host)
//   gemvBench(format, m, n, k, group, perturbed, iters[, kernel]) -> { bestMs, medianMs, weightBytes, splits }
//                              device-resident timing; format 'f32' or a QFormat name ('int8', 'int4',
//                              'nf4', 'fp8-e4m3', 'fp8-e5m2', 'bf16', 'fp16'); kernel 'fast' (default) or 'staged'
//   hbmReadBench(bytes, iters) -> { readBestMs, readMedianMs, copyBestMs, copyMedianMs, bytes }
#include <string>

#include "../../native/addon/gemm_args.h"
#include "../kernels/gemv.h"
#include "bindings.h"

namespace zt {
namespace cuda {
namespace {

Napi::Object timing(Napi::Env env, float ms) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("kernelMs", ms);
  return r;
}

template <GemvKernel K>
Job parse_gemv(Args& a) {
  const GemmArgs g = gemm_args(a, K == GemvKernel::Fast ? "gemv" : K == GemvKernel::Staged ? "gemvStaged" : "gemvReference");
  auto ms = std::make_shared<float>(0.0f);
  return {[=] { *ms = gemv_host(g, K); }, [ms](Napi::Env env) { return timing(env, *ms); }};
}

template <GemvKernel K>
Job parse_emulated(Args& a) {
  const GemmArgs g = gemm_args(a, K == GemvKernel::Fast ? "gemvEmulated" : K == GemvKernel::Staged ? "gemvStagedEmulated" : "gemvReferenceEmulated");
  return {[=] { gemv_emulated(g, K); }, nullptr};
}

Job parse_directions(Args& a) {
  const uint64_t n = a.index(2, "count");
  float* out = a.elems<float>(0, "out", a.index(1, "byteOffset"), n);
  Direction d{a.u64(3, "seed"), a.u32(4, "stream"), a.i32(5, "dist"), a.i32(6, "bits"), a.u32(7, "srPurpose")};
  const uint64_t first = a.index(8, "first");
  return {[=] { gemv_directions_emulated(out, n, d, first); }, nullptr};
}

Job parse_bench(Args& a) {
  const std::string f = a.str(0, "format");
  static const char* names[] = {"int8", "int4", "nf4", "fp8-e4m3", "fp8-e5m2", "bf16", "fp16"};
  bool f32 = f == "f32";
  int fmt = -1;
  for (int i = 0; i < 7; ++i)
    if (f == names[i]) fmt = i;
  if (!f32 && fmt < 0) throw coded_error(a.env(), Code::InvalidArgument, "gemvBench: unknown format '" + f + "'");
  const QFormat q = f32 ? QFormat::Int8 : (QFormat)fmt;
  const uint64_t m = a.index(1, "m"), n = a.index(2, "n"), k = a.index(3, "k"), group = a.index(4, "group");
  if (m < 1 || m > kGemvMaxM || n < 1 || k < 1 || n > ((uint64_t)1 << 24) || k > ((uint64_t)1 << 24))
    throw coded_error(a.env(), Code::OutOfRange, "gemvBench: need 1 <= m <= 16 and 1 <= n, k <= 2^24");
  const bool scaled = !f32 && qformat_has_scales(q);
  if (scaled ? !(group == 0 || group == k || group == 32 || group == 64 || group == 128) : group != 0)
    throw coded_error(a.env(), Code::InvalidArgument,
                      "gemvBench: group must be 0, k, 32, 64 or 128 for scaled formats and 0 otherwise");
  const bool perturb = a.boolean(5, "perturbed");
  const int32_t iters = a.i32(6, "iters");
  if (iters < 1 || iters > 10000) throw coded_error(a.env(), Code::OutOfRange, "gemvBench: iters must be 1..10000");
  const std::string kname = a.has(7) ? a.str(7, "kernel") : "fast";
  if (kname != "fast" && kname != "staged")
    throw coded_error(a.env(), Code::InvalidArgument, "gemvBench: kernel must be 'fast' or 'staged', got '" + kname + "'");
  const GemvKernel kind = kname == "staged" ? GemvKernel::Staged : GemvKernel::Fast;
  auto r = std::make_shared<GemvTiming>();
  return {[=] { *r = gemv_bench(f32, q, m, n, k, group, perturb, iters, kind); },
          [r](Napi::Env env) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("bestMs", r->best_ms);
            o.Set("medianMs", r->median_ms);
            o.Set("weightBytes", (double)r->weight_bytes);
            o.Set("splits", r->splits);
            return o;
          }};
}

Job parse_read(Args& a) {
  const uint64_t bytes = a.index(0, "bytes");
  const int32_t iters = a.i32(1, "iters");
  if (bytes < 4096 || bytes > ((uint64_t)1 << 36)) throw coded_error(a.env(), Code::OutOfRange, "hbmReadBench: bytes must be 4 KiB..64 GiB");
  if (iters < 1 || iters > 1000) throw coded_error(a.env(), Code::OutOfRange, "hbmReadBench: iters must be 1..1000");
  auto r = std::make_shared<ReadTiming>();
  return {[=] { *r = hbm_read_bench(bytes, iters); },
          [r, bytes](Napi::Env env) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("readBestMs", r->read_best_ms);
            o.Set("readMedianMs", r->read_median_ms);
            o.Set("copyBestMs", r->copy_best_ms);
            o.Set("copyMedianMs", r->copy_median_ms);
            o.Set("bytes", (double)(bytes / 32 * 32));
            return o;
          }};
}

}  // namespace

void register_gemv(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "gemv", parse_gemv<GemvKernel::Fast>);
  export_op(env, exports, "gemvStaged", parse_gemv<GemvKernel::Staged>);
  export_op(env, exports, "gemvReference", parse_gemv<GemvKernel::Reference>);
  export_op(env, exports, "gemvEmulated", parse_emulated<GemvKernel::Fast>);
  export_op(env, exports, "gemvStagedEmulated", parse_emulated<GemvKernel::Staged>);
  export_op(env, exports, "gemvReferenceEmulated", parse_emulated<GemvKernel::Reference>);
  export_op(env, exports, "gemvDirectionsEmulated", parse_directions);
  export_op(env, exports, "gemvBench", parse_bench);
  export_op(env, exports, "hbmReadBench", parse_read);
}

}  // namespace cuda
}  // namespace zt
