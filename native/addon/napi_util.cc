#include "napi_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../cpu/memory.h"

namespace zt {

Napi::Error coded_error(Napi::Env env, Code code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code_name(code)));
  return e;
}

void Args::bad(size_t i, const char* name, const std::string& what) {
  (void)i;
  throw coded_error(env(), Code::InvalidArgument, std::string(fn_) + ": " + name + " " + what);
}

Span Args::mem(size_t i, const char* name) {
  if (!has(i)) bad(i, name, "is required");
  return mem_value(info_[i], name);
}

Span Args::mem_value(Napi::Value v, const char* name) {
  const size_t i = 0;
  NativeBuffer* nb = nullptr;
  if (NativeBuffer::Is(v, &nb)) {
    auto s = nb->storage();
    pin(s, name);
    keep.push_back(Napi::Persistent(v.As<Napi::Object>()));
    return {static_cast<uint8_t*>(s->data), s->bytes, s.get()};
  }
  Napi::Value buf;
  size_t off = 0, len = 0;
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    buf = ta.ArrayBuffer();
    off = ta.ByteOffset();
    len = ta.ByteLength();
  } else if (v.IsDataView()) {
    Napi::DataView dv = v.As<Napi::DataView>();
    buf = dv.ArrayBuffer();
    off = dv.ByteOffset();
    len = dv.ByteLength();
  } else if (v.IsArrayBuffer()) {
    buf = v;
    len = v.As<Napi::ArrayBuffer>().ByteLength();
  } else {
    bad(i, name, "must be a NativeBuffer, TypedArray, ArrayBuffer or DataView");
  }
  // A SharedArrayBuffer passes the TypedArray check but N-API gives no access to its memory (and
  // other threads could change indices under the checks).
  if (!buf.IsArrayBuffer()) bad(i, name, "is backed by a SharedArrayBuffer, which is not supported (use a Tensor or an ArrayBuffer)");
  Napi::ArrayBuffer ab = buf.As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) throw coded_error(env(), Code::Disposed, std::string(fn_) + ": " + name + " is detached");
  uint8_t* base = static_cast<uint8_t*>(ab.Data());
  if (std::shared_ptr<Storage> s = NativeBuffer::owner_of(base)) {
    pin(s, name);  // a view of a NativeBuffer: memory the engine owns
    return {base + off, len, s.get()};
  }
  return {js_memory(ab, base, ab.ByteLength()) + off, len};
}

void Args::pin(const std::shared_ptr<Storage>& s, const char* name) {
  if (s->freed || s->dispose_pending)
    throw coded_error(env(), Code::Disposed, std::string(fn_) + ": " + name + " was disposed");
  for (auto& p : pins)
    if (p == s) return;
  s->pins++;
  s->uses++;
  pins.push_back(s);
}

// The bytes of a JS-owned ArrayBuffer the op will use: for an async op a copy, shared by every
// argument over the same ArrayBuffer (so aliasing checks still see aliases). Kept whole rather than
// per view for that reason.
uint8_t* Args::js_memory(Napi::ArrayBuffer ab, uint8_t* data, size_t bytes) {
  for (JsMem& m : js_mem)
    if (m.data == data && m.ab.Value().StrictEquals(ab)) return m.copy ? m.copy.get() : data;
  JsMem m{Napi::Persistent(ab), data, bytes, nullptr};
  if (async_ && bytes) {
    auto* c = static_cast<uint8_t*>(host_alloc(2 * bytes, MemCategory::Workspace));
    m.copy = std::shared_ptr<uint8_t>(c, [bytes](uint8_t* p) { host_free(p, 2 * bytes, MemCategory::Workspace); });
    std::memcpy(c, data, bytes);
    std::memcpy(c + bytes, data, bytes);
  }
  js_mem.push_back(std::move(m));
  return js_mem.back().copy ? js_mem.back().copy.get() : data;
}

void Args::check_js_memory() {
  for (JsMem& m : js_mem) {
    Napi::ArrayBuffer ab = m.ab.Value();
    if (ab.IsDetached() || ab.Data() != m.data || ab.ByteLength() < m.bytes)
      throw coded_error(env(), Code::Disposed, std::string(fn_) + ": an ArrayBuffer argument was detached or resized while the arguments were read");
  }
}

