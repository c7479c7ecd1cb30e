/** Engine-wide settings and introspection: CPU path, threads, memory. */
import { native } from './native/load';
import type { CpuInfo, DeviceMemoryReport } from './native/binding';
import { deviceMemory, resetDeviceMemoryPeaks } from './device-memory';

export type CpuPath = 'auto' | 'scalar' | 'avx2' | 'avx512';

export function cpuInfo(): CpuInfo {
  return native().cpuInfo();
}

/**
 * Selects the kernel path for the whole process (every path gives the same bits). 'auto': the widest
 * the CPU has ('avx512' adds AVX-512 VNNI integer GEMMs to 'avx2'), narrowed by ZOTUNE_FORCE_SCALAR=1
 * or ZOTUNE_CPU_PATH=avx2|scalar.
 */
export function setCpuPath(path: CpuPath): Exclude<CpuPath, 'auto'> {
  return native().setCpuPath(path) as Exclude<CpuPath, 'auto'>;
}

/** Threads of the engine's pool (results do not depend on it). Default: ZOTUNE_NUM_THREADS or all cores. */
export function setThreads(n: number): number {
  return native().setThreads(n);
}

export interface MemoryUsage {
  /**
   * Engine-owned host bytes by category, live and peak since start or the last resetPeaks(); `cached`:
   * freed transient blocks (activations, workspace, gradients, other; 256 KiB and more) the engine keeps
   * for reuse, so the next forward does not fault its pages in again (not live; releaseHostCache()).
   */
  engine: { live: Record<string, number>; peak: Record<string, number>; totalLive: number; totalPeak: number; cached: number };
  /** The CUDA pool's device bytes by category, and what it caches; only when the CUDA backend is already in use. */
  device?: DeviceMemoryReport;
  /** Process view: resident set, V8 heap, external (engine memory reported to V8 included). */
  process: { rss: number; heapUsed: number; external: number; arrayBuffers: number };
}

export function memory(): MemoryUsage {
  const m = process.memoryUsage();
  const device = deviceMemory();
  return { engine: native().memory(), ...(device && { device }), process: { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers } };
}

/** Gives the engine's cached host blocks back to the C library (the cache is bounded by ZOTUNE_HOST_CACHE_MB, default an eighth of RAM). */
export function releaseHostCache(): void {
  native().releaseHostCache();
}

/** Peaks := live now, for host memory and (when in use) the device pool. */
export function resetMemoryPeaks(): void {
  native().resetMemoryPeaks();
  resetDeviceMemoryPeaks();
}
