#include "perturb.h"

#include <string>
#include <vector>

#include "../common/status.h"
#include "cpu_features.h"
#include "memory.h"
#include "threadpool.h"

namespace zt {

void perturb_range_ref(float* w, uint64_t begin, uint64_t end, const Direction& d, float alpha, float keep) {
  for (uint64_t i = begin; i < end; ++i) w[i - begin] = perturbed_decayed(w[i - begin], keep, alpha, direction_at(d, i));
}

void perturb_gather_ref(float* w, const uint32_t* idx, size_t m, const Direction& d, uint64_t first, float alpha) {
  for (size_t j = 0; j < m; ++j) w[idx[j]] = perturbed(w[idx[j]], alpha, direction_at(d, first + idx[j]));
}

void direction_codes_ref(int8_t* out, uint64_t begin, uint64_t end, const Direction& d) {
  for (uint64_t i = begin; i < end; ++i) out[i - begin] = (int8_t)direction_code_at(d, i);
}

// Tasks own element windows [k * chunk, (k + 1) * chunk) of the direction, aligned to the RNG blocks
// (1024 elements holds whole word- and bit-stream blocks), so only the two ends of a call are partial
// blocks however `first` is aligned.
void perturb_dense(float* w, size_t n, const Direction& d, uint64_t first, float alpha, float keep) {
  const DenseSpan one{w, n, d, first, keep};
  perturb_dense_many(&one, 1, alpha);
}

void perturb_dense_many(const DenseSpan* spans, size_t count, float alpha) {
  // 16384 elements (~30 us of Gaussian work) per task: a 256 x 256 projection is 4 tasks, not one
  constexpr uint64_t chunk = 1 << 14;
  std::vector<uint64_t> tasks(count);
  for (size_t s = 0; s < count; ++s) {
    check_direction(spans[s].d);
    const uint64_t lo = spans[s].first, hi = lo + spans[s].n;
    tasks[s] = spans[s].n ? (hi + chunk - 1) / chunk - lo / chunk : 0;
  }
  auto kernel = use_avx2() ? avx2::perturb_range : perturb_range_ref;
  parallel_for_groups(tasks, [&](size_t s, uint64_t t) {
    const DenseSpan& p = spans[s];
    const uint64_t lo = p.first, hi = lo + p.n;
    uint64_t b = (lo / chunk + t) * chunk, e = b + chunk;
    if (b < lo) b = lo;
    if (e > hi) e = hi;
    kernel(p.w + (b - lo), b, e, p.d, alpha, p.keep);
  });
}

namespace {

// Every index < n and no index twice; throws before the caller writes anything. Strictly increasing
// lists (the usual mask layout) are accepted by a parallel scan; other orders go through a bitmap of
// n bits (1/32 of the tensor's own size).
void check_indices(const uint32_t* idx, size_t m, size_t n) {
  constexpr size_t chunk = 1 << 16;
  const size_t tasks = (m + chunk - 1) / chunk;
  struct Scan { size_t bad = SIZE_MAX; bool increasing = true; };
  std::vector<Scan> scans(tasks);
  parallel_for(tasks, [&](size_t t) {
    size_t b = t * chunk, e = b + chunk < m ? b + chunk : m;
    Scan s;
    for (size_t j = b; j < e; ++j) {
      if (idx[j] >= n && s.bad == SIZE_MAX) s.bad = j;
      if (j > 0 && idx[j] <= idx[j - 1]) s.increasing = false;
    }
    scans[t] = s;
  });
  size_t bad = SIZE_MAX;
  bool increasing = true;
  for (size_t t = 0; t < tasks; ++t) {
    if (bad == SIZE_MAX) bad = scans[t].bad;
    increasing = increasing && scans[t].increasing;
  }
  if (bad != SIZE_MAX)
    fail(Code::OutOfRange, "perturbIndices: indices[" + std::to_string(bad) + "] = " + std::to_string(idx[bad]) +
                               " is out of range for a tensor of " + std::to_string(n) + " elements");
  if (increasing) return;
  const size_t words = (n + 63) / 64, bytes = words * sizeof(uint64_t);
  uint64_t* seen = static_cast<uint64_t*>(host_alloc(bytes, MemCategory::Workspace));
  for (size_t k = 0; k < words; ++k) seen[k] = 0;
  size_t dup = SIZE_MAX;
  for (size_t j = 0; j < m; ++j) {
    uint64_t bit = (uint64_t)1 << (idx[j] & 63), &word = seen[idx[j] >> 6];
    if (word & bit) { dup = j; break; }
    word |= bit;
  }
  host_free(seen, bytes, MemCategory::Workspace);
  if (dup != SIZE_MAX)
    fail(Code::InvalidArgument, "perturbIndices: indices[" + std::to_string(dup) + "] = " + std::to_string(idx[dup]) +
                                    " repeats an earlier index (each element may be listed once)");
}

}  // namespace

void perturb_indices(float* w, size_t n, const uint32_t* idx, size_t m, const Direction& d, uint64_t first, float alpha) {
  check_direction(d);
  if (m == 0) return;
  check_indices(idx, m, n);
  // Distinct indices: every task writes its own elements, in any schedule.
  auto kernel = use_avx2() ? avx2::perturb_gather : perturb_gather_ref;
  parallel_chunks(m, 1 << 14, [&](size_t b, size_t e) { kernel(w, idx + b, e - b, d, first, alpha); });
}

}  // namespace zt
