// The device-resident LLaMA (llama.h). One orchestration for both executions: Ops holds the Impl
// (Fast on the GPU, Emulated on the host) and the stream; every op it calls is a *_launch function
// that runs the kernel or its per-thread code. Status: compiled for sm_80..90, run here only
// emulated; the GPU runs are scripts/gpu-check.js (checkLlama) on a GPU host.
#include <cuda_runtime.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../../native/common/status.h"
#include "../../native/common/philox.h"
#include "../../native/cpu/gemm_int8.h"  // grid_probe_on_int: which path the CPU takes for a QuZO probe
#include "../../native/cpu/sample.h"
#include "device.h"
#include "gemm_tc.h"
#include "gemv.h"
#include "llama.h"
#include "nn.h"
#include "perturb.h"
#include "pool.h"
#include "quant.h"
#include "timed_call.h"
#include "zo_optim.h"

namespace zt {
namespace cuda {

// --- memory of either execution ------------------------------------------------------------------

namespace {

// An owned block of device memory (pool) or, emulated, host memory (same categories).
struct Block {
  void* p = nullptr;
  size_t bytes = 0;
  MemCategory cat = MemCategory::Other;
  bool host = false;
  Block() = default;
  Block(size_t n, MemCategory c, bool on_host) : bytes(n), cat(c), host(on_host) {
    if (n) p = host ? host_alloc(n, c) : dev_alloc(n, c);
  }
  ~Block() {
    if (!p) return;
    if (host) host_free(p, bytes, cat);
    else dev_free(p, bytes, cat);
  }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  Block(Block&& o) noexcept : p(o.p), bytes(o.bytes), cat(o.cat), host(o.host) { o.p = nullptr; }
  Block& operator=(Block&& o) noexcept {
    std::swap(p, o.p), std::swap(bytes, o.bytes), std::swap(cat, o.cat), std::swap(host, o.host);
    return *this;  // o frees what this held
  }
};

void put(bool host, void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  if (host) memcpy(dst, src, bytes);
  else dev_upload(dst, src, bytes);
}
void get(bool host, void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  if (host) memcpy(dst, src, bytes);
  else dev_download(dst, src, bytes);
}

uint64_t data_bytes(const GemmWeights& w) {
  return w.f32 ? w.n * w.k * sizeof(float) : w.n * qformat_row_bytes(w.q.format, w.k);
}
uint64_t scale_count(const GemmWeights& w) { return !w.f32 && w.q.scales ? qt_scale_count(w.q) : 0; }

}  // namespace

// One stored tensor: data (rounded up to 4 bytes: 4-bit updates store 32-bit words), scales, zeros.
struct StoredTensor {
  uint32_t id;
  GemmWeights w;                   // over the blocks below
  std::vector<float> host_scales;  // scales never change: the update's checks read them here
  Block data, scales, zeros;
};

// ZO-SGD-MMT / ZO-Adam state of one fp32 tensor (pool category optimizer).
struct OptimState {
  Block m, v;
};

struct DeviceLlama {
  LlamaConfig c;
  bool emulated;
  std::vector<std::unique_ptr<StoredTensor>> tensors;  // one per distinct id
  std::vector<StoredTensor*> args;                     // weight argument -> its tensor
  LlamaWeights w;                                      // views over the stored tensors
  bool quantized = false;                              // some weight is not fp32 (the tiled GEMMs decode it first)
  bool int_act = false;                                // some linear quantizes its activations (w8a8, w4a8)
  LlamaKernels kernels = LlamaKernels::Exact;
  std::map<uint32_t, std::map<uint32_t, OptimState>> optim;  // optimiser slot -> tensor id -> state
};

// Keys [layers][B][kvHeads][headDim][cap] and values [layers][B][kvHeads][cap][headDim] (the CPU
// KvCache's layout) in memory of the model's kind, and the slot mask: kept on the host (each call
// writes its new tokens' slots, as the CPU forward does) and uploaded for the call's attention.
struct DeviceKvCache {
  size_t layers, B, kv_heads, head_dim, cap;
  Block k, v, mask;
  std::vector<uint8_t> host_mask;  // [B][cap]
};

namespace {

// --- the ops of a call ---------------------------------------------------------------------------

struct Ops {
  Impl impl;  // Fast (GPU) or Emulated (host)
  cudaStream_t stream;
  bool host() const { return impl == Impl::Emulated; }

  void put(void* dst, const void* src, size_t bytes) const {
    if (!bytes) return;
    if (host()) memcpy(dst, src, bytes);
    else check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), "llama: upload");
  }
  void get(void* dst, const void* src, size_t bytes) const {
    if (!bytes) return;
    if (host()) memcpy(dst, src, bytes);
    else check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "llama: download");
  }
  void copy(void* dst, const void* src, size_t bytes) const {
    if (host()) memcpy(dst, src, bytes);
    else check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream), "llama: copy");
  }
  // The two GEMMs of the model, both one fma chain per output in k order (the CPU's for M > 4):
  // the gemv reference kernel (any weights, perturb-on-load) and the F32 SIMT tiles (fp32 weights).
  void gemv(const GemmArgs& g) const {
    gemm_check_perturb(g.p, g.w.n, g.w.k);
    if (host()) gemv_emulated(g, GemvKernel::Reference);
    else gemv_reference_launch(g, stream);
  }
  void gemm_f32(const float* x, const float* w, float* y, uint64_t M, uint64_t N, uint64_t K, bool accumulate,
                const float* act_scale = nullptr) const {
    gemm_f32_launch(tc(), x, w, y, M, N, K, accumulate, stream, act_scale);
  }
  // LlamaKernels::Fast: the fast gemv kernel (<= kGemvMaxM rows) and the bf16 tensor-core tiles.
  void gemv_fast(const GemmArgs& g, float* workspace) const {
    gemm_check_perturb(g.p, g.w.n, g.w.k);
    if (host()) gemv_emulated(g, GemvKernel::Fast);
    else gemv_fast_launch(g, workspace, stream);
  }
  void bf16_rows(const float* x, uint64_t M, uint64_t K, uint8_t* a) const { bf16_rows_launch(tc(), x, M, K, a, stream); }
  void weight_rows(const GemmWeights& w, uint64_t r0, uint64_t rows, const Direction* dir, float alpha, bool bf16, void* out) const {
    weight_rows_launch(tc(), w, r0, rows, dir, alpha, bf16, out, stream);
  }
  void gemm_bf16(const uint8_t* a, const uint8_t* b, float* y, uint64_t M, uint64_t N, uint64_t K, bool accumulate,
                 const float* act_scale = nullptr) const {
    gemm_bf16_launch(tc(), a, b, y, M, N, K, accumulate, stream, act_scale);
  }
  void gemm_w4a16(const uint8_t* a, const QTensorView& w, float* y, uint64_t M, bool accumulate) const {
    gemm_w4a16_launch(tc(), a, w, y, M, accumulate, stream);
  }
  // Integer-activation linears (gemm_tc.h): the activation codes, their floats, the integer GEMM.
  void act_int8(const float* x, uint64_t M, uint64_t K, uint8_t* codes, float* sx, int* nonfinite) const {
    act_int8_rows_launch(tc(), x, M, K, codes, sx, nonfinite, stream);
  }
  void act_codes_f32(const uint8_t* codes, uint64_t M, uint64_t K, float* out) const { act_codes_f32_launch(tc(), codes, M, K, out, stream); }
  void gemm_int_act(const IntActGemm& g) const { gemm_int_act_launch(tc(), g, stream); }
  void gemv_int_act(const IntActGemm& g) const {
    gemv_int_act_launch(host(), g.codes, act_int8_row_bytes(g.w.cols), g.sx, g.M, g.w, g.y, g.accumulate, stream);
  }
  TcImpl tc() const { return host() ? TcImpl::Emulated : TcImpl::Fast; }
  void perturb(float* w, uint64_t n, const Direction& d, float alpha, float keep = 1.0f) const {
    if (host()) perturb_emulated(w, n, d, 0, alpha, keep);
    else perturb_launch(w, n, d, 0, alpha, false, stream, keep);
  }
  // A quantized tensor through fp32 and back onto its grid (updates with weight decay).
  void dequantize(const QTensorView& q, float* y) const {
    if (host()) dequantize_emulated(q, y);
    else dequantize_launch(q, y, stream);
  }
  void requantize(const QTensorView& q, const float* x, uint64_t seed, uint32_t id) const {
    if (host()) quantize_emulated(q, x, qformat_has_scales(q.format) ? ScaleMode::Keep : ScaleMode::One, true, seed, id, nullptr);
    else requantize_launch(q, x, true, seed, id, stream);
  }
  // Whether x[0, n) holds Inf or NaN (flag: an int of the call's memory); waits for the stream.
  bool nonfinite(const float* x, uint64_t n, int* flag) const {
    if (host()) return !std::all_of(x, x + n, [](float v) { return fabsf(v) <= FLT_MAX; });
    zero(flag, sizeof(int));
    nonfinite_launch(x, n, flag, stream);
    int v = 0;
    get(&v, flag, sizeof(int));
    check(cudaStreamSynchronize(stream), "llama: finite check");
    return v != 0;
  }
  void zero(void* p, size_t bytes) const {
    if (host()) memset(p, 0, bytes);
    else check(cudaMemsetAsync(p, 0, bytes, stream), "llama: zero");
  }
  void quant_update(const QTensorView& q, float alpha, const Direction& d) const {
    if (host()) quant_update_emulated(q, alpha, d);
    else quant_update_launch(q, alpha, d, false, stream);
  }
};

