#include "llama.h"

namespace zt {

size_t llama_generate(const LlamaConfig& c, const LlamaWeights& w, const LlamaBatch& prompt, KvCache& cache, int32_t* past,
                      int32_t* next_pos, const GenerateParams& g, const std::function<bool(size_t, const int32_t*)>& on_step) {
  return decode_loop(prompt, past, next_pos, g, [&](const LlamaBatch& b, LlamaOutputs& o) {
    cache.past = past;
    llama_validate(c, b, &cache, o);
    llama_forward(c, w, b, &cache, o);
  }, on_step);
}

}  // namespace zt
