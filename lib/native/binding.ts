/** The typed surfaces of the native CPU addon (native/addon/) and the CUDA addon (cuda/addon/). */
import type { QTensorDesc } from '../qtensor';

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
  cached: number;
}

export interface CpuInfo {
  avx2: boolean;
  fma: boolean;
  f16c: boolean;
  /** AVX-512 F, BW, VL and VNNI: the 'avx512' path (VNNI integer GEMM) is available. */
  avx512vnni: boolean;
  path: 'avx512' | 'avx2' | 'scalar';
  threads: number;
}

type Seed = number | bigint;

/** Positional arguments of gemm (native/addon/bind_gemm.cc); the perturbation ones only with perturb = true. */
export type GemmCall = [
  a: Mem, aByteOffset: number, m: number, k: number, w: Mem | QTensorDesc, wByteOffset: number, n: number,
  c: Mem, cByteOffset: number, bias: Mem | null, biasByteOffset: number, accumulate: boolean,
  perturb?: boolean, seed?: Seed, stream?: number, alpha?: number, dist?: number, bits?: number, srPurpose?: number,
  first?: number | bigint, indices?: Mem | null, indicesByteOffset?: number, indicesCount?: number,
];

/** Every op `x` also exists as `xAsync`, returning a Promise and running off the event loop. */
export interface NativeAddon {
  backend: 'cpu';
  /** The contract version it was built for (lib/native/abi.ts). */
  abi: number;
  NativeBuffer: new (byteLength: number, category?: string, zeroFill?: boolean) => NativeBuffer;
  cpuInfo(): CpuInfo;
  setCpuPath(path: 'auto' | 'scalar' | 'avx2' | 'avx512'): string;
  setThreads(n: number): number;
  memory(): MemoryReport;
  resetMemoryPeaks(): void;
  releaseHostCache(): void;

  philox(input: Uint32Array, out: Uint32Array): void;
  rngFill(out: Mem, byteOffset: number, count: number, dist: number, seed: Seed, stream: number, purpose: number, first: number | bigint, p?: number): void;
  rngFillAsync(out: Mem, byteOffset: number, count: number, dist: number, seed: Seed, stream: number, purpose: number, first: number | bigint, p?: number): Promise<void>;
  rngWords(out: Mem, byteOffset: number, count: number, seed: Seed, stream: number, purpose: number, first: number | bigint): void;
  rngWordsAsync(out: Mem, byteOffset: number, count: number, seed: Seed, stream: number, purpose: number, first: number | bigint): Promise<void>;

  quantize(x: Mem, xOffset: number, q: QTensorDesc, scaleMode: number, stochastic: boolean, seed: Seed, stream: number, fakeOut?: Mem, fakeOffset?: number): void;
  quantizeAsync(x: Mem, xOffset: number, q: QTensorDesc, scaleMode: number, stochastic: boolean, seed: Seed, stream: number, fakeOut?: Mem, fakeOffset?: number): Promise<void>;
  dequantize(q: QTensorDesc, out: Mem, outOffset: number): void;
  dequantizeAsync(q: QTensorDesc, out: Mem, outOffset: number): Promise<void>;
  quantUpdate(q: QTensorDesc, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number): void;
  quantUpdateAsync(q: QTensorDesc, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number): Promise<void>;
  quantUpdateIndices(q: QTensorDesc, indices: Mem, indicesOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number): void;
  quantUpdateIndicesAsync(q: QTensorDesc, indices: Mem, indicesOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number): Promise<void>;
  // Transformer ops (native/addon/bind_nn.cc); each also exists as `...Async`.
  rmsNorm(out: Mem, outOff: number, x: Mem, xOff: number, w: Mem, wOff: number, rows: number, dim: number, eps: number): void;
  rmsNormAsync(out: Mem, outOff: number, x: Mem, xOff: number, w: Mem, wOff: number, rows: number, dim: number, eps: number): Promise<void>;
  rope(x: Mem, xOff: number, rows: number, heads: number, headDim: number, positions: Mem, posOff: number, rope: Float64Array): void;
  ropeAsync(x: Mem, xOff: number, rows: number, heads: number, headDim: number, positions: Mem, posOff: number, rope: Float64Array): Promise<void>;
  attention(...args: AttentionArgs): void;
  attentionAsync(...args: AttentionArgs): Promise<void>;
  swiglu(out: Mem, outOff: number, gate: Mem, gateOff: number, up: Mem, upOff: number, n: number): void;
  swigluAsync(out: Mem, outOff: number, gate: Mem, gateOff: number, up: Mem, upOff: number, n: number): Promise<void>;
  embedding(out: Mem, outOff: number, table: Mem, tableOff: number, vocab: number, dim: number, ids: Int32Array, n: number): void;
  embeddingAsync(out: Mem, outOff: number, table: Mem, tableOff: number, vocab: number, dim: number, ids: Int32Array, n: number): Promise<void>;
  logProbs(logits: Mem, off: number, rows: number, n: number, targets: Int32Array, out: Float64Array): { sum: number; count: number };
  logProbsAsync(logits: Mem, off: number, rows: number, n: number, targets: Int32Array, out: Float64Array): Promise<{ sum: number; count: number }>;
  argmax(x: Mem, off: number, rows: number, n: number, out: Int32Array): void;
  argmaxAsync(x: Mem, off: number, rows: number, n: number, out: Int32Array): Promise<void>;
  sample(logits: Mem, off: number, rows: number, n: number, out: Int32Array, temperature: number, topK: number, topP: number, seed: Seed, positions: Int32Array): void;
  sampleAsync(logits: Mem, off: number, rows: number, n: number, out: Int32Array, temperature: number, topK: number, topP: number, seed: Seed, positions: Int32Array): Promise<void>;
  gemm(...args: GemmCall): void;
  gemmAsync(...args: GemmCall): Promise<void>;

