#include "llama_grad.h"

#include <math.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "../common/mathfn.h"
#include "../common/status.h"
#include "cpu_features.h"
#include "memory.h"
#include "threadpool.h"

namespace zt {
namespace {

constexpr size_t kRowChunk = 32;              // rows per task of the row-wise backward kernels
constexpr size_t kTransposeFloats = 1 << 20;  // a transposed weight block is at most 4 MB
constexpr size_t kTokenBlock = 256;           // tokens per dW GEMM (bounds the transposed activations)
constexpr size_t kHeadChunkBytes = 32u << 20;  // logits (then their gradient) of at most this many bytes at a time
constexpr size_t kMaxCandidates = 256;         // candidate-restricted cross-entropy: label words per task

// Engine memory of one category, freed on scope exit.
template <class T>
struct Buf {
  T* p = nullptr;
  size_t bytes = 0;
  MemCategory cat;
  Buf(size_t n, MemCategory c, bool zero = false) : bytes(n * sizeof(T)), cat(c) {
    p = (T*)host_alloc(bytes, c);
    if (zero && bytes) memset(p, 0, bytes);
  }
  ~Buf() { host_free(p, bytes, cat); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// --- matrix products ----------------------------------------------------------------------
// mm_nt: C[M,N] (+)= A[M,K] . W[N,K]^T   (forward linear layers, logits)
// mm_nn: C[M,K] (+)= A[M,N] . W[N,K]     (input gradients dX = dY . W)
// mm_tn: C[N,K] +=  A[M,N]^T . X[M,K]    (weight gradients dW += dY^T . X)
// float: all three are gemm() (its fp32 chain order and error bound) over operands transposed into
// workspace: W in blocks of columns (at most kTransposeFloats), activations kTokenBlock tokens at a
// time, so the workspace stays bounded for any vocabulary or sequence length.
// double: plain loops, sums in k order (the reference).

void transpose(float* dst, size_t ld_dst, const float* src, size_t ld_src, size_t rows, size_t cols) {
  // dst[c][r] = src[r][c]; tasks own 32-column stripes of src (32 rows of dst)
  parallel_chunks(cols, 32, [&](size_t c0, size_t c1) {
    for (size_t r0 = 0; r0 < rows; r0 += 32) {
      const size_t r1 = std::min(rows, r0 + 32);
      for (size_t c = c0; c < c1; ++c)
        for (size_t r = r0; r < r1; ++r) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
  });
}

void mm_nt(float* C, const float* A, const float* W, size_t M, size_t N, size_t K, bool acc) {
  if (!M || !N) return;
  GemmArgs g{};
  g.a = A;
  g.m = M;
  g.w.f32 = true;
  g.w.w32 = W;
  g.w.n = N;
  g.w.k = K;
  g.c = C;
  g.accumulate = acc;
  gemm(g);
}

void mm_nn(float* C, const float* A, const float* W, size_t M, size_t N, size_t K, bool acc) {
  if (!M || !K) return;
  // Blocks of nb rows of W (the reduction dimension): C (+)= A[:, n0:n1] . W[n0:n1, :], with
  // W[n0:n1, :]^T and the A columns copied contiguous; each block's gemm accumulates onto the
  // previous (its fp32 chain continues), so every element is transposed and packed once.
  const size_t nb = std::min(N, std::max<size_t>(16, kTransposeFloats / std::max<size_t>(K, 1) / 16 * 16));
  Buf<float> wt(K * nb, MemCategory::Workspace), ab(nb < N ? M * nb : 0, MemCategory::Workspace);
  for (size_t n0 = 0; n0 < N; n0 += nb) {
    const size_t n = std::min(nb, N - n0);
    transpose(wt.p, n, W + n0 * K, K, n, K);
    const float* a = A;
    if (n < N) {
      parallel_chunks(M, kRowChunk, [&](size_t m0, size_t m1) {
        for (size_t m = m0; m < m1; ++m) memcpy(ab.p + m * n, A + m * N + n0, n * sizeof(float));
      });
      a = ab.p;
    }
    mm_nt(C, a, wt.p, M, K, n, acc || n0 > 0);
  }
}

void mm_tn(float* C, const float* A, const float* X, size_t M, size_t N, size_t K) {
  if (!M || !N || !K) return;
  const size_t mb = std::min(M, kTokenBlock);
  Buf<float> at(N * mb, MemCategory::Workspace), xt(K * mb, MemCategory::Workspace);
  for (size_t m0 = 0; m0 < M; m0 += mb) {
    const size_t n = std::min(mb, M - m0);
    transpose(at.p, n, A + m0 * N, N, n, N);
    transpose(xt.p, n, X + m0 * K, K, n, K);
    mm_nt(C, at.p, xt.p, N, K, n, true);
  }
}

void mm_nt(double* C, const double* A, const double* W, size_t M, size_t N, size_t K, bool acc) {
  parallel_chunks(M, 4, [&](size_t m0, size_t m1) {
    for (size_t m = m0; m < m1; ++m)
      for (size_t n = 0; n < N; ++n) {
        double s = acc ? C[m * N + n] : 0;
        for (size_t k = 0; k < K; ++k) s += A[m * K + k] * W[n * K + k];
        C[m * N + n] = s;
      }
  });
}

void mm_nn(double* C, const double* A, const double* W, size_t M, size_t N, size_t K, bool acc) {
  parallel_chunks(M, 4, [&](size_t m0, size_t m1) {
    for (size_t m = m0; m < m1; ++m)
      for (size_t k = 0; k < K; ++k) {
        double s = acc ? C[m * K + k] : 0;
        for (size_t n = 0; n < N; ++n) s += A[m * N + n] * W[n * K + k];
        C[m * K + k] = s;
      }
  });
}

void mm_tn(double* C, const double* A, const double* X, size_t M, size_t N, size_t K) {
  parallel_chunks(N, 4, [&](size_t n0, size_t n1) {
    for (size_t n = n0; n < n1; ++n)
      for (size_t k = 0; k < K; ++k) {
        double s = C[n * K + k];
        for (size_t m = 0; m < M; ++m) s += A[m * N + n] * X[m * K + k];
        C[n * K + k] = s;
      }
  });
}

// --- forward kernels: float uses the inference kernels, double the plain reference ---------

void fwd_rmsnorm(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps) { rmsnorm(out, x, w, rows, dim, eps); }
void fwd_rmsnorm(double* out, const double* x, const double* w, size_t rows, size_t dim, double eps) {
  parallel_chunks(rows, kRowChunk, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      double ss = 0;
      for (size_t i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
      const double s = 1.0 / sqrt(ss / (double)dim + eps);
      for (size_t i = 0; i < dim; ++i) out[r * dim + i] = x[r * dim + i] * s * w[i];
    }
  });
}

void fwd_rope(float* x, size_t rows, size_t ld, size_t heads, size_t hd, const int32_t* pos, const float* c, const float* s) {
  rope(x, rows, ld, heads, hd, pos, c, s);
}
void fwd_rope(double* x, size_t rows, size_t ld, size_t heads, size_t hd, const int32_t* pos, const double* ct, const double* st) {
  const size_t half = hd / 2;
  parallel_chunks(rows, kRowChunk, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r)
      for (size_t h = 0; h < heads; ++h) {
        double* x1 = x + r * ld + h * hd;
        double* x2 = x1 + half;
        const double *c = ct + (size_t)pos[r] * half, *s = st + (size_t)pos[r] * half;
        for (size_t i = 0; i < half; ++i) {
          const double a = x1[i], b = x2[i];
          x1[i] = a * c[i] - b * s[i];
          x2[i] = b * c[i] + a * s[i];
        }
      }
  });
}

void make_rope_tables(float* c, float* s, size_t P, size_t hd, const RopeParams& p) { rope_tables(c, s, 0, P, hd, p); }
void make_rope_tables(double* c, double* s, size_t P, size_t hd, const RopeParams& p) {
  std::vector<double> inv(hd / 2);
  rope_inv_freq(inv.data(), hd, p);
  for (size_t r = 0; r < P; ++r)
    for (size_t i = 0; i < hd / 2; ++i) {
      c[r * (hd / 2) + i] = cos((double)r * inv[i]);
      s[r * (hd / 2) + i] = sin((double)r * inv[i]);
    }
}

void fwd_swiglu(float* out, const float* g, const float* u, size_t n) { swiglu(out, g, u, n); }
void fwd_swiglu(double* out, const double* g, const double* u, size_t n) {
  parallel_chunks(n, 1 << 14, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) out[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
  });
}

// The attention layout of the inference kernels without a cache: keys kt [B][Hkv][hd][T],
// values vt [B][Hkv][T][hd], slot = index in the sequence.
template <class T>
struct AttnView {
  const int32_t* off;
  const uint8_t* kmask;  // [B][Tm]
  size_t B, Hq, Hkv, hd, Tm;
  T scale;
};

void fwd_attention(const AttnView<float>& a, float* out, const float* q, const float* kt, const float* vt) {
  std::vector<int32_t> zero(a.B, 0);
  AttnArgs at{};
  at.out = out;
  at.q = q;
  at.k = kt;
  at.v = vt;
  at.q_off = a.off;
  at.q_start = zero.data();
  at.kmask = a.kmask;
  at.B = a.B;
  at.Hq = a.Hq;
  at.Hkv = a.Hkv;
  at.hd = a.hd;
  at.cap = a.Tm;
  at.ld_q = at.ld_out = a.Hq * a.hd;
  at.scale = a.scale;
  attention(at);
}
void fwd_attention(const AttnView<double>& a, double* out, const double* q, const double* kt, const double* vt) {
  const size_t hd = a.hd, group = a.Hq / a.Hkv, T = a.Tm, ld = a.Hq * hd;
  parallel_for(a.B * a.Hkv, [&](size_t task) {
    const size_t b = task / a.Hkv, kvh = task % a.Hkv;
    const double* k = kt + (b * a.Hkv + kvh) * hd * T;
    const double* v = vt + (b * a.Hkv + kvh) * T * hd;
    const uint8_t* mb = a.kmask + b * T;
    std::vector<double> p(T);
    for (size_t i = 0; i < (size_t)(a.off[b + 1] - a.off[b]); ++i)
      for (size_t g = 0; g < group; ++g) {
        const size_t h = kvh * group + g;
        const double* qh = q + ((size_t)a.off[b] + i) * ld + h * hd;
        double* oh = out + ((size_t)a.off[b] + i) * ld + h * hd;
        double m = -INFINITY, l = 0;
        for (size_t j = 0; j <= i; ++j) {
          if (!mb[j]) continue;
          double s = 0;
          for (size_t d = 0; d < hd; ++d) s += qh[d] * k[d * T + j];
          p[j] = s * a.scale;
          m = std::max(m, p[j]);
        }
        for (size_t d = 0; d < hd; ++d) oh[d] = 0;
        if (m == -INFINITY) continue;
        for (size_t j = 0; j <= i; ++j)
          if (mb[j]) l += (p[j] = exp(p[j] - m));
        for (size_t j = 0; j <= i; ++j)
          if (mb[j])
            for (size_t d = 0; d < hd; ++d) oh[d] += p[j] / l * v[j * hd + d];
      }
  });
}

// Softmax statistics of one row of logits: max and sum exp(x - max) in double. float: the
// inference kernel (same bits as the forward's log-probabilities).
void row_stats(const float* x, size_t n, double* m, double* s) {
  float mf;
  (use_avx2() ? avx2::softmax_stats : softmax_stats_ref)(x, 1, n, n, &mf, s);
  *m = mf;
}
void row_stats(const double* x, size_t n, double* m, double* s) {
  double mx = -INFINITY, sum = 0;
  for (size_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  for (size_t i = 0; i < n; ++i) sum += exp(x[i] - mx);
  *m = mx;
  *s = sum;
}

// --- backward kernels (templated scalar code, double accumulation) --------------------------

// dx += dRMSNorm(x; w) . dy and dw += sum_rows dy * x * r, r = 1/sqrt(mean(x^2) + eps):
//   dx_i = r (dy_i w_i) - x_i r^3 / D * sum_j dy_j w_j x_j.
// dw partials per 32-row chunk, reduced in chunk order (dx_acc null: weight gradient only).
template <class T>
void rmsnorm_backward(T* dx_acc, T* dw, const T* dy, const T* x, const T* w, size_t rows, size_t D, double eps) {
  const size_t nchunks = (rows + kRowChunk - 1) / kRowChunk;
  Buf<double> part(dw ? nchunks * D : 0, MemCategory::Workspace);
  parallel_for(nchunks, [&](size_t t) {
    double* pw = dw ? part.p + t * D : nullptr;
    if (pw) memset(pw, 0, D * sizeof(double));
    for (size_t r = t * kRowChunk; r < std::min(rows, (t + 1) * kRowChunk); ++r) {
      const T *xr = x + r * D, *dyr = dy + r * D;
      double ss = 0, dot = 0;
      for (size_t i = 0; i < D; ++i) {
        ss += (double)xr[i] * (double)xr[i];
        dot += (double)dyr[i] * (double)w[i] * (double)xr[i];
      }
      const double rinv = 1.0 / sqrt(ss / (double)D + eps), k = rinv * rinv * rinv * dot / (double)D;
      if (dx_acc)
        for (size_t i = 0; i < D; ++i) dx_acc[r * D + i] = (T)((double)dx_acc[r * D + i] + rinv * (double)dyr[i] * (double)w[i] - (double)xr[i] * k);
      if (pw)
        for (size_t i = 0; i < D; ++i) pw[i] += (double)dyr[i] * (double)xr[i] * rinv;
    }
  });
  if (dw)
    parallel_chunks(D, 256, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) {
        double s = 0;
        for (size_t t = 0; t < nchunks; ++t) s += part.p[t * D + i];
        dw[i] = (T)((double)dw[i] + s);
      }
    });
}

