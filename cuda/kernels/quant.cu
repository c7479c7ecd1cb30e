#include <string.h>

#include <cfloat>
#include <cmath>
#include <memory>
#include <string>

#include "../../native/common/check_direction.h"
#include "device.h"
#include "perturb.h"  // check_indices
#include "pool.h"
#include "quant.h"
#include "rng_blocks.h"
#include "timed_call.h"

namespace zt {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 8;                    // quantize / dequantize: columns per thread (whole 4-bit bytes)
constexpr uint64_t kStatsChunk = 1 << 16;    // per-tensor statistics: elements per block

// --- validation (host; the CPU's checks and error codes) --------------------------------------

void check_scales_host(const QTensorView& q) {
  if (!qformat_has_scales(q.format)) return;
  for (uint64_t k = 0, n = qt_scale_count(q); k < n; ++k) {
    const float s = q.scales[k];
    if (!std::isfinite(s)) fail(Code::NonFinite, "scale " + std::to_string(k) + " is not finite");
    if (q.zeros && q.zeros[k] > 15) fail(Code::InvalidArgument, "zero-point " + std::to_string(k) + " exceeds 15");
    if (!scale_valid(s))
      fail(Code::InvalidArgument, "scale " + std::to_string(k) + " = " + std::to_string(s) + " must be 0 or in [2^-126, FLT_MAX] (1/scale must be finite)");
  }
}

void check_update(const QTensorView& q, float alpha) {
  if (!std::isfinite(alpha)) fail(Code::NonFinite, "alpha must be finite");
  check_scales_host(q);
  if (!qformat_has_scales(q.format)) return;
  float smin = 0.0f;  // |alpha / s| is largest at the smallest nonzero scale
  for (uint64_t k = 0, n = qt_scale_count(q); k < n; ++k)
    if (q.scales[k] > 0.0f && (smin == 0.0f || q.scales[k] < smin)) smin = q.scales[k];
  if (!std::isfinite(zt_mul(alpha, inv_scale_for(smin))))
    fail(Code::InvalidArgument, "alpha / scale overflows f32 (smallest scale " + std::to_string(smin) + "): alpha is too large for this grid");
}

// Everything quantize checks before writing a code (FromData's non-finite input is found later,
// by the statistics kernels).
void check_quantize(const QTensorView& q, const float* x, ScaleMode mode) {
  if (mode == ScaleMode::Keep) check_scales_host(q);
  if (mode == ScaleMode::One)
    check(q.group == 0 && q.zeros == nullptr, Code::InvalidArgument, "scale-free quantization needs one scale and no zero-points");
  if (mode != ScaleMode::FromData && qformat_needs_finite(q.format)) {
    QStats s = qstats_empty();
    for (uint64_t i = 0, n = q.rows * q.cols; i < n; ++i) qstats_add(&s, x[i]);
    check(qstats_finite(s), Code::NonFinite, "quantize: input holds NaN or Inf");
  }
}

bool stats_from_data(const QTensorView& q, ScaleMode mode) { return mode == ScaleMode::FromData && qformat_has_scales(q.format); }

// --- per-thread code (ZT_HD: run by the kernels and by the emulation) ---------------------------

// Statistics of x[lo, hi) seen by thread t of nt (strided); threads' results are merged with
// qstats_merge, whose max/min make every merge order give the same bits.
ZT_HD QStats stats_strided(const float* x, uint64_t lo, uint64_t hi, uint64_t t, uint64_t nt) {
  QStats s = qstats_empty();
  for (uint64_t i = lo + t; i < hi; i += nt) qstats_add(&s, x[i]);
  return s;
}

// Scale group gi's scale (and zero-point) from its statistics; flags a non-finite group.
ZT_HD void finish_group(const QTensorView& q, uint64_t gi, QStats s, int* nonfinite) {
  if (!qstats_finite(s)) *nonfinite = 1;
  q_group_from_stats(q.format, s, q.zeros != nullptr, false, &q.scales[gi], q.zeros ? &q.zeros[gi] : nullptr);
}
// Elements [lo, hi) of scale group gi (group > 0: a group never crosses a row).
ZT_HD void group_range(const QTensorView& q, uint64_t gi, uint64_t* lo, uint64_t* hi) {
  const uint64_t gpr = qt_groups_per_row(q), r = gi / gpr, c = (gi % gpr) * q.group;
  *lo = r * q.cols + c;
  *hi = r * q.cols + (c + q.group < q.cols ? c + q.group : q.cols);
}

// Quantize item t: row t / cpr, columns [c0, c0 + kChunk): whole 4-bit bytes, and the padding
// nibble of an odd row in the row's last item.
ZT_HD void quantize_item(const QTensorView& q, const float* x, bool sr, RngKey key, uint64_t t) {
  const uint64_t cpr = (q.cols + kChunk - 1) / kChunk, r = t / cpr, c0 = (t % cpr) * kChunk;
  const uint64_t c1 = c0 + kChunk < q.cols ? c0 + kChunk : q.cols;
  uint8_t* row = qt_row(q, r);
  QGroup g{};
  for (uint64_t c = c0; c < c1; ++c) {
    const uint64_t i = r * q.cols + c;
    g = qt_group(q, qt_scale_index(q, r, c));
    q_store_code(q.format, row, c, q_encode(q.format, x[i], g, sr, sr ? random_word(key, i) : 0));
  }
  if (qformat_is_4bit(q.format) && (q.cols & 1) && c1 == q.cols) q_store_code(q.format, row, q.cols, q_zero_code(q.format, g));
}

ZT_HD void dequantize_item(const QTensorView& q, float* y, uint64_t t) {
  const uint64_t cpr = (q.cols + kChunk - 1) / kChunk, r = t / cpr, c0 = (t % cpr) * kChunk;
  const uint64_t c1 = c0 + kChunk < q.cols ? c0 + kChunk : q.cols;
  const uint8_t* row = qt_row(q, r);
  for (uint64_t c = c0; c < c1; ++c)
    y[r * q.cols + c] = q_decode(q.format, q_load_code(q.format, row, c), qt_group(q, qt_scale_index(q, r, c)));
}

// A 4-bit code whose byte another thread also writes: 32-bit atomic XOR of the nibble's change on
// the GPU (only this thread changes this nibble, so old ^ new flips exactly it).
ZT_HD void store_nibble_shared(uint8_t* row, uint64_t c, uint32_t old_code, uint32_t code) {
#if defined(__CUDA_ARCH__)
  uint8_t* p = row + (c >> 1);
  unsigned* word = (unsigned*)((uintptr_t)p & ~(uintptr_t)3);
  const unsigned sh = (unsigned)((uintptr_t)p & 3) * 8 + (unsigned)(c & 1) * 4;
  atomicXor(word, ((old_code ^ code) & 15u) << sh);
#else
  (void)old_code;
  q_store_code(QFormat::Int4, row, c, code);
#endif
}

// One element of the update (reference and index-list kernels): z and the SR word from scratch.
ZT_HD void update_elem(const QTensorView& q, uint64_t i, float alpha, const Direction& d) {
  const uint64_t r = i / q.cols, c = i % q.cols;
  const QGroup g = qt_group(q, qt_scale_index(q, r, c));
  const float z = direction_at(d, i);
  const uint32_t w = random_word(RngKey{d.seed, d.stream, kPurposeSrWeight}, i);
  uint8_t* row = qt_row(q, r);
  const uint32_t old = q_load_code(q.format, row, c);
  const uint32_t code = q_update(q.format, old, g, zt_mul(z, q_update_factor(q.format, alpha, g)), w);
  if (qformat_is_4bit(q.format))
    store_nibble_shared(row, c, old, code);
  else
    q_store_code(q.format, row, c, code);
}

ZT_HD uint64_t group_end(const QTensorView& q, uint64_t c) { return q.group == 0 ? q.cols : (c / q.group + 1) * q.group; }

// The update's divisions: tiles of the [rows, cols] matrix (rng_blocks.h TileRows) and the
// group of a column by multiply-high when exact (tile_rows_fast(cols), cols * group <= 2^32).
struct UpdateDivs {
  bool fast;
  FastDiv group;
  uint64_t groups_per_row;
};
UpdateDivs update_divs(const QTensorView& q) {
  UpdateDivs u;
  u.fast = tile_rows_fast(q.cols) && (q.group == 0 || (q.group <= 0xffffffffu && q.cols * q.group <= ((uint64_t)1 << 32)));
  u.group = fast_div(u.fast && q.group ? (uint32_t)q.group : 1u);
  u.groups_per_row = qt_groups_per_row(q);
  return u;
}

// Elements e0 .. e0 + 3 (e0 at row r, column c; those < total) with their directions z and SR
// words w. A run inside one row and group whose codes are aligned (the usual case: cols a multiple
// of 4) is one load and one store, else the group (and its factor) is reloaded only when it changes
// along the run.
template <int F>
ZT_HD void update_run(const QTensorView& q, const UpdateDivs& u, uint64_t total, uint64_t e0, uint64_t r, uint64_t c,
                      const float z[4], const uint32_t w[4], float alpha) {
  if (e0 >= total) return;
  uint64_t gi = 0, gend = q.cols;
  if (q.group) {
    const uint64_t g = u.fast ? div_of(u.group, (uint32_t)c) : c / q.group;
    gi = r * u.groups_per_row + g, gend = (g + 1) * q.group;
  }
  QGroup g = qt_group(q, gi);
  float factor = q_update_factor(format_of<F>(q), alpha, g);
  const unsigned bits = code_bits(format_of<F>(q)), bytes = bits / 2;  // 4 codes
  uint8_t* p = qt_row(q, r) + c * bits / 8;
  if (e0 + 4 <= total && c + 4 <= (gend < q.cols ? gend : q.cols) && (c * bits) % 8 == 0 && (uintptr_t)p % bytes == 0) {
    const uint64_t v = load_run(p, bytes), mask = ((uint64_t)1 << bits) - 1;
    uint64_t out = 0;
    for (int l = 0; l < 4; ++l) {
      const uint32_t old = (uint32_t)((v >> (bits * l)) & mask);
      out |= (uint64_t)(q_update(format_of<F>(q), old, g, zt_mul(z[l], factor), w[l]) & mask) << (bits * l);
    }
    store_run(p, bytes, out);
    return;
  }
  for (int l = 0; l < 4 && e0 + l < total; ++l) {
    if (l > 0) {
      const uint64_t prev = gi;
      if (++c == q.cols) {
        ++r, c = 0;
        gi = qt_scale_index(q, r, 0), gend = group_end(q, 0);
      } else if (c == gend) {
        ++gi, gend += q.group;
      }
      if (gi != prev) g = qt_group(q, gi), factor = q_update_factor(format_of<F>(q), alpha, g);
    }
    uint8_t* row = qt_row(q, r);
    const uint32_t old = q_load_code(format_of<F>(q), row, c);
    const uint32_t code = q_update(format_of<F>(q), old, g, zt_mul(z[l], factor), w[l]);
    // A 4-bit byte is this thread's alone when its other nibble is in this run or is the padding.
    const bool own_byte = (c & 1) ? l > 0 : (c + 1 == q.cols || (l < 3 && e0 + l + 1 < total));
    if (qformat_is_4bit(format_of<F>(q)) && !own_byte)
      store_nibble_shared(row, c, old, code);
    else
      q_store_code(format_of<F>(q), row, c, code);
  }
}

// Pair p of tile E0 (rng_blocks.h) of the update over elements [0, total), after the tile's stage:
// its directions and the rounding words of the same elements (each Philox block generated once).
template <int F>
ZT_HD void update_pair(const QTensorView& q, const UpdateDivs& u, const TileRows& tr, uint64_t total, float alpha,
                       const Direction& d, uint64_t E0, unsigned p, const TileWords& sm, const TileSr& sr) {
  float z[2][4];
  tile_pair_dirs(d, E0, p, sm, z);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const unsigned o = pair_offset(p) + 32 * h;
    uint32_t w[4];
    tile_run_sr(o, sr, w);
    uint64_t r, c;
    tile_row_col(tr, q.cols, o, &r, &c);
    update_run<F>(q, u, total, E0 + o, r, c, z[h], w, alpha);
  }
}

