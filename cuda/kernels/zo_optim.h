// The ZO optimisers' fused state updates (ZO-SGD-MMT, ZO-Adam) on the GPU, mirroring
// native/cpu/zo_optim.h: per element, g = sum_k fma(coef_k, z_k, g) from +0 in query order with z_k
// = direction_at(dirs[k], first + i), then zo_optim_elem (the CPU scalar kernel's rule), so the
// weights and the state equal the CPU's bit for bit (compiled with -fmad=false, IEEE division and
// square root). Plain C++ header: the device model (llama.cu) includes it.
#pragma once
#include <stdint.h>

#include "../../native/cpu/zo_optim.h"

namespace zt {
namespace cuda {

// w, m, v (v null for momentum): n floats of device memory on `stream` (a cudaStream_t), or host
// memory run at once when emulated; s.dirs / s.coefs: s.queries entries in the same kind of memory.
// No validation (the caller ran check_zo_optim on the host copy).
void zo_optim_launch(bool emulated, float* w, float* m, float* v, uint64_t n, uint64_t first, const ZoOptimStep& s, void* stream);

}  // namespace cuda
}  // namespace zt
