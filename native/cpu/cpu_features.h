// Runtime CPU dispatch: every kernel has a portable scalar path and an AVX2/FMA path; the path is
// chosen once from the CPU (and ZOTUNE_FORCE_SCALAR=1), and can be switched for tests.
#pragma once

namespace zt {

struct CpuFeatures {
  bool avx2, fma, f16c;
};

CpuFeatures cpu_features();
bool avx2_supported();       // avx2 && fma && f16c
bool use_avx2();             // the current choice
// Selects the path: "auto", "scalar" or "avx2". Throws ZOTUNE_UNSUPPORTED if the CPU lacks AVX2.
void set_cpu_path(const char* path);
const char* cpu_path_name();

// Whether the int4 GEMV reads codes as subnormal floats (native/cpu/gemm.h): Zen (AuthenticAMD,
// HygonGenuine) multiplies subnormal inputs at full speed (measured on Zen 1); other CPUs may
// take microcode assists on them, so they convert the codes instead (same products). The
// environment variable ZOTUNE_INT4_SUBNORMAL=0/1 overrides; it is read at every call (tests).
bool int4_subnormal_decode();

}  // namespace zt