ZT_HD RngKey update_sr_key(const Direction& d) { return RngKey{d.seed, d.stream, kPurposeSrWeight}; }

// --- kernels -----------------------------------------------------------------------------------

#define GRID_STRIDE(t, count) \
  for (uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; t < (count); t += (uint64_t)gridDim.x * blockDim.x)

// Merge of a block's per-thread statistics (exact in any order), valid in thread 0.
__device__ QStats block_merge(QStats s) {
  __shared__ QStats warp_part[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    QStats t;
    t.amax_bits = __shfl_down_sync(~0u, s.amax_bits, o);
    t.min = __shfl_down_sync(~0u, s.min, o);
    t.max = __shfl_down_sync(~0u, s.max, o);
    s = qstats_merge(s, t);
  }
  if ((threadIdx.x & 31) == 0) warp_part[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < kThreads / 32; ++w) s = qstats_merge(s, warp_part[w]);
  __syncthreads();
  return s;
}

// One block per scale group (grid-stride over groups): statistics, then the group's scale.
__global__ void group_stats_kernel(QTensorView q, const float* x, int* nonfinite) {
  for (uint64_t gi = blockIdx.x; gi < qt_scale_count(q); gi += gridDim.x) {
    uint64_t lo, hi;
    group_range(q, gi, &lo, &hi);
    const QStats s = block_merge(stats_strided(x, lo, hi, threadIdx.x, kThreads));
    if (threadIdx.x == 0) finish_group(q, gi, s, nonfinite);
  }
}

