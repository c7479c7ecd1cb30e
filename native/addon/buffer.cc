#include "buffer.h"

#include <cstring>
#include <map>
#include <string>

#include "napi_util.h"

namespace zt {

namespace {

// Every live storage by base address, so that memory reached through a view can be traced back to
// the storage it belongs to. Process-wide (addon instances of worker threads share it) and leaked
// deliberately: storages may be freed during static destruction.
std::mutex registry_mu;
// Marks the JS objects a NativeBuffer constructor made: the only ones Is() unwraps.
const napi_type_tag kTag = {0x7a6f74756e654e42ull, 0x7566666572763031ull};
std::map<uintptr_t, std::weak_ptr<Storage>>& registry() {
  static auto* m = new std::map<uintptr_t, std::weak_ptr<Storage>>;
  return *m;
}

}  // namespace

Storage::~Storage() { free_now(); }

// Called on the JS thread by an op that pinned this memory once (uses counts that pin).
bool Storage::still_checked(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lk(mu);
  const uint64_t now = uses.load();
  // now == checked_use_: checked earlier in this same op (a tied weight read twice)
  if (exposed.load() || checked_p_ != p || checked_bytes_ != bytes || (now != checked_use_ && now != checked_use_ + 1)) return false;
  checked_use_ = now;  // this op's pin: the next op must follow it directly
  return true;
}

void Storage::mark_checked(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lk(mu);
  if (exposed.load() || pins.load() != 1) return;  // another op in flight may still write it
  checked_p_ = p, checked_bytes_ = bytes, checked_use_ = uses.load();
}

void Storage::free_now() {
  void* p;
  {
    std::lock_guard<std::mutex> g(mu);
    if (freed) return;
    freed = true;
    p = data;
    data = nullptr;
  }
  if (p) {
    // Unregistered before the free: a later allocation at the same address registers anew.
    std::lock_guard<std::mutex> g(registry_mu);
    registry().erase((uintptr_t)p);
  }
  host_free(p, bytes, category);
}

std::shared_ptr<Storage> NativeBuffer::owner_of(const void* p) {
  if (!p) return nullptr;
  std::lock_guard<std::mutex> g(registry_mu);
  auto& m = registry();
  auto it = m.upper_bound((uintptr_t)p);
  if (it == m.begin()) return nullptr;
  --it;
  std::shared_ptr<Storage> s = it->second.lock();
  if (!s || (uintptr_t)p - it->first >= s->bytes) return nullptr;
  return s;
}

Napi::Function NativeBuffer::Define(Napi::Env env) {
  return DefineClass(env, "NativeBuffer",
                     {InstanceAccessor<&NativeBuffer::ByteLength>("byteLength"),
                      InstanceAccessor<&NativeBuffer::Category>("category"),
                      InstanceAccessor<&NativeBuffer::Disposed>("disposed"),
                      InstanceMethod<&NativeBuffer::View>("view"),
                      InstanceMethod<&NativeBuffer::Dispose>("dispose")});
}

// new NativeBuffer(byteLength, category = "other", zeroFill = true)
NativeBuffer::NativeBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeBuffer>(info) {
  Napi::Env env = info.Env();
  Args args(info, "NativeBuffer");
  uint64_t bytes = args.index(0, "byteLength");
  MemCategory cat = MemCategory::Other;
  if (args.has(1)) {
    std::string name = args.str(1, "category");
    if (!mem_category_from_name(name.c_str(), &cat))
      throw coded_error(env, Code::InvalidArgument,
                        "NativeBuffer: unknown memory category '" + name +
                            "' (weights, activations, gradients, optimizer, workspace, other)");
  }
  bool zero = args.has(2) ? args.boolean(2, "zeroFill") : true;
  auto s = std::make_shared<Storage>();
  try {
    s->data = host_alloc((size_t)bytes, cat);
  } catch (const Error& e) {
    s->freed = true;
    throw coded_error(env, e.code, e.what());
  }
  s->bytes = (size_t)bytes;
  s->category = cat;
  if (zero && bytes) std::memset(s->data, 0, (size_t)bytes);
  if (bytes) {
    std::lock_guard<std::mutex> g(registry_mu);
    registry()[(uintptr_t)s->data] = s;
  }
  storage_ = s;
  napi_type_tag_object(env, info.This(), &kTag);
  reported_ = (int64_t)bytes;
  Napi::MemoryManagement::AdjustExternalMemory(env, reported_);
}

NativeBuffer::~NativeBuffer() {
  // GC path: the memory lives on while a view or an in-flight op still references the storage.
  if (reported_) Napi::MemoryManagement::AdjustExternalMemory(Env(), -reported_);
}

bool NativeBuffer::Is(Napi::Value v, NativeBuffer** out) {
  if (!v.IsObject()) return false;
  Napi::Env env = v.Env();
  Napi::FunctionReference* ctor = env.GetInstanceData<Napi::FunctionReference>();
  if (!ctor || !v.As<Napi::Object>().InstanceOf(ctor->Value())) return false;
  // InstanceOf only follows the prototype chain: a Proxy, Object.create(prototype) or another
  // addon's wrapped object given this prototype has no NativeBuffer behind it.
  bool tagged = false;
  void* p = nullptr;
  if (napi_check_object_type_tag(env, v, &kTag, &tagged) != napi_ok || !tagged || napi_unwrap(env, v, &p) != napi_ok || !p)
    throw coded_error(env, Code::InvalidArgument, "not a NativeBuffer (a Proxy or an object made from its prototype)");
  *out = static_cast<NativeBuffer*>(p);
  return true;
}

Napi::Value NativeBuffer::ByteLength(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), disposed_ ? 0 : (double)storage_->bytes);
}

