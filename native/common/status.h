// Engine errors: every failure the engine reports carries a stable code that reaches JS as `err.code`.
#pragma once
#include <stdexcept>
#include <string>

namespace zt {

enum class Code {
  InvalidArgument,  // ZOTUNE_INVALID_ARGUMENT
  ShapeMismatch,    // ZOTUNE_SHAPE_MISMATCH
  DType,            // ZOTUNE_DTYPE
  OutOfRange,       // ZOTUNE_OUT_OF_RANGE: offsets, indices, sizes beyond a buffer
  OOM,              // ZOTUNE_OOM
  NonFinite,        // ZOTUNE_NONFINITE: NaN/Inf where a finite value is required
  Disposed,         // ZOTUNE_DISPOSED: use of a freed buffer
  Unsupported,      // ZOTUNE_UNSUPPORTED
  Internal,         // ZOTUNE_INTERNAL
  CudaUnavailable,  // ZOTUNE_CUDA_UNAVAILABLE: no usable GPU (no driver, no device, no kernel image)
  Cuda,             // ZOTUNE_CUDA_ERROR: a CUDA call failed on a usable GPU
};

inline const char* code_name(Code c) {
  switch (c) {
    case Code::InvalidArgument: return "ZOTUNE_INVALID_ARGUMENT";
    case Code::ShapeMismatch: return "ZOTUNE_SHAPE_MISMATCH";
    case Code::DType: return "ZOTUNE_DTYPE";
    case Code::OutOfRange: return "ZOTUNE_OUT_OF_RANGE";
    case Code::OOM: return "ZOTUNE_OOM";
    case Code::NonFinite: return "ZOTUNE_NONFINITE";
    case Code::Disposed: return "ZOTUNE_DISPOSED";
    case Code::Unsupported: return "ZOTUNE_UNSUPPORTED";
    case Code::Internal: return "ZOTUNE_INTERNAL";
    case Code::CudaUnavailable: return "ZOTUNE_CUDA_UNAVAILABLE";
    case Code::Cuda: return "ZOTUNE_CUDA_ERROR";
  }
  return "ZOTUNE_INTERNAL";
}

struct Error : std::runtime_error {
  Code code;
  Error(Code c, const std::string& msg) : std::runtime_error(msg), code(c) {}
};

[[noreturn]] inline void fail(Code c, const std::string& msg) { throw Error(c, msg); }

inline void check(bool ok, Code c, const std::string& msg) {
  if (!ok) fail(c, msg);
}

}  // namespace zt