// h = silu(g) u:  dg = dh u silu'(g), du = dh silu(g), silu'(g) = sig (1 + g (1 - sig)).
// In place: dg overwrites dh.
template <class T>
void swiglu_backward(T* dh_dg, T* du, const T* g, const T* u, size_t n) {
  parallel_chunks(n, 1 << 14, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      const double gi = g[i], sig = 1.0 / (1.0 + exp(-gi)), dh = dh_dg[i];
      du[i] = (T)(dh * gi * sig);
      dh_dg[i] = (T)(dh * (double)u[i] * sig * (1.0 + gi * (1.0 - sig)));
    }
  });
}

// Causal GQA attention backward over the forward's layout, one task per (sequence, KV head):
// the task recomputes each query's probabilities p (scores in T, max and sum in double), then
//   dP_j = dO.v_j, dS_j = p_j (dP_j - sum_k p_k dP_k), dq = scale sum_j dS_j k_j,
//   dk_j += scale dS_j q, dv_j += p_j dO,
// with its keys copied to rows ([n][hd], contiguous per key) so that every inner loop runs over
// d with unit stride; dK/dV of its KV head accumulate in T in query order, then are stored
// ([N][Hkv*hd] rows).
template <class T>
void attention_backward(const AttnView<T>& a, const T* q, const T* kt, const T* vt, const T* dout, T* dq, T* dk, T* dv) {
  const size_t hd = a.hd, group = a.Hq / a.Hkv, Tm = a.Tm, ldq = a.Hq * hd, ldk = a.Hkv * hd;
  parallel_for(a.B * a.Hkv, [&](size_t task) {
    const size_t b = task / a.Hkv, kvh = task % a.Hkv, n = (size_t)(a.off[b + 1] - a.off[b]), r0 = (size_t)a.off[b];
    const T* k = kt + (b * a.Hkv + kvh) * hd * Tm;
    const T* v = vt + (b * a.Hkv + kvh) * Tm * hd;
    const uint8_t* mb = a.kmask + b * Tm;
    std::vector<T> kr(n * hd), dkl(n * hd, T(0)), dvl(n * hd, T(0)), dql(hd);
    std::vector<double> p(n), dp(n);
    for (size_t j = 0; j < n; ++j)
      for (size_t d = 0; d < hd; ++d) kr[j * hd + d] = k[d * Tm + j];
    for (size_t i = 0; i < n; ++i)
      for (size_t g = 0; g < group; ++g) {
        const size_t h = kvh * group + g;
        const T* qh = q + (r0 + i) * ldq + h * hd;
        const T* doh = dout + (r0 + i) * ldq + h * hd;
        T* dqh = dq + (r0 + i) * ldq + h * hd;
        double m = -INFINITY;
        for (size_t j = 0; j <= i; ++j) {
          if (!mb[j]) continue;
          const T* kj = kr.data() + j * hd;
          T s = 0;
          for (size_t d = 0; d < hd; ++d) s += qh[d] * kj[d];
          p[j] = (double)(s * a.scale);
          m = std::max(m, p[j]);
        }
        for (size_t d = 0; d < hd; ++d) dqh[d] = 0;
        if (m == -INFINITY) continue;  // sees no key: output 0, no gradient
        double l = 0, delta = 0;
        for (size_t j = 0; j <= i; ++j)
          if (mb[j]) l += (p[j] = exp(p[j] - m));
        for (size_t j = 0; j <= i; ++j) {
          if (!mb[j]) continue;
          p[j] /= l;
          const T* vj = v + j * hd;
          T s = 0;
          for (size_t d = 0; d < hd; ++d) s += doh[d] * vj[d];
          dp[j] = (double)s;
          delta += p[j] * dp[j];
        }
        for (size_t d = 0; d < hd; ++d) dql[d] = 0;
        for (size_t j = 0; j <= i; ++j) {
          if (!mb[j]) continue;
          const T ds = (T)(p[j] * (dp[j] - delta) * (double)a.scale), pj = (T)p[j];
          const T* kj = kr.data() + j * hd;
          T *dkj = dkl.data() + j * hd, *dvj = dvl.data() + j * hd;
          for (size_t d = 0; d < hd; ++d) dql[d] += ds * kj[d];
          for (size_t d = 0; d < hd; ++d) dkj[d] += ds * qh[d];
          for (size_t d = 0; d < hd; ++d) dvj[d] += pj * doh[d];
        }
        for (size_t d = 0; d < hd; ++d) dqh[d] = dql[d];
      }
    for (size_t j = 0; j < n; ++j) {
      memcpy(dk + (r0 + j) * ldk + kvh * hd, dkl.data() + j * hd, hd * sizeof(T));
      memcpy(dv + (r0 + j) * ldk + kvh * hd, dvl.data() + j * hd, hd * sizeof(T));
    }
  });
}

