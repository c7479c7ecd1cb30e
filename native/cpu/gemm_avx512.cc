// AVX-512 form of the fp32 GEMM's full micro-tile (gemm.h): 6 rows x two 16-column packed panels,
// one zmm per panel and row. Each output is the same single fma chain in k order (from C or zero,
// bias added after the last), so the bits equal the AVX2 6x16 kernel's and the scalar reference's.
#include <immintrin.h>

#include "gemm.h"

namespace zt {
namespace avx512 {

void gemm_kernel_6x32(uint64_t kc, const float* ap, const float* bp0, const float* bp1, float* c, uint64_t ldc, bool zero,
                      const float* bias) {
  const __mmask16 keep = zero ? 0 : 0xffff;
#define ZT_LD(i, j) _mm512_maskz_loadu_ps(keep, c + (i) * ldc + 16 * (j))
  __m512 c00 = ZT_LD(0, 0), c01 = ZT_LD(0, 1), c10 = ZT_LD(1, 0), c11 = ZT_LD(1, 1), c20 = ZT_LD(2, 0), c21 = ZT_LD(2, 1);
  __m512 c30 = ZT_LD(3, 0), c31 = ZT_LD(3, 1), c40 = ZT_LD(4, 0), c41 = ZT_LD(4, 1), c50 = ZT_LD(5, 0), c51 = ZT_LD(5, 1);
#undef ZT_LD
  for (uint64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(bp0 + k * kNR), b1 = _mm512_load_ps(bp1 + k * kNR);
    __m512 a;
    a = _mm512_set1_ps(ap[0]); c00 = _mm512_fmadd_ps(a, b0, c00); c01 = _mm512_fmadd_ps(a, b1, c01);
    a = _mm512_set1_ps(ap[1]); c10 = _mm512_fmadd_ps(a, b0, c10); c11 = _mm512_fmadd_ps(a, b1, c11);
    a = _mm512_set1_ps(ap[2]); c20 = _mm512_fmadd_ps(a, b0, c20); c21 = _mm512_fmadd_ps(a, b1, c21);
    a = _mm512_set1_ps(ap[3]); c30 = _mm512_fmadd_ps(a, b0, c30); c31 = _mm512_fmadd_ps(a, b1, c31);
    a = _mm512_set1_ps(ap[4]); c40 = _mm512_fmadd_ps(a, b0, c40); c41 = _mm512_fmadd_ps(a, b1, c41);
    a = _mm512_set1_ps(ap[5]); c50 = _mm512_fmadd_ps(a, b0, c50); c51 = _mm512_fmadd_ps(a, b1, c51);
    ap += kMR;
  }
  if (bias) {
    const __m512 b0 = _mm512_loadu_ps(bias), b1 = _mm512_loadu_ps(bias + 16);
    c00 = _mm512_add_ps(c00, b0); c01 = _mm512_add_ps(c01, b1); c10 = _mm512_add_ps(c10, b0); c11 = _mm512_add_ps(c11, b1);
    c20 = _mm512_add_ps(c20, b0); c21 = _mm512_add_ps(c21, b1); c30 = _mm512_add_ps(c30, b0); c31 = _mm512_add_ps(c31, b1);
    c40 = _mm512_add_ps(c40, b0); c41 = _mm512_add_ps(c41, b1); c50 = _mm512_add_ps(c50, b0); c51 = _mm512_add_ps(c51, b1);
  }
#define ZT_ST(i, j, v) _mm512_storeu_ps(c + (i) * ldc + 16 * (j), v)
  ZT_ST(0, 0, c00); ZT_ST(0, 1, c01); ZT_ST(1, 0, c10); ZT_ST(1, 1, c11); ZT_ST(2, 0, c20); ZT_ST(2, 1, c21);
  ZT_ST(3, 0, c30); ZT_ST(3, 1, c31); ZT_ST(4, 0, c40); ZT_ST(4, 1, c41); ZT_ST(5, 0, c50); ZT_ST(5, 1, c51);
#undef ZT_ST
}

// Skinny M (gemm.h): the tile [12 n][16 m] of gemm_block_skinny on zmm, 12 W rows broadcast against
// one 16-lane Aᵀ row per k; t (row stride 16) holds the running chains, each the same fma chain in
// k order as the AVX2 [6 n][16 m] tile.
void gemm_kernel_rows12(uint64_t kc, const float* const* rows, const float* at, float* t) {
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4], *r5 = rows[5];
  const float *r6 = rows[6], *r7 = rows[7], *r8 = rows[8], *r9 = rows[9], *r10 = rows[10], *r11 = rows[11];
  __m512 c0 = _mm512_load_ps(t), c1 = _mm512_load_ps(t + 16), c2 = _mm512_load_ps(t + 32), c3 = _mm512_load_ps(t + 48);
  __m512 c4 = _mm512_load_ps(t + 64), c5 = _mm512_load_ps(t + 80), c6 = _mm512_load_ps(t + 96), c7 = _mm512_load_ps(t + 112);
  __m512 c8 = _mm512_load_ps(t + 128), c9 = _mm512_load_ps(t + 144), c10 = _mm512_load_ps(t + 160), c11 = _mm512_load_ps(t + 176);
  for (uint64_t k = 0; k < kc; ++k) {
    const __m512 b = _mm512_loadu_ps(at + 16 * k);
    c0 = _mm512_fmadd_ps(_mm512_set1_ps(r0[k]), b, c0);
    c1 = _mm512_fmadd_ps(_mm512_set1_ps(r1[k]), b, c1);
    c2 = _mm512_fmadd_ps(_mm512_set1_ps(r2[k]), b, c2);
    c3 = _mm512_fmadd_ps(_mm512_set1_ps(r3[k]), b, c3);
    c4 = _mm512_fmadd_ps(_mm512_set1_ps(r4[k]), b, c4);
    c5 = _mm512_fmadd_ps(_mm512_set1_ps(r5[k]), b, c5);
    c6 = _mm512_fmadd_ps(_mm512_set1_ps(r6[k]), b, c6);
    c7 = _mm512_fmadd_ps(_mm512_set1_ps(r7[k]), b, c7);
    c8 = _mm512_fmadd_ps(_mm512_set1_ps(r8[k]), b, c8);
    c9 = _mm512_fmadd_ps(_mm512_set1_ps(r9[k]), b, c9);
    c10 = _mm512_fmadd_ps(_mm512_set1_ps(r10[k]), b, c10);
    c11 = _mm512_fmadd_ps(_mm512_set1_ps(r11[k]), b, c11);
  }
  _mm512_store_ps(t, c0); _mm512_store_ps(t + 16, c1); _mm512_store_ps(t + 32, c2); _mm512_store_ps(t + 48, c3);
  _mm512_store_ps(t + 64, c4); _mm512_store_ps(t + 80, c5); _mm512_store_ps(t + 96, c6); _mm512_store_ps(t + 112, c7);
  _mm512_store_ps(t + 128, c8); _mm512_store_ps(t + 144, c9); _mm512_store_ps(t + 160, c10); _mm512_store_ps(t + 176, c11);
}

}  // namespace avx512
}  // namespace zt
