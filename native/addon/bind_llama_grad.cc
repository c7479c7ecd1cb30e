// llamaGrad / llamaGradF64: one training forward + backward of the LLaMA model per call
// (native/cpu/llama_grad.h), fp32 fast path and the float64 reference (exported for tests).
//
// llamaGrad(cfg: f64[15], options: f64[2] = [recompute (0/1), scale], tokens: i32[N],
//           seqOffsets: i32[B+1], positions: i32[N], keyMask: u8[N] | null, targets: i32[N],
//           weights..., grads...) -> {nllSum, count}
// cfg as llamaForward (bind_llama.cc). weights: embed, (attnNorm, q, k, v, o, mlpNorm, gate, up,
// down) x layers, norm, lmHead (the embedding again when tied) — f32 for llamaGrad, f64 for
// llamaGradF64; grads: the same list of buffers of the same sizes, null where not wanted. The
// gradient of L = -scale * sum log p(target) is ADDED to each given buffer (lmHead's may be
// embed's when tied).
#include <cmath>
#include <memory>
#include <string>

#include "../cpu/llama_grad.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

constexpr size_t kArgWeights = 7;

[[noreturn]] void bad(Code c, const std::string& msg) { fail(c, "llamaGrad: " + msg); }

size_t count_arg(double v, const char* what, double max) {
  if (!(v >= 1 && v <= max && v == std::floor(v)))
    bad(Code::InvalidArgument, std::string(what) + " must be an integer in [1, " + std::to_string((uint64_t)max) + "]");
  return (size_t)v;
}

uint64_t mul(uint64_t a, uint64_t b) {
  if (a != 0 && b > ((uint64_t)1 << 60) / a) bad(Code::OutOfRange, "tensor size overflows");
  return a * b;
}

// The config vector of llamaForward (same layout and checks as bind_llama.cc's).
LlamaConfig config_arg(Args& a) {
  const double* f = a.elems<double>(0, "cfg", 0, 15);
  LlamaConfig c{};
  const double big = (double)(1u << 30);
  c.hidden = count_arg(f[0], "hidden", big);
  c.layers = count_arg(f[1], "layers", 4096);
  c.heads = count_arg(f[2], "heads", 4096);
  c.kv_heads = count_arg(f[3], "kvHeads", 4096);
  c.head_dim = count_arg(f[4], "headDim", 512);
  c.inter = count_arg(f[5], "intermediate", big);
  c.vocab = count_arg(f[6], "vocab", 2147483647.0);
  c.max_pos = count_arg(f[7], "maxPositions", 2147483647.0);
  c.eps = f[8];
  if (c.heads % c.kv_heads) bad(Code::ShapeMismatch, "heads must be a multiple of kvHeads");
  if (c.head_dim % 2) bad(Code::ShapeMismatch, "headDim must be even");
  if (!(c.eps >= 0 && std::isfinite(c.eps))) bad(Code::InvalidArgument, "eps must be a finite number >= 0");
  c.rope.theta = f[9];
  c.rope.llama3 = f[10] != 0;
  c.rope.factor = f[11];
  c.rope.low_freq_factor = f[12];
  c.rope.high_freq_factor = f[13];
  c.rope.original_max_positions = f[14];
  if (!(c.rope.theta > 1 && std::isfinite(c.rope.theta))) bad(Code::InvalidArgument, "rope theta must be a finite number > 1");
  if (c.rope.llama3 && !(c.rope.factor >= 1 && c.rope.low_freq_factor > 0 && c.rope.high_freq_factor > c.rope.low_freq_factor &&
                         c.rope.original_max_positions > 0 && std::isfinite(c.rope.factor + c.rope.high_freq_factor + c.rope.original_max_positions)))
    bad(Code::InvalidArgument, "invalid llama3 rope scaling");
  return c;
}

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
  LlamaConfig c = config_arg(a);
  const double* opt = a.elems<double>(1, "options", 0, 2);
  auto o = std::make_shared<GradOptions>();
  o->recompute = opt[0] != 0;
  o->scale = opt[1];
  if (!std::isfinite(o->scale)) bad(Code::InvalidArgument, "the loss scale must be finite");

  LlamaBatch b{};
  const uint64_t n_off = a.mem(3, "seqOffsets").bytes / 4;
  if (n_off < 2) bad(Code::InvalidArgument, "the batch is empty");
  b.B = n_off - 1;
  b.seq_off = a.elems<int32_t>(3, "seqOffsets", 0, n_off);
  if (b.seq_off[0] != 0 || b.seq_off[b.B] < 0) bad(Code::InvalidArgument, "sequence offsets must start at 0");
  const uint64_t N = (uint64_t)b.seq_off[b.B];
  b.tokens = a.elems<int32_t>(2, "tokens", 0, N);
  b.positions = a.elems<int32_t>(4, "positions", 0, N);
  b.key_mask = a.has(5) ? a.elems<uint8_t>(5, "keyMask", 0, N) : nullptr;
  o->targets = a.elems<int32_t>(6, "targets", 0, N);
  LlamaOutputs out;
  out.targets = o->targets;
  llama_validate(c, b, nullptr, out);

  const size_t n_params = 9 * c.layers + 3;
  if (a.count() != kArgWeights + 2 * n_params)
    bad(Code::InvalidArgument, "expected " + std::to_string(kArgWeights + 2 * n_params) + " arguments, got " + std::to_string(a.count()));
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
