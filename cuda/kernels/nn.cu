// Transformer ops on the GPU (see nn.h). The fast kernels are written as a sequence of warp
// phases over shared memory so that the same code runs on the host, lane by lane (Emulated); the
// reference kernels run the CPU's row functions (native/common/nn_rows.h) one thread per row.
//
// Status: compiled for sm_80..90, checked here only through the host emulation; the GPU runs are
// scripts/gpu-check.js (section checkNn) on a GPU host.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../../native/common/status.h"
#include "../../native/cpu/perturb.h"  // perturbed(): the one perturbation rounding
#include "device.h"
#include "nn.h"
#include "pool.h"
#include "timed_call.h"

namespace zt {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowWarps = 8;   // rows (warps) per block of the RMSNorm and log-prob kernels
constexpr int kAttnWarps = 4;  // (row, head) pairs per attention block
constexpr int kThreads = 256;  // elementwise kernels
constexpr int kRefThreads = 128;
constexpr int kStage = 256;                       // terms staged per warp for the 8-lane chains
constexpr int kLaneDims = kMaxHeadDim / kWarp;    // attention head dims per lane

// --- warps on the device and on the host --------------------------------------------------
// A fast kernel's body is a sequence of phases. run(f) runs f(lane, state) for every lane of the
// warp and ends with a warp barrier; state is the lane's registers. Lanes exchange values only
// through shared memory and only across a barrier, so running the lanes one after another
// (HostWarp) computes exactly what the warp does.
template <class St>
struct DeviceWarp {
  int lane;
  St st;
  template <class F>
  __host__ __device__ __forceinline__ void run(F&& f) {
    f(lane, st);
#if defined(__CUDA_ARCH__)
    __syncwarp();
#endif
  }
};

template <class St>
struct HostWarp {
  St st[kWarp];
  template <class F>
  __host__ __device__ void run(F&& f) {
    for (int l = 0; l < kWarp; ++l) f(l, st[l]);
  }
};

struct NoState {};

// --- the 8-lane order of a double sum with a warp ---------------------------------------------
// The CPU adds term i < n8 to lane i % 8 in order (mathfn.h). Here all 32 lanes compute 256 terms
// into shared memory, then lane k < 8 adds the terms k, k + 8, ... in order: each chain sees the
// CPU lane's additions in the CPU's order. The chains are serial by definition (latency-bound:
// n / 8 dependent double adds per row).
struct Chains {
  double term[kStage];
  double acc[8];
};

template <class W, class Term>
__host__ __device__ __forceinline__ void chains_sum(W& w, Chains& c, size_t n8, const Term& term) {
  w.run([&](int lane, auto&) {
    if (lane < 8) c.acc[lane] = 0;
  });
  for (size_t i0 = 0; i0 < n8; i0 += kStage) {
    const size_t cnt = n8 - i0 < (size_t)kStage ? n8 - i0 : (size_t)kStage;  // a multiple of 8
    w.run([&](int lane, auto&) {
      for (size_t i = lane; i < cnt; i += kWarp) c.term[i] = term(i0 + i);
    });
    w.run([&](int lane, auto&) {
      if (lane < 8)
        for (size_t i = lane; i < cnt; i += 8) c.acc[lane] += c.term[i];
    });
  }
}

// --- RMSNorm: one warp per row -------------------------------------------------------------

struct RmsState {
  float s;
};

template <class W>
__host__ __device__ __forceinline__ void rmsnorm_warp(W& w, Chains& c, float* out, const float* x, const float* wt,
                                                      size_t dim, double eps) {
  const size_t n8 = dim & ~(size_t)7;
  chains_sum(w, c, n8, [&](size_t i) {
    double v = x[i];
    return v * v;
  });
  w.run([&](int, RmsState& st) {
    double ss = reduce8d(c.acc);
    for (size_t i = n8; i < dim; ++i) ss += (double)x[i] * (double)x[i];
    st.s = rms_inv(ss, dim, eps);
  });
  w.run([&](int lane, RmsState& st) {  // after every read of x: out may be x
    for (size_t i = lane; i < dim; i += kWarp) out[i] = zt_mul(zt_mul(x[i], st.s), wt[i]);
  });
}

__global__ void rmsnorm_fast(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps) {
  __shared__ Chains ch[kRowWarps];
  const int wi = threadIdx.x / kWarp;
  const size_t r = (size_t)blockIdx.x * kRowWarps + wi;
  if (r >= rows) return;  // whole warps only
  DeviceWarp<RmsState> warp{(int)(threadIdx.x % kWarp)};
  rmsnorm_warp(warp, ch[wi], out + r * dim, x + r * dim, w, dim, eps);
}

__global__ void rmsnorm_ref(float* out, const float* x, const float* w, size_t rows, size_t dim, double eps) {
  const size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) rmsnorm_row(out + r * dim, x + r * dim, w, dim, eps);
}

