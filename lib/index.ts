export { ZotuneError } from './errors';
export type { ErrorCode } from './errors';
export type { DType } from './dtype';
export { Tensor } from './tensor';
export type { MemoryCategory } from './tensor';
export * as rng from './rng';
export { cpuInfo, setCpuPath, setThreads, memory, resetMemoryPeaks } from './runtime';
export type { CpuPath, MemoryUsage } from './runtime';
