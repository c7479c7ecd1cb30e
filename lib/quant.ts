/**
 * Quantization: f32 <-> QTensor (int8, int4 symmetric/asymmetric, nf4, fp8 e4m3/e5m2, bf16, fp16)
 * with round-to-nearest-even or unbiased stochastic rounding (SR), elementwise float-format
 * conversions, fake quantization, and the quantized ZO update (QuZO) that moves every code along a
 * seeded direction on the format's own grid. Formats, scales and policies (saturation, NaN) are
 * documented in native/common/formats.h; the exact element expressions in native/common/quant_elem.h.
 *
 * Every op has an async form (runs off the event loop) and a `...Sync` form. SR is a pure function
 * of (seed, stream, element index): the same bits on any thread count and CPU path.
 */
import { expectDType, MemoryCategory, Tensor } from './tensor';
import { Granularity, QFORMAT_CODE, QFormat, QTensor, rowBytes, scaleCount } from './qtensor';
import { fail } from './errors';
import { native } from './native/load';
import type { DType } from './dtype';
import type { QTensorDesc } from './qtensor';
import type { DirectionOptions } from './perturb';

export type Rounding = 'nearest' | 'stochastic';

export interface RoundingOptions {
  /** 'nearest' (round to nearest, ties to even; default) or 'stochastic' (unbiased SR). */
  rounding?: Rounding;
  /** SR seed (required for 'stochastic'): element i rounds with Philox word (seed, stream, purpose srQuantize, i). */
  seed?: number | bigint;
  /** SR stream, e.g. the tensor's id. Default 0. */
  stream?: number;
}

export interface QuantizeOptions extends RoundingOptions {
  /** One scale per tensor, per row ('channel') or per 32/64/128 elements of a row. Defaults: int8 'channel', int4 128, nf4 64, fp8 'tensor'; bf16/fp16 have no scales ('tensor'). */
  granularity?: Granularity;
  /** int4 only: scale (max - min) / 15 with a zero-point per scale, instead of absmax / 7 around code 8. */
  asymmetric?: boolean;
  /** fp8 only: no scaling (scale 1, granularity 'tensor'): codes are the plain fp8 encodings. */
  scaleFree?: boolean;
  /** Memory category of the new QTensor. Default 'weights'. */
  category?: MemoryCategory;
}

/** The float formats that convert elementwise (no scales). */
export type FloatFormat = 'bf16' | 'fp16' | 'fp8-e4m3' | 'fp8-e5m2';

/** The direction z of a quantized update (lib/perturb.ts DirectionOptions without `first`: z is
 * indexed by the logical element r * cols + c). srPurpose defaults to 'update' (QuZO's Q2) here. */
export type QuantDirection = Omit<DirectionOptions, 'first'>;

const DEFAULT_GRANULARITY: Record<QFormat, Granularity> = {
  int8: 'channel',
  int4: 128,
  nf4: 64,
  'fp8-e4m3': 'tensor',
  'fp8-e5m2': 'tensor',
  bf16: 'tensor',
  fp16: 'tensor',
};
/** Element type of a QTensor's code tensor. */
export const CODE_DTYPE: Record<QFormat, DType> = { int8: 'i8', int4: 'u8', nf4: 'u8', 'fp8-e4m3': 'u8', 'fp8-e5m2': 'u8', bf16: 'bf16', fp16: 'f16' };
const FLOAT_FORMATS: readonly FloatFormat[] = ['bf16', 'fp16', 'fp8-e4m3', 'fp8-e5m2'];
const SCALE_MODE = { keep: 0, fromData: 1, one: 2 } as const;
const DIST = { gaussian: 0, rademacher: 1 } as const;
const SR_PURPOSE = { probe: 4, update: 5 } as const;

function checkFormat(format: QFormat): void {
  if (!Object.prototype.hasOwnProperty.call(QFORMAT_CODE, format))
    fail('ZOTUNE_INVALID_ARGUMENT', `unknown quantized format '${String(format)}' (${Object.keys(QFORMAT_CODE).join(', ')})`);
}

