// Arguments of the transformer ops (rmsNorm, rope, attention, swiglu, embedding, logProbs, argmax) as both
// addons take them: every size, offset and index the kernels follow (token ids, positions, sequence
// offsets, targets) is validated here, with coded errors, before anything runs. Those index arrays
// are private copies (Args::copy), so the checks hold while the op runs. The argument
// lists are documented in native/addon/bind_nn.cc.
#pragma once
#include "../common/nn_rows.h"
#include "../common/rope.h"
#include "napi_util.h"

namespace zt {

struct RmsNormCall {
  float* out;
  const float* x;
  const float* w;
  uint64_t rows, dim;
  double eps;
};
RmsNormCall rmsnorm_call(Args& a);

struct RopeCall {
  float* x;
  uint64_t rows, heads, hd;
  const int32_t* pos;
  int32_t min_pos, max_pos;  // -1 when rows == 0
  RopeParams p;
};
RopeCall rope_call(Args& a);

// ld_q = ld_out = heads * headDim.
AttnArgs attention_call(Args& a);

struct SwigluCall {
  float* out;
  const float* gate;
  const float* up;
  uint64_t n;
};
SwigluCall swiglu_call(Args& a);

struct EmbeddingCall {
  float* out;
  const float* table;
  uint64_t vocab, dim;
  const int32_t* ids;
  uint64_t n;
};
EmbeddingCall embedding_call(Args& a);

struct LogProbsCall {
  const float* x;
  uint64_t rows, n;
  const int32_t* targets;
  double* out;
};
LogProbsCall log_probs_call(Args& a);

struct ArgmaxCall {
  const float* x;
  uint64_t rows, n;
  int32_t* out;
};
ArgmaxCall argmax_call(Args& a);
// Row r's argmax i as the op returns it; i < 0 (no non-NaN value) throws ZOTUNE_NONFINITE.
int32_t argmax_result(uint64_t r, int64_t i);

}  // namespace zt
