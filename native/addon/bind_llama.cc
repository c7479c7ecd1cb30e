// llamaForward: one whole LLaMA forward pass (native/cpu/llama.h) per call.
//
// llamaForward(cfg: f64[15], ids: u32[layers*7 + 1], tokens: i32[N], seqOffsets: i32[B+1],
//              positions: i32[N], keyMask: u8[N] | null, targets: i32[N] | null,
//              logprobs: f64[N] | null, logitRows: i32[R] | null, logits: f32 mem [R*vocab] | null,
//              cacheK: f32 mem | null, cacheV: f32 mem | null, cacheMask: u8[B*cap] | null,
//              cachePast: i32[B] | null, cacheCap, next: i32[B] | null,
//              sample: f64[3] (temperature, topK, topP) | null, seed,
//              embed, (attnNorm, q, k, v, o, mlpNorm, gate, up, down) x layers, norm, lmHead)
//   -> {logprobSum, count}
// cfg = [hidden, layers, heads, kvHeads, headDim, intermediate, vocab, maxPositions, eps,
//        ropeTheta, llama3, factor, lowFreqFactor, highFreqFactor, originalMaxPositions].
// ids: the stable tensor id of every linear layer (q, k, v, o, gate, up, down per layer, then
// the LM head). Cache buffers: keys [layers][B][kvHeads][headDim][cap], values
// [layers][B][kvHeads][cap][headDim] floats.
#include <cmath>
#include <memory>
#include <string>

#include "../cpu/llama.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

constexpr size_t kArgWeights = 18;

[[noreturn]] void bad(Code c, const std::string& msg) { fail(c, "llamaForward: " + msg); }

size_t count_arg(double v, const char* what, double max) {
  if (!(v >= 1 && v <= max && v == std::floor(v))) bad(Code::InvalidArgument, std::string(what) + " must be an integer in [1, " + std::to_string((uint64_t)max) + "]");
  return (size_t)v;
}

uint64_t mul(uint64_t a, uint64_t b) {
  if (a != 0 && b > ((uint64_t)1 << 60) / a) bad(Code::OutOfRange, "tensor size overflows");
  return a * b;
}

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

Job parse_forward(Args& a) {
  LlamaConfig c = config_arg(a);
  const size_t L = c.layers, D = c.hidden, Q = c.heads * c.head_dim, KV = c.kv_heads * c.head_dim;
  const uint32_t* ids = a.elems<uint32_t>(1, "ids", 0, L * 7 + 1);

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

  auto o = std::make_shared<LlamaOutputs>();
  if (a.has(6)) {
    o->targets = a.elems<int32_t>(6, "targets", 0, N);
    o->logprobs = a.elems<double>(7, "logprobs", 0, N);
  }
  if (a.has(8)) {
    Span rows = a.mem(8, "logitRows");
    o->n_logit_rows = rows.bytes / 4;
    o->logit_rows = a.elems<int32_t>(8, "logitRows", 0, o->n_logit_rows);
    o->logits = a.elems<float>(9, "logits", 0, mul(o->n_logit_rows, c.vocab));
  }

  std::shared_ptr<KvCache> cache;
  if (a.has(10)) {
    cache = std::make_shared<KvCache>();
    cache->cap = (size_t)a.index(14, "cacheCap");
    if (cache->cap == 0 || cache->cap > c.max_pos) bad(Code::OutOfRange, "cacheCap must be in [1, maxPositions]");
    const uint64_t per = mul(mul(L, b.B), mul(c.kv_heads, mul(cache->cap, c.head_dim)));
    cache->k = a.elems<float>(10, "cacheK", 0, per);
    cache->v = a.elems<float>(11, "cacheV", 0, per);
    cache->mask = a.elems<uint8_t>(12, "cacheMask", 0, mul(b.B, cache->cap));
    cache->past = a.elems<int32_t>(13, "cachePast", 0, b.B);
    if (cache->k == cache->v) bad(Code::InvalidArgument, "cacheK and cacheV must be different buffers");
  }
  if (a.has(15)) {
    o->next = a.elems<int32_t>(15, "next", 0, b.B);
    if (a.has(16)) {
      const double* s = a.elems<double>(16, "sample", 0, 3);
      if (!(s[0] >= 0 && std::isfinite(s[0]))) bad(Code::InvalidArgument, "temperature must be a finite number >= 0");
      if (!(s[1] >= 0 && s[1] <= 2147483647.0 && s[1] == std::floor(s[1]))) bad(Code::InvalidArgument, "topK must be a non-negative integer");
      if (!(s[2] > 0 && s[2] <= 1)) bad(Code::InvalidArgument, "topP must be in (0, 1]");
      o->sample.temperature = (float)s[0];
      o->sample.top_k = (uint32_t)s[1];
      o->sample.top_p = (float)s[2];
    }
    o->seed = a.u64(17, "seed");
  }
  llama_validate(c, b, cache.get(), *o);

  auto w = std::make_shared<LlamaWeights>();
  size_t i = kArgWeights;
  auto vec = [&](const char* name, uint64_t n) { return a.elems<float>(i++, name, 0, n); };
  auto lin = [&](const char* name, size_t out, size_t in, uint32_t id) {
    Linear l{};
    l.id = id;
    l.w.f32 = true;
    l.w.n = out;
    l.w.k = in;
    l.w.w32 = a.elems<float>(i++, name, 0, mul(out, in));
    return l;
  };
  w->embed = vec("embed", mul(c.vocab, D));
  w->layers.resize(L);
  for (size_t l = 0; l < L; ++l) {
    LlamaLayer& y = w->layers[l];
    const uint32_t* id = ids + l * 7;
    y.attn_norm = vec("attnNorm", D);
    y.q = lin("q", Q, D, id[0]);
    y.k = lin("k", KV, D, id[1]);
    y.v = lin("v", KV, D, id[2]);
    y.o = lin("o", D, Q, id[3]);
    y.mlp_norm = vec("mlpNorm", D);
    y.gate = lin("gate", c.inter, D, id[4]);
    y.up = lin("up", c.inter, D, id[5]);
    y.down = lin("down", D, c.inter, id[6]);
  }
  w->norm = vec("norm", D);
  w->lm_head = lin("lmHead", c.vocab, D, ids[L * 7]);
  if (a.count() != i) bad(Code::InvalidArgument, "expected " + std::to_string(i) + " arguments, got " + std::to_string(a.count()));

  return {[c, w, b, cache, o] { llama_forward(c, *w, b, cache.get(), *o); },
          [o](Napi::Env env) -> Napi::Value {
            Napi::Object r = Napi::Object::New(env);
            r.Set("logprobSum", o->logprob_sum);
            r.Set("count", (double)o->count);
            return r;
          }};
}

}  // namespace

void register_llama(Napi::Env env, Napi::Object exports) { export_op(env, exports, "llamaForward", parse_forward); }

}  // namespace zt