function matrixShape(x: Tensor, what: string): [number, number] {
  if (x.shape.length === 2) return [x.shape[0], x.shape[1]];
  if (x.shape.length === 1) return [1, x.shape[0]];
  fail('ZOTUNE_SHAPE_MISMATCH', `${what} must be 1-D or 2-D [rows, cols], got [${x.shape.join(', ')}]`);
}

function roundingArgs(opts: RoundingOptions): [boolean, number | bigint, number] {
  const r = opts.rounding ?? 'nearest';
  if (r !== 'nearest' && r !== 'stochastic') fail('ZOTUNE_INVALID_ARGUMENT', `rounding must be 'nearest' or 'stochastic', got '${String(r)}'`);
  if (r === 'stochastic' && opts.seed === undefined) fail('ZOTUNE_INVALID_ARGUMENT', 'stochastic rounding needs a seed');
  return [r === 'stochastic', opts.seed ?? 0, opts.stream ?? 0];
}

function directionArgs(d: QuantDirection): [number | bigint, number, number, number, number] {
  if (!d || typeof d !== 'object') fail('ZOTUNE_INVALID_ARGUMENT', 'a direction {seed, stream, dist} is required');
  const dist = DIST[d.dist as keyof typeof DIST];
  if (dist === undefined) fail('ZOTUNE_INVALID_ARGUMENT', `dist must be 'gaussian' or 'rademacher', got '${String(d.dist)}'`);
  const sr = SR_PURPOSE[(d.srPurpose ?? 'update') as keyof typeof SR_PURPOSE];
  if (sr === undefined) fail('ZOTUNE_INVALID_ARGUMENT', `srPurpose must be 'probe' or 'update', got '${String(d.srPurpose)}'`);
  return [d.seed, d.stream, dist, d.bits ?? 0, sr];
}

function f32Output(out: Tensor | undefined, shape: readonly number[], what: string): Tensor {
  if (!out) return Tensor.empty(shape, 'f32');
  expectDType(out, 'f32', what);
  const n = shape.reduce((a, b) => a * b, 1);
  if (out.size !== n) fail('ZOTUNE_SHAPE_MISMATCH', `${what} holds ${out.size} elements, needs ${n}`);
  return out;
}

/** An uninitialised QTensor (codes, scales and zero-points in native memory). */
export function emptyQTensor(
  format: QFormat,
  shape: readonly [number, number],
  granularity: Granularity = DEFAULT_GRANULARITY[format],
  opts: { asymmetric?: boolean; category?: MemoryCategory } = {},
): QTensor {
  checkFormat(format);
  const [rows, cols] = shape;
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 0 || cols < 0)
    fail('ZOTUNE_SHAPE_MISMATCH', `invalid QTensor shape [${shape.join(', ')}]`);
  if (!(granularity === 'tensor' || granularity === 'channel' || granularity === 32 || granularity === 64 || granularity === 128))
    fail('ZOTUNE_INVALID_ARGUMENT', `granularity must be 'tensor', 'channel', 32, 64 or 128, got ${String(granularity)}`);
  const hasScales = format !== 'bf16' && format !== 'fp16';
  if (!hasScales && granularity !== 'tensor') fail('ZOTUNE_INVALID_ARGUMENT', `${format} has no scales: granularity must be 'tensor'`);
  if (opts.asymmetric && format !== 'int4') fail('ZOTUNE_INVALID_ARGUMENT', 'asymmetric quantization is int4-only');
  const category = opts.category ?? 'weights';
  const dtype = CODE_DTYPE[format];
  const elems = (rows * rowBytes(format, cols)) / (dtype === 'bf16' || dtype === 'f16' ? 2 : 1);
  const data = Tensor.empty([elems], dtype, category);
  const ns = scaleCount(granularity, rows, cols);
  const scales = hasScales ? Tensor.zeros([ns], 'f32', category) : undefined;
  const zeros = opts.asymmetric ? Tensor.zeros([ns], 'u8', category) : undefined;
  return new QTensor(format, [rows, cols], granularity, data, scales, zeros);
}

// --- quantize ------------------------------------------------------------------------------------

type NativeQuantizeArgs = Parameters<ReturnType<typeof native>['quantize']>;

