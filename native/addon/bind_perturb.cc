// perturb, perturbIndices: argument lists in perturb_args.h.
#include "../cpu/perturb.h"
#include "bindings.h"
#include "perturb_args.h"

namespace zt {
namespace {

Job parse_perturb(Args& a) {
  PerturbCall p = perturb_call(a);
  return {[=] { perturb_dense(p.w, p.n, p.d, p.first, p.alpha); }, nullptr};
}

Job parse_perturb_indices(Args& a) {
  PerturbCall p = perturb_indices_call(a);
  return {[=] { perturb_indices(p.w, p.n, p.idx->data(), p.idx->size(), p.d, p.first, p.alpha); }, nullptr};
}

}  // namespace

void register_perturb(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "perturb", parse_perturb);
  export_op(env, exports, "perturbIndices", parse_perturb_indices);
}

}  // namespace zt
