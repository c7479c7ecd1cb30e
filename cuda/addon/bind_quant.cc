// The CPU addon's quantization ops on the GPU, same arguments and bits (native/addon/bind_quant.cc):
// quantize(x, xOffset, q, scaleMode, stochastic, seed, stream, fakeOut?, fakeOffset?) -> { kernelMs }
// dequantize(q, out, outOffset) -> { kernelMs }
// quantUpdate(q, alpha, seed, stream, dist, bits, srPurpose) -> { kernelMs }
// quantUpdateIndices(q, indices: u32 mem, indicesOffset, count, alpha, seed, stream, dist, bits, srPurpose) -> { kernelMs }
// quantUpdateReference(same as quantUpdate): the plain one-thread-per-element kernel.
// ...Emulated(same arguments) for each: the kernels' per-thread code run on the host.
// q is a QTensor descriptor of host memory (validated by Args::qtensor), copied to the GPU and back.
#include <memory>
#include <vector>

#include "../../native/addon/napi_util.h"
#include "../kernels/quant.h"
#include "bindings.h"

namespace zt {
namespace cuda {
namespace {

struct QuantizeArgs {
  QTensorView q;
  const float* x;
  ScaleMode mode;
  bool sr;
  uint64_t seed;
  uint32_t stream;
  float* fake;
};

QuantizeArgs quantize_args(Args& a) {
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

Job parse_quantize(Args& a) {
  QuantizeArgs p = quantize_args(a);
  return timed_job([=] { return quantize_host(p.q, p.x, p.mode, p.sr, p.seed, p.stream, p.fake); });
}
Job parse_quantize_emulated(Args& a) {
  QuantizeArgs p = quantize_args(a);
  return {[=] { quantize_emulated(p.q, p.x, p.mode, p.sr, p.seed, p.stream, p.fake); }, nullptr};
}

struct DequantizeArgs {
  QTensorView q;
  float* y;
};
DequantizeArgs dequantize_args(Args& a) {
  QTensorView q = a.qtensor(0, "q");
  return {q, a.elems<float>(1, "out", a.index(2, "outOffset"), q.rows * q.cols)};
}
Job parse_dequantize(Args& a) {
  DequantizeArgs p = dequantize_args(a);
  return timed_job([=] { return dequantize_host(p.q, p.y); });
}
Job parse_dequantize_emulated(Args& a) {
  DequantizeArgs p = dequantize_args(a);
  return {[=] { dequantize_emulated(p.q, p.y); }, nullptr};
}

struct UpdateArgs {
  QTensorView q;
  float alpha;
  Direction d;
};
UpdateArgs update_args(Args& a) {
  QTensorView q = a.qtensor(0, "q");
  float alpha = alpha_arg(a, 1, "quantUpdate");
  return {q, alpha, direction_arg(a, 2)};
}
Job parse_update(Args& a) {
  UpdateArgs p = update_args(a);
  return timed_job([=] { return quant_update_host(p.q, p.alpha, p.d, false); });
}
Job parse_update_reference(Args& a) {
  UpdateArgs p = update_args(a);
  return timed_job([=] { return quant_update_host(p.q, p.alpha, p.d, true); });
}
Job parse_update_emulated(Args& a) {
  UpdateArgs p = update_args(a);
  return {[=] { quant_update_emulated(p.q, p.alpha, p.d); }, nullptr};
}

struct UpdateIndicesArgs {
  UpdateArgs u;
  std::shared_ptr<std::vector<uint32_t>> idx;  // a private copy: JS may write the array during an async call
};
UpdateIndicesArgs update_indices_args(Args& a) {
  QTensorView q = a.qtensor(0, "q");
  uint64_t count = a.index(3, "count");
  const uint32_t* idx = a.elems<uint32_t>(1, "indices", a.index(2, "indicesOffset"), count);
  float alpha = alpha_arg(a, 4, "quantUpdateIndices");
  Direction d = direction_arg(a, 5);
  if (q.rows * q.cols > 0xffffffffull)
    throw coded_error(a.env(), Code::OutOfRange, "quantUpdateIndices: u32 indices address at most 2^32 elements");
  return {{q, alpha, d}, std::make_shared<std::vector<uint32_t>>(idx, idx + count)};
}
Job parse_update_indices(Args& a) {
  UpdateIndicesArgs p = update_indices_args(a);
  return timed_job([=] { return quant_update_indices_host(p.u.q, p.idx->data(), p.idx->size(), p.u.alpha, p.u.d); });
}
Job parse_update_indices_emulated(Args& a) {
  UpdateIndicesArgs p = update_indices_args(a);
  return {[=] { quant_update_indices_emulated(p.u.q, p.idx->data(), p.idx->size(), p.u.alpha, p.u.d); }, nullptr};
}

}  // namespace

void register_quant(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "quantize", parse_quantize);
  export_op(env, exports, "quantizeEmulated", parse_quantize_emulated);
  export_op(env, exports, "dequantize", parse_dequantize);
  export_op(env, exports, "dequantizeEmulated", parse_dequantize_emulated);
  export_op(env, exports, "quantUpdate", parse_update);
  export_op(env, exports, "quantUpdateReference", parse_update_reference);
  export_op(env, exports, "quantUpdateEmulated", parse_update_emulated);
  export_op(env, exports, "quantUpdateIndices", parse_update_indices);
  export_op(env, exports, "quantUpdateIndicesEmulated", parse_update_indices_emulated);
}

}  // namespace cuda
}  // namespace zt
