/**
 * The native addons' contract version this library speaks (native/common/abi.h holds the same
 * number): an addon reporting another one was built from a different zotune.
 */
export const ADDON_ABI = 3;
