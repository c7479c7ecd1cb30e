// The GPU as the engine sees it: what probe() found, and CUDA errors turned into engine errors.
// Plain C++ (no CUDA headers), so the N-API glue in cuda/addon/ is compiled by the host compiler.
#pragma once
#include <stdint.h>

#include <string>
#include <vector>

namespace zt {
namespace cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;  // compute capability
  uint64_t total_memory = 0;
  int multiprocessors = 0;
  bool usable = false;  // a test kernel from this build ran on it
  int error = 0;        // why not, as a cudaError_t (0 when usable)
  std::string error_name, reason;
};

struct ProbeResult {
  int runtime_version = 0;  // e.g. 13000 for CUDA 13.0 (linked statically into the addon)
  int driver_version = 0;   // CUDA version the driver supports; 0 when no driver was found
  std::string archs;        // architectures compiled into this build (CMAKE_CUDA_ARCHITECTURES)
  bool usable = false;      // at least one device runs this build's kernels
  int error = 0;            // the first reason no device is usable, as a cudaError_t
  std::string error_name, message, reason;
  std::vector<DeviceInfo> devices;
};

// Never throws for a missing driver or device: that is the answer it reports.
ProbeResult probe();

// An actionable explanation of a cudaError_t (what it means here and how to fix it).
std::string reason(int err);

// Throws zt::Error when err != cudaSuccess: ZOTUNE_CUDA_UNAVAILABLE when the GPU cannot be used at
// all (driver, device, kernel image), ZOTUNE_OOM for device allocations, else ZOTUNE_CUDA_ERROR.
void check(int err, const char* what);

// check() of the launch just issued (a bad configuration or missing kernel image is reported here,
// named, rather than by the next synchronising call).
void check_launch(const char* kernel);

// Throws ZOTUNE_CUDA_UNAVAILABLE with the reason unless the current device can be used (never again
// after a sticky error such as an illegal address: the context is lost for the process).
void require_device();

}  // namespace cuda
}  // namespace zt
