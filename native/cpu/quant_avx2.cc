// AVX2 kernels of quant.h (development placeholder: delegates to the reference until written).
#include "quant.h"

namespace zt {
namespace avx2 {
QStats qstats_range(const float* x, size_t n) { return qstats_range_ref(x, n); }
bool quantize_seg(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) { return quantize_seg_ref(j, r, c0, c1); }
void dequantize_seg(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) { dequantize_seg_ref(j, r, c0, c1); }
void update_seg(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) { update_seg_ref(j, r, c0, c1); }
}  // namespace avx2
}  // namespace zt