// --- log-probabilities: one warp per row ------------------------------------------------------

// The row max in any order: it is the CPU's value up to the sign of a zero, which no output shows
// (argmax compares with ==; in log-probs a tie of +0 and -0 makes the sum >= 2, and
// exp_f32(+-0) = 1). NaN never wins.
struct RowMax {
  float lane_max[kWarp];
  float m;
};

template <class W>
__host__ __device__ __forceinline__ void row_max(W& w, RowMax& sh, const float* x, size_t n) {
  w.run([&](int lane, auto&) {
    float m = neg_inf_f32();
    for (size_t i = lane; i < n; i += kWarp) m = max_keep(x[i], m);
    sh.lane_max[lane] = m;
  });
  w.run([&](int lane, auto&) {
    if (lane != 0) return;
    float m = neg_inf_f32();
    for (int l = 0; l < kWarp; ++l) m = max_keep(sh.lane_max[l], m);
    sh.m = m;
  });
}

struct LogProbShared {
  RowMax max;
  Chains c;
};

__host__ __device__ __forceinline__ double quiet_nan_f64() {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(0x7ff8000000000000ll);
#else
  return __builtin_nan("");
#endif
}

template <class W>
__host__ __device__ __forceinline__ void log_prob_warp(W& w, LogProbShared& sh, const float* x, size_t n, int32_t target,
                                                       double* out) {
  const size_t n8 = n & ~(size_t)7;
  row_max(w, sh.max, x, n);
  const float& m = sh.max.m;
  chains_sum(w, sh.c, n8, [&](size_t i) { return (double)exp_f32(zt_add(x[i], -m)); });
  w.run([&](int lane, NoState&) {
    if (lane != 0) return;
    double s = reduce8d(sh.c.acc);
    for (size_t i = n8; i < n; ++i) s += (double)exp_f32(zt_add(x[i], -m));
    *out = log_prob(x[target], m, s);
  });
}

__global__ void log_probs_fast(const float* x, size_t rows, size_t n, const int32_t* targets, double* out) {
  __shared__ LogProbShared sh[kRowWarps];
  const int wi = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const size_t r = (size_t)blockIdx.x * kRowWarps + wi;
  if (r >= rows) return;
  if (targets[r] < 0) {
    if (lane == 0) out[r] = quiet_nan_f64();
    return;
  }
  DeviceWarp<NoState> warp{lane};
  log_prob_warp(warp, sh[wi], x + r * n, n, targets[r], out + r);
}

__global__ void log_probs_ref(const float* x, size_t rows, size_t n, const int32_t* targets, double* out) {
  const size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  if (targets[r] < 0) {
    out[r] = quiet_nan_f64();
    return;
  }
  float m;
  double s;
  softmax_stats_row(x + r * n, n, &m, &s);
  out[r] = log_prob(x[r * n + (size_t)targets[r]], m, s);
}

// --- argmax: one warp per row -----------------------------------------------------------------

struct ArgmaxShared {
  RowMax max;
  int64_t lane_first[kWarp];
};

template <class W>
__host__ __device__ __forceinline__ void argmax_warp(W& w, ArgmaxShared& sh, const float* x, size_t n, int64_t* out) {
  row_max(w, sh.max, x, n);
  w.run([&](int lane, NoState&) {  // lane: its first element equal to the max
    int64_t first = -1;
    for (size_t i = lane; i < n; i += kWarp)
      if (x[i] == sh.max.m) {
        first = (int64_t)i;
        break;
      }
    sh.lane_first[lane] = first;
  });
  w.run([&](int lane, NoState&) {
    if (lane != 0) return;
    int64_t best = -1;
    for (int l = 0; l < kWarp; ++l)
      if (sh.lane_first[l] >= 0 && (best < 0 || sh.lane_first[l] < best)) best = sh.lane_first[l];
    *out = best;
  });
}

