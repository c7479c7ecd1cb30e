// Transformer ops of the LLaMA family on the CPU: RMSNorm, rotary embeddings (HF rotate_half),
// grouped-query causal attention over a KV layout, SwiGLU, embedding gather, log-softmax with
// target gather, argmax and seeded sampling.
//
// Every op has a scalar reference (nn.cc) and an AVX2 kernel (nn_avx2.cc) that use the same
// operations in the same order (native/common/mathfn.h: exp_f32, the 8-lane reduction order,
// multiply and add rounded separately), so both paths give identical bits. Work is split into
// tasks whose boundaries depend only on the shapes, so results do not depend on the thread count.
//
// Error bounds (u = 2^-24, fp32 unit roundoff; inputs exact):
//   rmsnorm   sum of squares in double (exact products): |rel err| <= 3u per output.
//   rope      cos/sin tables from double-precision angles rounded once; 3 roundings per output.
//   attention q.k in fp32, summed in d order: |err| <= hd u sum|q_d k_d|; softmax max-subtracted
//             with exp_f32 (1.5 ulp); denominators summed in double (per 32-key block in the 8-lane
//             order, then added to the running sum); the value sum is accumulated
//             per 32-key block and the blocks added, so |err| <= (32 + n/32 + 4) u sum_j p_j |v_j|
//             for n visible keys (plus the score error propagated through exp).
//   swiglu    <= 4 ulp.
//   logprobs  max-subtracted, exp_f32 summed in double, log in double: |err| <= ~2u * |logit range|
//             per token on top of the logits' own error.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../common/nn_rows.h"
#include "../common/rope.h"
#include "sample.h"

namespace zt {

// --- rotary embeddings (RopeParams, rope_inv_freq: native/common/rope.h) -----------------

// cos/sin tables for positions [first, first + count): row r holds hd/2 values.
void rope_tables(float* cos_t, float* sin_t, int64_t first, size_t count, size_t hd, const RopeParams& p);

// --- range kernels (scalar reference; avx2:: the same maths 8 lanes at a time) -------------

// out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * w, rows [0, rows) of length dim (out may be x).
void rmsnorm_rows_ref(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps);
// Rotates `heads` heads of hd values in each row (row stride ld): x1' = x1 c - x2 s, x2' = x2 c + x1 s
// with (x1, x2) the two halves of a head; tables indexed by pos[r] (rows of hd/2).
void rope_rows_ref(float* x, size_t rows, size_t ld, size_t heads, size_t hd, const int32_t* pos, const float* cos_t,
                   const float* sin_t);
void swiglu_ref(float* out, const float* gate, const float* up, size_t n);
// Per row: the max and sum_i exp(x_i - max) (in double), rows of length n with stride ld.
void softmax_stats_ref(const float* x, size_t rows, size_t n, size_t ld, float* row_max, double* row_sum);
// Index of the first maximum, ignoring NaN; -1 if every value is NaN (or n == 0).
int64_t argmax_ref(const float* x, size_t n);

// Attention over the KV layout of AttnArgs (native/common/nn_rows.h).
// Queries [r0, r1) (relative to q_off[b]) of sequence b, every query head of KV head kvh.
void attention_block_ref(const AttnArgs& a, size_t b, size_t kvh, size_t r0, size_t r1);
static constexpr size_t kAttnQueryBlock = 16;  // query rows per attention task (and per vector tile)
// The running online-softmax state of one query row and head in the vector kernels' tiles
// (attention_tile.inc).
struct AttnHeadState {
  alignas(64) float o[kMaxHeadDim];
  float m;
  double l;
};

namespace avx2 {
void rmsnorm_rows(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps);
void rope_rows(float* x, size_t rows, size_t ld, size_t heads, size_t hd, const int32_t* pos, const float* cos_t,
               const float* sin_t);
void swiglu(float* out, const float* gate, const float* up, size_t n);
void softmax_stats(const float* x, size_t rows, size_t n, size_t ld, float* row_max, double* row_sum);
float softmax_max(const float* x, size_t n);  // softmax_stats' max of one row
int64_t argmax(const float* x, size_t n);
void attention_block(const AttnArgs& a, size_t b, size_t kvh, size_t r0, size_t r1);
}  // namespace avx2
namespace avx512 {
// The same on 16-lane vectors (same bits).
void attention_block(const AttnArgs& a, size_t b, size_t kvh, size_t r0, size_t r1);
void swiglu(float* out, const float* gate, const float* up, size_t n);
void softmax_stats(const float* x, size_t rows, size_t n, size_t ld, float* row_max, double* row_sum);
}  // namespace avx512

// --- threaded drivers (pick the path with use_avx2()) ---------------------------------------

void rmsnorm(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps);
void rope(float* x, size_t rows, size_t ld, size_t heads, size_t hd, const int32_t* pos, const float* cos_t,
          const float* sin_t);
void swiglu(float* out, const float* gate, const float* up, size_t n);
void attention(const AttnArgs& a);
// out[i] = table[ids[i]] rows of dim floats; ids must already be validated (< vocab).
void embed(float* out, const float* table, size_t dim, const int32_t* ids, size_t n);
// out[r] = log softmax(x[r])[target[r]] in double for rows with target >= 0 (NaN for the others);
// targets must already be validated (< n). Returns nothing: the caller sums what it selected.
void log_probs(const float* x, size_t rows, size_t n, size_t ld, const int32_t* target, double* out);
int64_t argmax(const float* x, size_t n);

// Sampling from one row of logits (sample.h), the argmax on the fastest path.
int64_t sample_row(const float* logits, size_t n, const SampleParams& p, float u);

}  // namespace zt
