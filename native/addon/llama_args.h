// Arguments shared by the LLaMA bindings (bind_llama.cc, bind_llama_grad.cc): the config vector
// and the packed batch, parsed and checked in one place. `op` prefixes every error message.
//
// cfg (argument 0) = [hidden, layers, heads, kvHeads, headDim, intermediate, vocab, maxPositions,
//   eps, ropeTheta, llama3, factor, lowFreqFactor, highFreqFactor, originalMaxPositions].
// Batch (arguments 2..5) = tokens: i32[N], seqOffsets: i32[B+1], positions: i32[N], keyMask: u8[N] | null.
#pragma once
#include <stdint.h>

#include "../cpu/llama.h"
#include "napi_util.h"

namespace zt {

// a * b for tensor sizes; ZOTUNE_OUT_OF_RANGE past 2^60.
uint64_t llama_size_mul(uint64_t a, uint64_t b, const char* op);
LlamaConfig llama_config_arg(Args& a, const char* op);
LlamaBatch llama_batch_arg(Args& a, const char* op);

}  // namespace zt
