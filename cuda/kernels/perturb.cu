#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../../native/cpu/perturb.h"  // perturbed: the one rounding of every perturbation path
#include "device.h"
#include "perturb.h"
#include "pool.h"
#include "quant.h"
#include "rng_blocks.h"
#include "timed_call.h"

namespace zt {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Elements e0 .. e0 + 3 of w (which holds elements [first, first + n)), with their directions z.
// vec: first % 4 == 0 and w 16-byte aligned, so a run wholly inside the range is one aligned
// float4. keep: the weight decay's retention (1: exactly the plain perturbation, perturb.h).
ZT_HD void perturb_run(float* w, uint64_t first, uint64_t n, uint64_t e0, const float z[4], float alpha, float keep, bool vec) {
  const uint64_t j = e0 - first;  // unsigned: e0 < first wraps past n
  if (vec && j < n && n - j >= 4) {
    F4 v = load4(w + j);
    for (int l = 0; l < 4; ++l) v.v[l] = perturbed_decayed(v.v[l], keep, alpha, z[l]);
    store4(w + j, v);
    return;
  }
  for (int l = 0; l < 4; ++l)
    if (e0 + l - first < n) w[e0 + l - first] = perturbed_decayed(w[e0 + l - first], keep, alpha, z[l]);
}

// Pair p of tile E0 (rng_blocks.h) after its stage: both runs, vectorised when vec.
ZT_HD void perturb_pair(float* w, uint64_t n, const Direction& d, uint64_t first, float alpha, float keep, uint64_t E0,
                        unsigned p, const TileWords& sm, bool vec) {
  float z[2][4];
  tile_pair_dirs(d, E0, p, sm, z);
  for (int h = 0; h < 2; ++h) perturb_run(w, first, n, E0 + pair_offset(p) + 32 * h, z[h], alpha, keep, vec);
}

ZT_HD void perturb_index(float* w, const uint32_t* idx, uint64_t j, const Direction& d, uint64_t first, float alpha) {
  const uint32_t i = idx[j];
  w[i] = perturbed(w[i], alpha, direction_at(d, first + i));
}

// One tile per block iteration. A tile wholly inside the range (the common case) loads its weights
// before generating the directions, so the loads are in flight during the Philox and Box-Muller work.
__global__ void __launch_bounds__(kTileThreads) perturb_kernel(float* w, uint64_t n, Direction d, uint64_t first,
                                                               float alpha, float keep, Tiles tiles) {
  __shared__ TileWords sm;
  const unsigned t = threadIdx.x;
  const bool vec = (first & 3) == 0 && ((uintptr_t)w & 15) == 0;
  for (uint64_t i = blockIdx.x; i < tiles.count; i += gridDim.x) {
    const uint64_t E0 = tiles.e0 + (i << kTileShift);
    const bool whole = vec && E0 >= first && E0 - first + kTileElems <= n;
    if (!whole) {
      tile_stage(d, E0, t, sm);
      __syncthreads();
      for (int j = 0; j < kPairsPerThread; ++j) perturb_pair(w, n, d, first, alpha, keep, E0, t + kTileThreads * j, sm, vec);
    } else {
      float* const wt = w + (E0 - first);
      F4 v[kPairsPerThread][2];  // registers: every index below is a constant once unrolled
#pragma unroll
      for (int j = 0; j < kPairsPerThread; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) v[j][h] = load4(wt + pair_offset(t + kTileThreads * j) + 32 * h);
      tile_stage(d, E0, t, sm);
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kPairsPerThread; ++j) {
        const unsigned p = t + kTileThreads * j;
        float z[2][4];
        tile_pair_dirs(d, E0, p, sm, z);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
#pragma unroll
          for (int l = 0; l < 4; ++l) v[j][h].v[l] = perturbed_decayed(v[j][h].v[l], keep, alpha, z[h][l]);
          store4(wt + pair_offset(p) + 32 * h, v[j][h]);
        }
      }
    }
    __syncthreads();
  }
}

