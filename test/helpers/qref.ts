/**
 * Independent JS encoders/decoders of the QTensor formats (native/common/formats.h), written from
 * the format definitions (bit fields and Math.pow), not from the C++ code. Used to build QTensors
 * for the GEMM tests and the exact decoded weights w(n, k) = fround(s · value) of the reference.
 */
import { QTensor, Tensor } from '../../lib';
import type { Granularity, QFormat } from '../../lib';
import { bitsF32, f32bits } from './reference';

const f = Math.fround;

export const NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(f);

export function decodeE4M3(c: number): number {
  const s = c & 0x80 ? -1 : 1, e = (c >> 3) & 15, m = c & 7;
  if (e === 15 && m === 7) return NaN;
  return s * (e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7));
}
export function decodeE5M2(c: number): number {
  const s = c & 0x80 ? -1 : 1, e = (c >> 2) & 31, m = c & 3;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (e === 0 ? (m / 4) * 2 ** -14 : (1 + m / 4) * 2 ** (e - 15));
}
export function decodeF16(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (e === 0 ? (m / 1024) * 2 ** -14 : (1 + m / 1024) * 2 ** (e - 15));
}
export function decodeBf16(h: number): number {
  return bitsF32(h << 16);
}

const E4M3_TABLE = Array.from({ length: 256 }, (_, c) => decodeE4M3(c));
const E5M2_TABLE = Array.from({ length: 256 }, (_, c) => decodeE5M2(c));

/** Codes of a table sorted by value (finite values only), for nearest-value encoding. */
function sortedCodes(table: number[]): number[] {
  return table.map((_, c) => c).filter((c) => Number.isFinite(table[c])).sort((a, b) => table[a] - table[b]);
}
const SORTED = new Map<number[], number[]>();

function nearestCode(table: number[], v: number): number {
  let order = SORTED.get(table);
  if (!order) { order = sortedCodes(table); SORTED.set(table, order); }
  let lo = 0, hi = order.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (table[order[mid]] <= v) lo = mid; else hi = mid;
  }
  return Math.abs(table[order[lo]] - v) <= Math.abs(table[order[hi]] - v) ? order[lo] : order[hi];
}

