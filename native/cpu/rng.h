// Filling buffers with counter-based random numbers (see native/common/philox.h for the map).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../common/philox.h"

namespace zt {

enum class Dist : int { Uniform = 0, Normal = 1, Rademacher = 2, Bernoulli = 3 };

// out[j] = draw(key, first + j) for j in [0, n). Bernoulli gives 1.0 with probability p, else 0.
void rng_fill(float* out, size_t n, RngKey key, uint64_t first, Dist dist, double p);
// Raw Philox words of the word stream: out[j] = random_word(key, first + j).
void rng_words(uint32_t* out, size_t n, RngKey key, uint64_t first);

// Range kernels (elements [begin, end) of the stream written to out[0 .. end-begin)).
void rng_fill_range_ref(float* out, uint64_t begin, uint64_t end, RngKey key, Dist dist, uint64_t threshold);
namespace avx2 {
void rng_fill_range(float* out, uint64_t begin, uint64_t end, RngKey key, Dist dist, uint64_t threshold);
}

}  // namespace zt
