// The LLaMA decoder forward pass, orchestrated in C++ so that one native call runs a whole batch
// (the event loop stays free and no per-op N-API cost is paid).
//
// A batch is a set of token sequences packed back to back (no padding is ever computed): sequence
// b owns tokens [seq_off[b], seq_off[b+1]). Each token carries its rotary position and may be
// marked as padding (key_mask 0: no query attends to it, HF attention_mask semantics). Without a
// KV cache every sequence starts at KV slot 0; with one, sequence b's new tokens fill slots
// past[b], past[b]+1, ... of its cache row, and attend to everything cached before them.
//
// Weights are views: every linear layer is one `Linear` with a stable tensor id (the Philox
// stream its perturbation direction will be drawn from), and every matrix product goes through
// linear(), the single place where quantized weight formats and perturb-on-load plug in.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "gemm.h"
#include "nn.h"

namespace zt {

struct LlamaConfig {
  size_t hidden, layers, heads, kv_heads, head_dim, inter, vocab, max_pos;
  double eps;
  RopeParams rope;
};

// y[M, out] (+)= x[M, in] . W^T with W [out, in] (nn.Linear layout), W in any storage the GEMM
// takes (fp32 now; QTensor formats through w.q). `id` is the weight's stable tensor id: the
// Philox stream of its perturbation direction (perturb-on-load inside the GEMM).
struct Linear {
  uint32_t id;
  GemmWeights w;
};

struct LlamaLayer {
  const float* attn_norm;
  Linear q, k, v, o;
  const float* mlp_norm;
  Linear gate, up, down;
};

struct LlamaWeights {
  const float* embed;  // [vocab, hidden]
  std::vector<LlamaLayer> layers;
  const float* norm;
  Linear lm_head;
};

struct LlamaBatch {
  size_t B;
  const int32_t* tokens;     // [N]
  const int32_t* seq_off;    // [B + 1]
  const int32_t* positions;  // [N] rotary positions
  const uint8_t* key_mask;   // [N] 0 = padding, or null
};

struct KvCache {
  float* k;  // keys [layers][B][kv_heads][head_dim][cap] (transposed, see AttnArgs)
  float* v;  // values [layers][B][kv_heads][cap][head_dim]
  uint8_t* mask;         // [B][cap]: 1 where a slot holds an attendable token
  const int32_t* past;   // [B]: slots already filled
  size_t cap;
};

struct LlamaOutputs {
  // Per-token log-probabilities of targets (target < 0: not selected); both null if not wanted.
  const int32_t* targets = nullptr;
  double* logprobs = nullptr;
  // Full logits of the listed token rows, [n_logit_rows][vocab].
  const int32_t* logit_rows = nullptr;
  size_t n_logit_rows = 0;
  float* logits = nullptr;
  // Next token after the last row of every non-empty sequence (greedy or sampled), or null.
  // Sequence b draws u from Philox (seed, stream b, purpose uniform) at element = the KV slot of
  // the token being generated (its index in the sequence without a cache).
  int32_t* next = nullptr;
  SampleParams sample;
  uint64_t seed = 0;
  // Results: sum of the selected log-probabilities and their count.
  double logprob_sum = 0;
  size_t count = 0;
};

// Validates every index the forward follows (token ids, positions, offsets, cache slots,
// targets, rows); throws zt::Error with a coded message. Cheap: O(tokens).
void llama_validate(const LlamaConfig& c, const LlamaBatch& b, const KvCache* cache, const LlamaOutputs& o);

// Runs the forward; activations are allocated once (category "activations") and freed at the end.
void llama_forward(const LlamaConfig& c, const LlamaWeights& w, const LlamaBatch& b, KvCache* cache, LlamaOutputs& o);

}  // namespace zt
