#include "ceilings.h"

#include <vector>

#include "../common/status.h"
#include "cpu_features.h"
#include "threadpool.h"

namespace zt {

void ceiling_read_range_ref(const float* x, size_t n, float lanes[32]) {
  for (int l = 0; l < 32; ++l) lanes[l] = 0.0f;
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int l = 0; l < 32; ++l) lanes[l] += x[i + l];
  for (; i < n; ++i) lanes[i & 31] += x[i];
}

void ceiling_update_range_ref(float* x, size_t n, float delta) {
  for (size_t i = 0; i < n; ++i) x[i] += delta;
}

namespace {
// 1 MiB per task: with 256 KiB the prefetchers restarted often enough to read ~10 % low
constexpr size_t kChunk = 1 << 18;
}

double ceiling_read(const float* x, size_t n) {
  const size_t tasks = (n + kChunk - 1) / kChunk;
  std::vector<float> lanes(tasks * 32);
  auto kernel = use_avx2() ? avx2::ceiling_read_range : ceiling_read_range_ref;
  parallel_for(tasks, [&](size_t t) {
    size_t b = t * kChunk, e = b + kChunk < n ? b + kChunk : n;
    kernel(x + b, e - b, &lanes[t * 32]);
  });
  double sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

void ceiling_update(float* x, size_t n, float delta) {
  auto kernel = use_avx2() ? avx2::ceiling_update_range : ceiling_update_range_ref;
  parallel_chunks(n, kChunk, [&](size_t b, size_t e) { kernel(x + b, e - b, delta); });
}

namespace {

double compute_ceiling(uint64_t tasks, double (*task)(uint64_t), uint64_t iters) {
  check(use_avx2(), Code::Unsupported, "compute ceilings measure the AVX2/FMA units; the scalar path has none");
  std::vector<double> sums(tasks);
  parallel_for(tasks, [&](size_t t) { sums[t] = task(iters); });
  double sum = 0;
  for (double v : sums) sum += v;
  return sum;
}

}  // namespace

double ceiling_fma(uint64_t tasks, uint64_t iters) { return compute_ceiling(tasks, avx2::ceiling_fma_task, iters); }
double ceiling_int8(uint64_t tasks, uint64_t iters) { return compute_ceiling(tasks, avx2::ceiling_int8_task, iters); }
double ceiling_fma512(uint64_t tasks, uint64_t iters) {
  check(use_avx512(), Code::Unsupported, "the AVX-512 FMA ceiling measures zmm units: the avx512 path only");
  return compute_ceiling(tasks, avx512::ceiling_fma512_task, iters);
}
double ceiling_vnni(uint64_t tasks, uint64_t iters) {
  check(use_avx512(), Code::Unsupported, "the VNNI ceiling measures AVX-512 VNNI units: the avx512 path only");
  return compute_ceiling(tasks, avx512::ceiling_vnni_task, iters);
}

}  // namespace zt
