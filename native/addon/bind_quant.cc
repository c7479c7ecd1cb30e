// quantize, dequantize, quantUpdate, quantUpdateIndices: argument lists in quant_args.h.
#include "../cpu/quant.h"
#include "bindings.h"
#include "quant_args.h"

namespace zt {
namespace {

Job parse_quantize(Args& a) {
  QuantizeCall p = quantize_call(a);
  return {[=] { quantize(p.q, p.x, p.mode, p.sr, p.seed, p.stream, p.fake); }, nullptr};
}

Job parse_dequantize(Args& a) {
  DequantizeCall p = dequantize_call(a);
  return {[=] { dequantize(p.q, p.y); }, nullptr};
}

Job parse_update(Args& a) {
  QuantUpdateCall p = quant_update_call(a);
  return {[=] { quant_update(p.q, p.alpha, p.d); }, nullptr};
}

Job parse_update_indices(Args& a) {
  QuantUpdateCall p = quant_update_indices_call(a);
  return {[=] { quant_update_indices(p.q, p.idx->data(), p.idx->size(), p.alpha, p.d); }, nullptr};
}

}  // namespace

void register_quant(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "quantize", parse_quantize);
  export_op(env, exports, "dequantize", parse_dequantize);
  export_op(env, exports, "quantUpdate", parse_update);
  export_op(env, exports, "quantUpdateIndices", parse_update_indices);
}

}  // namespace zt
