// The caching allocator behind the device pool, written over a two-function block source so that
// the same code runs on cudaMalloc/cudaFree (pool.cu) and on malloc/free with a capacity limit
// (the host self-test, which checks rounding, reuse, peaks, release and the OOM path without a GPU).
// Plain C++: no CUDA types.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "pool.h"

namespace zt {
namespace cuda {

// Where blocks come from.
struct BlockSource {
  virtual ~BlockSource() = default;
  // A block of exactly `bytes`, or nullptr when the memory is exhausted (other failures throw).
  virtual void* acquire(size_t bytes) = 0;
  virtual void release(void* p, size_t bytes) = 0;
  // What the source has left, for the out-of-memory message.
  virtual std::string describe() = 0;
};

class BlockCache {
 public:
  static constexpr size_t kSmallStep = 512;                // granularity up to kSmallMax
  static constexpr size_t kSmallMax = (size_t)1 << 20;     // 1 MiB
  static constexpr size_t kLargeStep = (size_t)2 << 20;    // 2 MiB granularity above it
  static constexpr size_t kMaxBytes = (size_t)1 << 48;     // beyond any device: OOM without asking
  // The size class of a request: the block size that serves it.
  static size_t block_size(size_t bytes);

  explicit BlockCache(BlockSource& src) : src_(src) {}
  // Gives every block back to the source, cached or still live.
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A cached block of the request's class, else a new one from the source; when the source is
  // exhausted, releases the whole cache and asks once more, then throws ZOTUNE_OOM.
  // bytes == 0 -> nullptr.
  void* alloc(size_t bytes, MemCategory cat);
  // Returns a live block to its class's free list. False for a pointer this cache did not hand out
  // (nothing is changed then). The caller must ensure no queued GPU work still uses the block.
  bool free(void* p);
  DevStats stats();
  void reset_peaks();
  // Gives every cached (free) block back to the source.
  void release_cached();

 private:
  struct Live {
    size_t bytes, block;
    MemCategory cat;
  };
  void count(int64_t delta, MemCategory cat);
  void* take_cached(size_t& block);
  void* acquire(size_t block, size_t bytes, MemCategory cat);
  void release_cached_locked();

  BlockSource& src_;
  std::mutex mu_;
  std::map<void*, Live> live_;  // not unordered_map: its rehash needs a newer libstdc++ than the CUDA addon declares
  std::map<size_t, std::vector<void*>> free_;  // block size -> cached blocks
  DevStats stats_{};
};

}  // namespace cuda
}  // namespace zt
