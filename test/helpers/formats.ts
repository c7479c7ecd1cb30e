/**
 * Independent JS references for the number formats of native/common/formats.h: float grids built
 * by exhaustively decoding every code from the bit-level definition (E4M3, E5M2, fp16, bf16), RTNE
 * by nearest-neighbour search on the grid, SR from the two neighbouring grid points, integer grids
 * and NF4 in float64 with explicit float32 rounding (Math.fround), scales from the data, packing,
 * and the quantized ZO update. Random words come from a fast Philox (checked against reference.ts).
 */
import { bitsF32, boxMuller, Dir, dirSrThreshold, f32bits, gridInvStep, gridStep, Key, srWordIndex, uniformSr } from './reference';

// Module-level aliases: inside jest's vm context every global lookup (Math.x, Number.x) in a hot
// loop costs microseconds.
const { fround: f, floor, abs, min, max, ceil, imul } = Math;
const isNaNf = Number.isNaN, isFiniteF = Number.isFinite;

// --- fast Philox word stream (same map as philox.h; reference.ts has the BigInt original) --------

function mulhi32(a: number, b: number): number {
  const a0 = a & 0xffff, a1 = a >>> 16, b0 = b & 0xffff, b1 = b >>> 16;
  const lo = a0 * b0, m1 = a1 * b0, m2 = a0 * b1;
  const mid = (lo >>> 16) + (m1 & 0xffff) + (m2 & 0xffff);
  return (a1 * b1 + floor(m1 / 65536) + floor(m2 / 65536) + floor(mid / 65536)) >>> 0;
}

