// Arguments of the quantization ops as both addons take them (the CPU ops and their CUDA mirrors):
//   quantize(x, xOffset, q, scaleMode, stochastic, seed, stream, fakeOut?, fakeOffset?)
//   dequantize(q, out, outOffset)
//   quantUpdate(q, alpha, seed, stream, dist, bits, srPurpose)
//   quantUpdateIndices(q, indices: u32 mem, indicesOffset, count, alpha, seed, stream, dist, bits, srPurpose)
// q is a QTensor descriptor (lib/qtensor.ts desc(), validated by Args::qtensor); x/out are f32
// [rows, cols] row-major regions. Semantics and exact numerics: native/cpu/quant.h, quant_elem.h.
#pragma once
#include <memory>
#include <vector>

#include "../common/direction.h"
#include "../cpu/quant.h"  // ScaleMode, QTensorView
#include "napi_util.h"

namespace zt {

struct QuantizeCall {
  QTensorView q;
  const float* x;
  ScaleMode mode;
  bool sr;
  uint64_t seed;
  uint32_t stream;
  float* fake;  // the dequantized result too, or null
};
QuantizeCall quantize_call(Args& a);

struct DequantizeCall {
  QTensorView q;
  float* y;
};
DequantizeCall dequantize_call(Args& a);

struct QuantUpdateCall {
  QTensorView q;
  float alpha;
  Direction d;
  // quantUpdateIndices only: a private copy (JS may write the array while an async call runs).
  std::shared_ptr<const std::vector<uint32_t>> idx;
};
QuantUpdateCall quant_update_call(Args& a);
QuantUpdateCall quant_update_indices_call(Args& a);

}  // namespace zt
