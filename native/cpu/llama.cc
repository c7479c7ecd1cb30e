#include "llama.h"

#include <math.h>
#include <string.h>

#include <algorithm>
#include <string>

#include "../common/philox.h"
#include "../common/status.h"
#include "cpu_features.h"
#include "gemm_int8.h"
#include "memory.h"
#include "perturb.h"
#include "threadpool.h"

namespace zt {
namespace {

// The fp32-activation GEMM of linear_view.
GemmArgs float_act_args(const Linear& L, const GemmWeights& w, uint64_t first, const float* x, size_t M, float* y, bool accumulate,
                        const LlamaPerturb* zo) {
  GemmArgs g{};
  g.a = x;
  g.m = M;
  g.w = w;
  g.c = y;
  g.accumulate = accumulate;
  if (zo && zo->on(L.id)) g.p = GemmPerturb{true, zo->of(L.id), zo->alpha, first, false, nullptr, 0};
  return g;
}

// The integer-activation GEMM of linear_view (W8A8, W4A8); dir: the direction when perturbed
// (it must outlive the call).
IntGemm int_act_args(const Linear& L, const GemmWeights& w, uint64_t first, const float* x, size_t M, float* y, bool accumulate,
                     const LlamaPerturb* zo, const Direction& dir) {
  const bool perturb = zo && zo->on(L.id);
  return IntGemm{x, M, w.k, w.q, y, w.n, nullptr, accumulate ? y : nullptr, w.n, perturb ? &dir : nullptr, perturb ? zo->alpha : 0.0f,
                 first, nullptr, 0};
}

// y[M, w.n] (+)= x . w^T for w = L's weights or a view of its rows starting at direction index
// `first` (perturbed on load when zo says so): with linears_of, where every matrix product of the
// model runs.
void linear_view(const Linear& L, const GemmWeights& w, uint64_t first, const float* x, size_t M, float* y, bool accumulate,
                 const LlamaPerturb* zo) {
  if (L.int_act) {
    const Direction dir = zo && zo->on(L.id) ? zo->of(L.id) : Direction{};
    gemm_int(int_act_args(L, w, first, x, M, y, accumulate, zo, dir));
    return;
  }
  gemm(float_act_args(L, w, first, x, M, y, accumulate, zo));
}

void linear(const Linear& L, const float* x, size_t M, float* y, bool accumulate, const LlamaPerturb* zo) {
  linear_view(L, L.w, 0, x, M, y, accumulate, zo);
}

// y_i[M, L_i.out] = x . L_i^T for linears reading one input (q/k/v, gate/up), the bits of linear()
// each: the input is packed (fp32 activations) or quantized (int8 activations) once and the
// products run as one parallel job.
template <size_t N>
void linears_of(const Linear* const (&Ls)[N], const float* x, size_t M, float* const (&ys)[N], const LlamaPerturb* zo) {
  size_t int_act = 0;
  for (const Linear* L : Ls) int_act += L->int_act;
  if (int_act == N) {
    Direction dirs[N];
    IntGemm gs[N];
    for (size_t i = 0; i < N; ++i) {
      dirs[i] = zo && zo->on(Ls[i]->id) ? zo->of(Ls[i]->id) : Direction{};
      gs[i] = int_act_args(*Ls[i], Ls[i]->w, 0, x, M, ys[i], false, zo, dirs[i]);
    }
    return gemm_int_shared(gs, N);
  }
  if (int_act) {  // mixed schemes (per-module overrides)
    for (size_t i = 0; i < N; ++i) linear(*Ls[i], x, M, ys[i], false, zo);
    return;
  }
  GemmArgs gs[N];
  for (size_t i = 0; i < N; ++i) gs[i] = float_act_args(*Ls[i], Ls[i]->w, 0, x, M, ys[i], false, zo);
  gemm_shared_a(gs, N);
}

// y[M] = x[M, in] . W[r]: one output row r of a linear layer (a view of that row, perturbed with the
// direction indices r*in + k of the whole tensor), the same bits as column r of linear(): every
// GEMM path's order per output is independent of N (gemm.h, gemm_int8.h).
void linear_row(const Linear& L, uint64_t r, const float* x, size_t M, float* y, const LlamaPerturb* zo) {
  linear_view(L, gemm_rows_view(L.w, r, 1), r * L.w.k, x, M, y, false, zo);
}

// x[i] = row tokens[i] of the embedding table (decoded if quantized), then + alpha * z over the
// row's element indices when the table is perturbed: exactly the row of the perturbed table.
void embed_rows(float* x, const Linear& E, const int32_t* tokens, size_t N, const LlamaPerturb* zo) {
  const size_t D = E.w.k;
  const bool perturb = zo && zo->on(E.id);
  if (E.w.f32 && !perturb) return embed(x, E.w.w32, D, tokens, N);
  const Direction dir = perturb ? zo->of(E.id) : Direction{};
  auto decode = use_avx2() ? avx2::gemm_decode : gemm_decode_ref;
  auto perturb_row = use_avx2() ? avx2::perturb_range : perturb_range_ref;
  parallel_chunks(N, 16, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      const uint64_t t = (uint64_t)tokens[i];
      float* row = x + i * D;
      if (E.w.f32) memcpy(row, E.w.w32 + t * D, D * sizeof(float));
      else decode(E.w, t, t + 1, 0, D, row, D);
      if (perturb) perturb_row(row, t * D, t * D + D, dir, zo->alpha, 1.0f);
    }
  });
}