  // One LLaMA forward pass (native/addon/bind_llama.cc documents the arguments).
  llamaForward(...args: LlamaForwardArgs): { logprobSum: number; count: number };
  llamaForwardAsync(...args: LlamaForwardArgs): Promise<{ logprobSum: number; count: number }>;
  // The decode loop of generation with a KV cache (bind_llama.cc documents the arguments): the steps run.
  llamaGenerate(...args: LlamaGenerateArgs): number;
  llamaGenerateAsync(...args: LlamaGenerateArgs): Promise<number>;
  // The two forwards of a ZO probe, and the ZO update of a tensor list (bind_llama.cc documents them).
  /** One seed: its ProbeSums; Q seeds as a BigUint64Array: every output buffer holds Q blocks, one ProbeSums per query. */
  llamaZoProbe(...args: LlamaZoProbeArgs): ProbeSums | ProbeSums[];
  llamaZoProbeAsync(...args: LlamaZoProbeArgs): Promise<ProbeSums | ProbeSums[]>;
  zoUpdate(...args: ZoUpdateArgs): void;
  zoUpdateAsync(...args: ZoUpdateArgs): Promise<void>;
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
  ceilingFma512(tasks: number, iters: number): number;
  ceilingFma512Async(tasks: number, iters: number): Promise<number>;
  ceilingVnni(tasks: number, iters: number): number;
  ceilingVnniAsync(tasks: number, iters: number): Promise<number>;

  gemmInt8(...args: GemmInt8Args): void;
  gemmInt8Async(...args: GemmInt8Args): Promise<void>;
  gemmS8S8S32(...args: GemmS8S8S32Args): void;
  gemmS8S8S32Async(...args: GemmS8S8S32Args): Promise<void>;

  // First-order engine (native/addon/bind_llama_grad.cc documents the arguments): loss and
  // gradients of one batch (fp32), the float64 reference, and the fused optimiser kernels.
  llamaGrad(...args: LlamaGradArgs): { nllSum: number; count: number };
  llamaGradAsync(...args: LlamaGradArgs): Promise<{ nllSum: number; count: number }>;
  llamaGradF64(...args: LlamaGradArgs): { nllSum: number; count: number };
  llamaGradF64Async(...args: LlamaGradArgs): Promise<{ nllSum: number; count: number }>;
  adamwUpdate(w: Mem, g: Mem, m: Mem, v: Mem, count: number, hyper: Float64Array): void;
  adamwUpdateAsync(w: Mem, g: Mem, m: Mem, v: Mem, count: number, hyper: Float64Array): Promise<void>;
  sgdUpdate(w: Mem, g: Mem, buf: Mem | null, count: number, hyper: Float64Array): void;
  sgdUpdateAsync(w: Mem, g: Mem, buf: Mem | null, count: number, hyper: Float64Array): Promise<void>;
  sumSquares(g: Mem, count: number): number;
  sumSquaresAsync(g: Mem, count: number): Promise<number>;
  accumulateSquares(acc: Mem, g: Mem, count: number, scale: number): void;
  accumulateSquaresAsync(acc: Mem, g: Mem, count: number, scale: number): Promise<void>;

