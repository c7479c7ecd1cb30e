// llama_validate (llama.h): the index checks of a forward, in a file of its own so that the CUDA
// addon's device model (cuda/kernels/llama.cu) runs the same checks without the CPU engine.
#include <algorithm>
#include <string>

#include "../common/status.h"
#include "llama.h"

namespace zt {
namespace {

[[noreturn]] void bad(Code c, const std::string& msg) { fail(c, "llama forward: " + msg); }

}  // namespace

void llama_validate(const LlamaConfig& c, const LlamaBatch& b, const KvCache* cache, const LlamaOutputs& o) {
  if (b.B == 0) bad(Code::InvalidArgument, "the batch is empty");
  if (b.seq_off[0] != 0) bad(Code::InvalidArgument, "sequence offsets must start at 0");
  for (size_t s = 0; s < b.B; ++s) {
    if (b.seq_off[s + 1] < b.seq_off[s]) bad(Code::InvalidArgument, "sequence offsets must be non-decreasing");
    size_t n = (size_t)(b.seq_off[s + 1] - b.seq_off[s]);
    if (cache) {
      if (cache->past[s] < 0 || (size_t)cache->past[s] + n > cache->cap)
        bad(Code::OutOfRange, "sequence " + std::to_string(s) + " needs KV slots up to " +
                                  std::to_string((size_t)std::max(cache->past[s], 0) + n) + " but the cache holds " +
                                  std::to_string(cache->cap));
    } else if (n > c.max_pos) {
      bad(Code::OutOfRange, "sequence " + std::to_string(s) + " has " + std::to_string(n) +
                                " tokens, more than max_position_embeddings " + std::to_string(c.max_pos));
    }
  }
  const size_t N = (size_t)b.seq_off[b.B];
  if (N == 0) bad(Code::InvalidArgument, "the batch has no tokens");
  for (size_t i = 0; i < N; ++i) {
    if (b.tokens[i] < 0 || (size_t)b.tokens[i] >= c.vocab)
      bad(Code::OutOfRange, "token id " + std::to_string(b.tokens[i]) + " at " + std::to_string(i) + " is outside [0, " +
                                std::to_string(c.vocab) + ")");
    if (b.positions[i] < 0 || (size_t)b.positions[i] >= c.max_pos)
      bad(Code::OutOfRange, "position " + std::to_string(b.positions[i]) + " at token " + std::to_string(i) +
                                " is outside [0, max_position_embeddings " + std::to_string(c.max_pos) + ")");
    if (o.targets && o.targets[i] >= 0 && (size_t)o.targets[i] >= c.vocab)
      bad(Code::OutOfRange, "target id " + std::to_string(o.targets[i]) + " at " + std::to_string(i) + " is outside [0, " +
                                std::to_string(c.vocab) + ")");
  }
  for (size_t j = 0; j < o.n_logit_rows; ++j)
    if (o.logit_rows[j] < 0 || (size_t)o.logit_rows[j] >= N)
      bad(Code::OutOfRange, "logit row " + std::to_string(o.logit_rows[j]) + " is outside the batch's " + std::to_string(N) + " tokens");
  if (o.vocab_subset) {
    if (o.targets || o.next) bad(Code::InvalidArgument, "a vocabulary subset of the logits excludes targets and next-token sampling (both need the whole softmax)");
    if (o.n_vocab_subset == 0) bad(Code::InvalidArgument, "the vocabulary subset is empty");
    for (size_t j = 0; j < o.n_vocab_subset; ++j)
      if (o.vocab_subset[j] < 0 || (size_t)o.vocab_subset[j] >= c.vocab)
        bad(Code::OutOfRange, "vocabulary subset id " + std::to_string(o.vocab_subset[j]) + " is outside [0, " + std::to_string(c.vocab) + ")");
  }
}

}  // namespace zt