__global__ void argmax_fast(const float* x, size_t rows, size_t n, int64_t* out) {
  __shared__ ArgmaxShared sh[kRowWarps];
  const int wi = threadIdx.x / kWarp;
  const size_t r = (size_t)blockIdx.x * kRowWarps + wi;
  if (r >= rows) return;
  DeviceWarp<NoState> warp{(int)(threadIdx.x % kWarp)};
  argmax_warp(warp, sh[wi], x + r * n, n, out + r);
}

__global__ void argmax_ref(const float* x, size_t rows, size_t n, int64_t* out) {
  const size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) out[r] = argmax_row(x + r * n, n);
}

// --- attention: one warp per (query row, head) -------------------------------------------------
// Per 32-key block: lane j scores slot j0 + j (d in order); every lane finds the block max and
// rescales its own accumulators; lane j computes p_j; every lane adds the block's sum of p in the
// 8-lane order and, for its head dims lane + 32 c, the block's value sum in slot order. These are
// attention_row's operations in attention_row's order, so the bits are the CPU's.
// A warp walks its keys in sequence, so decoding a long context keeps few warps busy. A split over
// key blocks could keep the bits: block scores, maxima, p and value sums are independent given the
// running max (a prefix max); only the rescale-and-add over blocks is a serial chain.

struct AttnState {
  float o[kLaneDims];  // head dims lane + 32 c
  float m;
  double l;
  bool live;  // the current block has a visible key
};

struct AttnShared {
  float q[kMaxHeadDim];
  float s[kKeyBlock];
  float p[kKeyBlock];
};

// The sequence b with q_off[b] <= row < q_off[b + 1] (empty sequences skipped).
__host__ __device__ __forceinline__ size_t seq_of_row(const int32_t* q_off, size_t B, size_t row) {
  size_t lo = 0, hi = B;  // q_off[lo] <= row < q_off[hi]
  while (hi - lo > 1) {
    const size_t mid = (lo + hi) / 2;
    if ((size_t)q_off[mid] <= row)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

template <class W>
__host__ __device__ __forceinline__ void attention_warp(W& w, AttnShared& sh, const AttnArgs& a, size_t b, size_t i,
                                                        size_t h) {
  const size_t hd = a.hd, cap = a.cap, kvh = h / (a.Hq / a.Hkv);
  const float* kt = a.k + (b * a.Hkv + kvh) * hd * cap;  // [hd][cap]
  const float* vb = a.v + (b * a.Hkv + kvh) * cap * hd;  // [cap][hd]
  const uint8_t* mb = a.kmask ? a.kmask + b * cap : nullptr;
  const size_t row = (size_t)a.q_off[b] + i, last = (size_t)a.q_start[b] + i;
  const float* qh = a.q + row * a.ld_q + h * hd;
  float* oh = a.out + row * a.ld_out + h * hd;
  const float ninf = neg_inf_f32();
  w.run([&](int lane, AttnState& st) {
    st.m = ninf;
    st.l = 0;
#pragma unroll
    for (int c = 0; c < kLaneDims; ++c) st.o[c] = 0;
    for (size_t d = lane; d < hd; d += kWarp) sh.q[d] = qh[d];
  });
  for (size_t j0 = 0; j0 <= last; j0 += kKeyBlock) {
    const size_t n = (last + 1 < j0 + kKeyBlock ? last + 1 : j0 + kKeyBlock) - j0;
    w.run([&](int lane, AttnState&) {
      const size_t j = j0 + lane;
      float sj = ninf;
      if ((size_t)lane < n && !(mb && !mb[j])) {
        float acc = 0;
        for (size_t d = 0; d < hd; ++d) acc = zt_add(acc, zt_mul(sh.q[d], kt[d * cap + j]));
        sj = zt_mul(acc, a.scale);
      }
      sh.s[lane] = sj;
    });
    w.run([&](int lane, AttnState& st) {
      float bm = ninf;
      for (size_t j = 0; j < n; ++j) bm = max_keep(sh.s[j], bm);
      st.live = bm != ninf;
      if (!st.live) return;  // every key of the block masked (the same on every lane)
      if (bm > st.m) {
        const float corr = exp_f32(zt_add(st.m, -bm));
        st.l *= (double)corr;
#pragma unroll
        for (int c = 0; c < kLaneDims; ++c) st.o[c] = zt_mul(st.o[c], corr);
        st.m = bm;
      }
      // masked slots and slots past the block's end: exp(-inf) = 0, as if skipped
      sh.p[lane] = exp_f32(zt_add(sh.s[lane], -st.m));
    });
    w.run([&](int lane, AttnState& st) {
      if (!st.live) return;
      double l8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int j = 0; j < kKeyBlock; ++j) l8[j & 7] += (double)sh.p[j];  // adding +0 changes no sum
      st.l += reduce8d(l8);
#pragma unroll
      for (int c = 0; c < kLaneDims; ++c) {
        const size_t d = lane + (size_t)kWarp * c;
        if (d < hd) {
          float ob = 0;
          for (size_t j = 0; j < n; ++j)
            if (!(mb && !mb[j0 + j])) ob = zt_add(ob, zt_mul(sh.p[j], vb[(j0 + j) * hd + d]));
          st.o[c] = zt_add(st.o[c], ob);
        }
      }
    });
  }
  w.run([&](int lane, AttnState& st) {
#pragma unroll
    for (int c = 0; c < kLaneDims; ++c) {
      const size_t d = lane + (size_t)kWarp * c;
      if (d < hd) oh[d] = st.l > 0 ? (float)((double)st.o[c] / st.l) : 0.0f;
    }
  });
}

__global__ void attention_fast(AttnArgs a, size_t pairs) {
  __shared__ AttnShared sh[kAttnWarps];
  const int wi = threadIdx.x / kWarp;
  const size_t t = (size_t)blockIdx.x * kAttnWarps + wi;  // row * Hq + head
  if (t >= pairs) return;
  const size_t row = t / a.Hq, h = t % a.Hq, b = seq_of_row(a.q_off, a.B, row);
  DeviceWarp<AttnState> warp{(int)(threadIdx.x % kWarp)};
  attention_warp(warp, sh[wi], a, b, row - (size_t)a.q_off[b], h);
}

__global__ void attention_ref(AttnArgs a, size_t pairs) {
  const size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= pairs) return;
  const size_t row = t / a.Hq, h = t % a.Hq, b = seq_of_row(a.q_off, a.B, row);
  attention_row(a, b, row - (size_t)a.q_off[b], h);
}

