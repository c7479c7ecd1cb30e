#include "block_cache.h"

#include <cstdio>

#include "../../native/common/status.h"

namespace zt {
namespace cuda {
namespace {

std::string mib(int64_t bytes) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f MiB", (double)bytes / (1 << 20));
  return s;
}

}  // namespace

size_t BlockCache::block_size(size_t bytes) {
  const size_t step = bytes <= kSmallMax ? kSmallStep : kLargeStep;
  return (bytes + step - 1) / step * step;
}

BlockCache::~BlockCache() {
  release_cached_locked();
  for (auto& [p, b] : live_) src_.release(p, b.block);
}

void BlockCache::count(int64_t delta, MemCategory cat) {
  int64_t& live = stats_.live[(int)cat];
  live += delta;
  if (live > stats_.peak[(int)cat]) stats_.peak[(int)cat] = live;
  stats_.total_live += delta;
  if (stats_.total_live > stats_.total_peak) stats_.total_peak = stats_.total_live;
}

void* BlockCache::alloc(size_t bytes, MemCategory cat) {
  if (bytes == 0) return nullptr;
  if (bytes > kMaxBytes) fail(Code::OOM, "device allocation of " + std::to_string(bytes) + " bytes is beyond any device");
  size_t block = block_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* p = take_cached(block);  // may hand out a somewhat larger block: `block` becomes its size
  if (!p) p = acquire(block, bytes, cat);
  live_[p] = {bytes, block, cat};
  count((int64_t)bytes, cat);
  return p;
}

void* BlockCache::take_cached(size_t& block) {
  // Best fit up to a quarter larger: calls whose shapes differ slightly (every ZO step's batch)
  // reuse one block instead of caching one per size class until the device fills.
  auto it = free_.lower_bound(block);
  if (it == free_.end() || it->first > block + block / 4) return nullptr;
  block = it->first;
  void* p = it->second.back();
  it->second.pop_back();
  if (it->second.empty()) free_.erase(it);
  stats_.cached -= (int64_t)block;
  return p;
}

void* BlockCache::acquire(size_t block, size_t bytes, MemCategory cat) {
  void* p = src_.acquire(block);
  const int64_t cached = stats_.cached;
  if (!p && cached) {  // blocks of other classes may be what the source is missing
    release_cached_locked();
    p = src_.acquire(block);
  }
  if (!p)
    fail(Code::OOM, "device out of memory allocating " + std::to_string(bytes) + " bytes (" + std::to_string(block) +
                        "-byte block) for " + mem_category_name(cat) + ": engine device memory live " + mib(stats_.total_live) +
                        ", peak " + mib(stats_.total_peak) + ", " + (cached ? mib(cached) + " of cached blocks released first; " : "nothing cached; ") + src_.describe());
  stats_.reserved += (int64_t)block;
  stats_.driver_allocs++;
  return p;
}

bool BlockCache::free(void* p) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  if (it == live_.end()) return false;
  const Live b = it->second;
  live_.erase(it);
  free_[b.block].push_back(p);
  stats_.cached += (int64_t)b.block;
  count(-(int64_t)b.bytes, b.cat);
  return true;
}

DevStats BlockCache::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BlockCache::reset_peaks() {
  std::lock_guard<std::mutex> lock(mu_);
  for (int c = 0; c < (int)MemCategory::Count; ++c) stats_.peak[c] = stats_.live[c];
  stats_.total_peak = stats_.total_live;
}

void BlockCache::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void BlockCache::release_cached_locked() {
  for (auto& [block, list] : free_)
    for (void* p : list) src_.release(p, block);
  free_.clear();
  stats_.reserved -= stats_.cached;
  stats_.cached = 0;
}

}  // namespace cuda
}  // namespace zt