// dE[tok_i] += dx_i; tasks own column ranges and scan the tokens in order.
template <class T>
void embed_backward(T* dE, const T* dx, const int32_t* tok, size_t N, size_t D) {
  parallel_chunks(D, 64, [&](size_t d0, size_t d1) {
    for (size_t i = 0; i < N; ++i)
      for (size_t d = d0; d < d1; ++d) dE[(size_t)tok[i] * D + d] += dx[i * D + d];
  });
}

template <class T>
void add_into(T* y, const T* x, size_t n) {
  parallel_chunks(n, 1 << 14, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) y[i] += x[i];
  });
}

// --- the training step ----------------------------------------------------------------------

template <class T>
class Trainer {
 public:
  Trainer(const LlamaConfig& c, const LlamaParams<const T*>& w, const LlamaBatch& b, const GradOptions& o, const LlamaParams<T*>& g)
      : c_(c), w_(w), b_(b), o_(o), g_(g) {
    N = (size_t)b.seq_off[b.B];
    D = c.hidden;
    Q = c.heads * c.head_dim;
    KV = c.kv_heads * c.head_dim;
    I = c.inter;
    V = c.vocab;
    hd = c.head_dim;
    Tm = 0;
    int32_t P = 1;
    for (size_t s = 0; s < b.B; ++s) Tm = std::max(Tm, (size_t)(b.seq_off[s + 1] - b.seq_off[s]));
    for (size_t i = 0; i < N; ++i) P = std::max(P, b.positions[i] + 1);
    P_ = (size_t)P;
    kvlay = b.B * c.kv_heads * Tm * hd;
    // lowest layer whose backward is needed (layers() = none)
    lo_ = c.layers;
    if (g.embed) lo_ = 0;
    for (size_t l = 0; l < c.layers && lo_ == c.layers; ++l) {
      const auto& G = g.layers[l];
      if (G.attn_norm || G.q || G.k || G.v || G.o || G.mlp_norm || G.gate || G.up || G.down) lo_ = l;
    }
    backward_ = lo_ < c.layers || g.norm || g.lm_head;
  }

