#include "threadpool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace zt {
namespace {

class Pool {
 public:
  Pool() { resize(default_threads()); }
  ~Pool() { stop_workers(); }

  // Lock-free: callers (cpuInfo, kernels sizing their work) must not wait for a running job.
  int threads() const { return threads_.load(); }

  void resize(int n) {
    if (n < 1) n = 1;
    std::lock_guard<std::mutex> g(run_mu_);
    stop_workers();
    uint64_t now;
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = false;
      now = generation_;
    }
    // A new worker starts having seen the current generation: it must not take the last job (long
    // finished) for a new one and count itself out of the next job twice (that job's caller then
    // waited forever on active_ = -1, or returned while a task still ran).
    for (int i = 0; i < n - 1; ++i) workers_.emplace_back([this, now] { worker_loop(now); });
    threads_.store(n);
  }

  void run(size_t n, void (*fn)(void*, size_t), void* ctx) {
    if (n == 0) return;
    std::lock_guard<std::mutex> g(run_mu_);
    if (workers_.empty() || n == 1) {
      for (size_t i = 0; i < n; ++i) fn(ctx, i);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = fn;
      ctx_ = ctx;
      n_tasks_ = n;
      next_.store(0);
      error_ = nullptr;
      active_ = (int)workers_.size();
      ++generation_;
    }
    cv_.notify_all();
    drain();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return active_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static int default_threads() {
    if (const char* s = std::getenv("ZOTUNE_NUM_THREADS")) {
      int n = std::atoi(s);
      if (n > 0) return n;
    }
    unsigned hc = std::thread::hardware_concurrency();
    return hc ? (int)hc : 1;
  }

  void drain() {
    for (;;) {
      size_t i = next_.fetch_add(1);
      if (i >= n_tasks_) return;
      try {
        fn_(ctx_, i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_tasks_);
      }
    }
  }

  // Each job raises the generation once and counts every worker in active_; a worker wakes once per
  // generation, so each job gets exactly one decrement per worker.
  void worker_loop(uint64_t seen) {
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      drain();
      std::lock_guard<std::mutex> lk(mu_);
      if (--active_ == 0) done_cv_.notify_one();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::mutex run_mu_;  // one job at a time (resize waits for the running one)
  std::atomic<int> threads_{1};
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  bool stopping_ = false;
  uint64_t generation_ = 0;
  int active_ = 0;
  void (*fn_)(void*, size_t) = nullptr;
  void* ctx_ = nullptr;
  size_t n_tasks_ = 0;
  std::atomic<size_t> next_{0};
  std::exception_ptr error_;
};

Pool& pool() {
  // Leaked on purpose: joining threads from a static destructor at process exit can deadlock.
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

int pool_threads() { return pool().threads(); }
void pool_set_threads(int n) { pool().resize(n); }
void pool_run(size_t n, void (*fn)(void*, size_t), void* ctx) { pool().run(n, fn, ctx); }

}  // namespace zt