// Per-tensor scale: partial statistics per chunk of kStatsChunk elements, then one block merges them.
__global__ void chunk_stats_kernel(const float* x, uint64_t n, QStats* part) {
  const uint64_t lo = blockIdx.x * kStatsChunk, hi = lo + kStatsChunk < n ? lo + kStatsChunk : n;
  const QStats s = block_merge(stats_strided(x, lo, hi, threadIdx.x, kThreads));
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}
__global__ void merge_stats_kernel(QTensorView q, const QStats* part, uint64_t parts, int* nonfinite) {
  QStats s = qstats_empty();
  for (uint64_t p = threadIdx.x; p < parts; p += kThreads) s = qstats_merge(s, part[p]);
  s = block_merge(s);
  if (threadIdx.x == 0) finish_group(q, 0, s, nonfinite);
}

__global__ void quantize_kernel(QTensorView q, const float* x, bool sr, RngKey key, uint64_t items) {
  GRID_STRIDE(t, items) quantize_item(q, x, sr, key, t);
}
__global__ void dequantize_kernel(QTensorView q, float* y, uint64_t items) { GRID_STRIDE(t, items) dequantize_item(q, y, t); }
__global__ void nonfinite_kernel(const float* x, uint64_t n, int* nonfinite) {
  GRID_STRIDE(i, n) if (!(fabsf(x[i]) <= FLT_MAX)) *nonfinite = 1;  // every writer stores the same 1
}
// One tile per block iteration; the tile's words in dynamic shared memory (TileWords + TileSr: 64 KiB).
template <int F>
__global__ void __launch_bounds__(kTileThreads) update_kernel(QTensorView q, UpdateDivs u, uint64_t total, float alpha,
                                                              Direction d, uint64_t tiles) {
  extern __shared__ __align__(16) uint8_t update_smem[];
  TileWords& sm = *reinterpret_cast<TileWords*>(update_smem);
  TileSr& sr = *reinterpret_cast<TileSr*>(update_smem + sizeof(TileWords));
  for (uint64_t i = blockIdx.x; i < tiles; i += gridDim.x) {
    const uint64_t E0 = i << kTileShift;
    const TileRows tr = tile_rows(E0, q.cols, u.fast);
    tile_stage(d, E0, threadIdx.x, sm);
    tile_stage_sr(update_sr_key(d), E0, threadIdx.x, sr);
    __syncthreads();
    for (unsigned p = threadIdx.x; p < kTilePairs; p += kTileThreads) update_pair<F>(q, u, tr, total, alpha, d, E0, p, sm, sr);
    __syncthreads();
  }
}
__global__ void update_ref_kernel(QTensorView q, uint64_t total, float alpha, Direction d) {
  GRID_STRIDE(i, total) update_elem(q, i, alpha, d);
}
__global__ void update_indices_kernel(QTensorView q, const uint32_t* idx, uint64_t m, float alpha, Direction d) {
  GRID_STRIDE(j, m) update_elem(q, idx[j], alpha, d);
}

