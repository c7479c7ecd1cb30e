// One registration function per op group of the CUDA addon; each lives in its own bind_*.cc file.
#pragma once
#include <napi.h>

namespace zt {
namespace cuda {

void register_rng(Napi::Env env, Napi::Object exports);
void register_nn(Napi::Env env, Napi::Object exports);
void register_gemm_tc(Napi::Env env, Napi::Object exports);
void register_pool(Napi::Env env, Napi::Object exports);

}  // namespace cuda
}  // namespace zt
