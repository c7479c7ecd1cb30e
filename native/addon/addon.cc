// Module entry: registers the NativeBuffer class, engine settings and every op group.
#include <napi.h>

#include "../common/abi.h"
#include "../cpu/cpu_features.h"
#include "../cpu/memory.h"
#include "../cpu/threadpool.h"
#include "bindings.h"
#include "napi_util.h"

namespace zt {
namespace {

Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CpuFeatures f = cpu_features();
  Napi::Object o = Napi::Object::New(env);
  o.Set("avx2", f.avx2);
  o.Set("fma", f.fma);
  o.Set("f16c", f.f16c);
  o.Set("avx512vnni", f.avx512vnni);
  o.Set("path", cpu_path_name());
  o.Set("threads", pool_threads());
  return o;
}

Napi::Value SetCpuPath(const Napi::CallbackInfo& info) {
  Args args(info, "setCpuPath");
  std::string p = args.str(0, "path");
  try {
    set_cpu_path(p.c_str());
  } catch (const Error& e) {
    throw coded_error(info.Env(), e.code, e.what());
  }
  return Napi::String::New(info.Env(), cpu_path_name());
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Args args(info, "setThreads");
  uint64_t n = args.index(0, "threads");
  if (n < 1 || n > 1024) throw coded_error(info.Env(), Code::InvalidArgument, "setThreads: threads must be in [1, 1024]");
  pool_set_threads((int)n);
  return Napi::Number::New(info.Env(), pool_threads());
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MemStats s = mem_stats();
  return mem_stats_object(env, s.live, s.peak, s.total_live, s.total_peak, s.cached);
}

Napi::Value ReleaseHostCache(const Napi::CallbackInfo& info) {
  host_cache_release();
  return info.Env().Undefined();
}

Napi::Value ResetPeaks(const Napi::CallbackInfo& info) {
  mem_reset_peaks();
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Function nb = NativeBuffer::Define(env);
  env.SetInstanceData(new Napi::FunctionReference(Napi::Persistent(nb)));
  exports.Set("NativeBuffer", nb);
  exports.Set("cpuInfo", Napi::Function::New(env, CpuInfo, "cpuInfo"));
  exports.Set("setCpuPath", Napi::Function::New(env, SetCpuPath, "setCpuPath"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("memory", Napi::Function::New(env, Memory, "memory"));
  exports.Set("resetMemoryPeaks", Napi::Function::New(env, ResetPeaks, "resetMemoryPeaks"));
  exports.Set("releaseHostCache", Napi::Function::New(env, ReleaseHostCache, "releaseHostCache"));
  exports.Set("backend", Napi::String::New(env, "cpu"));
  exports.Set("abi", Napi::Number::New(env, kAddonAbi));
  register_rng(env, exports);
  register_quant(env, exports);
  register_perturb(env, exports);
  register_ceilings(env, exports);
  register_gemm(env, exports);
  register_gemm_int8(env, exports);
  register_nn(env, exports);
  register_llama(env, exports);
  register_llama_grad(env, exports);
  register_optim(env, exports);
  register_zo_optim(env, exports);
  return exports;
}

}  // namespace
}  // namespace zt

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return zt::Init(env, exports); }
NODE_API_MODULE(zotune, InitModule)
