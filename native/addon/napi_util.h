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
  Storage* owner = nullptr;  // the engine memory it lies in, or null (JS memory)
};

// The engine memory behind a QTensorView's scales and zero-points (null where JS-owned or absent).
struct QOwners {
  Storage* scales = nullptr;
  Storage* zeros = nullptr;
};

// Memory of a JS-owned ArrayBuffer an op works on. JS may detach (transfer) it at any time and V8
// may then free it; N-API cannot prevent that, so an async op works on `copy` (the working bytes,
// then a snapshot of the originals), written back when it ends.
struct JsMem {
  Napi::Reference<Napi::ArrayBuffer> ab;
  uint8_t* data;
  size_t bytes;
  std::shared_ptr<uint8_t> copy;  // async ops only
};

// Whether the byte ranges [p, p + pb) and [q, q + qb) share a byte (null or empty ranges share none).
inline bool overlaps(const void* p, uint64_t pb, const void* q, uint64_t qb) {
  const auto a = (uintptr_t)p, b = (uintptr_t)q;
  return p && q && pb && qb && a < b + qb && b < a + pb;
}

// A parsed call. Memory it hands out stays valid until the op finishes: NativeBuffer storage
// (also when reached through a view) is pinned, so dispose() defers the free; JS ArrayBuffers are
// copied for async ops and re-checked after parsing for sync ones (a getter may detach one).
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* fn, bool async = false) : info_(info), fn_(fn), async_(async) {}
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
  // A private copy of such a region, alive until the op ends: index arrays the kernels follow are
  // validated and read from it, so JS writing the array after the check (an async op in flight, a
  // getter run later in parsing) cannot move an index out of range.
  template <class T>
  const T* copy(size_t i, const char* name, uint64_t byte_offset, uint64_t count) {
    const T* p = elems<T>(i, name, byte_offset, count);
    auto v = std::make_shared<std::vector<T>>();
    v->reserve(count ? count : 1);  // never null: some ops tell an empty list from none by the pointer
    v->assign(p, p + count);
    holds.push_back(v);
    return v->data();
  }
  // x * y for a size (elements), or ZOTUNE_OUT_OF_RANGE naming `what` when it exceeds 2^61 (so that
  // its bytes, at up to 8 per element, fit in 64 bits).
  uint64_t mul(uint64_t x, uint64_t y, const char* what);
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
  QTensorView qtensor(size_t i, const char* name, QOwners* owners = nullptr);
  bool boolean(size_t i, const char* name);

  // Sync ops: throws ZOTUNE_DISPOSED if a JS ArrayBuffer argument was detached or shrunk since it
  // was read (parsing can run JS: getters of descriptor objects).
  void check_js_memory();

  std::vector<Napi::ObjectReference> keep;
  std::vector<std::shared_ptr<Storage>> pins;
  std::vector<JsMem> js_mem;
  std::vector<std::shared_ptr<void>> holds;  // copies made by copy()

 private:
  Span mem_value(Napi::Value v, const char* name);
  void pin(const std::shared_ptr<Storage>& s, const char* name);
  uint8_t* js_memory(Napi::ArrayBuffer ab, uint8_t* data, size_t bytes);
  void check_region(Span s, const char* name, uint64_t off, uint64_t count, size_t elsize);
  [[noreturn]] void bad(size_t i, const char* name, const std::string& what);
  const Napi::CallbackInfo& info_;
  const char* fn_;
  bool async_;
};

struct Job {
  std::function<void()> run;
  std::function<Napi::Value(Napi::Env)> result;  // default: undefined
};

using OpParser = Job (*)(Args&);

// exports[name](...) runs the op synchronously; exports[name + "Async"](...) returns a Promise
// and runs it on a libuv worker thread (the kernels themselves use the engine's thread pool).
void export_op(Napi::Env env, Napi::Object exports, const char* name, OpParser parser);

// What memory() returns on either backend: live and peak bytes per category (cpu/memory.h
// MemCategory), their totals (the peak of the sum) and the cached bytes; a backend adds its own.
Napi::Object mem_stats_object(Napi::Env env, const int64_t* live, const int64_t* peak, int64_t total_live, int64_t total_peak,
                              int64_t cached);

}  // namespace zt