function newQuantized(x: Tensor, format: QFormat, opts: QuantizeOptions, category: MemoryCategory): [QTensor, number] {
  expectDType(x, 'f32', 'quantize input');
  checkFormat(format);
  const shape = matrixShape(x, 'quantize input');
  const scaleFree = !!opts.scaleFree;
  if (scaleFree && format !== 'fp8-e4m3' && format !== 'fp8-e5m2') fail('ZOTUNE_INVALID_ARGUMENT', 'scaleFree is for fp8 formats');
  const granularity = opts.granularity ?? DEFAULT_GRANULARITY[format];
  if (scaleFree && granularity !== 'tensor') fail('ZOTUNE_INVALID_ARGUMENT', "scale-free fp8 has granularity 'tensor'");
  const q = emptyQTensor(format, shape, granularity, { asymmetric: opts.asymmetric, category });
  return [q, scaleFree ? SCALE_MODE.one : SCALE_MODE.fromData];
}

function quantizeArgs(x: Tensor, q: QTensor, mode: number, opts: RoundingOptions, fake?: Tensor): NativeQuantizeArgs {
  const [sr, seed, stream] = roundingArgs(opts);
  const base = [x.mem, x.byteOffset, q.desc(), mode, sr, seed, stream] as const;
  return (fake ? [...base, fake.mem, fake.byteOffset] : [...base]) as NativeQuantizeArgs;
}

async function settle<T>(p: Promise<unknown>, value: T, cleanup: () => void): Promise<T> {
  try {
    await p;
  } catch (e) {
    cleanup();
    throw e;
  }
  return value;
}

function settleSync<T>(run: () => void, value: T, cleanup: () => void): T {
  try {
    run();
  } catch (e) {
    cleanup();
    throw e;
  }
  return value;
}

/**
 * Quantizes an f32 matrix [rows, cols] (a 1-D tensor is one row) into a new QTensor, computing
 * scales from the data: int8 absmax/127, int4 absmax/7 (or asymmetric (max-min)/15 + zero-point),
 * nf4 absmax, fp8 absmax/format max (or scale-free). Non-finite input -> ZOTUNE_NONFINITE.
 */
export async function quantize(x: Tensor, format: QFormat, opts: QuantizeOptions = {}): Promise<QTensor> {
  const [q, mode] = newQuantized(x, format, opts, opts.category ?? 'weights');
  let args: NativeQuantizeArgs;
  try {
    args = quantizeArgs(x, q, mode, opts);
  } catch (e) {
    q.dispose();
    throw e;
  }
  return settle(native().quantizeAsync(...args), q, () => q.dispose());
}

export function quantizeSync(x: Tensor, format: QFormat, opts: QuantizeOptions = {}): QTensor {
  const [q, mode] = newQuantized(x, format, opts, opts.category ?? 'weights');
  return settleSync(() => native().quantize(...quantizeArgs(x, q, mode, opts)), q, () => q.dispose());
}

function intoArgs(x: Tensor, q: QTensor, opts: RoundingOptions): NativeQuantizeArgs {
  expectDType(x, 'f32', 'quantize input');
  const [rows, cols] = matrixShape(x, 'quantize input');
  if (rows * cols !== q.rows * q.cols || (x.shape.length === 2 && (rows !== q.rows || cols !== q.cols)))
    fail('ZOTUNE_SHAPE_MISMATCH', `input [${x.shape.join(', ')}] does not match the QTensor [${q.rows}, ${q.cols}]`);
  return quantizeArgs(x, q, SCALE_MODE.keep, opts);
}

/** Re-quantizes x into an existing QTensor on its fixed grid (scales and zero-points kept). */
export async function quantizeInto(x: Tensor, q: QTensor, opts: RoundingOptions = {}): Promise<QTensor> {
  await native().quantizeAsync(...intoArgs(x, q, opts));
  return q;
}

export function quantizeIntoSync(x: Tensor, q: QTensor, opts: RoundingOptions = {}): QTensor {
  native().quantize(...intoArgs(x, q, opts));
  return q;
}

// --- dequantize ----------------------------------------------------------------------------------

