// Tensor-core GEMMs (cuda/kernels/gemm_tc.h), host memory in and out:
//   gemmW8A8(x, xByteOffset, M, w: int8 QTensorDesc, y, yByteOffset, bias | null, biasByteOffset) -> { kernelMs }
//   gemmW4A8(same, w: int4 QTensorDesc, symmetric or with zero-points)
//   gemmW4A16(same, w: int4 QTensorDesc; bf16 activations)
//   gemmFp8(same, w: fp8 e4m3 / e5m2 QTensorDesc with one scale per tensor or per row)
//   gemmBf16(same, w: bf16 QTensorDesc)
//   gemmF32(x, xByteOffset, M, w: f32 [N, K], wByteOffset, N, K, y, yByteOffset, bias | null, biasByteOffset)
//   y[M, N] = x[M, K] · W[N, K]ᵀ (+ bias); x, y, bias f32. Each op also as ...Reference (the plain
//   one-thread-per-output GPU kernel) and ...Emulated (the fast kernel's per-thread code on the
//   host, no GPU needed; returns undefined).
//   gemmTcBench(kind: 'w8a8' | 'w4a8' | 'w4a16' | 'e4m3' | 'e5m2' | 'bf16' | 'f32', M, N, K, iters) -> { bestMs, medianMs }:
//   the fast GEMM kernel on device-resident random operands (activations already quantized).
//   weightRows(w: QTensorDesc, r0, rows, bf16, out, outByteOffset, alpha, seed, stream, dist, bits, srPurpose)
//   -> { kernelMs }: W' rows r0 .. r0 + rows - 1 (decoded, + alpha z) as the device model's linears
//   feed them to the tiles: out holds rows * K floats, or bf16: rows * ld codes (ld =
//   weightRowsLd(K)); also ...Emulated. alpha 0: no perturbation.
#include <string>

#include "../../native/addon/napi_util.h"
#include "../../native/addon/perturb_args.h"
#include "../kernels/gemm_tc.h"
#include "bindings.h"

