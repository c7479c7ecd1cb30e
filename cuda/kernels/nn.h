// The transformer ops of the LLaMA forward on the GPU: embedding, RMSNorm, RoPE, attention,
// SwiGLU, log-probabilities and argmax, bit-identical to the CPU ops (native/cpu/nn.h).
//
// Every op takes host arrays: it copies them to the device, runs, copies the result back and
// returns the kernel time in milliseconds (CUDA events around the kernels only). Three ways to run
// an op (Impl):
//   Fast       the GPU kernel: one warp per row (per row and head for attention), lanes exchanging
//              values through shared memory in the order the CPU defines.
//   Reference  one GPU thread per row running the CPU's own row function (native/common/nn_rows.h):
//              plain and obviously the CPU's maths; for RMSNorm, attention, log-probs and argmax.
//   Emulated   the fast kernel's per-lane code run on the host, lane by lane and phase by phase
//              (no GPU needed; returns 0 ms): checks the lane -> element map and the exchange order.
// RoPE, SwiGLU and embedding are one plain thread per element (no separate reference kernel).
//
// Bits: everything equals the CPU bit for bit (compiled with -fmad=false) except log-probs, whose
// last step log(sum) is CUDA's double log (<= 1 ulp) where the CPU uses glibc's: the row max and
// sum of exps are bit-identical, the log-prob may differ in the last bit of the double.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../../native/common/nn_rows.h"
#include "../../native/common/rope.h"
#include "../../native/cpu/gemm.h"  // GemmWeights: embedding tables in any weight format

namespace zt {
namespace cuda {

enum class Impl { Fast, Reference, Emulated };

// out[r] = x[r] * rms_inv * w for rows of dim values.
float rmsnorm_host(Impl impl, float* out, const float* x, const float* w, size_t rows, size_t dim, double eps);

// Rotates x [rows][heads][hd] in place at positions pos[r] (all in [min_pos, max_pos]); the cos/sin
// tables of those positions are computed on the host as the CPU computes them (rope.h).
float rope_host(Impl impl, float* x, size_t rows, size_t heads, size_t hd, const int32_t* pos, int32_t min_pos,
                int32_t max_pos, const RopeParams& p);

// a holds host pointers (ld_q = ld_out = Hq * hd); a.out may equal a.q.
float attention_host(Impl impl, const AttnArgs& a);

float swiglu_host(Impl impl, float* out, const float* gate, const float* up, size_t n);

// out[i] = table[ids[i]] (ids already validated < vocab).
float embedding_host(Impl impl, float* out, const float* table, size_t vocab, size_t dim, const int32_t* ids, size_t n);

// out[r] = log softmax(x[r])[targets[r]] for targets[r] >= 0 (validated < n), NaN for the others.
float log_probs_host(Impl impl, const float* x, size_t rows, size_t n, const int32_t* targets, double* out);

// out[r] = index of the first maximum of row r, NaN ignored; -1 when the row has no other value.
float argmax_host(Impl impl, const float* x, size_t rows, size_t n, int64_t* out);

// --- the same ops on memory the caller owns (device model, cuda/kernels/llama.h) ----------------
// Pointers are device memory launched on `stream` (a cudaStream_t) for Fast / Reference, host memory
// run at once for Emulated (the fast kernel's per-lane code, or the plain per-element code). No
// validation (the callers validate); rows / counts are passed in, nothing is read back.

void rmsnorm_launch(Impl impl, float* out, const float* x, const float* w, size_t rows, size_t dim, double eps, void* stream);
// x [rows][heads][hd] rotated in place at table rows pos[r] - first of cos_t / sin_t [.][hd / 2].
void rope_launch(Impl impl, float* x, size_t rows, size_t heads, size_t hd, const int32_t* pos, int32_t first,
                 const float* cos_t, const float* sin_t, void* stream);
// rows = a.q_off[a.B] (the number of query rows).
void attention_launch(Impl impl, const AttnArgs& a, size_t rows, void* stream);
void swiglu_launch(Impl impl, float* out, const float* gate, const float* up, size_t n, void* stream);
// out[i] = row ids[i] of the table (decoded when quantized), then, with dir, + alpha * z over the
// row's element indices ids[i] * dim + j (the CPU's embed_rows: perturb_range of the gathered row).
void embed_launch(Impl impl, float* out, const GemmWeights& table, const int32_t* ids, size_t n, const Direction* dir,
                  float alpha, void* stream);
void log_probs_launch(Impl impl, const float* x, size_t rows, size_t n, const int32_t* targets, double* out, void* stream);
// Keys and values of N packed rows [N][H][hd] into the attention layout (a forward's own, or a KV
// cache's layer): token t of sequence s at slot start[s] + t - seq_off[s]; keys [B][H][hd][cap],
// values [B][H][cap][hd].
void kv_store_launch(Impl impl, float* kl, float* vl, const float* k, const float* v, const int32_t* seq_off,
                     const int32_t* start, size_t B, size_t N, size_t H, size_t hd, size_t cap, void* stream);
// dst[dst_rows[i] * cols + c] = src[src_rows[i] * row_stride + c * col_stride] for i < n, c < cols
// (dst_rows null: i): the LM head's row gather and the logits copied out (subset columns transposed).
void gather_launch(Impl impl, float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows,
                   size_t row_stride, size_t col_stride, size_t n, size_t cols, void* stream);

}  // namespace cuda
}  // namespace zt
