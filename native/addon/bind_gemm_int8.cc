// gemmInt8(x, xByteOffset, M, w: QTensorDesc (int8 | int4), y, yByteOffset,
//          bias | null, biasByteOffset, residual | null, residualByteOffset,
//          perturb: {alpha, seed, stream, dist, bits, srPurpose, first} | null,
//          indices: u32 mem | null, indicesByteOffset, indicesCount)
//   y[M, N] = quantize_int8(x[M, K]) · (W + alpha·Z)ᵀ + bias + residual (native/cpu/gemm_int8.h).
//   residual may be y itself (accumulate); y must not overlap any other input but x.
// gemmS8S8S32(a, aByteOffset, b, bByteOffset, c, cByteOffset, M, N, K)
//   c[M, N] (int32) = a[M, K] (int8 in [-127, 127]) · b[N, K]ᵀ (int8), exact.
#include <cmath>
#include <string>

#include "../cpu/gemm_int8.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

struct Region {
  const void* p;
  uint64_t bytes;
};
bool overlaps(Region a, Region b) { return zt::overlaps(a.p, a.bytes, b.p, b.bytes); }

// The perturbation object: {alpha, seed, stream, dist, bits, srPurpose, first}.
void parse_perturb(Args& a, size_t i, Direction* d, float* alpha, uint64_t* first) {
  Napi::Value v = a.value(i);
  if (!v.IsObject()) throw coded_error(a.env(), Code::InvalidArgument, "gemmInt8: perturb must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto num = [&](const char* k, double dflt) -> double {
    Napi::Value f = o.Get(k);
    if (f.IsUndefined()) return dflt;
    if (f.IsBigInt()) {
      bool lossless;
      uint64_t u = f.As<Napi::BigInt>().Uint64Value(&lossless);
      if (!lossless) throw coded_error(a.env(), Code::InvalidArgument, std::string("gemmInt8: perturb.") + k + " must be a 64-bit unsigned integer");
      return (double)u;
    }
    if (!f.IsNumber()) throw coded_error(a.env(), Code::InvalidArgument, std::string("gemmInt8: perturb.") + k + " must be a number");
    return f.As<Napi::Number>().DoubleValue();
  };
  auto integer = [&](const char* k, double dflt, double lo, double hi) -> uint64_t {
    double x = num(k, dflt);
    if (!(x >= lo && x <= hi) || x != std::floor(x))
      throw coded_error(a.env(), Code::InvalidArgument, std::string("gemmInt8: perturb.") + k + " is out of range");
    return (uint64_t)x;
  };
  double al = num("alpha", NAN);
  if (!std::isfinite(al) || !std::isfinite((float)al))
    throw coded_error(a.env(), Code::NonFinite, "gemmInt8: perturb.alpha must be a finite number");
  *alpha = (float)al;
  Napi::Value fv = o.Get("first");
  if (fv.IsBigInt()) {
    bool lossless;
    *first = fv.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw coded_error(a.env(), Code::InvalidArgument, "gemmInt8: perturb.first must fit in 64 bits");
  } else {
    *first = integer("first", 0, 0, 9007199254740991.0);
  }
  Napi::Value seed = o.Get("seed");
  if (seed.IsBigInt()) {
    bool lossless;
    d->seed = seed.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw coded_error(a.env(), Code::InvalidArgument, "gemmInt8: perturb.seed must fit in 64 bits");
  } else {
    d->seed = integer("seed", NAN, 0, 9007199254740991.0);
  }
  d->stream = (uint32_t)integer("stream", 0, 0, 4294967295.0);
  d->dist = (int)integer("dist", kDirGauss, 0, 1);
  d->bits = (int)integer("bits", 0, 0, 8);
  d->sr_purpose = (uint32_t)integer("srPurpose", kPurposeSrProbe, 0, 7);
  if (d->bits == 1) throw coded_error(a.env(), Code::InvalidArgument, "gemmInt8: perturb.bits must be 0 or 2..8");
  if (d->bits && d->sr_purpose != kPurposeSrProbe && d->sr_purpose != kPurposeSrUpdate)
    throw coded_error(a.env(), Code::InvalidArgument, "gemmInt8: perturb.srPurpose must be the SR probe (4) or SR update (5) purpose");
}

