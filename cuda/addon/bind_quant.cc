// The CPU addon's quantization ops on the GPU, same arguments and bits (native/addon/bind_quant.cc):
// quantize(x, xOffset, q, scaleMode, stochastic, seed, stream, fakeOut?, fakeOffset?) -> { kernelMs }
// dequantize(q, out, outOffset) -> { kernelMs }
// quantUpdate(q, alpha, seed, stream, dist, bits, srPurpose) -> { kernelMs }
// quantUpdateIndices(q, indices: u32 mem, indicesOffset, count, alpha, seed, stream, dist, bits, srPurpose) -> { kernelMs }
// quantUpdateReference(same as quantUpdate): the plain one-thread-per-element kernel.
// ...Emulated(same arguments) for each: the kernels' per-thread code run on the host.
// q is a QTensor descriptor of host memory (validated by Args::qtensor), copied to the GPU and back.
#include "../../native/addon/quant_args.h"
#include "../kernels/quant.h"
#include "bindings.h"

namespace zt {
namespace cuda {
namespace {

Job parse_quantize(Args& a) {
  QuantizeCall p = quantize_call(a);
  return timed_job([=] { return quantize_host(p.q, p.x, p.mode, p.sr, p.seed, p.stream, p.fake); });
}
Job parse_quantize_emulated(Args& a) {
  QuantizeCall p = quantize_call(a);
  return {[=] { quantize_emulated(p.q, p.x, p.mode, p.sr, p.seed, p.stream, p.fake); }, nullptr};
}

Job parse_dequantize(Args& a) {
  DequantizeCall p = dequantize_call(a);
  return timed_job([=] { return dequantize_host(p.q, p.y); });
}
Job parse_dequantize_emulated(Args& a) {
  DequantizeCall p = dequantize_call(a);
  return {[=] { dequantize_emulated(p.q, p.y); }, nullptr};
}

Job parse_update(Args& a) {
  QuantUpdateCall p = quant_update_call(a);
  return timed_job([=] { return quant_update_host(p.q, p.alpha, p.d, false); });
}
Job parse_update_reference(Args& a) {
  QuantUpdateCall p = quant_update_call(a);
  return timed_job([=] { return quant_update_host(p.q, p.alpha, p.d, true); });
}
Job parse_update_emulated(Args& a) {
  QuantUpdateCall p = quant_update_call(a);
  return {[=] { quant_update_emulated(p.q, p.alpha, p.d); }, nullptr};
}

Job parse_update_indices(Args& a) {
  QuantUpdateCall p = quant_update_indices_call(a);
  return timed_job([=] { return quant_update_indices_host(p.q, p.idx->data(), p.idx->size(), p.alpha, p.d); });
}
Job parse_update_indices_emulated(Args& a) {
  QuantUpdateCall p = quant_update_indices_call(a);
  return {[=] { quant_update_indices_emulated(p.q, p.idx->data(), p.idx->size(), p.alpha, p.d); }, nullptr};
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