uint64_t chunk_items(const QTensorView& q) { return q.rows * ((q.cols + kChunk - 1) / kChunk); }

// A QTensorView's arrays copied to the device (data rounded up to 4 bytes for the nibble atomics).
struct DeviceQTensor {
  QTensorView host, dev;
  DeviceBuffer<uint8_t> data, zeros;
  DeviceBuffer<float> scales;
  explicit DeviceQTensor(const QTensorView& q)
      : host(q),
        dev(q),
        data((q.rows * qformat_row_bytes(q.format, q.cols) + 3) & ~(uint64_t)3, MemCategory::Weights),
        zeros(q.zeros ? qt_scale_count(q) : 0, MemCategory::Weights),
        scales(q.scales ? qt_scale_count(q) : 0, MemCategory::Weights) {
    dev.data = data.ptr, dev.scales = q.scales ? scales.ptr : nullptr, dev.zeros = q.zeros ? zeros.ptr : nullptr;
  }
  void to_device(TimedCall& call) {
    call.to_device(data.ptr, host.data, host.rows * qformat_row_bytes(host.format, host.cols));
    call.to_device(scales.ptr, host.scales, scales.bytes());
    call.to_device(zeros.ptr, host.zeros, zeros.bytes());
  }
  void to_host(TimedCall& call, bool params) {
    call.to_host(host.data, data.ptr, host.rows * qformat_row_bytes(host.format, host.cols));
    if (params) call.to_host(host.scales, scales.ptr, scales.bytes()), call.to_host(host.zeros, zeros.ptr, zeros.bytes());
  }
};

}  // namespace

