/**
 * The N-API glue never lets JS pull memory or indices out from under a native op: memory reached
 * through NativeBuffer views is pinned (dispose() during an op defers the free), JS ArrayBuffers are
 * copied for async ops, index arrays are validated on private copies, descriptor sizes cannot wrap,
 * and odd inputs (SharedArrayBuffer, fake NativeBuffers, fractional format codes) give coded errors.
 * Anything that crashed before the fix runs in a child process (UV_THREADPOOL_SIZE=1 and a busy
 * "blocker" op make the op under test start after the script has meddled), so a regression fails
 * one test instead of killing the jest worker.
 */
import { Tensor, quant } from '../lib';
import { native } from '../lib/native/load';
import { modelDir } from './helpers/models';
import { runNode } from './helpers/spawn';

const code = (c: string) => expect.objectContaining({ code: c });
const micro = modelDir('micro-llama');
const maybe = micro ? test : test.skip;

/** Runs `body` in a child with `z` (the CPU addon) and `done(obj)` (prints the result) in scope. */
function child(body: string, env: Record<string, string> = {}): unknown {
  const r = runNode(
    `const z = require('./dist/native/load').native();
     const done = (o) => console.log('RESULT ' + JSON.stringify(o));
     const blocker = () => { const b = new z.NativeBuffer(16 << 20); return z.rngFillAsync(b, 0, 4 << 20, 1, 1, 0, 0, 0).then(() => b.dispose()); };
     (async () => { ${body} })().catch((e) => done({ error: String(e && e.code), message: String(e && e.message) }));`,
    { env: { UV_THREADPOOL_SIZE: '1', ...env }, timeout: 30_000 },
  );
  expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  expect(line).toBeDefined();
  return JSON.parse(line!.slice(7));
}

describe('memory stays valid for the whole op', () => {
  test('dispose() during an async op on a view defers the free until the op ends (no leak)', () => {
    const r = child(`
      const base = z.memory().totalLive;
      const nb = new z.NativeBuffer(4 << 20);            // mmap'd: a use after free would fault
      const v = new Float32Array(nb.view());
      const p0 = blocker();
      const p = z.rngFillAsync(v, 0, v.length, 0, 7, 0, 0, 0);
      nb.dispose();
      const during = z.memory().totalLive - base;
      await Promise.all([p0, p]);
      done({ detached: v.length === 0, during: during >= (4 << 20), after: z.memory().totalLive - base });`);
    expect(r).toEqual({ detached: true, during: true, after: 0 });
  });

  test('the public path: Tensor.from(t.data()) then t.dispose() while rng.fill runs', () => {
    const r = child(`
      const { Tensor, rng, memory } = require('./dist');
      const base = memory().engine.totalLive;
      const t = Tensor.zeros([1 << 20]);
      const p0 = blocker();
      const p = rng.fill(Tensor.from(t.data()), 'normal', { seed: 1 });
      t.dispose();
      await Promise.all([p0, p]);
      done({ after: memory().engine.totalLive - base });`);
    expect(r).toEqual({ after: 0 });
  });

  test('a getter that disposes a buffer in the middle of a sync call cannot free it under the op', () => {
    const r = child(`
      const base = z.memory().totalLive;
      const K = 1024, N = 4;
      const nb = new z.NativeBuffer(K * 4);
      const x = new Float32Array(nb.view()).fill(1);
      let liveInGetter = -1;
      const w = { get format() { nb.dispose(); liveInGetter = z.memory().totalLive - base; return 0; },
                  rows: N, cols: K, group: 0, data: new Int8Array(N * K).fill(1), scales: new Float32Array([1]) };
      const y = new Float32Array(N);
      z.gemm(x, 0, 1, K, w, 0, N, y, 0, null, 0, false);
      done({ liveInGetter, y: Array.from(y), after: z.memory().totalLive - base, disposed: nb.disposed });`);
    expect(r).toEqual({ liveInGetter: 1024 * 4, y: [1024, 1024, 1024, 1024], after: 0, disposed: true });
  });

  test('a getter that detaches a JS ArrayBuffer argument of a sync call: ZOTUNE_DISPOSED', () => {
    const r = child(`
      const K = 64, N = 2;
      let x = new Float32Array(K).fill(1);
      const w = { get format() { structuredClone(x.buffer, { transfer: [x.buffer] }); return 0; },
                  rows: N, cols: K, group: 0, data: new Int8Array(N * K), scales: new Float32Array([1]) };
      try { z.gemm(x, 0, 1, K, w, 0, N, new Float32Array(N), 0, null, 0, false); done({ ok: true }); }
      catch (e) { done({ error: e.code }); }`);
    expect(r).toEqual({ error: 'ZOTUNE_DISPOSED' });
  });

  test('an ArrayBuffer transferred while an async op runs: the op ends on its copy and rejects ZOTUNE_DISPOSED', () => {
    const r = child(`
      let ab = new ArrayBuffer(4 << 20);
      const p0 = blocker();
      const p = z.rngFillAsync(new Float32Array(ab), 0, 1 << 20, 0, 1, 0, 0, 0);
      let moved = structuredClone(ab, { transfer: [ab] });
      moved = null; ab = null; if (global.gc) global.gc();
      await p0;
      try { await p; done({ ok: true }); } catch (e) { done({ error: e.code }); }`);
    expect(r).toEqual({ error: 'ZOTUNE_DISPOSED' });
  });

  test('async ops on JS arrays: results written back, aliases kept, the caller\'s writes to inputs kept', async () => {
    const z = native();
    const gate = Float32Array.from([1, 2, 3, 4]), up = Float32Array.from([2, 2, 2, 2]);
    const ref = new Float32Array(4);
    z.swiglu(ref, 0, gate, 0, up, 0, 4);
    const out = new Float32Array(4);
    const p = z.swigluAsync(out, 0, gate, 0, up, 0, 4);
    up[0] = 42; // an input written while the op runs: the write survives the write-back
    await p;
    expect(Array.from(out)).toEqual(Array.from(ref));
    expect(up[0]).toBe(42);
    // out and gate in one ArrayBuffer (out = gate, in place): one copy serves both
    const both = Float32Array.from([1, 2, 3, 4]);
    await z.swigluAsync(both, 0, both, 0, Float32Array.from([2, 2, 2, 2]), 0, 4);
    expect(Array.from(both)).toEqual(Array.from(ref));
  });
});