function philoxFast(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number, out: Uint32Array, at: number): void {
  for (let r = 0; r < 10; r++) {
    const hi0 = mulhi32(0xd2511f53, c0), lo0 = imul(0xd2511f53, c0) >>> 0;
    const hi1 = mulhi32(0xcd9e8d57, c2), lo1 = imul(0xcd9e8d57, c2) >>> 0;
    const n0 = (hi1 ^ c1 ^ k0) >>> 0, n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  out[at] = c0; out[at + 1] = c1; out[at + 2] = c2; out[at + 3] = c3;
}

/** The 4 words of counters base..base+7 (out[4 * lane + word]). */
function block8(key: { k0: number; k1: number; stream: number; purpose: number }, base: number, out: Uint32Array): void {
  for (let l = 0; l < 8; l++) {
    const c = base + l;
    philoxFast(c >>> 0, floor(c / 4294967296) >>> 0, key.stream, key.purpose, key.k0, key.k1, out, 4 * l);
  }
}

function splitKey(key: Key) {
  return { k0: Number(key.seed & 0xffffffffn) >>> 0, k1: Number((key.seed >> 32n) & 0xffffffffn) >>> 0, stream: key.stream, purpose: key.purpose };
}

/** Words of elements [first, first + n) of the word stream of `key`. */
export function wordsFast(key: Key, first: number, n: number): Uint32Array {
  const out = new Uint32Array(n), blk = new Uint32Array(32), k = splitKey(key);
  let cur = -1;
  for (let j = 0; j < n; j++) {
    const i = first + j, b = floor(i / 32);
    if (b !== cur) {
      block8(k, b * 8, blk);
      cur = b;
    }
    const e = i - b * 32; // element e of the block: counter lane e & 7, word e >> 3
    out[j] = blk[4 * (e & 7) + (e >> 3)];
  }
  return out;
}

export const Purpose = { gauss: 0, rademacher: 1, srProbe: 4, srUpdate: 5, srWeight: 6, srQuantize: 7 } as const;

// --- float grids ----------------------------------------------------------------------------------

export interface Grid {
  name: string;
  bits: number; // code width
  /** Non-negative finite values in code order (code k = values[k]); all ascending. */
  values: Float64Array;
  max: number;
  maxCode: number;
  nanCode: number; // canonical, positive
  signBit: number;
  /** f32 bit pattern of each code's value (NaN canonical with the code's sign; bf16 widens). */
  decodeBits: (code: number) => number;
}

function miniDecode(ebits: number, mbits: number, bias: number, ieee: boolean, code: number): number {
  const sign = (code >> (ebits + mbits)) & 1, e = (code >> mbits) & ((1 << ebits) - 1), m = code & ((1 << mbits) - 1);
  const emax = (1 << ebits) - 1;
  let v: number;
  if (ieee && e === emax) v = m ? NaN : Infinity;
  else if (!ieee && e === emax && m === (1 << mbits) - 1) v = NaN;
  else if (e === 0) v = m * 2 ** (1 - bias - mbits);
  else v = (1 + m / 2 ** mbits) * 2 ** (e - bias);
  return sign ? -v : v;
}

function makeGrid(name: string, ebits: number, mbits: number, bias: number, ieee: boolean, nanCode: number, widen = false): Grid {
  const bits = 1 + ebits + mbits, signBit = 1 << (ebits + mbits);
  const vals: number[] = [];
  for (let c = 0; c < signBit; c++) {
    const v = miniDecode(ebits, mbits, bias, ieee, c);
    if (!isFiniteF(v)) break; // codes ascend until Inf/NaN
    vals.push(v);
  }
  const values = Float64Array.from(vals);
  return {
    name,
    bits,
    values,
    max: values[values.length - 1],
    maxCode: values.length - 1,
    nanCode,
    signBit,
    decodeBits: (code) => {
      if (widen) return (code << 16) >>> 0; // bf16 -> f32 is the exact widening, NaN payloads kept
      const v = miniDecode(ebits, mbits, bias, ieee, code);
      const neg = (code & signBit) !== 0;
      if (isNaNf(v)) return (0x7fc00000 | (neg ? 0x80000000 : 0)) >>> 0;
      return f32bits(v);
    },
  };
}

export const E4M3 = makeGrid('fp8-e4m3', 4, 3, 7, false, 0x7f);
export const E5M2 = makeGrid('fp8-e5m2', 5, 2, 15, true, 0x7e);
export const FP16 = makeGrid('fp16', 5, 10, 15, true, 0x7e00);
export const BF16 = makeGrid('bf16', 8, 7, 127, true, 0x7fc0, true);

function signOf(x: number): boolean {
  return (f32bits(x) & 0x80000000) !== 0;
}

/** Index k of the largest grid value <= ax (ax finite, 0 <= ax < max). */
function floorIndex(g: Grid, ax: number): number {
  let lo = 0, hi = g.values.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (g.values[mid] <= ax) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** RTNE onto a float grid, saturating; NaN -> canonical NaN code with the sign. */
export function gridRtne(g: Grid, x: number): number {
  const s = signOf(x) ? g.signBit : 0;
  if (isNaNf(x)) return g.nanCode | s;
  const ax = abs(x);
  if (ax >= g.max) return g.maxCode | s;
  const k = floorIndex(g, ax), a = g.values[k], b = g.values[k + 1];
  if (ax === a) return k | s;
  const mid = (a + b) / 2;
  const up = ax > mid || (ax === mid && (k & 1) === 1);
  return (up ? k + 1 : k) | s;
}

/** Unbiased SR onto a float grid with threshold uniformSr(word) (bf16: 16-bit add-and-truncate). */
export function gridSr(g: Grid, x: number, word: number): number {
  const s = signOf(x) ? g.signBit : 0;
  if (isNaNf(x)) return g.nanCode | s;
  const ax = abs(x);
  if (ax >= g.max) return g.maxCode | s;
  const k = floorIndex(g, ax), a = g.values[k], b = g.values[k + 1];
  if (ax === a) return k | s;
  const frac = (ax - a) / (b - a); // exact: the step is a power of two
  let up: boolean;
  if (g === BF16) up = (word >>> 16) >= 65536 - frac * 65536;
  else up = uniformSr(word) < frac;
  return (up ? k + 1 : k) | s;
}

/** The two grid neighbours [a, b] of x (a <= |x| <= b, with the sign applied), for variance bounds. */
export function gridNeighbours(g: Grid, x: number): [number, number] {
  const ax = min(abs(x), g.max);
  const k = ax >= g.max ? g.values.length - 1 : floorIndex(g, ax);
  const a = g.values[k], b = ax === a ? a : g.values[k + 1];
  return x < 0 ? [-a, -b] : [a, b];
}

export function gridDecode(g: Grid, code: number): number {
  return bitsF32(g.decodeBits(code));
}

// --- integer grids and NF4 ------------------------------------------------------------------------

export function rintEven(v: number): number {
  const fl = floor(v), d = v - fl;
  if (d < 0.5) return fl;
  if (d > 0.5) return fl + 1;
  return fl % 2 === 0 ? fl : fl + 1;
}

export function srRound(v: number, word: number): number {
  const fl = floor(v);
  return uniformSr(word) < v - fl ? fl + 1 : fl;
}

export const NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(f);

export function nf4Quantize(t: number, sr: boolean, word: number): number {
  t = max(-1, min(1, t));
  let lo = 0;
  while (lo < 14 && NF4[lo + 1] <= t) lo++;
  if (t === NF4[lo]) return lo;
  const a = NF4[lo], c = NF4[lo + 1];
  if (!sr) return f(t - a) <= f(c - t) ? lo : lo + 1;
  return uniformSr(word) < f(f(t - a) / f(c - a)) ? lo + 1 : lo;
}

// --- QTensor reference ----------------------------------------------------------------------------

export type Fmt = 'int8' | 'int4' | 'nf4' | 'fp8-e4m3' | 'fp8-e5m2' | 'bf16' | 'fp16';
export type Gran = 'tensor' | 'channel' | 32 | 64 | 128;
export const GRIDS: Partial<Record<Fmt, Grid>> = { 'fp8-e4m3': E4M3, 'fp8-e5m2': E5M2, fp16: FP16, bf16: BF16 };
const MIN_SCALE = 2 ** -126;

export function groupOf(gran: Gran, cols: number): number {
  return gran === 'tensor' ? 0 : gran === 'channel' ? cols : gran;
}

export interface RefQ {
  format: Fmt;
  rows: number;
  cols: number;
  group: number;
  /** One code per element (unpacked; int8 as -127..127). */
  codes: Int32Array;
  scales: Float32Array;
  zeros?: Uint8Array;
}

export function scaleIndex(q: { rows: number; cols: number; group: number }, r: number, c: number): number {
  return q.group === 0 ? 0 : r * ceil(q.cols / q.group) + floor(c / q.group);
}

function scaleFor(amax: number, qmax: number): number {
  const s = f(amax / qmax);
  return s > 0 && s < MIN_SCALE ? MIN_SCALE : s;
}

const inv = (s: number) => (s > 0 ? f(1 / s) : 0);

/** Scales (and zero-points) from the data. */
export function refScales(x: Float32Array, rows: number, cols: number, format: Fmt, group: number, asym: boolean, scaleFree: boolean) {
  const ng = group === 0 ? 1 : rows * ceil(cols / group);
  const amax = new Float64Array(ng), lo = new Float64Array(ng), hi = new Float64Array(ng);
  const q = { rows, cols, group };
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const v = x[r * cols + c], k = scaleIndex(q, r, c);
      amax[k] = max(amax[k], abs(v));
      lo[k] = min(lo[k], v);
      hi[k] = max(hi[k], v);
    }
  const scales = new Float32Array(ng), zeros = new Uint8Array(ng);
  for (let k = 0; k < ng; k++) {
    zeros[k] = 8;
    if (format === 'int8') scales[k] = scaleFor(amax[k], 127);
    else if (format === 'int4' && asym) {
      scales[k] = scaleFor(f(hi[k] - lo[k]), 15);
      zeros[k] = scales[k] > 0 ? max(0, min(15, rintEven(f(-lo[k] / scales[k])))) : 0;
    } else if (format === 'int4') scales[k] = scaleFor(amax[k], 7);
    else if (format === 'nf4') scales[k] = scaleFor(amax[k], 1);
    else if (format === 'fp8-e4m3' || format === 'fp8-e5m2') scales[k] = scaleFree ? 1 : scaleFor(amax[k], GRIDS[format]!.max);
    else scales[k] = 1;
  }
  return { scales, zeros };
}

/** Code of one element (unpacked form). */
export function refEncode(format: Fmt, x: number, scale: number, zp: number, asym: boolean, sr: boolean, word: number): number {
  const iv = inv(scale);
  switch (format) {
    case 'int8': {
      const v = f(x * iv);
      return max(-127, min(127, sr ? srRound(v, word) : rintEven(v)));
    }
    case 'int4': {
      const v = f(x * iv);
      return max(asym ? 0 : 1, min(15, (sr ? srRound(v, word) : rintEven(v)) + zp));
    }
    case 'nf4':
      return nf4Quantize(f(x * iv), sr, word);
    case 'bf16':
    case 'fp16':
      return sr ? gridSr(GRIDS[format]!, x, word) : gridRtne(GRIDS[format]!, x);
    default: {
      const v = f(x * iv);
      return sr ? gridSr(GRIDS[format]!, v, word) : gridRtne(GRIDS[format]!, v);
    }
  }
}

export function refDecode(format: Fmt, code: number, scale: number, zp: number): number {
  switch (format) {
    case 'int8': return f(scale * code);
    case 'int4': return f(scale * (code - zp));
    case 'nf4': return f(scale * NF4[code]);
    case 'bf16':
    case 'fp16': return gridDecode(GRIDS[format]!, code);
    default: return f(scale * gridDecode(GRIDS[format]!, code));
  }
}

export interface RefQuantizeOpts {
  asym?: boolean;
  scaleFree?: boolean;
  sr?: boolean;
  words?: Uint32Array; // SR word of every element
  scales?: Float32Array; // fixed grid (quantizeInto)
  zeros?: Uint8Array;
}

export function refQuantize(x: Float32Array, rows: number, cols: number, format: Fmt, group: number, o: RefQuantizeOpts = {}): RefQ {
  const asym = !!o.asym;
  const sz = o.scales ? { scales: o.scales, zeros: o.zeros ?? new Uint8Array(o.scales.length).fill(8) } : refScales(x, rows, cols, format, group, asym, !!o.scaleFree);
  const codes = new Int32Array(rows * cols);
  const q = { rows, cols, group };
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c, k = scaleIndex(q, r, c);
      codes[i] = refEncode(format, x[i], sz.scales[k], format === 'int4' ? sz.zeros[k] : 8, asym, !!o.sr, o.sr ? o.words![i] : 0);
    }
  return { format, rows, cols, group, codes, scales: sz.scales, zeros: asym ? sz.zeros : undefined };
}