namespace zt {
namespace cuda {
namespace {

const char* op_name(TcKind k) {
  switch (k) {
    case TcKind::W8A8: return "gemmW8A8";
    case TcKind::W4A8: return "gemmW4A8";
    case TcKind::W4A16: return "gemmW4A16";
    case TcKind::Fp8: return "gemmFp8";
    case TcKind::Bf16: return "gemmBf16";
    default: return "gemmF32";
  }
}

TcGemm gemm_args(Args& a, TcKind kind) {
  const std::string name = op_name(kind);
  TcGemm g{};
  g.kind = kind;
  const uint64_t xoff = a.index(1, "xByteOffset");
  g.M = a.index(2, "M");
  size_t i;
  if (kind == TcKind::F32) {
    const uint64_t woff = a.index(4, "wByteOffset");
    g.N = a.index(5, "N"), g.K = a.index(6, "K");
    g.w32 = a.elems<float>(3, "w", woff, a.mul(g.N, g.K, "N * K"));
    i = 7;
  } else {
    g.w = a.qtensor(3, "w");
    const QFormat f = g.w.format;
    if (kind == TcKind::W8A8 && f != QFormat::Int8)
      throw coded_error(a.env(), Code::DType, name + ": w must be an int8 quantized tensor");
    if ((kind == TcKind::W4A8 || kind == TcKind::W4A16) && f != QFormat::Int4)
      throw coded_error(a.env(), Code::DType, name + ": w must be an int4 quantized tensor");
    if (kind == TcKind::Fp8 && f != QFormat::Fp8E4M3 && f != QFormat::Fp8E5M2)
      throw coded_error(a.env(), Code::DType, name + ": w must be an fp8 e4m3 or e5m2 quantized tensor");
    if (kind == TcKind::Fp8 && g.w.group != 0 && g.w.group != g.w.cols)
      throw coded_error(a.env(), Code::Unsupported, name + ": fp8 weights need one scale per tensor or per row (group 0 or cols)");
    if (kind == TcKind::Bf16 && f != QFormat::Bf16)
      throw coded_error(a.env(), Code::DType, name + ": w must be a bf16 quantized tensor");
    g.N = g.w.rows, g.K = g.w.cols;
    i = 4;
  }
  g.x = a.elems<float>(0, "x", xoff, a.mul(g.M, g.K, "M * K"));
  const uint64_t MN = a.mul(g.M, g.N, "M * N");
  g.y = a.elems<float>(i, "y", a.index(i + 1, "yByteOffset"), MN);
  g.bias = a.has(i + 2) ? a.elems<float>(i + 2, "bias", a.index(i + 3, "biasByteOffset"), g.N) : nullptr;
  const uint64_t wbytes = kind == TcKind::F32 ? g.N * g.K * 4 : g.w.rows * qformat_row_bytes(g.w.format, g.w.cols);
  const void* wdata = kind == TcKind::F32 ? (const void*)g.w32 : (const void*)g.w.data;
  const uint64_t sbytes = kind == TcKind::F32 || !g.w.scales ? 0 : qt_scale_count(g.w) * 4;
  if (overlaps(g.y, MN * 4, g.x, g.M * g.K * 4) || overlaps(g.y, MN * 4, wdata, wbytes) ||
      overlaps(g.y, MN * 4, g.w.scales, sbytes) || overlaps(g.y, MN * 4, g.bias, g.bias ? g.N * 4 : 0))
    throw coded_error(a.env(), Code::InvalidArgument, name + ": y overlaps an input");
  return g;
}

template <TcKind kKind, TcImpl kImpl>
Job parse_gemm(Args& a) {
  const TcGemm g = gemm_args(a, kKind);
  if (kImpl == TcImpl::Emulated) return {[=] { gemm_tc(g, kImpl); }, nullptr};
  auto ms = std::make_shared<float>(0.0f);
  return {[=] { *ms = gemm_tc(g, kImpl); },
          [ms](Napi::Env env) {
            Napi::Object r = Napi::Object::New(env);
            r.Set("kernelMs", *ms);
            return r;
          }};
}

Job parse_bench(Args& a) {
  const std::string kind = a.str(0, "kind");
  TcKind k;
  QFormat f = QFormat::Fp8E4M3;
  if (kind == "w8a8") k = TcKind::W8A8;
  else if (kind == "w4a8") k = TcKind::W4A8;
  else if (kind == "w4a16") k = TcKind::W4A16;
  else if (kind == "e4m3") k = TcKind::Fp8;
  else if (kind == "e5m2") k = TcKind::Fp8, f = QFormat::Fp8E5M2;
  else if (kind == "bf16") k = TcKind::Bf16;
  else if (kind == "f32") k = TcKind::F32;
  else throw coded_error(a.env(), Code::InvalidArgument, "gemmTcBench: kind must be 'w8a8', 'w4a8', 'w4a16', 'e4m3', 'e5m2', 'bf16' or 'f32'");
  const uint64_t M = a.index(1, "M"), N = a.index(2, "N"), K = a.index(3, "K"), iters = a.index(4, "iters");
  if (!M || !N || !K || M > (1u << 20) || N > (1u << 20) || K > (1u << 20))
    throw coded_error(a.env(), Code::OutOfRange, "gemmTcBench: M, N and K must be in [1, 2^20]");
  if (!iters || iters > 100000) throw coded_error(a.env(), Code::OutOfRange, "gemmTcBench: iters must be in [1, 100000]");
  auto r = std::make_shared<TcBench>();
  return {[=] { *r = gemm_tc_bench(k, f, M, N, K, (int)iters); },
          [r](Napi::Env env) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("bestMs", r->best_ms);
            o.Set("medianMs", r->median_ms);
            return o;
          }};
}

template <TcImpl kImpl>
Job parse_weight_rows(Args& a) {
  const QTensorView w = a.qtensor(0, "w");
  const uint64_t r0 = a.index(1, "r0"), rows = a.index(2, "rows");
  const bool bf16 = a.boolean(3, "bf16");
  if (r0 > w.rows || rows > w.rows - r0) throw coded_error(a.env(), Code::OutOfRange, "weightRows: rows r0 .. r0 + rows - 1 must lie in w");
  const uint64_t ld = bf16 ? bf16_row_bytes(w.cols) / 2 : w.cols, count = a.mul(rows, ld, "rows * ld");
  void* out = bf16 ? (void*)a.elems<uint16_t>(4, "out", a.index(5, "outByteOffset"), count)
                   : (void*)a.elems<float>(4, "out", a.index(5, "outByteOffset"), count);
  const float alpha = alpha_arg(a, 6, "weightRows");
  const Direction d = direction_arg(a, 7);
  auto ms = std::make_shared<float>(0.0f);
  return {[=] { *ms = weight_rows_host(kImpl, w, r0, rows, alpha != 0.0f ? &d : nullptr, alpha, bf16, out); },
          [ms](Napi::Env env) {
            Napi::Object r = Napi::Object::New(env);
            r.Set("kernelMs", *ms);
            return r;
          }};
}

template <TcKind kKind>
void export_kind(Napi::Env env, Napi::Object exports) {
  const std::string name = op_name(kKind);
  export_op(env, exports, name.c_str(), parse_gemm<kKind, TcImpl::Fast>);
  export_op(env, exports, (name + "Reference").c_str(), parse_gemm<kKind, TcImpl::Reference>);
  export_op(env, exports, (name + "Emulated").c_str(), parse_gemm<kKind, TcImpl::Emulated>);
}

}  // namespace

void register_gemm_tc(Napi::Env env, Napi::Object exports) {
  export_kind<TcKind::W8A8>(env, exports);
  export_kind<TcKind::W4A8>(env, exports);
  export_kind<TcKind::W4A16>(env, exports);
  export_kind<TcKind::Fp8>(env, exports);
  export_kind<TcKind::Bf16>(env, exports);
  export_kind<TcKind::F32>(env, exports);
  export_op(env, exports, "gemmTcBench", parse_bench);
  export_op(env, exports, "weightRows", parse_weight_rows<TcImpl::Fast>);
  export_op(env, exports, "weightRowsEmulated", parse_weight_rows<TcImpl::Emulated>);
  exports.Set("weightRowsLd", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                Args a(info, "weightRowsLd");
                return Napi::Number::New(info.Env(), (double)(bf16_row_bytes(a.index(0, "K")) / 2));
              }, "weightRowsLd"));
}

}  // namespace cuda
}  // namespace zt
