// One registration function per op group; each lives in its own bind_*.cc file.
#pragma once
#include <napi.h>

namespace zt {

void register_rng(Napi::Env env, Napi::Object exports);
void register_quant(Napi::Env env, Napi::Object exports);
void register_perturb(Napi::Env env, Napi::Object exports);
void register_ceilings(Napi::Env env, Napi::Object exports);
void register_gemm(Napi::Env env, Napi::Object exports);
void register_gemm_int8(Napi::Env env, Napi::Object exports);
void register_nn(Napi::Env env, Napi::Object exports);
void register_llama(Napi::Env env, Napi::Object exports);
void register_llama_grad(Napi::Env env, Napi::Object exports);
void register_optim(Napi::Env env, Napi::Object exports);
void register_zo_optim(Napi::Env env, Napi::Object exports);

}  // namespace zt
