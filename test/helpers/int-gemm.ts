/**
 * Independent JS references for the integer GEMM (native/cpu/gemm_int8.h): own int8/int4 packers
 * (quantized tensors built in JS, not by the engine), the dynamic int8 activation quantizer, the
 * ZO direction z(i), and the canonical result of every path with exact float32 arithmetic.
 */
import { QTensor, Tensor } from '../../lib';
import type { Granularity } from '../../lib/qtensor';
import { dirSrAt, fmaf, Key, normalAt, rademacherAt } from './reference';

const f = Math.fround;

/** Round half to even (rintf in the default rounding mode). */
export function rtne(v: number): number {
  const fl = Math.floor(v), d = v - fl;
  if (d > 0.5) return fl + 1;
  if (d < 0.5) return fl;
  return fl % 2 === 0 ? fl : fl + 1;
}

export interface IntWeights {
  format: 'int8' | 'int4';
  N: number;
  K: number;
  granularity: Granularity;
  /** Signed codes q - zp per element, [N * K]. */
  codes: Int32Array;
  /** Raw nibbles u (int4) or int8 codes, [N * K]. */
  raw: Int32Array;
  scales: Float32Array;
  zeros?: Uint8Array;
  group: number; // 0 | K | 32 | 64 | 128
}

export function groupOf(granularity: Granularity, K: number): number {
  return granularity === 'tensor' ? 0 : granularity === 'channel' ? K : granularity;
}

/** Accumulation group (gemm_int8.h step 2). */
export function accGroup(w: IntWeights): number {
  return w.group !== 0 && w.group !== w.K ? w.group : 65536;
}

export function scaleIndex(w: IntWeights, n: number, k: number): number {
  if (w.group === 0) return 0;
  if (w.group === w.K) return n;
  return n * Math.ceil(w.K / w.group) + Math.floor(k / w.group);
}

/**
 * Random weights. int8: codes in [lo, 127] (lo = -127 by default; -128 allowed). int4: nibbles in
 * [0, 15], symmetric (zp 8) or asymmetric (random zero-points).
 */
export function randomWeights(rand: () => number, format: 'int8' | 'int4', N: number, K: number, granularity: Granularity,
  opts: { asym?: boolean; lo?: number; unitScales?: boolean } = {}): IntWeights {
  const group = groupOf(granularity, K);
  const nScales = group === 0 ? 1 : N * Math.ceil(K / group);
  const scales = new Float32Array(nScales).map(() => (opts.unitScales ? 1 : f(0.002 + rand() * 0.02)));
  const zeros = format === 'int4' && opts.asym ? new Uint8Array(nScales).map(() => Math.floor(rand() * 16)) : undefined;
  const raw = new Int32Array(N * K), codes = new Int32Array(N * K);
  const w: IntWeights = { format, N, K, granularity, codes, raw, scales, zeros, group };
  const lo = opts.lo ?? -127;
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      const i = n * K + k;
      if (format === 'int8') {
        raw[i] = lo + Math.floor(rand() * (128 - lo));
        codes[i] = raw[i];
      } else {
        raw[i] = Math.floor(rand() * 16);
        codes[i] = raw[i] - (zeros ? zeros[scaleIndex(w, n, k)] : 8);
      }
    }
  return w;
}

/** Packs IntWeights into a QTensor the way native/common/formats.h lays it out. */
export function toQTensor(w: IntWeights): QTensor {
  const { N, K } = w;
  let data: Tensor;
  if (w.format === 'int8') {
    data = Tensor.fromArray(w.raw, [N, K], 'i8', 'weights');
  } else {
    const rb = Math.ceil(K / 2), bytes = new Uint8Array(N * rb);
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) bytes[n * rb + (k >> 1)] |= w.raw[n * K + k] << ((k & 1) * 4);
      if (K & 1) bytes[n * rb + rb - 1] |= (w.zeros ? w.zeros[scaleIndex(w, n, K - 1)] : 8) << 4; // odd row: code of zero
    }
    data = Tensor.fromArray(bytes, [N * rb], 'u8', 'weights');
  }
  const scales = Tensor.fromArray(w.scales, [w.scales.length], 'f32', 'weights');
  const zeros = w.zeros ? Tensor.fromArray(w.zeros, [w.zeros.length], 'u8', 'weights') : undefined;
  return new QTensor(w.format, [N, K], w.granularity, data, scales, zeros);
}