  GradResult run() {
    const size_t L = c_.layers;
    const size_t per_layer = act_floats();
    const size_t n_acts = o_.recompute ? 1 : L;
    // layer inputs (and the final hidden state), the per-layer activations, rotary tables, key mask
    Buf<T> xs((L + 1) * N * D, MemCategory::Activations);
    Buf<T> acts(n_acts * per_layer, MemCategory::Activations, true);
    Buf<T> cos_t(P_ * hd / 2, MemCategory::Activations), sin_t(P_ * hd / 2, MemCategory::Activations);
    Buf<T> neg_sin(P_ * hd / 2, MemCategory::Activations);
    Buf<uint8_t> kmask(b_.B * Tm, MemCategory::Activations, true);
    Buf<T> scratch(2 * N * KV + N * I, MemCategory::Workspace);
    make_rope_tables(cos_t.p, sin_t.p, P_, hd, c_.rope);
    for (size_t i = 0; i < P_ * hd / 2; ++i) neg_sin.p[i] = -sin_t.p[i];
    for (size_t s = 0; s < b_.B; ++s)
      for (int32_t i = b_.seq_off[s]; i < b_.seq_off[s + 1]; ++i)
        kmask.p[s * Tm + (size_t)(i - b_.seq_off[s])] = b_.key_mask ? (b_.key_mask[i] != 0) : 1;
    cos_ = cos_t.p;
    sin_ = sin_t.p;
    nsin_ = neg_sin.p;
    av_ = AttnView<T>{b_.seq_off, kmask.p, b_.B, c_.heads, c_.kv_heads, hd, Tm, (T)(1.0 / sqrt((double)hd))};
    scratch_ = scratch.p;

    // forward
    for (size_t i = 0; i < N; ++i) memcpy(xs.p + i * D, w_.embed + (size_t)b_.tokens[i] * D, D * sizeof(T));
    for (size_t l = 0; l < L; ++l) layer_forward(l, xs.p + l * N * D, xs.p + (l + 1) * N * D, acts.p + (o_.recompute ? 0 : l) * per_layer);

    // LM head, loss and its backward into dx (the gradient of the final hidden state)
    const bool need_dx = lo_ < L;
    Buf<T> dx(backward_ ? N * D : 0, MemCategory::Workspace, true);
    GradResult r = head(xs.p + L * N * D, need_dx ? dx.p : nullptr);
    if (!need_dx) return r;

    Buf<T> dxn(N * D, MemCategory::Workspace), dA(N * I, MemCategory::Workspace), dB(N * I, MemCategory::Workspace);
    Buf<T> dO(N * Q, MemCategory::Workspace), dQ(N * Q, MemCategory::Workspace), dK(N * KV, MemCategory::Workspace),
        dV(N * KV, MemCategory::Workspace);
    for (size_t l = L; l-- > lo_;) {
      T* a = acts.p + (o_.recompute ? 0 : l) * per_layer;
      if (o_.recompute) layer_forward(l, xs.p + l * N * D, nullptr, a);
      layer_backward(l, xs.p + l * N * D, a, dx.p, dxn.p, dA.p, dB.p, dO.p, dQ.p, dK.p, dV.p, l > lo_ || g_.embed);
    }
    if (g_.embed) embed_backward(g_.embed, dx.p, b_.tokens, N, D);
    return r;
  }