describe('index arrays are read from private copies', () => {
  test('embedding, rope, attention and logProbs index arrays written after the call (native views)', () => {
    const r = child(`
      const view = (n) => new Int32Array(new z.NativeBuffer(n * 4).view());
      const table = Float32Array.from({ length: 4 * 8 }, (_, i) => Math.floor(i / 8));  // row r holds r
      const ids = view(2); ids.set([3, 1]);
      const emb = new Float32Array(16);
      const pos = view(2); pos.set([0, 1]);
      const x = new Float32Array(2 * 8).fill(1);
      const off = view(2); off.set([0, 2]);
      const start = view(1); start.set([0]);
      const q = new Float32Array(16), k = new Float32Array(8 * 4), v = new Float32Array(4 * 8).fill(1);
      const att = new Float32Array(16);
      const tg = view(2); tg.set([0, 1]);
      const lp = new Float64Array(2);
      const p0 = blocker();
      const ps = [
        z.embeddingAsync(emb, 0, table, 0, 4, 8, ids, 2),
        z.ropeAsync(x, 0, 2, 1, 8, pos, 0, new Float64Array([10000, 0, 1, 1, 4, 8192])),
        z.attentionAsync(att, 0, q, 0, k, 0, v, 0, off, start, null, 1, 1, 1, 8, 4, 1),
        z.logProbsAsync(new Float32Array(16), 0, 2, 8, tg, lp),
      ];
      ids[0] = 2 ** 31 - 1; pos[1] = 2 ** 31 - 1; off[1] = 2 ** 30; start[0] = 2 ** 30; tg[1] = 2 ** 31 - 1;
      const sums = (await Promise.all([p0, ...ps]))[4];
      done({ emb: [emb[0], emb[8]], att: att[0], sums });`);
    expect(r).toEqual({ emb: [3, 1], att: 1, sums: { sum: expect.closeTo(-2 * Math.log(8), 6), count: 2 } });
  });

  maybe('the KV cache lengths written while a cached forward runs', () => {
    const r = child(`
      const { LlamaModel } = require('./dist');
      const model = await LlamaModel.load(${JSON.stringify(micro)}, { weights: 'fp32' });
      const cache = model.createCache(1, 16);
      const p0 = blocker();
      const p = model.forward([[1, 2, 3]], { cache });
      setImmediate(() => { cache.length[0] = 2 ** 30; });
      await Promise.all([p0, p]);
      done({ ok: true });`);
    expect(r).toEqual({ ok: true });
  });

  test('llamaForward (sync): a descriptor getter rewriting a token after the other arguments were read', () => {
    const r = child(`
      const D = 4, V = 4, I = 4;
      const cfg = new Float64Array([D, 1, 1, 1, 4, I, V, 8, 1e-5, 10000, 0, 1, 1, 4, 8192]);
      const ids = Uint32Array.from({ length: 12 }, (_, i) => i);
      const tokens = new Int32Array([0, 1]);
      const f = (n) => new Float32Array(n).fill(0.01);
      const q = { format: 0, get rows() { tokens[1] = 2 ** 31 - 1; return D; }, cols: D, group: 0,
                  data: new Int8Array(D * D), scales: new Float32Array([0.01]) };
      const w = [f(V * D), f(D), q, f(D * D), f(D * D), f(D * D), f(D), f(I * D), f(I * D), f(D * I), f(D), f(V * D)];
      try {
        z.llamaForward(cfg, ids, tokens, new Int32Array([0, 2]), new Int32Array([0, 1]), null, null, null, null, null, null,
                       null, null, null, null, 0, null, null, 0, ...w);
        done({ ok: true });
      } catch (e) { done({ error: e.code }); }`);
    expect(r).toEqual({ ok: true }); // the forward ran on the tokens as passed (the copy)
  });
});