// A call's stream and CUDA events (none when emulated). Declare it after every Block the call's
// kernels use: its destructor drains the stream before they are freed.
struct Call {
  std::unique_ptr<TimedCall> t;
  Ops ops;
  explicit Call(bool emulated) : t(emulated ? nullptr : new TimedCall()) {
    ops = Ops{emulated ? Impl::Emulated : Impl::Fast, t ? t->stream : nullptr};
  }
  void begin() {
    if (t) t->begin();
  }
  void end(const char* what) {
    if (t) t->end(what);
  }
  float finish(const char* what) { return t ? t->finish(what) : 0.0f; }
};

// --- one batch: the host-side plan and the call's memory -----------------------------------------

// Logits computed at most this many bytes at a time: the CPU's chunks for the exact kernels (a
// chunk's row count picks the CPU's GEMM or GEMV order), larger ones for the fast kernels, whose
// every chunk writes the whole LM head's W' again.
constexpr size_t kHeadChunkBytes = 8u << 20, kFastHeadChunkBytes = 64u << 20;

size_t align_floats(size_t n) { return (n + 15) / 16 * 16; }  // 64-byte aligned norm copies

// Everything the kernels of a batch read that the host computes: rotary tables of the positions
// present, the key mask, the LM-head rows and where their logits go (the CPU forward's plan).
struct Prep {
  size_t N = 0, B = 0, T = 0, P = 0, R = 0, C = 0, cols = 0, n_logits = 0;
  int32_t pos0 = 0;
  size_t cap = 0;                                     // KV slots per sequence: T, or the cache's
  std::vector<int32_t> rel_pos, start, head_rows, tg;  // start: first KV slot per sequence; tg: target of each head row
  std::vector<uint8_t> kmask;                          // [B][T] (none with a cache: its mask)
  std::vector<float> cos_t, sin_t;
  std::vector<int32_t> want_dst, want_src;  // logits rows copied out, chunk by chunk
  std::vector<size_t> want_begin;           // [chunks + 1] into want_*
  LastRows last;                            // the rows the last layer finishes (the CPU's)
  std::vector<int32_t> x_row;               // the row of x holding each head row's final state
};

Prep prep_batch(const LlamaConfig& c, const LlamaBatch& b, const LlamaOutputs& o, size_t head_chunk_bytes, DeviceKvCache* cache,
                const int32_t* past) {
  Prep p;
  LlamaBatchShape shape = llama_batch_shape(b, o);  // the CPU plan's extent and LM-head rows
  const int32_t lo = shape.pos0;
  p.B = b.B, p.N = shape.N, p.T = shape.T, p.P = shape.P, p.pos0 = lo;
  p.head_rows = std::move(shape.head_rows);
  p.rel_pos.resize(p.N);
  for (size_t i = 0; i < p.N; ++i) p.rel_pos[i] = b.positions[i] - lo;
  const size_t half = c.head_dim / 2;
  std::vector<double> inv(half);
  rope_inv_freq(inv.data(), c.head_dim, c.rope);
  p.cos_t.resize(p.P * half);
  p.sin_t.resize(p.P * half);
  for (size_t r = 0; r < p.P; ++r) rope_table_row(&p.cos_t[r * half], &p.sin_t[r * half], lo + (int64_t)r, inv.data(), half);
  p.start.assign(b.B, 0);
  if (cache) p.start.assign(past, past + b.B);
  p.cap = cache ? cache->cap : p.T;
  if (!cache) p.kmask.assign(std::max<size_t>(1, b.B * p.T), 0);
  uint8_t* km = cache ? cache->host_mask.data() : p.kmask.data();
  for (size_t s = 0; s < b.B; ++s)
    for (int32_t i = b.seq_off[s]; i < b.seq_off[s + 1]; ++i)
      km[s * p.cap + (size_t)p.start[s] + (size_t)(i - b.seq_off[s])] = b.key_mask ? (b.key_mask[i] != 0) : 1;

  p.R = p.head_rows.size();
  // The last layer's query rows are gathered into the gate buffer, which must hold them.
  if (c.layers > 0 && p.R < p.N && c.heads * c.head_dim <= c.inter) p.last = last_rows(b, p.head_rows, p.start.data());
  p.x_row = p.head_rows;
  if (p.last.on)
    for (int32_t& r : p.x_row) r = (int32_t)(std::lower_bound(p.last.rows.begin(), p.last.rows.end(), r) - p.last.rows.begin());
  p.cols = o.vocab_subset ? o.n_vocab_subset : c.vocab;
  p.C = std::max<size_t>(1, std::min(p.R, head_chunk_bytes / (4 * p.cols)));
  p.n_logits = o.n_logit_rows;
  if (o.targets)
    for (int32_t r : p.head_rows) p.tg.push_back(o.targets[r]);
  // logits rows in head-row order: (output index, row within its chunk)
  std::vector<std::pair<int32_t, int32_t>> want;
  for (size_t j = 0; j < o.n_logit_rows; ++j) want.push_back({o.logit_rows[j], (int32_t)j});
  std::sort(want.begin(), want.end());
  size_t wi = 0;
  p.want_begin.push_back(0);
  for (size_t c0 = 0; c0 < p.R; c0 += p.C) {
    const size_t n = std::min(p.C, p.R - c0);
    for (size_t j = 0; j < n; ++j)
      while (wi < want.size() && want[wi].first == p.head_rows[c0 + j]) {
        p.want_dst.push_back(want[wi++].second);
        p.want_src.push_back((int32_t)j);
      }
    p.want_begin.push_back(p.want_dst.size());
  }
  return p;
}

