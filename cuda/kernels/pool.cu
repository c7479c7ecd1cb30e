#include <cuda_runtime.h>

#include <mutex>

#include "../../native/common/status.h"
#include "device.h"
#include "pool.h"

namespace zt {
namespace cuda {
namespace {

std::mutex mu;
DevStats stats{};

void count(int64_t delta, MemCategory cat) {
  int64_t& live = stats.live[(int)cat];
  live += delta;
  if (live > stats.peak[(int)cat]) stats.peak[(int)cat] = live;
  stats.total_live += delta;
  if (stats.total_live > stats.total_peak) stats.total_peak = stats.total_live;
}

}  // namespace

void* dev_alloc(size_t bytes, MemCategory cat) {
  if (bytes == 0) return nullptr;
  require_device();
  void* p = nullptr;
  check(cudaMalloc(&p, bytes), "cudaMalloc");
  std::lock_guard<std::mutex> lock(mu);
  count((int64_t)bytes, cat);
  return p;
}

void dev_free(void* p, size_t bytes, MemCategory cat) {
  if (!p) return;
  cudaFree(p);
  cudaGetLastError();
  std::lock_guard<std::mutex> lock(mu);
  count(-(int64_t)bytes, cat);
}

DevStats dev_stats() {
  std::lock_guard<std::mutex> lock(mu);
  return stats;
}

void dev_reset_peaks() {
  std::lock_guard<std::mutex> lock(mu);
  for (int c = 0; c < (int)MemCategory::Count; ++c) stats.peak[c] = stats.live[c];
  stats.total_peak = stats.total_live;
}

void dev_release_cache() {}

}  // namespace cuda
}  // namespace zt