 private:
  // per-layer activations: xn1, q (rotated), kt, vt, o, xmid, xn2, g, u
  size_t act_floats() const { return 3 * N * D + 2 * N * Q + 2 * kvlay + 2 * N * I; }
  struct Acts {
    T *xn1, *q, *kt, *vt, *o, *xmid, *xn2, *g, *u;
  };
  Acts split(T* a) const {
    Acts r;
    r.xn1 = a;
    r.q = r.xn1 + N * D;
    r.kt = r.q + N * Q;
    r.vt = r.kt + kvlay;
    r.o = r.vt + kvlay;
    r.xmid = r.o + N * Q;
    r.xn2 = r.xmid + N * D;
    r.g = r.xn2 + N * D;
    r.u = r.g + N * I;
    return r;
  }

  // x_out null: recomputation (the layer output is already known)
  void layer_forward(size_t l, const T* x, T* x_out, T* act) {
    const auto& W = w_.layers[l];
    const Acts a = split(act);
    T *kr = scratch_, *vr = scratch_ + N * KV, *h = scratch_ + 2 * N * KV;
    fwd_rmsnorm(a.xn1, x, W.attn_norm, N, D, c_.eps);
    mm_nt(a.q, a.xn1, W.q, N, Q, D, false);
    mm_nt(kr, a.xn1, W.k, N, KV, D, false);
    mm_nt(vr, a.xn1, W.v, N, KV, D, false);
    fwd_rope(a.q, N, Q, c_.heads, hd, b_.positions, cos_, sin_);
    fwd_rope(kr, N, KV, c_.kv_heads, hd, b_.positions, cos_, sin_);
    store_kv(kr, vr, a.kt, a.vt);
    fwd_attention(av_, a.o, a.q, a.kt, a.vt);
    memcpy(a.xmid, x, N * D * sizeof(T));
    mm_nt(a.xmid, a.o, W.o, N, D, Q, true);
    fwd_rmsnorm(a.xn2, a.xmid, W.mlp_norm, N, D, c_.eps);
    mm_nt(a.g, a.xn2, W.gate, N, I, D, false);
    mm_nt(a.u, a.xn2, W.up, N, I, D, false);
    if (!x_out) return;
    fwd_swiglu(h, a.g, a.u, N * I);
    memcpy(x_out, a.xmid, N * D * sizeof(T));
    mm_nt(x_out, h, W.down, N, D, I, true);
  }