export function refDequantize(q: RefQ): Float32Array {
  const y = new Float32Array(q.rows * q.cols);
  for (let r = 0; r < q.rows; r++)
    for (let c = 0; c < q.cols; c++) {
      const i = r * q.cols + c, k = scaleIndex(q, r, c);
      y[i] = refDecode(q.format, q.codes[i], q.scales[k], q.format === 'int4' ? (q.zeros ? q.zeros[k] : 8) : 8);
    }
  return y;
}

/** Native code storage of a reference QTensor (4-bit packed with the zero-code pad nibble). */
export function packCodes(q: RefQ): Uint8Array {
  const { rows, cols, format } = q;
  if (format === 'int4' || format === 'nf4') {
    const rb = ceil(cols / 2), out = new Uint8Array(rows * rb);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) out[r * rb + (c >> 1)] |= q.codes[r * cols + c] << ((c & 1) * 4);
      if (cols & 1) {
        const k = scaleIndex(q, r, cols - 1);
        out[r * rb + (cols >> 1)] |= (format === 'nf4' ? 7 : q.zeros ? q.zeros[k] : 8) << 4;
      }
    }
    return out;
  }
  if (format === 'bf16' || format === 'fp16') return new Uint8Array(Uint16Array.from(q.codes).buffer);
  return Uint8Array.from(q.codes, (c) => c & 0xff);
}

