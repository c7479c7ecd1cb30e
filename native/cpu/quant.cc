// Scalar reference segment kernels and the threaded drivers of quant.h.
#include "quant.h"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <string>
#include <vector>

#include "../common/status.h"
#include "cpu_features.h"
#include "threadpool.h"

namespace zt {

namespace {

// f(group index, ca, cb) for the runs of columns [c0, c1) of row r that share one scale.
template <class F>
void for_groups(const QTensorView& q, uint64_t r, uint64_t c0, uint64_t c1, F&& f) {
  if (q.group == 0 || q.group >= q.cols) {
    if (c0 < c1) f(qt_scale_index(q, r, c0), c0, c1);
    return;
  }
  for (uint64_t ca = c0; ca < c1;) {
    uint64_t cb = std::min((ca / q.group + 1) * q.group, c1);
    f(qt_scale_index(q, r, ca), ca, cb);
    ca = cb;
  }
}

}  // namespace

// --- scalar reference kernels --------------------------------------------------------------------

QStats qstats_range_ref(const float* x, size_t n) {
  QStats s = qstats_empty();
  for (size_t k = 0; k < n; ++k) qstats_add(&s, x[k]);
  return s;
}

bool quantize_seg_ref(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) {
  const QTensorView& q = j.q;
  const uint64_t base = r * q.cols;
  const float* x = j.x + base;
  uint8_t* row = qt_row(q, r);
  bool finite = true;
  QGroup g{};
  for_groups(q, r, c0, c1, [&](uint64_t gi, uint64_t ca, uint64_t cb) {
    if (j.group_scales) {  // segments hold whole groups
      QStats st = qstats_range_ref(x + ca, cb - ca);
      finite = finite && qstats_finite(st);
      q_group_from_stats(q.format, st, j.asym, false, &q.scales[gi], j.asym ? &q.zeros[gi] : nullptr);
    }
    g = qt_group(q, gi);
    for (uint64_t c = ca; c < cb; ++c) {
      uint32_t w = j.stochastic ? random_word(j.sr_key, base + c) : 0;
      q_store_code(q.format, row, c, q_encode(q.format, x[c], g, j.stochastic, w));
    }
  });
  if (qformat_is_4bit(q.format) && (q.cols & 1) && c1 == q.cols && c1 > c0) q_store_code(q.format, row, q.cols, q_zero_code(q.format, g));
  return finite;
}

void dequantize_seg_ref(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) {
  const QTensorView& q = j.q;
  const uint8_t* row = qt_row(q, r);
  float* y = j.y + r * q.cols;
  for_groups(q, r, c0, c1, [&](uint64_t gi, uint64_t ca, uint64_t cb) {
    QGroup g = qt_group(q, gi);
    for (uint64_t c = ca; c < cb; ++c) y[c] = q_decode(q.format, q_load_code(q.format, row, c), g);
  });
}

void update_elems_ref(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1, const float* z, const uint32_t* words) {
  const QTensorView& q = j.q;
  uint8_t* row = qt_row(q, r);
  for_groups(q, r, c0, c1, [&](uint64_t gi, uint64_t ca, uint64_t cb) {
    QGroup g = qt_group(q, gi);
    float factor = q_update_factor(q.format, j.alpha, g);
    for (uint64_t c = ca; c < cb; ++c) {
      float d = zt_mul(z[c - c0], factor);
      q_store_code(q.format, row, c, q_update(q.format, q_load_code(q.format, row, c), g, d, words[c - c0]));
    }
  });
}

void update_seg_ref(const QuantJob& j, uint64_t r, uint64_t c0, uint64_t c1) {
  const uint64_t base = r * j.q.cols;
  for (uint64_t c = c0; c < c1;) {  // z and SR words in pieces of 256 (a stack buffer)
    const uint64_t e = c1 - c < 256 ? c1 : c + 256;
    float z[256];
    uint32_t w[256];
    for (uint64_t k = c; k < e; ++k) {
      z[k - c] = direction_at(j.dir, base + k);
      w[k - c] = random_word(j.sr_key, base + k);
    }
    update_elems_ref(j, r, c, e, z, w);
    c = e;
  }
}

// --- drivers -------------------------------------------------------------------------------------

namespace {

constexpr uint64_t kSeg = 1 << 16;  // elements per task (a multiple of 256)
constexpr uint64_t kUpdateSeg = 1 << 13;  // the quantized update's (see quant_update)
constexpr uint64_t kStreamBytes = 32ull << 20;  // outputs from this size on bypass the caches

// Tasks over [rows, cols]: long rows are cut into column blocks of kSeg, short rows batched.
struct SegPlan {
  uint64_t rows = 0, cols = 0, blocks = 1, rows_per_task = 1, seg = kSeg;
  size_t tasks = 0;
};

// seg: elements per task (a multiple of 256). The split depends on the shape only.
SegPlan seg_plan(uint64_t rows, uint64_t cols, uint64_t seg = kSeg) {
  SegPlan p;
  p.rows = rows;
  p.cols = cols;
  p.seg = seg;
  if (rows == 0 || cols == 0) return p;
  if (cols > seg) {
    p.blocks = (cols + seg - 1) / seg;
    p.tasks = rows * p.blocks;
  } else {
    p.rows_per_task = seg / cols;
    p.tasks = (rows + p.rows_per_task - 1) / p.rows_per_task;
  }
  return p;
}

// f(r, c0, c1, segment index) for every segment; segment index = r * blocks + column block.
template <class F>
void run_segments(const SegPlan& p, F&& f) {
  parallel_for(p.tasks, [&](size_t t) {
    if (p.blocks > 1) {
      uint64_t r = t / p.blocks, b = t % p.blocks;
      f(r, b * p.seg, std::min((b + 1) * p.seg, p.cols), t);
    } else {
      uint64_t r0 = t * p.rows_per_task, r1 = std::min(r0 + p.rows_per_task, p.rows);
      for (uint64_t r = r0; r < r1; ++r) f(r, (uint64_t)0, p.cols, (size_t)r);
    }
  });
}

QStats stats_range(const float* x, size_t n) { return use_avx2() ? avx2::qstats_range(x, n) : qstats_range_ref(x, n); }

// Statistics of the whole of x [n] (per-chunk partials merged in chunk order).
QStats stats_all(const float* x, uint64_t n) {
  size_t chunks = (size_t)((n + kSeg - 1) / kSeg);
  std::vector<QStats> part(chunks);
  parallel_chunks(n, kSeg, [&](size_t b, size_t e) { part[b / kSeg] = stats_range(x + b, e - b); });
  QStats s = qstats_empty();
  for (const QStats& p : part) s = qstats_merge(s, p);
  return s;
}

void check_alpha(float alpha) { check(std::isfinite(alpha), Code::NonFinite, "alpha must be finite"); }

}  // namespace

void check_scales(const QTensorView& q) {
  if (!qformat_has_scales(q.format)) return;
  const uint64_t n = qt_scale_count(q);
  std::atomic<uint64_t> bad{~(uint64_t)0};
  parallel_chunks(n, kSeg, [&](size_t b, size_t e) {
    // Branch-free pass first (it vectorizes): every forward checks all of its weights' scales, and
    // a per-element branch here cost 16 % of a 7B-shaped W4A8 layer's decode time. Only a chunk
    // with a bad entry is scanned again for its first one.
    unsigned all_ok = 1;
    for (size_t k = b; k < e; ++k) {
      const float s = q.scales[k];
      all_ok &= (unsigned)(s == 0.0f) | ((unsigned)(s >= kMinScale) & (unsigned)(s <= 3.4028234663852886e38f));
    }
    if (q.zeros)
      for (size_t k = b; k < e; ++k) all_ok &= (unsigned)(q.zeros[k] <= 15);
    if (all_ok) return;
    for (size_t k = b; k < e; ++k) {
      float s = q.scales[k];
      bool ok = scale_valid(s);
      if (q.zeros && q.zeros[k] > 15) ok = false;
      if (!ok) {
        uint64_t cur = bad.load();
        while (k < cur && !bad.compare_exchange_weak(cur, k)) {
        }
        return;
      }
    }
  });
  uint64_t k = bad.load();
  if (k == ~(uint64_t)0) return;
  float s = q.scales[k];
  std::string at = "scale " + std::to_string(k);
  if (!std::isfinite(s)) fail(Code::NonFinite, at + " is not finite");
  if (q.zeros && q.zeros[k] > 15) fail(Code::InvalidArgument, "zero-point " + std::to_string(k) + " exceeds 15");
  fail(Code::InvalidArgument, at + " = " + std::to_string(s) + " must be 0 or in [2^-126, FLT_MAX] (1/scale must be finite)");
}

void quantize(const QTensorView& q, const float* x, ScaleMode mode, bool stochastic, uint64_t seed, uint32_t stream,
              float* fake_out) {
  const uint64_t n = q.rows * q.cols;
  QuantJob j{};
  j.q = q;
  j.x = x;
  j.stochastic = stochastic;
  j.asym = q.zeros != nullptr;
  j.sr_key = RngKey{seed, stream, kPurposeSrQuantize};
  const SegPlan plan = seg_plan(q.rows, q.cols);

  if (mode == ScaleMode::Keep) {
    check_scales(q);
  } else if (mode == ScaleMode::One) {
    check(q.group == 0 && q.zeros == nullptr, Code::InvalidArgument, "scale-free quantization needs one scale and no zero-points");
    if (q.scales) q.scales[0] = 1.0f;
  } else if (qformat_has_scales(q.format)) {
    if (q.group == 0) {
      QStats s = stats_all(x, n);
      check(qstats_finite(s), Code::NonFinite, "quantize: input holds NaN or Inf");
      q_group_from_stats(q.format, s, j.asym, false, &q.scales[0], j.asym ? &q.zeros[0] : nullptr);
    } else if (q.group == q.cols && q.cols > kSeg) {  // per row, rows cut into several segments
      std::vector<QStats> part(plan.tasks);
      run_segments(plan, [&](uint64_t r, uint64_t c0, uint64_t c1, size_t t) {
        part[t] = stats_range(x + r * q.cols + c0, c1 - c0);
      });
      for (uint64_t r = 0; r < q.rows; ++r) {
        QStats s = qstats_empty();
        for (uint64_t b = 0; b < plan.blocks; ++b) s = qstats_merge(s, part[r * plan.blocks + b]);
        check(qstats_finite(s), Code::NonFinite, "quantize: input holds NaN or Inf (row " + std::to_string(r) + ")");
        q_group_from_stats(q.format, s, j.asym, false, &q.scales[r], j.asym ? &q.zeros[r] : nullptr);
      }
    } else {  // groups (or whole short rows) lie inside one segment: scales computed in the same pass
      j.group_scales = true;
    }
  }
  // Integer grids cannot hold NaN/Inf: with fixed scales, check before writing any code.
  if (!j.group_scales && mode != ScaleMode::FromData && qformat_needs_finite(q.format))
    check(qstats_finite(stats_all(x, n)), Code::NonFinite, "quantize: input holds NaN or Inf");

  auto kernel = use_avx2() ? avx2::quantize_seg : quantize_seg_ref;
  std::atomic<bool> finite{true};
  run_segments(plan, [&](uint64_t r, uint64_t c0, uint64_t c1, size_t) {
    if (!kernel(j, r, c0, c1)) finite = false;
  });
  check(finite.load(), Code::NonFinite, "quantize: input holds NaN or Inf");
  // Fake quantization writes the caller's output only once the codes are known to be valid.
  if (fake_out) dequantize(q, fake_out);
}

void dequantize(const QTensorView& q, float* y) {
  check_scales(q);
  QuantJob j{};
  j.q = q;
  j.y = y;
  j.stream_out = q.rows * q.cols * sizeof(float) >= kStreamBytes;
  auto kernel = use_avx2() ? avx2::dequantize_seg : dequantize_seg_ref;
  run_segments(seg_plan(q.rows, q.cols), [&](uint64_t r, uint64_t c0, uint64_t c1, size_t) { kernel(j, r, c0, c1); });
}

namespace {

// Scales are valid and every group's update factor alpha / scale is finite.
void check_update(const QTensorView& q, float alpha) {
  check_alpha(alpha);
  check_scales(q);
  if (!qformat_has_scales(q.format)) return;
  // |alpha * (1 / s)| is largest at the smallest nonzero scale (correctly rounded 1/s is monotone).
  const uint64_t n = qt_scale_count(q);
  float smin = 0.0f;
  for (uint64_t k = 0; k < n; ++k)
    if (q.scales[k] > 0.0f && (smin == 0.0f || q.scales[k] < smin)) smin = q.scales[k];
  if (!std::isfinite(zt_mul(alpha, inv_scale_for(smin))))
    fail(Code::InvalidArgument, "alpha / scale overflows f32 (smallest scale " + std::to_string(smin) + "): alpha is too large for this grid");
}

QuantJob update_job(const QTensorView& q, float alpha, const Direction& d) {
  QuantJob j{};
  j.q = q;
  j.alpha = alpha;
  j.dir = d;
  j.sr_key = RngKey{d.seed, d.stream, kPurposeSrWeight};
  return j;
}

}  // namespace

void quant_update(const QTensorView& q, float alpha, const Direction& d) {
  const QuantUpdateSpan one{q, d};
  quant_update_many(&one, 1, alpha);
}

void quant_update_many(const QuantUpdateSpan* spans, size_t count, float alpha) {
  std::vector<QuantJob> jobs;
  std::vector<SegPlan> plans;
  std::vector<uint64_t> tasks;
  for (size_t s = 0; s < count; ++s) {  // every tensor checked before any is written
    check_update(spans[s].q, alpha);
    jobs.push_back(update_job(spans[s].q, alpha, spans[s].d));
    // Update segments are 8192 elements (~30 us of work): a 256 x 256 projection is 8 tasks rather
    // than the one 65536-element task that left the second core idle during every small tensor.
    plans.push_back(seg_plan(spans[s].q.rows, spans[s].q.cols, kUpdateSeg));
    tasks.push_back(plans.back().tasks);
  }
  // A task's rows go to the kernel together (its cursors then generate z once for all of them).
  parallel_for_groups(tasks, [&](size_t s, uint64_t t) {
    const SegPlan& p = plans[s];
    uint64_t r0, r1, c0 = 0, c1 = p.cols;
    if (p.blocks > 1) {
      r0 = t / p.blocks, r1 = r0 + 1, c0 = (t % p.blocks) * p.seg, c1 = std::min(c0 + p.seg, p.cols);
    } else {
      r0 = t * p.rows_per_task, r1 = std::min(r0 + p.rows_per_task, p.rows);
    }
    if (use_avx2()) {
      avx2::update_rows(jobs[s], r0, r1, c0, c1);
    } else {
      for (uint64_t r = r0; r < r1; ++r) update_seg_ref(jobs[s], r, c0, c1);
    }
  });
}

void quant_update_indices(const QTensorView& q, const uint32_t* idx, size_t n, float alpha, const Direction& d) {
  const uint64_t size = q.rows * q.cols;
  // Validate every index before writing: in range, and no repeats (sorted order is checked in
  // one pass; other orders are sorted in a copy).
  bool sorted = true;
  for (size_t k = 0; k < n; ++k) {
    if (idx[k] >= size)
      fail(Code::OutOfRange, "index " + std::to_string(idx[k]) + " (position " + std::to_string(k) + ") is outside the " +
                                 std::to_string(size) + "-element tensor");
    if (k && idx[k] <= idx[k - 1]) sorted = false;
  }
  std::vector<uint32_t> copy;
  if (!sorted) {
    copy.assign(idx, idx + n);
    std::sort(copy.begin(), copy.end());
    for (size_t k = 1; k < n; ++k)
      check(copy[k] != copy[k - 1], Code::InvalidArgument, "index " + std::to_string(copy[k]) + " is listed twice");
    idx = copy.data();
  }
  check_update(q, alpha);
  QuantJob j = update_job(q, alpha, d);
  // Sorted, so two indices sharing a 4-bit byte are neighbours: a task that would split such a
  // pair takes both (it ends one later, the next starts one later).
  const bool nib = qformat_is_4bit(q.format);
  auto same_byte = [&](uint32_t a, uint32_t b) { return nib && a / q.cols == b / q.cols && (a % q.cols) / 2 == (b % q.cols) / 2; };
  parallel_chunks(n, 4096, [&](size_t b, size_t e) {
    if (b > 0 && same_byte(idx[b - 1], idx[b])) ++b;
    if (e < n && same_byte(idx[e - 1], idx[e])) ++e;
    for (size_t k = b; k < e; ++k) update_seg_ref(j, idx[k] / q.cols, idx[k] % q.cols, idx[k] % q.cols + 1);
  });
}

}  // namespace zt
