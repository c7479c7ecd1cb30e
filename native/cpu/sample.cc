#include "sample.h"

#include <math.h>

#include <algorithm>
#include <vector>

namespace zt {

static constexpr float kNegInf = -__builtin_inff();

int64_t sample_ranked(const float* logits, size_t n, const SampleParams& p, float u, int64_t best) {
  if (best < 0 || !(p.temperature > 0)) return best;
  struct Cand {
    float logit;
    uint32_t id;
  };
  const float mx = logits[best];
  if (!(mx > kNegInf && mx < -kNegInf)) return best;  // infinite logits: the distribution is degenerate
  std::vector<Cand> c;
  c.reserve(n);
  for (size_t i = 0; i < n; ++i)
    if (logits[i] == logits[i]) c.push_back({logits[i], (uint32_t)i});
  auto before = [](const Cand& x, const Cand& y) { return x.logit > y.logit || (x.logit == y.logit && x.id < y.id); };
  const bool top_k = p.top_k > 0 && p.top_k < c.size(), top_p = p.top_p < 1;
  if (top_k) {
    std::nth_element(c.begin(), c.begin() + (p.top_k - 1), c.end(), before);
    c.resize(p.top_k);
  }
  if (top_k || top_p) std::sort(c.begin(), c.end(), before);
  // Probabilities relative to the largest logit, in double.
  std::vector<double> w(c.size());
  double total = 0;
  for (size_t i = 0; i < c.size(); ++i) total += (w[i] = exp(((double)c[i].logit - (double)mx) / (double)p.temperature));
  size_t keep = c.size();
  if (top_p) {
    double before_mass = 0, limit = (double)p.top_p * total;
    keep = 0;
    while (keep < c.size() && (keep == 0 || before_mass < limit)) before_mass += w[keep++];
    total = before_mass;
  }
  double target = (double)u * total, cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += w[i];
    if (cum > target) return c[i].id;
  }
  return c[keep - 1].id;
}

}  // namespace zt
