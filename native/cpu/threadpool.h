// One persistent, process-wide thread pool shared by every CPU kernel.
// Work is split into tasks whose boundaries never depend on the thread count, and every task
// writes its own output, so results are identical for any number of threads.
#pragma once
#include <stddef.h>

namespace zt {

// Number of threads kernels use (the caller counts as one). Default: ZOTUNE_NUM_THREADS or the
// number of online cores.
int pool_threads();
void pool_set_threads(int n);

// Runs fn(ctx, task) for every task in [0, n) and returns when all are done. The first exception
// thrown by a task is rethrown here. Calls from several threads are serialized.
void pool_run(size_t n, void (*fn)(void*, size_t), void* ctx);

template <class F>
void parallel_for(size_t n, F&& f) {
  pool_run(n, [](void* c, size_t i) { (*static_cast<F*>(c))(i); }, &f);
}

// Splits [0, count) into chunks of `chunk` elements (the last may be shorter) and calls
// f(begin, end) for each in parallel.
template <class F>
void parallel_chunks(size_t count, size_t chunk, F&& f) {
  if (count == 0) return;
  size_t n = (count + chunk - 1) / chunk;
  parallel_for(n, [&](size_t t) {
    size_t b = t * chunk, e = b + chunk < count ? b + chunk : count;
    f(b, e);
  });
}

}  // namespace zt