// --- elementwise: one thread per element (grid-stride) ------------------------------------------

// Thread t rotates pair i of head h of row r, t = (r * heads + h) * (hd / 2) + i; the tables hold
// the positions [first, ...].
__host__ __device__ __forceinline__ void rope_pair(size_t t, float* x, size_t heads, size_t hd, const int32_t* pos,
                                                   int32_t first, const float* cos_t, const float* sin_t) {
  const size_t half = hd / 2, i = t % half, rh = t / half, r = rh / heads;
  const size_t e = (size_t)(pos[r] - first) * half + i;
  float* x1 = x + rh * hd + i;
  rope_rotate(x1, x1 + half, cos_t[e], sin_t[e]);
}

// Element t of the gathered rows: the table's value (decoded as the GEMMs decode it), perturbed
// with the direction index of that table element when the table is perturbed.
struct EmbedArgs {
  GemmWeights w;  // [vocab = n, dim = k]
  const int32_t* ids;
  float* out;
  bool perturb;
  Direction dir;
  float alpha;
};

__host__ __device__ __forceinline__ void embed_elem(size_t t, const EmbedArgs& e) {
  const uint64_t dim = e.w.k, row = (uint64_t)e.ids[t / dim], k = t % dim;
  const QTensorView& q = e.w.q;
  float v = e.w.f32 ? e.w.w32[row * dim + k] : q_decode(q.format, qt_code_at(q, row, k), qt_group(q, qt_scale_index(q, row, k)));
  if (e.perturb) v = perturbed(v, e.alpha, direction_at(e.dir, row * dim + k));
  e.out[t] = v;
}

