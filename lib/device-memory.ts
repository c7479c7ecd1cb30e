/**
 * Device memory: the CUDA pool's statistics and DeviceTensor, a dtype and shape over one device
 * buffer with explicit host <-> device copies. Statistics are read only from a CUDA backend that is
 * already loaded and usable: asking for them never loads CUDA or probes the GPU.
 */
import { cudaAddon, knownCudaStatus } from './backend';
import { DTYPES, DType, TypedArray } from './dtype';
import { ZotuneError, fail } from './errors';
import { loadCuda } from './native/load';
import type { DeviceHandle, DeviceMemoryReport } from './native/binding';
import { checkShape } from './tensor';
import type { MemoryCategory, Tensor } from './tensor';

export type { DeviceMemoryReport };

/** The pool's bytes by category, live and peak, plus cached / reserved; undefined unless CUDA is in use. */
export function deviceMemory(): DeviceMemoryReport | undefined {
  return knownCudaStatus()?.available ? loadCuda().addon!.deviceMemory() : undefined;
}

/** Peaks := live now (no-op unless CUDA is in use). */
export function resetDeviceMemoryPeaks(): void {
  if (knownCudaStatus()?.available) loadCuda().addon!.deviceResetPeaks();
}

/** Gives the pool's cached blocks back to the driver, e.g. for another process (no-op unless CUDA is in use). */
export function releaseDeviceCache(): void {
  if (knownCudaStatus()?.available) loadCuda().addon!.deviceReleaseCache();
}

/** A tensor in GPU memory (the pool, by category); freed by dispose() / `using`, or by the GC if forgotten. */
export class DeviceTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly size: number;
  readonly category: MemoryCategory;
  private handle: DeviceHandle | undefined;

  private constructor(dtype: DType, shape: readonly number[], category: MemoryCategory) {
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.size = checkShape(shape);
    this.category = category;
    this.handle = cudaAddon().deviceAlloc(this.byteLength, category);
  }

  /** Uninitialized device memory; throws ZOTUNE_CUDA_UNAVAILABLE without a usable GPU, ZOTUNE_OOM when it is full. */
  static empty(shape: readonly number[], dtype: DType = 'f32', category: MemoryCategory = 'other'): DeviceTensor {
    return new DeviceTensor(dtype, shape, category);
  }

  /** A device copy of a host tensor. */
  static from(t: Tensor, category: MemoryCategory = 'other'): DeviceTensor {
    const d = new DeviceTensor(t.dtype, t.shape, category);
    d.upload(t.data());
    return d;
  }

  get byteLength(): number {
    return this.size * DTYPES[this.dtype].bytes;
  }

  get disposed(): boolean {
    return !this.handle;
  }

  private args(host: TypedArray, elementOffset: number): [DeviceHandle, TypedArray, number] {
    if (!this.handle) throw new ZotuneError('ZOTUNE_DISPOSED', 'device tensor was disposed');
    const Ctor = DTYPES[this.dtype].array;
    if (!(host instanceof Ctor)) fail('ZOTUNE_DTYPE', `a ${this.dtype} device tensor copies ${Ctor.name}s, got ${host.constructor.name}`);
    if (!Number.isSafeInteger(elementOffset) || elementOffset < 0) fail('ZOTUNE_INVALID_ARGUMENT', 'elementOffset must be a non-negative integer');
    return [this.handle, host, elementOffset * DTYPES[this.dtype].bytes];
  }

  /** Copies `src` into elements [elementOffset, elementOffset + src.length). */
  upload(src: TypedArray, elementOffset = 0): this {
    cudaAddon().deviceUpload(...this.args(src, elementOffset));
    return this;
  }

  async uploadAsync(src: TypedArray, elementOffset = 0): Promise<this> {
    await cudaAddon().deviceUploadAsync(...this.args(src, elementOffset));
    return this;
  }

  /** Copies elements [elementOffset, elementOffset + dst.length) into `dst` (default: all of them, into a new array). */
  download(dst?: TypedArray, elementOffset = 0): TypedArray {
    const out = dst ?? new (DTYPES[this.dtype].array)(this.size);
    cudaAddon().deviceDownload(...this.args(out, elementOffset));
    return out;
  }

  async downloadAsync(dst?: TypedArray, elementOffset = 0): Promise<TypedArray> {
    const out = dst ?? new (DTYPES[this.dtype].array)(this.size);
    await cudaAddon().deviceDownloadAsync(...this.args(out, elementOffset));
    return out;
  }

  /** Returns the memory to the pool now; an in-flight async copy keeps it until it ends. */
  dispose(): void {
    if (this.handle) loadCuda().addon!.deviceFree(this.handle);
    this.handle = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
