#include "nn_args.h"

#include <cmath>
#include <string>

namespace zt {
namespace {

[[noreturn]] void bad(const char* fn, Code c, const std::string& msg) { fail(c, std::string(fn) + ": " + msg); }

RopeParams rope_arg(Args& a, size_t i, const char* fn) {
  const double* r = a.elems<double>(i, "rope", 0, 6);
  RopeParams p;
  p.theta = r[0];
  p.llama3 = r[1] != 0;
  p.factor = r[2];
  p.low_freq_factor = r[3];
  p.high_freq_factor = r[4];
  p.original_max_positions = r[5];
  if (!(p.theta > 1 && std::isfinite(p.theta))) bad(fn, Code::InvalidArgument, "rope theta must be a finite number > 1");
  if (p.llama3 && !(p.factor >= 1 && p.low_freq_factor > 0 && p.high_freq_factor > p.low_freq_factor &&
                    p.original_max_positions > 0 && std::isfinite(p.factor) && std::isfinite(p.high_freq_factor) &&
                    std::isfinite(p.original_max_positions)))
    bad(fn, Code::InvalidArgument,
        "llama3 rope scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0");
  return p;
}

}  // namespace

RmsNormCall rmsnorm_call(Args& a) {
  const char* fn = "rmsNorm";
  uint64_t rows = a.index(6, "rows"), dim = a.index(7, "dim");
  double eps = a.num(8, "eps");
  if (dim == 0) bad(fn, Code::ShapeMismatch, "dim must be positive");
  if (!(eps >= 0 && std::isfinite(eps))) bad(fn, Code::InvalidArgument, "eps must be a finite number >= 0");
  uint64_t n = a.mul(rows, dim, "the tensor size");
  float* out = a.elems<float>(0, "out", a.index(1, "outOffset"), n);
  const float* x = a.elems<float>(2, "x", a.index(3, "xOffset"), n);
  const float* w = a.elems<float>(4, "w", a.index(5, "wOffset"), dim);
  return {out, x, w, rows, dim, eps};
}

RopeCall rope_call(Args& a) {
  const char* fn = "rope";
  uint64_t rows = a.index(2, "rows"), heads = a.index(3, "heads"), hd = a.index(4, "headDim");
  if (hd == 0 || hd % 2 || hd > kMaxHeadDim) bad(fn, Code::ShapeMismatch, "headDim must be even and in [2, 512]");
  float* x = a.elems<float>(0, "x", a.index(1, "xOffset"), a.mul(rows, a.mul(heads, hd, "the tensor size"), "the tensor size"));
  const int32_t* pos = a.copy<int32_t>(5, "positions", a.index(6, "positionsOffset"), rows);
  RopeParams p = rope_arg(a, 7, fn);
  int32_t minp = rows ? pos[0] : -1, maxp = -1;
  for (uint64_t r = 0; r < rows; ++r) {
    if (pos[r] < 0) bad(fn, Code::OutOfRange, "position " + std::to_string(pos[r]) + " is negative");
    maxp = pos[r] > maxp ? pos[r] : maxp;
    minp = pos[r] < minp ? pos[r] : minp;
  }
  return {x, rows, heads, hd, pos, minp, maxp, p};
}

AttnArgs attention_call(Args& a) {
  const char* fn = "attention";
  uint64_t B = a.index(11, "batch"), Hq = a.index(12, "heads"), Hkv = a.index(13, "kvHeads");
  uint64_t hd = a.index(14, "headDim"), cap = a.index(15, "cap");
  double scale = a.num(16, "scale");
  if (Hkv == 0 || Hq == 0 || Hq % Hkv) bad(fn, Code::ShapeMismatch, "heads must be a positive multiple of kvHeads");
  if (hd == 0 || hd > kMaxHeadDim) bad(fn, Code::ShapeMismatch, "headDim must be in [1, 512]");
  if (!std::isfinite(scale)) bad(fn, Code::NonFinite, "scale must be finite");
  if (cap > ((uint64_t)1 << 31)) bad(fn, Code::OutOfRange, "cap is too large");
  const int32_t* off = a.copy<int32_t>(8, "seqOffsets", 0, B + 1);
  const int32_t* start = a.copy<int32_t>(9, "seqStart", 0, B);
  if (off[0] != 0) bad(fn, Code::InvalidArgument, "seqOffsets[0] must be 0");
  for (uint64_t b = 0; b < B; ++b) {
    if (off[b + 1] < off[b]) bad(fn, Code::InvalidArgument, "seqOffsets must be non-decreasing");
    if (start[b] < 0 || (uint64_t)start[b] + (uint64_t)(off[b + 1] - off[b]) > cap)
      bad(fn, Code::OutOfRange, "sequence " + std::to_string(b) + " needs KV slots beyond cap " + std::to_string(cap));
  }
  uint64_t nq = (uint64_t)off[B];
  uint64_t qsize = a.mul(nq, a.mul(Hq, hd, "the tensor size"), "the tensor size");
  uint64_t kvsize = a.mul(a.mul(B, Hkv, "the tensor size"), a.mul(cap, hd, "the tensor size"), "the tensor size");
  AttnArgs at{};
  at.out = a.elems<float>(0, "out", a.index(1, "outOffset"), qsize);
  at.q = a.elems<float>(2, "q", a.index(3, "qOffset"), qsize);
  at.k = a.elems<float>(4, "k", a.index(5, "kOffset"), kvsize);
  at.v = a.elems<float>(6, "v", a.index(7, "vOffset"), kvsize);
  at.q_off = off;
  at.q_start = start;
  at.kmask = a.has(10) ? a.elems<uint8_t>(10, "keyMask", 0, a.mul(B, cap, "the tensor size")) : nullptr;
  at.B = B;
  at.Hq = Hq;
  at.Hkv = Hkv;
  at.hd = hd;
  at.cap = cap;
  at.ld_q = at.ld_out = Hq * hd;
  at.scale = (float)scale;
  return at;
}

SwigluCall swiglu_call(Args& a) {
  uint64_t n = a.index(6, "n");
  float* out = a.elems<float>(0, "out", a.index(1, "outOffset"), n);
  const float* g = a.elems<float>(2, "gate", a.index(3, "gateOffset"), n);
  const float* u = a.elems<float>(4, "up", a.index(5, "upOffset"), n);
  return {out, g, u, n};
}

EmbeddingCall embedding_call(Args& a) {
  const char* fn = "embedding";
  uint64_t vocab = a.index(4, "vocab"), dim = a.index(5, "dim"), n = a.index(7, "n");
  float* out = a.elems<float>(0, "out", a.index(1, "outOffset"), a.mul(n, dim, "the tensor size"));
  const float* table = a.elems<float>(2, "table", a.index(3, "tableOffset"), a.mul(vocab, dim, "the tensor size"));
  const int32_t* ids = a.copy<int32_t>(6, "ids", 0, n);
  for (uint64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || (uint64_t)ids[i] >= vocab)
      bad(fn, Code::OutOfRange, "token id " + std::to_string(ids[i]) + " at " + std::to_string(i) + " is outside [0, " + std::to_string(vocab) + ")");
  return {out, table, vocab, dim, ids, n};
}

LogProbsCall log_probs_call(Args& a) {
  const char* fn = "logProbs";
  uint64_t rows = a.index(2, "rows"), n = a.index(3, "n");
  if (n == 0) bad(fn, Code::ShapeMismatch, "n must be positive");
  const float* x = a.elems<float>(0, "logits", a.index(1, "offset"), a.mul(rows, n, "the tensor size"));
  const int32_t* t = a.copy<int32_t>(4, "targets", 0, rows);
  double* out = a.elems<double>(5, "out", 0, rows);
  for (uint64_t r = 0; r < rows; ++r)
    if (t[r] >= 0 && (uint64_t)t[r] >= n) bad(fn, Code::OutOfRange, "target " + std::to_string(t[r]) + " is outside [0, " + std::to_string(n) + ")");
  return {x, rows, n, t, out};
}

ArgmaxCall argmax_call(Args& a) {
  const char* fn = "argmax";
  uint64_t rows = a.index(2, "rows"), n = a.index(3, "n");
  const float* x = a.elems<float>(0, "x", a.index(1, "offset"), a.mul(rows, n, "the tensor size"));
  int32_t* out = a.elems<int32_t>(4, "out", 0, rows);
  if (n == 0) bad(fn, Code::ShapeMismatch, "n must be positive");
  if (n > 0x7fffffff) bad(fn, Code::OutOfRange, "rows longer than 2^31 - 1");
  return {x, rows, n, out};
}

int32_t argmax_result(uint64_t r, int64_t i) {
  if (i < 0) fail(Code::NonFinite, "argmax: row " + std::to_string(r) + " has no non-NaN value");
  return (int32_t)i;
}

}  // namespace zt