void quant_update_check(const QTensorView& q, float alpha) { check_update(q, alpha); }
void quant_check_scales(const QTensorView& q) { check_scales_host(q); }

// --- GPU ops -------------------------------------------------------------------------------------

float quantize_host(const QTensorView& q, const float* x, ScaleMode mode, bool sr, uint64_t seed, uint32_t stream,
                    float* fake_out) {
  check_quantize(q, x, mode);
  const uint64_t n = q.rows * q.cols;
  if (mode == ScaleMode::One && q.scales) q.scales[0] = 1.0f;
  if (n == 0) return 0.0f;
  DeviceQTensor dq(q);  // buffers before the call: freed after its stream drains
  DeviceBuffer<float> dx(n, MemCategory::Activations);
  DeviceBuffer<int> flag(1);
  DeviceBuffer<QStats> part;
  TimedCall call;
  dq.to_device(call);
  call.to_device(dx.ptr, x, dx.bytes());
  check(cudaMemsetAsync(flag.ptr, 0, sizeof(int), call.stream), "cudaMemsetAsync");
  call.begin();
  if (stats_from_data(q, mode)) {
    if (q.group == 0) {
      const uint64_t parts = (n + kStatsChunk - 1) / kStatsChunk;
      if (parts > 0x7fffffffu) fail(Code::OutOfRange, "quantize: tensor too large for one launch");
      part = DeviceBuffer<QStats>(parts);
      chunk_stats_kernel<<<(unsigned)parts, kThreads, 0, call.stream>>>(dx.ptr, n, part.ptr);
      check_launch("chunk_stats_kernel");
      merge_stats_kernel<<<1, kThreads, 0, call.stream>>>(dq.dev, part.ptr, parts, flag.ptr);
      check_launch("merge_stats_kernel");
    } else {
      group_stats_kernel<<<grid_for(qt_scale_count(q) * kThreads, kThreads), kThreads, 0, call.stream>>>(dq.dev, dx.ptr, flag.ptr);
      check_launch("group_stats_kernel");
    }
    int nonfinite = 0;
    call.to_host(&nonfinite, flag.ptr, sizeof(int));
    check(cudaStreamSynchronize(call.stream), "quantize statistics");
    check(!nonfinite, Code::NonFinite, "quantize: input holds NaN or Inf");
  }
  const RngKey key{seed, stream, kPurposeSrQuantize};
  quantize_kernel<<<grid_for(chunk_items(q), kThreads), kThreads, 0, call.stream>>>(dq.dev, dx.ptr, sr, key, chunk_items(q));
  check_launch("quantize_kernel");
  if (fake_out) dequantize_kernel<<<grid_for(chunk_items(q), kThreads), kThreads, 0, call.stream>>>(dq.dev, dx.ptr, chunk_items(q));
  check_launch("dequantize_kernel");
  call.end("quantize kernels");
  dq.to_host(call, mode != ScaleMode::Keep);
  if (fake_out) call.to_host(fake_out, dx.ptr, dx.bytes());
  return call.finish("quantize");
}