// Offsets of one call's buffers inside its single allocation (256-byte aligned).
struct Layout {
  size_t at = 0;
  size_t take(size_t bytes) {
    const size_t o = at;
    at += (bytes + 255) / 256 * 256;
    return o;
  }
};

// The call's buffers (pointers into the call's Block) and where each forward's outputs go.
struct Bufs {
  float *x, *xn, *q, *k, *v, *g, *u, *kl, *vl, *cos_t, *sin_t, *hrows, *hl, *norms, *wprime;
  uint8_t *wbf16, *xbf16;  // LlamaKernels::Fast: bf16 operands of the tensor-core tiles
  float* gemv_ws;          // LlamaKernels::Fast: the fast gemv's workspace
  uint8_t* xq;             // integer-activation linears: activation codes, their scales, their floats
  float *xsc, *xqf;        // (perturbed linears), the flag of a non-finite activation row
  int* nonfinite;
  int32_t *tokens, *seq_off, *rel_pos, *start, *head_rows, *tg, *want_dst, *want_src;
  int32_t *last_rows, *last_off, *last_start, *x_row;  // Prep::last, Prep::x_row
  uint8_t* kmask;
  float* saved;  // a multi-query probe's residual stream entering its first trainable layer
  std::vector<double*> lp;  // per forward of the call
  std::vector<float*> logits;
};

// The perturbed-weight workspace: the largest linear weight.
size_t max_weight_elems(const DeviceLlama& m) {
  size_t e = 0;
  for (const StoredTensor* t : m.args) e = std::max<size_t>(e, t->w.n * t->w.k);
  return e;
}

// LlamaKernels::Fast workspaces: bf16 rows of the largest weight, of the widest activations
// (rows: the most rows any linear gets), and the fast gemv's floats.
size_t max_weight_bf16_bytes(const DeviceLlama& m) {
  size_t b = 0;
  for (const StoredTensor* t : m.args) b = std::max<size_t>(b, t->w.n * bf16_row_bytes(t->w.k));
  return b;
}
size_t max_in_features(const DeviceLlama& m) {
  size_t k = 0;
  for (const StoredTensor* t : m.args) k = std::max<size_t>(k, t->w.k);
  return k;
}
size_t max_act_bf16_bytes(const DeviceLlama& m, size_t rows) { return rows * bf16_row_bytes(max_in_features(m)); }
size_t max_gemv_floats(const DeviceLlama& m, size_t rows) {
  size_t f = 0;
  for (const StoredTensor* t : m.args) {
    GemmWeights one = t->w;  // a vocabulary-subset row of the LM head runs as a one-row view
    one.n = 1;
    f = std::max<size_t>(f, std::max(gemv_fast_workspace(rows, t->w), gemv_fast_workspace(rows, one)));
  }
  return f;
}

// The exact kernels' W' workspace: quantized or perturbed weights.
bool needs_wprime(const DeviceLlama& m, bool perturb) { return m.kernels == LlamaKernels::Exact && (perturb || m.quantized); }

struct Activations {
  Block block;
  Bufs d{};
};

// One allocation for the call (category activations), the batch uploaded into it.
void alloc_activations(Activations& act, const DeviceLlama& m, const Prep& p, const LlamaBatch& b, bool perturb,
                       size_t forwards, bool save_x = false) {
  const LlamaConfig& c = m.c;
  const size_t N = p.N, D = c.hidden, Q = c.heads * c.head_dim, KV = c.kv_heads * c.head_dim, I = c.inter;
  const size_t kv = p.kmask.empty() ? 0 : p.B * c.kv_heads * p.T * c.head_dim, F = sizeof(float), W = sizeof(int32_t);  // none with a cache
  const bool fast = m.kernels == LlamaKernels::Fast, ws = needs_wprime(m, perturb), ia = m.int_act;
  const size_t gemm_rows = std::max(N, p.C), gemv_rows = std::min<size_t>(gemm_rows, kGemvMaxM), K = max_in_features(m);
  const bool tiles = fast && (gemm_rows > kGemvMaxM || (ia && perturb));  // perturbed int-act linears: bf16 tiles at any M
  Layout l;
  const size_t ox = l.take(N * D * F), oxn = l.take(N * D * F), oq = l.take(N * Q * F), ok = l.take(N * KV * F),
               ov = l.take(N * KV * F), og = l.take(N * I * F), ou = l.take(N * I * F), okl = l.take(kv * F),
               ovl = l.take(kv * F), ocos = l.take(p.cos_t.size() * F), osin = l.take(p.sin_t.size() * F),
               ohr = l.take(p.C * D * F), ohl = l.take(p.R ? p.C * p.cols * F : 0),
               onorm = l.take(perturb ? (2 * c.layers + 1) * align_floats(D) * F : 0), otok = l.take(N * W),
               ooff = l.take((p.B + 1) * W), orel = l.take(N * W), ozs = l.take(p.B * W), ohrows = l.take(p.R * W),
               otg = l.take(p.tg.size() * W), owd = l.take(p.want_dst.size() * W), ows = l.take(p.want_src.size() * W),
               omask = l.take(p.kmask.size()), owp = l.take(ws ? max_weight_elems(m) * F : 0),
               owbf = l.take(tiles ? max_weight_bf16_bytes(m) : 0), oxbf = l.take(tiles ? max_act_bf16_bytes(m, gemm_rows) : 0),
               ogws = l.take(fast ? max_gemv_floats(m, gemv_rows) * F : 0),
               oxq = l.take(ia ? gemm_rows * act_int8_row_bytes(K) : 0), oxsc = l.take(ia ? gemm_rows * F : 0),
               oxqf = l.take(ia && perturb ? gemm_rows * K * F : 0), onf = l.take(ia ? W : 0),
               osv = l.take(save_x ? N * D * F : 0), olr = l.take(p.last.rows.size() * W),
               olo = l.take(p.last.off.size() * W), ols = l.take(p.last.start.size() * W), oxr = l.take(p.R * W);
  std::vector<size_t> olp(forwards), olg(forwards);
  for (size_t f = 0; f < forwards; ++f) {
    olp[f] = l.take(p.tg.empty() ? 0 : p.R * sizeof(double));
    olg[f] = l.take(p.n_logits * p.cols * F);
  }
  act.block = Block(l.at, MemCategory::Activations, m.emulated);
  uint8_t* base = (uint8_t*)act.block.p;
  Bufs& d = act.d;
  auto fl = [&](size_t o) { return (float*)(base + o); };
  auto in = [&](size_t o) { return (int32_t*)(base + o); };
  d.x = fl(ox), d.xn = fl(oxn), d.q = fl(oq), d.k = fl(ok), d.v = fl(ov), d.g = fl(og), d.u = fl(ou);
  d.kl = fl(okl), d.vl = fl(ovl), d.cos_t = fl(ocos), d.sin_t = fl(osin), d.hrows = fl(ohr), d.hl = fl(ohl), d.norms = fl(onorm);
  d.tokens = in(otok), d.seq_off = in(ooff), d.rel_pos = in(orel), d.start = in(ozs), d.head_rows = in(ohrows);
  d.tg = in(otg), d.want_dst = in(owd), d.want_src = in(ows);
  d.kmask = base + omask;
  d.wprime = fl(owp);
  d.wbf16 = base + owbf, d.xbf16 = base + oxbf, d.gemv_ws = fl(ogws);
  d.xq = base + oxq, d.xsc = fl(oxsc), d.xqf = fl(oxqf), d.nonfinite = in(onf);
  d.saved = fl(osv);
  d.last_rows = in(olr), d.last_off = in(olo), d.last_start = in(ols), d.x_row = in(oxr);
  d.lp.resize(forwards), d.logits.resize(forwards);
  for (size_t f = 0; f < forwards; ++f) d.lp[f] = (double*)(base + olp[f]), d.logits[f] = fl(olg[f]);
}

