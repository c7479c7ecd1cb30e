// Host memory owned by the engine, 64-byte aligned and accounted by category.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace zt {

enum class MemCategory : int { Weights = 0, Activations, Gradients, OptimizerState, Workspace, Other, Count };
const char* mem_category_name(MemCategory c);
bool mem_category_from_name(const char* name, MemCategory* out);

// Throws ZOTUNE_OOM when the allocation fails or exceeds the address space. Transient blocks
// (not weights or optimizer state) of 256 KiB and more are cached when freed and reused by later
// allocations (bounded by ZOTUNE_HOST_CACHE_MB, default an eighth of physical memory).
void* host_alloc(size_t bytes, MemCategory cat);
void host_free(void* p, size_t bytes, MemCategory cat);
// Gives the cached blocks back to the C library.
void host_cache_release();

struct MemStats {
  int64_t live[(int)MemCategory::Count];
  int64_t peak[(int)MemCategory::Count];
  int64_t total_live, total_peak;
  int64_t cached;  // freed blocks held for reuse (not live)
};
MemStats mem_stats();
void mem_reset_peaks();

}  // namespace zt
