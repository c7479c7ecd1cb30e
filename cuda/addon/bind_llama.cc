// The device-resident LLaMA (cuda/kernels/llama.h) from JS. Arguments are the CPU addon's
// (native/addon/bind_llama.cc), parsed by the same code (native/addon/llama_args.h):
//
// llamaDeviceCreate(cfg, ids, emulated: bool, kernels: 'exact' | 'fast', embed,
//                   (attnNorm, q, k, v, o, mlpNorm, gate, up, down) x layers, norm, lmHead) -> handle
//   (weights copied once: to the GPU, or emulated to host memory; kernels: llama.h LlamaKernels)
// llamaDeviceForward(handle, tokens, seqOffsets, positions, keyMask | null, targets | null, logprobs | null,
//                    logitRows | null, logits | null, vocabSubset | null, cache | null, cachePast: i32[B] | null,
//                    next: i32[B] | null, sample: f64[3] | null, seed) -> {logprobSum, count, kernelMs}
//   (cache, past, next, sample, seed: the CPU llamaForward's, with a cache from llamaDeviceCacheCreate)
// llamaDeviceGenerate(handle, tokens, seqOffsets, positions, keyMask | null (the prompt batch), cache,
//                     cacheLength: i32[B] (in/out), cacheNextPosition: i32[B] (in/out), sample | null, seed,
//                     maxNew, stopTokens: i32[] | null, onStep: (tokens, firstStep) => boolean | null) -> steps run
//   (the CPU llamaGenerate's decode loop and streaming, over the device forward and cache)
// llamaDeviceCacheCreate(handle, batch, capacity) -> cache (device memory, or host when emulated)
// llamaDeviceCacheReset(cache): every slot masked off; llamaDeviceCacheFree(cache) (idempotent).
// llamaDeviceZoProbe(handle, tokens, seqOffsets, positions, keyMask, targets, logprobsPlus, logprobsMinus,
//                    logitRows, logitsPlus, logitsMinus, vocabSubset, seed, dist, bits, eps, trainable: u8[n_ids],
//                    mode (0 on-load, the default; 1 in-place: fp32 trainable tensors only))
//   -> {plus: {logprobSum, count}, minus: {logprobSum, count}, kernelMs}
//   seed may be a BigUint64Array of Q seeds (Q queries in one call, llama.h llama_device_probe): every
//   output buffer then holds Q blocks (as the CPU llamaZoProbe's) and the result is
//   {queries: [{plus, minus}] x Q, kernelMs}.
// llamaDeviceZoUpdate(handle, seed, dist, bits, scale, decay, ids: u32[n], decayFlags: u8[n] | null) -> {kernelMs}
//   theta <- theta (1 - decay decayFlags[j]) - scale z_srUpdate(seed, id): the CPU zoUpdate's bits.
// llamaDeviceZoOptimStep(handle, slot, kind (0 momentum, 1 adam), seeds: u32[2q] ([lo, hi] per query),
//                        dist, bits, coefs: f32[q], lr, beta1, beta2, adamEps, bias1, bias2, ids: u32[n],
//                        decays: f32[n]) -> {kernelMs}: the CPU zoOptimStep on each listed fp32 tensor
//   (directions: stream = tensor id, srUpdate), the state kept on the device under `slot`.
// llamaDeviceZoOptimFree(handle, slot): frees that state.
// llamaDeviceRead(handle, arg, dst): weight argument `arg` copied into dst (f32 memory or a quantized
//   tensor descriptor of the same shape and format).
// llamaDeviceFree(handle): frees the copies (idempotent; a call in flight keeps them until it ends).
// kernelMs: CUDA events around the kernels (0 when emulated). A freed handle: ZOTUNE_DISPOSED.
#include <memory>
#include <string>
#include <vector>

#include "../../native/addon/llama_args.h"
#include "../../native/addon/napi_util.h"
#include "../../native/addon/step_stream.h"
#include "../kernels/llama.h"
#include "../kernels/quant.h"
#include "bindings.h"

