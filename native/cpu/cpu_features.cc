#include "cpu_features.h"

#include <atomic>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <cstdlib>
#include <cstring>

#include "../common/status.h"

namespace zt {
namespace {

bool env_forces_scalar() {
  const char* s = std::getenv("ZOTUNE_FORCE_SCALAR");
  return s && *s && std::strcmp(s, "0") != 0;
}

std::atomic<bool>& avx2_flag() {
  static std::atomic<bool> f{avx2_supported() && !env_forces_scalar()};
  return f;
}

}  // namespace

CpuFeatures cpu_features() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return {__builtin_cpu_supports("avx2") != 0, __builtin_cpu_supports("fma") != 0,
          __builtin_cpu_supports("f16c") != 0};
#else
  return {false, false, false};
#endif
}

bool avx2_supported() {
  CpuFeatures f = cpu_features();
  return f.avx2 && f.fma && f.f16c;
}

bool use_avx2() { return avx2_flag().load(std::memory_order_relaxed); }

void set_cpu_path(const char* path) {
  if (std::strcmp(path, "scalar") == 0) {
    avx2_flag() = false;
  } else if (std::strcmp(path, "avx2") == 0) {
    check(avx2_supported(), Code::Unsupported, "this CPU lacks AVX2/FMA/F16C; use the scalar path");
    avx2_flag() = true;
  } else if (std::strcmp(path, "auto") == 0) {
    avx2_flag() = avx2_supported() && !env_forces_scalar();
  } else {
    fail(Code::InvalidArgument, std::string("cpu path must be 'auto', 'scalar' or 'avx2', got '") + path + "'");
  }
}

const char* cpu_path_name() { return use_avx2() ? "avx2" : "scalar"; }

bool int4_subnormal_decode() {
  const char* s = std::getenv("ZOTUNE_INT4_SUBNORMAL");
  if (s && *s) return std::strcmp(s, "0") != 0;
  static const bool zen = [] {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    char vendor[13];
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    vendor[12] = 0;
    return std::strcmp(vendor, "AuthenticAMD") == 0 || std::strcmp(vendor, "HygonGenuine") == 0;
#else
    return false;
#endif
  }();
  return zen;
}

}  // namespace zt
