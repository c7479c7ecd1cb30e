// A generation loop's tokens streamed to JS (both addons' llamaGenerate): N-API glue only.
#pragma once
#include <napi.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "llama_args.h"

namespace zt {

// Streams each generation step's tokens to a JS function from the thread running the loop (the
// event loop stays free); the function returning false stops the loop after the steps in flight.
// Steps are sent as they come, except that one sent less than kWindow after the previous waits
// for the next send: every send wakes the JS thread (~40 us of the loop's time on a VM, 7-10 % of a
// tiny-llama step), and a person reading streamed text does not see 2 ms.
class StepStream {
 public:
  StepStream(Napi::Env env, Napi::Function fn)
      : fn_(Napi::ThreadSafeFunction::New(env, fn, "zotune generate", 0, 1)), stop_(std::make_shared<std::atomic<bool>>(false)) {}
  ~StepStream() { close(); }
  // Adds the step; false once JS asked to stop or the environment is shutting down.
  bool send(size_t step, const int32_t* next, size_t B) {
    if (stop_->load()) return false;
    if (pending_.empty()) first_ = step;
    pending_.insert(pending_.end(), next, next + B);
    const auto now = std::chrono::steady_clock::now();
    if (step > 0 && now - last_ < kWindow) return true;
    last_ = now;
    return flush();
  }
  // Sends what is pending, then lets the function go (the loop's last call).
  void close() {
    if (closed_.exchange(true)) return;
    flush();
    fn_.Release();
  }

 private:
  static constexpr std::chrono::microseconds kWindow{2000};
  struct Msg {
    std::shared_ptr<std::atomic<bool>> stop;
    size_t first;
    std::vector<int32_t> tokens;  // steps first, first + 1, ...: B tokens each
  };
  bool flush() {
    if (pending_.empty()) return true;
    auto* m = new Msg{stop_, first_, std::move(pending_)};
    pending_.clear();
    if (fn_.NonBlockingCall(m, deliver) != napi_ok) {
      delete m;
      return false;
    }
    return true;
  }
  static void deliver(Napi::Env env, Napi::Function fn, Msg* m) {
    std::unique_ptr<Msg> own(m);
    if (!env || !fn) return;
    Napi::Int32Array t = Napi::Int32Array::New(env, m->tokens.size());
    std::copy(m->tokens.begin(), m->tokens.end(), t.Data());
    try {
      Napi::Value r = fn.Call({t, Napi::Number::New(env, (double)m->first)});
      if (r.IsBoolean() && !r.As<Napi::Boolean>().Value()) m->stop->store(true);
    } catch (const Napi::Error& e) {
      m->stop->store(true);
      e.ThrowAsJavaScriptException();
    }
  }
  Napi::ThreadSafeFunction fn_;
  std::shared_ptr<std::atomic<bool>> stop_;
  std::atomic<bool> closed_{false};
  std::vector<int32_t> pending_;
  size_t first_ = 0;
  std::chrono::steady_clock::time_point last_;
};

// A generate call's arguments from argument i on: sample | null, seed, maxNew, stopTokens | null,
// onStep | null (both addons' llamaGenerate).
struct GenerateArgs {
  std::shared_ptr<GenerateParams> g;
  std::shared_ptr<StepStream> stream;  // null without onStep
};
inline GenerateArgs generate_args(Args& a, size_t i, const char* op) {
  GenerateArgs r{std::make_shared<GenerateParams>(), nullptr};
  r.g->sample = llama_sample_arg(a, i, op);
  r.g->seed = a.u64(i + 1, "seed");
  r.g->max_new = (size_t)a.index(i + 2, "maxNew");
  if (a.has(i + 3)) {
    const size_t n = a.mem(i + 3, "stopTokens").bytes / 4;
    const int32_t* stop = a.copy<int32_t>(i + 3, "stopTokens", 0, n);
    r.g->stop.assign(stop, stop + n);
  }
  if (a.has(i + 4)) {
    if (!a.value(i + 4).IsFunction()) fail(Code::InvalidArgument, std::string(op) + ": onStep must be a function");
    r.stream = std::make_shared<StepStream>(a.env(), a.value(i + 4).As<Napi::Function>());
  }
  return r;
}

// Runs a decode loop whose steps (B tokens each) go to the stream, closed once the loop ends, also
// when a step threw; returns the steps run.
using StepSink = std::function<bool(size_t, const int32_t*)>;
inline size_t run_streamed(StepStream* stream, size_t B, const std::function<size_t(const StepSink&)>& loop) {
  struct Close {
    StepStream* s;
    ~Close() {
      if (s) s->close();  // after the last step was queued
    }
  } close{stream};
  return loop([&](size_t step, const int32_t* next) { return !stream || stream->send(step, next, B); });
}

}  // namespace zt
