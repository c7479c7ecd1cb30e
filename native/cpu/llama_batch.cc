// The extent of a packed batch and its LM-head rows: shared by the CPU forward's plan
// (llama.cc) and the device model's (cuda/kernels/llama.cu), so both see the same rows.
#include <algorithm>

#include "llama.h"

namespace zt {

LlamaBatchShape llama_batch_shape(const LlamaBatch& b, const LlamaOutputs& o) {
  LlamaBatchShape s;
  s.N = (size_t)b.seq_off[b.B];
  for (size_t q = 0; q < b.B; ++q) s.T = std::max(s.T, (size_t)(b.seq_off[q + 1] - b.seq_off[q]));
  int32_t lo = b.positions[0], hi = b.positions[0];
  for (size_t i = 0; i < s.N; ++i) lo = std::min(lo, b.positions[i]), hi = std::max(hi, b.positions[i]);
  s.pos0 = lo;
  s.P = (size_t)(hi - lo) + 1;
  std::vector<uint8_t> need(s.N, 0);
  if (o.targets)
    for (size_t i = 0; i < s.N; ++i) need[i] |= o.targets[i] >= 0;
  for (size_t j = 0; j < o.n_logit_rows; ++j) need[(size_t)o.logit_rows[j]] = 1;
  if (o.next)
    for (size_t q = 0; q < b.B; ++q)
      if (b.seq_off[q + 1] > b.seq_off[q]) need[(size_t)b.seq_off[q + 1] - 1] = 1;
  for (size_t i = 0; i < s.N; ++i)
    if (need[i]) s.head_rows.push_back((int32_t)i);
  return s;
}

}  // namespace zt
