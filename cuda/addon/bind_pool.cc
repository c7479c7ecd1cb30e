// Device memory from JS: the pool's statistics, and device buffers as external handles.
//   deviceMemory() -> { live, peak, totalLive, totalPeak, cached, reserved, driverAllocs } (no GPU call)
//   deviceResetPeaks(), deviceReleaseCache()
//   deviceAlloc(bytes, category = 'other') -> handle; deviceFree(handle) (idempotent; the GC frees
//     a forgotten handle); deviceUpload(handle, src, byteOffset) / deviceDownload(handle, dst,
//     byteOffset) copy all of src / dst (a TypedArray, ArrayBuffer, DataView or NativeBuffer),
//     also as ...Async; a freed handle -> ZOTUNE_DISPOSED.
//   poolSelfTest(steps, capacity): the pool's cache logic over malloc with `capacity` bytes (no GPU):
//     steps {op: 'alloc', bytes, category?} | {op: 'free', step} (the alloc step's index) |
//     {op: 'release'} | {op: 'resetPeaks'} | {op: 'hammer', threads, iterations};
//     returns per step { stats, address?, block?, freed?, error? }.
#include <cstdlib>
#include <cstring>
#include <pthread.h>

#include <mutex>

#include "../../native/addon/napi_util.h"
#include "../kernels/block_cache.h"
#include "../kernels/pool.h"
#include "bindings.h"

