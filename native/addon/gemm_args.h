// The arguments of a weight-only GEMM call, parsed once for both addons (the CPU gemm and the
// CUDA gemv take the same positional list, so a conformance check passes one list to both):
//   a, aByteOffset, m, k, w, wByteOffset, n, c, cByteOffset, bias, biasByteOffset, accumulate,
//   perturb, seed, stream, alpha, dist, bits, srPurpose, first, indices, indicesByteOffset, indicesCount
#pragma once
#include "../cpu/gemm.h"
#include "napi_util.h"

namespace zt {

// Shapes, dtypes, buffer bounds, overlaps and the perturbation scalars are checked here (coded
// errors prefixed with fn); the index list is checked by gemm_check_perturb before a kernel runs.
GemmArgs gemm_args(Args& a, const char* fn);

}  // namespace zt
