// Elementary functions and reduction orders shared by the scalar references and the SIMD kernels
// of the transformer ops, so that both CPU paths give the same bits.
//
// exp_f32: Cephes expf (range reduction by ln 2 split in two constants, degree-5 polynomial),
// spelled out with one rounding per operation; 2^n is applied as 2^(n>>1) * 2^(n - (n>>1)) so
// subnormal results and results up to FLT_MAX come out right. Max error about 1.5 ulp;
// NaN -> NaN, x < -103.972 (incl. -inf) -> 0, x > 88.7228 -> +inf. libm's expf differs between
// glibc versions and vector math libraries; this one is the same everywhere.
//
// Reduction order ("8-lane order", used for the double-precision sums of RMSNorm and softmax):
// element i of an n-element sum goes to lane i % 8 for i < n & ~7, the lanes are combined as
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) (what an AVX2 128-bit fold, unpackhi and a
// final add compute) and the tail n & ~7 .. n-1 is added after it in order.
#pragma once
#include "philox.h"  // bits_to_f32, zt_mul, zt_add

namespace zt {

static constexpr float kExpLo = -103.972076f;  // below: exp(x) < 2^-150 rounds to 0
static constexpr float kExpHi = 88.7228394f;    // above: exp(x) > FLT_MAX

// exp_f32's constants (the vector forms in nn_avx2.cc / nn_avx512.cc use them too): n = floor(x
// log2(e) + 1/2), r = x - n ln2 in two steps (-kExpLn2Hi is exact in few bits), then the
// polynomial y = ((((c0 r + c1) r + c2) r + c3) r + c4) r + c5, exp(r) ~ (y r^2 + r) + 1.
static constexpr float kExpLog2e = 1.44269504088896341f, kExpLn2Hi = -0.693359375f, kExpLn2Lo = 2.12194440e-4f;
ZT_HD_CONST float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

ZT_HD float exp_f32(float x) {
  if (!(x >= kExpLo)) return x != x ? x : 0.0f;
  if (x > kExpHi) return bits_to_f32(0x7f800000u);
  float fx = floorf(zt_add(zt_mul(x, kExpLog2e), 0.5f));
  float r = zt_add(x, zt_mul(fx, kExpLn2Hi));
  r = zt_add(r, zt_mul(fx, kExpLn2Lo));
  float z = zt_mul(r, r);
  float y = kExpPoly[0];
  for (int i = 1; i < 6; ++i) y = zt_add(zt_mul(y, r), kExpPoly[i]);
  y = zt_add(zt_add(zt_mul(y, z), r), 1.0f);
  int n = (int)fx, n1 = n >> 1;  // n in [-150, 128]: both halves are normal powers of two
  y = zt_mul(y, bits_to_f32((uint32_t)(n1 + 127) << 23));
  return zt_mul(y, bits_to_f32((uint32_t)(n - n1 + 127) << 23));
}

// SiLU(g) = g * sigmoid(g), computed as g / (1 + exp(-g)).
ZT_HD float silu_f32(float g) { return g / zt_add(1.0f, exp_f32(-g)); }

// RMSNorm's scale 1/sqrt(mean + eps) from a sum of squares computed in double, rounded once.
ZT_HD float rms_inv(double sum_sq, size_t n, double eps) { return (float)(1.0 / sqrt(sum_sq / (double)n + eps)); }

ZT_HD double reduce8d(const double l[8]) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

}  // namespace zt