  // ZO optimiser state kernels (native/addon/bind_zo_optim.cc): momentum / Adam over regenerated z.
  zoOptimStep(...args: ZoOptimStepArgs): void;
  zoOptimStepAsync(...args: ZoOptimStepArgs): Promise<void>;
}

/** cfg, [recompute, scale], tokens, offsets, positions, keyMask, targets, then 9·layers + 3 weights and as many gradient buffers (null = not wanted). */
export type LlamaGradArgs = [cfg: Float64Array, options: Float64Array, tokens: Int32Array, offsets: Int32Array, positions: Int32Array, keyMask: Uint8Array | null, targets: Int32Array, ...buffersThenCandidates: (Mem | Int32Array | null)[]];

/** kind, w, wOff, count, m, mOff, v, vOff, first, stream, dist, bits, seeds [lo, hi]*, coefs, lr, decay, beta1, beta2, adamEps, bias1, bias2 (native/addon/bind_zo_optim.cc) */
export type ZoOptimStepArgs = [
  number, Mem, number, number, Mem, number, Mem | null, number, number | bigint, number, number, number, Uint32Array, Float32Array,
  number, number, number, number, number, number, number,
];

/** A CUDA error as the CUDA addon reports it: the cudaError_t number, its name and what to do. */
export interface CudaErrorInfo {
  code: number;
  name: string;
  reason: string;
  message?: string;
}

export interface CudaDevice {
  index: number;
  name: string;
  /** e.g. '9.0' */
  computeCapability: string;
  totalMemory: number;
  multiprocessors: number;
  /** A test kernel of this build ran on it. */
  usable: boolean;
  error?: CudaErrorInfo;
}

export interface CudaProbe {
  /** CUDA runtime linked into the addon, e.g. 13000. */
  runtimeVersion: number;
  /** CUDA version the driver supports; 0 when no driver was found. */
  driverVersion: number;
  /** Architectures compiled in, e.g. '80-real,86-real,89-real,90'. */
  archs: string;
  usable: boolean;
  /** Why no device is usable (absent when one is). */
  error?: CudaErrorInfo;
  devices: CudaDevice[];
}

