// The process-wide device pool: a BlockCache over cudaMalloc/cudaFree on the current device (the
// engine never switches devices after probe(), so cached blocks always belong to it).
#include <cuda_runtime.h>

#include <cstdio>

#include "block_cache.h"
#include "device.h"

namespace zt {
namespace cuda {
namespace {

struct DeviceSource : BlockSource {
  void* acquire(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return nullptr;
    }
    check(e, "cudaMalloc");
    return p;
  }
  void release(void* p, size_t) override {
    cudaFree(p);
    cudaGetLastError();
  }
  std::string describe() override {
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
      cudaGetLastError();
      return "free device memory unknown";
    }
    char s[96];
    std::snprintf(s, sizeof s, "the GPU has %.1f of %.1f MiB free", (double)free / (1 << 20), (double)total / (1 << 20));
    return s;
  }
};

// Never destroyed: freeing device memory while the process exits races the CUDA runtime's own teardown.
BlockCache& pool() {
  static BlockCache* cache = new BlockCache(*new DeviceSource);
  return *cache;
}

}  // namespace

void* dev_alloc(size_t bytes, MemCategory cat) {
  if (bytes == 0) return nullptr;
  require_device();
  return pool().alloc(bytes, cat);
}

// A pointer the pool never handed out is left alone: putting it in a free list would corrupt the cache.
void dev_free(void* p, size_t, MemCategory) {
  if (p) pool().free(p);
}

void dev_upload(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "deviceUpload");
  // From pageable memory cudaMemcpy may return once the data is staged, before the DMA lands; every
  // later call runs on its own non-blocking stream, which does not wait for the legacy stream.
  check(cudaStreamSynchronize(cudaStreamLegacy), "deviceUpload");
}

void dev_download(void* dst, const void* src, size_t bytes) {
  if (bytes) check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "deviceDownload");
}

DevStats dev_stats() { return pool().stats(); }
void dev_reset_peaks() { pool().reset_peaks(); }
void dev_release_cache() { pool().release_cached(); }

}  // namespace cuda
}  // namespace zt
