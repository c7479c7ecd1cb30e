// Transformer ops (native/cpu/nn.h). Every tensor argument is a pair (mem, byteOffset); every
// index that the kernels follow (token ids, positions, offsets, targets) is validated before
// anything runs (nn_args.cc, shared with the CUDA addon).
//
// rmsNorm(out, outOff, x, xOff, w, wOff, rows, dim, eps)
// rope(x, xOff, rows, heads, headDim, positions, posOff, rope: Float64Array[6])
//   rope = [theta, llama3 (0|1), factor, lowFreqFactor, highFreqFactor, originalMaxPositions]
// attention(out, outOff, q, qOff, k, kOff, v, vOff, seqOffsets: i32[B+1], seqStart: i32[B],
//           keyMask: u8[B*cap] | null, B, heads, kvHeads, headDim, cap, scale)
//   q [N][heads][headDim], k [B][kvHeads][headDim][cap] (transposed), v [B][kvHeads][cap][headDim]
// swiglu(out, outOff, gate, gateOff, up, upOff, n)
// embedding(out, outOff, table, tableOff, vocab, dim, ids: i32[n], n)
// logProbs(logits, off, rows, n, targets: i32[rows], out: f64[rows]) -> {sum, count}
// argmax(x, off, rows, n, out: i32[rows])
// sample(logits, off, rows, n, out: i32[rows], temperature, topK, topP, seed, positions: i32[rows])
//   row r draws u = uniform_open(word(seed, stream r, purpose uniform, element positions[r])).
#include <cmath>
#include <string>
#include <vector>

#include "../common/philox.h"
#include "../cpu/nn.h"
#include "bindings.h"
#include "napi_util.h"
#include "nn_args.h"

namespace zt {
namespace {

[[noreturn]] void bad(const char* fn, Code c, const std::string& msg) { fail(c, std::string(fn) + ": " + msg); }

Job parse_rmsnorm(Args& a) {
  RmsNormCall c = rmsnorm_call(a);
  return {[=] { rmsnorm(c.out, c.x, c.w, c.rows, c.dim, c.eps); }, nullptr};
}

Job parse_rope(Args& a) {
  RopeCall c = rope_call(a);
  return {[=] {
            // Tables for the positions present only (one huge position must not size them): the range
            // [min, max] when it is no longer than the rows, else one table row per row.
            const size_t half = c.hd / 2;
            const bool range = (uint64_t)((int64_t)c.max_pos - c.min_pos) < c.rows;
            const size_t count = range ? (size_t)(c.max_pos - c.min_pos) + 1 : (size_t)c.rows;
            std::vector<float> cs(count * half), sn(count * half);
            std::vector<int32_t> at(c.rows);  // each row's table row
            if (range) {
              rope_tables(cs.data(), sn.data(), c.min_pos, count, c.hd, c.p);
              for (uint64_t r = 0; r < c.rows; ++r) at[r] = c.pos[r] - c.min_pos;
            } else {
              for (uint64_t r = 0; r < c.rows; ++r) {
                rope_tables(cs.data() + r * half, sn.data() + r * half, c.pos[r], 1, c.hd, c.p);
                at[r] = (int32_t)r;
              }
            }
            zt::rope(c.x, c.rows, c.heads * c.hd, c.heads, c.hd, at.data(), cs.data(), sn.data());
          },
          nullptr};
}

Job parse_attention(Args& a) {
  AttnArgs at = attention_call(a);
  return {[at] { attention(at); }, nullptr};
}

Job parse_swiglu(Args& a) {
  SwigluCall c = swiglu_call(a);
  return {[=] { swiglu(c.out, c.gate, c.up, c.n); }, nullptr};
}

Job parse_embedding(Args& a) {
  EmbeddingCall c = embedding_call(a);
  return {[=] { embed(c.out, c.table, c.dim, c.ids, c.n); }, nullptr};
}

Job parse_logprobs(Args& a) {
  LogProbsCall c = log_probs_call(a);
  auto res = std::make_shared<std::pair<double, uint64_t>>(0.0, 0);
  return {[=] {
            log_probs(c.x, c.rows, c.n, c.n, c.targets, c.out);
            for (uint64_t r = 0; r < c.rows; ++r)
              if (c.targets[r] >= 0) res->first += c.out[r], res->second++;
          },
          [res](Napi::Env env) -> Napi::Value {
            Napi::Object o = Napi::Object::New(env);
            o.Set("sum", res->first);
            o.Set("count", (double)res->second);
            return o;
          }};
}

Job parse_argmax(Args& a) {
  ArgmaxCall c = argmax_call(a);
  return {[=] {
            for (uint64_t r = 0; r < c.rows; ++r) c.out[r] = argmax_result(r, argmax(c.x + r * c.n, c.n));
          },
          nullptr};
}

Job parse_sample(Args& a) {
  const char* fn = "sample";
  uint64_t rows = a.index(2, "rows"), n = a.index(3, "n");
  const float* x = a.elems<float>(0, "logits", a.index(1, "offset"), a.mul(rows, n, "the tensor size"));
  int32_t* out = a.elems<int32_t>(4, "out", 0, rows);
  SampleParams p;
  double t = a.num(5, "temperature"), tp = a.num(7, "topP");
  uint64_t k = a.index(6, "topK");
  if (!(t >= 0 && std::isfinite(t))) bad(fn, Code::InvalidArgument, "temperature must be a finite number >= 0");
  if (!(tp > 0 && tp <= 1)) bad(fn, Code::InvalidArgument, "topP must be in (0, 1]");
  if (n == 0) bad(fn, Code::ShapeMismatch, "n must be positive");
  if (n > 0x7fffffff || k > 0x7fffffff) bad(fn, Code::OutOfRange, "rows longer than 2^31 - 1");
  p.temperature = (float)t;
  p.top_k = (uint32_t)k;
  p.top_p = (float)tp;
  uint64_t seed = a.u64(8, "seed");
  const int32_t* pos = a.elems<int32_t>(9, "positions", 0, rows);
  for (uint64_t r = 0; r < rows; ++r)
    if (pos[r] < 0) bad(fn, Code::OutOfRange, "positions must be non-negative");
  return {[=] {
            for (uint64_t r = 0; r < rows; ++r) {
              float u = uniform_open(random_word(RngKey{seed, (uint32_t)r, kPurposeUniform}, (uint64_t)pos[r]));
              int64_t i = sample_row(x + r * n, n, p, u);
              if (i < 0) fail(Code::NonFinite, "sample: row " + std::to_string(r) + " has no non-NaN value");
              out[r] = (int32_t)i;
            }
          },
          nullptr};
}

}  // namespace

void register_nn(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "rmsNorm", parse_rmsnorm);
  export_op(env, exports, "rope", parse_rope);
  export_op(env, exports, "attention", parse_attention);
  export_op(env, exports, "swiglu", parse_swiglu);
  export_op(env, exports, "embedding", parse_embedding);
  export_op(env, exports, "logProbs", parse_logprobs);
  export_op(env, exports, "argmax", parse_argmax);
  export_op(env, exports, "sample", parse_sample);
}

}  // namespace zt