// The reference: one element per thread, the CPU's scalar expression.
__global__ void perturb_ref_kernel(float* w, uint64_t n, Direction d, uint64_t first, float alpha, float keep) {
  for (uint64_t j = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (uint64_t)gridDim.x * blockDim.x)
    w[j] = perturbed_decayed(w[j], keep, alpha, direction_at(d, first + j));
}

__global__ void perturb_indices_kernel(float* w, const uint32_t* idx, uint64_t m, Direction d, uint64_t first, float alpha) {
  for (uint64_t j = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; j < m; j += (uint64_t)gridDim.x * blockDim.x)
    perturb_index(w, idx, j, d, first, alpha);
}

}  // namespace

void check_indices(const uint32_t* idx, uint64_t m, uint64_t n, const char* fn) {
  for (uint64_t j = 0; j < m; ++j)
    if (idx[j] >= n)
      fail(Code::OutOfRange, std::string(fn) + ": indices[" + std::to_string(j) + "] = " + std::to_string(idx[j]) +
                                 " is out of range for a tensor of " + std::to_string(n) + " elements");
  std::vector<uint32_t> sorted(idx, idx + m);
  std::sort(sorted.begin(), sorted.end());
  auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup != sorted.end())
    fail(Code::InvalidArgument, std::string(fn) + ": index " + std::to_string(*dup) + " is listed twice (each element may be listed once)");
}

void perturb_launch(float* w, uint64_t n, const Direction& d, uint64_t first, float alpha, bool reference, void* stream,
                    float keep) {
  if (n == 0) return;
  cudaStream_t s = (cudaStream_t)stream;
  if (reference) {
    perturb_ref_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(w, n, d, first, alpha, keep);
    check_launch("perturb_ref_kernel");
  } else {
    const Tiles tiles = tiles_for(first, n);
    perturb_kernel<<<grid_for(tiles.count * kTileThreads, kTileThreads), kTileThreads, 0, s>>>(w, n, d, first, alpha, keep, tiles);
    check_launch("perturb_kernel");
  }
}

float perturb_host(float* w, uint64_t n, const Direction& d, uint64_t first, float alpha, bool reference) {
  check_direction(d);
  if (n == 0) return 0.0f;
  DeviceBuffer<float> dw(n, MemCategory::Weights);  // buffers before the call: freed after its stream drains
  TimedCall call;
  call.to_device(dw.ptr, w, dw.bytes());
  call.begin();
  perturb_launch(dw.ptr, n, d, first, alpha, reference, call.stream);
  call.end("perturb kernel");
  call.to_host(w, dw.ptr, dw.bytes());
  return call.finish("perturb");
}

void perturb_emulated(float* w, uint64_t n, const Direction& d, uint64_t first, float alpha, float keep) {
  check_direction(d);
  if (n == 0) return;
  const Tiles tiles = tiles_for(first, n);
  std::unique_ptr<TileWords> sm(new TileWords);
  const bool vec = (first & 3) == 0 && ((uintptr_t)w & 15) == 0;
  for (uint64_t i = 0; i < tiles.count; ++i) {
    const uint64_t E0 = tiles.e0 + (i << kTileShift);
    for (unsigned t = 0; t < kTileThreads; ++t) tile_stage(d, E0, t, *sm);
    for (unsigned p = 0; p < kTilePairs; ++p) perturb_pair(w, n, d, first, alpha, keep, E0, p, *sm, vec);
  }
}

float perturb_indices_host(float* w, uint64_t n, const uint32_t* idx, uint64_t m, const Direction& d, uint64_t first,
                           float alpha) {
  check_direction(d);
  check_indices(idx, m, n, "perturbIndices");
  if (m == 0) return 0.0f;
  DeviceBuffer<float> dw(n, MemCategory::Weights);
  DeviceBuffer<uint32_t> di(m);
  TimedCall call;
  call.to_device(dw.ptr, w, dw.bytes());
  call.to_device(di.ptr, idx, di.bytes());
  call.begin();
  perturb_indices_kernel<<<grid_for(m, kThreads), kThreads, 0, call.stream>>>(dw.ptr, di.ptr, m, d, first, alpha);
  check_launch("perturb_indices_kernel");
  call.end("perturbIndices kernel");
  call.to_host(w, dw.ptr, dw.bytes());
  return call.finish("perturbIndices");
}

