#include "llama_args.h"

#include <cmath>
#include <string>

#include "../common/check_direction.h"

namespace zt {
namespace {

[[noreturn]] void bad(const char* op, Code c, const std::string& msg) { fail(c, std::string(op) + ": " + msg); }

size_t count_arg(const char* op, double v, const char* what, double max) {
  if (!(v >= 1 && v <= max && v == std::floor(v))) bad(op, Code::InvalidArgument, std::string(what) + " must be an integer in [1, " + std::to_string((uint64_t)max) + "]");
  return (size_t)v;
}

}  // namespace

uint64_t llama_size_mul(uint64_t a, uint64_t b, const char* op) {
  if (a != 0 && b > ((uint64_t)1 << 60) / a) bad(op, Code::OutOfRange, "tensor size overflows");
  return a * b;
}

LlamaConfig llama_config_arg(Args& a, const char* op) {
  const double* f = a.elems<double>(0, "cfg", 0, 15);
  LlamaConfig c{};
  const double big = (double)(1u << 30);
  c.hidden = count_arg(op, f[0], "hidden", big);
  c.layers = count_arg(op, f[1], "layers", 4096);
  c.heads = count_arg(op, f[2], "heads", 4096);
  c.kv_heads = count_arg(op, f[3], "kvHeads", 4096);
  c.head_dim = count_arg(op, f[4], "headDim", 512);
  c.inter = count_arg(op, f[5], "intermediate", big);
  c.vocab = count_arg(op, f[6], "vocab", 2147483647.0);
  c.max_pos = count_arg(op, f[7], "maxPositions", 2147483647.0);
  c.eps = f[8];
  if (c.heads % c.kv_heads) bad(op, Code::ShapeMismatch, "heads must be a multiple of kvHeads");
  if (c.head_dim % 2) bad(op, Code::ShapeMismatch, "headDim must be even");
  if (!(c.eps >= 0 && std::isfinite(c.eps))) bad(op, Code::InvalidArgument, "eps must be a finite number >= 0");
  c.rope.theta = f[9];
  c.rope.llama3 = f[10] != 0;
  c.rope.factor = f[11];
  c.rope.low_freq_factor = f[12];
  c.rope.high_freq_factor = f[13];
  c.rope.original_max_positions = f[14];
  if (!(c.rope.theta > 1 && std::isfinite(c.rope.theta))) bad(op, Code::InvalidArgument, "rope theta must be a finite number > 1");
  if (c.rope.llama3 && !(c.rope.factor >= 1 && c.rope.low_freq_factor > 0 && c.rope.high_freq_factor > c.rope.low_freq_factor &&
                         c.rope.original_max_positions > 0 && std::isfinite(c.rope.factor + c.rope.high_freq_factor + c.rope.original_max_positions)))
    bad(op, Code::InvalidArgument, "invalid llama3 rope scaling");
  return c;
}

LlamaBatch llama_batch_arg(Args& a, const char* op, size_t first) {
  LlamaBatch b{};
  const size_t tokens = first, offsets = first + 1, positions = first + 2, key_mask = first + 3;
  const uint64_t n_off = a.mem(offsets, "seqOffsets").bytes / 4;
  if (n_off < 2) bad(op, Code::InvalidArgument, "the batch is empty");
  b.B = n_off - 1;
  b.seq_off = a.copy<int32_t>(offsets, "seqOffsets", 0, n_off);
  if (b.seq_off[0] != 0 || b.seq_off[b.B] < 0) bad(op, Code::InvalidArgument, "sequence offsets must start at 0");
  const uint64_t N = (uint64_t)b.seq_off[b.B];
  // Copies: llama_validate checks them, the forward follows them (maybe later, on a worker thread).
  b.tokens = a.copy<int32_t>(tokens, "tokens", 0, N);
  b.positions = a.copy<int32_t>(positions, "positions", 0, N);
  b.key_mask = a.has(key_mask) ? a.copy<uint8_t>(key_mask, "keyMask", 0, N) : nullptr;
  return b;
}

LlamaWeightArg llama_weight_arg(Args& a, size_t i, const char* name, uint64_t out, uint64_t in, const char* op,
                                ScaleCheck check_scales) {
  LlamaWeightArg r;
  r.g.n = out;
  r.g.k = in;
  Napi::Value v = a.value(i);
  if (v.IsObject() && !v.IsTypedArray() && v.As<Napi::Object>().Has("format")) {
    // Read before the descriptor: no getter may run between check_scales and the kernels.
    Napi::Value ia = v.As<Napi::Object>().Get("intAct");
    r.int_act = ia.IsBoolean() && ia.As<Napi::Boolean>().Value();
    r.g.f32 = false;
    QOwners own;
    r.g.q = a.qtensor(i, name, &own);
    if (r.g.q.rows != out || r.g.q.cols != in)
      bad(op, Code::ShapeMismatch, std::string(name) + " is [" + std::to_string(r.g.q.rows) + ", " + std::to_string(r.g.q.cols) +
                                   "], the config implies [" + std::to_string(out) + ", " + std::to_string(in) + "]");
    // Scales (and zero-points) are checked once, then again only after another op used their
    // memory or JS took a view of it (buffer.h, Storage::still_checked): a decode step otherwise
    // re-read every scale of the model, ~4 % of a 7B-shaped W4A8 layer's step.
    const QTensorView& q = r.g.q;
    const size_t sbytes = qformat_has_scales(q.format) ? qt_scale_count(q) * 4 : 0, zbytes = q.zeros ? qt_scale_count(q) : 0;
    const bool scales_ok = !sbytes || (own.scales && own.scales->still_checked(q.scales, sbytes));
    const bool zeros_ok = !zbytes || (own.zeros && own.zeros->still_checked(q.zeros, zbytes));
    if (!scales_ok || !zeros_ok) {
      try {
        check_scales(q);
      } catch (const Error& e) {
        bad(op, e.code, std::string(name) + ": " + e.what());
      }
      if (sbytes && own.scales) own.scales->mark_checked(q.scales, sbytes);
      if (zbytes && own.zeros) own.zeros->mark_checked(q.zeros, zbytes);
    }
    if (r.int_act && r.g.q.format != QFormat::Int8 && r.g.q.format != QFormat::Int4)
      bad(op, Code::InvalidArgument, std::string(name) + ": int8 activations need int8 or int4 weights");
    if (r.int_act && r.g.q.format == QFormat::Int4 && r.g.q.zeros)
      bad(op, Code::InvalidArgument, std::string(name) + ": W4A8 takes symmetric int4 weights");
  } else {
    r.g.f32 = true;
    r.f32 = a.elems<float>(i, name, 0, llama_size_mul(out, in, op));
    r.g.w32 = r.f32;
  }
  return r;
}

// The weights of a forward from argument `first` on (embed, 9 per layer, norm, lmHead); `ids`
// gives each argument's tensor id. `all` (if given) receives every argument in order.
std::shared_ptr<LlamaWeights> llama_weights_arg(Args& a, const LlamaConfig& c, const uint32_t* ids, size_t first,
                                                const char* op, ScaleCheck check_scales, std::vector<LlamaWeightArg>* all) {
  const size_t L = c.layers, D = c.hidden, Q = c.heads * c.head_dim, KV = c.kv_heads * c.head_dim;
  auto w = std::make_shared<LlamaWeights>();
  size_t i = first;
  auto take = [&](const char* name, uint64_t out, uint64_t in) {
    LlamaWeightArg r = llama_weight_arg(a, i, name, out, in, op, check_scales);
    if (all) all->push_back(r);
    Linear l{};
    l.id = ids[i - first];
    l.w = r.g;
    l.int_act = r.int_act;
    ++i;
    return l;
  };
  auto vec = [&](const char* name) {
    Linear l = take(name, 1, D);
    if (!l.w.f32) bad(op, Code::Unsupported, std::string(name) + ": norm weights are fp32 only");
    return NormVec{l.id, l.w.w32};
  };
  w->embed = take("embed", c.vocab, D);
  if (w->embed.int_act) bad(op, Code::InvalidArgument, "embed: an embedding is gathered, it takes no int8 activations");
  w->layers.resize(L);
  for (size_t l = 0; l < L; ++l) {
    LlamaLayer& y = w->layers[l];
    y.attn_norm = vec("attnNorm");
    y.q = take("q", Q, D);
    y.k = take("k", KV, D);
    y.v = take("v", KV, D);
    y.o = take("o", D, Q);
    y.mlp_norm = vec("mlpNorm");
    y.gate = take("gate", c.inter, D);
    y.up = take("up", c.inter, D);
    y.down = take("down", D, c.inter);
  }
  w->norm = vec("norm");
  w->lm_head = take("lmHead", c.vocab, D);
  if (a.count() != i) bad(op, Code::InvalidArgument, "expected " + std::to_string(i) + " arguments, got " + std::to_string(a.count()));
  return w;
}

Direction llama_direction_arg(Args& a, size_t i, uint32_t purpose, const char* op) {
  return llama_direction_of(a, a.u64(i, "seed"), i + 1, purpose, op);
}

Direction llama_direction_of(Args& a, uint64_t seed, size_t i, uint32_t purpose, const char* op) {
  Direction d{seed, 0, a.i32(i, "dist"), a.i32(i + 1, "bits"), purpose};
  try {
    check_direction(d);
  } catch (const Error& e) {
    bad(op, e.code, e.what());
  }
  return d;
}

SampleParams llama_sample_arg(Args& a, size_t i, const char* op) {
  SampleParams p;
  if (!a.has(i)) return p;
  const double* s = a.elems<double>(i, "sample", 0, 3);
  if (!(s[0] >= 0 && std::isfinite(s[0]))) bad(op, Code::InvalidArgument, "temperature must be a finite number >= 0");
  if (!(s[1] >= 0 && s[1] <= 2147483647.0 && s[1] == std::floor(s[1]))) bad(op, Code::InvalidArgument, "topK must be a non-negative integer");
  if (!(s[2] > 0 && s[2] <= 1)) bad(op, Code::InvalidArgument, "topP must be in (0, 1]");
  p.temperature = (float)s[0];
  p.top_k = (uint32_t)s[1];
  p.top_p = (float)s[2];
  return p;
}

void llama_next_arg(Args& a, size_t i, const LlamaBatch& b, LlamaOutputs& o, const char* op) {
  if (!a.has(i)) return;
  o.next = a.elems<int32_t>(i, "next", 0, b.B);
  o.sample = llama_sample_arg(a, i + 1, op);
  o.seed = a.u64(i + 2, "seed");
}

Napi::Object llama_sums(Napi::Env env, const LlamaOutputs& o) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("logprobSum", o.logprob_sum);
  r.Set("count", (double)o.count);
  return r;
}

Napi::Object llama_probe_sums(Napi::Env env, const std::vector<LlamaOutputs>& outs, size_t q) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("plus", llama_sums(env, outs[q]));
  r.Set("minus", llama_sums(env, outs[outs.size() / 2 + q]));
  return r;
}

std::vector<uint64_t> llama_probe_seeds(Args& a, size_t i, bool* many, const char* op) {
  Napi::Value v = a.value(i);
  *many = v.IsTypedArray();
  if (!*many) return {a.u64(i, "seed")};
  if (v.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array) bad(op, Code::DType, "seeds must be a BigUint64Array");
  const size_t q = a.mem(i, "seeds").bytes / 8;
  if (q == 0) bad(op, Code::InvalidArgument, "seeds must hold at least one seed");
  const uint64_t* s = a.copy<uint64_t>(i, "seeds", 0, q);
  return std::vector<uint64_t>(s, s + q);
}

float llama_finite_f32(Args& a, size_t i, const char* name, const char* op) {
  double v = a.num(i, name);
  if (!std::isfinite(v) || !std::isfinite((float)v)) bad(op, Code::NonFinite, std::string(name) + " must be a finite fp32 value");
  return (float)v;
}

}  // namespace zt