uint64_t Args::mul(uint64_t x, uint64_t y, const char* what) {
  if (x != 0 && y > ((uint64_t)1 << 61) / x) throw coded_error(env(), Code::OutOfRange, std::string(fn_) + ": " + what + " is too large");
  return x * y;
}

void Args::check_region(Span s, const char* name, uint64_t off, uint64_t count, size_t elsize) {
  if (off > s.bytes || count > (s.bytes - off) / elsize)
    throw coded_error(env(), Code::OutOfRange,
                      std::string(fn_) + ": " + name + " region [" + std::to_string(off) + ", +" +
                          std::to_string(count) + " x " + std::to_string(elsize) + " bytes) exceeds its " +
                          std::to_string(s.bytes) + " bytes");
  if (((uintptr_t)(s.data + off)) % elsize != 0)
    throw coded_error(env(), Code::InvalidArgument,
                      std::string(fn_) + ": " + name + " byte offset is not aligned to " + std::to_string(elsize));
}

double Args::num(size_t i, const char* name) {
  if (!has(i) || !info_[i].IsNumber()) bad(i, name, "must be a number");
  return info_[i].As<Napi::Number>().DoubleValue();
}

uint64_t Args::index(size_t i, const char* name) {
  if (has(i) && info_[i].IsBigInt()) {
    bool lossless;
    uint64_t v = info_[i].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless || v >= ((uint64_t)1 << 63)) bad(i, name, "must be a non-negative integer below 2^63");
    return v;
  }
  double d = num(i, name);
  if (!(d >= 0) || d != std::floor(d) || d > 9007199254740991.0) bad(i, name, "must be a non-negative integer");
  return (uint64_t)d;
}

uint64_t Args::u64(size_t i, const char* name) {
  if (has(i) && info_[i].IsBigInt()) {
    bool lossless;
    uint64_t v = info_[i].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) bad(i, name, "must be an integer in [0, 2^64)");
    return v;
  }
  return index(i, name);
}

uint32_t Args::u32(size_t i, const char* name) {
  uint64_t v = index(i, name);
  if (v > 0xffffffffu) bad(i, name, "must fit in 32 bits");
  return (uint32_t)v;
}

int32_t Args::i32(size_t i, const char* name) {
  double d = num(i, name);
  if (d != std::floor(d) || d < -2147483648.0 || d > 2147483647.0) bad(i, name, "must be a 32-bit integer");
  return (int32_t)d;
}

std::string Args::str(size_t i, const char* name) {
  if (!has(i) || !info_[i].IsString()) bad(i, name, "must be a string");
  return info_[i].As<Napi::String>().Utf8Value();
}

bool Args::boolean(size_t i, const char* name) {
  if (!has(i) || !info_[i].IsBoolean()) bad(i, name, "must be a boolean");
  return info_[i].As<Napi::Boolean>().Value();
}

namespace {
constexpr uint64_t kMaxQElems = (uint64_t)1 << 48;
}