void perturb_indices_emulated(float* w, uint64_t n, const uint32_t* idx, uint64_t m, const Direction& d, uint64_t first,
                              float alpha) {
  check_direction(d);
  check_indices(idx, m, n, "perturbIndices");
  for (uint64_t j = 0; j < m; ++j) perturb_index(w, idx, j, d, first, alpha);
}

namespace {

// Best of `iters` timings of f() (after one warm-up), and their mean.
template <class F>
void time_best(TimedCall& call, int iters, F&& f, float* best, float* mean) {
  f();
  *best = 1e30f, *mean = 0;
  for (int i = 0; i < iters; ++i) {
    call.begin();
    f();
    call.end("benchmark launch");
    const float ms = call.finish("benchmark");
    *best = ms < *best ? ms : *best;
    *mean += ms / iters;
  }
}

}  // namespace

DeviceBench perturb_device_bench(uint64_t n, int kind, const Direction& d, int iters) {
  check_direction(d);
  check(kind >= 0 && kind <= 3, Code::InvalidArgument, "perturbDeviceBench: kind must be 0 (f32), 1 (bf16), 2 (int8) or 3 (int4)");
  check(iters >= 1, Code::InvalidArgument, "perturbDeviceBench: iters must be >= 1");
  constexpr uint64_t cols = 4096, group = 128;
  const QFormat fmt = kind == 1 ? QFormat::Bf16 : kind == 2 ? QFormat::Int8 : QFormat::Int4;
  const uint64_t rows = n / cols;
  DeviceBench r{};
  r.n = kind == 0 ? n : rows * cols;
  check(r.n > 0, Code::InvalidArgument, "perturbDeviceBench: n must be >= 4096 for quantized weights");
  const uint64_t weight_bytes = kind == 0 ? 4 * n : rows * qformat_row_bytes(fmt, cols);
  const uint64_t scale_count = kind >= 2 ? rows * (cols / group) : 0;
  r.bytes = 2 * weight_bytes + 4 * scale_count;
  const float alpha = 1e-3f;

  DeviceBuffer<uint8_t> w((weight_bytes + 3) & ~(uint64_t)3, MemCategory::Weights);
  DeviceBuffer<float> scales(scale_count, MemCategory::Weights);
  std::unique_ptr<DeviceBuffer<uint8_t>> dst;  // the copy's destination
  TimedCall call;
  check(cudaMemsetAsync(w.ptr, 0, w.bytes(), call.stream), "cudaMemsetAsync");
  // 0x3c3c3c3c is the float 0.0115: a valid scale for every group.
  check(cudaMemsetAsync(scales.ptr, 0x3c, scales.bytes(), call.stream), "cudaMemsetAsync");
  {
    r.copy_bytes = weight_bytes;
    try {
      dst.reset(new DeviceBuffer<uint8_t>(r.copy_bytes, MemCategory::Workspace));
    } catch (const Error& e) {
      if (e.code != Code::OOM) throw;
      r.copy_bytes = weight_bytes < (2ull << 30) ? weight_bytes : (2ull << 30);
      dst.reset(new DeviceBuffer<uint8_t>(r.copy_bytes, MemCategory::Workspace));
    }
    float mean = 0;
    time_best(call, iters, [&] { check(cudaMemcpyAsync(dst->ptr, w.ptr, r.copy_bytes, cudaMemcpyDeviceToDevice, call.stream), "cudaMemcpyAsync D2D"); },
              &r.copy_ms, &mean);
    dst.reset();  // drained by time_best: room for the perturbation's own working set
  }
  QTensorView q{fmt, rows, cols, w.ptr, kind >= 2 ? scales.ptr : nullptr, nullptr, kind >= 2 ? group : 0};
  time_best(call, iters, [&] {
    if (kind == 0)
      perturb_launch((float*)w.ptr, n, d, 0, alpha, false, call.stream);
    else
      quant_update_launch(q, alpha, d, false, call.stream);
  }, &r.best_ms, &r.mean_ms);
  return r;
}

}  // namespace cuda
}  // namespace zt
