// gemm(a, aByteOffset, m, k, w, wByteOffset, n, c, cByteOffset, bias, biasByteOffset, accumulate,
//      perturb, seed, stream, alpha, dist, bits, srPurpose, first, indices, indicesByteOffset, indicesCount)
//   C[m, n] (+)= A[m, k] · W'[n, k]ᵀ (+ bias). w is f32 memory [n, k] or a QTensor descriptor
//   (lib/qtensor.ts desc()); a, c, bias f32; indices u32 (strictly increasing n·k + col), or null.
//   perturb = false ignores the arguments after it.
#include <cmath>
#include <string>

#include "../cpu/gemm.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

uint64_t mul_checked(Args& a, uint64_t x, uint64_t y, const char* what) {
  if (x && y > ~(uint64_t)0 / x) throw coded_error(a.env(), Code::OutOfRange, std::string("gemm: ") + what + " overflows");
  return x * y;
}

// Typed arrays must have the kernel's element type (NativeBuffers and ArrayBuffers are untyped).
void expect_array(Args& a, size_t i, const char* name, napi_typedarray_type t, const char* tname) {
  if (!a.has(i) || !a.value(i).IsTypedArray()) return;
  if (a.value(i).As<Napi::TypedArray>().TypedArrayType() != t)
    throw coded_error(a.env(), Code::DType, std::string("gemm: ") + name + " must be " + tname + " data");
}

bool overlaps(const void* p, uint64_t pb, const void* q, uint64_t qb) {
  auto a = (uintptr_t)p, b = (uintptr_t)q;
  return pb && qb && a < b + qb && b < a + pb;
}

Job parse_gemm(Args& a) {
  const uint64_t m = a.index(2, "m"), k = a.index(3, "k"), n = a.index(6, "n");
  expect_array(a, 0, "a", napi_float32_array, "f32");
  expect_array(a, 7, "c", napi_float32_array, "f32");
  expect_array(a, 9, "bias", napi_float32_array, "f32");
  const float* A = a.elems<float>(0, "a", a.index(1, "aByteOffset"), mul_checked(a, m, k, "m·k"));
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
                        "gemm: weight is [" + std::to_string(g.w.q.rows) + ", " + std::to_string(g.w.q.cols) +
                            "], expected [n, k] = [" + std::to_string(n) + ", " + std::to_string(k) + "]");
    wp = g.w.q.data;
    wbytes = n * qformat_row_bytes(g.w.q.format, k);
  } else {
    expect_array(a, 4, "w", napi_float32_array, "f32");
    g.w.f32 = true;
    g.w.w32 = a.elems<float>(4, "w", a.index(5, "wByteOffset"), mul_checked(a, n, k, "n·k"));
    wp = g.w.w32;
    wbytes = n * k * 4;
  }
  g.c = a.elems<float>(7, "c", a.index(8, "cByteOffset"), mul_checked(a, m, n, "m·n"));
  g.bias = a.has(9) ? a.elems<float>(9, "bias", a.index(10, "biasByteOffset"), n) : nullptr;
  g.accumulate = a.has(11) && a.boolean(11, "accumulate");
  const uint64_t cbytes = m * n * 4;
  if (overlaps(g.c, cbytes, A, m * k * 4) || overlaps(g.c, cbytes, wp, wbytes) || overlaps(g.c, cbytes, g.bias, g.bias ? n * 4 : 0) ||
      (!g.w.f32 && (overlaps(g.c, cbytes, g.w.q.scales, g.w.q.scales ? qt_scale_count(g.w.q) * 4 : 0) ||
                    overlaps(g.c, cbytes, g.w.q.zeros, g.w.q.zeros ? qt_scale_count(g.w.q) : 0))))
    throw coded_error(a.env(), Code::InvalidArgument, "gemm: the output overlaps an input (no in-place GEMM)");
  g.p.on = a.has(12) && a.boolean(12, "perturb");
  if (g.p.on) {
    Direction& d = g.p.dir;
    d.seed = a.u64(13, "seed");
    d.stream = a.u32(14, "stream");
    double alpha = a.num(15, "alpha");
    if (!std::isfinite(alpha) || !std::isfinite((float)alpha))
      throw coded_error(a.env(), Code::NonFinite, "gemm: perturb alpha must be finite in f32");
    g.p.alpha = (float)alpha;
    d.dist = a.i32(16, "dist");
    d.bits = a.i32(17, "bits");
    d.sr_purpose = a.u32(18, "srPurpose");
    g.p.first = a.index(19, "first");
    if (a.has(20)) {
      expect_array(a, 20, "indices", napi_uint32_array, "u32");
      g.p.sparse = true;
      g.p.nidx = a.index(22, "indicesCount");
      g.p.idx = a.elems<uint32_t>(20, "indices", a.index(21, "indicesByteOffset"), g.p.nidx);
      if (overlaps(g.c, cbytes, g.p.idx, g.p.nidx * 4))
        throw coded_error(a.env(), Code::InvalidArgument, "gemm: the output overlaps the index list");
    }
    try {  // the index list is checked by gemm() itself, before anything is written
      GemmPerturb scalars = g.p;
      scalars.sparse = false;
      gemm_check_perturb(scalars, n, k);
    } catch (const Error& e) {
      throw coded_error(a.env(), e.code, std::string("gemm: ") + e.what());
    }
  }
  return {[g] { gemm(g); }, nullptr};
}

}  // namespace

void register_gemm(Napi::Env env, Napi::Object exports) { export_op(env, exports, "gemm", parse_gemm); }

}  // namespace zt
