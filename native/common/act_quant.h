// Dynamic per-row int8 quantization of activations (W8A8 / W4A8 GEMMs): the one definition used by
// the CPU kernels (native/cpu/gemm_int8*.cc: scalar, AVX2, AVX-512) and the CUDA W8A8 GEMM
// (cuda/kernels/gemm_tc.cu), so every backend makes the same codes and scales.
//   s = absmax / 127 (formats.h scale_for), inv = 1 / s; a row whose inv overflows (or an all-zero
//   row) gets s = inv = 0 and all-zero codes; q = clamp(rtne(x * inv), -127, 127).
// Rows with a non-finite value are refused by the callers (ZOTUNE_NONFINITE) before this runs.
#pragma once
#include <float.h>

#include "formats.h"

namespace zt {

// Scale of a row with absolute maximum `amax`; *inv receives the multiplier the codes use.
ZT_HD float act_int8_scale(float amax, float* inv) {
  float s = scale_for(amax, (float)kInt8Max), i = inv_scale_for(s);
  if (!(i <= FLT_MAX)) s = i = 0.0f;
  *inv = i;
  return s;
}

ZT_HD int8_t act_int8_code(float x, float inv) { return (int8_t)int_quantize(x, inv, 0, -kInt8Max, kInt8Max, false, 0); }

}  // namespace zt
