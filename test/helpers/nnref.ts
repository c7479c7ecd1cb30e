/**
 * Float64 JS references for the transformer ops (native/cpu/nn.h) and a tiny LLaMA forward built
 * from them (naive loops; small shapes only).
 */
export type F64 = Float64Array;

export interface RopeRef {
  theta: number;
  scaling?: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number } | null;
}

/** HF inv_freq (with _compute_llama3_parameters when scaling is given). */
export function invFreq(hd: number, r: RopeRef): number[] {
  const out: number[] = [];
  for (let i = 0; i < hd / 2; i++) {
    let f = 1 / r.theta ** ((2 * i) / hd);
    const s = r.scaling;
    if (s) {
      const lowWl = s.originalMaxPositionEmbeddings / s.lowFreqFactor, highWl = s.originalMaxPositionEmbeddings / s.highFreqFactor;
      const wl = (2 * Math.PI) / f;
      if (wl > lowWl) f = f / s.factor;
      else if (wl >= highWl) {
        const smooth = (s.originalMaxPositionEmbeddings / wl - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        f = ((1 - smooth) * f) / s.factor + smooth * f;
      }
    }
    out.push(f);
  }
  return out;
}

export function rmsNormRef(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, dim: number, eps: number): F64 {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const s = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = x[r * dim + i] * s * w[i];
  }
  return out;
}

/** x [rows, heads, hd] rotated in the rotate_half layout. */
export function ropeRef(x: ArrayLike<number>, rows: number, heads: number, hd: number, pos: ArrayLike<number>, r: RopeRef): F64 {
  const inv = invFreq(hd, r), half = hd / 2;
  const out = Float64Array.from(x);
  for (let t = 0; t < rows; t++)
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * hd;
      for (let i = 0; i < half; i++) {
        const c = Math.cos(pos[t] * inv[i]), s = Math.sin(pos[t] * inv[i]);
        const a = x[base + i], b = x[base + i + half];
        out[base + i] = a * c - b * s;
        out[base + i + half] = b * c + a * s;
      }
    }
  return out;
}

export interface AttnRef {
  q: ArrayLike<number>; // [N, Hq, hd]
  k: ArrayLike<number>; // [B, Hkv, hd, cap]
  v: ArrayLike<number>;
  seqOffsets: number[];
  seqStart: number[];
  keyMask?: ArrayLike<number>; // [B * cap]
  Hq: number;
  Hkv: number;
  hd: number;
  cap: number;
  scale: number;
}

export function attentionRef(a: AttnRef): F64 {
  const B = a.seqStart.length, G = a.Hq / a.Hkv;
  const out = new Float64Array(a.seqOffsets[B] * a.Hq * a.hd);
  for (let b = 0; b < B; b++)
    for (let i = 0; i < a.seqOffsets[b + 1] - a.seqOffsets[b]; i++) {
      const row = a.seqOffsets[b] + i, last = a.seqStart[b] + i;
      for (let h = 0; h < a.Hq; h++) {
        const kvh = Math.floor(h / G), kb = (b * a.Hkv + kvh) * a.cap * a.hd;
        const scores: number[] = [];
        for (let j = 0; j <= last; j++) {
          if (a.keyMask && !a.keyMask[b * a.cap + j]) continue;
          let d = 0;
          for (let e = 0; e < a.hd; e++) d += a.q[(row * a.Hq + h) * a.hd + e] * a.k[kb + e * a.cap + j];
          scores.push(j, d * a.scale);
        }
        if (!scores.length) continue;
        let m = -Infinity;
        for (let s = 1; s < scores.length; s += 2) m = Math.max(m, scores[s]);
        let l = 0;
        const o = new Float64Array(a.hd);
        for (let s = 0; s < scores.length; s += 2) {
          const p = Math.exp(scores[s + 1] - m), j = scores[s];
          l += p;
          for (let e = 0; e < a.hd; e++) o[e] += p * a.v[kb + j * a.hd + e];
        }
        for (let e = 0; e < a.hd; e++) out[(row * a.Hq + h) * a.hd + e] = o[e] / l;
      }
    }
  return out;
}

export function logSoftmaxRef(x: ArrayLike<number>, off: number, n: number): { max: number; lse: number } {
  let m = -Infinity;
  for (let i = 0; i < n; i++) m = Math.max(m, x[off + i]);
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(x[off + i] - m);
  return { max: m, lse: m + Math.log(s) };
}

/** The sampling rule of native/cpu/nn.h sample_row, in float64. */
export function sampleRef(logits: ArrayLike<number>, temperature: number, topK: number, topP: number, u: number): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  if (!(temperature > 0)) return best;
  const mx = logits[best];
  let c = Array.from(logits, (l, id) => ({ l, id }));
  const before = (a: { l: number; id: number }, b: { l: number; id: number }) => (a.l !== b.l ? b.l - a.l : a.id - b.id);
  const filt = (topK > 0 && topK < c.length) || topP < 1;
  if (filt) c.sort(before);
  if (topK > 0 && topK < c.length) c = c.slice(0, topK);
  const t32 = Math.fround(temperature);
  const w = c.map((x) => Math.exp((x.l - mx) / t32));
  let total = w.reduce((a, b) => a + b, 0);
  let keep = c.length;
  if (topP < 1) {
    let mass = 0;
    keep = 0;
    while (keep < c.length && (keep === 0 || mass < Math.fround(topP) * total)) mass += w[keep++];
    total = mass;
  }
  const target = u * total;
  let cum = 0;
  for (let i = 0; i < keep; i++) {
    cum += w[i];
    if (cum > target) return c[i].id;
  }
  return c[keep - 1].id;
}

export function siluRef(g: number): number {
  return g / (1 + Math.exp(-g));
}