// Thread t stores element t of the packed k and v rows [N][H][hd] into the KV layout.
__host__ __device__ __forceinline__ void kv_store_elem(size_t t, float* kl, float* vl, const float* k, const float* v,
                                                       const int32_t* seq_off, const int32_t* start, size_t B, size_t H,
                                                       size_t hd, size_t cap) {
  const size_t d = t % hd, h = (t / hd) % H, row = t / (hd * H);
  size_t lo = 0, hi = B;  // the sequence s with seq_off[s] <= row < seq_off[s + 1]
  while (hi - lo > 1) {
    const size_t mid = (lo + hi) / 2;
    if ((size_t)seq_off[mid] <= row) lo = mid;
    else hi = mid;
  }
  const size_t slot = (size_t)start[lo] + row - (size_t)seq_off[lo], sh = lo * H + h;
  kl[(sh * hd + d) * cap + slot] = k[t];
  vl[(sh * cap + slot) * hd + d] = v[t];
}

__host__ __device__ __forceinline__ void gather_elem(size_t t, float* dst, const int32_t* dst_rows, const float* src,
                                                     const int32_t* src_rows, size_t row_stride, size_t col_stride,
                                                     size_t cols) {
  const size_t i = t / cols, c = t % cols;
  dst[(dst_rows ? (size_t)dst_rows[i] : i) * cols + c] = src[(size_t)src_rows[i] * row_stride + c * col_stride];
}

__device__ __forceinline__ size_t thread_index() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t grid_threads() { return (size_t)gridDim.x * blockDim.x; }

__global__ void rope_kernel(size_t pairs, float* x, size_t heads, size_t hd, const int32_t* pos, int32_t first,
                            const float* cos_t, const float* sin_t) {
  for (size_t t = thread_index(); t < pairs; t += grid_threads()) rope_pair(t, x, heads, hd, pos, first, cos_t, sin_t);
}

__global__ void swiglu_kernel(float* out, const float* gate, const float* up, size_t n) {
  for (size_t t = thread_index(); t < n; t += grid_threads()) out[t] = swiglu_f32(gate[t], up[t]);
}

__global__ void embed_kernel(EmbedArgs e, size_t n) {
  for (size_t t = thread_index(); t < n; t += grid_threads()) embed_elem(t, e);
}

__global__ void kv_store_kernel(float* kl, float* vl, const float* k, const float* v, const int32_t* seq_off,
                                const int32_t* start, size_t B, size_t H, size_t hd, size_t cap, size_t n) {
  for (size_t t = thread_index(); t < n; t += grid_threads()) kv_store_elem(t, kl, vl, k, v, seq_off, start, B, H, hd, cap);
}

__global__ void gather_kernel(float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows,
                              size_t row_stride, size_t col_stride, size_t cols, size_t n) {
  for (size_t t = thread_index(); t < n; t += grid_threads())
    gather_elem(t, dst, dst_rows, src, src_rows, row_stride, col_stride, cols);
}

// --- host side ------------------------------------------------------------------------------

// Blocks for `items` work items of `per_block` each; coded error past the grid limit.
unsigned blocks_for(size_t items, size_t per_block, const char* op) {
  const size_t b = (items + per_block - 1) / per_block;
  if (b > 0x7fffffffu) fail(Code::OutOfRange, std::string(op) + ": too many rows for one launch");
  return (unsigned)b;
}

// Grid-stride kernels: enough blocks to fill the GPU, no more.
unsigned stride_blocks(size_t n) { return (unsigned)std::min<size_t>((n + kThreads - 1) / kThreads, 1 << 16); }

// One op's device buffers. Declared before the op's TimedCall, so an error path drains the
// stream (~TimedCall) before they go back to the pool.
struct Buffers {
  std::vector<DeviceBuffer<uint8_t>> bufs;

  template <class T>
  T* alloc(size_t n) {
    bufs.emplace_back(n * sizeof(T), MemCategory::Activations);
    return (T*)bufs.back().ptr;
  }
  template <class T>
  T* upload(TimedCall& call, const T* host, size_t n) {
    T* d = alloc<T>(n);
    call.to_device(d, host, n * sizeof(T));
    return d;
  }
};

}  // namespace

// --- launches on caller memory -------------------------------------------------------------------

