// The ZO perturbation direction z(i): the one definition every kernel uses (in-place
// perturbation, quantized-weight updates, perturb-on-load GEMMs, CUDA), so that a direction
// regenerated anywhere from (seed, stream, element) is the same value.
#pragma once
#include "formats.h"

namespace zt {

enum DirDist : int { kDirGauss = 0, kDirRademacher = 1 };

// Largest |N(0,1)| the generator can produce: sqrt(-2 ln 2^-17) = 4.854586 (box_muller's u1 >=
// 2^-17; the float it returns there is 4.85458565, test/rng.test.ts checks the bound).
static constexpr float kNormalMax = 4.85459f;

struct Direction {
  uint64_t seed;
  uint32_t stream;      // the trainable tensor's id
  int dist;             // DirDist
  int bits;             // 0: exact z; 2..8: QuZO direction, z stochastically rounded onto a b-bit grid
  uint32_t sr_purpose;  // kPurposeSrProbe (Q1) or kPurposeSrUpdate (Q2): independent roundings
};

// QuZO direction grid: the symmetric b-bit grid q * step, |q| <= 2^(b-1) - 1, spanning the
// generator's whole range, so no clipping and E[Q(z) | z] = z exactly (unbiased). The released
// QuZO code scales by each tensor's max |z| instead; a fixed range needs no reduction pass and
// keeps z(i) a pure function of i.
ZT_HD float dir_grid_step(int bits) { return kNormalMax / (float)((1 << (bits - 1)) - 1); }
ZT_HD float dir_grid_inv_step(int bits) { return (float)((1 << (bits - 1)) - 1) / kNormalMax; }

ZT_HD RngKey dir_key(const Direction& d) {
  return RngKey{d.seed, d.stream, d.dist == kDirGauss ? (uint32_t)kPurposeGauss : (uint32_t)kPurposeRademacher};
}

// QuZO rounding thresholds: 16 bits per element from the (seed, stream, sr_purpose) stream, laid
// out like the normal stream (philox.h normal_at: counter normal_counter(i), word (i >> 3) & 3, its
// low half for (i >> 5) & 1 == 0, else its high half), t = (h + 1/2) 2^-16: one Philox word per two
// elements instead of one per element. Round up iff t < frac(v): P(up) is frac(v) to within 2^-17,
// symmetric about it (no systematic bias), and a v already on the grid never moves. (Weight updates
// keep the 24-bit sr_round: their fractions can be far below 2^-16.)
ZT_HD uint32_t dir_sr_half(uint32_t word, uint64_t i) { return ((i >> 5) & 1) ? word >> 16 : word & 0xffffu; }
ZT_HD float dir_sr_threshold(uint32_t half) { return zt_mul((float)half + 0.5f, 0x1p-16f); }
ZT_HD float dir_sr_round(float v, float t) {
  float fl = floorf(v);
  return t < zt_add(v, -fl) ? zt_add(fl, 1.0f) : fl;
}

// The grid code q of a QuZO direction (Gaussian, bits > 0): z(i) = q * dir_grid_step(bits), q an
// integer with |q| <= 2^(bits-1) - 1 (returned as the exact float). The integer GEMM's probe
// multiplies these codes (direction_code_at below) with the int8 activations directly (gemm_int8.h).
ZT_HD RngKey dir_sr_key(const Direction& d) { return RngKey{d.seed, d.stream, d.sr_purpose}; }
// The same from the rounding word of element i already in hand (word (i >> 3) & 3 of counter
// normal_counter(i) under dir_sr_key): kernels that generate whole Philox blocks pass it in.
ZT_HD float dir_grid_code_word(const Direction& d, uint64_t i, float z, uint32_t sr_word) {
  return dir_sr_round(zt_mul(z, dir_grid_inv_step(d.bits)), dir_sr_threshold(dir_sr_half(sr_word, i)));
}
ZT_HD float dir_grid_code(const Direction& d, uint64_t i, float z) {
  uint32_t w[4];
  philox_block(dir_sr_key(d), normal_counter(i), w);
  return dir_grid_code_word(d, i, z, w[(i >> 3) & 3]);
}
// Directions whose every value is an integer code times one step (the integer GEMM's probe):
// QuZO's rounded Gaussians, and Rademacher signs (code +-1, step 1).
ZT_HD bool dir_on_grid(const Direction& d) { return d.dist == kDirRademacher || d.bits > 0; }
ZT_HD float dir_code_step(const Direction& d) { return d.dist == kDirRademacher ? 1.0f : dir_grid_step(d.bits); }
ZT_HD int direction_code_at(const Direction& d, uint64_t i) {
  if (d.dist == kDirRademacher) return (int)rademacher_at(dir_key(d), i);
  return (int)dir_grid_code(d, i, normal_at(dir_key(d), i));
}

// A Gaussian direction value from its normal z and rounding word (exact z when bits == 0).
ZT_HD float gauss_direction_word(const Direction& d, uint64_t i, float z, uint32_t sr_word) {
  return d.bits == 0 ? z : zt_mul(dir_grid_code_word(d, i, z, sr_word), dir_grid_step(d.bits));
}

ZT_HD float direction_at(const Direction& d, uint64_t i) {
  RngKey k = dir_key(d);
  if (d.dist == kDirRademacher) return rademacher_at(k, i);  // +-1 needs no rounding
  float z = normal_at(k, i);
  if (d.bits == 0) return z;
  uint32_t w[4];
  philox_block(dir_sr_key(d), normal_counter(i), w);
  return gauss_direction_word(d, i, z, w[(i >> 3) & 3]);
}

}  // namespace zt