/** Dequantized weight (float32 s * (q - zp)). */
export function dequant(w: IntWeights, n: number, k: number): number {
  return f(w.scales[scaleIndex(w, n, k)] * w.codes[n * w.K + k]);
}

export interface ActQuant { q: Int32Array; s: Float32Array }

/** Dynamic symmetric int8 quantization of each row (step 1). */
export function quantizeActs(x: Float32Array, M: number, K: number): ActQuant {
  const q = new Int32Array(M * K), s = new Float32Array(M);
  for (let m = 0; m < M; m++) {
    let amax = 0;
    for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(x[m * K + k]));
    let sc = f(amax / 127), inv = sc > 0 ? f(1 / sc) : 0;
    if (!Number.isFinite(inv)) sc = inv = 0;
    s[m] = sc;
    for (let k = 0; k < K; k++) q[m * K + k] = Math.min(127, Math.max(-127, rtne(f(x[m * K + k] * inv))));
  }
  return { q, s };
}

export interface Epi { bias?: Float32Array; residual?: Float32Array }

function epilogue(acc: number, a: ActQuant, m: number, n: number, N: number, e: Epi): number {
  let y = f(acc * a.s[m]);
  if (e.bias) y = f(y + e.bias[n]);
  if (e.residual) y = f(y + e.residual[m * N + n]);
  return y;
}

/** Pre-epilogue accumulator of the integer paths (step 2). */
export function intAcc(w: IntWeights, a: ActQuant, m: number, n: number): number {
  const { K } = w, ga = accGroup(w);
  let acc = 0;
  for (let j = 0; j * ga < K; j++) {
    let S = 0;
    for (let k = j * ga; k < Math.min(K, (j + 1) * ga); k++) S += w.codes[n * K + k] * a.q[m * K + k];
    acc = fmaf(w.scales[scaleIndex(w, n, j * ga)], f(S), acc);
  }
  return acc;
}

/** The canonical integer-path output. */
export function refIntGemm(x: Float32Array, M: number, w: IntWeights, e: Epi = {}): Float32Array<ArrayBuffer> {
  const a = quantizeActs(x, M, w.K), y = new Float32Array(M * w.N);
  for (let m = 0; m < M; m++) for (let n = 0; n < w.N; n++) y[m * w.N + n] = epilogue(intAcc(w, a, m, n), a, m, n, w.N, e);
  return y;
}

export interface Dir { seed: bigint; stream: number; dist: 'gaussian' | 'rademacher'; bits: number; srPurpose: number }

const NORMAL_MAX = f(4.85459);
/** z(i) = direction_at(d, i) of native/common/direction.h. */
export function directionAt(d: Dir, i: number): number {
  if (d.dist === 'rademacher') return rademacherAt({ seed: d.seed, stream: d.stream, purpose: 1 }, i);
  const z = normalAt({ seed: d.seed, stream: d.stream, purpose: 0 } as Key, i);
  if (d.bits === 0) return z;
  const levels = f((1 << (d.bits - 1)) - 1);
  const inv = f(levels / NORMAL_MAX), step = f(NORMAL_MAX / levels);
  const v = f(z * inv), fl = Math.floor(v);
  const r = dirSrAt({ seed: d.seed, stream: d.stream, purpose: d.srPurpose } as Key, i) < f(v - fl) ? f(fl + 1) : fl;
  return f(r * step);
}

const tables = new Map<string, Float32Array<ArrayBuffer>>();
/** z(i) for i < count, memoized (the JS Philox is slow). */
export function directionTable(d: Dir, count: number): Float32Array<ArrayBuffer> {
  const key = `${d.seed}:${d.stream}:${d.dist}:${d.bits}:${d.srPurpose}`;
  let t = tables.get(key);
  if (!t || t.length < count) {
    const old = t ?? new Float32Array(0);
    t = new Float32Array(count);
    t.set(old);
    for (let i = old.length; i < count; i++) t[i] = directionAt(d, i);
    tables.set(key, t);
  }
  return t;
}

/**
 * The canonical perturbed (f32) path with z[i] per flat index: w' = fma(alpha, z, deq(w)), and
 * w' = deq(w) outside `subset` when one is given (the dense masked path).
 */
