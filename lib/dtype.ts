/** Element types of plain (unquantized) tensors. Quantized formats live in quant.ts. */
export type DType = 'f32' | 'f64' | 'i32' | 'u32' | 'i16' | 'u16' | 'i8' | 'u8' | 'bf16' | 'f16';

type TypedArrayCtor =
  | Float32ArrayConstructor
  | Float64ArrayConstructor
  | Int32ArrayConstructor
  | Uint32ArrayConstructor
  | Int16ArrayConstructor
  | Uint16ArrayConstructor
  | Int8ArrayConstructor
  | Uint8ArrayConstructor;

export type TypedArray = InstanceType<TypedArrayCtor>;

/** bf16 and f16 are stored as their raw 16-bit patterns in Uint16Arrays. */
export const DTYPES: Record<DType, { bytes: number; array: TypedArrayCtor }> = {
  f32: { bytes: 4, array: Float32Array },
  f64: { bytes: 8, array: Float64Array },
  i32: { bytes: 4, array: Int32Array },
  u32: { bytes: 4, array: Uint32Array },
  i16: { bytes: 2, array: Int16Array },
  u16: { bytes: 2, array: Uint16Array },
  i8: { bytes: 1, array: Int8Array },
  u8: { bytes: 1, array: Uint8Array },
  bf16: { bytes: 2, array: Uint16Array },
  f16: { bytes: 2, array: Uint16Array },
};

export function dtypeOf(a: ArrayBufferView): DType {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Float64Array) return 'f64';
  if (a instanceof Int32Array) return 'i32';
  if (a instanceof Uint32Array) return 'u32';
  if (a instanceof Int16Array) return 'i16';
  if (a instanceof Uint16Array) return 'u16';
  if (a instanceof Int8Array) return 'i8';
  if (a instanceof Uint8Array) return 'u8';
  throw new TypeError('unsupported TypedArray');
}
