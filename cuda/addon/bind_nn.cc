// Transformer ops on the GPU (cuda/kernels/nn.h) with the CPU addon's arguments (validated by the
// same code, native/addon/nn_args.cc; lists in native/addon/bind_nn.cc):
//   rmsNorm, rope, attention, swiglu, embedding, argmax -> { kernelMs }
//   logProbs -> { sum, count, kernelMs }
// Each also as `<op>Emulated` (the fast kernel's per-lane code on the host, no GPU; returns
// nothing, logProbs { sum, count }), and rmsNorm, attention, logProbs and argmax as `<op>Reference`
// (the plain one-thread-per-row kernel on the GPU).
#include <memory>
#include <vector>

#include "../../native/addon/napi_util.h"
#include "../../native/addon/nn_args.h"
#include "../kernels/nn.h"
#include "bindings.h"

namespace zt {
namespace cuda {
namespace {

// A job running f() (which returns the kernel milliseconds): { kernelMs } on the GPU, nothing when
// emulated.
template <Impl I, class F>
Job timed(F f) {
  if (I == Impl::Emulated) return {[=] { f(); }, nullptr};
  auto ms = std::make_shared<float>(0.0f);
  return {[=] { *ms = f(); },
          [ms](Napi::Env env) {
            Napi::Object r = Napi::Object::New(env);
            r.Set("kernelMs", *ms);
            return r;
          }};
}

template <Impl I>
Job parse_rmsnorm(Args& a) {
  RmsNormCall c = rmsnorm_call(a);
  return timed<I>([=] { return rmsnorm_host(I, c.out, c.x, c.w, c.rows, c.dim, c.eps); });
}

template <Impl I>
Job parse_rope(Args& a) {
  RopeCall c = rope_call(a);
  return timed<I>([=] { return rope_host(I, c.x, c.rows, c.heads, c.hd, c.pos, c.min_pos, c.max_pos, c.p); });
}

template <Impl I>
Job parse_attention(Args& a) {
  AttnArgs at = attention_call(a);
  return timed<I>([=] { return attention_host(I, at); });
}

template <Impl I>
Job parse_swiglu(Args& a) {
  SwigluCall c = swiglu_call(a);
  return timed<I>([=] { return swiglu_host(I, c.out, c.gate, c.up, c.n); });
}

template <Impl I>
Job parse_embedding(Args& a) {
  EmbeddingCall c = embedding_call(a);
  return timed<I>([=] { return embedding_host(I, c.out, c.table, c.vocab, c.dim, c.ids, c.n); });
}

// The loss sums the selected rows on the host in row order, as the CPU op does.
template <Impl I>
Job parse_logprobs(Args& a) {
  LogProbsCall c = log_probs_call(a);
  struct Result {
    double sum = 0;
    uint64_t count = 0;
    float ms = 0;
  };
  auto res = std::make_shared<Result>();
  return {[=] {
            res->ms = log_probs_host(I, c.x, c.rows, c.n, c.targets, c.out);
            for (uint64_t r = 0; r < c.rows; ++r)
              if (c.targets[r] >= 0) res->sum += c.out[r], res->count++;
          },
          [res](Napi::Env env) -> Napi::Value {
            Napi::Object o = Napi::Object::New(env);
            o.Set("sum", res->sum);
            o.Set("count", (double)res->count);
            if (I != Impl::Emulated) o.Set("kernelMs", res->ms);
            return o;
          }};
}

template <Impl I>
Job parse_argmax(Args& a) {
  ArgmaxCall c = argmax_call(a);
  return timed<I>([=] {
    std::vector<int64_t> first(c.rows);
    const float ms = argmax_host(I, c.x, c.rows, c.n, first.data());
    for (uint64_t r = 0; r < c.rows; ++r) c.out[r] = argmax_result(r, first[r]);
    return ms;
  });
}

}  // namespace

void register_nn(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "rmsNorm", parse_rmsnorm<Impl::Fast>);
  export_op(env, exports, "rmsNormReference", parse_rmsnorm<Impl::Reference>);
  export_op(env, exports, "rmsNormEmulated", parse_rmsnorm<Impl::Emulated>);
  export_op(env, exports, "rope", parse_rope<Impl::Fast>);
  export_op(env, exports, "ropeEmulated", parse_rope<Impl::Emulated>);
  export_op(env, exports, "attention", parse_attention<Impl::Fast>);
  export_op(env, exports, "attentionReference", parse_attention<Impl::Reference>);
  export_op(env, exports, "attentionEmulated", parse_attention<Impl::Emulated>);
  export_op(env, exports, "swiglu", parse_swiglu<Impl::Fast>);
  export_op(env, exports, "swigluEmulated", parse_swiglu<Impl::Emulated>);
  export_op(env, exports, "embedding", parse_embedding<Impl::Fast>);
  export_op(env, exports, "embeddingEmulated", parse_embedding<Impl::Emulated>);
  export_op(env, exports, "logProbs", parse_logprobs<Impl::Fast>);
  export_op(env, exports, "logProbsReference", parse_logprobs<Impl::Reference>);
  export_op(env, exports, "logProbsEmulated", parse_logprobs<Impl::Emulated>);
  export_op(env, exports, "argmax", parse_argmax<Impl::Fast>);
  export_op(env, exports, "argmaxReference", parse_argmax<Impl::Reference>);
  export_op(env, exports, "argmaxEmulated", parse_argmax<Impl::Emulated>);
}

}  // namespace cuda
}  // namespace zt
