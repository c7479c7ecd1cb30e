// Validation of a ZO direction at the engine's entry points (CPU and CUDA addons; host code only).
#pragma once
#include <string>

#include "direction.h"
#include "status.h"

namespace zt {

// Throws ZOTUNE_INVALID_ARGUMENT unless dist is Gaussian/Rademacher, bits is 0 or 2..8 and, with
// bits > 0, sr_purpose is kPurposeSrProbe or kPurposeSrUpdate (never a stream shared with z).
static inline void check_direction(const Direction& d) {
  check(d.dist == kDirGauss || d.dist == kDirRademacher, Code::InvalidArgument, "perturb: dist must be gaussian (0) or rademacher (1)");
  check(d.bits == 0 || (d.bits >= 2 && d.bits <= 8), Code::InvalidArgument,
        "perturb: bits must be 0 (exact direction) or 2..8 (QuZO grid), got " + std::to_string(d.bits));
  check(d.bits == 0 || d.sr_purpose == kPurposeSrProbe || d.sr_purpose == kPurposeSrUpdate, Code::InvalidArgument,
        "perturb: srPurpose must be the probe (4) or update (5) rounding stream");
}

}  // namespace zt
