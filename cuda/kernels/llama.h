// The LLaMA forward, ZO probe and ZO update resident on the GPU: weights uploaded once, every op of
// a call queued on one stream, only the final scalars and the requested logits copied back.
//
// The model is the CPU's (native/cpu/llama.h): the same LlamaConfig / LlamaWeights description, the
// same packed batches, LlamaOutputs (log-probs of targets, logits of rows, vocabulary subsets) and
// LlamaPerturb (perturb-on-load: linears inside the GEMM, embedding rows after the gather, norm
// vectors as perturbed copies), KV caches (DeviceKvCache: the CPU KvCache's layout in device
// memory) and next tokens (the last rows' logits copied back and sampled on the host with the
// CPU's sample_ranked and u, so generation draws what the CPU draws from the same logits).
//
// The orchestration (llama.cu) is written once against the ops of nn.h / gemv.h / perturb.h /
// quant.h with an Impl: on the GPU (Fast kernels, the gemv reference kernel) or Emulated (the same
// per-thread code on host buffers, no GPU), so the whole model runs, and is tested, without a GPU.
//
// Bits against the CPU forward (compiled with -fmad=false): every op equals the CPU's bit for bit
// (nn.h, perturb.h, quant.h) and every linear is one fma chain per output in k order, the CPU
// GEMM's order for M > 4: GEMMs of >= 8 rows run the F32 SIMT tiles of gemm_tc.h on fp32 weights
// (quantized or perturbed weights first written once per call as W' = decode(W) + alpha z into a
// workspace the size of the largest weight, fp32, category activations), fewer rows run the gemv
// reference kernel (gemv.h), decoding and perturbing on load. So the logits equal the CPU's
// whenever every GEMM of the forward has M > 4 rows: the batch has > 4 tokens and the LM head runs
// on > 4 rows (a head chunk, or with a vocab subset its rows). With <= 4 rows the CPU takes its
// GEMV order: both within the error bound of gemv.h. Log-probs: CUDA's log() on the GPU (<= 1 ulp
// of the double, nn.h); the emulation uses the host's, so emulated log-probs are the CPU's bits.
//
// LlamaKernels::Fast trades those bits for speed, like a bf16 PyTorch model: linears of <= 16 rows
// run the fast gemv kernel (gemv.h: fp32 activations and accumulation, weights decoded and
// perturbed on load, a split-K warp order), larger ones the bf16 tensor-core tiles (gemm_tc.h:
// W' = decode(W) + alpha z rounded to bf16 once per call, activations rounded to bf16, fp32
// accumulation; unperturbed int4 weights go through the W4A16 tiles instead, read packed with no
// W'). Its error against the CPU is the bf16 rounding of both operands (relative ~2^-9 per
// product) and is checked against the CPU within tolerance, not bit for bit.
//
// Integer-activation linears (w8a8 / w4a8, Linear::int_act) give the CPU's gemm_int result
// (native/cpu/gemm_int8.h: one result per call, whatever the M) with both kernel sets: activations
// quantized per row by the CPU's rule, then unperturbed the integer GEMV for <= 16 rows (gemv.h
// gemv_int_act_launch), else the W8A8 / W4A8 integer tiles (weight rows of a multiple of 16 bytes)
// or the reference kernel (gemm_tc.h gemm_int_act_launch); perturbed,
// QuZO probes the CPU runs on its integer path (step 2') through the grid-probe kernel and all
// others as float(q_x) . W'^T on the F32 tiles with the CPU's epilogue. Fast perturbed linears
// take the bf16 tiles instead (W' rounded to bf16). A row of activations holding Inf or NaN fails
// the call with ZOTUNE_NONFINITE, as on the CPU.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <functional>
#include <memory>
#include <vector>

#include "../../native/cpu/llama.h"
#include "../../native/cpu/zo_optim.h"