void rmsnorm_launch(Impl impl, float* out, const float* x, const float* w, size_t rows, size_t dim, double eps, void* stream) {
  if (rows == 0) return;
  if (impl == Impl::Emulated) {
    Chains c;
    for (size_t r = 0; r < rows; ++r) {
      HostWarp<RmsState> warp;
      rmsnorm_warp(warp, c, out + r * dim, x + r * dim, w, dim, eps);
    }
    return;
  }
  cudaStream_t s = (cudaStream_t)stream;
  if (impl == Impl::Fast)
    rmsnorm_fast<<<blocks_for(rows, kRowWarps, "rmsNorm"), kRowWarps * kWarp, 0, s>>>(out, x, w, rows, dim, eps);
  else
    rmsnorm_ref<<<blocks_for(rows, kRefThreads, "rmsNorm"), kRefThreads, 0, s>>>(out, x, w, rows, dim, eps);
    check_launch("rmsnorm_ref");
}

void rope_launch(Impl impl, float* x, size_t rows, size_t heads, size_t hd, const int32_t* pos, int32_t first,
                 const float* cos_t, const float* sin_t, void* stream) {
  const size_t pairs = rows * heads * (hd / 2);
  if (pairs == 0) return;
  if (impl == Impl::Emulated) {
    for (size_t t = 0; t < pairs; ++t) rope_pair(t, x, heads, hd, pos, first, cos_t, sin_t);
    return;
  }
  rope_kernel<<<stride_blocks(pairs), kThreads, 0, (cudaStream_t)stream>>>(pairs, x, heads, hd, pos, first, cos_t, sin_t);
  check_launch("rope_kernel");
}

void attention_launch(Impl impl, const AttnArgs& a, size_t rows, void* stream) {
  const size_t pairs = rows * a.Hq;
  if (pairs == 0) return;
  if (impl == Impl::Emulated) {
    AttnShared sh;  // a.out may be a.q: each (row, head) reads its q before writing its output
    for (size_t t = 0; t < pairs; ++t) {
      const size_t row = t / a.Hq, h = t % a.Hq, b = seq_of_row(a.q_off, a.B, row);
      HostWarp<AttnState> warp;
      attention_warp(warp, sh, a, b, row - (size_t)a.q_off[b], h);
    }
    return;
  }
  cudaStream_t s = (cudaStream_t)stream;
  if (impl == Impl::Fast)
    attention_fast<<<blocks_for(pairs, kAttnWarps, "attention"), kAttnWarps * kWarp, 0, s>>>(a, pairs);
  else
    attention_ref<<<blocks_for(pairs, kRefThreads, "attention"), kRefThreads, 0, s>>>(a, pairs);
    check_launch("attention_ref");
}

void swiglu_launch(Impl impl, float* out, const float* gate, const float* up, size_t n, void* stream) {
  if (n == 0) return;
  if (impl == Impl::Emulated) {
    for (size_t t = 0; t < n; ++t) out[t] = swiglu_f32(gate[t], up[t]);
    return;
  }
  swiglu_kernel<<<stride_blocks(n), kThreads, 0, (cudaStream_t)stream>>>(out, gate, up, n);
  check_launch("swiglu_kernel");
}

void embed_launch(Impl impl, float* out, const GemmWeights& table, const int32_t* ids, size_t n, const Direction* dir,
                  float alpha, void* stream) {
  const size_t count = n * table.k;
  if (count == 0) return;
  const EmbedArgs e{table, ids, out, dir != nullptr, dir ? *dir : Direction{}, alpha};
  if (impl == Impl::Emulated) {
    for (size_t t = 0; t < count; ++t) embed_elem(t, e);
    return;
  }
  embed_kernel<<<stride_blocks(count), kThreads, 0, (cudaStream_t)stream>>>(e, count);
  check_launch("embed_kernel");
}

void log_probs_launch(Impl impl, const float* x, size_t rows, size_t n, const int32_t* targets, double* out, void* stream) {
  if (rows == 0) return;
  if (impl == Impl::Emulated) {
    LogProbShared sh;
    for (size_t r = 0; r < rows; ++r) {
      if (targets[r] < 0) {
        out[r] = quiet_nan_f64();
        continue;
      }
      HostWarp<NoState> warp;
      log_prob_warp(warp, sh, x + r * n, n, targets[r], out + r);
    }
    return;
  }
  cudaStream_t s = (cudaStream_t)stream;
  if (impl == Impl::Fast)
    log_probs_fast<<<blocks_for(rows, kRowWarps, "logProbs"), kRowWarps * kWarp, 0, s>>>(x, rows, n, targets, out);
  else
    log_probs_ref<<<blocks_for(rows, kRefThreads, "logProbs"), kRefThreads, 0, s>>>(x, rows, n, targets, out);
    check_launch("log_probs_ref");
}