QTensorView Args::qtensor(size_t i, const char* name, QOwners* owners) {
  if (!has(i) || !info_[i].IsObject()) bad(i, name, "must be a quantized tensor descriptor");
  Napi::Object o = info_[i].As<Napi::Object>();
  auto field = [&](const char* k) { return o.Get(k); };
  auto u64_field = [&](const char* k) -> uint64_t {
    Napi::Value v = field(k);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0) || d != std::floor(d) || d > 9007199254740991.0)
      bad(i, name, std::string(".") + k + " must be a non-negative integer");
    return (uint64_t)d;
  };
  Napi::Value fmt = field("format");
  const double f = fmt.IsNumber() ? fmt.As<Napi::Number>().DoubleValue() : -1;
  if (!(f >= 0 && f <= (double)QFormat::Fp16 && f == std::floor(f)))
    bad(i, name, ".format must be an integer format code in [0, " + std::to_string((int)QFormat::Fp16) + "]");
  QTensorView q{};
  q.format = (QFormat)(int)f;
  q.rows = u64_field("rows");
  q.cols = u64_field("cols");
  q.group = u64_field("group");
  // Every size derived from the shape (bytes, element and scale counts, times 4 or 8) must fit in
  // 64 bits: bound the element count, not only each side.
  if (q.rows > kMaxQElems || q.cols > kMaxQElems || (q.cols && q.rows > kMaxQElems / q.cols))
    bad(i, name, "is too large (rows * cols must be at most 2^48)");
  if (q.group != 0 && q.group != q.cols && q.group != 32 && q.group != 64 && q.group != 128)
    bad(i, name, ".group must be 0 (per tensor), cols (per row), 32, 64 or 128");
  // Memory fields are read through a temporary Args so they get the same checks and pinning.
  Storage* owner = nullptr;  // of the last region read
  auto region = [&](const char* k, uint64_t bytes) -> uint8_t* {
    Napi::Value v = field(k);
    NativeBuffer* nb = nullptr;
    if (!(NativeBuffer::Is(v, &nb) || v.IsTypedArray() || v.IsArrayBuffer() || v.IsDataView()))
      bad(i, name, std::string(".") + k + " must be a NativeBuffer or TypedArray");
    Span s = mem_value(v, k);
    if (bytes > s.bytes)
      throw coded_error(env(), Code::OutOfRange,
                        std::string(fn_) + ": " + name + "." + k + " holds " + std::to_string(s.bytes) + " bytes, needs " +
                            std::to_string(bytes));
    owner = s.owner;
    return s.data;
  };
  q.data = region("data", q.rows * qformat_row_bytes(q.format, q.cols));
  if (qformat_has_scales(q.format)) {
    q.scales = reinterpret_cast<float*>(region("scales", qt_scale_count(q) * 4));
    if (owners) owners->scales = owner;
    if ((uintptr_t)q.scales % 4) bad(i, name, ".scales must be 4-byte aligned");
  } else if (q.group != 0) {
    bad(i, name, ".group must be 0 for bf16/fp16 (no scales)");
  }
  Napi::Value z = field("zeros");
  if (!z.IsUndefined() && !z.IsNull()) {
    if (q.format != QFormat::Int4) bad(i, name, ".zeros is only for int4");
    q.zeros = region("zeros", qt_scale_count(q));
    if (owners) owners->zeros = owner;
  }
  return q;
}

namespace {

void unpin_all(Napi::Env env, std::vector<std::shared_ptr<Storage>>& pins) {
  for (auto& s : pins) NativeBuffer::unpin(env, s);
  pins.clear();
}

// Writes an async op's results from its copies back into the JS ArrayBuffers: only the bytes the op
// changed (against the snapshot), so JS writes to an input meanwhile are not undone. False if a
// buffer was detached or shrunk meanwhile (its results are lost).
bool write_back(std::vector<JsMem>& mem) {
  bool ok = true;
  for (JsMem& m : mem) {
    if (!m.copy) continue;
    Napi::ArrayBuffer ab = m.ab.Value();
    if (ab.IsDetached() || ab.Data() != m.data || ab.ByteLength() < m.bytes) {
      ok = false;
      continue;
    }
    const uint8_t *c = m.copy.get(), *snap = c + m.bytes;
    for (size_t i = 0; i < m.bytes; i += 64) {  // whole blocks compared first: most of an input is untouched
      const size_t n = std::min<size_t>(64, m.bytes - i);
      if (std::memcmp(c + i, snap + i, n) == 0) continue;
      for (size_t j = i; j < i + n; ++j)
        if (c[j] != snap[j]) m.data[j] = c[j];
    }
  }
  mem.clear();
  return ok;
}

// The coded error for anything a parser or a job throws; Napi::Error is already a JS error.
Napi::Error to_js_error(Napi::Env env, const std::string& op, std::exception_ptr ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const Napi::Error& e) {
    return e;
  } catch (const Error& e) {
    return coded_error(env, e.code, e.what());
  } catch (const std::bad_alloc&) {
    return coded_error(env, Code::OOM, op + ": out of host memory");
  } catch (const std::exception& e) {
    return coded_error(env, Code::Internal, op + ": " + e.what());
  } catch (...) {
    return coded_error(env, Code::Internal, op + ": unknown native error");
  }
}