describe('sizes and codes', () => {
  test('quantized descriptors whose rows * cols would wrap 64-bit sizes: ZOTUNE_INVALID_ARGUMENT', () => {
    const r = child(`
      const q = { format: 0, rows: 2 ** 32, cols: 2 ** 32, group: 0, data: new Int8Array(16), scales: new Float32Array([1]) };
      const bf = { ...q, format: 5, scales: undefined };
      const codes = [];
      const tryIt = (f) => { try { f(); codes.push('ok'); } catch (e) { codes.push(e.code); } };
      tryIt(() => z.dequantize(q, new Float32Array(4), 0));
      tryIt(() => z.quantize(new Float32Array(4), 0, bf, 2, false, 0, 0));
      tryIt(() => z.quantUpdate(q, 0.1, 1, 0, 0, 0, 5));
      tryIt(() => z.zoUpdate(1, 0, 0, 0.1, 0.5, new Uint32Array([0]), new Uint8Array([1]), new Float64Array([0]), q));
      done(codes);`);
    expect(r).toEqual(Array(4).fill('ZOTUNE_INVALID_ARGUMENT'));
  });

  test('a descriptor format must be an integer code in range', () => {
    const z = native();
    const d = (format: number) => ({ format, rows: 1, cols: 2, group: 0, data: new Uint8Array(2), scales: new Float32Array([1]) });
    for (const f of [1.7, NaN, -1, 7, Infinity]) expect(() => z.dequantize(d(f) as never, new Float32Array(2), 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => z.dequantize(d(0) as never, new Float32Array(2), 0)).not.toThrow();
  });

  test('SharedArrayBuffer memory and fake NativeBuffers: ZOTUNE_INVALID_ARGUMENT', async () => {
    const z = native();
    const sab = new Float32Array(new SharedArrayBuffer(32));
    const ok = new Float32Array(8);
    expect(() => z.swiglu(ok, 0, sab, 0, ok, 0, 8)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => z.swiglu(ok, 0, new DataView(sab.buffer) as never, 0, ok, 0, 8)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    await expect(z.swigluAsync(ok, 0, sab, 0, ok, 0, 8)).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const fake = Object.create(z.NativeBuffer.prototype);
    const proxy = new Proxy(new z.NativeBuffer(32), {});
    for (const m of [fake, proxy]) expect(() => z.swiglu(m, 0, ok, 0, ok, 0, 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  });

  test('zoOptimStep checks the query count before sizing anything by it (sync and async)', async () => {
    const z = native();
    const q = 1 << 16;
    const args = [0, new Float32Array(4), 0, 4, new Float32Array(4), 0, null, 0, 0, 0, 0, 0, new Uint32Array(2 * q), new Float32Array(q), 1e-3, 0, 0.9, 0.999, 1e-8, 1, 1] as const;
    const f = z.zoOptimStep as unknown as (...a: unknown[]) => void;
    const fa = z.zoOptimStepAsync as unknown as (...a: unknown[]) => Promise<void>;
    expect(() => f(...args)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    await expect(fa(...args)).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  });

  test('zoUpdate updates its fp32 tensors in one parallel job: a tensor listed twice (or two views of one buffer) is refused before any write', async () => {
    const z = native();
    const t = Tensor.fromArray(Array.from({ length: 1000 }, (_, i) => i / 1000)), other = Tensor.zeros([1000]);
    const before = Buffer.from(t.data().buffer.slice(0));
    const args = (second: unknown) => [1, 0, 0, 1e-3, 0, Uint32Array.of(1, 2), Uint8Array.of(0, 0), Float64Array.of(1000, 1000), t.mem, second] as const;
    const f = z.zoUpdateAsync as unknown as (...a: unknown[]) => Promise<void>;
    await expect(f(...args(t.mem))).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(Buffer.from(t.data().buffer.slice(0)).equals(before)).toBe(true);
    await expect(f(...args(other.mem))).resolves.toBeUndefined();
    expect(Buffer.from(t.data().buffer.slice(0)).equals(before)).toBe(false);
    t.dispose();
    other.dispose();
  });

  test('zoUpdate updates its quantized tensors in one parallel job too: one code buffer listed twice is refused before any write', async () => {
    const z = native();
    const q = quant.quantizeSync(Tensor.fromArray(Array.from({ length: 1024 }, (_, i) => Math.sin(i))).reshape([16, 64]), 'int8');
    const other = quant.quantizeSync(Tensor.fromArray(Array.from({ length: 1024 }, (_, i) => Math.cos(i))).reshape([16, 64]), 'int8');
    const before = Buffer.from(q.data.data().buffer.slice(0));
    const args = (second: unknown) => [1, 0, 0, 0.5, 0, Uint32Array.of(1, 2), Uint8Array.of(0, 0), Float64Array.of(1024, 1024), q.desc(), second] as const;
    const f = z.zoUpdateAsync as unknown as (...a: unknown[]) => Promise<void>;
    await expect(f(...args(q.desc()))).rejects.toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(Buffer.from(q.data.data().buffer.slice(0)).equals(before)).toBe(true);
    await expect(f(...args(other.desc()))).resolves.toBeUndefined();
    expect(Buffer.from(q.data.data().buffer.slice(0)).equals(before)).toBe(false);
    q.dispose();
    other.dispose();
  });

  test('rope with one huge position sizes its tables by the positions present', () => {
    const r = child(`
      const rope = new Float64Array([10000, 0, 1, 1, 4, 8192]);
      const P = 2 ** 31 - 1;
      const two = Float32Array.from({ length: 16 }, (_, i) => 1 + i / 16);
      const one = two.slice(8);
      z.rope(two, 0, 2, 1, 8, new Int32Array([0, P]), 0, rope);   // sparse: one table row per row
      z.rope(one, 0, 1, 1, 8, new Int32Array([P]), 0, rope);      // the range [P, P]
      // this process's peak (VmHWM): ru_maxrss would also count the jest worker it was forked from
      const peakKB = Number(/VmHWM:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]);
      done({ same: two.slice(8).every((v, i) => v === one[i]), rssMB: peakKB < 400 * 1024 });`);
    expect(r).toEqual({ same: true, rssMB: true });
  });
});
