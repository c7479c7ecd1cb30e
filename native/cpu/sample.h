// Sampling the next token from one row of logits: the CPU forward's (llama.cc, o.next) and the
// device model's (cuda/kernels/llama.cu: the row copied back, sampled on the host), so both draw
// the same token from the same logits and u.
//
// temperature <= 0 means greedy (argmax). Otherwise the distribution softmax(logits / temperature)
// is restricted to the top_k most likely ids (0 = all; ties broken by lower id), then to the
// smallest most-likely-first prefix whose mass reaches top_p (1 = all; the first id always stays),
// renormalised, and sampled by inverse CDF with u in (0, 1) (in most-likely-first order, or id
// order when neither filter applies).
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace zt {

struct SampleParams {
  float temperature = 0;
  uint32_t top_k = 0;
  float top_p = 1;
};

// `best` = the row's argmax (the first maximum, NaN ignored; -1 for a row of NaN), computed by the
// caller's fastest path: the id drawn, or -1 for a row of NaN.
int64_t sample_ranked(const float* logits, size_t n, const SampleParams& p, float u, int64_t best);

}  // namespace zt