namespace zt {
namespace cuda {

struct DeviceLlama;
struct DeviceKvCache;

enum class LlamaKernels { Exact, Fast };

// Copies the weights once: to the GPU (pool category weights) or, emulated, to host memory of the
// model's own (so its updates never touch the caller's arrays). A weight whose id repeats (a tied
// LM head) is stored once.
std::shared_ptr<DeviceLlama> llama_upload(const LlamaConfig& c, const LlamaWeights& w, bool emulated, LlamaKernels kernels);
const LlamaConfig& llama_config(const DeviceLlama& m);

// A KV cache for B sequences of cap slots (pool category activations, or emulated host memory),
// every slot masked off. The fill levels stay with the caller (`past` of each forward), as for the
// CPU's KvCache; the mask is kept here, written by each forward for its new tokens.
std::shared_ptr<DeviceKvCache> llama_cache_create(const DeviceLlama& m, size_t B, size_t cap);
void llama_cache_reset(DeviceKvCache& kv);  // every slot masked off (the memory is kept)
size_t llama_cache_batch(const DeviceKvCache& kv);
size_t llama_cache_capacity(const DeviceKvCache& kv);
uint8_t* llama_cache_mask(DeviceKvCache& kv);  // [B][cap] host copy: llama_validate's KvCache view
bool llama_cache_fits(const DeviceLlama& m, const DeviceKvCache& kv);  // same layers, kv heads, head dim

// One forward (the caller validated the batch with llama_validate), with a cache: sequence s's new
// tokens fill slots past[s] .. and attend to everything cached before them. o.next: the sampled
// next token of every non-empty sequence (the CPU forward's rule and Philox draw). Activations: one
// allocation (category activations) for the call. Returns the kernel milliseconds (CUDA events; 0
// when emulated).
float llama_device_forward(DeviceLlama& m, const LlamaBatch& b, LlamaOutputs& o, DeviceKvCache* cache = nullptr,
                           const int32_t* past = nullptr);
// llama_generate on the device model: the CPU's decode loop (native/cpu/llama.h decode_loop) over
// llama_device_forward with the cache, every step validated as the CPU validates it; the same
// tokens as the CPU model for the same prompts, options and seed. Returns the steps run.
size_t llama_device_generate(DeviceLlama& m, const LlamaBatch& prompt, DeviceKvCache& cache, int32_t* past, int32_t* next_pos,
                             const GenerateParams& g, const std::function<bool(size_t, const int32_t*)>& on_step);
// ZO probes of one or more queries, llama_probe's results (native/cpu/llama.h): for each seeds[q],
// plus[q] at theta + eps z_q and minus[q] at theta - eps z_q (zo.alpha = eps), in one call.
// Perturbed on load (no weight written), the layers below the first trainable one run once for
// every query and sign; in place (MeZO's exact mode, the CPU's sequence and bits; fp32 trainable
// tensors only, else ZOTUNE_UNSUPPORTED): + eps z, forward, - 2 eps z, forward, + eps z per query,
// each forward whole.
float llama_device_probe(DeviceLlama& m, const LlamaBatch& b, LlamaOutputs* plus, LlamaOutputs* minus,
                         const LlamaPerturb& zo, const std::vector<uint64_t>& seeds, bool in_place = false);
// theta <- theta * keep - scale z(dir with stream = id) for each listed tensor id (keep[j]: 1 - weight
// decay, or null: 1): fp32 through the perturb kernel (alpha = -scale), quantized through the quantized
// update (SR onto the tensor's grid) or, with decay, dequantized to fp32, updated and stochastically
// rounded back onto the same grid (Philox seed, stream = id, srQuantize): the CPU zoUpdate's bits.
// dir's purpose is srUpdate. Every id and every grid is checked before anything is written.
float llama_device_update(DeviceLlama& m, const Direction& dir, float scale, const uint32_t* ids, size_t n,
                          const float* keep = nullptr);

// ZO-SGD-MMT / ZO-Adam steps (native/cpu/zo_optim.h, the CPU's bits) over the listed fp32 tensors
// (decays[j]: tensor j's multiplicative decay lr * lambda, or 0); s.dirs' streams are replaced by
// each tensor's id. The state (m, and v for Adam) lives with the model in device memory (pool
// category optimizer) under `slot` (one per optimiser), zero at a tensor's first step, until
// llama_device_optim_free. Quantized tensors: ZOTUNE_UNSUPPORTED, before anything is written.
float llama_device_optim_step(DeviceLlama& m, uint32_t slot, const ZoOptimStep& s, const uint32_t* ids, const float* decays,
                              size_t n);
void llama_device_optim_free(DeviceLlama& m, uint32_t slot);

// Weight argument `arg` (the upload order: embed, 9 per layer, norm, lmHead) copied into host
// arrays of the same shape and format (codes, scales and zero-points).
size_t llama_weight_count(const DeviceLlama& m);
const GemmWeights& llama_weight(const DeviceLlama& m, size_t arg);  // the stored tensor (device or emulated memory)
void llama_device_read(const DeviceLlama& m, size_t arg, const GemmWeights& host);

}  // namespace cuda
}  // namespace zt