void upload_batch(const Ops& ops, const Bufs& d, const Prep& p, const LlamaBatch& b) {
  ops.put(d.tokens, b.tokens, p.N * 4);
  ops.put(d.seq_off, b.seq_off, (p.B + 1) * 4);
  ops.put(d.rel_pos, p.rel_pos.data(), p.N * 4);
  ops.put(d.start, p.start.data(), p.B * 4);
  ops.put(d.head_rows, p.head_rows.data(), p.R * 4);
  ops.put(d.last_rows, p.last.rows.data(), p.last.rows.size() * 4);
  ops.put(d.last_off, p.last.off.data(), p.last.off.size() * 4);
  ops.put(d.last_start, p.last.start.data(), p.last.start.size() * 4);
  ops.put(d.x_row, p.x_row.data(), p.R * 4);
  ops.put(d.tg, p.tg.data(), p.tg.size() * 4);
  ops.put(d.want_dst, p.want_dst.data(), p.want_dst.size() * 4);
  ops.put(d.want_src, p.want_src.data(), p.want_src.size() * 4);
  ops.put(d.kmask, p.kmask.data(), p.kmask.size());
  ops.put(d.cos_t, p.cos_t.data(), p.cos_t.size() * 4);
  ops.put(d.sin_t, p.sin_t.data(), p.sin_t.size() * 4);
}

// GEMMs of at least this many rows run the F32 SIMT tiles (gemm_tc.h gemm_f32_launch) on fp32
// weights: quantized or perturbed weights are first written once per call as W' = decode(W) (+ alpha
// z) into an fp32 workspace by weight_rows_launch (the same perturbed(decode, alpha, z) per element
// as perturb-on-load), Philox draws once per weight instead of once per weight and row. Fewer rows run
// the gemv reference kernel, decoding and perturbing on load. Both are one fma chain per output in
// k order (the CPU's GEMM order): the same bits (tested in emulation on both sides of the threshold).
constexpr size_t kTiledRows = 8;

// Integer-activation linears (w8a8 / w4a8): the CPU's gemm_int result (gemm_int8.h) for every M.
// Unperturbed: the integer GEMV (<= 16 rows, gemv.h) or GEMM (gemm_tc.h), both bit for bit with the
// CPU. Perturbed: the Rademacher and QuZO probes the CPU
// runs on its integer path (grid_probe_on_int) through the same step 2' (exact kernels), all others
// as x_q . W'^T with W' = decode(W) + alpha z (weight_rows) on the F32 tiles with the CPU's epilogue
// (exact: the CPU's f32 path, bit for bit) or on the bf16 tiles (fast: W' rounded to bf16; the
// codes float(q_x) are exact in bf16).
void int_act_rows(const Ops& ops, const Bufs& d, const Linear& L, uint64_t r0, uint64_t rows, const float* x, size_t M,
                  float* y, bool accumulate, const LlamaPerturb* zo, LlamaKernels kernels) {
  const uint64_t K = L.w.k;
  ops.act_int8(x, M, K, d.xq, d.xsc, d.nonfinite);
  IntActGemm g{d.xq, d.xsc, M, gemm_rows_view(L.w, r0, rows).q, y, accumulate, nullptr, 0.0f, r0 * K};
  if ((!zo || !zo->on(L.id)) && M <= kGemvMaxM) return ops.gemv_int_act(g);  // decode-sized: one warp per weight row
  if (!zo || !zo->on(L.id)) return ops.gemm_int_act(g);
  const Direction dir = zo->of(L.id);
  gemm_check_perturb(GemmPerturb{true, dir, zo->alpha, r0 * K, false, nullptr, 0}, rows, K);
  if (kernels == LlamaKernels::Exact && grid_probe_on_int(dir)) {
    g.grid = &dir, g.alpha = zo->alpha;
    return ops.gemm_int_act(g);
  }
  ops.act_codes_f32(d.xq, M, K, d.xqf);
  if (kernels == LlamaKernels::Fast) {
    ops.weight_rows(L.w, r0, rows, &dir, zo->alpha, true, d.wbf16);
    ops.bf16_rows(d.xqf, M, K, d.xbf16);
    return ops.gemm_bf16(d.xbf16, d.wbf16, y, M, rows, K, accumulate, d.xsc);
  }
  ops.weight_rows(L.w, r0, rows, &dir, zo->alpha, false, d.wprime);
  ops.gemm_f32(d.xqf, d.wprime, y, M, rows, K, accumulate, d.xsc);
}

// y[M, rows] (+)= x . W[r0 : r0 + rows]^T, the rows perturbed with their direction indices of the
// whole tensor when zo says so: the one place every matrix product of the model runs.
void linear_rows(const Ops& ops, const Bufs& d, const Linear& L, uint64_t r0, uint64_t rows, const float* x, size_t M,
                 float* y, bool accumulate, const LlamaPerturb* zo, LlamaKernels kernels) {
  if (L.int_act) return int_act_rows(ops, d, L, r0, rows, x, M, y, accumulate, zo, kernels);
  const bool perturb = zo && zo->on(L.id);
  const uint64_t K = L.w.k;
  if (kernels == LlamaKernels::Fast && M > kGemvMaxM) {
    ops.bf16_rows(x, M, K, d.xbf16);
    const GemmWeights v = gemm_rows_view(L.w, r0, rows);
    if (!perturb && w4a16_fits(v)) return ops.gemm_w4a16(d.xbf16, v.q, y, M, accumulate);  // int4 read packed: no W'
    const Direction dir = perturb ? zo->of(L.id) : Direction{};
    ops.weight_rows(L.w, r0, rows, perturb ? &dir : nullptr, perturb ? zo->alpha : 0.0f, true, d.wbf16);
    ops.gemm_bf16(d.xbf16, d.wbf16, y, M, rows, K, accumulate);
    return;
  }
  if (kernels == LlamaKernels::Exact && M >= kTiledRows) {
    const bool direct = L.w.f32 && !perturb;
    if (!direct) {
      const Direction dir = perturb ? zo->of(L.id) : Direction{};
      ops.weight_rows(L.w, r0, rows, perturb ? &dir : nullptr, perturb ? zo->alpha : 0.0f, false, d.wprime);
    }
    ops.gemm_f32(x, direct ? L.w.w32 + r0 * K : d.wprime, y, M, rows, K, accumulate);
    return;
  }
  GemmArgs g{};
  g.a = x;
  g.m = M;
  g.w = gemm_rows_view(L.w, r0, rows);
  g.c = y;
  g.accumulate = accumulate;
  if (perturb) g.p = GemmPerturb{true, zo->of(L.id), zo->alpha, r0 * K, false, nullptr, 0};
  if (kernels == LlamaKernels::Fast) ops.gemv_fast(g, d.gemv_ws);
  else ops.gemv(g);
}
void linear(const Ops& ops, const Bufs& d, const Linear& L, const float* x, size_t M, float* y, bool accumulate,
            const LlamaPerturb* zo, LlamaKernels kernels) {
  linear_rows(ops, d, L, 0, L.w.n, x, M, y, accumulate, zo, kernels);
}

