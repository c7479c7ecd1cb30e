#include "rng.h"

#include "cpu_features.h"
#include "threadpool.h"

namespace zt {

void rng_fill_range_ref(float* out, uint64_t begin, uint64_t end, RngKey key, Dist dist, uint64_t threshold) {
  for (uint64_t i = begin; i < end; ++i) {
    float v;
    switch (dist) {
      case Dist::Uniform: v = uniform_open(random_word(key, i)); break;
      case Dist::Normal: v = normal_at(key, i); break;
      case Dist::Rademacher: v = rademacher_at(key, i); break;
      default: v = (uint64_t)random_word(key, i) < threshold ? 1.0f : 0.0f; break;
    }
    out[i - begin] = v;
  }
}

void rng_fill(float* out, size_t n, RngKey key, uint64_t first, Dist dist, double p) {
  const uint64_t thr = bernoulli_threshold(p);
  auto kernel = use_avx2() ? avx2::rng_fill_range : rng_fill_range_ref;
  parallel_chunks(n, 1 << 16, [&](size_t b, size_t e) { kernel(out + b, first + b, first + e, key, dist, thr); });
}

void rng_words(uint32_t* out, size_t n, RngKey key, uint64_t first) {
  parallel_chunks(n, 1 << 16, [&](size_t b, size_t e) {
    for (size_t j = b; j < e; ++j) out[j] = random_word(key, first + j);
  });
}

}  // namespace zt
