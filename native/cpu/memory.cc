#include "memory.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

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

}  // namespace

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
  void* p = rounded ? std::aligned_alloc(kAlign, rounded) : nullptr;
  if (rounded && !p) fail(Code::OOM, "out of host memory allocating " + std::to_string(bytes) + " bytes");
  int c = (int)cat;
  raise_peak(g_peak[c], g_live[c].fetch_add((int64_t)bytes) + (int64_t)bytes);
  raise_peak(g_total_peak, g_total.fetch_add((int64_t)bytes) + (int64_t)bytes);
  return p;
}

void host_free(void* p, size_t bytes, MemCategory cat) {
  std::free(p);
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
  return s;
}

void mem_reset_peaks() {
  for (int i = 0; i < kCats; ++i) g_peak[i].store(g_live[i].load());
  g_total_peak.store(g_total.load());
}

}  // namespace zt
