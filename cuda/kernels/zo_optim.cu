// ZO optimiser steps on the GPU (zo_optim.h). One thread per element: the estimate g is rebuilt from
// the step's directions in registers (direction_at per query), never stored.
#include <cuda_runtime.h>

#include <algorithm>

#include "../../native/cpu/perturb.h"  // perturbed: the estimate accumulated as the CPU does
#include "device.h"
#include "zo_optim.h"

namespace zt {
namespace cuda {
namespace {

constexpr int kThreads = 256;

ZT_HD void zo_optim_item(float* w, float* m, float* v, uint64_t first, const ZoOptimStep& s, uint64_t i) {
  float g = 0.0f;
  for (int k = 0; k < s.queries; ++k) g = perturbed(g, s.coefs[k], direction_at(s.dirs[k], first + i));
  zo_optim_elem(w + i, m + i, v ? v + i : nullptr, g, s);
}

__global__ void zo_optim_kernel(float* w, float* m, float* v, uint64_t n, uint64_t first, ZoOptimStep s) {
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
    zo_optim_item(w, m, v, first, s, i);
}

}  // namespace

void zo_optim_launch(bool emulated, float* w, float* m, float* v, uint64_t n, uint64_t first, const ZoOptimStep& s, void* stream) {
  if (n == 0) return;
  if (emulated) {
    for (uint64_t i = 0; i < n; ++i) zo_optim_item(w, m, v, first, s, i);
    return;
  }
  const unsigned blocks = (unsigned)std::min<uint64_t>((n + kThreads - 1) / kThreads, 1u << 16);
  zo_optim_kernel<<<blocks, kThreads, 0, (cudaStream_t)stream>>>(w, m, v, n, first, s);
  check_launch("zo_optim_kernel");
}

}  // namespace cuda
}  // namespace zt
