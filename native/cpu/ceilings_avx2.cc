// AVX2 ceiling kernels. The compute loops are inline asm: with intrinsics GCC merges identical
// FMA chains and hoists the loop-invariant int8 products, "measuring" impossible peaks.
#include <immintrin.h>

#include "ceilings.h"

namespace zt {
namespace avx2 {

void ceiling_read_range(const float* x, size_t n, float lanes[32]) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {  // lane l of a_k accumulates the elements i = 8k + l (mod 32)
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
  }
  _mm256_storeu_ps(lanes, a0);
  _mm256_storeu_ps(lanes + 8, a1);
  _mm256_storeu_ps(lanes + 16, a2);
  _mm256_storeu_ps(lanes + 24, a3);
  for (; i < n; ++i) lanes[i & 31] += x[i];
}

void ceiling_update_range(float* x, size_t n, float delta) {
  const __m256 d = _mm256_set1_ps(delta);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), d));
    _mm256_storeu_ps(x + i + 8, _mm256_add_ps(_mm256_loadu_ps(x + i + 8), d));
    _mm256_storeu_ps(x + i + 16, _mm256_add_ps(_mm256_loadu_ps(x + i + 16), d));
    _mm256_storeu_ps(x + i + 24, _mm256_add_ps(_mm256_loadu_ps(x + i + 24), d));
  }
  for (; i < n; ++i) x[i] += delta;
}

static inline double hsum_ps(__m256 v) {
  float f[8];
  _mm256_storeu_ps(f, v);
  double s = 0;
  for (int l = 0; l < 8; ++l) s += f[l];
  return s;
}

static inline double hsum_epi32(__m256i v) {
  int32_t f[8];
  _mm256_storeu_si256((__m256i*)f, v);
  double s = 0;
  for (int l = 0; l < 8; ++l) s += f[l];
  return s;
}

// 12 chains cover the FMA latency (4-5 cycles) times its throughput (2 per cycle on 128-bit
// halves or full 256-bit pipes).
double ceiling_fma_task(uint64_t iters) {
  __m256 x0 = _mm256_setzero_ps(), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0, x8 = x0, x9 = x0,
         x10 = x0, x11 = x0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (uint64_t i = 0; i < iters; ++i) {
    __asm__ volatile(
        "vfmadd231ps %[o], %[o], %[x0]\n\t"
        "vfmadd231ps %[o], %[o], %[x1]\n\t"
        "vfmadd231ps %[o], %[o], %[x2]\n\t"
        "vfmadd231ps %[o], %[o], %[x3]\n\t"
        "vfmadd231ps %[o], %[o], %[x4]\n\t"
        "vfmadd231ps %[o], %[o], %[x5]\n\t"
        "vfmadd231ps %[o], %[o], %[x6]\n\t"
        "vfmadd231ps %[o], %[o], %[x7]\n\t"
        "vfmadd231ps %[o], %[o], %[x8]\n\t"
        "vfmadd231ps %[o], %[o], %[x9]\n\t"
        "vfmadd231ps %[o], %[o], %[x10]\n\t"
        "vfmadd231ps %[o], %[o], %[x11]\n\t"
        : [x0] "+x"(x0), [x1] "+x"(x1), [x2] "+x"(x2), [x3] "+x"(x3), [x4] "+x"(x4), [x5] "+x"(x5), [x6] "+x"(x6),
          [x7] "+x"(x7), [x8] "+x"(x8), [x9] "+x"(x9), [x10] "+x"(x10), [x11] "+x"(x11)
        : [o] "x"(one));
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                           _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
  return hsum_ps(s) + hsum_ps(_mm256_add_ps(_mm256_add_ps(x8, x9), _mm256_add_ps(x10, x11)));
}

// 6 chains: per chain t = maddubs(u8, s8) (16-bit pairs), t = maddwd(t, 1) (32-bit), acc += t.
double ceiling_int8_task(uint64_t iters) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  __m256i t0, t1, t2, t3, t4, t5;
  const __m256i u = _mm256_set1_epi8(1), s = _mm256_set1_epi8(1), ones = _mm256_set1_epi16(1);
  for (uint64_t i = 0; i < iters; ++i) {
    __asm__ volatile(
        "vpmaddubsw %[s], %[u], %[t0]\n\t"
        "vpmaddubsw %[s], %[u], %[t1]\n\t"
        "vpmaddubsw %[s], %[u], %[t2]\n\t"
        "vpmaddubsw %[s], %[u], %[t3]\n\t"
        "vpmaddubsw %[s], %[u], %[t4]\n\t"
        "vpmaddubsw %[s], %[u], %[t5]\n\t"
        "vpmaddwd %[w], %[t0], %[t0]\n\t"
        "vpmaddwd %[w], %[t1], %[t1]\n\t"
        "vpmaddwd %[w], %[t2], %[t2]\n\t"
        "vpmaddwd %[w], %[t3], %[t3]\n\t"
        "vpmaddwd %[w], %[t4], %[t4]\n\t"
        "vpmaddwd %[w], %[t5], %[t5]\n\t"
        "vpaddd %[t0], %[a0], %[a0]\n\t"
        "vpaddd %[t1], %[a1], %[a1]\n\t"
        "vpaddd %[t2], %[a2], %[a2]\n\t"
        "vpaddd %[t3], %[a3], %[a3]\n\t"
        "vpaddd %[t4], %[a4], %[a4]\n\t"
        "vpaddd %[t5], %[a5], %[a5]\n\t"
        : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3), [a4] "+x"(a4), [a5] "+x"(a5),
          [t0] "=&x"(t0), [t1] "=&x"(t1), [t2] "=&x"(t2), [t3] "=&x"(t3), [t4] "=&x"(t4), [t5] "=&x"(t5)
        : [u] "x"(u), [s] "x"(s), [w] "x"(ones));
  }
  __m256i sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                                 _mm256_add_epi32(a4, a5));
  return hsum_epi32(sum);
}

}  // namespace avx2
}  // namespace zt