/** QTensor -> f32 [rows, cols] (into `out` when given). */
export async function dequantize(q: QTensor, out?: Tensor): Promise<Tensor> {
  const y = f32Output(out, [q.rows, q.cols], 'dequantize output');
  return settle(native().dequantizeAsync(q.desc(), y.mem, y.byteOffset), y, () => out || y.dispose());
}

export function dequantizeSync(q: QTensor, out?: Tensor): Tensor {
  const y = f32Output(out, [q.rows, q.cols], 'dequantize output');
  return settleSync(() => native().dequantize(q.desc(), y.mem, y.byteOffset), y, () => out || y.dispose());
}

// --- fake quantization ---------------------------------------------------------------------------

/** x -> dequantize(quantize(x)) in one pass, f32 to f32 on the format's grid (codes never kept). */
export async function fakeQuantize(x: Tensor, format: QFormat, opts: QuantizeOptions = {}, out?: Tensor): Promise<Tensor> {
  const [q, mode] = newQuantized(x, format, opts, 'workspace');
  let y: Tensor | undefined;
  try {
    y = f32Output(out, x.shape, 'fakeQuantize output');
    await native().quantizeAsync(...quantizeArgs(x, q, mode, opts, y));
  } catch (e) {
    if (!out) y?.dispose();
    throw e;
  } finally {
    q.dispose();
  }
  return y;
}

export function fakeQuantizeSync(x: Tensor, format: QFormat, opts: QuantizeOptions = {}, out?: Tensor): Tensor {
  const [q, mode] = newQuantized(x, format, opts, 'workspace');
  let y: Tensor | undefined;
  try {
    y = f32Output(out, x.shape, 'fakeQuantize output');
    native().quantize(...quantizeArgs(x, q, mode, opts, y));
  } catch (e) {
    if (!out) y?.dispose();
    throw e;
  } finally {
    q.dispose();
  }
  return y;
}

// --- elementwise float formats -------------------------------------------------------------------

function floatDesc(format: FloatFormat, n: number, codes: Tensor): QTensorDesc {
  if (!FLOAT_FORMATS.includes(format)) fail('ZOTUNE_INVALID_ARGUMENT', `elementwise conversion is for ${FLOAT_FORMATS.join(', ')}, got '${String(format)}'`);
  expectDType(codes, CODE_DTYPE[format], `${format} codes`);
  if (codes.size !== n) fail('ZOTUNE_SHAPE_MISMATCH', `${format} codes hold ${codes.size} elements, need ${n}`);
  const fp8 = format === 'fp8-e4m3' || format === 'fp8-e5m2';
  return { format: QFORMAT_CODE[format], rows: 1, cols: n, group: 0, data: codes.mem, scales: fp8 ? new Float32Array([1]) : undefined };
}

function encodeArgs(x: Tensor, format: FloatFormat, opts: RoundingOptions, out: Tensor | undefined): [Tensor, NativeQuantizeArgs] {
  expectDType(x, 'f32', `${format} conversion input`);
  if (!FLOAT_FORMATS.includes(format)) fail('ZOTUNE_INVALID_ARGUMENT', `elementwise conversion is for ${FLOAT_FORMATS.join(', ')}, got '${String(format)}'`);
  const codes = out ?? Tensor.empty(x.shape, CODE_DTYPE[format]);
  try {
    const desc = floatDesc(format, x.size, codes);
    const [sr, seed, stream] = roundingArgs(opts);
    return [codes, [x.mem, x.byteOffset, desc, SCALE_MODE.one, sr, seed, stream]];
  } catch (e) {
    if (!out) codes.dispose();
    throw e;
  }
}

/**
 * f32 -> bf16 / fp16 (Uint16 bit patterns) or fp8 codes (u8), elementwise, RTNE or SR; values
 * beyond the format's range saturate to +-max, NaN stays NaN.
 */
export async function toFormat(x: Tensor, format: FloatFormat, opts: RoundingOptions = {}, out?: Tensor): Promise<Tensor> {
  const [codes, args] = encodeArgs(x, format, opts, out);
  return settle(native().quantizeAsync(...args), codes, () => out || codes.dispose());
}