// The forward of llama.cc's llama_forward, op for op, queued on ops, in the CPU's parts (norms_of,
// embed, layers, head; run_forwards puts them together, a probe of several queries running the
// layers below the first trainable one once, llama.h llama_probe). Keys and values go to the cache's layers when there is one
// (sampling happens on the host after the call). Outputs stay in the call's memory: lp (log-prob
// per head row) and logits (requested rows).

// Norm vectors as a forward with zo reads them: the weights, or perturbed copies.
std::vector<const float*> norms_of(const Ops& ops, const DeviceLlama& m, const Bufs& d, const LlamaPerturb* zo) {
  const LlamaConfig& c = m.c;
  const LlamaWeights& w = m.w;
  std::vector<const float*> norm_of(2 * c.layers + 1);
  for (size_t j = 0; j < norm_of.size(); ++j) {
    const NormVec& nv = j == 2 * c.layers ? w.norm : (j % 2 ? w.layers[j / 2].mlp_norm : w.layers[j / 2].attn_norm);
    norm_of[j] = nv.w;
    if (!zo || !zo->on(nv.id)) continue;
    float* copy = d.norms + j * align_floats(c.hidden);
    ops.copy(copy, nv.w, c.hidden * sizeof(float));
    ops.perturb(copy, c.hidden, zo->of(nv.id), zo->alpha);
    norm_of[j] = copy;
  }
  return norm_of;
}

void embed(const Ops& ops, const DeviceLlama& m, const Prep& p, const Bufs& d, const LlamaPerturb* zo) {
  const Linear& e = m.w.embed;
  const bool pe = zo && zo->on(e.id);
  const Direction de = pe ? zo->of(e.id) : Direction{};
  embed_launch(ops.impl, d.x, e.w, d.tokens, p.N, pe ? &de : nullptr, pe ? zo->alpha : 0.0f, ops.stream);
}

// Decoder layers [l_begin, l_end) on the residual stream d.x.
void layers(const Ops& ops, const DeviceLlama& m, const Prep& p, const Bufs& d, const std::vector<const float*>& norm_of,
            const LlamaPerturb* zo, const DeviceKvCache* cache, size_t l_begin, size_t l_end) {
  const LlamaConfig& c = m.c;
  const Impl im = ops.impl;
  void* s = ops.stream;
  const size_t N = p.N, D = c.hidden, hd = c.head_dim, Hq = c.heads, Hkv = c.kv_heads, I = c.inter;
  AttnArgs at{};
  at.out = d.q;  // in place, as on the CPU
  at.q = d.q;
  at.q_off = d.seq_off;
  at.q_start = d.start;
  at.kmask = cache ? (const uint8_t*)cache->mask.p : d.kmask;
  at.B = p.B;
  at.Hq = Hq;
  at.Hkv = Hkv;
  at.hd = hd;
  at.cap = p.cap;
  at.ld_q = at.ld_out = Hq * hd;
  at.scale = (float)(1.0 / sqrt((double)hd));

  for (size_t l = l_begin; l < l_end; ++l) {
    const LlamaLayer& L = m.w.layers[l];
    rmsnorm_launch(im, d.xn, d.x, norm_of[2 * l], N, D, c.eps, s);
    linear(ops, d, L.q, d.xn, N, d.q, false, zo, m.kernels);
    linear(ops, d, L.k, d.xn, N, d.k, false, zo, m.kernels);
    linear(ops, d, L.v, d.xn, N, d.v, false, zo, m.kernels);
    rope_launch(im, d.q, N, Hq, hd, d.rel_pos, 0, d.cos_t, d.sin_t, s);
    rope_launch(im, d.k, N, Hkv, hd, d.rel_pos, 0, d.cos_t, d.sin_t, s);
    const size_t layer_kv = p.B * Hkv * p.cap * hd;  // the cache's layer l, or this forward's own layout
    float *kl = cache ? (float*)cache->k.p + l * layer_kv : d.kl, *vl = cache ? (float*)cache->v.p + l * layer_kv : d.vl;
    kv_store_launch(im, kl, vl, d.k, d.v, d.seq_off, d.start, p.B, N, Hkv, hd, p.cap, s);
    at.k = kl;
    at.v = vl;
    size_t M = N;
    AttnArgs al = at;
    if (l + 1 == c.layers && p.last.on) {  // the CPU's last_rows: the same rows, the same bits
      if (p.last.rows.empty()) break;
      M = p.last.rows.size();
      gather_launch(im, d.g, nullptr, d.q, d.last_rows, Hq * hd, 1, M, Hq * hd, s);  // out of place: rows move up
      gather_launch(im, d.xn, nullptr, d.x, d.last_rows, D, 1, M, D, s);
      ops.copy(d.x, d.xn, M * D * sizeof(float));
      al.q = al.out = d.g;
      al.q_off = d.last_off;
      al.q_start = d.last_start;
    }
    attention_launch(im, al, M, s);
    linear(ops, d, L.o, al.out, M, d.x, true, zo, m.kernels);  // residual
    rmsnorm_launch(im, d.xn, d.x, norm_of[2 * l + 1], M, D, c.eps, s);
    linear(ops, d, L.gate, d.xn, M, d.g, false, zo, m.kernels);
    linear(ops, d, L.up, d.xn, M, d.u, false, zo, m.kernels);
    swiglu_launch(im, d.g, d.g, d.u, M * I, s);
    linear(ops, d, L.down, d.g, M, d.x, true, zo, m.kernels);  // residual
  }
}

// LM head on the rows that need it, a chunk at a time (subset logits transposed: [S][C]).
void head(const Ops& ops, const DeviceLlama& m, const Prep& p, const Bufs& d, const LlamaOutputs& o,
          const std::vector<const float*>& norm_of, const LlamaPerturb* zo, double* lp, float* logits) {
  const LlamaConfig& c = m.c;
  const Impl im = ops.impl;
  void* s = ops.stream;
  const size_t D = c.hidden, V = c.vocab;
  for (size_t c0 = 0, ci = 0; c0 < p.R; c0 += p.C, ++ci) {
    const size_t n = std::min(p.C, p.R - c0);
    gather_launch(im, d.hrows, nullptr, d.x, d.x_row + c0, D, 1, n, D, s);
    rmsnorm_launch(im, d.hrows, d.hrows, norm_of[2 * c.layers], n, D, c.eps, s);
    if (o.vocab_subset) {
      for (size_t j = 0; j < o.n_vocab_subset; ++j) {
        const uint64_t r = (uint64_t)o.vocab_subset[j];
        linear_rows(ops, d, m.w.lm_head, r, 1, d.hrows, n, d.hl + j * p.C, false, zo, m.kernels);
      }
    } else {
      linear(ops, d, m.w.lm_head, d.hrows, n, d.hl, false, zo, m.kernels);
    }
    if (!p.tg.empty()) log_probs_launch(im, d.hl, n, V, d.tg + c0, lp + c0, s);
    const size_t wb = p.want_begin[ci], we = p.want_begin[ci + 1];
    gather_launch(im, logits, d.want_dst + wb, d.hl, d.want_src + wb, o.vocab_subset ? 1 : p.cols, o.vocab_subset ? p.C : 1,
                  we - wb, p.cols, s);
  }
}

