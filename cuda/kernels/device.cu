#include <cuda_runtime.h>

#include <atomic>

#include "../../native/common/status.h"
#include "device.h"

#ifndef ZT_CUDA_ARCHS
#define ZT_CUDA_ARCHS "unknown"
#endif

namespace zt {
namespace cuda {
namespace {

__global__ void probe_kernel(int* out) { *out = 0x5a7e; }

bool gpu_unusable(int err) {
  switch (err) {
    case cudaErrorInitializationError:
    case cudaErrorStubLibrary:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorNoDevice:
    case cudaErrorInvalidDevice:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidPtx:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorJitCompilerNotFound:
    case cudaErrorSystemNotReady:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      return true;
    default:
      return false;
  }
}

// Errors after which the context is unusable: every later CUDA call of the process fails too.
bool sticky(int err) {
  switch (err) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorMisalignedAddress:
    case cudaErrorIllegalInstruction:
    case cudaErrorHardwareStackError:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}
std::atomic<int> g_context_lost{0};  // the first sticky error seen, 0 if none

// Runs the probe kernel on the current device: proves the driver, the device and a kernel image
// of this build work together.
int try_kernel() {
  int* d = nullptr;
  int got = 0;
  cudaError_t e = cudaMalloc(&d, sizeof(int));
  if (e == cudaSuccess) {
    probe_kernel<<<1, 1>>>(d);
    e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess && got != 0x5a7e) e = cudaErrorUnknown;
  }
  if (d) cudaFree(d);
  cudaGetLastError();  // clear non-sticky errors for later calls
  return (int)e;
}

}  // namespace

std::string reason(int err) {
  switch (err) {
    case cudaSuccess: return "";
    case cudaErrorInsufficientDriver:
      return "no NVIDIA driver was found, or it is older than the CUDA " + std::to_string(CUDART_VERSION / 1000) +
             " runtime of this build: install an R580 or newer driver (nvidia-smi shows the version)";
    case cudaErrorNoDevice:
      return "the NVIDIA driver sees no CUDA device: check nvidia-smi, and CUDA_VISIBLE_DEVICES if it is set";
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidPtx:
      return std::string("this build has no kernel image for the GPU (built for ") + ZT_CUDA_ARCHS +
             "): rebuild for it with ZOTUNE_CUDA_ARCHS=<compute capability, e.g. 120> npm run build:cuda";
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorJitCompilerNotFound:
      return "the driver cannot JIT-compile this build's PTX for the GPU: update the NVIDIA driver (R580+), or "
             "rebuild for the GPU's architecture with ZOTUNE_CUDA_ARCHS=<cc> npm run build:cuda";
    case cudaErrorCompatNotSupportedOnDevice:
      return "CUDA forward compatibility (the cuda-compat libraries) is not supported on this GPU: remove the "
             "compat libraries from the library path and install a native R580+ driver";
    case cudaErrorSystemDriverMismatch:
      return "the loaded NVIDIA kernel module and libcuda versions differ: reboot after a driver upgrade, or reinstall the driver";
    case cudaErrorStubLibrary:
      return "the libcuda.so found is the toolkit's stub library: remove the stubs folder from LD_LIBRARY_PATH";
    case cudaErrorDevicesUnavailable:
      return "every CUDA device is busy or unavailable (exclusive-process compute mode?): see nvidia-smi";
    case cudaErrorInitializationError:
      return "the CUDA driver failed to initialise: check nvidia-smi and dmesg";
    case cudaErrorSystemNotReady:
      return "the GPU system is not ready (fabric manager not running on an NVSwitch system?)";
    case cudaErrorMemoryAllocation:
      return "out of GPU memory";
    default:
      return std::string(cudaGetErrorString((cudaError_t)err));
  }
}

void check(int err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  std::string msg = std::string(what) + " failed: " + cudaGetErrorName((cudaError_t)err) + " (" +
                    std::to_string(err) + "): " + reason(err);
  if (sticky(err)) {
    int none = 0;
    g_context_lost.compare_exchange_strong(none, err);
    msg += "; the GPU context is lost: later CUDA calls of this process fail (restart the process)";
  }
  if (err == cudaErrorMemoryAllocation) fail(Code::OOM, msg);
  fail(gpu_unusable(err) ? Code::CudaUnavailable : Code::Cuda, msg);
}

void check_launch(const char* kernel) {
  const int err = cudaGetLastError();  // the message is built only on failure: this runs per launch
  if (err != cudaSuccess) check(err, (std::string("launch of ") + kernel).c_str());
}

void require_device() {
  if (int lost = g_context_lost.load())
    fail(Code::CudaUnavailable, std::string("an earlier call hit ") + cudaGetErrorName((cudaError_t)lost) +
                                    ", which leaves the GPU context unusable: restart the process to use the GPU again");
  int n = 0;
  check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  if (n == 0) check(cudaErrorNoDevice, "cudaGetDeviceCount");
}

ProbeResult probe() {
  ProbeResult r;
  r.archs = ZT_CUDA_ARCHS;
  cudaRuntimeGetVersion(&r.runtime_version);
  if (cudaDriverGetVersion(&r.driver_version) != cudaSuccess) r.driver_version = 0;
  auto set_error = [&](int e) {
    r.error = e;
    r.error_name = cudaGetErrorName((cudaError_t)e);
    r.message = cudaGetErrorString((cudaError_t)e);
    r.reason = reason(e);
  };
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  cudaGetLastError();
  if (e == cudaSuccess && n == 0) e = cudaErrorNoDevice;
  if (e != cudaSuccess) {
    set_error(e);
    return r;
  }
  int current = 0;
  cudaGetDevice(&current);
  for (int i = 0; i < n; ++i) {
    DeviceInfo d;
    d.index = i;
    cudaDeviceProp p;
    int err = cudaGetDeviceProperties(&p, i);
    if (err == cudaSuccess) {
      d.name = p.name;
      d.major = p.major;
      d.minor = p.minor;
      d.total_memory = p.totalGlobalMem;
      d.multiprocessors = p.multiProcessorCount;
      err = cudaSetDevice(i);
      if (err == cudaSuccess) err = try_kernel();
    }
    cudaGetLastError();
    d.usable = err == cudaSuccess;
    if (!d.usable) {
      d.error = err;
      d.error_name = cudaGetErrorName((cudaError_t)err);
      d.reason = reason(err);
      if (!r.error) set_error(err);
    }
    r.usable = r.usable || d.usable;
    r.devices.push_back(d);
  }
  cudaSetDevice(current);
  if (r.usable) {  // some device works: the others' errors stay on their entries
    r.error = 0;
    r.error_name.clear();
    r.message.clear();
    r.reason.clear();
  }
  return r;
}

}  // namespace cuda
}  // namespace zt