export function toFormatSync(x: Tensor, format: FloatFormat, opts: RoundingOptions = {}, out?: Tensor): Tensor {
  const [codes, args] = encodeArgs(x, format, opts, out);
  return settleSync(() => native().quantize(...args), codes, () => out || codes.dispose());
}

function decodeArgs(codes: Tensor, format: FloatFormat, out: Tensor | undefined): [Tensor, QTensorDesc] {
  const desc = floatDesc(format, codes.size, codes);
  return [f32Output(out, codes.shape, `${format} conversion output`), desc];
}

/** bf16 / fp16 / fp8 codes -> f32 (exact). */
export async function fromFormat(codes: Tensor, format: FloatFormat, out?: Tensor): Promise<Tensor> {
  const [y, desc] = decodeArgs(codes, format, out);
  return settle(native().dequantizeAsync(desc, y.mem, y.byteOffset), y, () => out || y.dispose());
}

export function fromFormatSync(codes: Tensor, format: FloatFormat, out?: Tensor): Tensor {
  const [y, desc] = decodeArgs(codes, format, out);
  return settleSync(() => native().dequantize(desc, y.mem, y.byteOffset), y, () => out || y.dispose());
}

// --- quantized ZO update -------------------------------------------------------------------------

function checkAlpha(alpha: number): void {
  if (typeof alpha !== 'number') fail('ZOTUNE_INVALID_ARGUMENT', 'alpha must be a number');
  if (!Number.isFinite(alpha)) fail('ZOTUNE_NONFINITE', `alpha must be finite, got ${alpha}`);
}

/**
 * QuZO update in the QTensor's own format: every code moves to SR_grid(value + alpha * z(i)),
 * z from `dir`, scales and zero-points unchanged, unbiased: E[value'] = value + alpha * z, except
 * at the grid's ends, where the update saturates (an absmax-scaled group's largest element sits
 * there, so its outward moves are dropped: biased inward for those elements). SR words come from (dir.seed, dir.stream, purpose srWeight, i).
 * A group with scale 0 (all zeros when it was quantized) has the grid {0} and does not move; alpha
 * so large that alpha / scale overflows f32 is refused (ZOTUNE_INVALID_ARGUMENT).
 */
export async function update(q: QTensor, alpha: number, dir: QuantDirection): Promise<QTensor> {
  checkAlpha(alpha);
  await native().quantUpdateAsync(q.desc(), alpha, ...directionArgs(dir));
  return q;
}

export function updateSync(q: QTensor, alpha: number, dir: QuantDirection): QTensor {
  checkAlpha(alpha);
  native().quantUpdate(q.desc(), alpha, ...directionArgs(dir));
  return q;
}

type Indices = Uint32Array | Tensor;

function indexArgs(indices: Indices): [unknown, number, number] {
  if (indices instanceof Tensor) {
    expectDType(indices, 'u32', 'indices');
    return [indices.mem, indices.byteOffset, indices.size];
  }
  if (indices instanceof Uint32Array) return [indices, 0, indices.length];
  fail('ZOTUNE_DTYPE', 'indices must be a Uint32Array or a u32 tensor');
}

/**
 * Sparse QuZO update: only the listed logical elements (r * cols + c; u32, any order, no repeats)
 * change, exactly as the dense update would change them. Every index is checked first: an index
 * beyond the tensor (ZOTUNE_OUT_OF_RANGE) or listed twice (ZOTUNE_INVALID_ARGUMENT) changes nothing.
 */
export async function updateIndices(q: QTensor, indices: Indices, alpha: number, dir: QuantDirection): Promise<QTensor> {
  checkAlpha(alpha);
  const [mem, off, count] = indexArgs(indices);
  await native().quantUpdateIndicesAsync(q.desc(), mem as Tensor['mem'], off, count, alpha, ...directionArgs(dir));
  return q;
}

export function updateIndicesSync(q: QTensor, indices: Indices, alpha: number, dir: QuantDirection): QTensor {
  checkAlpha(alpha);
  const [mem, off, count] = indexArgs(indices);
  native().quantUpdateIndices(q.desc(), mem as Tensor['mem'], off, count, alpha, ...directionArgs(dir));
  return q;
}