/** Codes of native storage, unpacked to one per element (int8 signed). */
export function unpackCodes(format: Fmt, rows: number, cols: number, data: ArrayLike<number>): Int32Array {
  const out = new Int32Array(rows * cols);
  if (format === 'int4' || format === 'nf4') {
    const rb = ceil(cols / 2);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = (data[r * rb + (c >> 1)] >> ((c & 1) * 4)) & 15;
  } else {
    for (let i = 0; i < rows * cols; i++) out[i] = data[i];
  }
  return out;
}

// --- direction and quantized update ---------------------------------------------------------------

/** z(i) for i in [0, n) block by block (reference.ts directionAt does one element with BigInt Philox). */
export function directions(d: Dir, n: number): Float32Array {
  const z = new Float32Array(n);
  if (d.dist === 'rademacher') {
    const key = splitKey({ seed: d.seed, stream: d.stream, purpose: Purpose.rademacher }), blk = new Uint32Array(32);
    let cur = -1;
    for (let i = 0; i < n; i++) {
      const b = floor(i / 1024);
      if (b !== cur) {
        block8(key, b * 8, blk);
        cur = b;
      }
      const e = i - b * 1024, w = blk[4 * (e & 7) + (e >> 8)];
      z[i] = (w >>> ((e >> 3) & 31)) & 1 ? -1 : 1;
    }
    return z;
  }
  // normal stream: 64-element block b uses the 32 words of word-stream block b; element
  // 64b + 32h + 8s + l takes output h of word s of counter lane l (word-stream element 32b + 8s + l)
  const w = wordsFast({ seed: d.seed, stream: d.stream, purpose: Purpose.gauss }, 0, ceil(n / 64) * 32);
  for (let b = 0; b * 64 < n; b++) {
    for (let e = 0; e < 32; e++) {
      const [n0, n1] = boxMuller(w[b * 32 + e]);
      if (b * 64 + e < n) z[b * 64 + e] = n0;
      if (b * 64 + 32 + e < n) z[b * 64 + 32 + e] = n1;
    }
  }
  if (d.bits === 0) return z;
  const step = gridStep(d.bits), invStep = gridInvStep(d.bits);
  // QuZO thresholds: 16-bit halves of the SR stream laid out like the normal stream (direction.h)
  const sw = wordsFast({ seed: d.seed, stream: d.stream, purpose: d.srPurpose }, 0, ceil(n / 64) * 32);
  for (let i = 0; i < n; i++) {
    const v = f(z[i] * invStep), fl = floor(v);
    z[i] = f((dirSrThreshold(sw[srWordIndex(i)], i) < f(v - fl) ? fl + 1 : fl) * step);
  }
  return z;
}