  void store_kv(const T* kr, const T* vr, T* kt, T* vt) {
    const size_t H = c_.kv_heads;
    parallel_for(b_.B, [&](size_t s) {
      for (int32_t t = b_.seq_off[s]; t < b_.seq_off[s + 1]; ++t) {
        const size_t slot = (size_t)(t - b_.seq_off[s]);
        for (size_t h = 0; h < H; ++h)
          for (size_t d = 0; d < hd; ++d) {
            kt[((s * H + h) * hd + d) * Tm + slot] = kr[((size_t)t * H + h) * hd + d];
            vt[((s * H + h) * Tm + slot) * hd + d] = vr[((size_t)t * H + h) * hd + d];
          }
      }
    });
  }

  void layer_backward(size_t l, const T* x, T* act, T* dx, T* dxn, T* dA, T* dB, T* dO, T* dQ, T* dK, T* dV, bool need_dx_in) {
    const auto& W = w_.layers[l];
    const auto& G = g_.layers[l];
    const Acts a = split(act);
    T* h = scratch_ + 2 * N * KV;
    // MLP: x_out = xmid + swiglu(g, u) . Wd^T
    mm_nn(dA, dx, W.down, N, D, I, false);  // dh
    if (G.down) {
      fwd_swiglu(h, a.g, a.u, N * I);
      mm_tn(G.down, dx, h, N, D, I);
    }
    swiglu_backward(dA, dB, a.g, a.u, N * I);  // dA = dg, dB = du
    if (G.gate) mm_tn(G.gate, dA, a.xn2, N, I, D);
    if (G.up) mm_tn(G.up, dB, a.xn2, N, I, D);
    mm_nn(dxn, dA, W.gate, N, I, D, false);
    mm_nn(dxn, dB, W.up, N, I, D, true);
    rmsnorm_backward(dx, G.mlp_norm, dxn, a.xmid, W.mlp_norm, N, D, c_.eps);  // dx = d xmid
    // attention: xmid = x + o . Wo^T
    mm_nn(dO, dx, W.o, N, D, Q, false);
    if (G.o) mm_tn(G.o, dx, a.o, N, D, Q);
    const bool need_qkv = need_dx_in || G.attn_norm || G.q || G.k || G.v;
    if (!need_qkv) return;
    attention_backward(av_, a.q, a.kt, a.vt, dO, dQ, dK, dV);
    if (G.v) mm_tn(G.v, dV, a.xn1, N, KV, D);
    // gradients before the rotation: the rotation's transpose is the rotation by -angle
    fwd_rope(dQ, N, Q, c_.heads, hd, b_.positions, cos_, nsin_);
    fwd_rope(dK, N, KV, c_.kv_heads, hd, b_.positions, cos_, nsin_);
    if (G.q) mm_tn(G.q, dQ, a.xn1, N, Q, D);
    if (G.k) mm_tn(G.k, dK, a.xn1, N, KV, D);
    if (!need_dx_in && !G.attn_norm) return;
    mm_nn(dxn, dQ, W.q, N, Q, D, false);
    mm_nn(dxn, dK, W.k, N, KV, D, true);
    mm_nn(dxn, dV, W.v, N, KV, D, true);
    rmsnorm_backward(need_dx_in ? dx : (T*)nullptr, G.attn_norm, dxn, x, W.attn_norm, N, D, c_.eps);
  }

