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
#define ZT_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define ZT_INIT(i) const float* r##i = rows[i]; __m512 c##i = _mm512_load_ps(t + 16 * i);
  ZT_ROWS(ZT_INIT)
  for (uint64_t k = 0; k < kc; ++k) {
    const __m512 b = _mm512_loadu_ps(at + 16 * k);
#define ZT_FMA(i) c##i = _mm512_fmadd_ps(_mm512_set1_ps(r##i[k]), b, c##i);
    ZT_ROWS(ZT_FMA)
  }
#define ZT_STORE(i) _mm512_store_ps(t + 16 * i, c##i);
  ZT_ROWS(ZT_STORE)
#undef ZT_STORE
#undef ZT_FMA
#undef ZT_INIT
#undef ZT_ROWS
}

}  // namespace avx512
}  // namespace zt
