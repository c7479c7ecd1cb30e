// Rotary position embeddings (HF rotate_half layout) shared by the CPU ops and the CUDA kernels:
// the parameters, the cos/sin tables and the rotation of one pair.
//
// The tables are computed on the host only, in double (pow, cos, sin of glibc) and rounded once
// to fp32: CUDA's double pow/cos/sin are not correctly rounded and could move a table entry by
// one fp32 ulp, so a GPU forward copies these host tables to the device.
#pragma once
#include "philox.h"  // zt_mul, zt_add

#if !defined(__CUDACC__)
#include <math.h>
#endif

namespace zt {

// rope_scaling: none, or Meta's "llama3" frequency-dependent scaling (HF _compute_llama3_parameters).
struct RopeParams {
  double theta = 10000.0;
  int llama3 = 0;
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4, original_max_positions = 8192;
};

// inv_freq[i], i < hd/2, in double: theta^(-2i/hd), then the llama3 rescaling.
static inline void rope_inv_freq(double* out, size_t hd, const RopeParams& p) {
  const double two_pi = 6.283185307179586476925;
  for (size_t i = 0; i < hd / 2; ++i) {
    double f = 1.0 / pow(p.theta, (double)(2 * i) / (double)hd);
    if (p.llama3) {
      double low_wl = p.original_max_positions / p.low_freq_factor;
      double high_wl = p.original_max_positions / p.high_freq_factor;
      double wl = two_pi / f;
      if (wl > low_wl) {
        f /= p.factor;  // long wavelengths: interpolate positions
      } else if (wl >= high_wl) {  // medium: blend between scaled and unscaled
        double smooth = (p.original_max_positions / wl - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
        f = (1 - smooth) * f / p.factor + smooth * f;
      }
    }
    out[i] = f;
  }
}

// The table row of position `pos`: half = hd/2 values of cos and sin (angles in double).
static inline void rope_table_row(float* cos_r, float* sin_r, int64_t pos, const double* inv_freq, size_t half) {
  for (size_t i = 0; i < half; ++i) {
    double a = (double)pos * inv_freq[i];
    cos_r[i] = (float)cos(a);
    sin_r[i] = (float)sin(a);
  }
}

// (x1, x2) -> (x1 c - x2 s, x2 c + x1 s), each product and sum rounded separately.
ZT_HD void rope_rotate(float* x1, float* x2, float c, float s) {
  float a = *x1, b = *x2;
  *x1 = zt_add(zt_mul(a, c), -zt_mul(b, s));
  *x2 = zt_add(zt_mul(b, c), zt_mul(a, s));
}

}  // namespace zt