Napi::Value NativeBuffer::Category(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), mem_category_name(storage_->category));
}

Napi::Value NativeBuffer::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }

// A zero-copy ArrayBuffer over the whole buffer; detached when the buffer is disposed.
Napi::Value NativeBuffer::View(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposed_) throw coded_error(env, Code::Disposed, "NativeBuffer.view: the buffer was disposed");
  if (storage_->bytes == 0) return Napi::ArrayBuffer::New(env, 0);  // V8 treats a null external as detached
  storage_->exposed.store(true);  // JS can now write it without an op: no validation memo
  auto* hold = new std::shared_ptr<Storage>(storage_);
  napi_value ab;
  napi_status st = napi_create_external_arraybuffer(
      env, storage_->data, storage_->bytes,
      [](napi_env, void*, void* hint) { delete static_cast<std::shared_ptr<Storage>*>(hint); }, hold, &ab);
  if (st != napi_ok) {
    delete hold;
    throw coded_error(env, Code::Internal, "NativeBuffer.view: could not create an external ArrayBuffer");
  }
  Napi::ArrayBuffer buf(env, ab);
  for (auto it = views_.begin(); it != views_.end();) it = it->Value().IsEmpty() ? views_.erase(it) : it + 1;
  views_.push_back(Napi::Weak(buf));
  return buf;
}

void NativeBuffer::release(Napi::Env env) {
  if (disposed_) return;
  disposed_ = true;
  for (auto& v : views_) {
    Napi::ArrayBuffer ab = v.Value();
    if (!ab.IsEmpty() && !ab.IsDetached()) napi_detach_arraybuffer(env, ab);
  }
  views_.clear();
  if (reported_) Napi::MemoryManagement::AdjustExternalMemory(env, -reported_);
  reported_ = 0;
  bool in_flight;
  {
    std::lock_guard<std::mutex> g(storage_->mu);
    in_flight = storage_->pins.load() > 0;
    if (in_flight) storage_->dispose_pending = true;
  }
  if (!in_flight) storage_->free_now();
}

Napi::Value NativeBuffer::Dispose(const Napi::CallbackInfo& info) {
  release(info.Env());
  return info.Env().Undefined();
}

void NativeBuffer::unpin(Napi::Env, const std::shared_ptr<Storage>& s) {
  bool free_it = false;
  {
    std::lock_guard<std::mutex> g(s->mu);
    free_it = --s->pins == 0 && s->dispose_pending;
  }
  if (free_it) s->free_now();
}

}  // namespace zt