class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, Job job, Args& args, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), job_(std::move(job)),
        keep_(std::move(args.keep)), pins_(std::move(args.pins)), js_mem_(std::move(args.js_mem)),
        holds_(std::move(args.holds)), name_(name) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      job_.run();
    } catch (const Error& e) {
      code_ = e.code;
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = Code::OOM;
      SetError("out of host memory");
    } catch (const std::exception& e) {
      code_ = Code::Internal;
      SetError(e.what());
    } catch (...) {
      code_ = Code::Internal;
      SetError("unknown native error");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    unpin_all(env, pins_);
    if (!write_back(js_mem_)) {
      deferred_.Reject(coded_error(env, Code::Disposed, name_ + ": an ArrayBuffer argument was detached while the op ran; "
                                                                "its results are lost (keep it attached, or use Tensor storage)")
                           .Value());
      return;
    }
    deferred_.Resolve(job_.result ? job_.result(env) : env.Undefined());
  }
  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    unpin_all(env, pins_);
    write_back(js_mem_);  // what the op wrote before failing, as a zero-copy op would leave it
    deferred_.Reject(coded_error(env, code_, e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Job job_;
  std::vector<Napi::ObjectReference> keep_;
  std::vector<std::shared_ptr<Storage>> pins_;
  std::vector<JsMem> js_mem_;
  std::vector<std::shared_ptr<void>> holds_;
  std::string name_;
  Code code_ = Code::Internal;
};

struct OpInfo {
  OpParser parser;
  std::string name;
};

Napi::Value run_sync(const Napi::CallbackInfo& info) {
  auto* op = static_cast<OpInfo*>(info.Data());
  Napi::Env env = info.Env();
  Args args(info, op->name.c_str());
  Job job;
  try {
    job = op->parser(args);
    args.check_js_memory();  // the parser's last JS call is behind us: no JS runs until the job ends
    job.run();
  } catch (...) {
    unpin_all(env, args.pins);
    throw to_js_error(env, op->name, std::current_exception());
  }
  unpin_all(env, args.pins);
  return job.result ? job.result(env) : env.Undefined();
}

Napi::Value run_async(const Napi::CallbackInfo& info) {
  auto* op = static_cast<OpInfo*>(info.Data());
  Napi::Env env = info.Env();
  Args args(info, op->name.c_str(), true);
  Job job;
  try {
    job = op->parser(args);
  } catch (...) {
    unpin_all(env, args.pins);
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(to_js_error(env, op->name, std::current_exception()).Value());
    return d.Promise();
  }
  auto* w = new OpWorker(env, std::move(job), args, op->name.c_str());
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

void export_op(Napi::Env env, Napi::Object exports, const char* name, OpParser parser) {
  // Leaked deliberately: lives as long as the functions that point at it (the addon instance).
  auto* info = new OpInfo{parser, name};
  exports.Set(name, Napi::Function::New(env, run_sync, name, info));
  std::string async_name = std::string(name) + "Async";
  exports.Set(async_name, Napi::Function::New(env, run_async, async_name, info));
}

Napi::Object mem_stats_object(Napi::Env env, const int64_t* live, const int64_t* peak, int64_t total_live, int64_t total_peak,
                              int64_t cached) {
  Napi::Object lv = Napi::Object::New(env), pk = Napi::Object::New(env);
  for (int c = 0; c < (int)MemCategory::Count; ++c) {
    lv.Set(mem_category_name((MemCategory)c), (double)live[c]);
    pk.Set(mem_category_name((MemCategory)c), (double)peak[c]);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("live", lv);
  o.Set("peak", pk);
  o.Set("totalLive", (double)total_live);
  o.Set("totalPeak", (double)total_peak);
  o.Set("cached", (double)cached);
  return o;
}

}  // namespace zt