void kv_store_launch(Impl impl, float* kl, float* vl, const float* k, const float* v, const int32_t* seq_off,
                     const int32_t* start, size_t B, size_t N, size_t H, size_t hd, size_t cap, void* stream) {
  const size_t n = N * H * hd;
  if (n == 0) return;
  if (impl == Impl::Emulated) {
    for (size_t t = 0; t < n; ++t) kv_store_elem(t, kl, vl, k, v, seq_off, start, B, H, hd, cap);
    return;
  }
  kv_store_kernel<<<stride_blocks(n), kThreads, 0, (cudaStream_t)stream>>>(kl, vl, k, v, seq_off, start, B, H, hd, cap, n);
  check_launch("kv_store_kernel");
}

void gather_launch(Impl impl, float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows,
                   size_t row_stride, size_t col_stride, size_t n, size_t cols, void* stream) {
  const size_t count = n * cols;
  if (count == 0) return;
  if (impl == Impl::Emulated) {
    for (size_t t = 0; t < count; ++t) gather_elem(t, dst, dst_rows, src, src_rows, row_stride, col_stride, cols);
    return;
  }
  gather_kernel<<<stride_blocks(count), kThreads, 0, (cudaStream_t)stream>>>(dst, dst_rows, src, src_rows, row_stride,
                                                                             col_stride, cols, count);
  check_launch("gather_kernel");
}

// --- host-array ops: copy in, launch, copy out ----------------------------------------------------

float rmsnorm_host(Impl impl, float* out, const float* x, const float* w, size_t rows, size_t dim, double eps) {
  if (rows == 0) return 0;
  if (impl == Impl::Emulated) return rmsnorm_launch(impl, out, x, w, rows, dim, eps, nullptr), 0;
  Buffers bufs;
  TimedCall call;
  const float* dx = bufs.upload(call, x, rows * dim);
  const float* dw = bufs.upload(call, w, dim);
  float* dout = bufs.alloc<float>(rows * dim);
  call.begin();
  rmsnorm_launch(impl, dout, dx, dw, rows, dim, eps, call.stream);
  call.end("rmsNorm kernel");
  call.to_host(out, dout, rows * dim * sizeof(*dout));
  return call.finish("rmsNorm");
}

float rope_host(Impl impl, float* x, size_t rows, size_t heads, size_t hd, const int32_t* pos, int32_t min_pos,
                int32_t max_pos, const RopeParams& p) {
  const size_t half = hd / 2, pairs = rows * heads * half;
  if (pairs == 0) return 0;
  const size_t count = (size_t)(max_pos - min_pos) + 1;
  std::vector<double> inv(half);
  rope_inv_freq(inv.data(), hd, p);
  std::vector<float> c(count * half), s(count * half);
  for (size_t r = 0; r < count; ++r) rope_table_row(&c[r * half], &s[r * half], min_pos + (int64_t)r, inv.data(), half);
  if (impl == Impl::Emulated) return rope_launch(impl, x, rows, heads, hd, pos, min_pos, c.data(), s.data(), nullptr), 0;
  Buffers bufs;
  TimedCall call;
  float* dx = bufs.upload(call, x, rows * heads * hd);
  const int32_t* dpos = bufs.upload(call, pos, rows);
  const float* dc = bufs.upload(call, c.data(), c.size());
  const float* ds = bufs.upload(call, s.data(), s.size());
  call.begin();
  rope_launch(impl, dx, rows, heads, hd, dpos, min_pos, dc, ds, call.stream);
  call.end("rope kernel");
  call.to_host(x, dx, rows * heads * hd * sizeof(*dx));
  return call.finish("rope");
}

