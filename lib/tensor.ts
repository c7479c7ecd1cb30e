/**
 * Tensor: a dtype and shape over either engine-owned native memory (NativeBuffer) or the memory
 * of a JS TypedArray (zero-copy both ways). Native memory is freed by dispose() (or `using`);
 * zero-copy views of it are detached at that moment, never left dangling.
 */
import { DTYPES, DType, TypedArray, dtypeOf } from './dtype';
import { ZotuneError, fail } from './errors';
import { native } from './native/load';
import type { Mem, NativeBuffer } from './native/binding';

export type MemoryCategory = 'weights' | 'activations' | 'gradients' | 'optimizer' | 'workspace' | 'other';

/** @internal Element count of a shape (checked: non-negative integer dimensions, a safe-integer product). */
export function checkShape(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) fail('ZOTUNE_SHAPE_MISMATCH', `invalid shape [${shape.join(', ')}]: dimensions must be non-negative integers`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) fail('ZOTUNE_SHAPE_MISMATCH', `shape [${shape.join(', ')}] is too large`);
  return n;
}

export class Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly size: number;
  /** Native memory, or undefined for a tensor over a JS TypedArray. */
  private readonly buffer: NativeBuffer | undefined;
  private readonly array: TypedArray | undefined;
  private readonly ownsBuffer: boolean;

  private constructor(dtype: DType, shape: readonly number[], buffer: NativeBuffer | undefined, array: TypedArray | undefined, owns: boolean) {
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.size = checkShape(shape);
    this.buffer = buffer;
    this.array = array;
    this.ownsBuffer = owns;
  }

  /** A zero-filled tensor in native memory. */
  static zeros(shape: readonly number[], dtype: DType = 'f32', category: MemoryCategory = 'other'): Tensor {
    const n = checkShape(shape);
    const buf = new (native().NativeBuffer)(n * DTYPES[dtype].bytes, category, true);
    return new Tensor(dtype, shape, buf, undefined, true);
  }

  /** A tensor in native memory whose contents are unspecified (fastest allocation). */
  static empty(shape: readonly number[], dtype: DType = 'f32', category: MemoryCategory = 'other'): Tensor {
    const n = checkShape(shape);
    const buf = new (native().NativeBuffer)(n * DTYPES[dtype].bytes, category, false);
    return new Tensor(dtype, shape, buf, undefined, true);
  }

  /** Zero-copy: the tensor reads and writes `array` itself. bf16/f16 tensors take a Uint16Array. */
  static from(array: TypedArray, shape: readonly number[] = [array.length], dtype?: DType): Tensor {
    const dt = dtype ?? dtypeOf(array);
    if (DTYPES[dt].array !== array.constructor) fail('ZOTUNE_DTYPE', `a ${dt} tensor needs a ${DTYPES[dt].array.name}, got ${array.constructor.name}`);
    if (checkShape(shape) !== array.length) fail('ZOTUNE_SHAPE_MISMATCH', `shape [${shape.join(', ')}] does not hold ${array.length} elements`);
    return new Tensor(dt, shape, undefined, array, false);
  }

  /** Copies numbers into a new native tensor. */
  static fromArray(values: ArrayLike<number>, shape: readonly number[] = [values.length], dtype: DType = 'f32', category: MemoryCategory = 'other'): Tensor {
    const t = Tensor.empty(shape, dtype, category);
    if (t.size !== values.length) {
      t.dispose();
      fail('ZOTUNE_SHAPE_MISMATCH', `shape [${shape.join(', ')}] does not hold ${values.length} elements`);
    }
    t.data().set(values);
    return t;
  }

  get byteLength(): number {
    return this.size * DTYPES[this.dtype].bytes;
  }

  get disposed(): boolean {
    return this.buffer ? this.buffer.disposed : false;
  }

  /** The memory argument native ops take, with byteOffset(). */
  get mem(): Mem {
    if (this.buffer) {
      if (this.buffer.disposed) throw new ZotuneError('ZOTUNE_DISPOSED', 'tensor was disposed');
      return this.buffer;
    }
    return this.array!;
  }

  /** Byte offset of element 0 inside `mem` (TypedArray views carry their own offset). */
  get byteOffset(): number {
    return 0;
  }

  /** Zero-copy TypedArray over the tensor's elements; detached if the tensor is disposed. */
  data(): TypedArray {
    if (this.array) return this.array;
    const buf = this.mem as NativeBuffer;
    const Ctor = DTYPES[this.dtype].array;
    return new Ctor(buf.view(), 0, this.size);
  }

  toArray(): number[] {
    return Array.from(this.data());
  }

  /** Same memory, new shape. */
  reshape(shape: readonly number[]): Tensor {
    if (checkShape(shape) !== this.size) fail('ZOTUNE_SHAPE_MISMATCH', `cannot reshape [${this.shape.join(', ')}] to [${shape.join(', ')}]`);
    return new Tensor(this.dtype, shape, this.buffer, this.array, false);
  }

  /** Frees native memory now (no-op for TypedArray-backed tensors and reshaped views). */
  dispose(): void {
    if (this.buffer && this.ownsBuffer) this.buffer.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

export function expectDType(t: Tensor, dtype: DType, what: string): void {
  if (t.dtype !== dtype) fail('ZOTUNE_DTYPE', `${what} must be ${dtype}, got ${t.dtype}`);
}
