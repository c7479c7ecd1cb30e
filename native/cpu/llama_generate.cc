#include <algorithm>

#include "llama.h"

namespace zt {

size_t llama_generate(const LlamaConfig& c, const LlamaWeights& w, const LlamaBatch& prompt, KvCache& cache, int32_t* past,
                      int32_t* next_pos, const GenerateParams& g, const std::function<bool(size_t, const int32_t*)>& on_step) {
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
    cache.past = past;
    llama_validate(c, b, &cache, o);
    llama_forward(c, w, b, &cache, o);
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
