#include "quant_args.h"

#include "perturb_args.h"

namespace zt {

QuantizeCall quantize_call(Args& a) {
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
  return {q, x, (ScaleMode)mode, sr, seed, stream, fake};
}

DequantizeCall dequantize_call(Args& a) {
  QTensorView q = a.qtensor(0, "q");
  return {q, a.elems<float>(1, "out", a.index(2, "outOffset"), q.rows * q.cols)};
}

QuantUpdateCall quant_update_call(Args& a) {
  QTensorView q = a.qtensor(0, "q");
  float alpha = alpha_arg(a, 1, "quantUpdate");
  return {q, alpha, direction_arg(a, 2), nullptr};
}

QuantUpdateCall quant_update_indices_call(Args& a) {
  QTensorView q = a.qtensor(0, "q");
  uint64_t count = a.index(3, "count");
  const uint32_t* idx = a.elems<uint32_t>(1, "indices", a.index(2, "indicesOffset"), count);
  float alpha = alpha_arg(a, 4, "quantUpdateIndices");
  Direction d = direction_arg(a, 5);
  if (q.rows * q.cols > 0xffffffffull)
    throw coded_error(a.env(), Code::OutOfRange, "quantUpdateIndices: u32 indices address at most 2^32 elements");
  return {q, alpha, d, std::make_shared<const std::vector<uint32_t>>(idx, idx + count)};
}

}  // namespace zt