/** The CUDA addon (zotune_cuda.node). Ops take host memory and run on the current GPU. */
export interface CudaAddon {
  backend: 'cuda';
  /** The contract version it was built for (lib/native/abi.ts). */
  abi: number;
  probe(): CudaProbe;
  rngFill(out: Mem, byteOffset: number, count: number, dist: number, seed: Seed, stream: number, purpose: number, first: number | bigint, p?: number): { kernelMs: number };
  rngFillAsync(out: Mem, byteOffset: number, count: number, dist: number, seed: Seed, stream: number, purpose: number, first: number | bigint, p?: number): Promise<{ kernelMs: number }>;
  /** The kernel's per-thread code run on the host: checks the thread -> element map without a GPU. */
  rngFillEmulated(out: Mem, byteOffset: number, count: number, dist: number, seed: Seed, stream: number, purpose: number, first: number | bigint, p?: number): void;
  /** Weight-streaming GEMV (cuda/kernels/gemv.h): the CPU gemm's arguments; M <= 16 fast kernel, else the reference. */
  gemv(...args: GemmCall): { kernelMs: number };
  gemvAsync(...args: GemmCall): Promise<{ kernelMs: number }>;
  /** The fast kernel with activations staged in shared memory (M <= 4, aligned rows): the same bits as gemv. */
  gemvStaged(...args: GemmCall): { kernelMs: number };
  gemvStagedAsync(...args: GemmCall): Promise<{ kernelMs: number }>;
  /** One thread per output in the CPU's GEMM order. */
  gemvReference(...args: GemmCall): { kernelMs: number };
  gemvReferenceAsync(...args: GemmCall): Promise<{ kernelMs: number }>;
  /** The kernels' per-thread code run on the host: equals the GPU bit for bit. */
  gemvEmulated(...args: GemmCall): void;
  gemvReferenceEmulated(...args: GemmCall): void;
  /** The staged kernel's blocks (tile copy, lanes, butterfly) run on the host: equals gemvEmulated bit for bit. */
  gemvStagedEmulated(...args: GemmCall): void;
  /** z(first + j) as the fast GEMV kernel generates it (host). */
  gemvDirectionsEmulated(out: Mem, byteOffset: number, count: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): void;
  /** Device-resident GEMV timing; format 'f32' or a QFormat name, group 0 / k / 32 / 64 / 128; kernel 'fast' (default) or 'staged'. */
  gemvBench(format: string, m: number, n: number, k: number, group: number, perturbed: boolean, iters: number, kernel?: 'fast' | 'staged'): { bestMs: number; medianMs: number; weightBytes: number; splits: number };
  /** Device read ceiling: a 16-byte-load read kernel and cudaMemcpy device to device over `bytes`. */
  hbmReadBench(bytes: number, iters: number): { readBestMs: number; readMedianMs: number; copyBestMs: number; copyMedianMs: number; bytes: number };
  // Tensor-core GEMMs (cuda/kernels/gemm_tc.h): y[M, N] = x[M, K] · Wᵀ (+ bias). `...Reference`: the
  // plain one-thread-per-output GPU kernel; `...Emulated`: the fast kernel's per-thread code on the host.
  gemmW8A8(...args: GemmTcArgs): { kernelMs: number };
  gemmW8A8Reference(...args: GemmTcArgs): { kernelMs: number };
  gemmW8A8Emulated(...args: GemmTcArgs): void;
  gemmW4A8(...args: GemmTcArgs): { kernelMs: number };
  gemmW4A8Reference(...args: GemmTcArgs): { kernelMs: number };
  gemmW4A8Emulated(...args: GemmTcArgs): void;
  gemmW4A16(...args: GemmTcArgs): { kernelMs: number };
  gemmW4A16Reference(...args: GemmTcArgs): { kernelMs: number };
  gemmW4A16Emulated(...args: GemmTcArgs): void;
  gemmFp8(...args: GemmTcArgs): { kernelMs: number };
  gemmFp8Reference(...args: GemmTcArgs): { kernelMs: number };
  gemmFp8Emulated(...args: GemmTcArgs): void;
  gemmBf16(...args: GemmTcArgs): { kernelMs: number };
  gemmBf16Reference(...args: GemmTcArgs): { kernelMs: number };
  gemmBf16Emulated(...args: GemmTcArgs): void;
  gemmF32(...args: GemmF32Args): { kernelMs: number };
  gemmF32Reference(...args: GemmF32Args): { kernelMs: number };
  gemmF32Emulated(...args: GemmF32Args): void;
  /** The fast kernel on device-resident random operands: best / median of `iters` launches. */
  gemmTcBench(kind: 'w8a8' | 'w4a8' | 'w4a16' | 'e4m3' | 'e5m2' | 'bf16' | 'f32', M: number, N: number, K: number, iters: number): { bestMs: number; medianMs: number };
  /** W' rows r0 .. r0 + rows - 1 of quantized weights (decoded, + alpha z; alpha 0: none) as the device model's tiles read them: fp32 [rows, K] or bf16 codes [rows, weightRowsLd(K)]. */
  weightRows(w: QTensorDesc, r0: number, rows: number, bf16: boolean, out: Float32Array | Uint16Array, outByteOffset: number, alpha: number, seed: bigint, stream: number, dist: number, bits: number, srPurpose: number): { kernelMs: number };
  weightRowsEmulated(w: QTensorDesc, r0: number, rows: number, bf16: boolean, out: Float32Array | Uint16Array, outByteOffset: number, alpha: number, seed: bigint, stream: number, dist: number, bits: number, srPurpose: number): { kernelMs: number };
  /** bf16 codes per W' row (K padded for the tiles' 16-byte loads). */
  weightRowsLd(K: number): number;