function bf16Rtne(x: number): number {
  const b = f32bits(x);
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** fp16 RTNE for |x| within the normal range (test data stays there). */
function f16Rtne(x: number): number {
  if (x === 0) return 0;
  const s = x < 0 ? 0x8000 : 0, a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--; if (2 ** (e + 1) <= a) e++;
  e = Math.max(e, -14);
  let m = Math.round(a / 2 ** (e - 10)); // ties: Math.round goes up; fine for random data
  if (m >= 2048) { m /= 2; e++; }
  if (m < 1024) return s | m; // subnormal
  return s | ((e + 15) << 10) | (m - 1024);
}

export interface QSpec {
  format: QFormat;
  granularity: Granularity;
  asym?: boolean; // int4 with zero-points
}

export interface QBuilt {
  q: QTensor;
  /** w(n, k) exactly as the engine decodes it (fround(s · value)). */
  w: Float32Array<ArrayBuffer>;
}

function nibbleGet(d: Uint8Array, rowBytes: number, r: number, k: number): number {
  return (d[r * rowBytes + (k >> 1)] >> ((k & 1) * 4)) & 15;
}

/** Quantizes a float matrix [rows, cols] into `spec` with an independent JS encoder. */
export function quantize(x: Float32Array, rows: number, cols: number, spec: QSpec): QBuilt {
  const { format, granularity } = spec;
  const g = granularity === 'tensor' ? 0 : granularity === 'channel' ? cols : granularity;
  const gpr = g === 0 ? 1 : Math.ceil(cols / g);
  const nScales = g === 0 ? 1 : rows * gpr;
  const groupOf = (r: number, k: number) => (g === 0 ? 0 : r * gpr + Math.floor(k / g));
  const scaled = format !== 'bf16' && format !== 'fp16';
  const scales = new Float32Array(scaled ? nScales : 0);
  const zeros = spec.asym ? new Uint8Array(nScales) : undefined;
  if (scaled) {
    const amax = new Float64Array(nScales), lo = new Float64Array(nScales), hi = new Float64Array(nScales);
    for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) {
      const gi = groupOf(r, k), v = x[r * cols + k];
      amax[gi] = Math.max(amax[gi], Math.abs(v)); lo[gi] = Math.min(lo[gi], v); hi[gi] = Math.max(hi[gi], v);
    }
    for (let i = 0; i < nScales; i++) {
      const qmax = format === 'int8' ? 127 : format === 'int4' ? 7 : format === 'nf4' ? 1 : format === 'fp8-e4m3' ? 448 : 57344;
      scales[i] = spec.asym ? f((hi[i] - lo[i]) / 15) : f(amax[i] / qmax);
      if (scales[i] === 0) scales[i] = 1;
      if (zeros) zeros[i] = Math.min(15, Math.max(0, Math.round(-lo[i] / scales[i])));
    }
  }
  const is4 = format === 'int4' || format === 'nf4';
  const rowBytes = is4 ? Math.ceil(cols / 2) : format === 'bf16' || format === 'fp16' ? cols * 2 : cols;
  const data = format === 'int8' ? new Int8Array(rows * cols) : format === 'bf16' || format === 'fp16' ? new Uint16Array(rows * cols) : new Uint8Array(rows * rowBytes);
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) {
      const v = x[r * cols + k], gi = groupOf(r, k), s = scaled ? scales[gi] : 1;
      let value: number;
      switch (format) {
        case 'int8': {
          const q = Math.max(-127, Math.min(127, Math.round(v / s)));
          data[r * cols + k] = q; value = q; break;
        }
        case 'int4': {
          const zp = zeros ? zeros[gi] : 8;
          const u = Math.max(zeros ? 0 : 1, Math.min(15, Math.round(v / s) + zp));
          (data as Uint8Array)[r * rowBytes + (k >> 1)] |= u << ((k & 1) * 4);
          value = u - zp; break;
        }
        case 'nf4': {
          const u = nearestCode(NF4, v / s);
          (data as Uint8Array)[r * rowBytes + (k >> 1)] |= u << ((k & 1) * 4);
          value = NF4[u]; break;
        }
        case 'fp8-e4m3': case 'fp8-e5m2': {
          const table = format === 'fp8-e4m3' ? E4M3_TABLE : E5M2_TABLE;
          const c = nearestCode(table, v / s);
          data[r * cols + k] = c; value = table[c]; break;
        }
        case 'bf16': { const h = bf16Rtne(v); data[r * cols + k] = h; value = decodeBf16(h); break; }
        default: { const h = f16Rtne(v); data[r * cols + k] = h; value = decodeF16(h); break; }
      }
      w[r * cols + k] = f(s * value);
    }
    // odd 4-bit rows: the padding nibble holds the code of zero
    if (is4 && cols % 2 === 1) {
      const zc = format === 'nf4' ? 7 : zeros ? zeros[groupOf(r, cols - 1)] : 8;
      (data as Uint8Array)[r * rowBytes + (cols >> 1)] |= zc << 4;
    }
  }
  const dtype = format === 'int8' ? 'i8' : format === 'bf16' || format === 'fp16' ? 'u16' : 'u8';
  const dt = Tensor.from(data as Uint8Array<ArrayBuffer>, [data.length], dtype);
  const q = new QTensor(format, [rows, cols], granularity, dt, scaled ? Tensor.from(scales) : undefined, zeros ? Tensor.from(zeros) : undefined);
  return { q, w };
}

/** Decoded weights of a QTensor built with raw codes (e.g. special fp8 codes), from its buffers. */
export function decodeQ(q: QTensor): Float32Array<ArrayBuffer> {
  const [rows, cols] = q.shape;
  const g = q.granularity === 'tensor' ? 0 : q.granularity === 'channel' ? cols : q.granularity;
  const gpr = g === 0 ? 1 : Math.ceil(cols / g);
  const scales = q.scales ? (q.scales.data() as Float32Array) : undefined;
  const zeros = q.zeros ? (q.zeros.data() as Uint8Array) : undefined;
  const d = q.data.data();
  const rowBytes = Math.ceil(cols / 2);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) {
    const gi = g === 0 ? 0 : r * gpr + Math.floor(k / g), s = scales ? scales[gi] : 1;
    let v: number;
    switch (q.format) {
      case 'int8': v = d[r * cols + k]; break;
      case 'int4': v = nibbleGet(d as Uint8Array, rowBytes, r, k) - (zeros ? zeros[gi] : 8); break;
      case 'nf4': v = NF4[nibbleGet(d as Uint8Array, rowBytes, r, k)]; break;
      case 'fp8-e4m3': v = decodeE4M3(d[r * cols + k]); break;
      case 'fp8-e5m2': v = decodeE5M2(d[r * cols + k]); break;
      case 'bf16': v = decodeBf16(d[r * cols + k]); break;
      default: v = decodeF16(d[r * cols + k]); break;
    }
    out[r * cols + k] = f(s * v);
  }
  return out;
}
