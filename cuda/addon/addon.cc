// Entry of the CUDA addon (zotune_cuda.node): probe() and the GPU ops. It links the CUDA runtime
// statically, so it loads on machines without a driver or GPU; probe() then says why it cannot run.
// It keeps no per-environment state (safe in several worker_threads); the CUDA context is process-wide.
#include <napi.h>

#include "../../native/common/abi.h"
#include "../kernels/device.h"
#include "bindings.h"

namespace zt {
namespace cuda {
namespace {

Napi::Object error_object(Napi::Env env, int code, const std::string& name, const std::string& reason) {
  Napi::Object e = Napi::Object::New(env);
  e.Set("code", code);
  e.Set("name", name);
  e.Set("reason", reason);
  return e;
}

// probe() -> { runtimeVersion, driverVersion, archs, usable, error?, devices: [...] }
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ProbeResult r = probe();
  Napi::Object o = Napi::Object::New(env);
  o.Set("runtimeVersion", r.runtime_version);
  o.Set("driverVersion", r.driver_version);
  o.Set("archs", r.archs);
  o.Set("usable", r.usable);
  if (r.error) {
    Napi::Object e = error_object(env, r.error, r.error_name, r.reason);
    e.Set("message", r.message);
    o.Set("error", e);
  }
  Napi::Array devices = Napi::Array::New(env, r.devices.size());
  for (size_t i = 0; i < r.devices.size(); ++i) {
    const DeviceInfo& d = r.devices[i];
    Napi::Object x = Napi::Object::New(env);
    x.Set("index", d.index);
    x.Set("name", d.name);
    x.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    x.Set("totalMemory", (double)d.total_memory);
    x.Set("multiprocessors", d.multiprocessors);
    x.Set("usable", d.usable);
    if (d.error) x.Set("error", error_object(env, d.error, d.error_name, d.reason));
    devices.Set((uint32_t)i, x);
  }
  o.Set("devices", devices);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("backend", Napi::String::New(env, "cuda"));
  exports.Set("abi", Napi::Number::New(env, kAddonAbi));
  exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
  register_rng(env, exports);
  register_gemv(env, exports);
  register_perturb(env, exports);
  register_quant(env, exports);
  register_nn(env, exports);
  register_gemm_tc(env, exports);
  register_pool(env, exports);
  register_llama(env, exports);
  return exports;
}

}  // namespace
}  // namespace cuda
}  // namespace zt

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return zt::cuda::Init(env, exports); }
NODE_API_MODULE(zotune_cuda, InitModule)
