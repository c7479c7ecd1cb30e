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

enum Path : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// 'auto': the widest path the CPU has, ZOTUNE_FORCE_SCALAR=1 or ZOTUNE_CPU_PATH=avx2 narrowing it.
int auto_path() {
  if (env_forces_scalar() || !avx2_supported()) return kScalar;
  const char* s = std::getenv("ZOTUNE_CPU_PATH");
  if (s && std::strcmp(s, "avx2") == 0) return kAvx2;
  if (s && std::strcmp(s, "scalar") == 0) return kScalar;
  return avx512_supported() ? kAvx512 : kAvx2;
}

std::atomic<int>& path_flag() {
  static std::atomic<int> f{auto_path()};
  return f;
}

}  // namespace

CpuFeatures cpu_features() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return {__builtin_cpu_supports("avx2") != 0, __builtin_cpu_supports("fma") != 0,
          __builtin_cpu_supports("f16c") != 0, vnni};
#else
  return {false, false, false, false};
#endif
}

bool avx2_supported() {
  CpuFeatures f = cpu_features();
  return f.avx2 && f.fma && f.f16c;
}

bool avx512_supported() { return avx2_supported() && cpu_features().avx512vnni; }

bool use_avx2() { return path_flag().load(std::memory_order_relaxed) >= kAvx2; }
bool use_avx512() { return path_flag().load(std::memory_order_relaxed) == kAvx512; }

void set_cpu_path(const char* path) {
  if (std::strcmp(path, "scalar") == 0) {
    path_flag() = kScalar;
  } else if (std::strcmp(path, "avx2") == 0) {
    check(avx2_supported(), Code::Unsupported, "this CPU lacks AVX2/FMA/F16C; use the scalar path");
    path_flag() = kAvx2;
  } else if (std::strcmp(path, "avx512") == 0) {
    check(avx512_supported(), Code::Unsupported, "this CPU lacks AVX-512 VNNI (F, BW, VL, VNNI); use the avx2 or scalar path");
    path_flag() = kAvx512;
  } else if (std::strcmp(path, "auto") == 0) {
    path_flag() = auto_path();
  } else {
    fail(Code::InvalidArgument, std::string("cpu path must be 'auto', 'scalar', 'avx2' or 'avx512', got '") + path + "'");
  }
}

const char* cpu_path_name() {
  static const char* const kNames[] = {"scalar", "avx2", "avx512"};
  return kNames[path_flag().load(std::memory_order_relaxed)];
}

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
