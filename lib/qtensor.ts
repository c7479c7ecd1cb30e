/**
 * QTensor: a quantized 2-D tensor [rows, cols] (weights are [out, in]); layout and policies in
 * native/common/formats.h. Quantizing and dequantizing live in quant.ts; GEMMs take QTensors.
 */
import { Tensor } from './tensor';
import { fail } from './errors';

export type QFormat = 'int8' | 'int4' | 'nf4' | 'fp8-e4m3' | 'fp8-e5m2' | 'bf16' | 'fp16';

/** Codes shared with the native QFormat enum. */
export const QFORMAT_CODE: Record<QFormat, number> = { int8: 0, int4: 1, nf4: 2, 'fp8-e4m3': 3, 'fp8-e5m2': 4, bf16: 5, fp16: 6 };

/** 'tensor': one scale; 'channel': one per row; 32 | 64 | 128: one per group of a row. */
export type Granularity = 'tensor' | 'channel' | 32 | 64 | 128;

export function rowBytes(format: QFormat, cols: number): number {
  if (format === 'int4' || format === 'nf4') return Math.ceil(cols / 2);
  if (format === 'bf16' || format === 'fp16') return cols * 2;
  return cols;
}

export function groupSize(granularity: Granularity, cols: number): number {
  return granularity === 'tensor' ? 0 : granularity === 'channel' ? cols : granularity;
}

export function scaleCount(granularity: Granularity, rows: number, cols: number): number {
  const g = groupSize(granularity, cols);
  return g === 0 ? 1 : rows * Math.ceil(cols / g);
}

/** What native ops receive (validated again in native/addon Args::qtensor). */
export interface QTensorDesc {
  format: number;
  rows: number;
  cols: number;
  group: number;
  data: unknown;
  scales?: unknown;
  zeros?: unknown;
}

export class QTensor {
  readonly format: QFormat;
  readonly shape: readonly [number, number];
  readonly granularity: Granularity;
  /** Codes: u8 (int4/nf4 packed, fp8), i8 (int8), u16 bit patterns (bf16/fp16). */
  readonly data: Tensor;
  /** f32 scales, absent for bf16/fp16. */
  readonly scales: Tensor | undefined;
  /** int4 asymmetric zero-points (u8, one per scale); absent means symmetric (zero-point 8). */
  readonly zeros: Tensor | undefined;

  constructor(format: QFormat, shape: readonly [number, number], granularity: Granularity, data: Tensor, scales?: Tensor, zeros?: Tensor) {
    const [rows, cols] = shape;
    if (!(format in QFORMAT_CODE)) fail('ZOTUNE_INVALID_ARGUMENT', `unknown quantized format '${format}' (${Object.keys(QFORMAT_CODE).join(', ')})`);
    if (data.byteLength !== rows * rowBytes(format, cols)) fail('ZOTUNE_SHAPE_MISMATCH', `${format} [${rows}, ${cols}] needs ${rows * rowBytes(format, cols)} data bytes, got ${data.byteLength}`);
    const hasScales = format !== 'bf16' && format !== 'fp16';
    if (hasScales !== !!scales) fail('ZOTUNE_INVALID_ARGUMENT', `${format} ${hasScales ? 'needs' : 'takes no'} scales`);
    if (scales && (scales.dtype !== 'f32' || scales.size !== scaleCount(granularity, rows, cols)))
      fail('ZOTUNE_SHAPE_MISMATCH', `${format} with granularity ${granularity} needs ${scaleCount(granularity, rows, cols)} f32 scales`);
    if (zeros && (format !== 'int4' || zeros.dtype !== 'u8' || zeros.size !== scaleCount(granularity, rows, cols)))
      fail('ZOTUNE_SHAPE_MISMATCH', 'zero-points are int4-only, u8, one per scale');
    this.format = format;
    this.shape = [rows, cols];
    this.granularity = granularity;
    this.data = data;
    this.scales = scales;
    this.zeros = zeros;
  }

  get rows(): number {
    return this.shape[0];
  }
  get cols(): number {
    return this.shape[1];
  }

  /** Bytes held: codes + scales + zero-points. */
  get byteLength(): number {
    return this.data.byteLength + (this.scales?.byteLength ?? 0) + (this.zeros?.byteLength ?? 0);
  }

  desc(): QTensorDesc {
    return {
      format: QFORMAT_CODE[this.format],
      rows: this.rows,
      cols: this.cols,
      group: groupSize(this.granularity, this.cols),
      data: this.data.mem,
      scales: this.scales?.mem,
      zeros: this.zeros?.mem,
    };
  }

  dispose(): void {
    this.data.dispose();
    this.scales?.dispose();
    this.zeros?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
