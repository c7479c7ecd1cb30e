// N-API glue shared by every binding file: argument parsing with validation, coded errors,
// and ops exported both as a sync function and as an `...Async` Promise-returning function.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../common/formats.h"
#include "../common/status.h"
#include "buffer.h"

namespace zt {

Napi::Error coded_error(Napi::Env env, Code code, const std::string& msg);

struct Span {
  uint8_t* data;
  size_t bytes;
};

// A parsed call. Buffers it hands out stay alive and pinned until the op finishes.
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* fn) : info_(info), fn_(fn) {}
  Napi::Env env() const { return info_.Env(); }
  size_t count() const { return info_.Length(); }
  bool has(size_t i) const { return i < info_.Length() && !info_[i].IsUndefined() && !info_[i].IsNull(); }
  Napi::Value value(size_t i) const { return info_[i]; }

  // NativeBuffer, TypedArray, ArrayBuffer or DataView.
  Span mem(size_t i, const char* name);
  // A typed region of a memory argument: `count` elements of T starting `byteOffset` bytes in,
  // bounds- and alignment-checked.
  template <class T>
  T* elems(size_t i, const char* name, uint64_t byte_offset, uint64_t count) {
    Span s = mem(i, name);
    check_region(s, name, byte_offset, count, sizeof(T));
    return reinterpret_cast<T*>(s.data + byte_offset);
  }
  double num(size_t i, const char* name);
  double num_or(size_t i, const char* name, double dflt) { return has(i) ? num(i, name) : dflt; }
  // Non-negative integer (number or bigint) below 2^63; rejects fractions, NaN and negatives.
  uint64_t index(size_t i, const char* name);
  // Any integer in [0, 2^64) given as number or bigint: seeds.
  uint64_t u64(size_t i, const char* name);
  uint32_t u32(size_t i, const char* name);
  int32_t i32(size_t i, const char* name);
  std::string str(size_t i, const char* name);
  // A quantized tensor passed as a plain object {format, rows, cols, group, data, scales?, zeros?}
  // (lib/qtensor.ts builds it): every size, code range and buffer length is validated here.
  QTensorView qtensor(size_t i, const char* name);
  bool boolean(size_t i, const char* name);

  std::vector<Napi::ObjectReference> keep;
  std::vector<std::shared_ptr<Storage>> pins;

 private:
  Span mem_value(Napi::Value v, const char* name);
  void check_region(Span s, const char* name, uint64_t off, uint64_t count, size_t elsize);
  [[noreturn]] void bad(size_t i, const char* name, const std::string& what);
  const Napi::CallbackInfo& info_;
  const char* fn_;
};

struct Job {
  std::function<void()> run;
  std::function<Napi::Value(Napi::Env)> result;  // default: undefined
};

using OpParser = Job (*)(Args&);

// exports[name](...) runs the op synchronously; exports[name + "Async"](...) returns a Promise
// and runs it on a libuv worker thread (the kernels themselves use the engine's thread pool).
void export_op(Napi::Env env, Napi::Object exports, const char* name, OpParser parser);

}  // namespace zt
