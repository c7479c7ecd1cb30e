// In-place ZO perturbation of fp32 weights along the seeded direction z (native/common/direction.h):
//   w[j] = fma(alpha, z(first + j), w[j])
// one fused pass, z regenerated in registers and never stored. The update is rounded once (fmaf),
// so perturb(+a) followed by perturb(-a) gives back w within 1 ulp of the perturbed value.
// The ZO update with weight decay is the same pass with a retention factor keep = 1 - decay:
//   w[j] = fma(alpha, z(first + j), w[j] * keep)
// (keep = 1 multiplies exactly, so it is then bit for bit the plain perturbation).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../common/check_direction.h"  // check_direction
#include "../common/direction.h"

namespace zt {

// The one rounding every perturbation path applies (scalar, AVX2 and the sparse kernels).
ZT_HD float perturbed(float w, float alpha, float z) { return zt_fma(alpha, z, w); }
// With weight decay: the kept fraction of w, then the same fma.
ZT_HD float perturbed_decayed(float w, float keep, float alpha, float z) { return zt_fma(alpha, z, zt_mul(w, keep)); }

// Dense: w[j] for j in [0, n), direction elements first .. first + n - 1.
void perturb_dense(float* w, size_t n, const Direction& d, uint64_t first, float alpha, float keep = 1.0f);
// Several tensors in one parallel job (a model's trainable set: one fork and join, not one per
// tensor). The spans must not overlap.
struct DenseSpan {
  float* w;
  size_t n;
  Direction d;
  uint64_t first;
  float keep;
};
void perturb_dense_many(const DenseSpan* spans, size_t count, float alpha);

// Index subset (sparse ZO): w[idx[j]] = fma(alpha, z(first + idx[j]), w[idx[j]]) for j in [0, m).
// Indices are u32 (a tensor's elements beyond 2^32 cannot be addressed), each < n, any order, no
// duplicates. All are checked before anything is written: ZOTUNE_OUT_OF_RANGE for an index >= n,
// ZOTUNE_INVALID_ARGUMENT for a repeated one, and then w is unchanged. The result equals the dense
// perturbation masked to the index set, on any thread count.
void perturb_indices(float* w, size_t n, const uint32_t* idx, size_t m, const Direction& d, uint64_t first, float alpha);

// Range kernels. Dense: direction elements [begin, end) applied to w[0 .. end - begin), each
// element first multiplied by keep (1: none).
void perturb_range_ref(float* w, uint64_t begin, uint64_t end, const Direction& d, float alpha, float keep = 1.0f);
// Sparse: m indices, each < the tensor size (checked by the caller), distinct.
void perturb_gather_ref(float* w, const uint32_t* idx, size_t m, const Direction& d, uint64_t first, float alpha);
// QuZO grid codes of direction elements [begin, end) (direction.h direction_code_at; d must be
// dir_on_grid) into out[0 .. end - begin): the integer GEMM's perturbation operand.
void direction_codes_ref(int8_t* out, uint64_t begin, uint64_t end, const Direction& d);
namespace avx2 {
void direction_codes(int8_t* out, uint64_t begin, uint64_t end, const Direction& d);
void perturb_range(float* w, uint64_t begin, uint64_t end, const Direction& d, float alpha, float keep = 1.0f);
void perturb_gather(float* w, const uint32_t* idx, size_t m, const Direction& d, uint64_t first, float alpha);
// z[j] = direction_at(d, first + idx[j]) for j < m (any indices, 8 at a time).
void gather_directions(const uint32_t* idx, size_t m, const Direction& d, uint64_t first, float* z);
// The Rademacher signs of elements [i0, i1) of the key's stream, 8 per byte (layout:
// direction_avx2.h rademacher_apply); at most rademacher_sign_bytes(i1 - i0) bytes.
void rademacher_signs(RngKey key, uint64_t i0, uint64_t i1, uint8_t* signs);
}  // namespace avx2
inline uint64_t rademacher_sign_bytes(uint64_t n) { return n / 8 + 2; }

namespace avx512 {
// Gaussian directions (QuZO-rounded when d.bits) of elements [128 c0, 128 (c0 + n)) into out, in
// element order: the AVX2 kernels take z from here on the avx512 path (use_avx512()), same bits.
void gauss_pairs(const Direction& d, uint64_t c0, uint64_t n, float* out);
// w[j] = perturbed_decayed(src[j], keep, alpha, z) for j in [0, 128 n), direction elements
// [128 c0, 128 (c0 + n)), z kept in registers (src may be w): the whole 128-element chunks of
// direction_avx2.h's gauss_fma_wide.
void gauss_perturb(const Direction& d, uint64_t c0, uint64_t n, const float* src, float* w, float alpha, float keep);
// Standard normals of the (key) stream, elements [128 c0, 128 (c0 + n)) (philox.h normal_at).
void normal_pairs(RngKey key, uint64_t c0, uint64_t n, float* out);
// Philox words of 32-element blocks [2 c0, 2 (c0 + n)) (element 32b + 8k + l: word k of counter
// 8b + l, as philox8(key, 8b)) into out[64 n], 32 counters per Philox call (16 for an odd last one).
void word_pairs(RngKey key, uint64_t c0, uint64_t n, uint32_t* out);
// QuZO direction codes (direction_code_at) of elements [begin, end), as direction_codes_ref.
void direction_codes(int8_t* out, uint64_t begin, uint64_t end, const Direction& d);
}  // namespace avx512

}  // namespace zt
