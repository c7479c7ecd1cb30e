// One registration function per op group of the CUDA addon; each lives in its own bind_*.cc file.
#pragma once
#include <napi.h>

#include <functional>

namespace zt {
class Args;
struct Job;
namespace cuda {

void register_rng(Napi::Env env, Napi::Object exports);
void register_gemv(Napi::Env env, Napi::Object exports);
void register_perturb(Napi::Env env, Napi::Object exports);
void register_quant(Napi::Env env, Napi::Object exports);

// An op returning { kernelMs } from run()'s CUDA-event time.
Job timed_job(std::function<float()> run);
void register_nn(Napi::Env env, Napi::Object exports);
void register_gemm_tc(Napi::Env env, Napi::Object exports);
void register_pool(Napi::Env env, Napi::Object exports);
void register_llama(Napi::Env env, Napi::Object exports);

}  // namespace cuda
}  // namespace zt