/** The value being rounded by the update (in grid units for scaled formats) and the new code. */
export function refUpdateElem(format: Fmt, code: number, scale: number, zp: number, asym: boolean, alpha: number, z: number, word: number): { v: number; code: number } {
  const scaled = format !== 'bf16' && format !== 'fp16';
  const a = scaled ? f(alpha * inv(scale)) : f(alpha);
  const d = f(z * a);
  switch (format) {
    case 'int8': {
      const v = f(code + d);
      return { v, code: max(-127, min(127, srRound(v, word))) };
    }
    case 'int4': {
      const v = f(code + d);
      return { v, code: max(asym ? 0 : 1, min(15, srRound(v, word))) };
    }
    case 'nf4': {
      const v = f(NF4[code] + d);
      return { v, code: nf4Quantize(v, true, word) };
    }
    default: {
      const g = GRIDS[format]!;
      const v = f(gridDecode(g, code) + d);
      return { v, code: gridSr(g, v, word) };
    }
  }
}

/** Quantized update of a reference QTensor (codes changed in place, all or only the listed
 * elements); returns the pre-rounding values. */
export function refUpdate(q: RefQ, alpha: number, d: Dir, only?: Iterable<number>): Float64Array {
  const n = q.rows * q.cols, vs = new Float64Array(n);
  const z = directions(d, n), words = wordsFast({ seed: d.seed, stream: d.stream, purpose: Purpose.srWeight }, 0, n);
  const update = (i: number) => {
    const r = floor(i / q.cols), c = i % q.cols, k = scaleIndex(q, r, c);
    const zp = q.format === 'int4' ? (q.zeros ? q.zeros[k] : 8) : 8;
    const res = refUpdateElem(q.format, q.codes[i], q.scales[k], zp, !!q.zeros, alpha, z[i], words[i]);
    vs[i] = res.v;
    q.codes[i] = res.code;
  };
  if (only) for (const i of only) update(i);
  else for (let i = 0; i < n; i++) update(i);
  return vs;
}

export function cloneRef(q: RefQ): RefQ {
  return { ...q, codes: Int32Array.from(q.codes), scales: Float32Array.from(q.scales), zeros: q.zeros ? Uint8Array.from(q.zeros) : undefined };
}