float attention_host(Impl impl, const AttnArgs& a) {
  const size_t nq = (size_t)a.q_off[a.B], pairs = nq * a.Hq;
  if (pairs == 0) return 0;
  if (impl == Impl::Emulated) return attention_launch(impl, a, nq, nullptr), 0;
  const size_t qsize = nq * a.ld_q, kvsize = a.B * a.Hkv * a.cap * a.hd;
  Buffers bufs;
  TimedCall call;
  AttnArgs d = a;
  d.q = bufs.upload(call, a.q, qsize);
  d.k = bufs.upload(call, a.k, kvsize);
  d.v = bufs.upload(call, a.v, kvsize);
  d.q_off = bufs.upload(call, a.q_off, a.B + 1);
  d.q_start = bufs.upload(call, a.q_start, a.B);
  d.kmask = a.kmask ? bufs.upload(call, a.kmask, a.B * a.cap) : nullptr;
  d.out = bufs.alloc<float>(nq * a.ld_out);
  call.begin();
  attention_launch(impl, d, nq, call.stream);
  call.end("attention kernel");
  call.to_host(a.out, d.out, nq * a.ld_out * sizeof(*d.out));
  return call.finish("attention");
}

float swiglu_host(Impl impl, float* out, const float* gate, const float* up, size_t n) {
  if (n == 0) return 0;
  if (impl == Impl::Emulated) return swiglu_launch(impl, out, gate, up, n, nullptr), 0;
  Buffers bufs;
  TimedCall call;
  const float* dg = bufs.upload(call, gate, n);
  const float* du = bufs.upload(call, up, n);
  float* dout = bufs.alloc<float>(n);
  call.begin();
  swiglu_launch(impl, dout, dg, du, n, call.stream);
  call.end("swiglu kernel");
  call.to_host(out, dout, n * sizeof(*dout));
  return call.finish("swiglu");
}

float embedding_host(Impl impl, float* out, const float* table, size_t vocab, size_t dim, const int32_t* ids, size_t n) {
  const size_t count = n * dim;
  if (count == 0) return 0;
  GemmWeights w{};
  w.f32 = true;
  w.w32 = table;
  w.n = vocab;
  w.k = dim;
  if (impl == Impl::Emulated) return embed_launch(impl, out, w, ids, n, nullptr, 0.0f, nullptr), 0;
  Buffers bufs;
  TimedCall call;
  w.w32 = bufs.upload(call, table, vocab * dim);
  const int32_t* di = bufs.upload(call, ids, n);
  float* dout = bufs.alloc<float>(count);
  call.begin();
  embed_launch(impl, dout, w, di, n, nullptr, 0.0f, call.stream);
  call.end("embedding kernel");
  call.to_host(out, dout, count * sizeof(*dout));
  return call.finish("embedding");
}

float log_probs_host(Impl impl, const float* x, size_t rows, size_t n, const int32_t* targets, double* out) {
  if (rows == 0) return 0;
  if (impl == Impl::Emulated) return log_probs_launch(impl, x, rows, n, targets, out, nullptr), 0;
  Buffers bufs;
  TimedCall call;
  const float* dx = bufs.upload(call, x, rows * n);
  const int32_t* dt = bufs.upload(call, targets, rows);
  double* dout = bufs.alloc<double>(rows);
  call.begin();
  log_probs_launch(impl, dx, rows, n, dt, dout, call.stream);
  call.end("logProbs kernel");
  call.to_host(out, dout, rows * sizeof(*dout));
  return call.finish("logProbs");
}

float argmax_host(Impl impl, const float* x, size_t rows, size_t n, int64_t* out) {
  if (rows == 0) return 0;
  if (impl == Impl::Emulated) {
    ArgmaxShared sh;
    for (size_t r = 0; r < rows; ++r) {
      HostWarp<NoState> warp;
      argmax_warp(warp, sh, x + r * n, n, out + r);
    }
    return 0;
  }
  Buffers bufs;
  TimedCall call;
  const float* dx = bufs.upload(call, x, rows * n);
  int64_t* dout = bufs.alloc<int64_t>(rows);
  call.begin();
  if (impl == Impl::Fast)
    argmax_fast<<<blocks_for(rows, kRowWarps, "argmax"), kRowWarps * kWarp, 0, call.stream>>>(dx, rows, n, dout);
  else
    argmax_ref<<<blocks_for(rows, kRefThreads, "argmax"), kRefThreads, 0, call.stream>>>(dx, rows, n, dout);
    check_launch("argmax_ref");
  call.end("argmax kernel");
  call.to_host(out, dout, rows * sizeof(*dout));
  return call.finish("argmax");
}

}  // namespace cuda
}  // namespace zt
