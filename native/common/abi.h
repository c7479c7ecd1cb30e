// Version of the contract between the TypeScript library and its native addons (the exports, their
// arguments and results). Bump it with any change to that contract; lib/native/abi.ts holds the
// same number (test/loader.test.ts compares them) and the loader refuses an addon built for
// another one, so a stale build fails with a remedy instead of misreading arguments.
#pragma once

namespace zt {
static constexpr int kAddonAbi = 3;
}  // namespace zt
