// Arguments shared by the LLaMA bindings (bind_llama.cc, bind_llama_grad.cc, and the CUDA addon's
// cuda/addon/bind_llama.cc): the config vector, the packed batch, the weight list and the ZO
// direction, parsed and checked in one place. `op` prefixes every error message.
//
// cfg (argument 0) = [hidden, layers, heads, kvHeads, headDim, intermediate, vocab, maxPositions,
//   eps, ropeTheta, llama3, factor, lowFreqFactor, highFreqFactor, originalMaxPositions].
// Batch (arguments first..first+3, first = 2 by default) = tokens: i32[N], seqOffsets: i32[B+1],
// positions: i32[N], keyMask: u8[N] | null.
// Weights (bind_llama.cc's header): embed, (attnNorm, q, k, v, o, mlpNorm, gate, up, down) x
// layers, norm, lmHead; each f32 memory or a quantized tensor descriptor with optional intAct.
#pragma once
#include <stdint.h>

#include <memory>
#include <vector>

#include "../cpu/llama.h"
#include "napi_util.h"

namespace zt {

// a * b for tensor sizes; ZOTUNE_OUT_OF_RANGE past 2^60.
uint64_t llama_size_mul(uint64_t a, uint64_t b, const char* op);
LlamaConfig llama_config_arg(Args& a, const char* op);
LlamaBatch llama_batch_arg(Args& a, const char* op, size_t first = 2);

// One weight argument: f32 memory, or a quantized tensor descriptor (optionally intAct).
struct LlamaWeightArg {
  GemmWeights g{};
  bool int_act = false;
  float* f32 = nullptr;  // writable fp32 data (in-place probes, updates)
};
// The scale checks of the engine that runs the weights (the CPU's check_scales, or the CUDA
// addon's host copy of it, which needs no CPU thread pool).
using ScaleCheck = void (*)(const QTensorView&);
LlamaWeightArg llama_weight_arg(Args& a, size_t i, const char* name, uint64_t out, uint64_t in, const char* op,
                                ScaleCheck check_scales);
// The weights from argument `first` on; `ids` gives each argument's tensor id; `all` (if given)
// receives every argument in order. Exactly the weights must follow (argument count checked).
std::shared_ptr<LlamaWeights> llama_weights_arg(Args& a, const LlamaConfig& c, const uint32_t* ids, size_t first,
                                                const char* op, ScaleCheck check_scales,
                                                std::vector<LlamaWeightArg>* all = nullptr);
// Direction from (seed, dist, bits) at i .. i + 2, stream 0 (each tensor sets its own).
Direction llama_direction_arg(Args& a, size_t i, uint32_t purpose, const char* op);
// The same with the seed given (read by the caller) and dist, bits at i, i + 1.
Direction llama_direction_of(Args& a, uint64_t seed, size_t i, uint32_t purpose, const char* op);
// The seeds of a probe call at argument i: one seed (number or bigint; *many = false) or a
// BigUint64Array of Q >= 1 (one query each; the outputs hold Q blocks, the result is an array).
std::vector<uint64_t> llama_probe_seeds(Args& a, size_t i, bool* many, const char* op);
// Results: {logprobSum, count} of one forward's outputs, and {plus, minus} of query q of a probe's
// (plus[q] = outs[q], minus[q] = outs[Q + q], Q = outs.size() / 2).
Napi::Object llama_sums(Napi::Env env, const LlamaOutputs& o);
Napi::Object llama_probe_sums(Napi::Env env, const std::vector<LlamaOutputs>& outs, size_t q);
float llama_finite_f32(Args& a, size_t i, const char* name, const char* op);
// Sampling from argument i: f64[3] (temperature, topK, topP) or null (greedy).
SampleParams llama_sample_arg(Args& a, size_t i, const char* op);
// Next-token outputs from argument i: next: i32[B] | null, sample (llama_sample_arg), seed.
void llama_next_arg(Args& a, size_t i, const LlamaBatch& b, LlamaOutputs& o, const char* op);

}  // namespace zt