Job parse_gemm(Args& a) {
  const uint64_t xoff = a.index(1, "xByteOffset"), M = a.index(2, "M");
  QTensorView w = a.qtensor(3, "w");
  if (w.format != QFormat::Int8 && w.format != QFormat::Int4)
    throw coded_error(a.env(), Code::DType, "gemmInt8: w must be an int8 or int4 quantized tensor");
  const uint64_t N = w.rows, K = w.cols;
  const float* x = a.elems<float>(0, "x", xoff, a.mul(M, K, "M * K"));
  const uint64_t MN = a.mul(M, N, "M * N");
  float* y = a.elems<float>(4, "y", a.index(5, "yByteOffset"), MN);
  const float* bias = a.has(6) ? a.elems<float>(6, "bias", a.index(7, "biasByteOffset"), N) : nullptr;
  const float* res = a.has(8) ? a.elems<float>(8, "residual", a.index(9, "residualByteOffset"), MN) : nullptr;
  Direction dir{};
  float alpha = 0.0f;
  uint64_t first = 0;
  const bool perturb = a.has(10);
  if (perturb) parse_perturb(a, 10, &dir, &alpha, &first);
  const uint32_t* idx = nullptr;
  uint64_t nidx = 0;
  if (a.has(11)) {
    if (!perturb) throw coded_error(a.env(), Code::InvalidArgument, "gemmInt8: indices need perturb");
    if (a.mul(N, K, "N * K") > ((uint64_t)1 << 32))
      throw coded_error(a.env(), Code::Unsupported, "gemmInt8: index subsets need N * K <= 2^32 (u32 indices)");
    nidx = a.index(13, "indicesCount");
    const uint64_t ioff = a.index(12, "indicesByteOffset");
    idx = a.elems<uint32_t>(11, "indices", ioff, nidx);  // the caller's memory, for the overlap check below
  }
  const uint64_t wbytes = w.rows * qformat_row_bytes(w.format, w.cols);
  const Region out{y, MN * 4};
  const Region ins[] = {{w.data, wbytes}, {w.scales, qt_scale_count(w) * 4}, {w.zeros, w.zeros ? qt_scale_count(w) : 0},
                        {bias, bias ? N * 4 : 0}, {idx, nidx * 4}};
  for (const Region& r : ins)
    if (overlaps(out, r)) throw coded_error(a.env(), Code::InvalidArgument, "gemmInt8: y overlaps an input other than x");
  if (res && res != y && overlaps(out, {res, MN * 4}))
    throw coded_error(a.env(), Code::InvalidArgument, "gemmInt8: residual must be y itself or not overlap it");
  if (idx) idx = a.copy<uint32_t>(11, "indices", a.index(12, "indicesByteOffset"), nidx);  // checked in the job, then followed
  return {[=] {
            // Value checks that read whole buffers run here (off the event loop for the async form).
            if (w.zeros)
              for (uint64_t i = 0; i < qt_scale_count(w); ++i)
                if (w.zeros[i] > 15) fail(Code::OutOfRange, "gemmInt8: int4 zero-points must be in [0, 15]");
            for (uint64_t i = 0; i < nidx; ++i) {
              if ((uint64_t)idx[i] >= N * K) fail(Code::OutOfRange, "gemmInt8: index " + std::to_string(idx[i]) + " is beyond the weights");
              if (i > 0 && idx[i] <= idx[i - 1]) fail(Code::InvalidArgument, "gemmInt8: indices must be strictly increasing");
            }
            Direction d = dir;
            IntGemm g{x, M, K, w, y, N, bias, res, N, perturb ? &d : nullptr, alpha, first, idx, nidx};
            gemm_int(g);
          },
          nullptr};
}

Job parse_s8s8s32(Args& a) {
  const uint64_t M = a.index(6, "M"), N = a.index(7, "N"), K = a.index(8, "K");
  const int8_t* am = a.elems<int8_t>(0, "a", a.index(1, "aByteOffset"), a.mul(M, K, "M * K"));
  const int8_t* b = a.elems<int8_t>(2, "b", a.index(3, "bByteOffset"), a.mul(N, K, "N * K"));
  int32_t* c = a.elems<int32_t>(4, "c", a.index(5, "cByteOffset"), a.mul(M, N, "M * N"));
  if (K > kRawMaxK) throw coded_error(a.env(), Code::InvalidArgument, "gemmS8S8S32: K must be at most " + std::to_string(kRawMaxK));
  const Region out{c, M * N * 4};
  if (overlaps(out, {b, N * K}) || overlaps(out, {am, M * K})) throw coded_error(a.env(), Code::InvalidArgument, "gemmS8S8S32: c overlaps a or b");
  return {[=] {
            for (uint64_t i = 0; i < M * K; ++i)
              if (am[i] == -128) fail(Code::OutOfRange, "gemmS8S8S32: a must be in [-127, 127] (-128 breaks the sign trick)");
            gemm_s8s8s32(am, b, c, M, N, K);
          },
          nullptr};
}

}  // namespace

void register_gemm_int8(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "gemmInt8", parse_gemm);
  export_op(env, exports, "gemmS8S8S32", parse_s8s8s32);
}

}  // namespace zt
