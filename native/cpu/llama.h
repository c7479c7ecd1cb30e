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

#include <functional>
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
// takes (fp32, or a QTensor format through w.q). `id` is the weight's stable tensor id: the
// Philox stream of its perturbation direction (perturb-on-load inside the GEMM). int_act: the
// W8A8 / W4A8 integer GEMM (gemm_int8.h, dynamic int8 activations; w.q is int8 or int4).
struct Linear {
  uint32_t id;
  GemmWeights w;
  bool int_act = false;
};

// A norm weight vector [hidden] (fp32) with its tensor id.
struct NormVec {
  uint32_t id;
  const float* w;
};

struct LlamaLayer {
  NormVec attn_norm;
  Linear q, k, v, o;
  NormVec mlp_norm;
  Linear gate, up, down;
};

struct LlamaWeights {
  Linear embed;  // [vocab, hidden]: gathered rows (decoded when quantized), never a GEMM
  std::vector<LlamaLayer> layers;
  NormVec norm;
  Linear lm_head;
};

// Perturb-on-load of a ZO probe: every trainable tensor t is read as W + alpha * z_t with z_t =
// direction_at(dir with stream = t, element index in the tensor). Linears through the GEMMs'
// GemmPerturb, embedding rows after the gather (perturb_range over the gathered row's indices),
// norm vectors as perturbed copies in the activation arena. No weight is written.
struct LlamaPerturb {
  Direction dir;              // stream is replaced by each tensor's id
  float alpha;
  const uint8_t* trainable;   // [n_ids], indexed by tensor id
  size_t n_ids;
  bool on(uint32_t id) const { return id < n_ids && trainable[id] != 0; }
  Direction of(uint32_t id) const {
    Direction d = dir;
    d.stream = id;
    return d;
  }
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
  // Logits of the listed token rows, [n_logit_rows][vocab], or [n_logit_rows][n_vocab_subset]
  // with a vocabulary subset: then only those LM-head rows are computed (and perturbed), in the
  // listed order, with the same bits as the same columns of the full logits (a classifier over a
  // few label words reads 2 of the vocab's rows; a probe need not perturb the other rows, which
  // cannot change these logits). A subset excludes targets and next (they need the full softmax).
  const int32_t* logit_rows = nullptr;
  size_t n_logit_rows = 0;
  float* logits = nullptr;
  const int32_t* vocab_subset = nullptr;
  size_t n_vocab_subset = 0;
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

// A validated batch's extent: N tokens, the longest sequence T, positions [pos0, pos0 + P), and
// the sorted distinct token rows that need the LM head (targets, logit rows, next-token rows).
struct LlamaBatchShape {
  size_t N = 0, T = 0, P = 0;
  int32_t pos0 = 0;
  std::vector<int32_t> head_rows;
};
LlamaBatchShape llama_batch_shape(const LlamaBatch& b, const LlamaOutputs& o);

// The rows the last layer must finish: its output is read only at the LM-head rows, so once its
// keys and values are stored its attention, projections and MLP need only each sequence's span
// from its first to its last head row (one row per sequence for last-position logits). Spans grow
// backwards until the rows take the GEMM path of the whole batch (gemm_same_bits): then every
// output keeps the bits of finishing all rows, and a single prompt finishes 5 rows, not all.
// The CPU forward and the device model (cuda/kernels/llama.cu) finish the same rows.
struct LastRows {
  bool on = false;               // false: finish every row
  std::vector<int32_t> rows;     // the span rows in order: compacted row j was row rows[j]
  std::vector<int32_t> off;      // [B + 1] the spans' offsets in the compacted rows
  std::vector<int32_t> start;    // [B] the KV slot of each span's first row
  std::vector<int32_t> rel_pos;  // the span rows' rotary positions (the CPU forward fills it)
};
// start[b]: the KV slot of sequence b's first token (a cache's fill level, else 0).
LastRows last_rows(const LlamaBatch& b, const std::vector<int32_t>& head_rows, const int32_t* start);

// Validates every index the forward follows (token ids, positions, offsets, cache slots,
// targets, rows); throws zt::Error with a coded message. Cheap: O(tokens).
void llama_validate(const LlamaConfig& c, const LlamaBatch& b, const KvCache* cache, const LlamaOutputs& o);

// Runs the forward; activations are allocated once (category "activations") and freed at the end.
// With `zo`, the trainable tensors are perturbed on load (LlamaPerturb). The last layer finishes
// only each sequence's span of LM-head rows when that keeps its GEMMs on the full batch's path
// (last_rows), so every output has the bits of finishing all rows.
void llama_forward(const LlamaConfig& c, const LlamaWeights& w, const LlamaBatch& b, KvCache* cache, LlamaOutputs& o,
                   const LlamaPerturb* zo = nullptr);

// The first layer whose output depends on a trainable tensor of zo (c.layers: only the final norm or
// the LM head; 0 with a trainable embedding, whose rows feed every layer): a probe computes the
// layers below it once for all its forwards (here and on the device, which links no llama.cc).
inline size_t first_trainable_layer(const LlamaConfig& c, const LlamaWeights& w, const LlamaPerturb& zo) {
  if (zo.on(w.embed.id)) return 0;
  for (size_t l = 0; l < c.layers; ++l) {
    const LlamaLayer& L = w.layers[l];
    for (uint32_t id : {L.attn_norm.id, L.q.id, L.k.id, L.v.id, L.o.id, L.mlp_norm.id, L.gate.id, L.up.id, L.down.id})
      if (zo.on(id)) return l;
  }
  return c.layers;
}

// ZO probes of one or more queries: for each seeds[q], the forward at theta + eps z_q into plus[q]
// and at theta - eps z_q into minus[q] (eps = zo.alpha; z_q = zo's direction with seed seeds[q] over
// zo's trainable tensors), each with the bits of llama_forward with that perturbation. The layers
// before the first trainable tensor run once for every query and sign (their output does not
// depend on z), so probes of the upper layers or the head alone cost little more than one forward
// plus the per-sign layers. On load (in_place empty) no weight is written; in place,
// in_place(seed, alpha) adds alpha z to the trainable weights: +eps, -2 eps, +eps per query (MeZO),
// undone when a forward throws.
void llama_probe(const LlamaConfig& c, const LlamaWeights& w, const LlamaBatch& b, const LlamaPerturb& zo, const std::vector<uint64_t>& seeds,
                 LlamaOutputs* plus, LlamaOutputs* minus, const std::function<void(uint64_t, float)>& in_place);

// Generation with a KV cache: the prompt batch, then one token per unfinished sequence per step,
// for at most max_new steps, each step one llama_forward (the tokens, positions and sampling draws
// of a caller running the steps one by one). past[b] (cache slots filled) and next_pos[b] (next
// rotary position) advance with the cache. on_step(step, next) receives every step's token per
// sequence (-1 for one finished earlier) and returns false to stop there; a sequence finishes
// with a token in `stop`. Returns the number of steps run. The loop stays on the calling thread:
// a decode step of a small model is shorter than a round trip to JS.
struct GenerateParams {
  size_t max_new = 0;
  std::vector<int32_t> stop;
  SampleParams sample;
  uint64_t seed = 0;
};
size_t llama_generate(const LlamaConfig& c, const LlamaWeights& w, const LlamaBatch& prompt, KvCache& cache, int32_t* past,
                      int32_t* next_pos, const GenerateParams& g, const std::function<bool(size_t, const int32_t*)>& on_step);

// llama_generate's loop over any model's forward (the device model runs it too): forward(b, o)
// validates and runs one step at the cache's fill levels `past`, with o.next set.
using DecodeForward = std::function<void(const LlamaBatch&, LlamaOutputs&)>;
size_t decode_loop(const LlamaBatch& prompt, int32_t* past, int32_t* next_pos, const GenerateParams& g, const DecodeForward& forward,
                   const std::function<bool(size_t, const int32_t*)>& on_step);

}  // namespace zt