namespace zt {
namespace cuda {
namespace {

struct ModelBox {
  using Held = DeviceLlama;
  std::shared_ptr<DeviceLlama> m;  // null once freed
  std::vector<uint32_t> ids;       // tensor id of every weight argument
};
constexpr napi_type_tag kModelTag = {0x7a6f74756e65ull, 0x11a3a0de71ceull};

struct CacheBox {
  using Held = DeviceKvCache;
  std::shared_ptr<DeviceKvCache> kv;  // null once freed
};
constexpr napi_type_tag kCacheTag = {0x7a6f74756e65ull, 0x11a3a0decac4ull};

[[noreturn]] void bad(const char* op, Code c, const std::string& msg) { fail(c, std::string(op) + ": " + msg); }

ModelBox* box_arg(Args& a, const char* op) {
  bool ours = false;
  if (a.has(0) && a.value(0).IsExternal()) napi_check_object_type_tag(a.env(), a.value(0), &kModelTag, &ours);
  if (!ours) throw coded_error(a.env(), Code::InvalidArgument, std::string(op) + ": handle must be a model from llamaDeviceCreate");
  ModelBox* b = a.value(0).As<Napi::External<ModelBox>>().Data();
  if (!b->m) throw coded_error(a.env(), Code::Disposed, std::string(op) + ": the device model was freed");
  return b;
}

CacheBox* cache_box(Args& a, size_t i, const char* op) {
  bool ours = false;
  if (a.has(i) && a.value(i).IsExternal()) napi_check_object_type_tag(a.env(), a.value(i), &kCacheTag, &ours);
  if (!ours) throw coded_error(a.env(), Code::InvalidArgument, std::string(op) + ": cache must be a cache from llamaDeviceCacheCreate");
  CacheBox* b = a.value(i).As<Napi::External<CacheBox>>().Data();
  if (!b->kv) throw coded_error(a.env(), Code::Disposed, std::string(op) + ": the cache was freed");
  return b;
}

Job parse_create(Args& a) {
  const char* op = "llamaDeviceCreate";
  const LlamaConfig c = llama_config_arg(a, op);
  const size_t nw = c.layers * 9 + 3;
  const uint32_t* ids = a.elems<uint32_t>(1, "ids", 0, nw);
  const bool emulated = a.boolean(2, "emulated");
  const std::string k = a.str(3, "kernels");
  if (k != "exact" && k != "fast")
    throw coded_error(a.env(), Code::InvalidArgument, std::string(op) + ": kernels must be 'exact' or 'fast', got '" + k + "'");
  const LlamaKernels kernels = k == "fast" ? LlamaKernels::Fast : LlamaKernels::Exact;
  auto w = llama_weights_arg(a, c, ids, 4, op, quant_check_scales);
  auto box = std::make_shared<ModelBox>();
  box->ids.assign(ids, ids + nw);
  return {[c, w, emulated, kernels, box] { box->m = llama_upload(c, *w, emulated, kernels); },
          [box](Napi::Env env) -> Napi::Value {
            auto* held = new ModelBox(*box);
            auto ext = Napi::External<ModelBox>::New(env, held, [](Napi::Env, ModelBox* b) { delete b; });
            napi_type_tag_object(env, ext, &kModelTag);
            return ext;
          }};
}

// Outputs from argument `i` on: targets, then `sets` log-prob arrays, logitRows, `sets` logits
// arrays, vocabSubset (the CPU's checks: llama_validate, distinct buffers).
// Outputs from argument i (targets, then per set: logprobs; logitRows; per set: logits; vocabSubset),
// each set's buffers holding `blocks` blocks: outs[s * blocks + q] writes block q of set s.
void outputs_arg(Args& a, const char* op, const LlamaConfig& c, const LlamaBatch& b, size_t i, LlamaOutputs* outs, int sets,
                 size_t blocks = 1) {
  const uint64_t N = (uint64_t)b.seq_off[b.B];
  if (a.has(i)) {
    const int32_t* t = a.copy<int32_t>(i, "targets", 0, N);  // validated here, followed later
    for (int s = 0; s < sets; ++s) {
      double* lp = a.elems<double>(i + 1 + s, "logprobs", 0, llama_size_mul(blocks, N, op));
      for (size_t q = 0; q < blocks; ++q) outs[s * blocks + q].targets = t, outs[s * blocks + q].logprobs = lp + q * N;
    }
    if (sets == 2 && outs[0].logprobs == outs[blocks].logprobs) bad(op, Code::InvalidArgument, "logprobsPlus and logprobsMinus must be different buffers");
  }
  const size_t rows = i + 1 + sets, logits = rows + 1, subset = logits + sets;
  if (a.has(rows)) {
    const size_t R = a.mem(rows, "logitRows").bytes / 4, S = a.has(subset) ? a.mem(subset, "vocabSubset").bytes / 4 : 0;
    const int32_t* row_list = a.copy<int32_t>(rows, "logitRows", 0, R);
    const int32_t* subset_list = S ? a.copy<int32_t>(subset, "vocabSubset", 0, S) : nullptr;
    const uint64_t per = llama_size_mul(R, S ? S : c.vocab, op);
    for (int s = 0; s < sets; ++s) {
      float* lg = a.elems<float>(logits + s, "logits", 0, llama_size_mul(blocks, per, op));
      for (size_t q = 0; q < blocks; ++q) {
        LlamaOutputs& o = outs[s * blocks + q];
        o.n_logit_rows = R;
        o.logit_rows = row_list;
        o.n_vocab_subset = S;
        if (S) o.vocab_subset = subset_list;
        o.logits = lg + q * per;
      }
    }
    if (sets == 2 && R && outs[0].logits == outs[blocks].logits) bad(op, Code::InvalidArgument, "logitsPlus and logitsMinus must be different buffers");
  }
  llama_validate(c, b, nullptr, outs[0]);
}

Job parse_forward(Args& a) {
  const char* op = "llamaDeviceForward";
  std::shared_ptr<DeviceLlama> m = box_arg(a, op)->m;
  const LlamaConfig& c = llama_config(*m);
  const LlamaBatch b = llama_batch_arg(a, op, 1);
  auto o = std::make_shared<LlamaOutputs>();
  outputs_arg(a, op, c, b, 5, o.get(), 1);
  if (a.count() > 15) bad(op, Code::InvalidArgument, "expected at most 15 arguments");
  llama_next_arg(a, 12, b, *o, op);
  std::shared_ptr<DeviceKvCache> kv;
  auto past = std::make_shared<std::vector<int32_t>>();
  if (!a.has(10) && o->next) llama_validate(c, b, nullptr, *o);  // the next rows
  if (a.has(10)) {
    kv = cache_box(a, 10, op)->kv;
    if (!llama_cache_fits(*m, *kv)) bad(op, Code::ShapeMismatch, "the cache was made for another model (layers, kv heads, head dim)");
    if (llama_cache_batch(*kv) != b.B)
      bad(op, Code::ShapeMismatch, "the cache holds " + std::to_string(llama_cache_batch(*kv)) + " sequences, the batch has " + std::to_string(b.B));
    const int32_t* p = a.elems<int32_t>(11, "cachePast", 0, b.B);
    past->assign(p, p + b.B);
    const KvCache view{nullptr, nullptr, llama_cache_mask(*kv), past->data(), llama_cache_capacity(*kv)};
    llama_validate(c, b, &view, *o);
  }
  auto ms = std::make_shared<float>(0.0f);
  return {[m, b, o, kv, past, ms] { *ms = llama_device_forward(*m, b, *o, kv.get(), kv ? past->data() : nullptr); },
          [o, ms](Napi::Env env) -> Napi::Value {
            Napi::Object r = llama_sums(env, *o);
            r.Set("kernelMs", *ms);
            return r;
          }};
}

Job parse_probe(Args& a) {
  const char* op = "llamaDeviceZoProbe";
  ModelBox* box = box_arg(a, op);
  std::shared_ptr<DeviceLlama> m = box->m;
  const LlamaConfig& c = llama_config(*m);
  const LlamaBatch b = llama_batch_arg(a, op, 1);
  bool many = false;
  const std::vector<uint64_t> seeds = llama_probe_seeds(a, 12, &many, op);
  const size_t Q = seeds.size();
  auto outs = std::make_shared<std::vector<LlamaOutputs>>(2 * Q);  // plus[q] = outs[q], minus[q] = outs[Q + q]
  outputs_arg(a, op, c, b, 5, outs->data(), 2, Q);
  const Direction dir = llama_direction_of(a, seeds[0], 13, kPurposeSrProbe, op);
  const float eps = llama_finite_f32(a, 15, "eps", op);
  Span tr = a.mem(16, "trainable");
  const uint8_t* flags = a.elems<uint8_t>(16, "trainable", 0, tr.bytes);
  for (uint32_t id : box->ids)
    if (id >= tr.bytes) bad(op, Code::OutOfRange, "tensor id " + std::to_string(id) + " has no trainable flag");
  if (a.count() > 18) bad(op, Code::InvalidArgument, "expected at most 18 arguments, got " + std::to_string(a.count()));
  const int32_t mode = a.has(17) ? a.i32(17, "mode") : 0;
  if (mode != 0 && mode != 1) bad(op, Code::InvalidArgument, "mode must be 0 (on-load) or 1 (in-place)");
  auto keep = std::make_shared<std::vector<uint8_t>>(flags, flags + tr.bytes);  // JS may write the array meanwhile
  auto ms = std::make_shared<float>(0.0f);
  return {[m, b, outs, seeds, dir, eps, keep, mode, ms] {
            const LlamaPerturb zo{dir, eps, keep->data(), keep->size()};
            const size_t Q = seeds.size();
            *ms = llama_device_probe(*m, b, outs->data(), outs->data() + Q, zo, seeds, mode == 1);
          },
          [outs, many, ms](Napi::Env env) -> Napi::Value {
            const size_t Q = outs->size() / 2;
            Napi::Object r = llama_probe_sums(env, *outs, 0);
            if (many) {
              Napi::Array all = Napi::Array::New(env, Q);
              for (size_t q = 0; q < Q; ++q) all.Set((uint32_t)q, llama_probe_sums(env, *outs, q));
              r = Napi::Object::New(env);
              r.Set("queries", all);
            }
            r.Set("kernelMs", *ms);
            return r;
          }};
}

Job parse_update(Args& a) {
  const char* op = "llamaDeviceZoUpdate";
  std::shared_ptr<DeviceLlama> m = box_arg(a, op)->m;
  const Direction dir = llama_direction_arg(a, 1, kPurposeSrUpdate, op);
  const float scale = llama_finite_f32(a, 4, "scale", op);
  const double decay = a.num(5, "decay");
  if (!(decay >= 0 && decay <= 1)) bad(op, Code::InvalidArgument, "decay must be in [0, 1]");
  const size_t n = a.mem(6, "ids").bytes / 4;
  const uint32_t* ids = a.elems<uint32_t>(6, "ids", 0, n);
  if (a.count() > 8) bad(op, Code::InvalidArgument, "expected at most 8 arguments, got " + std::to_string(a.count()));
  if (decay != 0 && !a.has(7)) bad(op, Code::InvalidArgument, "a decay needs decayFlags (one per id)");
  const uint8_t* flags = a.has(7) ? a.elems<uint8_t>(7, "decayFlags", 0, n) : nullptr;
  auto list = std::make_shared<std::vector<uint32_t>>(ids, ids + n);
  auto keep = std::make_shared<std::vector<float>>(n, 1.0f);  // the CPU's float(1 - decay) for flagged tensors
  for (size_t j = 0; j < n; ++j)
    if (flags && flags[j]) (*keep)[j] = (float)(1.0 - decay);
  auto ms = std::make_shared<float>(0.0f);
  return {[m, dir, scale, list, keep, ms] { *ms = llama_device_update(*m, dir, scale, list->data(), list->size(), keep->data()); },
          [ms](Napi::Env env) -> Napi::Value {
            Napi::Object r = Napi::Object::New(env);
            r.Set("kernelMs", *ms);
            return r;
          }};
}

Job parse_optim_step(Args& a) {
  const char* op = "llamaDeviceZoOptimStep";
  std::shared_ptr<DeviceLlama> m = box_arg(a, op)->m;
  const uint32_t slot = a.u32(1, "slot");
  const int kind = a.i32(2, "kind");
  const size_t q = a.mem(6, "coefs").bytes / 4;
  check_zo_queries(q);  // before sizing anything by it or casting it to int
  const uint32_t* seeds = a.elems<uint32_t>(3, "seeds", 0, 2 * q);
  if (a.mem(3, "seeds").bytes != 8 * q) bad(op, Code::ShapeMismatch, "seeds needs two words per coefficient");
  const int dist = a.i32(4, "dist"), bits = a.i32(5, "bits");
  auto coefs = std::make_shared<std::vector<float>>(q);
  const float* c = a.elems<float>(6, "coefs", 0, q);
  coefs->assign(c, c + q);
  auto dirs = std::make_shared<std::vector<Direction>>(q);
  for (size_t k = 0; k < q; ++k)
    (*dirs)[k] = Direction{(uint64_t)seeds[2 * k] | ((uint64_t)seeds[2 * k + 1] << 32), 0, dist, bits, (uint32_t)kPurposeSrUpdate};
  ZoOptimStep s{kind, nullptr, nullptr, (int)q, llama_finite_f32(a, 7, "lr", op), 0.0f, llama_finite_f32(a, 8, "beta1", op),
                llama_finite_f32(a, 9, "beta2", op), llama_finite_f32(a, 10, "adamEps", op), llama_finite_f32(a, 11, "bias1", op),
                llama_finite_f32(a, 12, "bias2", op)};
  const size_t n = a.mem(13, "ids").bytes / 4;
  const uint32_t* ids = a.elems<uint32_t>(13, "ids", 0, n);
  const float* decays = a.elems<float>(14, "decays", 0, n);
  if (a.count() != 15) bad(op, Code::InvalidArgument, "expected 15 arguments, got " + std::to_string(a.count()));
  auto list = std::make_shared<std::vector<uint32_t>>(ids, ids + n);
  auto dec = std::make_shared<std::vector<float>>(decays, decays + n);
  s.dirs = dirs->data(), s.coefs = coefs->data();
  check_zo_optim(s);  // before the job: a coded error here, not in the worker
  auto ms = std::make_shared<float>(0.0f);
  return {[m, slot, s, dirs, coefs, list, dec, ms] { *ms = llama_device_optim_step(*m, slot, s, list->data(), dec->data(), list->size()); },
          [ms](Napi::Env env) -> Napi::Value {
            Napi::Object r = Napi::Object::New(env);
            r.Set("kernelMs", *ms);
            return r;
          }};
}

Job parse_optim_free(Args& a) {
  std::shared_ptr<DeviceLlama> m = box_arg(a, "llamaDeviceZoOptimFree")->m;
  const uint32_t slot = a.u32(1, "slot");
  return {[m, slot] { llama_device_optim_free(*m, slot); }, nullptr};
}

Job parse_read(Args& a) {
  const char* op = "llamaDeviceRead";
  std::shared_ptr<DeviceLlama> m = box_arg(a, op)->m;
  const uint64_t arg = a.index(1, "arg");
  if (arg >= llama_weight_count(*m)) bad(op, Code::OutOfRange, "arg " + std::to_string(arg) + " is not a weight argument");
  const GemmWeights& w = llama_weight(*m, (size_t)arg);
  const LlamaWeightArg dst = llama_weight_arg(a, 2, "dst", w.n, w.k, op, quant_check_scales);
  if (a.count() != 3) bad(op, Code::InvalidArgument, "expected 3 arguments, got " + std::to_string(a.count()));
  return {[m, arg, dst] { llama_device_read(*m, (size_t)arg, dst.g); }, nullptr};
}

Job parse_cache_create(Args& a) {
  const char* op = "llamaDeviceCacheCreate";
  std::shared_ptr<DeviceLlama> m = box_arg(a, op)->m;
  const uint64_t B = a.index(1, "batch"), cap = a.index(2, "capacity");
  if (a.count() != 3) bad(op, Code::InvalidArgument, "expected 3 arguments, got " + std::to_string(a.count()));
  auto box = std::make_shared<CacheBox>();
  return {[m, B, cap, box] { box->kv = llama_cache_create(*m, (size_t)B, (size_t)cap); },
          [box](Napi::Env env) -> Napi::Value {
            auto* held = new CacheBox(*box);
            auto ext = Napi::External<CacheBox>::New(env, held, [](Napi::Env, CacheBox* b) { delete b; });
            napi_type_tag_object(env, ext, &kCacheTag);
            return ext;
          }};
}

Job parse_cache_reset(Args& a) {
  std::shared_ptr<DeviceKvCache> kv = cache_box(a, 0, "llamaDeviceCacheReset")->kv;
  return {[kv] { llama_cache_reset(*kv); }, nullptr};
}

// llamaDeviceFree / llamaDeviceCacheFree: the box lets go of its object (idempotent; a call in
// flight holds its own reference until it ends).
template <class Box, std::shared_ptr<typename Box::Held> Box::*held>
Napi::Value free_box(const Napi::CallbackInfo& info, const napi_type_tag* tag, const char* usage) {
  Napi::Env env = info.Env();
  bool ours = false;
  if (info.Length() > 0 && info[0].IsExternal()) napi_check_object_type_tag(env, info[0], tag, &ours);
  if (!ours) throw coded_error(env, Code::InvalidArgument, usage);
  (info[0].As<Napi::External<Box>>().Data()->*held).reset();
  return env.Undefined();
}
Napi::Value Free(const Napi::CallbackInfo& info) {
  return free_box<ModelBox, &ModelBox::m>(info, &kModelTag, "llamaDeviceFree: handle must be a model from llamaDeviceCreate");
}
Napi::Value FreeCache(const Napi::CallbackInfo& info) {
  return free_box<CacheBox, &CacheBox::kv>(info, &kCacheTag, "llamaDeviceCacheFree: cache must be a cache from llamaDeviceCacheCreate");
}

}  // namespace

Job parse_generate(Args& a) {
  const char* op = "llamaDeviceGenerate";
  std::shared_ptr<DeviceLlama> m = box_arg(a, op)->m;
  const LlamaBatch b = llama_batch_arg(a, op, 1);
  std::shared_ptr<DeviceKvCache> kv = cache_box(a, 5, op)->kv;
  if (!llama_cache_fits(*m, *kv)) bad(op, Code::ShapeMismatch, "the cache was made for another model (layers, kv heads, head dim)");
  if (llama_cache_batch(*kv) != b.B)
    bad(op, Code::ShapeMismatch, "the cache holds " + std::to_string(llama_cache_batch(*kv)) + " sequences, the batch has " + std::to_string(b.B));
  int32_t* past = a.elems<int32_t>(6, "cacheLength", 0, b.B);
  int32_t* next_pos = a.elems<int32_t>(7, "cacheNextPosition", 0, b.B);
  if (past == next_pos) bad(op, Code::InvalidArgument, "cacheLength and cacheNextPosition must be different buffers");
  const GenerateArgs ga = generate_args(a, 8, op);
  if (a.count() > 13) bad(op, Code::InvalidArgument, "expected at most 13 arguments");
  auto steps = std::make_shared<size_t>(0);
  return {[m, b, kv, past, next_pos, ga, steps] {
            *steps = run_streamed(ga.stream.get(), b.B, [&](const StepSink& sink) {
              return llama_device_generate(*m, b, *kv, past, next_pos, *ga.g, sink);
            });
          },
          [steps](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, (double)*steps); }};
}

void register_llama(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "llamaDeviceCreate", parse_create);
  export_op(env, exports, "llamaDeviceForward", parse_forward);
  export_op(env, exports, "llamaDeviceGenerate", parse_generate);
  export_op(env, exports, "llamaDeviceZoProbe", parse_probe);
  export_op(env, exports, "llamaDeviceZoUpdate", parse_update);
  export_op(env, exports, "llamaDeviceRead", parse_read);
  export_op(env, exports, "llamaDeviceZoOptimStep", parse_optim_step);
  export_op(env, exports, "llamaDeviceZoOptimFree", parse_optim_free);
  exports.Set("llamaDeviceFree", Napi::Function::New(env, Free, "llamaDeviceFree"));
  export_op(env, exports, "llamaDeviceCacheCreate", parse_cache_create);
  export_op(env, exports, "llamaDeviceCacheReset", parse_cache_reset);
  exports.Set("llamaDeviceCacheFree", Napi::Function::New(env, FreeCache, "llamaDeviceCacheFree"));
}

}  // namespace cuda
}  // namespace zt