// The call's results back into o, summed in head-row order as the CPU sums them.
void finish_outputs(const Prep& p, const std::vector<double>& lp, LlamaOutputs& o) {
  if (o.logprobs)
    for (size_t i = 0; i < p.N; ++i) o.logprobs[i] = __builtin_nan("");
  for (size_t j = 0; j < p.tg.size(); ++j)
    if (p.tg[j] >= 0) {
      o.logprobs[p.head_rows[j]] = lp[j];
      o.logprob_sum += lp[j];
      o.count++;
    }
}

// Forwards of one batch in one call; outs[f] receives forward f, perturbed by zos[f] (null: none).
// l0 > 0 (probes whose trainable tensors all sit in layer l0 or above, first_trainable_layer): the
// layers below l0 run once, and the residual stream entering l0 is restored before every forward
// after the first (llama.h llama_probe's order and bits).
float run_forwards(DeviceLlama& m, const LlamaBatch& b, LlamaOutputs* const* outs, const LlamaPerturb* const* zos,
                   size_t forwards, DeviceKvCache* cache = nullptr, const int32_t* past = nullptr, size_t l0 = 0) {
  const Prep p = prep_batch(m.c, b, *outs[0], m.kernels == LlamaKernels::Fast ? kFastHeadChunkBytes : kHeadChunkBytes, cache, past);
  const bool perturb = zos[0] != nullptr, save = l0 > 0 && l0 < m.c.layers && forwards > 1;
  Activations act;
  alloc_activations(act, m, p, b, perturb, forwards, save);
  std::vector<std::vector<double>> lp(forwards, std::vector<double>(p.tg.empty() ? 0 : p.R));
  Call call(m.emulated);  // after the memory: its destructor drains the stream first
  const Bufs& d = act.d;
  const Ops& ops = call.ops;
  upload_batch(ops, d, p, b);
  static const int kClear = 0;
  int nonfinite = 0;
  if (m.int_act) ops.put(d.nonfinite, &kClear, sizeof(int));
  if (cache) ops.put(cache->mask.p, cache->host_mask.data(), cache->host_mask.size());
  const size_t x_bytes = p.N * m.c.hidden * sizeof(float);
  call.begin();
  if (l0 > 0) {  // the shared layers (their norms are not trainable either)
    embed(ops, m, p, d, nullptr);
    layers(ops, m, p, d, norms_of(ops, m, d, nullptr), nullptr, cache, 0, l0);
    if (save) ops.copy(d.saved, d.x, x_bytes);
  }
  for (size_t f = 0; f < forwards; ++f) {
    if (save && f > 0) ops.copy(d.x, d.saved, x_bytes);
    const std::vector<const float*> norm_of = norms_of(ops, m, d, zos[f]);
    if (l0 == 0) embed(ops, m, p, d, zos[f]);
    layers(ops, m, p, d, norm_of, zos[f], cache, l0, m.c.layers);
    head(ops, m, p, d, *outs[f], norm_of, zos[f], d.lp[f], d.logits[f]);
  }
  call.end("llama forward");
  for (size_t f = 0; f < forwards; ++f) {
    ops.get(lp[f].data(), d.lp[f], lp[f].size() * sizeof(double));
    if (outs[f]->logits) ops.get(outs[f]->logits, d.logits[f], p.n_logits * p.cols * sizeof(float));
  }
  if (m.int_act) ops.get(&nonfinite, d.nonfinite, sizeof(int));
  const float ms = call.finish("llama forward");
  if (nonfinite) fail(Code::NonFinite, "llama (device): int8 GEMM: the activations contain NaN or Inf (they cannot be quantized)");
  for (size_t f = 0; f < forwards; ++f) finish_outputs(p, lp[f], *outs[f]);
  return ms;
}

[[noreturn]] void bad(Code c, const std::string& msg) { fail(c, "llama (device): " + msg); }

// MeZO's exact probe, the CPU's sequence: the trainable tensors (fp32 only) written theta + eps z,
// forward, theta - eps z, forward, theta again; a failure undoes the offset the weights hold.
float probe_in_place(DeviceLlama& m, const LlamaBatch& b, LlamaOutputs& plus, LlamaOutputs& minus, const LlamaPerturb& zo) {
  std::vector<StoredTensor*> targets;
  for (auto& t : m.tensors) {
    if (!zo.on(t->id)) continue;
    if (!t->w.f32)
      bad(Code::Unsupported, "in-place probes take fp32 weights only: a perturbed quantized weight is off its grid, so "
                             "writing it would round and could not be undone exactly; use mode 'on-load'");
    targets.push_back(t.get());
  }
  auto step = [&](float alpha) {
    Call call(m.emulated);
    call.begin();
    for (StoredTensor* t : targets) call.ops.perturb(const_cast<float*>(t->w.w32), t->w.n * t->w.k, zo.of(t->id), alpha);
    call.end("llama in-place perturbation");
    return call.finish("llama in-place perturbation");
  };
  const LlamaPerturb* none[1] = {nullptr};
  LlamaOutputs* p[1] = {&plus};
  LlamaOutputs* q[1] = {&minus};
  float ms = 0.0f, at = 0.0f;
  try {
    ms += step(zo.alpha), at = zo.alpha;
    ms += run_forwards(m, b, p, none, 1);
    ms += step(-2 * zo.alpha), at = -zo.alpha;
    ms += run_forwards(m, b, q, none, 1);
    ms += step(zo.alpha), at = 0.0f;
  } catch (...) {
    try {  // undo what the weights hold; a failing undo (a lost context) must not hide the first error
      if (at != 0.0f) step(-at);
    } catch (...) {
    }
    throw;
  }
  return ms;
}

bool same_layout(const GemmWeights& a, const GemmWeights& b) {
  if (a.f32 != b.f32 || a.n != b.n || a.k != b.k) return false;
  if (a.f32) return true;
  return a.q.format == b.q.format && a.q.group == b.q.group && (a.q.scales != nullptr) == (b.q.scales != nullptr) &&
         (a.q.zeros != nullptr) == (b.q.zeros != nullptr);
}

}  // namespace

// --- public entry points -------------------------------------------------------------------------

