// One GPU op called with host arrays: a private stream, the CUDA events timing its kernels, and
// release of both on every path (errors included). Device memory comes from pool.h DeviceBuffer:
// declare the buffers before the TimedCall, so an error path drains the stream before they go back
// to the pool (destructors run in reverse order).
#pragma once
#include <cuda_runtime.h>

#include "device.h"

namespace zt {
namespace cuda {

struct TimedCall {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  cudaGraph_t graph = nullptr;  // a graph captured on the stream, if the op makes one
  cudaGraphExec_t exec = nullptr;
  TimedCall() {
    require_device();
    try {
      check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
      check(cudaEventCreate(&start), "cudaEventCreate");
      check(cudaEventCreate(&stop), "cudaEventCreate");
    } catch (...) {  // no destructor runs for a constructor that throws
      release();
      throw;
    }
  }
  ~TimedCall() { release(); }
  TimedCall(const TimedCall&) = delete;
  TimedCall& operator=(const TimedCall&) = delete;

  void to_device(void* dev, const void* host, size_t bytes) {
    if (bytes) check(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync H2D");
  }
  void to_host(void* host, const void* dev, size_t bytes) {
    if (bytes) check(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync D2H");
  }
  void begin() { check(cudaEventRecord(start, stream), "cudaEventRecord"); }
  void end(const char* what) {
    check(cudaGetLastError(), what);
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
  }
  // Waits for everything queued; returns the milliseconds between begin() and end().
  float finish(const char* what) {
    check(cudaStreamSynchronize(stream), what);
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    return ms;
  }

 private:
  void release() {
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    if (stream && cudaStreamIsCapturing(stream, &capturing) == cudaSuccess && capturing != cudaStreamCaptureStatusNone) {
      cudaGraph_t partial = nullptr;  // an exception left a capture open: end it (synchronising would be illegal)
      if (cudaStreamEndCapture(stream, &partial) == cudaSuccess && partial) cudaGraphDestroy(partial);
    }
    if (stream) cudaStreamSynchronize(stream);
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    if (stream) cudaStreamDestroy(stream);
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    cudaGetLastError();
  }
};

// Blocks for a grid-stride loop over `items`: enough to fill every SM several times, no more.
static inline unsigned grid_for(uint64_t items, int threads) {
  int dev = 0, sms = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  const uint64_t need = (items + threads - 1) / threads, cap = (uint64_t)sms * 16;
  return (unsigned)(need < cap ? (need ? need : 1) : cap);
}

}  // namespace cuda
}  // namespace zt