  // Perturbation, quantization and quantized ZO updates (cuda/addon/bind_perturb.cc, bind_quant.cc):
  // the CPU addon's arguments, bit-identical results; ...Reference runs the plain one-thread-per-element
  // kernel, ...Emulated the fast kernel's per-thread code on the host (no GPU needed).
  perturb(w: Mem, byteOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): { kernelMs: number };
  perturbAsync(w: Mem, byteOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): Promise<{ kernelMs: number }>;
  perturbReference(w: Mem, byteOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): { kernelMs: number };
  perturbEmulated(w: Mem, byteOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): void;
  perturbIndices(w: Mem, byteOffset: number, count: number, indices: Mem, indicesByteOffset: number, indicesCount: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): { kernelMs: number };
  perturbIndicesEmulated(w: Mem, byteOffset: number, count: number, indices: Mem, indicesByteOffset: number, indicesCount: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number, first: number | bigint): void;
  /** Device-resident benchmark: kind 0 f32 perturbation, 1 bf16 / 2 int8 / 3 int4 (group 128) quantized updates. */
  perturbDeviceBench(n: number, kind: number, dist: number, bits: number, iters: number): { n: number; bytes: number; copyBytes: number; bestMs: number; meanMs: number; copyMs: number };
  quantize(x: Mem, xOffset: number, q: QTensorDesc, scaleMode: number, stochastic: boolean, seed: Seed, stream: number, fakeOut?: Mem, fakeOffset?: number): { kernelMs: number };
  quantizeEmulated(x: Mem, xOffset: number, q: QTensorDesc, scaleMode: number, stochastic: boolean, seed: Seed, stream: number, fakeOut?: Mem, fakeOffset?: number): void;
  dequantize(q: QTensorDesc, out: Mem, outOffset: number): { kernelMs: number };
  dequantizeEmulated(q: QTensorDesc, out: Mem, outOffset: number): void;
  quantUpdate(q: QTensorDesc, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number): { kernelMs: number };
  quantUpdateReference(q: QTensorDesc, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number): { kernelMs: number };
  quantUpdateEmulated(q: QTensorDesc, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number): void;
  quantUpdateIndices(q: QTensorDesc, indices: Mem, indicesOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number): { kernelMs: number };
  quantUpdateIndicesEmulated(q: QTensorDesc, indices: Mem, indicesOffset: number, count: number, alpha: number, seed: Seed, stream: number, dist: number, bits: number, srPurpose: number): void;
  // Device memory (cuda/addon/bind_pool.cc). The statistics need no GPU; deviceAlloc of 0 bytes neither.
  deviceMemory(): DeviceMemoryReport;
  deviceResetPeaks(): void;
  deviceReleaseCache(): void;
  deviceAlloc(bytes: number, category?: string): DeviceHandle;
  /** Idempotent; later use of the handle throws ZOTUNE_DISPOSED. */
  deviceFree(handle: DeviceHandle): void;
  /** Copies all of `src` to the device buffer at `byteOffset`. */
  deviceUpload(handle: DeviceHandle, src: Mem, byteOffset: number): void;
  deviceUploadAsync(handle: DeviceHandle, src: Mem, byteOffset: number): Promise<void>;
  /** Fills all of `dst` from the device buffer at `byteOffset`. */
  deviceDownload(handle: DeviceHandle, dst: Mem, byteOffset: number): void;
  deviceDownloadAsync(handle: DeviceHandle, dst: Mem, byteOffset: number): Promise<void>;
  /** The pool's cache logic over malloc with `capacity` bytes: one result per step (no GPU). */
  poolSelfTest(steps: PoolStep[], capacity: number): PoolStepResult[];
}

/** The device pool's statistics: bytes by category (live, and peak since start or the last reset). */
export interface DeviceMemoryReport extends MemoryReport {
  /** Freed blocks kept for reuse. */
  cached: number;
  /** Held from the driver: live blocks rounded up to their size class, plus cached. */
  reserved: number;
  /** cudaMalloc calls that succeeded (a reuse from the cache adds none). */
  driverAllocs: number;
}

/** A device buffer from deviceAlloc (an opaque external). */
export interface DeviceHandle {
  readonly __brand: 'DeviceHandle';
}

export type PoolStep =
  | { op: 'alloc'; bytes: number; category?: string }
  | { op: 'free'; step: number }
  | { op: 'release' }
  | { op: 'resetPeaks' }
  | { op: 'hammer'; threads: number; iterations: number };