constexpr size_t kAlignFloats = 16;  // 64-byte aligned buffers inside the arena
constexpr size_t kHeadChunkBytes = 8u << 20;  // logits computed at most this many bytes at a time

size_t align_up(size_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

// Where each activation lives inside the one arena of a forward (offsets in floats).
struct Plan {
  size_t N = 0, T = 0, R = 0, C = 0, cols = 0;  // cols: logits per head row (vocab or subset)
  int32_t pos0 = 0;  // rotary tables cover positions [pos0, pos0 + P)
  size_t P = 0;
  size_t x, xn, q, k, v, g, u, kv_k, kv_v, kv_mask, rel_pos, cos_t, sin_t, hrows, hlogits, hcol, norms, saved, total;
  std::vector<int32_t> head_rows;  // sorted distinct token rows that need the LM head
};

Plan make_plan(const LlamaConfig& c, const LlamaBatch& b, const KvCache* cache, const LlamaOutputs& o, bool zo, bool save_x) {
  Plan p;
  LlamaBatchShape shape = llama_batch_shape(b, o);
  p.N = shape.N, p.T = shape.T, p.P = shape.P, p.pos0 = shape.pos0;
  p.head_rows = std::move(shape.head_rows);
  p.R = p.head_rows.size();
  p.cols = o.vocab_subset ? o.n_vocab_subset : c.vocab;
  p.C = std::max<size_t>(1, std::min(p.R, kHeadChunkBytes / (4 * p.cols)));

  const size_t D = c.hidden, Q = c.heads * c.head_dim, KV = c.kv_heads * c.head_dim, I = c.inter;
  size_t at = 0;
  auto take = [&](size_t floats) {
    size_t off = at;
    at += align_up(floats);
    return off;
  };
  p.x = take(p.N * D);
  p.xn = take(p.N * D);
  p.q = take(p.N * Q);
  p.k = take(p.N * KV);
  p.v = take(p.N * KV);
  p.g = take(p.N * I);
  p.u = take(p.N * I);
  const size_t kv_layout = cache ? 0 : b.B * c.kv_heads * p.T * c.head_dim;
  p.kv_k = take(kv_layout);
  p.kv_v = take(kv_layout);
  p.kv_mask = take(cache ? 0 : (b.B * p.T + 3) / 4);
  p.rel_pos = take(p.N);
  p.cos_t = take(p.P * c.head_dim / 2);
  p.sin_t = take(p.P * c.head_dim / 2);
  p.hrows = take(p.C * D);
  p.hlogits = take(p.R ? p.C * p.cols : 0);
  p.hcol = take(o.vocab_subset ? p.C : 0);
  p.norms = take(zo ? (2 * c.layers + 1) * align_up(D) : 0);  // perturbed norm vectors of a probe
  p.saved = take(save_x ? p.N * D : 0);  // the residual stream where a probe's two forwards part
  p.total = at;
  return p;
}

struct Arena {
  float* base;
  size_t bytes;
  explicit Arena(size_t floats) : base((float*)host_alloc(floats * 4, MemCategory::Activations)), bytes(floats * 4) {}
  ~Arena() { host_free(base, bytes, MemCategory::Activations); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
};

// Rotates this layer's q and k rows and stores k and v into the KV layout attention reads (keys
// [B][H][hd][cap], values [B][H][cap][hd]) at each sequence's slots: one pass, one pool job.
struct KvStore {
  float *q, *k;  // q null: keys only (the last layer rotates its few query rows itself)
  const float* v;
  const int32_t* rel_pos;
  const float *cos_t, *sin_t;
  float *kl, *vl;
  const int32_t* first_slot;
  size_t Hq, Hkv, hd, cap;
};

void rope_and_store(const KvStore& a, const LlamaBatch& b) {
  auto rot = use_avx2() ? avx2::rope_rows : rope_rows_ref;
  const size_t H = a.Hkv, hd = a.hd, N = (size_t)b.seq_off[b.B];
  parallel_chunks(N, 32, [&](size_t t0, size_t t1) {
    if (a.q) rot(a.q + t0 * a.Hq * hd, t1 - t0, a.Hq * hd, a.Hq, hd, a.rel_pos + t0, a.cos_t, a.sin_t);
    rot(a.k + t0 * H * hd, t1 - t0, H * hd, H, hd, a.rel_pos + t0, a.cos_t, a.sin_t);
    size_t s = (size_t)(std::upper_bound(b.seq_off, b.seq_off + b.B + 1, (int32_t)t0) - b.seq_off) - 1;
    for (size_t t = t0; t < t1; ++t) {
      while ((size_t)b.seq_off[s + 1] <= t) ++s;
      const size_t slot = (size_t)a.first_slot[s] + (t - (size_t)b.seq_off[s]);
      for (size_t h = 0; h < H; ++h) {
        const float* kr = a.k + (t * H + h) * hd;
        float* kt = a.kl + (s * H + h) * hd * a.cap + slot;
        for (size_t d = 0; d < hd; ++d) kt[d * a.cap] = kr[d];
        memcpy(a.vl + ((s * H + h) * a.cap + slot) * hd, a.v + (t * H + h) * hd, hd * sizeof(float));
      }
    }
  });
}

// Rows rows[j] of m [.][cols] moved to row j, in place (rows increasing, so rows[j] >= j and no
// row is overwritten before it is read).
void compact_rows(float* m, size_t cols, const std::vector<int32_t>& rows) {
  for (size_t j = 0; j < rows.size(); ++j)
    if ((size_t)rows[j] != j) memcpy(m + j * cols, m + (size_t)rows[j] * cols, cols * sizeof(float));
}


// One forward in stages over one activation arena: set_norms and embed, then layers [l0, l1), then
// head; a probe runs the layers before its first trainable tensor once and the rest per sign.
class Forward {
 public:
  Forward(const LlamaConfig& c, const LlamaWeights& w, const LlamaBatch& b, KvCache* cache, const LlamaOutputs& o, bool zo,
          bool save_x)
      : c(c), w(w), b(b), cache(cache), p(make_plan(c, b, cache, o, zo, save_x)), arena(p.total), A(arena.base),
        N(p.N), D(c.hidden), hd(c.head_dim), Hq(c.heads), Hkv(c.kv_heads), I(c.inter), V(c.vocab), x(A + p.x), xn(A + p.xn),
        q(A + p.q), k(A + p.k), v(A + p.v), g(A + p.g), u(A + p.u), norm_of(2 * c.layers + 1), zero_start(b.B, 0),
        start(cache ? cache->past : zero_start.data()), x_row(p.head_rows) {
    // Rotary tables only for the positions present (decoding needs one row, not the whole context).
    rel_pos = reinterpret_cast<int32_t*>(A + p.rel_pos);
    for (size_t i = 0; i < N; ++i) rel_pos[i] = b.positions[i] - p.pos0;
    rope_tables(A + p.cos_t, A + p.sin_t, p.pos0, p.P, hd, c.rope);

    // The KV layout attention reads: the cache, or this forward's own [B][Hkv][T][hd] buffers.
    cap = cache ? cache->cap : p.T;
    uint8_t* kmask = cache ? cache->mask : reinterpret_cast<uint8_t*>(A + p.kv_mask);
    for (size_t s = 0; s < b.B; ++s)
      for (int32_t i = b.seq_off[s]; i < b.seq_off[s + 1]; ++i)
        kmask[s * cap + (size_t)start[s] + (size_t)(i - b.seq_off[s])] = b.key_mask ? (b.key_mask[i] != 0) : 1;
    at.out = q;  // in place: each (row, head) is read and then written by one task only
    at.q = q;
    at.q_off = b.seq_off;
    at.q_start = start;
    at.kmask = kmask;
    at.B = b.B;
    at.Hq = Hq;
    at.Hkv = Hkv;
    at.hd = hd;
    at.cap = cap;
    at.ld_q = at.ld_out = Hq * hd;
    at.scale = (float)(1.0 / sqrt((double)hd));
    // The last layer finishes only the head rows' spans (last_rows): the same bits as finishing every
    // row, ~1/layers of a forward saved for last-position logits (classification, probes, prompts).
    if (c.layers > 0 && p.R < N) last = last_rows(b, p.head_rows, start);
    for (int32_t r : last.rows) last.rel_pos.push_back(rel_pos[r]);
  }

  // Norm vectors as the layers from l0 and the head read them: the weights, or perturbed copies.
  void set_norms(size_t l0, const LlamaPerturb* zo) {
    for (size_t j = 2 * l0; j < norm_of.size(); ++j) {
      const NormVec& nv = j == 2 * c.layers ? w.norm : (j % 2 ? w.layers[j / 2].mlp_norm : w.layers[j / 2].attn_norm);
      norm_of[j] = nv.w;
      if (!zo || !zo->on(nv.id)) continue;
      float* copy = A + p.norms + j * align_up(D);
      memcpy(copy, nv.w, D * sizeof(float));
      (use_avx2() ? avx2::perturb_range : perturb_range_ref)(copy, 0, D, zo->of(nv.id), zo->alpha, 1.0f);
      norm_of[j] = copy;
    }
  }

  void embed(const LlamaPerturb* zo) { embed_rows(x, w.embed, b.tokens, N, zo); }

  void layers(size_t l0, size_t l1, const LlamaPerturb* zo) {
    for (size_t l = l0; l < l1; ++l) {
      const LlamaLayer& L = w.layers[l];
      const bool pruned = l + 1 == c.layers && last.on;
      rmsnorm(xn, x, norm_of[2 * l], N, D, c.eps);
      float* kl = cache ? cache->k + l * b.B * Hkv * cap * hd : A + p.kv_k;
      float* vl = cache ? cache->v + l * b.B * Hkv * cap * hd : A + p.kv_v;
      if (!pruned) {
        linears_of({&L.q, &L.k, &L.v}, xn, N, {q, k, v}, zo);
        rope_and_store(KvStore{q, k, v, rel_pos, A + p.cos_t, A + p.sin_t, kl, vl, start, Hq, Hkv, hd, cap}, b);
      } else {
        // Keys and values of every row, queries of the span rows only (same bits per row: the
        // spans take the batch's GEMM path, and linears_of gives each product linear()'s bits).
        linears_of({&L.k, &L.v}, xn, N, {k, v}, zo);
        rope_and_store(KvStore{nullptr, k, v, rel_pos, A + p.cos_t, A + p.sin_t, kl, vl, start, Hq, Hkv, hd, cap}, b);
        if (last.rows.empty()) break;
        compact_rows(xn, D, last.rows);
        linear(L.q, xn, last.rows.size(), q, false, zo);
        (use_avx2() ? avx2::rope_rows : rope_rows_ref)(q, last.rows.size(), Hq * hd, Hq, hd, last.rel_pos.data(), A + p.cos_t,
                                                       A + p.sin_t);
      }
      at.k = kl;
      at.v = vl;
      size_t M = N;
      AttnArgs al = at;
      if (pruned) {
        compact_rows(x, D, last.rows);
        al.q_off = last.off.data();
        al.q_start = last.start.data();
        M = last.rows.size();
        for (size_t j = 0; j < x_row.size(); ++j)
          x_row[j] = (int32_t)(std::lower_bound(last.rows.begin(), last.rows.end(), p.head_rows[j]) - last.rows.begin());
      }
      attention(al);
      linear(L.o, q, M, x, true, zo);  // residual
      rmsnorm(xn, x, norm_of[2 * l + 1], M, D, c.eps);
      linears_of({&L.gate, &L.up}, xn, M, {g, u}, zo);
      swiglu(g, g, u, M * I);
      linear(L.down, g, M, x, true, zo);  // residual
    }
  }

  void save_x() { memcpy(A + p.saved, x, N * D * sizeof(float)); }
  void restore_x() { memcpy(x, A + p.saved, N * D * sizeof(float)); }

  void head(LlamaOutputs& o, const LlamaPerturb* zo) {
    // LM head on the rows that need it, a chunk at a time.
    if (o.logprobs)
      for (size_t i = 0; i < N; ++i) o.logprobs[i] = __builtin_nan("");
    std::vector<std::pair<int32_t, size_t>> want;  // (row, index in logits output), sorted by row
    for (size_t j = 0; j < o.n_logit_rows; ++j) want.push_back({o.logit_rows[j], j});
    std::sort(want.begin(), want.end());
    size_t wi = 0;
    float* hrows = A + p.hrows;
    float* hl = A + p.hlogits;
    std::vector<int32_t> tg(p.C);
    std::vector<double> lp(p.C);
    for (size_t c0 = 0; c0 < p.R; c0 += p.C) {
      const size_t n = std::min(p.C, p.R - c0);
      for (size_t j = 0; j < n; ++j) memcpy(hrows + j * D, x + (size_t)x_row[c0 + j] * D, D * sizeof(float));
      rmsnorm(hrows, hrows, norm_of[2 * c.layers], n, D, c.eps);
      if (o.vocab_subset) {
        float* col = A + p.hcol;
        for (size_t s = 0; s < o.n_vocab_subset; ++s) {
          linear_row(w.lm_head, (uint64_t)o.vocab_subset[s], hrows, n, col, zo);
          for (size_t j = 0; j < n; ++j) hl[j * p.cols + s] = col[j];
        }
      } else {
        linear(w.lm_head, hrows, n, hl, false, zo);
      }
      if (o.targets) {
        for (size_t j = 0; j < n; ++j) tg[j] = o.targets[p.head_rows[c0 + j]];
        log_probs(hl, n, V, V, tg.data(), lp.data());
        for (size_t j = 0; j < n; ++j)
          if (tg[j] >= 0) {
            o.logprobs[p.head_rows[c0 + j]] = lp[j];
            o.logprob_sum += lp[j];
            o.count++;
          }
      }
      for (size_t j = 0; j < n; ++j) {
        const int32_t row = p.head_rows[c0 + j];
        while (wi < want.size() && want[wi].first == row) memcpy(o.logits + want[wi++].second * p.cols, hl + j * p.cols, p.cols * sizeof(float));
      }
      if (o.next)
        for (size_t s = 0; s < b.B; ++s) {
          const int32_t first = b.seq_off[s], end = b.seq_off[s + 1];
          if (end == first || (size_t)(end - 1) < (size_t)p.head_rows[c0] || (size_t)(end - 1) > (size_t)p.head_rows[c0 + n - 1]) continue;
          const size_t j = (size_t)(std::lower_bound(p.head_rows.begin() + c0, p.head_rows.begin() + c0 + n, end - 1) - p.head_rows.begin()) - c0;
          const uint64_t slot = (uint64_t)start[s] + (uint64_t)(end - first);
          const float uu = uniform_open(random_word(RngKey{o.seed, (uint32_t)s, kPurposeUniform}, slot));
          const int64_t id = sample_row(hl + j * V, V, o.sample, uu);
          if (id < 0) fail(Code::NonFinite, "llama forward: the logits of sequence " + std::to_string(s) + " are all NaN");
          o.next[s] = (int32_t)id;
        }
    }
  }

 private:
  const LlamaConfig& c;
  const LlamaWeights& w;
  const LlamaBatch& b;
  KvCache* cache;
  const Plan p;
  Arena arena;
  float* A;
  const size_t N, D, hd, Hq, Hkv, I, V;
  float *x, *xn, *q, *k, *v, *g, *u;
  std::vector<const float*> norm_of;
  std::vector<int32_t> zero_start;
  const int32_t* start;
  int32_t* rel_pos = nullptr;
  size_t cap = 0;
  AttnArgs at{};
  LastRows last;
  std::vector<int32_t> x_row;  // the row of x holding each head row's final state
};

}  // namespace

void llama_forward(const LlamaConfig& c, const LlamaWeights& w, const LlamaBatch& b, KvCache* cache, LlamaOutputs& o,
                   const LlamaPerturb* zo) {
  Forward f(c, w, b, cache, o, zo != nullptr, false);
  f.set_norms(0, zo);
  f.embed(zo);
  f.layers(0, c.layers, zo);
  f.head(o, zo);
}

void llama_probe(const LlamaConfig& c, const LlamaWeights& w, const LlamaBatch& b, const LlamaPerturb& zo, const std::vector<uint64_t>& seeds,
                 LlamaOutputs* plus, LlamaOutputs* minus, const std::function<void(uint64_t, float)>& in_place) {
  if (seeds.empty()) return;
  const size_t l0 = first_trainable_layer(c, w, zo);
  // Layers before l0 are computed once; the residual stream entering l0 is kept for every later
  // forward (from the last layer on the head only reads it).
  const bool save = l0 > 0 && l0 < c.layers;
  Forward f(c, w, b, nullptr, plus[0], !in_place, save);
  auto suffix = [&](LlamaOutputs& o, const LlamaPerturb* z, bool first) {
    if (save && !first) f.restore_x();
    f.set_norms(l0, z);
    if (l0 == 0) f.embed(z);
    f.layers(l0, c.layers, z);
    f.head(o, z);
  };
  if (l0 > 0) {  // the shared layers (their norms are not trainable either)
    f.set_norms(0, nullptr);
    f.embed(nullptr);
    f.layers(0, l0, nullptr);
    if (save) f.save_x();
  }
  const float eps = zo.alpha;
  for (size_t q = 0; q < seeds.size(); ++q) {
    LlamaPerturb zp = zo, zm = zo;
    zp.dir.seed = zm.dir.seed = seeds[q];
    zm.alpha = -eps;
    if (!in_place) {
      suffix(plus[q], &zp, q == 0);
      suffix(minus[q], &zm, false);
      continue;
    }
    // MeZO: theta += eps z, forward, theta -= 2 eps z, forward, theta += eps z.
    float held = 0.0f;  // the offset the weights hold: a failure (OOM: validation ran before) undoes it
    try {
      in_place(seeds[q], eps), held = eps;
      suffix(plus[q], nullptr, q == 0);
      in_place(seeds[q], -2 * eps), held = -eps;
      suffix(minus[q], nullptr, false);
      in_place(seeds[q], eps), held = 0.0f;
    } catch (...) {
      if (held != 0.0f) in_place(seeds[q], -held);
      throw;
    }
  }
}

}  // namespace zt
