// llamaGrad / llamaGradF64: one training forward + backward of the LLaMA model per call
// (native/cpu/llama_grad.h), fp32 fast path and the float64 reference (exported for tests).
//
// llamaGrad(cfg: f64[15], options: f64[2] = [recompute (0/1), scale], tokens: i32[N],
//           seqOffsets: i32[B+1], positions: i32[N], keyMask: u8[N] | null, targets: i32[N],
//           weights..., grads..., candidates?: i32[K]) -> {nllSum, count}
// cfg as llamaForward (bind_llama.cc). weights: embed, (attnNorm, q, k, v, o, mlpNorm, gate, up,
// down) x layers, norm, lmHead (the embedding again when tied) — f32 for llamaGrad, f64 for
// llamaGradF64; grads: the same list of buffers of the same sizes, null where not wanted. The
// gradient of L = -scale * sum log p(target) is ADDED to each given buffer (lmHead's may be
// embed's when tied). candidates (optional, 2..256 distinct token ids): p is the softmax over those
// logits only (label-word cross-entropy); every selected target must be one of them.
#include <cmath>
#include <memory>
#include <string>

#include "../cpu/llama_grad.h"
#include "bindings.h"
#include "llama_args.h"
#include "napi_util.h"

namespace zt {
namespace {

constexpr size_t kArgWeights = 7;

[[noreturn]] void bad(Code c, const std::string& msg) { fail(c, "llamaGrad: " + msg); }

uint64_t mul(uint64_t a, uint64_t b) { return llama_size_mul(a, b, "llamaGrad"); }

// Reads the parameter list starting at argument `i` (nullable: gradient buffers).
template <class P, class T>
LlamaParams<P> params_arg(Args& a, const LlamaConfig& c, size_t i, bool nullable) {
  const size_t D = c.hidden, Q = c.heads * c.head_dim, KV = c.kv_heads * c.head_dim, I = c.inter;
  auto take = [&](const char* name, uint64_t n) -> P {
    const size_t at = i++;
    if (nullable && !a.has(at)) return nullptr;
    return a.elems<T>(at, name, 0, n);
  };
  LlamaParams<P> p;
  p.embed = take("embed", mul(c.vocab, D));
  p.layers.resize(c.layers);
  for (auto& y : p.layers) {
    y.attn_norm = take("attnNorm", D);
    y.q = take("q", mul(Q, D));
    y.k = take("k", mul(KV, D));
    y.v = take("v", mul(KV, D));
    y.o = take("o", mul(D, Q));
    y.mlp_norm = take("mlpNorm", D);
    y.gate = take("gate", mul(I, D));
    y.up = take("up", mul(I, D));
    y.down = take("down", mul(D, I));
  }
  p.norm = take("norm", D);
  p.lm_head = take("lmHead", mul(c.vocab, D));
  return p;
}

template <class T>
Job parse_grad(Args& a) {
  LlamaConfig c = llama_config_arg(a, "llamaGrad");
  const double* opt = a.elems<double>(1, "options", 0, 2);
  auto o = std::make_shared<GradOptions>();
  o->recompute = opt[0] != 0;
  o->scale = opt[1];
  if (!std::isfinite(o->scale)) bad(Code::InvalidArgument, "the loss scale must be finite");

  LlamaBatch b = llama_batch_arg(a, "llamaGrad");
  const uint64_t N = (uint64_t)b.seq_off[b.B];
  o->targets = a.copy<int32_t>(6, "targets", 0, N);
  LlamaOutputs out;
  out.targets = o->targets;
  llama_validate(c, b, nullptr, out);

  const size_t n_params = 9 * c.layers + 3, n_args = kArgWeights + 2 * n_params;
  if (a.count() != n_args && a.count() != n_args + 1)
    bad(Code::InvalidArgument, "expected " + std::to_string(n_args) + " arguments (+ optional candidates), got " + std::to_string(a.count()));
  if (a.has(n_args)) {
    const Span s = a.mem(n_args, "candidates");
    o->n_candidates = s.bytes / sizeof(int32_t);
    o->candidates = a.copy<int32_t>(n_args, "candidates", 0, o->n_candidates);
  }
  auto w = std::make_shared<LlamaParams<const T*>>(params_arg<const T*, T>(a, c, kArgWeights, false));
  auto g = std::make_shared<LlamaParams<T*>>(params_arg<T*, T>(a, c, kArgWeights + n_params, true));
  auto r = std::make_shared<GradResult>();
  return {[c, w, b, o, g, r] { *r = llama_loss_grad<T>(c, *w, b, *o, *g); },
          [r](Napi::Env env) -> Napi::Value {
            Napi::Object res = Napi::Object::New(env);
            res.Set("nllSum", r->nll_sum);
            res.Set("count", (double)r->count);
            return res;
          }};
}

}  // namespace

void register_llama_grad(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "llamaGrad", parse_grad<float>);
  export_op(env, exports, "llamaGradF64", parse_grad<double>);
}

}  // namespace zt