export interface PoolStepResult {
  stats: DeviceMemoryReport;
  /** alloc: the block's address (equal addresses = a reused block) and size class. */
  address?: number;
  block?: number;
  /** free: false when the step's block was not live (already freed, or not an alloc). */
  freed?: boolean;
  error?: { code: string; message: string };
}

/**
 * Transformer ops of the CUDA addon (cuda/kernels/nn.h): the CPU addon's arguments; `op` runs the
 * fast kernel, `opReference` the one-thread-per-row kernel, `opEmulated` the fast kernel's
 * per-lane code on the host (no GPU).
 */
type NnOp<K extends 'rmsNorm' | 'rope' | 'attention' | 'swiglu' | 'embedding' | 'logProbs' | 'argmax', R> = (...a: Parameters<NativeAddon[K]>) => R;
type NnTimed = { kernelMs: number };
type NnLoss = { sum: number; count: number };
export interface CudaNnOps {
  rmsNorm: NnOp<'rmsNorm', NnTimed>;
  rmsNormAsync: NnOp<'rmsNorm', Promise<NnTimed>>;
  rmsNormReference: NnOp<'rmsNorm', NnTimed>;
  rmsNormEmulated: NnOp<'rmsNorm', void>;
  rope: NnOp<'rope', NnTimed>;
  ropeAsync: NnOp<'rope', Promise<NnTimed>>;
  ropeEmulated: NnOp<'rope', void>;
  attention: NnOp<'attention', NnTimed>;
  attentionAsync: NnOp<'attention', Promise<NnTimed>>;
  attentionReference: NnOp<'attention', NnTimed>;
  attentionEmulated: NnOp<'attention', void>;
  swiglu: NnOp<'swiglu', NnTimed>;
  swigluAsync: NnOp<'swiglu', Promise<NnTimed>>;
  swigluEmulated: NnOp<'swiglu', void>;
  embedding: NnOp<'embedding', NnTimed>;
  embeddingAsync: NnOp<'embedding', Promise<NnTimed>>;
  embeddingEmulated: NnOp<'embedding', void>;
  logProbs: NnOp<'logProbs', NnLoss & NnTimed>;
  logProbsAsync: NnOp<'logProbs', Promise<NnLoss & NnTimed>>;
  logProbsReference: NnOp<'logProbs', NnLoss & NnTimed>;
  logProbsEmulated: NnOp<'logProbs', NnLoss>;
  argmax: NnOp<'argmax', NnTimed>;
  argmaxAsync: NnOp<'argmax', Promise<NnTimed>>;
  argmaxReference: NnOp<'argmax', NnTimed>;
  argmaxEmulated: NnOp<'argmax', void>;
}
// Declaration merging: CudaAddon (above) gains the transformer ops.
export interface CudaAddon extends CudaNnOps {}

/** The device model's linears (cuda/kernels/llama.h LlamaKernels): the CPU's order, or gemv + bf16 tensor cores. */
export type LlamaDeviceKernels = 'exact' | 'fast';
/** A LLaMA resident on the GPU (or emulated in host memory) from llamaDeviceCreate. */
export type LlamaDeviceHandle = { readonly __llamaDevice: unique symbol };
/** A KV cache of a device model from llamaDeviceCacheCreate. */
export type LlamaDeviceCacheHandle = { readonly __llamaDeviceCache: unique symbol };
/**
 * handle, tokens, seqOffsets, positions, keyMask, targets, logprobs, logitRows, logits, vocabSubset,
 * then optionally cache, cachePast, next, sample (temperature, topK, topP), seed
 */
