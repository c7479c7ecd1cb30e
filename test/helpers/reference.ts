/**
 * Independent JS references for the native numerics: Philox4x32-10, the element map, exact
 * float32 arithmetic (fround, an exact fmaf) and the Box-Muller construction of philox.h.
 */
const f = Math.fround;
// Math.* property lookups are slow inside jest's sandbox (~1 us each): hot loops use these.
const { imul, floor, abs, sqrt } = Math;

export function philox4x32(ctr: number[], key: number[]): number[] {
  let [c0, c1, c2, c3] = ctr.map((x) => x >>> 0);
  let k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  const M0 = 0xd2511f53n, M1 = 0xcd9e8d57n;
  for (let r = 0; r < 10; r++) {
    const p0 = M0 * BigInt(c0), p1 = M1 * BigInt(c2);
    const hi0 = Number(p0 >> 32n), lo0 = Number(p0 & 0xffffffffn);
    const hi1 = Number(p1 >> 32n), lo1 = Number(p1 & 0xffffffffn);
    const n0 = (hi1 ^ c1 ^ k0) >>> 0, n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [c0, c1, c2, c3];
}

export interface Key { seed: bigint; stream: number; purpose: number }

function block(key: Key, c: bigint): number[] {
  const lo = Number(c & 0xffffffffn), hi = Number((c >> 32n) & 0xffffffffn);
  return philox4x32([lo, hi, key.stream, key.purpose], [Number(key.seed & 0xffffffffn), Number((key.seed >> 32n) & 0xffffffffn)]);
}

export function wordAt(key: Key, i: number | bigint): number {
  const b = BigInt(i);
  return block(key, ((b >> 5n) << 3n) | (b & 7n))[Number((b >> 3n) & 3n)];
}

export function rademacherAt(key: Key, i: number | bigint): number {
  const b = BigInt(i);
  const w = block(key, ((b >> 10n) << 3n) | (b & 7n))[Number((b >> 8n) & 3n)];
  return (w >>> Number((b >> 3n) & 31n)) & 1 ? -1 : 1;
}

/** Correctly rounded float32 fused multiply-add (a, b, c float32 values). */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b; // exact: 24 x 24 bits fit in a double
  const s = p + c;
  // TwoSum: s + e === p + c exactly
  const bb = s - p;
  const e = (p - (s - bb)) + (c - bb);
  const r = f(s);
  if (e === 0 || r === s) return r;
  // s sits exactly on a float32 tie: the exact sum lies on one side of it; round towards it.
  const up = nextFloat32(r, Infinity), down = nextFloat32(r, -Infinity);
  const mid = s; // the candidate r was chosen by rounding s; check whether s is a tie between neighbours
  const lo = s > r ? r : down, hi = s > r ? up : r;
  if ((lo + hi) / 2 !== mid) return r;
  return e > 0 ? hi : lo;
}

const buf = new DataView(new ArrayBuffer(4));
export function f32bits(x: number): number { buf.setFloat32(0, x); return buf.getUint32(0); }
export function bitsF32(u: number): number { buf.setUint32(0, u >>> 0); return buf.getFloat32(0); }
function nextFloat32(x: number, dir: number): number {
  if (x === 0) return dir > 0 ? bitsF32(1) : -bitsF32(1);
  const u = f32bits(x);
  return bitsF32((x > 0) === (dir > 0) ? u + 1 : u - 1);
}

export function uniformOpen(w: number): number { return f(f((w >>> 9) + 0.5) * 2 ** -23); }
export function uniformSr(w: number): number { return f((w >>> 8) * 2 ** -24); }

export function logUnit(x: number): number {
  const b = f32bits(x);
  let e = ((b >>> 23) & 0xff) - 126;
  let m = bitsF32((b & 0x7fffff) | 0x3f000000);
  if (m < f(0.707106781186547524)) { e = e - 1; m = f(f(m + m) - 1); } else { m = f(m - 1); }
  const z = f(m * m);
  let p = f(7.0376836292e-2);
  for (const c of [-1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1]) p = fmaf(p, m, f(c));
  let y = f(f(p * m) * z);
  y = fmaf(e, f(-2.12194440e-4), y);
  y = fmaf(-0.5, z, y);
  const r = f(m + y);
  return fmaf(e, f(0.693359375), r);
}

