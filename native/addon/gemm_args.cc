// Parsing of the weight-only GEMM arguments shared by the CPU gemm and the CUDA gemv (gemm_args.h).
#include "gemm_args.h"

#include <cmath>
#include <string>

namespace zt {
namespace {

// Typed arrays must have the kernel's element type (NativeBuffers and ArrayBuffers are untyped).
void expect_array(Args& a, const std::string& f, size_t i, const char* name, napi_typedarray_type t, const char* tname) {
  if (!a.has(i) || !a.value(i).IsTypedArray()) return;
  if (a.value(i).As<Napi::TypedArray>().TypedArrayType() != t)
    throw coded_error(a.env(), Code::DType, f + name + " must be " + tname + " data");
}

}  // namespace

GemmArgs gemm_args(Args& a, const char* fn) {
  const std::string f = std::string(fn) + ": ";
  const uint64_t m = a.index(2, "m"), k = a.index(3, "k"), n = a.index(6, "n");
  expect_array(a, f, 0, "a", napi_float32_array, "f32");
  expect_array(a, f, 7, "c", napi_float32_array, "f32");
  expect_array(a, f, 9, "bias", napi_float32_array, "f32");
  const float* A = a.elems<float>(0, "a", a.index(1, "aByteOffset"), a.mul(m, k, "m·k"));
  GemmArgs g{};
  g.a = A;
  g.m = m;
  g.w.n = n;
  g.w.k = k;
  uint64_t wbytes;
  const void* wp;
  if (a.has(4) && a.value(4).IsObject() && !a.value(4).IsTypedArray() && !a.value(4).IsArrayBuffer() &&
      a.value(4).As<Napi::Object>().Has("format")) {
    g.w.f32 = false;
    g.w.q = a.qtensor(4, "w");
    if (g.w.q.rows != n || g.w.q.cols != k)
      throw coded_error(a.env(), Code::ShapeMismatch,
                        f + "weight is [" + std::to_string(g.w.q.rows) + ", " + std::to_string(g.w.q.cols) +
                            "], expected [n, k] = [" + std::to_string(n) + ", " + std::to_string(k) + "]");
    wp = g.w.q.data;
    wbytes = n * qformat_row_bytes(g.w.q.format, k);
  } else {
    expect_array(a, f, 4, "w", napi_float32_array, "f32");
    g.w.f32 = true;
    g.w.w32 = a.elems<float>(4, "w", a.index(5, "wByteOffset"), a.mul(n, k, "n·k"));
    wp = g.w.w32;
    wbytes = n * k * 4;
  }
  g.c = a.elems<float>(7, "c", a.index(8, "cByteOffset"), a.mul(m, n, "m·n"));
  g.bias = a.has(9) ? a.elems<float>(9, "bias", a.index(10, "biasByteOffset"), n) : nullptr;
  g.accumulate = a.has(11) && a.boolean(11, "accumulate");
  const uint64_t cbytes = m * n * 4;
  if (overlaps(g.c, cbytes, A, m * k * 4) || overlaps(g.c, cbytes, wp, wbytes) || overlaps(g.c, cbytes, g.bias, g.bias ? n * 4 : 0) ||
      (!g.w.f32 && (overlaps(g.c, cbytes, g.w.q.scales, g.w.q.scales ? qt_scale_count(g.w.q) * 4 : 0) ||
                    overlaps(g.c, cbytes, g.w.q.zeros, g.w.q.zeros ? qt_scale_count(g.w.q) : 0))))
    throw coded_error(a.env(), Code::InvalidArgument, f + "the output overlaps an input (no in-place GEMM)");
  g.p.on = a.has(12) && a.boolean(12, "perturb");
  if (g.p.on) {
    Direction& d = g.p.dir;
    d.seed = a.u64(13, "seed");
    d.stream = a.u32(14, "stream");
    double alpha = a.num(15, "alpha");
    if (!std::isfinite(alpha) || !std::isfinite((float)alpha))
      throw coded_error(a.env(), Code::NonFinite, f + "perturb alpha must be finite in f32");
    g.p.alpha = (float)alpha;
    d.dist = a.i32(16, "dist");
    d.bits = a.i32(17, "bits");
    d.sr_purpose = a.u32(18, "srPurpose");
    g.p.first = a.index(19, "first");
    if (a.has(20)) {
      expect_array(a, f, 20, "indices", napi_uint32_array, "u32");
      g.p.sparse = true;
      g.p.nidx = a.index(22, "indicesCount");
      const uint64_t ioff = a.index(21, "indicesByteOffset");
      if (overlaps(g.c, cbytes, a.elems<uint32_t>(20, "indices", ioff, g.p.nidx), g.p.nidx * 4))
        throw coded_error(a.env(), Code::InvalidArgument, f + "the output overlaps the index list");
      g.p.idx = a.copy<uint32_t>(20, "indices", ioff, g.p.nidx);  // checked in the job, then followed
    }
    try {  // the index list is checked before a kernel runs (gemm_check_perturb)
      GemmPerturb scalars = g.p;
      scalars.sparse = false;
      gemm_check_perturb(scalars, n, k);
    } catch (const Error& e) {
      throw coded_error(a.env(), e.code, f + e.what());
    }
  }
  return g;
}

}  // namespace zt
