// llamaForward: one whole LLaMA forward pass (native/cpu/llama.h) per call; llamaZoProbe: the
// two forwards of a ZO probe (+eps, -eps) of one or more queries in one call; zoUpdate: the ZO update of a tensor list.
//
// llamaForward(cfg: f64[15], ids: u32[layers*9 + 3], tokens: i32[N], seqOffsets: i32[B+1],
//              positions: i32[N], keyMask: u8[N] | null, targets: i32[N] | null,
//              logprobs: f64[N] | null, logitRows: i32[R] | null, logits: f32 mem [R*vocab] | null,
//              vocabSubset: i32[S] | null (logits then [R*S], llama.h LlamaOutputs), cacheK: f32 mem | null, cacheV: f32 mem | null, cacheMask: u8[B*cap] | null,
//              cachePast: i32[B] | null, cacheCap, next: i32[B] | null,
//              sample: f64[3] (temperature, topK, topP) | null, seed,
//              embed, (attnNorm, q, k, v, o, mlpNorm, gate, up, down) x layers, norm, lmHead)
//   -> {logprobSum, count}
// llamaZoProbe(cfg, ids, tokens, seqOffsets, positions, keyMask, targets,
//              logprobsPlus: f64[N] | null, logprobsMinus: f64[N] | null, logitRows, logitsPlus, logitsMinus,
//              vocabSubset, seed, dist, bits, eps, mode (0 on-load, 1 in-place), trainable: u8[n_ids], ...weights)
//   -> {plus: {logprobSum, count}, minus: {logprobSum, count}}
//   seed may be a BigUint64Array of Q seeds (Q queries in one call, llama.h llama_probe): every
//   output buffer then holds Q blocks (query q's at q * N, q * R * V) and the result is an array
//   of Q {plus, minus}.
// llamaGenerate(cfg, ids, tokens, seqOffsets, positions, keyMask (the prompt batch), cacheK, cacheV,
//              cacheMask, cacheLength: i32[B] (in/out), cacheNextPosition: i32[B] (in/out), cacheCap,
//              sample | null, seed, maxNew, stopTokens: i32[] | null,
//              onStep: (tokens: i32[k*B], firstStep) => boolean | null, ...weights) -> steps run
//   the decode loop of llama_generate (llama.h) in one call; the tokens of steps firstStep ..
//   firstStep + k - 1 (B per step, -1: finished earlier) reach onStep on the event loop while later
//   steps run (k > 1 when steps come faster than every 2 ms); onStep returning false stops the loop
//   after the steps in flight.
// zoUpdate(seed, dist, bits, scale, decay, ids: u32[n], decayFlags: u8[n], counts: f64[n], ...tensors)
//   every tensor j: fp32 w <- fma(-scale, z, w * (1 - decay * decayFlags[j])) (perturb kernels);
//   quantized: quant_update(q, -scale, z) (SR onto its grid); with decay, dequantize to an fp32
//   copy, the fp32 update, then SR back onto the same grid (quantize, Keep scales).
// cfg = [hidden, layers, heads, kvHeads, headDim, intermediate, vocab, maxPositions, eps,
//        ropeTheta, llama3, factor, lowFreqFactor, highFreqFactor, originalMaxPositions].
// ids: the stable tensor id of every weight argument, in argument order (a tied LM head repeats
// the embedding's id). A weight argument is an f32 memory (fp32), or a quantized tensor descriptor
// (lib/qtensor.ts) with an optional `intAct: true` for the W8A8 / W4A8 integer GEMM. Norms are
// fp32 only. Probe directions: z of tensor t = direction_at({seed, t, dist, bits, srProbe}, i);
// updates use srUpdate (independent QuZO roundings). Cache buffers: keys
// [layers][B][kvHeads][headDim][cap], values [layers][B][kvHeads][cap][headDim] floats.
#include <cmath>
#include <memory>
#include <string>

#include "../cpu/llama.h"
#include "../cpu/memory.h"
#include "../cpu/perturb.h"
#include "../cpu/quant.h"
#include "bindings.h"
#include "llama_args.h"
#include "napi_util.h"
#include "step_stream.h"

