// rngFill(out: f32 mem, byteOffset, count, dist, seed, stream, purpose, first, p)
// rngWords(out: u32 mem, byteOffset, count, seed, stream, purpose, first)
#include "../cpu/rng.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

RngKey key_arg(Args& a, size_t i) { return RngKey{a.u64(i, "seed"), a.u32(i + 1, "stream"), a.u32(i + 2, "purpose")}; }

Job parse_fill(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  float* out = a.elems<float>(0, "out", off, n);
  int32_t d = a.i32(3, "dist");
  if (d < 0 || d > 3) throw coded_error(a.env(), Code::InvalidArgument, "rngFill: dist must be 0..3");
  RngKey key = key_arg(a, 4);
  uint64_t first = a.index(7, "first");
  double p = a.num_or(8, "p", 0.5);
  if (!(p >= 0 && p <= 1)) throw coded_error(a.env(), Code::InvalidArgument, "rngFill: p must be in [0, 1]");
  return {[=] { rng_fill(out, n, key, first, (Dist)d, p); }, nullptr};
}

Job parse_words(Args& a) {
  uint64_t off = a.index(1, "byteOffset"), n = a.index(2, "count");
  uint32_t* out = a.elems<uint32_t>(0, "out", off, n);
  RngKey key = key_arg(a, 3);
  uint64_t first = a.index(6, "first");
  return {[=] { rng_words(out, n, key, first); }, nullptr};
}

// philox(input: Uint32Array [c0, c1, c2, c3, k0, k1], out: Uint32Array(4)): one raw Philox4x32-10
// block, for known-answer tests against the published vectors.
Job parse_philox(Args& a) {
  const uint32_t* in = a.elems<uint32_t>(0, "input", 0, 6);
  uint32_t* out = a.elems<uint32_t>(1, "out", 0, 4);
  return {[=] { philox4x32_10(in, in[4], in[5], out); }, nullptr};
}

}  // namespace

void register_rng(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "rngFill", parse_fill);
  export_op(env, exports, "rngWords", parse_words);
  export_op(env, exports, "philox", parse_philox);
}

}  // namespace zt
