#include "memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "../common/status.h"

namespace zt {
namespace {

constexpr int kCats = (int)MemCategory::Count;
const char* kNames[kCats] = {"weights", "activations", "gradients", "optimizer", "workspace", "other"};
std::atomic<int64_t> g_live[kCats], g_peak[kCats], g_total{0}, g_total_peak{0};

void raise_peak(std::atomic<int64_t>& peak, int64_t v) {
  int64_t p = peak.load();
  while (v > p && !peak.compare_exchange_weak(p, v)) {
  }
}

// Freed transient blocks (everything but weights and optimizer state) of at least kCacheMinBytes
// are kept and handed to the next request they fit, instead of going back to the C library. A
// forward's activation arena is tens of MB; returned to the OS after each call, its pages fault
// in again on the next (one fault per 4 KiB: on a VM ~4,000-13,000 faults, 5-40 ms of system time
// per tiny-llama forward or probe). Cached bytes are not live: memory() reports them apart.
constexpr size_t kCacheMinBytes = 256u << 10;
constexpr size_t kHugeBytes = 2u << 20;  // blocks of at least 2 huge pages are 2 MiB aligned + MADV_HUGEPAGE

struct Block {
  void* p;
  size_t cap;
};

class BlockCache {
 public:
  // A cached block of at least `bytes` (and at most twice that, so a small request does not pin a
  // large block), or null.
  Block take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t best = blocks_.size();
    for (size_t i = 0; i < blocks_.size(); ++i)
      if (blocks_[i].cap >= bytes && blocks_[i].cap / 2 <= bytes && (best == blocks_.size() || blocks_[i].cap < blocks_[best].cap)) best = i;
    if (best == blocks_.size()) return {nullptr, 0};
    Block b = blocks_[best];
    blocks_.erase(blocks_.begin() + best);
    total_ -= b.cap;
    return b;
  }
  // Keeps b (most recent last), dropping the least recently freed blocks beyond the limit.
  void put(Block b) {
    std::vector<Block> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks_.push_back(b);
      total_ += b.cap;
      while (total_ > limit() && !blocks_.empty()) {
        drop.push_back(blocks_.front());
        total_ -= blocks_.front().cap;
        blocks_.erase(blocks_.begin());
      }
    }
    for (const Block& d : drop) std::free(d.p);
  }
  void release() {
    std::vector<Block> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop.swap(blocks_);
      total_ = 0;
    }
    for (const Block& d : drop) std::free(d.p);
  }
  int64_t bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return (int64_t)total_;
  }

 private:
  // ZOTUNE_HOST_CACHE_MB, else an eighth of physical memory.
  static size_t limit() {
    static const size_t v = [] {
      if (const char* e = std::getenv("ZOTUNE_HOST_CACHE_MB")) return (size_t)std::strtoull(e, nullptr, 10) << 20;
      long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
      return pages > 0 && page > 0 ? (size_t)pages * (size_t)page / 8 : (size_t)1 << 30;
    }();
    return v;
  }
  std::mutex mu_;
  std::vector<Block> blocks_;
  size_t total_ = 0;
};
// Never destroyed: thread-local and static buffers of other files free into it during exit.
BlockCache& g_cache = *new BlockCache;

bool cacheable(size_t bytes, MemCategory cat) {
  return bytes >= kCacheMinBytes && cat != MemCategory::Weights && cat != MemCategory::OptimizerState;
}

// Cacheable blocks carry their capacity in a 64-byte header (a reused block can be larger than
// the request that frees it).
constexpr size_t kHeader = 64;

void* alloc_cacheable(size_t rounded) {
  Block b = g_cache.take(rounded);
  if (!b.p) {
    const bool huge = rounded + kHeader >= 2 * kHugeBytes;
    b.cap = huge ? (rounded + kHeader + kHugeBytes - 1) / kHugeBytes * kHugeBytes - kHeader : rounded;
    b.p = std::aligned_alloc(huge ? kHugeBytes : 64, b.cap + kHeader);
    if (!b.p) return nullptr;
#ifdef MADV_HUGEPAGE
    if (huge) madvise(b.p, b.cap + kHeader, MADV_HUGEPAGE);  // a hint: fewer faults where THP is 'madvise'
#endif
  }
  std::memcpy(b.p, &b.cap, sizeof b.cap);
  return (uint8_t*)b.p + kHeader;
}

}  // namespace

void host_cache_release() { g_cache.release(); }

const char* mem_category_name(MemCategory c) { return kNames[(int)c]; }

bool mem_category_from_name(const char* name, MemCategory* out) {
  for (int i = 0; i < kCats; ++i)
    if (std::strcmp(name, kNames[i]) == 0) {
      *out = (MemCategory)i;
      return true;
    }
  return false;
}

void* host_alloc(size_t bytes, MemCategory cat) {
  constexpr size_t kAlign = 64;
  if (bytes > ((size_t)1 << 46)) fail(Code::OOM, "allocation of " + std::to_string(bytes) + " bytes is beyond any host");
  size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  auto attempt = [&] { return cacheable(bytes, cat) ? alloc_cacheable(rounded) : rounded ? std::aligned_alloc(kAlign, rounded) : nullptr; };
  void* p = attempt();
  if (rounded && !p) {  // the cache's blocks first
    g_cache.release();
    p = attempt();
  }
  if (rounded && !p) fail(Code::OOM, "out of host memory allocating " + std::to_string(bytes) + " bytes");
  int c = (int)cat;
  raise_peak(g_peak[c], g_live[c].fetch_add((int64_t)bytes) + (int64_t)bytes);
  raise_peak(g_total_peak, g_total.fetch_add((int64_t)bytes) + (int64_t)bytes);
  return p;
}

void host_free(void* p, size_t bytes, MemCategory cat) {
  if (p && cacheable(bytes, cat)) {
    Block b{(uint8_t*)p - kHeader, 0};
    std::memcpy(&b.cap, b.p, sizeof b.cap);
    g_cache.put(b);
  } else {
    std::free(p);
  }
  g_live[(int)cat].fetch_sub((int64_t)bytes);
  g_total.fetch_sub((int64_t)bytes);
}

MemStats mem_stats() {
  MemStats s;
  for (int i = 0; i < kCats; ++i) {
    s.live[i] = g_live[i].load();
    s.peak[i] = g_peak[i].load();
  }
  s.total_live = g_total.load();
  s.total_peak = g_total_peak.load();
  s.cached = g_cache.bytes();
  return s;
}

void mem_reset_peaks() {
  for (int i = 0; i < kCats; ++i) g_peak[i].store(g_live[i].load());
  g_total_peak.store(g_total.load());
}

}  // namespace zt
