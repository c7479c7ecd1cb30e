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

}  // namespace zt
