// First-order engine: the LLaMA training forward (keeping what the backward needs) and the
// backward of every layer, giving the mean cross-entropy over selected targets and the gradients
// of any subset of the parameters, in one native call per batch.
//
// Same batch semantics as the inference forward (llama.h): sequences packed back to back, each
// token with its rotary position and optional key mask (padding no query attends to), causal GQA
// attention inside each sequence. The loss is  L = -scale * sum_{i: target_i >= 0} log p(target_i | x_<=i)
// (scale = 1/count gives the mean; with `candidates`, p is the softmax over those logits only:
// the cross-entropy over label words that the ZO classification loss uses); the gradients of L are ADDED to the gradient buffers, so
// several calls accumulate (gradient accumulation) and a buffer may be shared (tied embeddings:
// lm_head's gradient buffer equal to embed's).
//
// One template, two element types:
//   double  the float64 reference: every product and sum in double, matrix products as plain
//           loops. Checked against central finite differences (test/grad.test.ts).
//   float   the fast path: the forward uses the inference kernels (gemm(), rmsnorm, rope,
//           attention, swiglu, softmax stats of nn.h), so its loss is the inference forward's loss;
//           the backward's matrix products are gemm() calls over transposed operands (see
//           mm_nn/mm_tn in llama_grad.cc: dX = dY.W and dW += dY^T.X, operands transposed into a
//           bounded workspace); element-wise backward kernels are scalar loops with double
//           accumulation for every reduction (RMSNorm, softmax, attention row sums).
// Determinism: every reduction runs in a fixed order over task boundaries that depend on shapes
// only (rmsnorm weight gradients: per 32-row chunk partials reduced in chunk order; attention:
// one task per (sequence, KV head) owns its dK/dV; embedding: one task per column range scans
// tokens in order); no atomics, so results are identical on any thread count.
//
// Memory: per-layer activations (category "activations") are kept for every layer, or with
// `recompute` only each layer's input is kept and the layer's forward is rerun during the
// backward (one layer's activations live at a time). Activation gradients, GEMM transposes and
// the LM-head chunk buffers are "workspace". Parameter gradients live in the caller's buffers.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "llama.h"

namespace zt {

// Every parameter of the model, in HF order; P = const T* (weights) or T* (gradients, null = not wanted).
template <class P>
struct LlamaParams {
  struct Layer {
    P attn_norm, q, k, v, o, mlp_norm, gate, up, down;
  };
  P embed;
  std::vector<Layer> layers;
  P norm, lm_head;  // lm_head may equal embed (tied)
};

struct GradOptions {
  const int32_t* targets;  // [N], -1 = no target; validated (< vocab)
  double scale;            // dL/dlogprob multiplier: -scale per selected target
  bool recompute;          // keep layer inputs only, rerun each layer's forward in the backward
  // Candidate-restricted cross-entropy (label-word classification): when given, each selected
  // row's softmax runs over these token ids only, -log p(target) = logsumexp(logits[cands]) -
  // logits[target], and every target must be one of them. Null = the full vocabulary.
  const int32_t* candidates = nullptr;
  size_t n_candidates = 0;
};

struct GradResult {
  double nll_sum = 0;  // sum of -log p(target) over the selected targets (unscaled)
  size_t count = 0;
};

// Runs the training forward and, if any gradient buffer is given, the backward. Validates the
// batch (llama_validate); shapes of the parameter views are the caller's responsibility.
template <class T>
GradResult llama_loss_grad(const LlamaConfig& c, const LlamaParams<const T*>& w, const LlamaBatch& b,
                           const GradOptions& o, const LlamaParams<T*>& g);

extern template GradResult llama_loss_grad<float>(const LlamaConfig&, const LlamaParams<const float*>&, const LlamaBatch&,
                                                  const GradOptions&, const LlamaParams<float*>&);
extern template GradResult llama_loss_grad<double>(const LlamaConfig&, const LlamaParams<const double*>&, const LlamaBatch&,
                                                   const GradOptions&, const LlamaParams<double*>&);

}  // namespace zt
