import { Tensor, memory, resetMemoryPeaks, releaseHostCache, setThreads, cpuInfo, setCpuPath, rng } from '../lib';
import { settledLive } from './helpers/memory';
import { nativeBinary } from '../lib/native/load';
import { runNode } from './helpers/spawn';

describe('Tensor over native memory', () => {
  test('zeros, views and TypedArray round trip', () => {
    const t = Tensor.zeros([3, 5]);
    expect(t.shape).toEqual([3, 5]);
    expect(t.size).toBe(15);
    const d = t.data() as Float32Array;
    expect(Array.from(d)).toEqual(new Array(15).fill(0));
    d[4] = 2.5;
    expect((t.data() as Float32Array)[4]).toBe(2.5); // zero-copy: a second view sees the write
    const u = Tensor.fromArray([1, 2, 3, 4], [2, 2], 'i32');
    expect(u.toArray()).toEqual([1, 2, 3, 4]);
    expect(u.reshape([4]).toArray()).toEqual([1, 2, 3, 4]);
    t.dispose();
    u.dispose();
  });

  test('zero-copy from a TypedArray: kernels write into JS memory', () => {
    const a = new Float32Array(64);
    const t = Tensor.from(a, [8, 8]);
    rng.fillSync(t, 'uniform', { seed: 3 });
    expect(a.every((x) => x > 0 && x < 1)).toBe(true);
  });

  test('dispose frees memory now and detaches every view; Symbol.dispose works with `using`', async () => {
    const before = (await settledLive()).activations;
    const t = Tensor.zeros([1024, 256], 'f32', 'activations');
    expect(memory().engine.live.activations - before).toBe(1024 * 256 * 4);
    const view = t.data();
    expect(view.length).toBe(1024 * 256);
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(view.length).toBe(0); // detached, not dangling
    expect(memory().engine.live.activations).toBe(before);
    expect(() => t.data()).toThrow(expect.objectContaining({ code: 'ZOTUNE_DISPOSED' }));
    t.dispose(); // idempotent
    const ws0 = memory().engine.live.workspace; // kernels may keep scratch arenas here
    {
      using s = Tensor.zeros([10], 'f32', 'workspace');
      expect(memory().engine.live.workspace - ws0).toBe(40);
      expect(s.size).toBe(10);
    }
    expect(memory().engine.live.workspace).toBe(ws0);
  });

  test('freed transient blocks are cached for reuse (zeroed again on reuse); weights are not; releaseHostCache empties the cache', () => {
    releaseHostCache();
    expect(memory().engine.cached).toBe(0);
    const a = Tensor.zeros([1 << 18], 'f32', 'activations'); // 1 MiB
    (a.data() as Float32Array).fill(7);
    a.dispose();
    const cached = memory().engine.cached;
    expect(cached).toBeGreaterThanOrEqual(1 << 20);
    const b = Tensor.zeros([1 << 18], 'f32', 'workspace'); // takes the cached block
    expect(memory().engine.cached).toBeLessThan(cached);
    expect((b.data() as Float32Array).every((x) => x === 0)).toBe(true);
    b.dispose();
    const small = Tensor.zeros([1 << 10], 'f32', 'activations'); // 4 KiB: below the cache's minimum
    small.dispose();
    const w = Tensor.empty([1 << 20], 'u8', 'weights');
    const before = memory().engine.cached;
    w.dispose();
    expect(memory().engine.cached).toBe(before);
    releaseHostCache();
    expect(memory().engine.cached).toBe(0);
  });

  test('ZOTUNE_HOST_CACHE_MB bounds the cache (0: nothing kept)', () => {
    const code = (mb: string) =>
      runNode(`const a = require(${JSON.stringify(nativeBinary().path)}); const b = new a.NativeBuffer(1 << 20, 'activations'); b.dispose(); console.log(a.memory().cached);`, { env: { ZOTUNE_HOST_CACHE_MB: mb } });
    expect(code('0').stdout.trim()).toBe('0');
    expect(Number(code('2').stdout.trim())).toBeGreaterThanOrEqual(1 << 20);
  });

  test('live and peak bytes by category', () => {
    resetMemoryPeaks();
    const t = Tensor.empty([4 << 20], 'u8', 'weights');
    expect(memory().engine.live.weights).toBeGreaterThanOrEqual(4 << 20);
    expect(memory().engine.peak.weights).toBeGreaterThanOrEqual(4 << 20);
    t.dispose();
    expect(memory().engine.peak.weights).toBeGreaterThanOrEqual(4 << 20);
    expect(memory().engine.totalPeak).toBeGreaterThanOrEqual(memory().engine.totalLive);
  });

  test('disposing while an async op runs defers the free until it ends', async () => {
    const t = Tensor.zeros([1 << 22]);
    const p = rng.fill(t, 'normal', { seed: 1 });
    t.dispose();
    await expect(p).resolves.toBe(t);
    expect(t.disposed).toBe(true);
  });
});

describe('bad sizes and shapes get coded errors and the process lives on', () => {
  test.each([[[-1]], [[1.5]], [[NaN]], [[2 ** 60, 2 ** 60]]])('shape %j', (shape) => {
    expect(() => Tensor.zeros(shape as number[])).toThrow(expect.objectContaining({ code: 'ZOTUNE_SHAPE_MISMATCH' }));
  });
  test('an allocation too large for any host is ZOTUNE_OOM', () => {
    expect(() => Tensor.empty([2 ** 50], 'u8')).toThrow(expect.objectContaining({ code: 'ZOTUNE_OOM' }));
  });
  test('TypedArray of the wrong type or length', () => {
    expect(() => Tensor.from(new Float32Array(4), [2, 2], 'i32')).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => Tensor.from(new Float32Array(4), [3])).toThrow(expect.objectContaining({ code: 'ZOTUNE_SHAPE_MISMATCH' }));
    expect(() => Tensor.fromArray([1, 2, 3], [2])).toThrow(expect.objectContaining({ code: 'ZOTUNE_SHAPE_MISMATCH' }));
  });
  test('native argument validation: regions beyond a buffer, misalignment, bad numbers', () => {
    const { native } = require('../lib/native/load');
    const z = native();
    const a = new Float32Array(8);
    expect(() => z.rngFill(a, 0, 9, 0, 1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    expect(() => z.rngFill(a, 2, 1, 0, 1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => z.rngFill(a, -4, 1, 0, 1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => z.rngFill({}, 0, 1, 0, 1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => new z.NativeBuffer(16, 'nonsense')).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
  });
});

describe('engine settings', () => {
  test('threads and CPU path can be set and are validated', () => {
    const n = cpuInfo().threads;
    expect(setThreads(3)).toBe(3);
    expect(() => setThreads(0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    setThreads(n);
    expect(setCpuPath('scalar')).toBe('scalar');
    expect(cpuInfo().path).toBe('scalar');
    expect(() => setCpuPath('sse9' as never)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    setCpuPath('auto');
  });
});
