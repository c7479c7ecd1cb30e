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

inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

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
    // A new worker starts having seen the current generation (the last job is long finished).
    for (int i = 0; i < n - 1; ++i) workers_.emplace_back([this, now] { worker_loop(now); });
    threads_.store(n);
  }

  // The caller waits for the job's tasks, not for the workers: a worker that wakes after the
  // caller has run every task finds none left and goes back to sleep, so a short job does not
  // wait for a thread wake-up (tens of microseconds on a VM).
  void run(size_t n, void (*fn)(void*, size_t), void* ctx) {
    if (n == 0) return;
    std::lock_guard<std::mutex> g(run_mu_);
    if (workers_.empty() || n == 1) {
      for (size_t i = 0; i < n; ++i) fn(ctx, i);
      return;
    }
    Job job;
    bool wake;
    {
      std::lock_guard<std::mutex> lk(mu_);
      job = Job{++generation_, n, fn, ctx};
      published_.store(generation_);
      wake = sleepers_ > 0;
      job_ = job;
      done_.store(0);
      error_ = nullptr;
      next_.store(ticket(job.gen, 0));
    }
    if (wake) cv_.notify_all();  // spinning workers see published_ without a wake-up
    drain(job);
    // The last tasks usually end within microseconds of ours: watch for them before sleeping, since
    // a futex wake-up of the caller costs tens of microseconds on a VM.
    for (int i = 0; i < kSpins && done_.load() != n; ++i) spin_pause();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return done_.load() == n; });
    job_.fn = nullptr;
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

  struct Job {
    uint64_t gen;
    size_t n;
    void (*fn)(void*, size_t);
    void* ctx;
  };
  // next_ holds the job's generation (high 32 bits) and its next task index: a worker still holding
  // an older job cannot take (and lose, or run with the wrong function) a task of the current one.
  static uint64_t ticket(uint64_t gen, uint64_t i) { return (gen << 32) | i; }

  // Takes tasks of `job` until none is left (or the pool has moved on to a later job).
  void drain(const Job& job) {
    for (;;) {
      uint64_t t = next_.load();
      size_t i;
      do {
        i = (size_t)(t & 0xffffffffu);
        if ((t >> 32) != (job.gen & 0xffffffffu) || i >= job.n) return;
      } while (!next_.compare_exchange_weak(t, t + 1));
      size_t finished = 1;
      try {
        job.fn(job.ctx, i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
        // the tasks nobody has taken yet are skipped: count them as finished
        uint64_t u = next_.load();
        while ((u & 0xffffffffu) < job.n && !next_.compare_exchange_weak(u, ticket(job.gen, job.n))) {
        }
        if ((u & 0xffffffffu) < job.n) finished += job.n - (size_t)(u & 0xffffffffu);
      }
      if (done_.fetch_add(finished) + finished == job.n) {
        std::lock_guard<std::mutex> lk(mu_);
        done_cv_.notify_one();
      }
    }
  }

  // A worker wakes once per generation (new job) and helps with whatever tasks are left. After a
  // job it watches for the next one for a short while before sleeping: a decode step is ~100 short
  // jobs, and a futex wake-up per job costs more than the job on a VM.
  void worker_loop(uint64_t seen) {
    for (;;) {
      for (int i = 0; i < kSpins && published_.load(std::memory_order_relaxed) == seen && !stopping_.load(std::memory_order_relaxed); ++i)
        spin_pause();
      Job job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        ++sleepers_;
        cv_.wait(lk, [&] { return stopping_ || generation_ != seen; });
        --sleepers_;
        if (stopping_) return;
        seen = generation_;
        job = job_;
      }
      if (job.fn) drain(job);
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
  std::atomic<bool> stopping_{false};  // written under mu_; spinning workers read it without
  uint64_t generation_ = 0;
  std::atomic<uint64_t> published_{0};     // generation_, readable without the lock (spinning workers)
  int sleepers_ = 0;                       // workers blocked on cv_ (under mu_)
  static constexpr int kSpins = 2000;      // ~20-50 us of pause instructions
  Job job_{0, 0, nullptr, nullptr};  // the current job (under mu_)
  std::atomic<uint64_t> next_{0};    // ticket(generation, next task index)
  std::atomic<size_t> done_{0};      // tasks of the current job finished (or skipped after an error)
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