  // Final norm, logits of the rows with a target (a chunk at a time), -log p sums, and the
  // backward of that: dlogits = scale (softmax - onehot), into dW_head, dnorm and dx rows.
  GradResult head(const T* xf, T* dx) {
    GradResult r;
    std::vector<int32_t> rows;
    for (size_t i = 0; i < N; ++i)
      if (o_.targets[i] >= 0) rows.push_back((int32_t)i);
    const size_t R = rows.size();
    r.count = R;
    if (!R) return r;
    const size_t C = std::max<size_t>(1, std::min(R, kHeadChunkBytes / (sizeof(T) * V)));
    Buf<T> xr(C * D, MemCategory::Workspace), hn(C * D, MemCategory::Workspace), lg(C * V, MemCategory::Workspace);
    Buf<T> dh(backward_ ? C * D : 0, MemCategory::Workspace), dxr(dx ? C * D : 0, MemCategory::Workspace);
    std::vector<double> nll(C);
    for (size_t c0 = 0; c0 < R; c0 += C) {
      const size_t n = std::min(C, R - c0);
      for (size_t j = 0; j < n; ++j) memcpy(xr.p + j * D, xf + (size_t)rows[c0 + j] * D, D * sizeof(T));
      fwd_rmsnorm(hn.p, xr.p, w_.norm, n, D, c_.eps);
      mm_nt(lg.p, hn.p, w_.lm_head, n, V, D, false);
      parallel_for(n, [&](size_t j) {
        T* x = lg.p + j * V;
        const int32_t t = o_.targets[rows[c0 + j]];
        if (o_.candidates) {
          candidate_row(x, t, &nll[j]);
          return;
        }
        double m, s;
        row_stats(x, V, &m, &s);
        nll[j] = -((double)x[t] - m - log(s));
        if (!backward_) return;
        for (size_t v = 0; v < V; ++v) x[v] = (T)(o_.scale * exp((double)x[v] - m) / s);
        x[t] = (T)((double)x[t] - o_.scale);
      });
      for (size_t j = 0; j < n; ++j) r.nll_sum += nll[j];
      if (!backward_) continue;
      if (g_.lm_head) mm_tn(g_.lm_head, lg.p, hn.p, n, V, D);
      if (!g_.norm && !dx) continue;
      mm_nn(dh.p, lg.p, w_.lm_head, n, V, D, false);
      if (dx) memset(dxr.p, 0, n * D * sizeof(T));
      rmsnorm_backward(dx ? dxr.p : (T*)nullptr, g_.norm, dh.p, xr.p, w_.norm, n, D, c_.eps);
      if (dx)
        for (size_t j = 0; j < n; ++j) add_into(dx + (size_t)rows[c0 + j] * D, dxr.p + j * D, D);
    }
    return r;
  }

