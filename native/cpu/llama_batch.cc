// The extent of a packed batch, its LM-head rows, the rows its last layer finishes and the decode
// loop: shared by the CPU model (llama.cc, llama_generate.cc) and the device model
// (cuda/kernels/llama.cu), so both see the same rows and steps.
#include <algorithm>

#include "gemm.h"
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

LastRows last_rows(const LlamaBatch& b, const std::vector<int32_t>& head_rows, const int32_t* start) {
  const size_t N = (size_t)b.seq_off[b.B];
  std::vector<int32_t> lo(b.B), hi(b.B);  // span [lo, hi) of each sequence
  size_t total = 0;
  for (size_t s = 0; s < b.B; ++s) {
    auto first = std::lower_bound(head_rows.begin(), head_rows.end(), b.seq_off[s]);
    auto end = std::lower_bound(first, head_rows.end(), b.seq_off[s + 1]);
    lo[s] = hi[s] = b.seq_off[s + 1];
    if (first != end) lo[s] = *first, hi[s] = *(end - 1) + 1;
    total += (size_t)(hi[s] - lo[s]);
  }
  for (size_t s = b.B; total > 0 && s-- > 0 && !gemm_same_bits(total, N);) {
    const size_t grow = std::min((size_t)(lo[s] - b.seq_off[s]), kGemvMaxRows + 1 - total);
    lo[s] -= (int32_t)grow;
    total += grow;
  }
  LastRows t;
  if (total == N || (total > 0 && !gemm_same_bits(total, N))) return t;  // nothing to skip
  t.on = true;  // also with no head row at all (a prompt only filling a cache needs the keys and values)
  t.off.assign(b.B + 1, 0);
  t.start.assign(b.B, 0);
  for (size_t s = 0; s < b.B; ++s) {
    t.start[s] = start[s] + (lo[s] - b.seq_off[s]);
    for (int32_t r = lo[s]; r < hi[s]; ++r) t.rows.push_back(r);
    t.off[s + 1] = (int32_t)t.rows.size();
  }
  return t;
}

size_t decode_loop(const LlamaBatch& prompt, int32_t* past, int32_t* next_pos, const GenerateParams& g, const DecodeForward& forward,
                   const std::function<bool(size_t, const int32_t*)>& on_step) {
  const size_t B = prompt.B;
  std::vector<int32_t> next(B), tokens, offsets(B + 1, 0), positions;
  std::vector<uint8_t> done(B, 0);
  LlamaBatch b = prompt;
  for (size_t step = 0; step < g.max_new; ++step) {
    LlamaOutputs o;
    o.next = next.data();
    o.sample = g.sample;
    o.seed = g.seed;
    std::fill(next.begin(), next.end(), -1);
    forward(b, o);
    for (size_t s = 0; s < B; ++s) {  // new tokens fill slots; real ones advance the positions
      past[s] += b.seq_off[s + 1] - b.seq_off[s];
      for (int32_t i = b.seq_off[s]; i < b.seq_off[s + 1]; ++i) next_pos[s] += !b.key_mask || b.key_mask[i];
    }
    const bool go_on = on_step(step, next.data());
    bool all_done = true;
    for (size_t s = 0; s < B; ++s) {
      if (next[s] >= 0 && std::find(g.stop.begin(), g.stop.end(), next[s]) != g.stop.end()) done[s] = 1;
      all_done = all_done && done[s];
    }
    if (!go_on || all_done) return step + 1;
    tokens.clear();
    positions.clear();
    for (size_t s = 0; s < B; ++s) {
      if (!done[s] && next[s] >= 0) {
        tokens.push_back(next[s]);
        positions.push_back(next_pos[s]);
      }
      offsets[s + 1] = (int32_t)tokens.size();
    }
    b = LlamaBatch{B, tokens.data(), offsets.data(), positions.data(), nullptr};
  }
  return g.max_new;
}

}  // namespace zt
