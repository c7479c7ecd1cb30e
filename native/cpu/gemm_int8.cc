// Integer GEMM: scalar reference kernels (the definition in gemm_int8.h, written plainly) and the
// threaded driver shared by the scalar and AVX2 paths.
#include "gemm_int8.h"

#include <float.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "../common/status.h"
#include "cpu_features.h"
#include "memory.h"
#include "threadpool.h"

namespace zt {

// ---- scalar reference kernels -------------------------------------------------------------------

bool act_quantize_row_ref(const float* x, uint64_t K, uint64_t Kp, int8_t* q, float* scale) {
  float amax = 0.0f;
  for (uint64_t k = 0; k < K; ++k) {
    float a = fabsf(x[k]);
    if (!(a <= FLT_MAX)) return false;
    amax = a > amax ? a : amax;
  }
  float inv, s = act_int8_scale(amax, &inv);
  for (uint64_t k = 0; k < K; ++k) q[k] = act_int8_code(x[k], inv);
  for (uint64_t k = K; k < Kp; ++k) q[k] = 0;
  *scale = s;
  return true;
}

void act_int4_extras_ref(const int8_t* q, uint64_t K, uint64_t Kp, uint64_t ga, uint64_t G, int32_t* gsum, int8_t* qeo) {
  for (uint64_t j = 0; j < G; ++j) {
    int32_t s = 0;
    for (uint64_t k = j * ga; k < std::min(K, (j + 1) * ga); ++k) s += q[k];
    gsum[j] = s;
  }
  if (qeo)
    for (uint64_t b = 0; b < Kp; b += 64)
      for (uint64_t i = 0; i < 32; ++i) {
        qeo[b + i] = q[b + 2 * i];
        qeo[b + 32 + i] = q[b + 2 * i + 1];
      }
}

void gemv_rows_ref(const IntPlan& p, uint64_t n0, uint64_t n1) {
  const ActQ& a = *p.a;
  for (uint64_t n = n0; n < n1; ++n)
    for (uint64_t m = 0; m < a.M; ++m) {
      const int8_t* q = a.q + m * a.Kp;
      float acc = 0.0f;
      for (uint64_t j = 0; j < p.G; ++j) {
        int32_t s = 0;
        for (uint64_t k = j * p.ga; k < std::min(p.K, (j + 1) * p.ga); ++k) s += w_code(p.w, n, k) * q[k];
        if (p.raw32) {
          p.raw32[m * p.N + n] = s;
          continue;
        }
        acc = zt_fma(w_scale(p.w, n, j), (float)s, acc);
      }
      if (!p.raw32) p.out[m * p.ldo + n] = epilogue(p.ep, acc, m, n);
    }
}

void pack_panel_ref(const IntPlan& p, uint64_t n0, Panel panel) {
  for (uint64_t k4 = 0; k4 < p.K4; ++k4)
    for (uint64_t c = 0; c < kPanelCols; ++c)
      for (uint64_t t = 0; t < 4; ++t) {
        uint64_t n = n0 + c, k = k4 * 4 + t;
        int v = n < p.N && k < p.K ? w_raw(p.w, n, k) : 0;
        panel.codes[(k4 * kPanelCols + c) * 4 + t] = (int8_t)v;
        if (panel.abs) panel.abs[(k4 * kPanelCols + c) * 4 + t] = (uint8_t)(v < 0 ? -v : v);
      }
  if (p.raw32) return;
  for (uint64_t j = 0; j < p.G; ++j)
    for (uint64_t c = 0; c < kPanelCols; ++c) {
      const bool in = n0 + c < p.N;
      panel.scales[j * kPanelCols + c] = in ? w_scale(p.w, n0 + c, j) : 0.0f;
      if (panel.zeros) panel.zeros[j * kPanelCols + c] = in ? w_zero(p.w, n0 + c, j) : 0;
    }
}

void tile_int_ref(const IntPlan& p, uint64_t m0, int mr, const Panel& panel, uint64_t n0, uint64_t nc) {
  const ActQ& a = *p.a;
  const uint64_t ga4 = p.ga / 4;
  for (int r = 0; r < mr; ++r)
    for (uint64_t c = 0; c < nc; ++c) {
      const int8_t* q = a.q + (m0 + r) * a.Kp;
      float acc = 0.0f;
      for (uint64_t j = 0; j < p.G; ++j) {
        int32_t s = 0;
        for (uint64_t k4 = j * ga4; k4 < std::min(p.K4, (j + 1) * ga4); ++k4)
          for (uint64_t t = 0; t < 4; ++t) s += panel.codes[(k4 * kPanelCols + c) * 4 + t] * q[k4 * 4 + t];
        if (panel.zeros) s -= panel.zeros[j * kPanelCols + c] * a.gsum[(m0 + r) * p.G + j];
        if (p.raw32) {
          p.raw32[(m0 + r) * p.N + n0 + c] = s;
          continue;
        }
        acc = zt_fma(panel.scales[j * kPanelCols + c], (float)s, acc);
      }
      if (panel.dir) {  // step 2': the direction codes' chunk sums
        const Panel& dz = *panel.dir;
        const uint64_t gz4 = kAccChunk / 4;
        for (uint64_t j = 0; j < dir_chunks(p.K); ++j) {
          int32_t s = 0;
          for (uint64_t k4 = j * gz4; k4 < std::min(p.K4, (j + 1) * gz4); ++k4)
            for (uint64_t t = 0; t < 4; ++t) s += dz.codes[(k4 * kPanelCols + c) * 4 + t] * q[k4 * 4 + t];
          s -= kInt4SymZero * a.csum[(m0 + r) * dir_chunks(p.K) + j];  // the codes are q_z + 8
          acc = zt_fma(dz.scales[j * kPanelCols + c], (float)s, acc);
        }
      }
      if (!p.raw32) p.out[(m0 + r) * p.ldo + n0 + c] = epilogue(p.ep, acc, m0 + r, n0 + c);
    }
}

void pack_act_f32_ref(const ActQ& a, uint64_t mp, float* dst) {
  for (uint64_t k = 0; k < a.Kp; ++k)
    for (int r = 0; r < kTileRowsF32; ++r) {
      uint64_t m = mp * kTileRowsF32 + r;
      dst[k * kTileRowsF32 + r] = m < a.M ? (float)a.q[m * a.Kp + k] : 0.0f;
    }
}

// First subset position >= v (the subset is sorted).
static uint64_t subset_lower_bound(const uint32_t* idx, uint64_t n, uint64_t v) {
  return (uint64_t)(std::lower_bound(idx, idx + n, v, [](uint32_t e, uint64_t x) { return (uint64_t)e < x; }) - idx);
}

// The column's subset entries in [lo, hi) relative to lo (masked path); returns their count.
static uint64_t subset_slice(const uint32_t* idx, uint64_t nidx, uint64_t lo, uint64_t hi, uint32_t* rel) {
  uint64_t c = 0;
  for (uint64_t s = subset_lower_bound(idx, nidx, lo); s < nidx && idx[s] < hi; ++s) rel[c++] = (uint32_t)(idx[s] - lo);
  return c;
}

void decode_panel_f32_ref(const F32Plan& p, uint64_t n0, uint64_t k0, uint64_t k1, float* panel, float* zbuf, uint32_t* rel) {
  const uint64_t kc = k1 - k0;
  for (uint64_t c = 0; c < kPanelCols; ++c) {
    uint64_t n = n0 + c;
    if (n >= p.N) {
      for (uint64_t k = 0; k < kc; ++k) panel[k * kPanelCols + c] = 0.0f;
      continue;
    }
    float* col = zbuf + c * kc;
    for (uint64_t k = k0; k < k1; ++k) col[k - k0] = zt_mul(w_scale(p.w, n, k / acc_group(p.w)), (float)w_code(p.w, n, k));
    const uint64_t base = n * p.K + k0, z0 = p.first + base;
    if (p.idx)
      perturb_gather_ref(col, rel, subset_slice(p.idx, p.nidx, base, base + kc, rel), *p.dir, z0, p.alpha);
    else
      perturb_range_ref(col, z0, z0 + kc, *p.dir, p.alpha);
    for (uint64_t k = 0; k < kc; ++k) panel[k * kPanelCols + c] = col[k];
  }
}

void tile_f32_ref(const float* a, const float* panels, int np, uint64_t kc, bool zero, float* c) {
  for (int i = 0; i < np; ++i) {
    const float* panel = panels + i * kKcF32 * kPanelCols;
    float* ci = c + i * kTileRowsF32 * kPanelCols;
    for (int r = 0; r < kTileRowsF32; ++r)
      for (uint64_t j = 0; j < kPanelCols; ++j) {
        float acc = zero ? 0.0f : ci[r * kPanelCols + j];
        for (uint64_t k = 0; k < kc; ++k) acc = zt_fma(a[k * kTileRowsF32 + r], panel[k * kPanelCols + j], acc);
        ci[r * kPanelCols + j] = acc;
      }
  }
}

void sparse_row_ref(float* row, const int8_t* q, const float* t, const uint32_t* n_s, const uint32_t* k_s, uint64_t S) {
  for (uint64_t s = 0; s < S; ++s) row[n_s[s]] = zt_fma(t[s], (float)q[k_s[s]], row[n_s[s]]);
}

// ---- driver ---------------------------------------------------------------------------------

namespace {

struct Kernels {
  bool (*act_quantize_row)(const float*, uint64_t, uint64_t, int8_t*, float*);
  void (*act_int4_extras)(const int8_t*, uint64_t, uint64_t, uint64_t, uint64_t, int32_t*, int8_t*);
  void (*gemv_rows)(const IntPlan&, uint64_t, uint64_t);
  void (*pack_panel)(const IntPlan&, uint64_t, Panel);
  // mr activation rows times panels [0, np) (columns from n0); np <= kMaxPanelsPerTask
  void (*tile_panels)(const IntPlan&, uint64_t, int, const Panel*, int, uint64_t);
  void (*pack_act_f32)(const ActQ&, uint64_t, float*);
  void (*decode_panel_f32)(const F32Plan&, uint64_t, uint64_t, uint64_t, float*, float*, uint32_t*);
  void (*tile_f32)(const float*, const float*, int, uint64_t, bool, float*);
  void (*perturb_gather)(float*, const uint32_t*, size_t, const Direction&, uint64_t, float);
  void (*sparse_row)(float*, const int8_t*, const float*, const uint32_t*, const uint32_t*, uint64_t);
  void (*direction_codes)(int8_t*, uint64_t, uint64_t, const Direction&);
  void (*rademacher_signs)(RngKey, uint64_t, uint64_t, uint8_t*);  // a task's sign table (F32Plan::signs), or null
  bool int8_gsum;  // the int8 kernels need ActQ::gsum (unsigned q + 128 codes)
  uint64_t panels_per_task;  // weight panels a packed-GEMM task takes (the micro-tile's width)
  // largest M the streaming GEMV takes for these weights (it packs nothing)
  uint64_t (*gemv_max_m)(const QTensorView& w, uint64_t G, uint64_t ga);
};

uint64_t gemv_max_m_ref(const QTensorView&, uint64_t, uint64_t) { return kGemvMaxM; }

// The scalar and AVX2 micro-tiles take one panel at a time.
template <void (*Tile)(const IntPlan&, uint64_t, int, const Panel&, uint64_t, uint64_t)>
void tile_each(const IntPlan& p, uint64_t m0, int mr, const Panel* panels, int np, uint64_t n0) {
  for (int i = 0; i < np; ++i) {
    const uint64_t n = n0 + i * kPanelCols;
    Tile(p, m0, mr, panels[i], n, std::min(kPanelCols, p.N - n));
  }
}

const Kernels kRef = {act_quantize_row_ref, act_int4_extras_ref, gemv_rows_ref, pack_panel_ref, tile_each<tile_int_ref>, pack_act_f32_ref,
                      decode_panel_f32_ref, tile_f32_ref, perturb_gather_ref, sparse_row_ref, direction_codes_ref, nullptr, false, 2, gemv_max_m_ref};
const Kernels kAvx2 = {avx2::act_quantize_row, avx2::act_int4_extras, avx2::gemv_rows, avx2::pack_panel, tile_each<avx2::tile_int>,
                       avx2::pack_act_f32, avx2::decode_panel_f32, avx2::tile_f32, avx2::perturb_gather, avx2::sparse_row,
                       avx2::direction_codes, avx2::rademacher_signs, false, 2, gemv_max_m_ref};
const Kernels kAvx512 = {avx512::act_quantize_row, avx2::act_int4_extras, avx512::gemv_rows, avx512::pack_panel, avx512::tile_panels,
                         avx2::pack_act_f32, avx2::decode_panel_f32, avx512::tile_f32, avx2::perturb_gather, avx2::sparse_row,
                         avx512::direction_codes, avx2::rademacher_signs, true, 4, avx512::gemv_max_m};

const Kernels& kernels() { return use_avx512() ? kAvx512 : use_avx2() ? kAvx2 : kRef; }

// Engine-accounted scratch memory, freed on scope exit (exceptions included).
template <class T>
struct Scratch {
  T* p;
  size_t n;
  explicit Scratch(size_t count) : p((T*)host_alloc(count * sizeof(T), MemCategory::Workspace)), n(count) {}
  ~Scratch() { host_free(p, n * sizeof(T), MemCategory::Workspace); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Per-thread scratch for task-local buffers (panels, tiles), reused across tasks and calls: a fresh
// allocation per task would be mmap'ed and page-faulted every time. Arenas above kKeepBytes are
// returned at the end of the task rather than held.
class TaskArena {
 public:
  ~TaskArena() { release(); }
  // Starts a task needing up to `bytes` (64-byte aligned pieces are carved by take()).
  void reset(size_t bytes) {
    if (bytes > cap_) {
      release();
      base_ = (uint8_t*)host_alloc(bytes, MemCategory::Workspace);
      cap_ = bytes;
    }
    used_ = 0;
  }
  template <class T>
  T* take(size_t count) {
    T* p = (T*)(base_ + used_);
    used_ += (count * sizeof(T) + 63) / 64 * 64;
    return count ? p : nullptr;
  }
  void done() {
    if (cap_ > kKeepBytes) release();
  }

 private:
  static constexpr size_t kKeepBytes = 8u << 20;
  void release() {
    if (base_) host_free(base_, cap_, MemCategory::Workspace);
    base_ = nullptr;
    cap_ = 0;
  }
  uint8_t* base_ = nullptr;
  size_t cap_ = 0, used_ = 0;
};
thread_local TaskArena t_arena;

// Bytes of a list of 64-byte aligned pieces.
inline size_t pieces(std::initializer_list<size_t> bytes) {
  size_t n = 0;
  for (size_t b : bytes) n += (b + 63) / 64 * 64;
  return n;
}

constexpr uint64_t kActRowsPerTask = 16;
constexpr uint64_t kSubsetRowsPerTask = 64;  // weight rows per task of a sparse subset's direction gather
constexpr uint64_t kMaxPanelsPerTask = 4;   // Kernels::panels_per_task is at most this
constexpr uint64_t kGemmRowsPerTask = 256;  // activation rows per GEMM task, when the columns alone give too few tasks
constexpr uint64_t kTasksPerThread = 4;     // column blocks per thread that make splitting the rows unnecessary
constexpr uint64_t kF32ColsPerTask = 64;    // 4 panels share each activation read
constexpr uint64_t kMpBlock = 8;            // 6-row activation slices per L2 block of the f32 path
constexpr uint64_t kF32TilePanels = 2;      // panels per f32 micro-tile call

void quantize_acts(const Kernels& kn, const float* x, uint64_t ldx, ActQ& a) {
  std::atomic<bool> bad{false};
  parallel_chunks(a.M, kActRowsPerTask, [&](size_t b, size_t e) {
    for (size_t m = b; m < e; ++m)
      if (!kn.act_quantize_row(x + m * ldx, a.K, a.Kp, a.q + m * a.Kp, a.scale + m)) bad.store(true);
  });
  if (bad.load()) fail(Code::NonFinite, "int8 GEMM: the activations contain NaN or Inf (they cannot be quantized)");
}

// The QuZO direction panel of weight rows [n0, n0 + 16): codes of the rows (one contiguous run of
// the direction) into `rows`, packed like an int8 weight with one scale a_z (pack_panel's layout).
void pack_dir_panel(const Kernels& kn, const IntPlan& p, uint64_t n0, int8_t* rows, Panel dz) {
  const uint64_t nr = std::min(kPanelCols, p.N - n0), n = nr * p.K;
  kn.direction_codes(rows, p.first + n0 * p.K, p.first + (n0 + nr) * p.K, *p.dir);
  for (uint64_t i = 0; i < n; ++i) rows[i] = (int8_t)(rows[i] + kInt4SymZero);  // |q_z| <= 7: nibble range
  float scale = p.dir_scale;
  IntPlan dp{p.a, QTensorView{QFormat::Int8, nr, p.K, (uint8_t*)rows, &scale, nullptr, 0}, p.K, nr, p.K4, kAccChunk, dir_chunks(p.K),
             nullptr, 0, p.ep, nullptr};
  kn.pack_panel(dp, 0, dz);
}

// Integer paths: GEMV for small M, packed GEMM otherwise (always for QuZO probes), as tasks that
// one parallel job runs (run_int), or several products' tasks together (gemm_int_shared).
struct IntRun {
  const Kernels* kn;
  IntPlan p;
  bool gemv;
  uint64_t cols_per_task, nb, mb, rows_per_task, codes, scales, zeros, dscales;

  IntRun(const Kernels& k, const IntPlan& plan) : kn(&k), p(plan) {
    const uint64_t M = p.a->M;
    gemv = M <= kn->gemv_max_m(p.w, p.G, p.ga) && !p.dir;
    cols_per_task = gemv ? stream_rows_per_task(p.N, qt_row_stream_bytes(p.w)) : kn->panels_per_task * kPanelCols;
    nb = (p.N + cols_per_task - 1) / cols_per_task;
    // A task packs its panels for its rows: every row block packs them again (4x at 1024^3 with
    // 256-row blocks, 7 % of the call), so rows are split only when the column blocks are too few to
    // balance the threads. QuZO probes: a task takes every activation row, so each direction code is
    // generated once.
    const bool split = !gemv && nb < kTasksPerThread * (uint64_t)pool_threads();
    rows_per_task = p.dir || !split ? M : kGemmRowsPerTask;
    mb = gemv ? 1 : (M + rows_per_task - 1) / rows_per_task;
    codes = p.K4 * kPanelCols * 4, scales = p.raw32 ? 0 : p.G * kPanelCols;
    zeros = p.w.format == QFormat::Int4 ? p.G * kPanelCols : 0;
    dscales = p.dir ? dir_chunks(p.K) * kPanelCols : 0;
  }
  uint64_t tasks() const { return nb * mb; }
  void run(uint64_t t) const {
    const uint64_t n0 = (t / mb) * cols_per_task;
    if (gemv) return kn->gemv_rows(p, n0, std::min(p.N, n0 + cols_per_task));
    const uint64_t M = p.a->M, m0 = (t % mb) * rows_per_task, m1 = std::min(M, m0 + rows_per_task);
    const uint64_t kPanels = kn->panels_per_task;
    const bool int8 = p.w.format == QFormat::Int8;
    t_arena.reset(kPanels * pieces({codes, int8 ? codes : 0, scales * 4, zeros * 4}) +
                  (p.dir ? kPanels * pieces({codes, dscales * 4}) + pieces({kPanelCols * p.K}) : 0));
    Panel panel[kMaxPanelsPerTask], dpanel[kMaxPanelsPerTask];
    int8_t* dir_rows = p.dir ? t_arena.take<int8_t>(kPanelCols * p.K) : nullptr;
    uint64_t np = 0;
    for (; np < kPanels && n0 + np * kPanelCols < p.N; ++np) {
      panel[np] = Panel{t_arena.take<int8_t>(codes), int8 ? t_arena.take<uint8_t>(codes) : nullptr, t_arena.take<float>(scales),
                        zeros ? t_arena.take<int32_t>(zeros) : nullptr};
      kn->pack_panel(p, n0 + np * kPanelCols, panel[np]);
      if (p.dir) {
        dpanel[np] = Panel{t_arena.take<int8_t>(codes), nullptr, t_arena.take<float>(dscales), nullptr};
        pack_dir_panel(*kn, p, n0 + np * kPanelCols, dir_rows, dpanel[np]);
        panel[np].dir = &dpanel[np];
      }
    }
    for (uint64_t m = m0; m < m1; m += kTileRowsInt)
      kn->tile_panels(p, m, (int)std::min<uint64_t>(kTileRowsInt, m1 - m), panel, (int)np, n0);
    t_arena.done();
  }
};

void run_int(const Kernels& kn, const IntPlan& p) {
  const IntRun r(kn, p);
  parallel_for(r.tasks(), [&](size_t t) { r.run(t); });
}

// Perturbed (or densely masked) weights through the f32 micro-kernel.
void run_f32(const Kernels& kn, const F32Plan& base, const ActQ& a) {
  F32Plan p = base;
  const uint64_t mp = (a.M + kTileRowsF32 - 1) / kTileRowsF32;
  Scratch<float> apack(mp * a.Kp * kTileRowsF32);
  parallel_for(mp, [&](size_t i) { kn.pack_act_f32(a, i, apack.p + i * a.Kp * kTileRowsF32); });
  p.apack = apack.p;
  constexpr uint64_t kPanels = kF32ColsPerTask / kPanelCols;
  const uint64_t nb = (p.N + kF32ColsPerTask - 1) / kF32ColsPerTask;
  const bool signs = kn.rademacher_signs && p.dir && !p.idx && p.dir->dist == kDirRademacher;
  parallel_for(nb, [&](size_t t) {
    const uint64_t n0 = t * kF32ColsPerTask, n1 = std::min(p.N, n0 + kF32ColsPerTask);
    const uint64_t np = std::min<uint64_t>(kPanels, (p.N - n0 + kPanelCols - 1) / kPanelCols);
    const size_t cn = mp * kPanels * kTileRowsF32 * kPanelCols, sb = signs ? rademacher_sign_bytes((n1 - n0) * p.K) : 0;
    t_arena.reset(pieces({cn * 4, kPanels * kKcF32 * kPanelCols * 4, kPanelCols * kKcF32 * 4, kKcF32 * 4, sb}));
    float* c = t_arena.take<float>(cn);
    float* panels = t_arena.take<float>(kPanels * kKcF32 * kPanelCols);
    float* zbuf = t_arena.take<float>(kPanelCols * kKcF32);
    uint32_t* rel = t_arena.take<uint32_t>(kKcF32);
    F32Plan tp = p;  // this task's rows: their Rademacher signs drawn once for every K block
    if (signs) {
      uint8_t* table = t_arena.take<uint8_t>(sb);
      tp.signs_t0 = p.first + n0 * p.K;
      kn.rademacher_signs(dir_key(*p.dir), tp.signs_t0, p.first + n1 * p.K, table);
      tp.signs = table;
    }
    if (p.K == 0) memset(c, 0, cn * sizeof(float));
    for (uint64_t k0 = 0; k0 < p.K; k0 += kKcF32) {
      const uint64_t k1 = std::min(p.K, k0 + kKcF32);
      for (uint64_t i = 0; i < np; ++i)
        kn.decode_panel_f32(tp, n0 + i * kPanelCols, k0, k1, panels + i * kKcF32 * kPanelCols, zbuf, rel);
      // Blocks of kMpBlock 6-row activation slices (48 KB, L2) against kF32TilePanels panels at a
      // time (32 KB, L1); the first K block starts the sums from zero (no clearing pass).
      for (uint64_t r0 = 0; r0 < mp; r0 += kMpBlock)
        for (uint64_t i = 0; i < np; i += kF32TilePanels)
          for (uint64_t r = r0; r < std::min(mp, r0 + kMpBlock); ++r)
            kn.tile_f32(p.apack + r * a.Kp * kTileRowsF32 + k0 * kTileRowsF32, panels + i * kKcF32 * kPanelCols,
                        (int)std::min(kF32TilePanels, np - i), k1 - k0, k0 == 0, c + (r * kPanels + i) * kTileRowsF32 * kPanelCols);
    }
    for (uint64_t m = 0; m < a.M; ++m)
      for (uint64_t i = 0; i < np; ++i) {
        const uint64_t n = n0 + i * kPanelCols;
        epilogue_run(p.ep, c + ((m / kTileRowsF32 * kPanels + i) * kTileRowsF32 + m % kTileRowsF32) * kPanelCols, m, n,
                     std::min(kPanelCols, p.N - n), p.out + m * p.ldo + n);
      }
    t_arena.done();
  });
}

// Small subsets: the integer result plus alpha * z_i * q_x[m, k_i] per subset index. Each output
// row m takes its corrections in index order (row-local: acc and q rows stay in cache).
void run_sparse(const Kernels& kn, IntPlan p, const IntGemm& g, const ActQ& a, float* y, uint64_t ldy) {
  const uint64_t M = a.M, N = p.N, K = p.K, S = g.nidx;
  Scratch<float> acc(M * N), t(S);
  Scratch<uint32_t> ns(S), ks_all(S);
  const Epilogue ep = p.ep;
  p.out = acc.p;
  p.ldo = N;
  p.ep.raw = true;
  run_int(kn, p);
  // t_s = alpha * z(idx_s): z of each weight row's entries gathered (alpha 1) into a zeroed row buffer.
  parallel_chunks(N, kSubsetRowsPerTask, [&](size_t b, size_t e) {
    Scratch<float> z(K);
    Scratch<uint32_t> ks(K);
    memset(z.p, 0, K * sizeof(float));
    for (uint64_t n = b, s = subset_lower_bound(g.idx, S, b * K); n < e; ++n) {
      const uint64_t s0 = s;
      uint64_t c = 0;
      for (; s < S && g.idx[s] < (n + 1) * K; ++s) ks.p[c++] = (uint32_t)(g.idx[s] - n * K);
      kn.perturb_gather(z.p, ks.p, c, *g.dir, g.first + n * K, 1.0f);
      for (uint64_t i = 0; i < c; ++i) {
        t.p[s0 + i] = zt_mul(g.alpha, z.p[ks.p[i]]);
        ns.p[s0 + i] = (uint32_t)n;
        ks_all.p[s0 + i] = ks.p[i];
        z.p[ks.p[i]] = 0.0f;
      }
    }
  });
  parallel_chunks(M, kActRowsPerTask, [&](size_t b, size_t e) {
    for (size_t m = b; m < e; ++m) {
      float* row = acc.p + m * N;
      kn.sparse_row(row, a.q + m * a.Kp, t.p, ns.p, ks_all.p, S);
      for (uint64_t n = 0; n < N; ++n) y[m * ldy + n] = epilogue(ep, row[n], m, n);
    }
  });
}

// Activations quantized once per row, shared by every product reading them.
struct SharedActs {
  Scratch<int8_t> q;
  Scratch<float> sx;
  ActQ a;
  SharedActs(const Kernels& kn, const float* x, uint64_t ldx, uint64_t M, uint64_t K)
      : q(M * round_up(K, kActPad)), sx(M), a{M, K, round_up(K, kActPad), q.p, sx.p, nullptr, nullptr} {
    quantize_acts(kn, x, ldx, a);
  }
};

// One product of gemm_int once its activations are quantized: its accumulation sums, then its path.
// Perturbed (or densely masked) weights take the f32 micro-kernel, index subsets the sparse
// correction, the rest the integer paths (IntRun).
struct IntCall {
  const IntGemm& g;
  ActQ a;  // the shared rows, with this product's sums
  bool grid_probe, int4_gemv, f32, masked;
  Scratch<int32_t> gsum, csum;
  Scratch<int8_t> qeo;
  IntPlan p;

  IntCall(const Kernels& kn, const IntGemm& gm, const ActQ& shared, uint64_t ga, uint64_t G, bool sums)
      : g(gm),
        a(shared),
        // Dense Rademacher and QuZO (<= 4 bits) probes take the integer path (gemm_int8.h step 2', grid_probe_on_int)
        grid_probe(g.dir && !g.idx && grid_probe_on_int(*g.dir)),
        int4_gemv(g.w.format == QFormat::Int4 && g.M <= kn.gemv_max_m(g.w, G, ga) && !grid_probe),
        f32(false),
        masked(g.dir && g.idx && !sparse_correction_pays(g.M, g.w.rows, g.w.cols, g.nidx)),
        gsum(sums ? g.M * G : 0),
        csum(grid_probe ? g.M * dir_chunks(g.w.cols) : 0),
        qeo(int4_gemv ? g.M * a.Kp : 0),
        p{&a, g.w, g.w.cols, g.w.rows, (g.w.cols + 3) / 4, ga, G, g.y, g.ldy, Epilogue{a.scale, g.bias, g.residual, g.ldr, false}, nullptr} {
    const uint64_t M = g.M, K = g.w.cols, Kp = a.Kp;
    if (sums) {
      a.gsum = gsum.p;
      a.qeo = int4_gemv ? qeo.p : nullptr;
      parallel_chunks(M, kActRowsPerTask, [&](size_t b, size_t e) {
        for (size_t m = b; m < e; ++m) kn.act_int4_extras(a.q + m * Kp, K, Kp, ga, G, gsum.p + m * G, int4_gemv ? qeo.p + m * Kp : nullptr);
      });
    }
    // Integer-path QuZO probes: the activation rows' sums per step-2' chunk (the -8 * sum q_x term)
    if (csum.n) {
      a.csum = csum.p;
      parallel_chunks(M, kActRowsPerTask, [&](size_t b, size_t e) {
        for (size_t m = b; m < e; ++m) kn.act_int4_extras(a.q + m * Kp, K, Kp, kAccChunk, dir_chunks(K), csum.p + m * dir_chunks(K), nullptr);
      });
    }
    f32 = g.dir && !grid_probe && (!g.idx || masked);
    if (grid_probe) {
      p.dir = g.dir;
      p.first = g.first;
      p.dir_scale = zt_mul(g.alpha, dir_code_step(*g.dir));
    }
  }
  IntCall(const IntCall&) = delete;
  IntCall& operator=(const IntCall&) = delete;
  bool integer() const { return !f32 && !(g.dir && g.idx); }
  // The f32 and sparse paths (their own parallel jobs).
  void run_other(const Kernels& kn) {
    if (f32) {
      F32Plan fp{&a, g.w, g.w.cols, g.w.rows, a.Kp, g.dir, g.alpha, g.first, masked ? g.idx : nullptr, masked ? g.nidx : 0, nullptr, 0, nullptr, g.y, g.ldy, p.ep};
      run_f32(kn, fp, a);
    } else {
      run_sparse(kn, p, g, a, g.y, g.ldy);
    }
  }
};

}  // namespace

void gemm_int(const IntGemm& g) { gemm_int_shared(&g, 1); }

void gemm_int_shared(const IntGemm* gs, size_t n) {
  if (n == 0) return;
  const IntGemm& g0 = gs[0];
  for (size_t i = 0; i < n; ++i)
    check(gs[i].x == g0.x && gs[i].ldx == g0.ldx && gs[i].M == g0.M && gs[i].w.cols == g0.w.cols, Code::InvalidArgument,
          "gemm_int_shared: every product must read the same activations (pointer, stride, rows and K)");
  bool empty = true;
  for (size_t i = 0; i < n; ++i) empty = empty && gs[i].w.rows == 0;
  if (g0.M == 0 || empty) return;
  const Kernels& kn = kernels();
  const SharedActs acts(kn, g0.x, g0.ldx, g0.M, g0.w.cols);
  std::vector<std::unique_ptr<IntCall>> calls;
  std::vector<IntRun> runs;
  std::vector<uint64_t> tasks;  // of runs[i]
  for (size_t i = 0; i < n; ++i) {
    const IntGemm& g = gs[i];
    if (g.w.rows == 0) continue;
    const uint64_t ga = acc_group(g.w), G = acc_groups(g.w);
    calls.push_back(std::make_unique<IntCall>(kn, g, acts.a, ga, G, g.w.format == QFormat::Int4 || kn.int8_gsum));
    IntCall& c = *calls.back();
    if (!c.integer()) {
      c.run_other(kn);
      continue;
    }
    runs.emplace_back(kn, c.p);
    tasks.push_back(runs.back().tasks());
  }
  parallel_for_groups(tasks, [&](size_t i, uint64_t t) { runs[i].run(t); });
}

void gemm_s8s8s32(const int8_t* am, const int8_t* b, int32_t* c, uint64_t M, uint64_t N, uint64_t K) {
  if (M == 0 || N == 0) return;
  check(K <= kRawMaxK, Code::InvalidArgument, "gemmS8S8S32: K must be at most " + std::to_string(kRawMaxK));
  const Kernels& kn = kernels();
  const uint64_t Kp = round_up(K, kActPad);
  Scratch<int8_t> q(M * Kp);
  parallel_chunks(M, kActRowsPerTask, [&](size_t lo, size_t hi) {
    for (size_t m = lo; m < hi; ++m) {
      memcpy(q.p + m * Kp, am + m * K, K);
      memset(q.p + m * Kp + K, 0, Kp - K);
    }
  });
  ActQ a{M, K, Kp, q.p, nullptr, nullptr, nullptr};
  QTensorView w{QFormat::Int8, N, K, (uint8_t*)b, nullptr, nullptr, K};
  const uint64_t K4 = (K + 3) / 4, ga = std::max<uint64_t>(K4 * 4, 4);
  Scratch<int32_t> gsum(kn.int8_gsum ? M : 0);
  if (gsum.n) {
    a.gsum = gsum.p;
    parallel_chunks(M, kActRowsPerTask, [&](size_t lo, size_t hi) {
      for (size_t m = lo; m < hi; ++m) kn.act_int4_extras(q.p + m * Kp, K, Kp, ga, 1, gsum.p + m, nullptr);
    });
  }
  IntPlan p{&a, w, K, N, K4, ga, 1, nullptr, N, Epilogue{nullptr, nullptr, nullptr, 0, true}, c};
  run_int(kn, p);
}

}  // namespace zt
