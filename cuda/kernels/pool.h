// Device memory of the engine: every device allocation goes through this pool, which counts
// live bytes and the high-water mark per category (memory() reports them) and caches freed blocks
// by size class so a training loop does not call cudaMalloc per step. Plain C++ header (no CUDA
// types), so the N-API glue can include it.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <utility>

#include "../../native/cpu/memory.h"  // MemCategory: the same categories as host memory

namespace zt {
namespace cuda {

// Device memory of at least `bytes` (256-byte aligned) on the current device; throws ZOTUNE_OOM
// (after releasing the cache and retrying once) when the device is full. bytes == 0 -> nullptr.
void* dev_alloc(size_t bytes, MemCategory cat);
// Returns a block from dev_alloc (same bytes and category) to the pool. nullptr is ignored. The
// block is reused by the next dev_alloc of its size class at once, from any thread: synchronize the
// stream that last used it first. Declare DeviceBuffers before
// the TimedCall that owns the stream (timed_call.h), so error paths free them after the drain.
void dev_free(void* p, size_t bytes, MemCategory cat);

struct DevStats {
  int64_t live[(int)MemCategory::Count];
  int64_t peak[(int)MemCategory::Count];
  int64_t total_live, total_peak;  // over all categories (peak of the sum, not the sum of peaks)
  int64_t cached;                  // freed blocks kept for reuse (held from the driver, not live)
  int64_t reserved;                // held from the driver: live blocks (rounded up) + cached
  int64_t driver_allocs;           // cudaMalloc calls that succeeded (a reuse adds none)
};
DevStats dev_stats();
void dev_reset_peaks();
// Gives every cached block back to the driver.
void dev_release_cache();

// Synchronous copies between host memory and a block from dev_alloc (pointers already offset).
void dev_upload(void* dst, const void* src, size_t bytes);
void dev_download(void* dst, const void* src, size_t bytes);

// An owned device allocation, released on every path (errors included).
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  MemCategory cat = MemCategory::Workspace;
  DeviceBuffer() = default;
  DeviceBuffer(size_t n, MemCategory c = MemCategory::Workspace)
      : ptr((T*)dev_alloc(n * sizeof(T), c)), count(n), cat(c) {}
  ~DeviceBuffer() { dev_free(ptr, count * sizeof(T), cat); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), count(o.count), cat(o.cat) { o.ptr = nullptr, o.count = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr, o.ptr), std::swap(count, o.count), std::swap(cat, o.cat);
    return *this;  // o frees what this held
  }
  size_t bytes() const { return count * sizeof(T); }
};

}  // namespace cuda
}  // namespace zt