float dequantize_host(const QTensorView& q, float* y) {
  check_scales_host(q);
  if (q.rows * q.cols == 0) return 0.0f;
  DeviceQTensor dq(q);
  DeviceBuffer<float> dy(q.rows * q.cols, MemCategory::Activations);
  TimedCall call;
  dq.to_device(call);
  call.begin();
  dequantize_kernel<<<grid_for(chunk_items(q), kThreads), kThreads, 0, call.stream>>>(dq.dev, dy.ptr, chunk_items(q));
  check_launch("dequantize_kernel");
  call.end("dequantize kernel");
  call.to_host(y, dy.ptr, dy.bytes());
  return call.finish("dequantize");
}

void quant_update_launch(const QTensorView& dq, float alpha, const Direction& d, bool reference, void* stream) {
  const uint64_t total = dq.rows * dq.cols;
  if (total == 0) return;
  cudaStream_t s = (cudaStream_t)stream;
  if (reference) {
    update_ref_kernel<<<grid_for(total, kThreads), kThreads, 0, s>>>(dq, total, alpha, d);
    check_launch("update_ref_kernel");
  } else {
    constexpr size_t smem = sizeof(TileWords) + sizeof(TileSr);
    const Tiles tiles = tiles_for(0, total);
    with_weight_format(false, dq.format, [&](auto fmt) {
      constexpr int F = decltype(fmt)::value;
      static const bool sized = cudaFuncSetAttribute(update_kernel<F>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) == cudaSuccess;
      if (!sized) check(cudaGetLastError(), "cudaFuncSetAttribute(update_kernel)");
      update_kernel<F><<<grid_for(tiles.count * kTileThreads, kTileThreads), kTileThreads, smem, s>>>(dq, update_divs(dq), total, alpha, d,
                                                                                                    tiles.count);
    });
    check_launch("update_kernel");
  }
}

void dequantize_launch(const QTensorView& dq, float* y, void* stream) {
  if (dq.rows * dq.cols == 0) return;
  dequantize_kernel<<<grid_for(chunk_items(dq), kThreads), kThreads, 0, (cudaStream_t)stream>>>(dq, y, chunk_items(dq));
  check_launch("dequantize_kernel");
}

void requantize_launch(const QTensorView& dq, const float* x, bool sr, uint64_t seed, uint32_t id, void* stream) {
  if (dq.rows * dq.cols == 0) return;
  const RngKey key{seed, id, kPurposeSrQuantize};
  quantize_kernel<<<grid_for(chunk_items(dq), kThreads), kThreads, 0, (cudaStream_t)stream>>>(dq, x, sr, key, chunk_items(dq));
  check_launch("quantize_kernel");
}

void nonfinite_launch(const float* x, uint64_t n, int* nonfinite, void* stream) {
  if (n == 0) return;
  nonfinite_kernel<<<grid_for(n, kThreads), kThreads, 0, (cudaStream_t)stream>>>(x, n, nonfinite);
  check_launch("nonfinite_kernel");
}

float quant_update_host(const QTensorView& q, float alpha, const Direction& d, bool reference) {
  check_direction(d);
  check_update(q, alpha);
  if (q.rows * q.cols == 0) return 0.0f;
  DeviceQTensor dq(q);
  TimedCall call;
  dq.to_device(call);
  call.begin();
  quant_update_launch(dq.dev, alpha, d, reference, call.stream);
  call.end("quantUpdate kernel");
  dq.to_host(call, false);
  return call.finish("quantUpdate");
}