std::shared_ptr<DeviceLlama> llama_upload(const LlamaConfig& c, const LlamaWeights& hw, bool emulated, LlamaKernels kernels) {
  if (!emulated) require_device();
  auto m = std::make_shared<DeviceLlama>();
  m->c = c;
  m->emulated = emulated;
  m->kernels = kernels;
  const bool host = emulated;
  auto store = [&](const Linear& L, const char* what) -> StoredTensor* {
    if (L.int_act && (L.w.f32 || (L.w.q.format != QFormat::Int8 && L.w.q.format != QFormat::Int4)))
      bad(Code::Unsupported, std::string(what) + ": int8 activations need int8 or int4 weights");
    for (auto& t : m->tensors)
      if (t->id == L.id) {
        if (!same_layout(t->w, L.w)) bad(Code::InvalidArgument, std::string(what) + ": tensor id " + std::to_string(L.id) + " is repeated with another shape or format");
        return t.get();
      }
    auto t = std::make_unique<StoredTensor>();
    m->quantized = m->quantized || !L.w.f32;
    t->id = L.id;
    t->w = L.w;
    const uint64_t nb = data_bytes(L.w), ns = scale_count(L.w);
    t->data = Block((nb + 3) / 4 * 4, MemCategory::Weights, host);
    put(host, t->data.p, L.w.f32 ? (const void*)L.w.w32 : (const void*)L.w.q.data, nb);
    if (L.w.f32) {
      t->w.w32 = (const float*)t->data.p;
    } else {
      t->w.q.data = (uint8_t*)t->data.p;
      if (ns) {
        t->host_scales.assign(L.w.q.scales, L.w.q.scales + ns);
        t->scales = Block(ns * sizeof(float), MemCategory::Weights, host);
        put(host, t->scales.p, L.w.q.scales, ns * sizeof(float));
        t->w.q.scales = (float*)t->scales.p;
      }
      if (L.w.q.zeros) {
        t->zeros = Block(ns, MemCategory::Weights, host);
        put(host, t->zeros.p, L.w.q.zeros, ns);
        t->w.q.zeros = (uint8_t*)t->zeros.p;
      }
    }
    m->tensors.push_back(std::move(t));
    return m->tensors.back().get();
  };
  auto lin = [&](const Linear& L, const char* what) {
    StoredTensor* t = store(L, what);
    m->args.push_back(t);
    m->int_act = m->int_act || L.int_act;
    return Linear{L.id, t->w, L.int_act};
  };
  auto norm = [&](const NormVec& v, const char* what) {
    GemmWeights g{};
    g.f32 = true;
    g.w32 = v.w;
    g.n = 1;
    g.k = c.hidden;
    const Linear l = lin(Linear{v.id, g, false}, what);
    return NormVec{v.id, l.w.w32};
  };
  m->w.embed = lin(hw.embed, "embed");
  m->w.layers.resize(c.layers);
  for (size_t l = 0; l < c.layers; ++l) {
    const LlamaLayer& h = hw.layers[l];
    LlamaLayer& y = m->w.layers[l];
    y.attn_norm = norm(h.attn_norm, "attnNorm");
    y.q = lin(h.q, "q");
    y.k = lin(h.k, "k");
    y.v = lin(h.v, "v");
    y.o = lin(h.o, "o");
    y.mlp_norm = norm(h.mlp_norm, "mlpNorm");
    y.gate = lin(h.gate, "gate");
    y.up = lin(h.up, "up");
    y.down = lin(h.down, "down");
  }
  m->w.norm = norm(hw.norm, "norm");
  m->w.lm_head = lin(hw.lm_head, "lmHead");
  return m;
}

const LlamaConfig& llama_config(const DeviceLlama& m) { return m.c; }

constexpr size_t kMaxCacheBatch = 1 << 20;

std::shared_ptr<DeviceKvCache> llama_cache_create(const DeviceLlama& m, size_t B, size_t cap) {
  const LlamaConfig& c = m.c;
  if (B == 0 || B > kMaxCacheBatch || cap == 0 || cap > c.max_pos)
    bad(Code::OutOfRange, "a cache holds 1 .. " + std::to_string(kMaxCacheBatch) + " sequences of 1 .. max_position_embeddings (" +
                              std::to_string(c.max_pos) + ") slots, got " + std::to_string(B) + " x " + std::to_string(cap));
  auto kv = std::make_shared<DeviceKvCache>();
  kv->layers = c.layers, kv->B = B, kv->kv_heads = c.kv_heads, kv->head_dim = c.head_dim, kv->cap = cap;
  size_t floats = 1;
  for (size_t f : {c.layers, B, c.kv_heads, c.head_dim, cap})
    if (__builtin_mul_overflow(floats, f, &floats) || floats > ((size_t)1 << 40)) bad(Code::OutOfRange, "the cache is too large (over 2^40 floats)");
  kv->k = Block(floats * sizeof(float), MemCategory::Activations, m.emulated);
  kv->v = Block(floats * sizeof(float), MemCategory::Activations, m.emulated);
  kv->mask = Block(B * cap, MemCategory::Activations, m.emulated);
  kv->host_mask.assign(B * cap, 0);
  return kv;
}

void llama_cache_reset(DeviceKvCache& kv) { std::fill(kv.host_mask.begin(), kv.host_mask.end(), 0); }

size_t llama_cache_batch(const DeviceKvCache& kv) { return kv.B; }
size_t llama_cache_capacity(const DeviceKvCache& kv) { return kv.cap; }
uint8_t* llama_cache_mask(DeviceKvCache& kv) { return kv.host_mask.data(); }

bool llama_cache_fits(const DeviceLlama& m, const DeviceKvCache& kv) {
  return kv.layers == m.c.layers && kv.kv_heads == m.c.kv_heads && kv.head_dim == m.c.head_dim;
}

float llama_device_forward(DeviceLlama& m, const LlamaBatch& b, LlamaOutputs& o, DeviceKvCache* cache, const int32_t* past) {
  LlamaOutputs* outs[1] = {&o};
  const LlamaPerturb* zos[1] = {nullptr};
  if (!o.next) return run_forwards(m, b, outs, zos, 1, cache, past);
  // Next tokens: the last row of each sequence joins the logits rows (one call), its logits come
  // back and are sampled here exactly as the CPU forward samples them (sample.h, same u).
  std::vector<int32_t> rows(o.logit_rows, o.logit_rows + o.n_logit_rows), seqs;
  for (size_t s = 0; s < b.B; ++s)
    if (b.seq_off[s + 1] > b.seq_off[s]) rows.push_back(b.seq_off[s + 1] - 1), seqs.push_back((int32_t)s);
  const size_t V = m.c.vocab, R = o.n_logit_rows;
  std::vector<float> logits(rows.size() * V);
  LlamaOutputs with = o;
  with.next = nullptr;
  with.logit_rows = rows.data();
  with.n_logit_rows = rows.size();
  with.logits = logits.data();
  outs[0] = &with;
  const float ms = run_forwards(m, b, outs, zos, 1, cache, past);
  o.logprob_sum = with.logprob_sum, o.count = with.count;
  if (R) memcpy(o.logits, logits.data(), R * V * sizeof(float));
  for (size_t j = 0; j < seqs.size(); ++j) {
    const size_t s = (size_t)seqs[j];
    const float* row = &logits[(R + j) * V];
    const uint64_t slot = (uint64_t)(past ? past[s] : 0) + (uint64_t)(b.seq_off[s + 1] - b.seq_off[s]);
    const float u = uniform_open(random_word(RngKey{o.seed, (uint32_t)s, kPurposeUniform}, slot));
    const int64_t id = sample_ranked(row, V, o.sample, u, argmax_row(row, V));
    if (id < 0) fail(Code::NonFinite, "llama (device): the logits of sequence " + std::to_string(s) + " are all NaN");
    o.next[s] = (int32_t)id;
  }
  return ms;
}

size_t llama_device_generate(DeviceLlama& m, const LlamaBatch& prompt, DeviceKvCache& cache, int32_t* past, int32_t* next_pos,
                             const GenerateParams& g, const std::function<bool(size_t, const int32_t*)>& on_step) {
  return decode_loop(prompt, past, next_pos, g, [&](const LlamaBatch& b, LlamaOutputs& o) {
    const KvCache view{nullptr, nullptr, llama_cache_mask(cache), past, llama_cache_capacity(cache)};
    llama_validate(m.c, b, &view, o);
    llama_device_forward(m, b, o, &cache, past);
  }, on_step);
}

