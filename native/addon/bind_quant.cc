// quantize(x, xOffset, q, scaleMode, stochastic, seed, stream, fakeOut?, fakeOffset?)
// dequantize(q, out, outOffset)
// quantUpdate(q, alpha, seed, stream, dist, bits, srPurpose)
// quantUpdateIndices(q, indices: u32 mem, indicesOffset, count, alpha, seed, stream, dist, bits, srPurpose)
// q is a QTensor descriptor (lib/qtensor.ts desc(), validated by Args::qtensor); x/out are f32
// [rows, cols] row-major regions. Semantics and exact numerics: native/cpu/quant.h, quant_elem.h.
#include <cmath>

#include "../cpu/quant.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

Direction direction_arg(Args& a, size_t i) {
  Direction d{};
  d.seed = a.u64(i, "seed");
  d.stream = a.u32(i + 1, "stream");
  d.dist = a.i32(i + 2, "dist");
  d.bits = a.i32(i + 3, "bits");
  d.sr_purpose = a.u32(i + 4, "srPurpose");
  if (d.dist != kDirGauss && d.dist != kDirRademacher)
    throw coded_error(a.env(), Code::InvalidArgument, "direction dist must be 0 (gaussian) or 1 (rademacher)");
  if (d.bits != 0 && (d.bits < 2 || d.bits > 8))
    throw coded_error(a.env(), Code::InvalidArgument, "direction bits must be 0 (exact) or 2..8");
  if (d.sr_purpose != kPurposeSrProbe && d.sr_purpose != kPurposeSrUpdate)
    throw coded_error(a.env(), Code::InvalidArgument, "direction srPurpose must be 4 (probe) or 5 (update)");
  return d;
}

float alpha_arg(Args& a, size_t i) {
  float alpha = (float)a.num(i, "alpha");
  if (!std::isfinite(alpha)) throw coded_error(a.env(), Code::NonFinite, "alpha must be a finite f32 number");
  return alpha;
}

Job parse_quantize(Args& a) {
  QTensorView q = a.qtensor(2, "q");
  const uint64_t n = q.rows * q.cols;
  const float* x = a.elems<float>(0, "x", a.index(1, "xOffset"), n);
  int32_t mode = a.i32(3, "scaleMode");
  if (mode < 0 || mode > 2) throw coded_error(a.env(), Code::InvalidArgument, "quantize: scaleMode must be 0 (keep), 1 (from data) or 2 (one)");
  if (mode == (int)ScaleMode::One && (q.group != 0 || q.zeros || !(qformat_is_minifloat(q.format) || q.format == QFormat::Bf16)))
    throw coded_error(a.env(), Code::InvalidArgument, "quantize: scale-free mode is for fp8/bf16/fp16 with one scale");
  bool sr = a.boolean(4, "stochastic");
  uint64_t seed = a.u64(5, "seed");
  uint32_t stream = a.u32(6, "stream");
  float* fake = a.has(7) ? a.elems<float>(7, "fakeOut", a.index(8, "fakeOffset"), n) : nullptr;
  return {[=] { quantize(q, x, (ScaleMode)mode, sr, seed, stream, fake); }, nullptr};
}

Job parse_dequantize(Args& a) {
  QTensorView q = a.qtensor(0, "q");
  float* y = a.elems<float>(1, "out", a.index(2, "outOffset"), q.rows * q.cols);
  return {[=] { dequantize(q, y); }, nullptr};
}

Job parse_update(Args& a) {
  QTensorView q = a.qtensor(0, "q");
  float alpha = alpha_arg(a, 1);
  Direction d = direction_arg(a, 2);
  return {[=] { quant_update(q, alpha, d); }, nullptr};
}

Job parse_update_indices(Args& a) {
  QTensorView q = a.qtensor(0, "q");
  uint64_t count = a.index(3, "count");
  const uint32_t* idx = a.elems<uint32_t>(1, "indices", a.index(2, "indicesOffset"), count);
  float alpha = alpha_arg(a, 4);
  Direction d = direction_arg(a, 5);
  if (q.rows * q.cols > 0xffffffffull)
    throw coded_error(a.env(), Code::OutOfRange, "quantUpdateIndices: u32 indices address at most 2^32 elements");
  return {[=] { quant_update_indices(q, idx, count, alpha, d); }, nullptr};
}

}  // namespace

void register_quant(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "quantize", parse_quantize);
  export_op(env, exports, "dequantize", parse_dequantize);
  export_op(env, exports, "quantUpdate", parse_update);
  export_op(env, exports, "quantUpdateIndices", parse_update_indices);
}

}  // namespace zt