/** philox.h box_muller: one word -> a pair (16-bit radius, 2-bit quadrant + 14-bit angle). */
export function boxMuller(w: number): [number, number] {
  const r = f(sqrt(f(-2 * logUnit(f(f((w & 0xffff) + 0.5) * 2 ** -16)))));
  const fr = f(f(((w >>> 16) & 0x3fff) + 0.5) * 2 ** -14);
  const a = f(f(fr - 0.5) * f(1.57079632679489662));
  const a2 = f(a * a);
  let ps = f(-1.9515295891e-4);
  ps = fmaf(ps, a2, f(8.3321608736e-3));
  ps = fmaf(ps, a2, f(-1.6666654611e-1));
  const s = fmaf(f(ps * a2), a, a);
  let pc = f(2.443315711809948e-5);
  pc = fmaf(pc, a2, f(-1.388731625493765e-3));
  pc = fmaf(pc, a2, f(4.166664568298827e-2));
  const c = fmaf(f(pc * a2), a2, fmaf(-0.5, a2, 1));
  const q = w >>> 30;
  let x = q & 1 ? s : c, y = q & 1 ? c : s;
  if (q === 1 || q === 2) x = -x;
  if (q >= 2) y = -y;
  return [f(r * x), f(r * y)];
}

/** The normal stream (philox.h normal_at): counter ((i >> 6) << 3) | (i & 7), word (i >> 3) & 3, output (i >> 5) & 1. */
export function normalAt(key: Key, i: number | bigint): number {
  const b = BigInt(i);
  const w = block(key, ((b >> 6n) << 3n) | (b & 7n));
  const [n0, n1] = boxMuller(w[Number((b >> 3n) & 3n)]);
  return (b >> 5n) & 1n ? n1 : n0;
}

/** The same normal in float64 with libm: accuracy reference for the float32 construction. */
export function normalAt64(key: Key, i: number | bigint): number {
  const b = BigInt(i);
  const w = block(key, ((b >> 6n) << 3n) | (b & 7n))[Number((b >> 3n) & 3n)];
  const u1 = ((w & 0xffff) + 0.5) * 2 ** -16;
  const q = w >>> 30;
  const ang = q * (Math.PI / 2) + ((((w >>> 16) & 0x3fff) + 0.5) * 2 ** -14 - 0.5) * (Math.PI / 2);
  const r = Math.sqrt(-2 * Math.log(u1));
  return (b >> 5n) & 1n ? r * Math.sin(ang) : r * Math.cos(ang);
}

/** Deterministic test data (mulberry32). */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = imul(t ^ (t >>> 15), t | 1);
    t ^= t + imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const CPU_PATHS = ['scalar', 'avx2'] as const;

/** A ZO direction as native/common/direction.h defines it. */
export interface Dir { seed: bigint; stream: number; dist: 'gaussian' | 'rademacher'; bits: number; srPurpose: number }

/** Largest |N(0,1)| of the generator (direction.h kNormalMax), the span of the QuZO grid. */
export const NORMAL_MAX = f(4.85459);
export function gridStep(bits: number): number { return f(NORMAL_MAX / (2 ** (bits - 1) - 1)); }
export function gridInvStep(bits: number): number { return f((2 ** (bits - 1) - 1) / NORMAL_MAX); }

/** QuZO rounding threshold of element i (direction.h): 16 bits of the SR stream laid out like the
 * normal stream (the word of normal_counter(i), slot (i >> 3) & 3; low half when (i >> 5) & 1 is 0),
 * t = (half + 1/2) 2^-16. srWordIndex(i) is the word-stream element (wordAt / rng.words) holding it. */
export function srWordIndex(i: number): number { return Math.floor(i / 64) * 32 + (i % 32); }
export function dirSrThreshold(word: number, i: number | bigint): number {
  const half = (BigInt(i) >> 5n) & 1n ? word >>> 16 : word & 0xffff;
  return f((half + 0.5) * 2 ** -16);
}
export function dirSrAt(key: Key, i: number | bigint): number {
  const b = BigInt(i);
  return dirSrThreshold(block(key, ((b >> 6n) << 3n) | (b & 7n))[Number((b >> 3n) & 3n)], i);
}

/** z(i): Gaussian, Rademacher, or Gaussian stochastically rounded onto the b-bit QuZO grid. */
export function directionAt(d: Dir, i: number | bigint): number {
  if (d.dist === 'rademacher') return rademacherAt({ seed: d.seed, stream: d.stream, purpose: 1 }, i);
  const z = normalAt({ seed: d.seed, stream: d.stream, purpose: 0 }, i);
  if (!d.bits) return z;
  const v = f(z * gridInvStep(d.bits));
  const fl = floor(v);
  const q = dirSrAt({ seed: d.seed, stream: d.stream, purpose: d.srPurpose }, i) < f(v - fl) ? fl + 1 : fl;
  return f(q * gridStep(d.bits));
}

/** Unit in the last place of a float32 value (spacing of float32 numbers at |x|). */
export function ulp32(x: number): number {
  const e = (f32bits(abs(x)) >>> 23) & 0xff;
  return e === 0 ? 2 ** -149 : 2 ** (e - 150);
}