float llama_device_probe(DeviceLlama& m, const LlamaBatch& b, LlamaOutputs* plus, LlamaOutputs* minus, const LlamaPerturb& zo,
                         const std::vector<uint64_t>& seeds, bool in_place) {
  const size_t Q = seeds.size();
  std::vector<LlamaPerturb> at(2 * Q, zo);  // query q: +eps at 2q, -eps at 2q + 1
  for (size_t q = 0; q < Q; ++q) {
    at[2 * q].dir.seed = at[2 * q + 1].dir.seed = seeds[q];
    at[2 * q + 1].alpha = -zo.alpha;
  }
  float ms = 0.0f;
  if (in_place) {
    for (size_t q = 0; q < Q; ++q) ms += probe_in_place(m, b, plus[q], minus[q], at[2 * q]);
    return ms;
  }
  std::vector<LlamaOutputs*> outs(2 * Q);
  std::vector<const LlamaPerturb*> zos(2 * Q);
  for (size_t f = 0; f < 2 * Q; ++f) outs[f] = f % 2 ? &minus[f / 2] : &plus[f / 2], zos[f] = &at[f];
  return Q ? run_forwards(m, b, outs.data(), zos.data(), 2 * Q, nullptr, nullptr, first_trainable_layer(m.c, m.w, zo)) : 0.0f;
}

float llama_device_update(DeviceLlama& m, const Direction& dir, float scale, const uint32_t* ids, size_t n, const float* keep) {
  std::vector<StoredTensor*> list;
  size_t workspace = 0;  // floats: the largest quantized tensor updated with decay
  for (size_t j = 0; j < n; ++j) {
    StoredTensor* t = nullptr;
    for (auto& s : m.tensors)
      if (s->id == ids[j]) t = s.get();
    if (!t) bad(Code::OutOfRange, "tensor id " + std::to_string(ids[j]) + " is not a weight of this model");
    const bool decayed = keep && keep[j] != 1.0f;
    if (!t->w.f32 && !decayed) {
      QTensorView hq = t->w.q;  // the update's checks on the host copy of the scales
      hq.scales = t->host_scales.empty() ? nullptr : t->host_scales.data();
      hq.zeros = nullptr;  // checked at upload, never written
      quant_update_check(hq, -scale);
    }
    if (!t->w.f32 && decayed) workspace = std::max<size_t>(workspace, t->w.n * t->w.k);
    list.push_back(t);
  }
  Block tmp(workspace ? workspace * sizeof(float) + sizeof(int) : 0, MemCategory::Workspace, m.emulated);  // + the finite flag
  int* const flag = reinterpret_cast<int*>(static_cast<float*>(tmp.p) + workspace);
  Call call(m.emulated);  // after the workspace: its destructor drains the stream first
  call.begin();
  for (size_t j = 0; j < list.size(); ++j) {
    StoredTensor* t = list[j];
    const float kj = keep ? keep[j] : 1.0f;
    Direction d = dir;
    d.stream = t->id;
    const uint64_t count = t->w.n * t->w.k;
    if (t->w.f32) {
      call.ops.perturb(const_cast<float*>(t->w.w32), count, d, -scale, kj);
    } else if (kj == 1.0f) {
      call.ops.quant_update(t->w.q, -scale, d);
    } else {  // the CPU's zoUpdate with decay: through fp32, then stochastically rounded onto the same grid
      call.ops.dequantize(t->w.q, (float*)tmp.p);
      call.ops.perturb((float*)tmp.p, count, d, -scale, kj);
      if (qformat_needs_finite(t->w.q.format) && call.ops.nonfinite((const float*)tmp.p, count, flag))  // the CPU's quantize check
        fail(Code::NonFinite, "llama (device): the update of tensor id " + std::to_string(t->id) +
                                  " overflowed to Inf (lr x projected gradient too large); its weights are unchanged");
      call.ops.requantize(t->w.q, (const float*)tmp.p, d.seed, t->id);
    }
  }
  call.end("llama update");
  return call.finish("llama update");
}

float llama_device_optim_step(DeviceLlama& m, uint32_t slot, const ZoOptimStep& s, const uint32_t* ids, const float* decays,
                              size_t n) {
  check_zo_optim(s);
  for (size_t j = 0; j < n; ++j) {
    ZoOptimStep sj = s;
    sj.decay = decays[j];
    check_zo_optim(sj);
  }
  std::vector<StoredTensor*> list;
  for (size_t j = 0; j < n; ++j) {
    StoredTensor* t = nullptr;
    for (auto& x : m.tensors)
      if (x->id == ids[j]) t = x.get();
    if (!t) bad(Code::OutOfRange, "tensor id " + std::to_string(ids[j]) + " is not a weight of this model");
    if (!t->w.f32) bad(Code::Unsupported, "zo-sgd-momentum / zo-adam keep fp32 state and update fp32 weights; tensor id " + std::to_string(ids[j]) + " is quantized (use mezo or quzo for quantized weights)");
    list.push_back(t);
  }
  const size_t q = (size_t)s.queries;
  // Each tensor's directions (stream = its id) and the coefficients, uploaded once for the call.
  std::vector<Direction> dirs(n * q);
  for (size_t j = 0; j < n; ++j)
    for (size_t k = 0; k < q; ++k) dirs[j * q + k] = s.dirs[k], dirs[j * q + k].stream = list[j]->id;
  Block args(dirs.size() * sizeof(Direction) + q * sizeof(float), MemCategory::Workspace, m.emulated);
  auto& state = m.optim[slot];
  Call call(m.emulated);  // after the blocks: its destructor drains the stream first
  call.ops.put(args.p, dirs.data(), dirs.size() * sizeof(Direction));
  float* coefs = (float*)((uint8_t*)args.p + dirs.size() * sizeof(Direction));
  call.ops.put(coefs, s.coefs, q * sizeof(float));
  call.begin();
  for (size_t j = 0; j < n; ++j) {
    StoredTensor* t = list[j];
    const uint64_t count = t->w.n * t->w.k;
    OptimState& st = state[t->id];
    if (!st.m.p && count) {  // zero state at the tensor's first step
      st.m = Block(count * sizeof(float), MemCategory::OptimizerState, m.emulated);
      call.ops.zero(st.m.p, st.m.bytes);
    }
    if (s.kind == kZoAdam && !st.v.p && count) {
      st.v = Block(count * sizeof(float), MemCategory::OptimizerState, m.emulated);
      call.ops.zero(st.v.p, st.v.bytes);
    }
    ZoOptimStep sj = s;
    sj.decay = decays[j];
    sj.dirs = (const Direction*)args.p + j * q;
    sj.coefs = coefs;
    zo_optim_launch(m.emulated, const_cast<float*>(t->w.w32), (float*)st.m.p, s.kind == kZoAdam ? (float*)st.v.p : nullptr, count, 0, sj,
                    call.ops.stream);
  }
  call.end("llama optimiser step");
  return call.finish("llama optimiser step");
}

void llama_device_optim_free(DeviceLlama& m, uint32_t slot) { m.optim.erase(slot); }

size_t llama_weight_count(const DeviceLlama& m) { return m.args.size(); }
const GemmWeights& llama_weight(const DeviceLlama& m, size_t arg) { return m.args[arg]->w; }

void llama_device_read(const DeviceLlama& m, size_t arg, const GemmWeights& host) {
  const GemmWeights& w = m.args[arg]->w;
  if (!same_layout(w, host)) bad(Code::ShapeMismatch, "weight " + std::to_string(arg) + ": the destination has another shape or format");
  get(m.emulated, host.f32 ? (void*)host.w32 : (void*)host.q.data, w.f32 ? (const void*)w.w32 : (const void*)w.q.data, data_bytes(w));
  if (!w.f32 && w.q.scales) get(m.emulated, host.q.scales, w.q.scales, scale_count(w) * sizeof(float));
  if (!w.f32 && w.q.zeros) get(m.emulated, host.q.zeros, w.q.zeros, scale_count(w));
}

}  // namespace cuda
}  // namespace zt
