// Machine ceilings for the benchmarks (bench/harness.js): kernels that do a fixed amount of work
// per call on every pool thread, at the rate the hardware allows. Each returns a checksum that the
// caller verifies, so a benchmark can never time work that was skipped.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace zt {

// Streaming read: the sum of x[0 .. n). Element i goes to accumulator i % 32 of its 64 Ki-element
// task (fp32), tasks and lanes are added in fixed order in fp64: the same bits on every path and
// thread count.
double ceiling_read(const float* x, size_t n);
// In-place read-modify-write: x[i] += delta (the traffic of a Rademacher perturbation).
void ceiling_update(float* x, size_t n, float delta);
// fp32 FMA peak: `tasks` tasks of `iters` iterations of 12 independent 8-lane FMA chains
// x = fma(1, 1, x). Returns the sum of all lanes: tasks * 96 * iters (exact for iters < 2^24).
// AVX2 path only (ZOTUNE_UNSUPPORTED on the scalar path).
double ceiling_fma(uint64_t tasks, uint64_t iters);
// int8 dot peak: 6 chains of vpmaddubsw (32 u8 x s8 MACs) + vpmaddwd + vpaddd per iteration on
// all-ones data. Returns the sum of all int32 lanes: tasks * 192 * iters (iters < 2^29).
double ceiling_int8(uint64_t tasks, uint64_t iters);
// AVX-512 fp32 FMA peak: 12 independent 16-lane FMA chains per iteration. Returns
// tasks * 192 * iters (exact for iters < 2^20: each lane sum stays below 2^24). avx512 path only.
double ceiling_fma512(uint64_t tasks, uint64_t iters);
// AVX-512 VNNI int8 dot peak: 12 chains of vpdpbusd (64 u8 x s8 MACs) per iteration on all-ones
// data. Returns tasks * 768 * iters (iters < 2^21: the int32 sum stays exact). avx512 path only.
double ceiling_vnni(uint64_t tasks, uint64_t iters);

// Range kernels: a task's partial (32 lane sums) and update.
void ceiling_read_range_ref(const float* x, size_t n, float lanes[32]);
void ceiling_update_range_ref(float* x, size_t n, float delta);
namespace avx2 {
void ceiling_read_range(const float* x, size_t n, float lanes[32]);
void ceiling_update_range(float* x, size_t n, float delta);
double ceiling_fma_task(uint64_t iters);
double ceiling_int8_task(uint64_t iters);
}  // namespace avx2
namespace avx512 {
double ceiling_fma512_task(uint64_t iters);
double ceiling_vnni_task(uint64_t iters);
}  // namespace avx512

}  // namespace zt