namespace zt {
namespace {

constexpr size_t kArgWeights = 19, kArgWeightsGenerate = 17;

[[noreturn]] void bad(Code c, const std::string& msg) { fail(c, "llamaForward: " + msg); }

uint64_t mul(uint64_t a, uint64_t b) { return llama_size_mul(a, b, "llamaForward"); }
LlamaConfig config_arg(Args& a) { return llama_config_arg(a, "llamaForward"); }

using WeightArg = LlamaWeightArg;

WeightArg weight_arg(Args& a, size_t i, const char* name, uint64_t out, uint64_t in) {
  return llama_weight_arg(a, i, name, out, in, "llamaForward", check_scales);
}
std::shared_ptr<LlamaWeights> parse_weights(Args& a, const LlamaConfig& c, const uint32_t* ids, size_t first,
                                            std::vector<WeightArg>* all = nullptr) {
  return llama_weights_arg(a, c, ids, first, "llamaForward", check_scales, all);
}
LlamaBatch batch_arg(Args& a) { return llama_batch_arg(a, "llamaForward"); }
Direction direction_arg(Args& a, size_t i, uint32_t purpose) { return llama_direction_arg(a, i, purpose, "llamaForward"); }
float finite_f32(Args& a, size_t i, const char* name) { return llama_finite_f32(a, i, name, "llamaForward"); }

// The cache buffers at k, k + 1 (values), k + 2 (mask) with its capacity at cap (past set by the
// caller); errors name op.
std::shared_ptr<KvCache> kv_cache_arg(Args& a, const LlamaConfig& c, size_t B, size_t k, size_t cap, const char* op) {
  auto cache = std::make_shared<KvCache>();
  auto fail_op = [&](Code code, const char* msg) { fail(code, std::string(op) + ": " + msg); };
  auto m = [&](uint64_t x, uint64_t y) { return llama_size_mul(x, y, op); };
  cache->cap = (size_t)a.index(cap, "cacheCap");
  if (cache->cap == 0 || cache->cap > c.max_pos) fail_op(Code::OutOfRange, "cacheCap must be in [1, maxPositions]");
  const uint64_t per = m(m(c.layers, B), m(c.kv_heads, m(cache->cap, c.head_dim)));
  cache->k = a.elems<float>(k, "cacheK", 0, per);
  cache->v = a.elems<float>(k + 1, "cacheV", 0, per);
  cache->mask = a.elems<uint8_t>(k + 2, "cacheMask", 0, m(B, cache->cap));
  if (cache->k == cache->v) fail_op(Code::InvalidArgument, "cacheK and cacheV must be different buffers");
  return cache;
}

Job parse_forward(Args& a) {
  LlamaConfig c = config_arg(a);
  const size_t L = c.layers;
  const uint32_t* ids = a.copy<uint32_t>(1, "ids", 0, L * 9 + 3);

  LlamaBatch b = batch_arg(a);
  const uint64_t N = (uint64_t)b.seq_off[b.B];

  auto o = std::make_shared<LlamaOutputs>();
  if (a.has(6)) {
    o->targets = a.copy<int32_t>(6, "targets", 0, N);
    o->logprobs = a.elems<double>(7, "logprobs", 0, N);
  }
  if (a.has(8)) {
    Span rows = a.mem(8, "logitRows");
    o->n_logit_rows = rows.bytes / 4;
    o->logit_rows = a.copy<int32_t>(8, "logitRows", 0, o->n_logit_rows);
    o->n_vocab_subset = a.has(10) ? a.mem(10, "vocabSubset").bytes / 4 : 0;
    if (o->n_vocab_subset) o->vocab_subset = a.copy<int32_t>(10, "vocabSubset", 0, o->n_vocab_subset);
    o->logits = a.elems<float>(9, "logits", 0, mul(o->n_logit_rows, o->vocab_subset ? o->n_vocab_subset : c.vocab));
  }

  std::shared_ptr<KvCache> cache;
  if (a.has(11)) {
    cache = kv_cache_arg(a, c, b.B, 11, 15, "llamaForward");
    cache->past = a.copy<int32_t>(14, "cachePast", 0, b.B);
  }
  llama_next_arg(a, 16, b, *o, "llamaForward");
  auto w = parse_weights(a, c, ids, kArgWeights);
  llama_validate(c, b, cache.get(), *o);  // after parse_weights: its descriptor getters are the last JS to run
  return {[c, w, b, cache, o] { llama_forward(c, *w, b, cache.get(), *o); },
          [o](Napi::Env env) -> Napi::Value { return llama_sums(env, *o); }};
}

// Tensors written by one parallel job must not share memory (a tensor listed twice, or views of
// one buffer): checked before anything is written. Spans: {first byte, bytes, tensor id}.
struct ByteSpan {
  const uint8_t* p;
  uint64_t bytes;
  uint32_t id;
};
void check_disjoint(const std::vector<ByteSpan>& spans) {
  for (size_t i = 0; i < spans.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (spans[i].p < spans[j].p + spans[j].bytes && spans[j].p < spans[i].p + spans[i].bytes)
        bad(Code::InvalidArgument, "trainable tensors " + std::to_string(spans[j].id) + " and " + std::to_string(spans[i].id) +
                                       " share memory: each tensor must be updated once");
}
void check_disjoint(const std::vector<DenseSpan>& spans) {
  std::vector<ByteSpan> b;
  for (const DenseSpan& s : spans) b.push_back(ByteSpan{(const uint8_t*)s.w, s.n * sizeof(float), s.d.stream});
  check_disjoint(b);
}

Job parse_probe(Args& a) {
  LlamaConfig c = config_arg(a);
  const size_t L = c.layers, nw = L * 9 + 3;
  const uint32_t* ids = a.copy<uint32_t>(1, "ids", 0, nw);
  LlamaBatch b = batch_arg(a);
  const uint64_t N = (uint64_t)b.seq_off[b.B];
  bool many = false;
  const std::vector<uint64_t> seeds = llama_probe_seeds(a, 13, &many, "llamaForward");
  const size_t Q = seeds.size();
  // plus[q] and minus[q] (q < Q) write block q of their output buffers.
  auto outs = std::make_shared<std::vector<LlamaOutputs>>(2 * Q);
  LlamaOutputs *plus = outs->data(), *minus = outs->data() + Q;
  if (a.has(6)) {
    const int32_t* targets = a.copy<int32_t>(6, "targets", 0, N);
    double* lp = a.elems<double>(7, "logprobsPlus", 0, mul(Q, N));
    double* lm = a.elems<double>(8, "logprobsMinus", 0, mul(Q, N));
    if (lp == lm) bad(Code::InvalidArgument, "logprobsPlus and logprobsMinus must be different buffers");
    for (size_t q = 0; q < Q; ++q) {
      plus[q].targets = minus[q].targets = targets;
      plus[q].logprobs = lp + q * N;
      minus[q].logprobs = lm + q * N;
    }
  }
  if (a.has(9)) {
    const size_t R = a.mem(9, "logitRows").bytes / 4;
    const int32_t* rows = a.copy<int32_t>(9, "logitRows", 0, R);
    const size_t S = a.has(12) ? a.mem(12, "vocabSubset").bytes / 4 : 0;
    const int32_t* subset = S ? a.copy<int32_t>(12, "vocabSubset", 0, S) : nullptr;
    const uint64_t per = mul(R, S ? S : c.vocab);
    float* gp = a.elems<float>(10, "logitsPlus", 0, mul(Q, per));
    float* gm = a.elems<float>(11, "logitsMinus", 0, mul(Q, per));
    if (R && gp == gm) bad(Code::InvalidArgument, "logitsPlus and logitsMinus must be different buffers");
    for (size_t q = 0; q < Q; ++q)
      for (LlamaOutputs* o : {plus + q, minus + q}) {
        o->n_logit_rows = R;
        o->logit_rows = rows;
        o->vocab_subset = subset;
        o->n_vocab_subset = S;
        o->logits = (o == plus + q ? gp : gm) + q * per;
      }
  }
  const Direction dir = llama_direction_of(a, seeds[0], 14, kPurposeSrProbe, "llamaForward");
  const float eps = finite_f32(a, 16, "eps");
  const int32_t mode = a.i32(17, "mode");
  if (mode != 0 && mode != 1) bad(Code::InvalidArgument, "mode must be 0 (on-load) or 1 (in-place)");
  Span tr = a.mem(18, "trainable");
  const uint8_t* trainable = a.copy<uint8_t>(18, "trainable", 0, tr.bytes);  // JS may write the array meanwhile
  auto all = std::make_shared<std::vector<WeightArg>>();
  auto w = parse_weights(a, c, ids, 19, all.get());
  llama_validate(c, b, nullptr, plus[0]);  // after parse_weights: its descriptor getters are the last JS to run
  for (size_t j = 0; j < nw; ++j)
    if (ids[j] >= tr.bytes) bad(Code::OutOfRange, "tensor id " + std::to_string(ids[j]) + " has no trainable flag");

  // In place: the distinct trainable tensors, each perturbed once (a tied head shares the embedding).
  auto targets = std::make_shared<std::vector<DenseSpan>>();
  if (mode == 1)
    for (size_t j = 0; j < nw; ++j) {
      if (!trainable[ids[j]]) continue;
      const WeightArg& wa = (*all)[j];
      if (!wa.g.f32)
        bad(Code::Unsupported, "in-place probes take fp32 weights only: a perturbed quantized weight is off its grid, so "
                               "writing it would round and could not be undone exactly; use mode 'on-load'");
      bool seen = false;
      for (const DenseSpan& t : *targets) seen = seen || t.d.stream == ids[j];
      Direction d = dir;
      d.stream = ids[j];
      if (!seen) targets->push_back(DenseSpan{wa.f32, (size_t)(wa.g.n * wa.g.k), d, 0, 1.0f});
    }
  check_disjoint(*targets);

  const size_t n_flags = tr.bytes;
  return {[c, w, b, outs, seeds, dir, eps, mode, targets, trainable, n_flags] {
            std::function<void(uint64_t, float)> in_place;
            if (mode == 1)
              in_place = [&](uint64_t seed, float alpha) {
                for (DenseSpan& t : *targets) t.d.seed = seed;
                perturb_dense_many(targets->data(), targets->size(), alpha);
              };
            const size_t Q = seeds.size();
            llama_probe(c, *w, b, LlamaPerturb{dir, eps, trainable, n_flags}, seeds, outs->data(), outs->data() + Q, in_place);
          },
          [outs, many](Napi::Env env) -> Napi::Value {
            if (!many) return llama_probe_sums(env, *outs, 0);
            const size_t Q = outs->size() / 2;
            Napi::Array r = Napi::Array::New(env, Q);
            for (size_t q = 0; q < Q; ++q) r.Set((uint32_t)q, llama_probe_sums(env, *outs, q));
            return r;
          }};
}

Job parse_update(Args& a) {
  const Direction dir = direction_arg(a, 0, kPurposeSrUpdate);
  const float scale = finite_f32(a, 3, "scale");
  const double decay = a.num(4, "decay");
  if (!(decay >= 0 && decay <= 1)) bad(Code::InvalidArgument, "decay must be in [0, 1]");
  const size_t n = a.mem(5, "ids").bytes / 4;
  const uint32_t* ids = a.copy<uint32_t>(5, "ids", 0, n);
  const uint8_t* decays = a.copy<uint8_t>(6, "decayFlags", 0, n);
  const double* counts = a.copy<double>(7, "counts", 0, n);
  if (a.count() != 8 + n) bad(Code::InvalidArgument, "expected " + std::to_string(8 + n) + " arguments, got " + std::to_string(a.count()));
  struct Item {
    WeightArg w;
    uint32_t id;
    float keep;
  };
  auto items = std::make_shared<std::vector<Item>>();
  for (size_t j = 0; j < n; ++j) {
    if (!(counts[j] >= 0 && counts[j] == std::floor(counts[j]) && counts[j] < 9007199254740992.0)) bad(Code::InvalidArgument, "counts must be integers");
    Napi::Value v = a.value(8 + j);
    const bool quantized = v.IsObject() && !v.IsTypedArray() && v.As<Napi::Object>().Has("format");
    Item it{};
    if (quantized) {
      QTensorView q = a.qtensor(8 + j, "tensor");
      it.w = weight_arg(a, 8 + j, "tensor", q.rows, q.cols);
    } else {
      it.w = weight_arg(a, 8 + j, "tensor", 1, (uint64_t)counts[j]);
    }
    it.id = ids[j];
    it.keep = (float)(1.0 - (decays[j] ? decay : 0.0));
    items->push_back(it);
  }
  auto dense = std::make_shared<std::vector<DenseSpan>>();  // the fp32 tensors: one parallel job
  for (const Item& it : *items)
    if (it.w.g.f32) {
      Direction d = dir;
      d.stream = it.id;
      dense->push_back(DenseSpan{it.w.f32, (size_t)it.w.g.k, d, 0, it.keep});
    }
  check_disjoint(*dense);
  auto plain = std::make_shared<std::vector<QuantUpdateSpan>>();  // quantized without decay: one parallel job
  std::vector<ByteSpan> codes;
  for (const Item& it : *items)
    if (!it.w.g.f32) {
      const QTensorView& q = it.w.g.q;
      codes.push_back(ByteSpan{q.data, q.rows * qformat_row_bytes(q.format, q.cols), it.id});
      if (it.keep == 1.0f) {
        Direction d = dir;
        d.stream = it.id;
        plain->push_back(QuantUpdateSpan{q, d});
      }
    }
  check_disjoint(codes);
  return {[items, dense, plain, dir, scale] {
            // the quantized tensors first: their checks (scale ranges) run before anything is written
            quant_update_many(plain->data(), plain->size(), -scale);
            perturb_dense_many(dense->data(), dense->size(), -scale);
            for (const Item& it : *items) {
              Direction d = dir;
              d.stream = it.id;
              if (it.w.g.f32 || it.keep == 1.0f) continue;  // done above
              {
                // With decay the step is not along z alone: the tensor's values go through an fp32
                // copy (one tensor at a time), take the fused fp32 update, and are stochastically
                // rounded back onto the unchanged grid (SR words: seed, stream = tensor id,
                // purpose srQuantize).
                const QTensorView& q = it.w.g.q;
                const size_t n = (size_t)(q.rows * q.cols);
                float* tmp = static_cast<float*>(host_alloc(n * sizeof(float), MemCategory::Workspace));
                try {
                  dequantize(q, tmp);
                  perturb_dense(tmp, n, d, 0, -scale, it.keep);
                  quantize(q, tmp, qformat_has_scales(q.format) ? ScaleMode::Keep : ScaleMode::One, true, d.seed, it.id, nullptr);
                } catch (...) {
                  host_free(tmp, n * sizeof(float), MemCategory::Workspace);
                  throw;
                }
                host_free(tmp, n * sizeof(float), MemCategory::Workspace);
              }
            }
          },
          nullptr};
}


Job parse_generate(Args& a) {
  const char* op = "llamaGenerate";
  LlamaConfig c = llama_config_arg(a, op);
  const uint32_t* ids = a.copy<uint32_t>(1, "ids", 0, c.layers * 9 + 3);
  LlamaBatch b = llama_batch_arg(a, op);
  std::shared_ptr<KvCache> cache = kv_cache_arg(a, c, b.B, 6, 11, op);
  int32_t* past = a.elems<int32_t>(9, "cacheLength", 0, b.B);
  int32_t* next_pos = a.elems<int32_t>(10, "cacheNextPosition", 0, b.B);
  if (past == next_pos) fail(Code::InvalidArgument, std::string(op) + ": cacheLength and cacheNextPosition must be different buffers");
  const GenerateArgs ga = generate_args(a, 12, op);
  auto w = llama_weights_arg(a, c, ids, kArgWeightsGenerate, op, check_scales);
  auto steps = std::make_shared<size_t>(0);
  return {[c, w, b, cache, past, next_pos, ga, steps] {
            *steps = run_streamed(ga.stream.get(), b.B, [&](const StepSink& sink) {
              return llama_generate(c, *w, b, *cache, past, next_pos, *ga.g, sink);
            });
          },
          [steps](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, (double)*steps); }};
}
}  // namespace

void register_llama(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "llamaForward", parse_forward);
  export_op(env, exports, "llamaZoProbe", parse_probe);
  export_op(env, exports, "zoUpdate", parse_update);
  export_op(env, exports, "llamaGenerate", parse_generate);
}

}  // namespace zt
