// One persistent, process-wide thread pool shared by every CPU kernel.
// Work is split into tasks whose boundaries never depend on the thread count, and every task
// writes its own output, so results are identical for any number of threads.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <vector>

namespace zt {

// Number of threads kernels use (the caller counts as one). Default: ZOTUNE_NUM_THREADS or the
// number of online cores.
int pool_threads();
void pool_set_threads(int n);

// Runs fn(ctx, task) for every task in [0, n) and returns when all are done. The first exception
// thrown by a task is rethrown here. Calls from several threads are serialized.
void pool_run(size_t n, void (*fn)(void*, size_t), void* ctx);

template <class F>
void parallel_for(size_t n, F&& f) {
  pool_run(n, [](void* c, size_t i) { (*static_cast<F*>(c))(i); }, &f);
}

// Splits [0, count) into chunks of `chunk` elements (the last may be shorter) and calls
// f(begin, end) for each in parallel.
template <class F>
void parallel_chunks(size_t count, size_t chunk, F&& f) {
  if (count == 0) return;
  size_t n = (count + chunk - 1) / chunk;
  parallel_for(n, [&](size_t t) {
    size_t b = t * chunk, e = b + chunk < count ? b + chunk : count;
    f(b, e);
  });
}

// Rows per task of a kernel that streams each weight row once (the GEMVs): about kStreamTaskBytes of
// weights, so that the hardware prefetchers, which start over at every task, run at full rate most
// of the time (64-128 KiB tasks lost 15-30 % of the DRAM rate of a 4096 x 4096 int4 GEMV on 2
// cores), in multiples of 16 rows, at least 32 and at most a quarter of the rows (small matrices keep
// enough tasks for every thread). A function of the shape only, like every task split here.
static constexpr uint64_t kStreamTaskBytes = 512u << 10;
inline uint64_t stream_rows_per_task(uint64_t rows, uint64_t row_bytes) {
  const uint64_t by_bytes = kStreamTaskBytes / (row_bytes ? row_bytes : 1) / 16 * 16;
  const uint64_t cap = std::max<uint64_t>(32, rows / 4 / 16 * 16);
  return std::min(std::max<uint64_t>(by_bytes, 32), cap);
}

// Several groups of tasks as one job (one fork and join): counts[g] tasks of group g, f(g, t) for
// t in [0, counts[g]).
template <class F>
void parallel_for_groups(const std::vector<uint64_t>& counts, F&& f) {
  std::vector<uint64_t> first(counts.size() + 1, 0);  // group g owns tasks [first[g], first[g + 1])
  for (size_t g = 0; g < counts.size(); ++g) first[g + 1] = first[g] + counts[g];
  parallel_for(first.back(), [&](size_t t) {
    const size_t g = (size_t)(std::upper_bound(first.begin(), first.end(), (uint64_t)t) - first.begin()) - 1;
    f(g, t - first[g]);
  });
}

}  // namespace zt