export type LlamaDeviceForwardArgs = [
  LlamaDeviceHandle, Int32Array, Int32Array, Int32Array, Uint8Array | null, Int32Array | null, Float64Array | null, Int32Array | null, Float32Array | null, Int32Array | null,
  cache?: LlamaDeviceCacheHandle | null, cachePast?: Int32Array | null, next?: Int32Array | null, sample?: Float64Array | null, seed?: Seed,
];
/** handle, tokens, seqOffsets, positions, keyMask (the prompt batch), cache, cacheLength, cacheNextPosition (both in/out), sample, seed, maxNew, stopTokens, onStep */
export type LlamaDeviceGenerateArgs = [
  LlamaDeviceHandle, Int32Array, Int32Array, Int32Array, Uint8Array | null, LlamaDeviceCacheHandle, Int32Array, Int32Array, Float64Array | null, Seed,
  number, Int32Array | null, ((tokens: Int32Array, firstStep: number) => boolean) | null,
];
/** handle, tokens, seqOffsets, positions, keyMask, targets, logprobsPlus, logprobsMinus, logitRows, logitsPlus, logitsMinus, vocabSubset, seed, dist, bits, eps, trainable, mode (0 on-load, 1 in-place) */
export type LlamaDeviceProbeArgs = [
  LlamaDeviceHandle, Int32Array, Int32Array, Int32Array, Uint8Array | null, Int32Array | null, Float64Array | null, Float64Array | null,
  Int32Array | null, Float32Array | null, Float32Array | null, Int32Array | null, Seed | BigUint64Array, number, number, number, Uint8Array, mode?: number,
];
type LlamaSums = { logprobSum: number; count: number };
/** One query's sums, or (seeds given as a BigUint64Array) every query's. */
export type LlamaDeviceProbeSums = (ProbeSums | { queries: ProbeSums[] }) & { kernelMs: number };
/** The device-resident LLaMA forward, ZO probe and update (cuda/addon/bind_llama.cc); kernelMs 0 when emulated. */
export interface CudaLlamaOps {
  llamaDeviceCreate(cfg: Float64Array, ids: Uint32Array, emulated: boolean, kernels: LlamaDeviceKernels, ...weights: LlamaWeightArg[]): LlamaDeviceHandle;
  llamaDeviceCreateAsync(cfg: Float64Array, ids: Uint32Array, emulated: boolean, kernels: LlamaDeviceKernels, ...weights: LlamaWeightArg[]): Promise<LlamaDeviceHandle>;
  llamaDeviceForward(...args: LlamaDeviceForwardArgs): LlamaSums & { kernelMs: number };
  llamaDeviceForwardAsync(...args: LlamaDeviceForwardArgs): Promise<LlamaSums & { kernelMs: number }>;
  llamaDeviceGenerateAsync(...args: LlamaDeviceGenerateArgs): Promise<number>;
  llamaDeviceZoProbe(...args: LlamaDeviceProbeArgs): LlamaDeviceProbeSums;
  llamaDeviceZoProbeAsync(...args: LlamaDeviceProbeArgs): Promise<LlamaDeviceProbeSums>;
  /** seed, dist, bits, scale, decay, ids, decayFlags (one per id; needed when decay > 0) */
  llamaDeviceZoUpdate(h: LlamaDeviceHandle, seed: Seed, dist: number, bits: number, scale: number, decay: number, ids: Uint32Array, decayFlags?: Uint8Array | null): { kernelMs: number };
  llamaDeviceZoUpdateAsync(h: LlamaDeviceHandle, seed: Seed, dist: number, bits: number, scale: number, decay: number, ids: Uint32Array, decayFlags?: Uint8Array | null): Promise<{ kernelMs: number }>;
  /** Weight argument `arg` (embed, 9 per layer, norm, lmHead) copied into dst (same shape and format). */
  llamaDeviceRead(h: LlamaDeviceHandle, arg: number, dst: LlamaWeightArg): void;
  llamaDeviceReadAsync(h: LlamaDeviceHandle, arg: number, dst: LlamaWeightArg): Promise<void>;
  /** Idempotent; later calls with the handle throw ZOTUNE_DISPOSED. */
  llamaDeviceFree(h: LlamaDeviceHandle): void;
  /** kind, seeds, dist, bits, coefs, lr, beta1, beta2, adamEps, bias1, bias2, ids, decays: zoOptimStep on the device copy, state under slot. */
  llamaDeviceZoOptimStep(h: LlamaDeviceHandle, slot: number, kind: number, seeds: Uint32Array, dist: number, bits: number, coefs: Float32Array, lr: number,
    beta1: number, beta2: number, adamEps: number, bias1: number, bias2: number, ids: Uint32Array, decays: Float32Array): { kernelMs: number };
  llamaDeviceZoOptimStepAsync(h: LlamaDeviceHandle, slot: number, kind: number, seeds: Uint32Array, dist: number, bits: number, coefs: Float32Array, lr: number,
    beta1: number, beta2: number, adamEps: number, bias1: number, bias2: number, ids: Uint32Array, decays: Float32Array): Promise<{ kernelMs: number }>;
  llamaDeviceZoOptimFree(h: LlamaDeviceHandle, slot: number): void;
  llamaDeviceZoOptimFreeAsync(h: LlamaDeviceHandle, slot: number): Promise<void>;
  /** Keys, values and slot mask for `batch` sequences of `capacity` slots, in the model's memory kind. */
  llamaDeviceCacheCreate(h: LlamaDeviceHandle, batch: number, capacity: number): LlamaDeviceCacheHandle;
  llamaDeviceCacheCreateAsync(h: LlamaDeviceHandle, batch: number, capacity: number): Promise<LlamaDeviceCacheHandle>;
  /** Every slot masked off (the memory is kept). */
  llamaDeviceCacheReset(c: LlamaDeviceCacheHandle): void;
  llamaDeviceCacheResetAsync(c: LlamaDeviceCacheHandle): Promise<void>;
  /** Idempotent; later calls with the cache throw ZOTUNE_DISPOSED. */
  llamaDeviceCacheFree(c: LlamaDeviceCacheHandle): void;
}
export interface CudaAddon extends CudaLlamaOps {}