float quant_update_indices_host(const QTensorView& q, const uint32_t* idx, uint64_t m, float alpha, const Direction& d) {
  check_direction(d);
  check_indices(idx, m, q.rows * q.cols, "quantUpdateIndices");
  check_update(q, alpha);
  if (m == 0) return 0.0f;
  DeviceQTensor dq(q);
  DeviceBuffer<uint32_t> di(m);
  TimedCall call;
  dq.to_device(call);
  call.to_device(di.ptr, idx, di.bytes());
  call.begin();
  update_indices_kernel<<<grid_for(m, kThreads), kThreads, 0, call.stream>>>(dq.dev, di.ptr, m, alpha, d);
  check_launch("update_indices_kernel");
  call.end("quantUpdateIndices kernel");
  dq.to_host(call, false);
  return call.finish("quantUpdateIndices");
}

// --- host emulation: the same per-thread code, one loop iteration per thread ----------------------

void quantize_emulated(const QTensorView& q, const float* x, ScaleMode mode, bool sr, uint64_t seed, uint32_t stream,
                       float* fake_out) {
  check_quantize(q, x, mode);
  if (mode == ScaleMode::One && q.scales) q.scales[0] = 1.0f;
  if (q.rows * q.cols == 0) return;
  if (stats_from_data(q, mode)) {
    // The blocks of the statistics kernels: per group, or per chunk of the tensor then merged.
    const uint64_t n = q.rows * q.cols, blocks = q.group ? qt_scale_count(q) : (n + kStatsChunk - 1) / kStatsChunk;
    int nonfinite = 0;
    QStats all = qstats_empty();
    for (uint64_t b = 0; b < blocks; ++b) {
      uint64_t lo = b * kStatsChunk, hi = lo + kStatsChunk < n ? lo + kStatsChunk : n;
      if (q.group) group_range(q, b, &lo, &hi);
      QStats s = qstats_empty();
      for (uint64_t t = 0; t < kThreads; ++t) s = qstats_merge(s, stats_strided(x, lo, hi, t, kThreads));
      if (q.group)
        finish_group(q, b, s, &nonfinite);
      else
        all = qstats_merge(all, s);
    }
    if (!q.group) finish_group(q, 0, all, &nonfinite);
    check(!nonfinite, Code::NonFinite, "quantize: input holds NaN or Inf");
  }
  for (uint64_t t = 0; t < chunk_items(q); ++t) quantize_item(q, x, sr, RngKey{seed, stream, kPurposeSrQuantize}, t);
  if (fake_out)
    for (uint64_t t = 0; t < chunk_items(q); ++t) dequantize_item(q, fake_out, t);
}

void dequantize_emulated(const QTensorView& q, float* y) {
  check_scales_host(q);
  for (uint64_t t = 0; t < chunk_items(q); ++t) dequantize_item(q, y, t);
}

void quant_update_emulated(const QTensorView& q, float alpha, const Direction& d) {
  check_direction(d);
  check_update(q, alpha);
  if (q.rows * q.cols == 0) return;
  const uint64_t total = q.rows * q.cols;
  const Tiles tiles = tiles_for(0, total);
  std::unique_ptr<TileWords> sm(new TileWords);
  std::unique_ptr<TileSr> sr(new TileSr);
  const UpdateDivs u = update_divs(q);
  with_weight_format(false, q.format, [&](auto fmt) {
    constexpr int F = decltype(fmt)::value;
    for (uint64_t i = 0; i < tiles.count; ++i) {
      const uint64_t E0 = i << kTileShift;
      const TileRows tr = tile_rows(E0, q.cols, u.fast);
      for (unsigned t = 0; t < kTileThreads; ++t) tile_stage(d, E0, t, *sm), tile_stage_sr(update_sr_key(d), E0, t, *sr);
      for (unsigned p = 0; p < kTilePairs; ++p) update_pair<F>(q, u, tr, total, alpha, d, E0, p, *sm, *sr);
    }
  });
}

void quant_update_indices_emulated(const QTensorView& q, const uint32_t* idx, uint64_t m, float alpha, const Direction& d) {
  check_direction(d);
  check_indices(idx, m, q.rows * q.cols, "quantUpdateIndices");
  check_update(q, alpha);
  for (uint64_t j = 0; j < m; ++j) update_elem(q, idx[j], alpha, d);
}

}  // namespace cuda
}  // namespace zt
