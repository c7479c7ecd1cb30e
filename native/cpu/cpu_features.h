// Runtime CPU dispatch: every kernel has a portable scalar path and an AVX2/FMA path; a few hot
// kernels also have an AVX-512 VNNI path (the integer GEMM micro-kernel), which otherwise runs the
// AVX2 kernels. The path is chosen once from the CPU (and ZOTUNE_FORCE_SCALAR=1, ZOTUNE_CPU_PATH),
// and can be switched for tests. Every path gives the same bits.
#pragma once

namespace zt {

struct CpuFeatures {
  bool avx2, fma, f16c;
  bool avx512vnni;  // AVX-512 F, BW, VL and VNNI together
};

CpuFeatures cpu_features();
bool avx2_supported();       // avx2 && fma && f16c
bool avx512_supported();     // avx2_supported() and the AVX-512 VNNI set
bool use_avx2();             // the current choice is avx2 or avx512 (AVX2 kernels run)
bool use_avx512();           // the current choice is avx512 (its VNNI kernels run where they exist)
// Selects the path: "auto", "scalar", "avx2" or "avx512". Throws ZOTUNE_UNSUPPORTED if the CPU
// lacks the instructions.
void set_cpu_path(const char* path);
const char* cpu_path_name();

// Whether the int4 GEMV reads codes as subnormal floats (native/cpu/gemm.h): Zen (AuthenticAMD,
// HygonGenuine) multiplies subnormal inputs at full speed (measured on Zen 1); other CPUs may
// take microcode assists on them, so they convert the codes instead (same products). The
// environment variable ZOTUNE_INT4_SUBNORMAL=0/1 overrides; it is read at every call (tests).
bool int4_subnormal_decode();

}  // namespace zt
