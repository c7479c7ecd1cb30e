#include "napi_util.h"

#include <cmath>

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
    if (s->freed || s->dispose_pending)
      throw coded_error(env(), Code::Disposed, std::string(fn_) + ": " + name + " was disposed");
    bool pinned = false;
    for (auto& p : pins) pinned = pinned || p == s;
    if (!pinned) {
      s->pins++;
      pins.push_back(s);
      keep.push_back(Napi::Persistent(v.As<Napi::Object>()));
    }
    return {static_cast<uint8_t*>(s->data), s->bytes};
  }
  Napi::ArrayBuffer ab;
  size_t off = 0, len = 0;
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    ab = ta.ArrayBuffer();
    off = ta.ByteOffset();
    len = ta.ByteLength();
  } else if (v.IsDataView()) {
    Napi::DataView dv = v.As<Napi::DataView>();
    ab = dv.ArrayBuffer();
    off = dv.ByteOffset();
    len = dv.ByteLength();
  } else if (v.IsArrayBuffer()) {
    ab = v.As<Napi::ArrayBuffer>();
    len = ab.ByteLength();
  } else {
    bad(i, name, "must be a NativeBuffer, TypedArray, ArrayBuffer or DataView");
  }
  if (ab.IsDetached()) throw coded_error(env(), Code::Disposed, std::string(fn_) + ": " + name + " is detached");
  keep.push_back(Napi::Persistent(ab.As<Napi::Object>()));
  return {static_cast<uint8_t*>(ab.Data()) + off, len};
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

QTensorView Args::qtensor(size_t i, const char* name) {
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
  if (!fmt.IsNumber()) bad(i, name, ".format must be a format code");
  int f = fmt.As<Napi::Number>().Int32Value();
  if (f < 0 || f > (int)QFormat::Fp16) bad(i, name, ".format code out of range");
  QTensorView q{};
  q.format = (QFormat)f;
  q.rows = u64_field("rows");
  q.cols = u64_field("cols");
  q.group = u64_field("group");
  if (q.rows > ((uint64_t)1 << 40) || q.cols > ((uint64_t)1 << 40)) bad(i, name, "is too large");
  if (q.group != 0 && q.group != q.cols && q.group != 32 && q.group != 64 && q.group != 128)
    bad(i, name, ".group must be 0 (per tensor), cols (per row), 32, 64 or 128");
  // Memory fields are read through a temporary Args so they get the same checks and pinning.
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
    return s.data;
  };
  q.data = region("data", q.rows * qformat_row_bytes(q.format, q.cols));
  if (qformat_has_scales(q.format)) {
    q.scales = reinterpret_cast<float*>(region("scales", qt_scale_count(q) * 4));
    if ((uintptr_t)q.scales % 4) bad(i, name, ".scales must be 4-byte aligned");
  } else if (q.group != 0) {
    bad(i, name, ".group must be 0 for bf16/fp16 (no scales)");
  }
  Napi::Value z = field("zeros");
  if (!z.IsUndefined() && !z.IsNull()) {
    if (q.format != QFormat::Int4) bad(i, name, ".zeros is only for int4");
    q.zeros = region("zeros", qt_scale_count(q));
  }
  return q;
}

namespace {

void unpin_all(Napi::Env env, std::vector<std::shared_ptr<Storage>>& pins) {
  for (auto& s : pins) NativeBuffer::unpin(env, s);
  pins.clear();
}

class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, Job job, Args& args, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), job_(std::move(job)),
        keep_(std::move(args.keep)), pins_(std::move(args.pins)) {}
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
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    unpin_all(env, pins_);
    deferred_.Resolve(job_.result ? job_.result(env) : env.Undefined());
  }
  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    unpin_all(env, pins_);
    deferred_.Reject(coded_error(env, code_, e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Job job_;
  std::vector<Napi::ObjectReference> keep_;
  std::vector<std::shared_ptr<Storage>> pins_;
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
    job.run();
  } catch (const Error& e) {
    unpin_all(env, args.pins);
    throw coded_error(env, e.code, e.what());
  } catch (const std::bad_alloc&) {
    unpin_all(env, args.pins);
    throw coded_error(env, Code::OOM, op->name + ": out of host memory");
  } catch (...) {
    unpin_all(env, args.pins);
    throw;
  }
  unpin_all(env, args.pins);
  return job.result ? job.result(env) : env.Undefined();
}

Napi::Value run_async(const Napi::CallbackInfo& info) {
  auto* op = static_cast<OpInfo*>(info.Data());
  Napi::Env env = info.Env();
  Args args(info, op->name.c_str());
  Job job;
  try {
    job = op->parser(args);
  } catch (const Napi::Error& e) {
    unpin_all(env, args.pins);
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(e.Value());
    return d.Promise();
  } catch (const Error& e) {
    unpin_all(env, args.pins);
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(coded_error(env, e.code, e.what()).Value());
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

}  // namespace zt
