/** The typed surface of the native CPU addon (native/addon/). */

export type Mem = NativeBuffer | ArrayBufferView | ArrayBuffer;

export interface NativeBuffer {
  readonly byteLength: number;
  readonly category: string;
  readonly disposed: boolean;
  view(): ArrayBuffer;
  dispose(): void;
}

export interface MemoryReport {
  live: Record<string, number>;
  peak: Record<string, number>;
  totalLive: number;
  totalPeak: number;
}

export interface CpuInfo {
  avx2: boolean;
  fma: boolean;
  f16c: boolean;
  path: 'avx2' | 'scalar';
  threads: number;
}

type Seed = number | bigint;

/** Every op `x` also exists as `xAsync`, returning a Promise and running off the event loop. */
export interface NativeAddon {
  backend: 'cpu';
  NativeBuffer: new (byteLength: number, category?: string, zeroFill?: boolean) => NativeBuffer;
  cpuInfo(): CpuInfo;
  setCpuPath(path: 'auto' | 'scalar' | 'avx2'): string;
  setThreads(n: number): number;
  memory(): MemoryReport;
  resetMemoryPeaks(): void;

  philox(input: Uint32Array, out: Uint32Array): void;
  rngFill(out: Mem, byteOffset: number, count: number, dist: number, seed: Seed, stream: number, purpose: number, first: number | bigint, p?: number): void;
  rngFillAsync(out: Mem, byteOffset: number, count: number, dist: number, seed: Seed, stream: number, purpose: number, first: number | bigint, p?: number): Promise<void>;
  rngWords(out: Mem, byteOffset: number, count: number, seed: Seed, stream: number, purpose: number, first: number | bigint): void;
  rngWordsAsync(out: Mem, byteOffset: number, count: number, seed: Seed, stream: number, purpose: number, first: number | bigint): Promise<void>;

  perturb(w: Mem, byteOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): void;
  perturbAsync(w: Mem, byteOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): Promise<void>;
  perturbIndices(w: Mem, byteOffset: number, count: number, indices: Mem, indicesByteOffset: number, indicesCount: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): void;
  perturbIndicesAsync(w: Mem, byteOffset: number, count: number, indices: Mem, indicesByteOffset: number, indicesCount: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): Promise<void>;

  /** Machine ceilings (bench/): each returns its checksum (see native/cpu/ceilings.h). */
  ceilingRead(x: Mem, byteOffset: number, count: number): number;
  ceilingReadAsync(x: Mem, byteOffset: number, count: number): Promise<number>;
  ceilingUpdate(x: Mem, byteOffset: number, count: number, delta: number): void;
  ceilingUpdateAsync(x: Mem, byteOffset: number, count: number, delta: number): Promise<void>;
  ceilingFma(tasks: number, iters: number): number;
  ceilingFmaAsync(tasks: number, iters: number): Promise<number>;
  ceilingInt8(tasks: number, iters: number): number;
  ceilingInt8Async(tasks: number, iters: number): Promise<number>;

  gemmInt8(...args: GemmInt8Args): void;
  gemmInt8Async(...args: GemmInt8Args): Promise<void>;
  gemmS8S8S32(...args: GemmS8S8S32Args): void;
  gemmS8S8S32Async(...args: GemmS8S8S32Args): Promise<void>;
}

/** Perturb-on-load as the native op reads it (dist 0 Gaussian, 1 Rademacher; srPurpose a Purpose code). */
export interface NativePerturb {
  alpha: number;
  seed: Seed;
  stream: number;
  dist: number;
  bits: number;
  srPurpose: number;
  first: number | bigint;
}

export type GemmInt8Args = [
  x: Mem, xByteOffset: number, M: number, w: unknown, y: Mem, yByteOffset: number,
  bias: Mem | null, biasByteOffset: number, residual: Mem | null, residualByteOffset: number,
  perturb: NativePerturb | null, indices: Mem | null, indicesByteOffset: number, indicesCount: number,
];

export type GemmS8S8S32Args = [a: Mem, aByteOffset: number, b: Mem, bByteOffset: number, c: Mem, cByteOffset: number, M: number, N: number, K: number];
