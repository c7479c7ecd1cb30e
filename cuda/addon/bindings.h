// One registration function per op group of the CUDA addon; each lives in its own bind_*.cc file.
#pragma once
#include <napi.h>

#include <functional>

namespace zt {
class Args;
struct Job;
struct Direction;
namespace cuda {

void register_rng(Napi::Env env, Napi::Object exports);
void register_gemv(Napi::Env env, Napi::Object exports);
void register_perturb(Napi::Env env, Napi::Object exports);
void register_quant(Napi::Env env, Napi::Object exports);

// Shared by bind_perturb.cc and bind_quant.cc: the CPU addon's argument checks and coded errors.
// Direction from arguments i .. i + 4 (seed, stream, dist, bits, srPurpose).
Direction direction_arg(Args& a, size_t i);
float alpha_arg(Args& a, size_t i, const char* fn);
// An op returning { kernelMs } from run()'s CUDA-event time.
Job timed_job(std::function<float()> run);
void register_nn(Napi::Env env, Napi::Object exports);
void register_gemm_tc(Napi::Env env, Napi::Object exports);
void register_pool(Napi::Env env, Napi::Object exports);
void register_llama(Napi::Env env, Napi::Object exports);

}  // namespace cuda
}  // namespace zt
