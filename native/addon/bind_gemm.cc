// gemm(a, aByteOffset, m, k, w, wByteOffset, n, c, cByteOffset, bias, biasByteOffset, accumulate,
//      perturb, seed, stream, alpha, dist, bits, srPurpose, first, indices, indicesByteOffset, indicesCount)
//   C[m, n] (+)= A[m, k] · W'[n, k]ᵀ (+ bias). w is f32 memory [n, k] or a QTensor descriptor
//   (lib/qtensor.ts desc()); a, c, bias f32; indices u32 (strictly increasing n·k + col), or null.
//   perturb = false ignores the arguments after it.
#include "bindings.h"
#include "gemm_args.h"

namespace zt {
namespace {

Job parse_gemm(Args& a) {
  GemmArgs g = gemm_args(a, "gemm");
  return {[g] { gemm(g); }, nullptr};
}

}  // namespace

void register_gemm(Napi::Env env, Napi::Object exports) { export_op(env, exports, "gemm", parse_gemm); }

}  // namespace zt