namespace zt {
namespace cuda {
namespace {

Napi::Object stats_object(Napi::Env env, const DevStats& s) {
  Napi::Object o = mem_stats_object(env, s.live, s.peak, s.total_live, s.total_peak, s.cached);
  o.Set("reserved", (double)s.reserved);
  o.Set("driverAllocs", (double)s.driver_allocs);
  return o;
}

MemCategory category_arg(Args& a, size_t i, const char* fn) {
  MemCategory cat = MemCategory::Other;
  if (!a.has(i)) return cat;
  const std::string name = a.str(i, "category");
  if (!mem_category_from_name(name.c_str(), &cat))
    throw coded_error(a.env(), Code::InvalidArgument,
                      std::string(fn) + ": unknown memory category '" + name +
                          "' (weights, activations, gradients, optimizer, workspace, other)");
  return cat;
}

// --- device buffers ----------------------------------------------------------------------------

// One allocation; in-flight async copies hold it too, so deviceFree during one frees it after.
struct DeviceBlock {
  void* ptr = nullptr;
  size_t bytes = 0;
  MemCategory cat = MemCategory::Other;
  ~DeviceBlock() { dev_free(ptr, bytes, cat); }
};
struct DeviceHandle {
  std::shared_ptr<DeviceBlock> block;  // null once freed
};
// Marks our externals, so another addon's external is never read as a DeviceHandle.
constexpr napi_type_tag kHandleTag = {0x7a6f74756e65ull, 0xde71ce0b10c4ull};

DeviceHandle* handle_arg(Args& a, size_t i, const char* fn) {
  Napi::Env env = a.env();
  bool ours = false;
  if (a.has(i) && a.value(i).IsExternal())
    napi_check_object_type_tag(env, a.value(i), &kHandleTag, &ours);
  if (!ours)
    throw coded_error(env, Code::InvalidArgument, std::string(fn) + ": handle must be a device buffer from deviceAlloc");
  return a.value(i).As<Napi::External<DeviceHandle>>().Data();
}

Napi::Value DeviceAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a(info, "deviceAlloc");
  const uint64_t bytes = a.index(0, "bytes");
  const MemCategory cat = category_arg(a, 1, "deviceAlloc");
  auto block = std::make_shared<DeviceBlock>();
  try {
    block->ptr = dev_alloc((size_t)bytes, cat);
  } catch (const Error& e) {
    throw coded_error(env, e.code, e.what());
  }
  block->bytes = (size_t)bytes;
  block->cat = cat;
  auto h = Napi::External<DeviceHandle>::New(env, new DeviceHandle{block}, [](Napi::Env, DeviceHandle* d) { delete d; });
  napi_type_tag_object(env, h, &kHandleTag);
  return h;
}

Napi::Value DeviceFree(const Napi::CallbackInfo& info) {
  Args a(info, "deviceFree");
  handle_arg(a, 0, "deviceFree")->block.reset();
  return info.Env().Undefined();
}

struct Copy {
  std::shared_ptr<DeviceBlock> block;
  uint8_t* host;
  size_t offset, bytes;
};

Copy copy_args(Args& a, const char* fn, const char* host_name) {
  std::shared_ptr<DeviceBlock> block = handle_arg(a, 0, fn)->block;
  if (!block) throw coded_error(a.env(), Code::Disposed, std::string(fn) + ": the device buffer was freed");
  const Span host = a.mem(1, host_name);
  const uint64_t off = a.index(2, "byteOffset");
  if (off > block->bytes || host.bytes > block->bytes - off)
    throw coded_error(a.env(), Code::OutOfRange,
                      std::string(fn) + ": " + std::to_string(host.bytes) + " bytes at byte offset " + std::to_string(off) +
                          " exceed the device buffer's " + std::to_string(block->bytes) + " bytes");
  return {block, host.data, (size_t)off, host.bytes};
}

Job parse_upload(Args& a) {
  Copy c = copy_args(a, "deviceUpload", "src");
  return {[c] { dev_upload((uint8_t*)c.block->ptr + c.offset, c.host, c.bytes); }, nullptr};
}

Job parse_download(Args& a) {
  Copy c = copy_args(a, "deviceDownload", "dst");
  return {[c] { dev_download(c.host, (const uint8_t*)c.block->ptr + c.offset, c.bytes); }, nullptr};
}

// --- host self-test of the cache logic ---------------------------------------------------------

// malloc with a capacity: the device's role, with a limit the test chooses.
struct HostSource : BlockSource {
  size_t capacity, used = 0;
  explicit HostSource(size_t cap) : capacity(cap) {}
  void* acquire(size_t bytes) override {
    void* p = bytes <= capacity - used ? std::aligned_alloc(256, bytes) : nullptr;
    if (p) used += bytes;
    return p;
  }
  void release(void* p, size_t bytes) override {
    std::free(p);
    used -= bytes;
  }
  std::string describe() override {
    return "the host test source has " + std::to_string(capacity - used) + " of " + std::to_string(capacity) + " bytes free";
  }
};

// Threads allocating and freeing blocks of mixed classes and categories concurrently; all freed at
// the end. Throws the first thread's error (OOM when the capacity is too small). pthreads, not
// std::thread: the CUDA addon declares an older libstdc++ than std::thread's symbols need.
struct Hammer {
  BlockCache* cache;
  int thread, iterations;
  std::mutex* mu;
  Code* code;  // of the first error, with its message
  std::string* error;
};

void* hammer_thread(void* arg) {
  const Hammer& h = *(Hammer*)arg;
  static const size_t sizes[] = {1, 500, 513, 4096, 100000, (size_t)1 << 20, ((size_t)1 << 20) + 1};
  void* held[4] = {};
  try {
    for (int i = 0; i < h.iterations; ++i) {
      const int slot = i & 3;
      h.cache->free(held[slot]);  // nullptr (first round) is not ours: ignored
      held[slot] = nullptr;
      held[slot] = h.cache->alloc(sizes[(i + h.thread) % 7], (MemCategory)((5 * i + h.thread) % (int)MemCategory::Count));
      std::memset(held[slot], h.thread, 1);
    }
  } catch (const Error& e) {
    std::lock_guard<std::mutex> lock(*h.mu);
    if (h.error->empty()) *h.code = e.code, *h.error = e.what();
  }
  for (void* p : held) h.cache->free(p);
  return nullptr;
}

void hammer(BlockCache& cache, int threads, int iterations) {
  std::mutex mu;
  Code code = Code::Internal;
  std::string error;
  std::vector<Hammer> args(threads);
  std::vector<pthread_t> ids(threads);
  int started = 0;
  for (; started < threads; ++started) {
    args[started] = {&cache, started, iterations, &mu, &code, &error};
    if (pthread_create(&ids[started], nullptr, hammer_thread, &args[started]) != 0) break;
  }
  for (int t = 0; t < started; ++t) pthread_join(ids[t], nullptr);
  if (started < threads) fail(Code::Internal, "poolSelfTest: could not start a thread");
  if (!error.empty()) fail(code, error);
}

Napi::Value PoolSelfTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a(info, "poolSelfTest");
  if (!a.has(0) || !a.value(0).IsArray()) throw coded_error(env, Code::InvalidArgument, "poolSelfTest: steps must be an array");
  Napi::Array steps = a.value(0).As<Napi::Array>();
  HostSource src((size_t)a.index(1, "capacity"));
  BlockCache cache(src);
  std::vector<void*> ptrs(steps.Length(), nullptr);
  Napi::Array out = Napi::Array::New(env, steps.Length());
  for (uint32_t i = 0; i < steps.Length(); ++i) {
    const std::string where = "poolSelfTest: step " + std::to_string(i);
    auto bad = [&](const std::string& what) { return coded_error(env, Code::InvalidArgument, where + ": " + what); };
    if (!steps.Get(i).IsObject()) throw bad("must be an object");
    Napi::Object s = steps.Get(i).As<Napi::Object>();
    auto int_field = [&](const char* k, double max) {
      Napi::Value v = s.Get(k);
      const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0 && d <= max) || d != (double)(uint64_t)d) throw bad(std::string(k) + " must be an integer in [0, " + std::to_string((uint64_t)max) + "]");
      return (uint64_t)d;
    };
    const std::string op = s.Get("op").IsString() ? s.Get("op").As<Napi::String>().Utf8Value() : "";
    Napi::Object r = Napi::Object::New(env);
    try {
      if (op == "alloc") {
        const uint64_t bytes = int_field("bytes", 9007199254740991.0);
        MemCategory cat = MemCategory::Other;
        if (s.Has("category") && (!s.Get("category").IsString() ||
                                  !mem_category_from_name(s.Get("category").As<Napi::String>().Utf8Value().c_str(), &cat)))
          throw bad("unknown category");
        ptrs[i] = cache.alloc((size_t)bytes, cat);
        r.Set("address", (double)(uintptr_t)ptrs[i]);
        if (bytes && bytes <= BlockCache::kMaxBytes) r.Set("block", (double)BlockCache::block_size((size_t)bytes));
      } else if (op == "free") {
        const uint64_t step = int_field("step", i);
        r.Set("freed", cache.free(ptrs[step]));
      } else if (op == "release") {
        cache.release_cached();
      } else if (op == "resetPeaks") {
        cache.reset_peaks();
      } else if (op == "hammer") {
        hammer(cache, (int)int_field("threads", 64), (int)int_field("iterations", 1e7));
      } else {
        throw bad("op must be alloc, free, release, resetPeaks or hammer");
      }
    } catch (const Error& e) {
      Napi::Object err = Napi::Object::New(env);
      err.Set("code", code_name(e.code));
      err.Set("message", e.what());
      r.Set("error", err);
    }
    r.Set("stats", stats_object(env, cache.stats()));
    out.Set(i, r);
  }
  return out;
}

}  // namespace

void register_pool(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceMemory", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                return stats_object(info.Env(), dev_stats());
              }, "deviceMemory"));
  exports.Set("deviceResetPeaks", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                dev_reset_peaks();
                return info.Env().Undefined();
              }, "deviceResetPeaks"));
  exports.Set("deviceReleaseCache", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                dev_release_cache();
                return info.Env().Undefined();
              }, "deviceReleaseCache"));
  exports.Set("deviceAlloc", Napi::Function::New(env, DeviceAlloc, "deviceAlloc"));
  exports.Set("deviceFree", Napi::Function::New(env, DeviceFree, "deviceFree"));
  export_op(env, exports, "deviceUpload", parse_upload);
  export_op(env, exports, "deviceDownload", parse_download);
  exports.Set("poolSelfTest", Napi::Function::New(env, PoolSelfTest, "poolSelfTest"));
}

}  // namespace cuda
}  // namespace zt