  // Cross-entropy over the candidate logits of one row (in double, candidates in the given order);
  // with the backward, the row becomes its gradient: scale (softmax_cands - onehot) on the
  // candidates, 0 elsewhere.
  void candidate_row(T* x, int32_t t, double* nll) const {
    const size_t K = o_.n_candidates;
    double m = -INFINITY, s = 0, xt = (double)x[t];
    for (size_t k = 0; k < K; ++k) m = std::max(m, (double)x[o_.candidates[k]]);
    for (size_t k = 0; k < K; ++k) s += exp((double)x[o_.candidates[k]] - m);
    *nll = -(xt - m - log(s));
    if (!backward_) return;
    double p[kMaxCandidates];
    for (size_t k = 0; k < K; ++k) p[k] = exp((double)x[o_.candidates[k]] - m) / s;
    memset(x, 0, V * sizeof(T));
    for (size_t k = 0; k < K; ++k) x[o_.candidates[k]] = (T)(o_.scale * p[k]);
    x[t] = (T)((double)x[t] - o_.scale);
  }

  const LlamaConfig& c_;
  const LlamaParams<const T*>& w_;
  const LlamaBatch& b_;
  const GradOptions& o_;
  const LlamaParams<T*>& g_;
  size_t N, D, Q, KV, I, V, hd, Tm, P_, kvlay, lo_;
  bool backward_;
  const T *cos_ = nullptr, *sin_ = nullptr, *nsin_ = nullptr;
  T* scratch_ = nullptr;
  AttnView<T> av_{};
};

}  // namespace

static void validate_candidates(const LlamaConfig& c, const LlamaBatch& b, const GradOptions& o) {
  if (!o.candidates) return;
  const size_t K = o.n_candidates;
  if (K < 2 || K > kMaxCandidates)
    fail(Code::InvalidArgument, "llama grad: give between 2 and " + std::to_string(kMaxCandidates) + " candidates, got " + std::to_string(K));
  for (size_t k = 0; k < K; ++k) {
    if (o.candidates[k] < 0 || (size_t)o.candidates[k] >= c.vocab)
      fail(Code::OutOfRange, "llama grad: candidate " + std::to_string(o.candidates[k]) + " is outside the vocabulary");
    for (size_t j = 0; j < k; ++j)
      if (o.candidates[j] == o.candidates[k]) fail(Code::InvalidArgument, "llama grad: candidate " + std::to_string(o.candidates[k]) + " is given twice");
  }
  const size_t N = (size_t)b.seq_off[b.B];
  for (size_t i = 0; i < N; ++i)
    if (o.targets[i] >= 0 && std::find(o.candidates, o.candidates + K, o.targets[i]) == o.candidates + K)
      fail(Code::InvalidArgument, "llama grad: target " + std::to_string(o.targets[i]) + " at row " + std::to_string(i) + " is not one of the candidates");
}

template <class T>
GradResult llama_loss_grad(const LlamaConfig& c, const LlamaParams<const T*>& w, const LlamaBatch& b, const GradOptions& o,
                           const LlamaParams<T*>& g) {
  LlamaOutputs out;
  out.targets = o.targets;
  llama_validate(c, b, nullptr, out);
  if (w.layers.size() != c.layers || g.layers.size() != c.layers) fail(Code::Internal, "llama grad: layer count mismatch");
  if (!(std::isfinite(o.scale))) fail(Code::InvalidArgument, "llama grad: the loss scale must be finite");
  validate_candidates(c, b, o);
  return Trainer<T>(c, w, b, o, g).run();
}

template GradResult llama_loss_grad<float>(const LlamaConfig&, const LlamaParams<const float*>&, const LlamaBatch&, const GradOptions&,
                                           const LlamaParams<float*>&);
template GradResult llama_loss_grad<double>(const LlamaConfig&, const LlamaParams<const double*>&, const LlamaBatch&, const GradOptions&,
                                            const LlamaParams<double*>&);

}  // namespace zt