/** x f32 [M, K], w a QTensor descriptor (int8 / fp8 / bf16 by op), y f32 [M, N], bias f32 [N] or null. */
export type GemmTcArgs = [x: Mem, xByteOffset: number, M: number, w: QTensorDesc, y: Mem, yByteOffset: number, bias: Mem | null, biasByteOffset: number];
export type GemmF32Args = [x: Mem, xByteOffset: number, M: number, w: Mem, wByteOffset: number, N: number, K: number, y: Mem, yByteOffset: number, bias: Mem | null, biasByteOffset: number];

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

/** cfg, ids, tokens, seqOffsets, positions, keyMask, targets, logprobs, logitRows, logits, vocabSubset, cacheK, cacheV, cacheMask, cachePast, cacheCap, next, sample, seed, ...weights */
export type LlamaGenerateArgs = [
  Float64Array, Uint32Array, Int32Array, Int32Array, Int32Array, Uint8Array | null, Mem, Mem, Uint8Array, Int32Array, Int32Array, number,
  Float64Array | null, Seed, number, Int32Array | null, ((tokens: Int32Array, firstStep: number) => boolean) | null, ...LlamaWeightArg[],
];

export type LlamaForwardArgs = [
  Float64Array, Uint32Array, Int32Array, Int32Array, Int32Array, Uint8Array | null, Int32Array | null, Float64Array | null, Int32Array | null, Float32Array | null,
  Int32Array | null, Mem | null, Mem | null, Uint8Array | null, Int32Array | null, number, Int32Array | null, Float64Array | null, Seed, ...LlamaWeightArg[],
];

/** Weight arguments of the LLaMA ops: f32 memory or a quantized tensor descriptor (intAct: W8A8 / W4A8). */
export type LlamaWeightArg = Mem | (QTensorDesc & { intAct?: boolean });

/** cfg, ids, tokens, seqOffsets, positions, keyMask, targets, logprobsPlus, logprobsMinus, logitRows, logitsPlus, logitsMinus, vocabSubset, seed, dist, bits, eps, mode, trainable, ...weights */
export type LlamaZoProbeArgs = [
  Float64Array, Uint32Array, Int32Array, Int32Array, Int32Array, Uint8Array | null, Int32Array | null, Float64Array | null, Float64Array | null,
  Int32Array | null, Float32Array | null, Float32Array | null, Int32Array | null, Seed | BigUint64Array, number, number, number, number, Uint8Array, ...LlamaWeightArg[],
];
/** A probe's two loss sums. */
export type ProbeSums = { plus: { logprobSum: number; count: number }; minus: { logprobSum: number; count: number } };

/** seed, dist, bits, scale, decay, ids, decayFlags, counts, ...tensors */
export type ZoUpdateArgs = [Seed, number, number, number, number, Uint32Array, Uint8Array, Float64Array, ...LlamaWeightArg[]];

/** out, outOff, q, qOff, k, kOff, v, vOff, seqOffsets, seqStart, keyMask, batch, heads, kvHeads, headDim, cap, scale */
export type AttentionArgs = [Mem, number, Mem, number, Mem, number, Mem, number, Int32Array, Int32Array, Uint8Array | null, number, number, number, number, number, number];
