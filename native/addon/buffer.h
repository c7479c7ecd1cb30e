// NativeBuffer: engine-owned host memory seen from JS, with explicit dispose() and zero-copy
// ArrayBuffer views that are detached (not left dangling) when the memory is freed.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "../cpu/memory.h"

namespace zt {

struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  MemCategory category = MemCategory::Other;
  std::atomic<int> pins{0};
  bool dispose_pending = false;  // free as soon as the last in-flight op ends
  bool freed = false;
  std::mutex mu;
  // Validation memo (the scales every forward checks): `uses` counts the ops that pinned this
  // memory, `exposed` says JS holds a view (it can write without an op). A region that passed a
  // check while no other op held the memory stays checked until another op pins it or a view is
  // made; still_checked() then takes the caller's own pin as the next use.
  std::atomic<uint64_t> uses{0};
  std::atomic<bool> exposed{false};
  bool still_checked(const void* p, size_t bytes);
  void mark_checked(const void* p, size_t bytes);
  ~Storage();
  void free_now();

 private:
  const void* checked_p_ = nullptr;  // guarded by mu
  size_t checked_bytes_ = 0;
  uint64_t checked_use_ = 0;
};

class NativeBuffer : public Napi::ObjectWrap<NativeBuffer> {
 public:
  static Napi::Function Define(Napi::Env env);
  // True for a NativeBuffer; a fake one (a Proxy, Object.create(NativeBuffer.prototype)) throws
  // ZOTUNE_INVALID_ARGUMENT.
  static bool Is(Napi::Value v, NativeBuffer** out);
  // The live storage whose memory holds `p` (an ArrayBuffer from view(), or a TypedArray over one),
  // or null: ops pin it like the NativeBuffer itself so dispose() cannot free it under them.
  static std::shared_ptr<Storage> owner_of(const void* p);
  explicit NativeBuffer(const Napi::CallbackInfo& info);
  ~NativeBuffer() override;

  std::shared_ptr<Storage> storage() const { return storage_; }
  // Called on the JS thread when an op that pinned this storage finishes.
  static void unpin(Napi::Env env, const std::shared_ptr<Storage>& s);

 private:
  Napi::Value ByteLength(const Napi::CallbackInfo& info);
  Napi::Value Category(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value View(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  void release(Napi::Env env);

  std::shared_ptr<Storage> storage_;
  std::vector<Napi::Reference<Napi::ArrayBuffer>> views_;
  int64_t reported_ = 0;
  bool disposed_ = false;
};

}  // namespace zt
