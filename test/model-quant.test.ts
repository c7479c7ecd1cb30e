/**
 * Quantize-at-load of the LLaMA engine and ZO probes / updates on quantized weights. References:
 * an fp32 model whose linear weights are replaced by their dequantized values (fakeQuantize with
 * the scheme's format and granularity: the same codes the load produced), perturbed explicitly
 * with lib/perturb.ts where a probe is checked.
 */
import { LlamaModel, memory, resetMemoryPeaks, Tensor, perturbSync, quant, QTensor, rng, schemeStorage, WEIGHT_SCHEMES, llamaTensorNames } from '../lib';
import type { ForwardResult, WeightScheme } from '../lib';
import { modelDir } from './helpers/models';

const micro = modelDir('micro-llama'), tiny = modelDir('tiny-llama');
const maybe = micro ? test : test.skip;
const maybeTiny = tiny ? test : test.skip;
const code = (c: string) => expect.objectContaining({ code: c });

function sameBits(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** max |a - b| / max |b| over all logits of a result. */
function logitErr(a: ForwardResult, b: ForwardResult): number {
  let d = 0, m = 0;
  a.logits.forEach((row, j) => {
    const ref = b.logits[j];
    for (let i = 0; i < ref.length; i++) {
      d = Math.max(d, Math.abs(row[i] - ref[i]));
      m = Math.max(m, Math.abs(ref[i]));
    }
  });
  return d / m;
}

const batch = [
  Array.from({ length: 21 }, (_, i) => (i * 131 + 7) % 4000),
  Array.from({ length: 6 }, (_, i) => (i * 17 + 300) % 4000),
];
const short = [[5, 900, 12]];

/** Replaces every non-fp32 tensor of `ref` (an fp32 model) by the dequantized codes `q` holds. */
function dequantizedInto(ref: LlamaModel, q: LlamaModel): void {
  for (const name of llamaTensorNames(ref.config)) {
    const w = q.weight(name);
    if (w instanceof Tensor) continue;
    const d = quant.dequantizeSync(w);
    (ref.tensor(name).data() as Float32Array).set(d.data() as Float32Array);
    d.dispose();
  }
}

const weightOnly = WEIGHT_SCHEMES.filter((s) => s !== 'fp32' && !schemeStorage(s)!.intAct);

describe('quantize at load', () => {
  maybe('schemes, per-tensor overrides and coded errors', async () => {
    const m = await LlamaModel.load(micro!, { weights: 'int4', overrides: { lm_head: 'int8', 'model.layers.1.mlp.*': 'fp8-e4m3', 'model.embed_tokens': 'int8' } });
    try {
      expect(m.weightScheme).toBe('int4');
      expect(m.schemeOf('lm_head.weight')).toBe('int8');
      expect(m.schemeOf('model.layers.0.self_attn.q_proj.weight')).toBe('int4');
      expect(m.schemeOf('model.layers.1.mlp.down_proj.weight')).toBe('fp8-e4m3');
      expect(m.schemeOf('model.layers.0.input_layernorm.weight')).toBe('fp32');
      expect(m.schemeOf('model.embed_tokens.weight')).toBe('int8');
      const q = m.weight('model.layers.0.mlp.up_proj.weight') as QTensor;
      expect(q.format).toBe('int4');
      expect(q.granularity).toBe(128);
      expect((m.weight('lm_head.weight') as QTensor).format).toBe('int8');
      expect(() => m.tensor('lm_head.weight')).toThrow(code('ZOTUNE_DTYPE'));
      // the quantized embedding is gathered through the decoder: same as an fp32 table of its values
      const ref = await LlamaModel.load(micro!);
      try {
        dequantizedInto(ref, m);
        expect(logitErr(await m.forward(batch, { logits: 'all' }), await ref.forward(batch, { logits: 'all' }))).toBeLessThan(1e-5);
        // probing the quantized embedding: the gathered rows are decoded, then perturbed
        m.setTrainable('model.embed_tokens');
        const r = await m.zoProbe(batch, { seed: 2, eps: 0.05, logits: 'all' });
        perturbSync(ref.tensor('model.embed_tokens.weight'), 0.05, { seed: 2, stream: 0, dist: 'gaussian' });
        const want = await ref.forward(batch, { logits: 'all' });
        expect(logitErr(r.plus, want)).toBeLessThan(1e-5);
        expect(Math.abs(r.plus.loss - want.loss)).toBeLessThan(1e-5);
      } finally {
        ref.dispose();
      }
    } finally {
      m.dispose();
    }
    await expect(LlamaModel.load(micro!, { overrides: { 'model.norm': 'int8' } })).rejects.toMatchObject({ code: 'ZOTUNE_UNSUPPORTED' });
    await expect(LlamaModel.load(micro!, { overrides: { 'no.such': 'int8' } })).rejects.toMatchObject({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    await expect(LlamaModel.load(micro!, { overrides: { lm_head: 'int2' as WeightScheme } })).rejects.toMatchObject({ code: 'ZOTUNE_UNSUPPORTED' });
  });

  maybe('weights are read one tensor at a time: peak = quantized weights + one f32 tensor', async () => {
    const before = memory().engine;
    resetMemoryPeaks();
    const m = await LlamaModel.load(micro!, { weights: 'int8' });
    try {
      const after = memory().engine;
      const quantBytes = after.live.weights - before.live.weights;
      expect(quantBytes).toBe(m.weightBytes);
      const largest = Math.max(...llamaTensorNames(m.config).map((n) => { const w = m.weight(n); return w instanceof Tensor ? w.byteLength : w.rows * w.cols * 4; }));
      expect(after.peak.weights).toBe(after.live.weights);
      expect(after.totalPeak - before.totalLive).toBeLessThanOrEqual(quantBytes + largest + (1 << 20));
    } finally {
      m.dispose();
    }
  });

  for (const scheme of weightOnly)
    maybe(`${scheme}: forward = fp32 forward on the dequantized weights (kernel error only)`, async () => {
      const m = await LlamaModel.load(micro!, { weights: scheme });
      const ref = await LlamaModel.load(micro!);
      try {
        dequantizedInto(ref, m);
        for (const seqs of [batch, short]) {
          const a = await m.forward(seqs, { logits: 'all' }), b = await ref.forward(seqs, { logits: 'all' });
          expect(logitErr(a, b)).toBeLessThan(2e-5);
          expect(Math.abs(a.loss - b.loss)).toBeLessThan(1e-5);
        }
      } finally {
        m.dispose();
        ref.dispose();
      }
    });

  // Against the original fp32 weights: each format's own quantization error (tiny-llama). Logits:
  // max |error| / max |logit| over every position; loss: relative change of the mean loss. The
  // weight grids' relative steps are bf16 2^-8, int8 1/127 of a row's absmax, fp8 e4m3 2^-3 and e5m2
  // 2^-2 of the value, int4 1/7 of a group's absmax; measured (Zen 1): bf16 0.003 / 4e-5,
  // int8 0.011 / 2e-4, fp8-e4m3 0.046 / 5e-4, fp8-e5m2 0.11 / 3e-4, int4-g32..g128 0.14..0.22 / 4e-3..6e-3,
  // w8a8 0.024 / 3e-4, w4a8 0.22 / 5e-3.
  const bound: Record<string, { logits: number; loss: number }> = {
    bf16: { logits: 0.01, loss: 5e-4 },
    int8: { logits: 0.03, loss: 2e-3 },
    'fp8-e4m3': { logits: 0.08, loss: 3e-3 },
    'fp8-e5m2': { logits: 0.2, loss: 5e-3 },
    int4: { logits: 0.3, loss: 0.02 },
    'int4-g32': { logits: 0.3, loss: 0.02 },
    'int4-g64': { logits: 0.3, loss: 0.02 },
    'int4-g128': { logits: 0.3, loss: 0.02 },
    w8a8: { logits: 0.05, loss: 3e-3 },
    w4a8: { logits: 0.3, loss: 0.02 },
  };
  maybeTiny('every scheme stays within its format error of fp32 (tiny-llama)', async () => {
    const seqs = [Array.from({ length: 64 }, (_, i) => (i * 577 + 3) % 4093), Array.from({ length: 40 }, (_, i) => (i * 97 + 11) % 4093)];
    const fp = await LlamaModel.load(tiny!);
    const want = await fp.forward(seqs, { logits: 'all' });
    fp.dispose();
    for (const scheme of Object.keys(bound) as WeightScheme[]) {
      const m = await LlamaModel.load(tiny!, { weights: scheme });
      const got = await m.forward(seqs, { logits: 'all' });
      m.dispose();
      const e = logitErr(got, want), dl = Math.abs(got.loss - want.loss) / want.loss;
      expect({ scheme, e, dl, ok: e < bound[scheme].logits && dl < bound[scheme].loss }).toEqual({ scheme, e, dl, ok: true });
    }
  });
});

describe('scale checks of the forward', () => {
  // Scales are checked once and then trusted until another op uses their memory or JS takes a view
  // of it (native/addon/buffer.h, Storage::still_checked): each of those brings the check back.
  const name = 'model.layers.0.mlp.down_proj.weight';
  maybe('bad scales written by another op (no JS view) are caught by the next forward', async () => {
    for (const scheme of ['int8', 'w4a8'] as const) {
      const m = await LlamaModel.load(micro!, { weights: scheme });
      try {
        const good = await m.forward(short);
        expect((await m.forward(short)).loss).toBe(good.loss);
        rng.fillSync((m.weight(name) as QTensor).scales!, 'normal', { seed: 3 });  // negative scales, written natively
        await expect(m.forward(short)).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
        await expect(m.forward(short)).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));  // still bad: not memoized
      } finally {
        m.dispose();
      }
    }
  });
  maybe('once JS holds a view of the scales, every forward checks them', async () => {
    const m = await LlamaModel.load(micro!, { weights: 'w4a8' });
    try {
      const good = await m.forward(short);
      const view = (m.weight(name) as QTensor).scales!.data() as Float32Array;
      const keep = view[3];
      view[3] = -1;  // finite, so only the scale check can refuse it
      await expect(m.forward(short)).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
      view[3] = keep;
      expect((await m.forward(short)).loss).toBe(good.loss);
      view[3] = -2;
      await expect(m.forward(short)).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    } finally {
      m.dispose();
    }
  });
});

describe('ZO on quantized weights', () => {
  for (const scheme of ['int8', 'int4-g32', 'fp8-e4m3', 'bf16'] as WeightScheme[])
    maybe(`${scheme}: on-load probe = forwards on explicitly perturbed dequantized copies`, async () => {
      const m = await LlamaModel.load(micro!, { weights: scheme });
      const ref = await LlamaModel.load(micro!);
      try {
        dequantizedInto(ref, m);
        const base = new Map(llamaTensorNames(ref.config).map((n) => [n, Float32Array.from(ref.tensor(n).data() as Float32Array)]));
        const eps = 1e-2, seed = 31;
        const explicit = async (seqs: number[][], alpha: number) => {
          for (const t of m.trainable()) perturbSync(ref.tensor(t.name), alpha, { seed, stream: t.id, dist: 'gaussian', bits: 0, srPurpose: 'probe' });
          const r = await ref.forward(seqs, { logits: 'all' });
          for (const [n, v] of base) (ref.tensor(n).data() as Float32Array).set(v);
          return r;
        };
        for (const seqs of [batch, short]) {
          const r = await m.zoProbe(seqs, { seed, eps, logits: 'all' });
          // every linear is perturbed, so every GEMM takes the decode-then-fma f32 path of the fp32 kernels
          for (const [got, alpha] of [[r.plus, eps], [r.minus, -eps]] as const) {
            const want = await explicit(seqs, alpha);
            expect(logitErr(got, want)).toBeLessThan(1e-6);
            expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-6);
          }
        }
        await expect(m.zoProbe(batch, { seed, eps, mode: 'in-place' })).rejects.toMatchObject({ code: 'ZOTUNE_UNSUPPORTED' });
      } finally {
        m.dispose();
        ref.dispose();
      }
    });

  maybe('w8a8 / w4a8 probes: perturbed int8-activation GEMMs, within activation-quantization error of the fp32 reference', async () => {
    for (const scheme of ['w8a8', 'w4a8'] as WeightScheme[]) {
      const m = await LlamaModel.load(micro!, { weights: scheme });
      const ref = await LlamaModel.load(micro!);
      try {
        dequantizedInto(ref, m);
        const eps = 1e-2, seed = 8;
        m.setTrainable('model.layers.**');
        const r = await m.zoProbe(batch, { seed, eps, logits: 'all' });
        const plain = await m.forward(batch, { logits: 'all' });
        for (const t of m.trainable()) perturbSync(ref.tensor(t.name), eps, { seed, stream: t.id, dist: 'gaussian' });
        const want = await ref.forward(batch, { logits: 'all' });
        expect(logitErr(r.plus, want)).toBeLessThan(0.03);
        expect(r.plus.loss).not.toBe(plain.loss);
        expect(Math.abs(r.plus.loss - want.loss)).toBeLessThan(0.02);
      } finally {
        m.dispose();
        ref.dispose();
      }
    }
  });

  for (const [scheme, bits] of [['int4', 0], ['int8', 4], ['fp8-e5m2', 0], ['bf16', 2]] as [WeightScheme, number][])
    maybe(`${scheme}: zoUpdate = quant.update on the same codes (bits ${bits}), with decay = SR of the fp32 update; untouched tensors byte-equal`, async () => {
      const m = await LlamaModel.load(micro!, { weights: scheme });
      try {
        m.setTrainable(['model.layers.0.mlp.*', 'lm_head', 'model.norm']);
        const copies = new Map<string, { codes: Uint8Array; w: Tensor | QTensor }>();
        for (const n of llamaTensorNames(m.config)) {
          const w = m.weight(n);
          const d = w instanceof Tensor ? w.data() : w.data.data();
          copies.set(n, { codes: new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength)), w });
        }
        const seed = 123456789n, scale = 0.02;
        await m.zoUpdate({ seed, scale, direction: { bits } });
        const trainable = new Map(m.trainable().map((t) => [t.name, t.id]));
        for (const [n, { codes, w }] of copies) {
          const now = w instanceof Tensor ? w.data() : w.data.data();
          if (!trainable.has(n)) {
            expect(sameBits(now, codes)).toBe(true);
            continue;
          }
          if (w instanceof Tensor) {
            const want = Tensor.from(new Float32Array(codes.slice().buffer));
            perturbSync(want, -scale, { seed, stream: trainable.get(n)!, dist: 'gaussian', bits, srPurpose: 'update' });
            expect(sameBits(now, want.data())).toBe(true);
            continue;
          }
          // a fresh QTensor with the old codes and the same scales, updated by lib/quant.ts
          const old = codes.slice().buffer;
          const data = Tensor.from(w.data.dtype === 'i8' ? new Int8Array(old) : w.data.dtype === 'u8' ? new Uint8Array(old) : new Uint16Array(old), w.data.shape, w.data.dtype);
          const q = new QTensor(w.format, w.shape, w.granularity, data, w.scales, w.zeros);
          quant.updateSync(q, -scale, { seed, stream: trainable.get(n)!, dist: 'gaussian', bits, srPurpose: 'update' });
          expect(sameBits(now, q.data.data())).toBe(true);
          expect(sameBits(now, codes)).toBe(false);
        }
        // with decay: dequantize, fp32 update with the retention factor, SR back onto the same grid
        const decay = 0.25, before = new Map<string, Uint8Array>();
        for (const [n, { w }] of copies) {
          const d = w instanceof Tensor ? w.data() : w.data.data();
          before.set(n, new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength)));
        }
        await m.zoUpdate({ seed, scale, direction: { bits }, decay });
        for (const [n, codes] of before) {
          const w = copies.get(n)!.w;
          if (w instanceof Tensor || !trainable.has(n)) continue;
          const old = codes.slice().buffer;
          const data = Tensor.from(w.data.dtype === 'i8' ? new Int8Array(old) : w.data.dtype === 'u8' ? new Uint8Array(old) : new Uint16Array(old), w.data.shape, w.data.dtype);
          const q = new QTensor(w.format, w.shape, w.granularity, data, w.scales, w.zeros);
          const x = quant.dequantizeSync(q);
          const xv = x.data() as Float32Array;
          for (let i = 0; i < xv.length; i++) xv[i] = Math.fround(xv[i] * Math.fround(1 - decay));
          perturbSync(x, -scale, { seed, stream: trainable.get(n)!, dist: 'gaussian', bits, srPurpose: 'update' });
          quant.quantizeIntoSync(x, q, { rounding: 'stochastic', seed, stream: trainable.get(n)! });
          expect(sameBits(w.data.data(), q.data.data())).toBe(true);
          x.dispose();
        }
      } finally {
        m.dispose();
      }
    });
});