export function refPerturbedGemm(x: Float32Array, M: number, w: IntWeights, z: Float32Array, alpha: number, e: Epi = {}, subset?: Set<number>): Float32Array<ArrayBuffer> {
  const { N, K } = w;
  const a = quantizeActs(x, M, K), y = new Float32Array(M * N);
  const wp = new Float32Array(N * K);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      const i = n * K + k;
      wp[i] = subset && !subset.has(i) ? dequant(w, n, k) : fmaf(f(alpha), z[i], dequant(w, n, k));
    }
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc = fmaf(a.q[m * K + k], wp[n * K + k], acc);
      y[m * N + n] = epilogue(acc, a, m, n, N, e);
    }
  return y;
}

/** Whether a dense probe takes the integer path (gemm_int8.h grid_probe_on_int). */
export function gridProbeOnInt(d: Pick<Dir, 'dist' | 'bits'>): boolean {
  return d.dist === 'rademacher' || (d.bits > 0 && d.bits <= 4);
}

/**
 * The canonical probe on the integer path (gemm_int8.h step 2'): z[i] = q_z * step with integer
 * codes (step_b of the QuZO grid, 1 for Rademacher signs; recovered exactly as round(z / step));
 * per output the integer result, then per 65536-element chunk of K
 * acc = fma(alpha * step, float(sum q_z * q_x), acc), then the epilogue.
 */
export function refGridProbeGemm(x: Float32Array, M: number, w: IntWeights, z: Float32Array, alpha: number, d: Pick<Dir, 'dist' | 'bits'>, e: Epi = {}): Float32Array<ArrayBuffer> {
  const { N, K } = w;
  const step = d.dist === 'rademacher' ? 1 : f(NORMAL_MAX / f((1 << (d.bits - 1)) - 1)), az = f(f(alpha) * step);
  const a = quantizeActs(x, M, K), y = new Float32Array(M * N);
  const codes = new Int32Array(N * K);
  for (let i = 0; i < N * K; i++) codes[i] = Math.round(z[i] / step);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let acc = intAcc(w, a, m, n);
      for (let c = 0; c < K; c += 65536) {
        let T = 0;
        for (let k = c; k < Math.min(K, c + 65536); k++) T += codes[n * K + k] * a.q[m * K + k];
        acc = fmaf(az, f(T), acc);
      }
      y[m * N + n] = epilogue(acc, a, m, n, N, e);
    }
  return y;
}

/** The canonical small-subset path: integer result plus alpha·z_i·q_x per subset index. */
export function refSparseGemm(x: Float32Array, M: number, w: IntWeights, z: Float32Array, alpha: number, idx: number[], e: Epi = {}): Float32Array<ArrayBuffer> {
  const { N, K } = w;
  const a = quantizeActs(x, M, K), y = new Float32Array(M * N);
  const zs = idx.map((i) => z[i]);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let acc = intAcc(w, a, m, n);
      idx.forEach((i, j) => {
        if (Math.floor(i / K) === n) acc = fmaf(f(f(alpha) * zs[j]), a.q[m * K + (i % K)], acc);
      });
      y[m * N + n] = epilogue(acc, a, m, n, N, e);
    }
  return y;
}

/** float64 x · (deq(W) + alpha·Z)ᵀ with the given activations (quantized or not). */
export function ref64(xs: ArrayLike<number>, M: number, w: IntWeights, zAt?: (i: number) => number, alpha = 0): Float64Array<ArrayBuffer> {
  // z is applied in float64 here: the explicit perturb-then-GEMM without any float32 rounding
  const { N, K } = w, y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += xs[m * K + k] * (dequant(w, n, k) + (zAt ? alpha * zAt(n * K + k) : 0));
      y[m * N + n] = s;
    }
  return y;
}

/** Dequantized activations s_x * q (float64). */
export function dequantActs(a: ActQuant, M: number, K: number): Float64Array<ArrayBuffer> {
  const out = new Float64Array(M * K);
  for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) out[m * K + k] = a.s[m] * a.q[m * K + k];
  return out;
}

export function nmse(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let e = 0, p = 0;
  for (let i = 0; i < want.length; i++) {
    e += (got[i] - want[i]) ** 2;
    p += want[i] ** 2;
  }
  return p === 0 ? e : e / p;
}

export function randn(rand: () => number, n: number, scale = 1): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rand(), 1e-12), v = rand();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}
