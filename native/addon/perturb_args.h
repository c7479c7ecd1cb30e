// Arguments of the perturbation ops as both addons take them (the CPU ops and their CUDA mirrors
// share one positional list, so a conformance check passes one list to both):
//   perturb(w: f32 mem, byteOffset, count, alpha, seed, stream, dist, bits, srPurpose, first)
//   perturbIndices(w, byteOffset, count, indices: u32 mem, indicesByteOffset, indicesCount, alpha,
//                  seed, stream, dist, bits, srPurpose, first)
// dist: 0 Gaussian, 1 Rademacher; bits: 0 or 2..8 (QuZO); srPurpose: 4 (probe) or 5 (update).
#pragma once
#include <memory>
#include <vector>

#include "../common/direction.h"
#include "napi_util.h"

namespace zt {

// Direction from arguments i .. i + 4 (seed, stream, dist, bits, srPurpose), checked by
// check_direction (coded ZOTUNE_INVALID_ARGUMENT).
Direction direction_arg(Args& a, size_t i);
// A finite fp32 scalar (ZOTUNE_NONFINITE otherwise, prefixed with fn).
float alpha_arg(Args& a, size_t i, const char* fn);

struct PerturbCall {
  float* w;
  uint64_t n, first;
  float alpha;
  Direction d;
  // perturbIndices only: a private copy taken while the arguments are parsed, because JS may write
  // the array (which may even alias w) while an async call runs; validation and scatter see these.
  std::shared_ptr<const std::vector<uint32_t>> idx;
};
PerturbCall perturb_call(Args& a);
PerturbCall perturb_indices_call(Args& a);

}  // namespace zt
