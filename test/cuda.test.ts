/**
 * The CUDA addon. On any machine where it is built: it loads without a GPU, probe() explains why
 * no device is usable, the kernels' thread -> element map (run on the host) equals the CPU's, and
 * backend selection follows the probe. On a GPU: CUDA fills are bit-identical to the CPU's.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { DeviceTensor, Tensor, cudaStatus, memory, selectBackend } from '../lib';
import type { DeviceHandle, PoolStep } from '../lib/native/binding';
import { loadCuda, native, nativeBinary } from '../lib/native/load';
import { root, run, runNode } from './helpers/spawn';

const load = loadCuda();
const gpu = load.addon;
const status = cudaStatus();
const usable = status.available;
const notBuilt = ' (skipped: CUDA addon not built; npm run build:cuda)';
const builtTest = gpu ? test : test.skip;
if (!gpu) console.log(`cuda.test.ts: CUDA addon tests skipped: ${load.error}`);
if (!usable) console.log(`cuda.test.ts: GPU conformance skipped: ${status.reason}`);

/**
 * The conformance cases live once, in scripts/gpu-check.js (plain Node, run on GPU hosts too):
 * every distribution x 3 keys x 11 shapes (unaligned starts, 2^32 and 2^40 offsets, 4M elements).
 */
function gpuCheck(...flags: string[]) {
  const r = run(process.execPath, [path.join(root, 'scripts', 'gpu-check.js'), '--json', '--cpu', nativeBinary().path, '--cuda', load.binary!.path, ...flags], { timeout: 300_000 });
  expect(r.stderr).toBe('');
  return { status: r.status, report: JSON.parse(r.stdout) as { cases: number; mismatches: unknown[]; throughput: { dist: string; kernelMs: number }[]; gemv: { cases: number; failures: number } } };
}
// One run of each mode, shared by the tests that read it.
const checks: Record<string, ReturnType<typeof gpuCheck>> = {};
const gpuCheckOnce = (...flags: string[]) => (checks[flags.join(' ')] ??= gpuCheck(...flags));

describe('CUDA addon on any machine', () => {
  builtTest(`loads and probe() reports versions, devices or the reason there are none${gpu ? '' : notBuilt}`, () => {
    const p = gpu!.probe();
    expect(p.runtimeVersion).toBeGreaterThanOrEqual(12000);
    expect(p.archs).toMatch(/^\d/);
    expect(typeof p.driverVersion).toBe('number');
    if (p.usable) {
      expect(p.error).toBeUndefined();
      expect(p.devices.some((d) => d.usable && /^\d+\.\d+$/.test(d.computeCapability) && d.totalMemory > 0)).toBe(true);
    } else {
      expect(p.error!.code).toBeGreaterThan(0);
      expect(p.error!.name).toMatch(/^cudaError/);
      expect(p.error!.reason.length).toBeGreaterThan(20);
      expect(status.reason).toContain(p.error!.reason);
    }
  });

  builtTest(`links the CUDA runtime statically and sits in a cuda/ subfolder${gpu ? '' : notBuilt}`, () => {
    const file = load.binary!.path;
    const needed = [...execFileSync('readelf', ['-d', '-W', file], { encoding: 'utf8' }).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
    expect(needed).toContain('libc.so.6');
    expect(needed.filter((n) => /cuda|cublas|nvidia/i.test(n))).toEqual([]); // no libcudart, no libcuda
    expect(path.basename(path.dirname(file))).toBe('cuda'); // never where node-gyp-build looks for the CPU addon
  });

  builtTest(`the kernels' per-thread code, run on the host, equals the CPU bit for bit${gpu ? '' : notBuilt}`, () => {
    const { status, report } = gpuCheckOnce('--emulate');
    expect(report.mismatches).toEqual([]);
    expect([status, report.cases]).toEqual([0, 132]);
  });

  /**
   * GEMV (cuda/kernels/gemv.h), host emulation: 16 blocked direction streams bit-identical to the CPU
   * perturbation, and 23 GEMV cases (every format, odd K, N = 1/3/4097, K splits, M = 1..17, dense and
   * sparse perturb-on-load, bias + accumulate, K = 0, aligned rows with a partial last chunk) within the
   * documented bound of the CPU gemm, the reference kernel equal to the CPU's bits for M > 4, and the
   * staged kernel's blocks (shared-memory tile, M <= 4) equal to the fast kernel's lanes bit for bit.
   */
  builtTest(`the GEMV kernels' per-thread code, run on the host, matches the CPU gemm${gpu ? '' : notBuilt}`, () => {
    const { status, report } = gpuCheckOnce('--emulate');
    expect(report.mismatches).toEqual([]);
    expect([status, report.gemv]).toEqual([0, { cases: 39, failures: 0 }]);
  });

  builtTest(`GEMV arguments are validated with coded errors before any GPU work${gpu ? '' : notBuilt}`, () => {
    const a = new Float32Array(8), w = new Float32Array(8), c = new Float32Array(4);
    for (const op of [gpu!.gemvEmulated, gpu!.gemvReferenceEmulated]) {
      expect(() => op(a, 0, 2, 4, w, 0, 2, c, 0, null, 0, false)).not.toThrow();
      expect(() => op(a, 0, 2, 4, w, 0, 3, c, 0, null, 0, false)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
      expect(() => op(a, 0, 2, 4, new Float64Array(8), 0, 2, c, 0, null, 0, false)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
      expect(() => op(a, 0, 2, 4, w, 0, 2, c, 0, null, 0, false, true, 1, 0, 0.1, 7, 0, 4, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
      expect(() => op(a, 0, 2, 4, w, 0, 2, c, 0, null, 0, false, true, 1, 0, NaN, 0, 0, 4, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_NONFINITE' }));
      const unsorted = Uint32Array.from([3, 1]);
      expect(() => op(a, 0, 2, 4, w, 0, 2, c, 0, null, 0, false, true, 1, 0, 0.1, 0, 0, 4, 0, unsorted, 0, 2)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
      const q = { format: 0, rows: 3, cols: 4, group: 4, data: new Uint8Array(12), scales: new Float32Array(3) };
      expect(() => op(a, 0, 2, 4, q, 0, 2, c, 0, null, 0, false)).toThrow(expect.objectContaining({ code: 'ZOTUNE_SHAPE_MISMATCH' }));
      expect(() => op(a, 0, 2, 4, w, 0, 2, w, 0, null, 0, false)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    }
    expect(() => gpu!.gemvDirectionsEmulated(new Float32Array(4), 0, 4, 1, 0, 2, 0, 4, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => gpu!.gemvBench('int3', 1, 8, 8, 0, false, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => gpu!.gemvBench('int4', 1, 8, 64, 16, false, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => gpu!.gemvBench('int4', 17, 8, 64, 32, false, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    expect(() => gpu!.gemvBench('int4', 1, 8, 64, 32, false, 1, 'tiled' as never)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => gpu!.hbmReadBench(100, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
  });

  builtTest(`bad arguments get coded errors before any GPU work${gpu ? '' : notBuilt}`, () => {
    const out = new Float32Array(8);
    expect(() => gpu!.rngFill(out, 0, 8, 9, 1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => gpu!.rngFill(out, 4, 8, 1, 1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    expect(() => gpu!.rngFill(out, 0, 8, 1, -1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => gpu!.rngFill(out, 0, 8, 3, 1, 0, 3, 0, 2)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
  });

  (gpu && !usable ? test : test.skip)('without a usable GPU, rngFill throws ZOTUNE_CUDA_UNAVAILABLE (sync and async)', async () => {
    const out = new Float32Array(64);
    expect(() => gpu!.rngFill(out, 0, 64, 1, 1, 0, 0, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    await expect(gpu!.rngFillAsync(out, 0, 64, 1, 1, 0, 0, 0)).rejects.toMatchObject({ code: 'ZOTUNE_CUDA_UNAVAILABLE' });
  });

  (gpu && !usable ? test : test.skip)('without a usable GPU, gemv and gemvBench throw ZOTUNE_CUDA_UNAVAILABLE', async () => {
    const a = new Float32Array(8), w = new Float32Array(8), c = new Float32Array(4);
    expect(() => gpu!.gemv(a, 0, 2, 4, w, 0, 2, c, 0, null, 0, false)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    expect(() => gpu!.gemvStaged(a, 0, 2, 4, w, 0, 2, c, 0, null, 0, false)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    await expect(gpu!.gemvReferenceAsync(a, 0, 2, 4, w, 0, 2, c, 0, null, 0, false)).rejects.toMatchObject({ code: 'ZOTUNE_CUDA_UNAVAILABLE' });
    expect(() => gpu!.gemvBench('int4', 1, 64, 128, 128, false, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
  });

  test('backend selection follows the probe: auto falls back to the CPU, cuda throws with the reason', () => {
    expect(selectBackend('cpu')).toEqual({ backend: 'cpu', reason: 'requested' });
    if (usable) {
      expect(selectBackend('auto').backend).toBe('cuda');
      expect(selectBackend('cuda').backend).toBe('cuda');
    } else {
      expect(selectBackend('auto')).toEqual({ backend: 'cpu', reason: `auto: CUDA unavailable: ${status.reason}` });
      expect(() => selectBackend('cuda')).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE', message: expect.stringContaining(status.reason) }));
    }
    expect(() => selectBackend('gpu' as never)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
  });

  test('a wrong ZOTUNE_CUDA_BINARY is named in the reason; ZOTUNE_BACKEND sets the default', () => {
    const r = runNode(
      `const z = require('./dist');
       let err; try { z.selectBackend('cuda'); } catch (e) { err = { code: e.code, message: e.message }; }
       console.log(JSON.stringify({ auto: z.selectBackend(), err }));`,
      { env: { ZOTUNE_CUDA_BINARY: '/nonexistent/zotune_cuda.node', ZOTUNE_BACKEND: 'auto' } },
    );
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.auto).toEqual({ backend: 'cpu', reason: 'auto: CUDA unavailable: ZOTUNE_CUDA_BINARY=/nonexistent/zotune_cuda.node does not exist' });
    expect(out.err.code).toBe('ZOTUNE_CUDA_UNAVAILABLE');
    expect(out.err.message).toContain('ZOTUNE_CUDA_BINARY=/nonexistent/zotune_cuda.node does not exist');
    const cpu = runNode(`console.log(JSON.stringify(require('./dist').selectBackend()))`, { env: { ZOTUNE_BACKEND: 'cpu' } });
    expect(JSON.parse(cpu.stdout)).toEqual({ backend: 'cpu', reason: 'requested' });
  });
});

describe('GPU conformance', () => {
  const gpuTest = usable ? test : test.skip;
  const why = usable ? '' : ` (skipped: ${status.reason})`;

  gpuTest(`CUDA rngFill is bit-identical to the CPU for the same seed, stream, purpose and elements${why}`, () => {
    const { status, report } = gpuCheckOnce();
    expect(report.mismatches).toEqual([]);
    expect([status, report.cases]).toEqual([0, 132]);
    expect(report.throughput.every((t) => t.kernelMs > 0)).toBe(true);
  });

  gpuTest(`CUDA gemv (fast, staged and reference) equals its host emulation bit for bit and the CPU gemm within the bound${why}`, () => {
    const { status, report } = gpuCheckOnce();
    expect(report.mismatches).toEqual([]);
    expect([status, report.gemv]).toEqual([0, { cases: 39, failures: 0 }]);
  });

  gpuTest(`rngFillAsync fills on a worker thread and reports the kernel time${why}`, async () => {
    const n = 1 << 22;
    const a = new Float32Array(n), b = new Float32Array(n);
    native().rngFill(a, 0, n, 1, 5, 1, 0, 0);
    const r = await gpu!.rngFillAsync(b, 0, n, 1, 5, 1, 0, 0);
    expect(r.kernelMs).toBeGreaterThan(0);
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
  });
});

describe('CUDA perturbation, quantization and quantized ZO updates', () => {
  // scripts/gpu-check.js checkPerturb: dense perturbation (both distributions, QuZO bits 2..8,
  // unaligned and 2^32 / 2^40 starts), index lists (empty, shuffled, errors), every format x group x
  // rounding x scale mode for quantize, dequantize and the dense / index-list updates.
  const PERTURB_CASES = 2897;

  builtTest(`the kernels' per-thread code, run on the host, equals the CPU addon bit for bit${gpu ? '' : notBuilt}`, () => {
    const { status, report } = gpuCheck('--emulate');
    const r = report as typeof report & { perturbCases: number };
    expect(r.mismatches).toEqual([]);
    expect([status, r.perturbCases]).toEqual([0, PERTURB_CASES]);
  });

  builtTest(`bad arguments get the CPU addon's coded errors before any GPU work${gpu ? '' : notBuilt}`, () => {
    const w = new Float32Array(16);
    const code = (c: string) => expect.objectContaining({ code: c });
    expect(() => gpu!.perturb(w, 0, 16, 1e-3, 1, 0, 0, 9, 4, 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => gpu!.perturb(w, 0, 16, 1e-3, 1, 0, 0, 4, 2, 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => gpu!.perturb(w, 0, 16, NaN, 1, 0, 0, 0, 4, 0)).toThrow(code('ZOTUNE_NONFINITE'));
    expect(() => gpu!.perturb(w, 8, 16, 1e-3, 1, 0, 0, 0, 4, 0)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    const idx = Uint32Array.from([3, 5, 3]);
    expect(() => gpu!.perturbIndicesEmulated(w, 0, 16, idx, 0, 3, 1e-3, 1, 0, 0, 0, 4, 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => gpu!.perturbIndicesEmulated(w, 0, 16, Uint32Array.from([16]), 0, 1, 1e-3, 1, 0, 0, 0, 4, 0)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => gpu!.perturbIndices(w, 0, 16, new Int32Array(2), 0, 2, 1e-3, 1, 0, 0, 0, 4, 0)).toThrow(code('ZOTUNE_DTYPE'));
    const q = { format: 0, rows: 2, cols: 8, group: 0, data: new Uint8Array(16), scales: Float32Array.from([0.1]) };
    expect(() => gpu!.quantUpdate(q, Infinity, 1, 0, 0, 0, 4)).toThrow(code('ZOTUNE_NONFINITE'));
    expect(() => gpu!.quantUpdateEmulated({ ...q, scales: Float32Array.from([-1]) }, 0.1, 1, 0, 0, 0, 4)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => gpu!.quantize(new Float32Array(16), 0, q, 3, false, 0, 0)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => gpu!.quantizeEmulated(Float32Array.from({ length: 16 }, (_, i) => (i === 5 ? NaN : i)), 0, q, 1, false, 0, 0)).toThrow(code('ZOTUNE_NONFINITE'));
    expect(() => gpu!.dequantize({ ...q, data: new Uint8Array(4) }, new Float32Array(16), 0)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    expect(() => gpu!.perturbDeviceBench(1 << 20, 7, 0, 0, 1)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  });

  (gpu && !usable ? test : test.skip)('without a usable GPU, the GPU ops throw ZOTUNE_CUDA_UNAVAILABLE', async () => {
    const w = new Float32Array(64);
    expect(() => gpu!.perturb(w, 0, 64, 1e-3, 1, 0, 0, 0, 4, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    await expect(gpu!.perturbAsync(w, 0, 64, 1e-3, 1, 0, 0, 0, 4, 0)).rejects.toMatchObject({ code: 'ZOTUNE_CUDA_UNAVAILABLE' });
    const q = { format: 1, rows: 1, cols: 64, group: 32, data: new Uint8Array(32).fill(0x88), scales: Float32Array.from([0.1, 0.1]) };
    expect(() => gpu!.quantUpdate(q, 0.1, 1, 0, 0, 0, 4)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    expect(() => gpu!.perturbDeviceBench(1 << 20, 0, 0, 0, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
  });

  const gpuTest = usable ? test : test.skip;
  const why = usable ? '' : ` (skipped: ${status.reason})`;
  gpuTest(`fast and reference kernels on the GPU are bit-identical to the CPU addon${why}`, () => {
    const { status, report } = gpuCheck();
    const r = report as typeof report & { perturbCases: number };
    expect(r.mismatches).toEqual([]);
    expect([status, r.perturbCases]).toEqual([0, PERTURB_CASES]);
  });
});

describe('transformer ops on the GPU (cuda/kernels/nn.cu)', () => {
  // The cases live once, in scripts/gpu-check.js (checkNn): rows 1..33, dims that are not multiples
  // of 8, head dims 2..128, GQA ratios 1/2/4, padding masks, KV offsets, a query that sees no key,
  // llama3 rope scaling, positions up to 100k, exp range ends and NaN/inf in SwiGLU and log-probs.
  const perOp = { rmsNorm: 8, rope: 7, attention: 7, swiglu: 4, embedding: 4, logProbs: 6, argmax: 5 };
  const why = usable ? '' : ` (skipped: ${status.reason})`;
  type NnReport = { cases: number; runs: Record<string, number>; mismatches: unknown[]; timings: { fastMs: number; referenceMs: number }[] };
  const nnOf = (r: { report: unknown }) => (r.report as { nn: NnReport }).nn;

  builtTest(`the fast kernels' per-lane code, run on the host, equals the CPU bit for bit${gpu ? '' : notBuilt}`, () => {
    const r = gpuCheck('--emulate');
    const nn = nnOf(r);
    expect(nn.mismatches).toEqual([]);
    expect(nn.runs).toEqual(Object.fromEntries(Object.entries(perOp).map(([op, n]) => [`${op}Emulated`, n])));
    expect(r.status).toBe(0);
  });

  builtTest(`emulated RMSNorm and attention work in place (out = x, out = q)${gpu ? '' : notBuilt}`, () => {
    const cpu = native();
    const x = Float32Array.from({ length: 3 * 37 }, (_, i) => Math.sin(i) * 3), w = Float32Array.from({ length: 37 }, (_, i) => 1 + i / 37);
    const want = new Float32Array(x.length);
    cpu.rmsNorm(want, 0, x, 0, w, 0, 3, 37, 1e-6);
    const y = x.slice();
    gpu!.rmsNormEmulated(y, 0, y, 0, w, 0, 3, 37, 1e-6);
    expect(Buffer.from(y.buffer).equals(Buffer.from(want.buffer))).toBe(true);
    const [Hq, Hkv, hd, cap] = [4, 2, 40, 9];
    const q = Float32Array.from({ length: 9 * Hq * hd }, (_, i) => Math.cos(i * 0.37));
    const kv = Float32Array.from({ length: Hkv * hd * cap }, (_, i) => Math.sin(i * 0.11));
    const args = (out: Float32Array, qq: Float32Array) => [out, 0, qq, 0, kv, 0, kv, 0, Int32Array.of(0, 9), Int32Array.of(0), null, 1, Hq, Hkv, hd, cap, 0.2] as const;
    const ref = new Float32Array(q.length);
    cpu.attention(...args(ref, q));
    const qq = q.slice();
    gpu!.attentionEmulated(...args(qq, qq));
    expect(Buffer.from(qq.buffer).equals(Buffer.from(ref.buffer))).toBe(true);
    expect(ref.some((v, i) => v !== q[i])).toBe(true); // the op did something
  });

  builtTest(`bad arguments get the CPU op's coded errors before any GPU work${gpu ? '' : notBuilt}`, () => {
    const f = new Float32Array(64), i32 = new Int32Array(4), f64 = new Float64Array(4), rope = Float64Array.of(10000, 0, 1, 1, 4, 8192);
    for (const v of ['', 'Emulated']) {
      const g = gpu as unknown as Record<string, (...a: unknown[]) => unknown>;
      const bad: [string, unknown[], string][] = [
        ['rmsNorm', [f, 0, f, 0, f, 0, 2, 0, 1e-6], 'ZOTUNE_SHAPE_MISMATCH'],
        ['rmsNorm', [f, 0, f, 0, f, 0, 2, 40, 1e-6], 'ZOTUNE_OUT_OF_RANGE'],
        ['rope', [f, 0, 1, 1, 7, Int32Array.of(0), 0, rope], 'ZOTUNE_SHAPE_MISMATCH'],
        ['rope', [f, 0, 1, 1, 8, Int32Array.of(-1), 0, rope], 'ZOTUNE_OUT_OF_RANGE'],
        ['attention', [f, 0, f, 0, f, 0, f, 0, Int32Array.of(0, 1), Int32Array.of(0), null, 1, 3, 2, 4, 2, 0.5], 'ZOTUNE_SHAPE_MISMATCH'],
        ['attention', [f, 0, f, 0, f, 0, f, 0, Int32Array.of(0, 2), Int32Array.of(1), null, 1, 2, 1, 4, 2, 0.5], 'ZOTUNE_OUT_OF_RANGE'],
        ['swiglu', [f, 0, f, 0, f, 0, 65], 'ZOTUNE_OUT_OF_RANGE'],
        ['embedding', [f, 0, f, 0, 4, 4, Int32Array.of(4), 1], 'ZOTUNE_OUT_OF_RANGE'],
        ['logProbs', [f, 0, 4, 8, Int32Array.of(0, 1, 8, 2), f64], 'ZOTUNE_OUT_OF_RANGE'],
        ['logProbs', [f, 0, 4, 8, i32.subarray(0, 3), f64], 'ZOTUNE_OUT_OF_RANGE'],
        ['argmax', [f, 0, 4, 0, i32], 'ZOTUNE_SHAPE_MISMATCH'],
        ['argmax', [f, 0, 5, 16, i32], 'ZOTUNE_OUT_OF_RANGE'],
      ];
      for (const [op, args, code] of bad) expect(() => g[op + v](...args)).toThrow(expect.objectContaining({ code }));
    }
  });

  builtTest(`argmax of a row without a non-NaN value is ZOTUNE_NONFINITE, as on the CPU${gpu ? '' : notBuilt}`, () => {
    const x = Float32Array.of(1, NaN, 3, NaN, NaN, NaN), out = new Int32Array(2);
    expect(() => native().argmax(x, 0, 2, 3, out)).toThrow(expect.objectContaining({ code: 'ZOTUNE_NONFINITE', message: expect.stringContaining('row 1') }));
    expect(() => gpu!.argmaxEmulated(x, 0, 2, 3, out)).toThrow(expect.objectContaining({ code: 'ZOTUNE_NONFINITE', message: expect.stringContaining('row 1') }));
  });

  (gpu && !usable ? test : test.skip)('without a usable GPU, the ops throw ZOTUNE_CUDA_UNAVAILABLE (sync and async)', async () => {
    const f = new Float32Array(64);
    expect(() => gpu!.rmsNorm(f, 0, f, 0, f, 0, 2, 8, 1e-6)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    expect(() => gpu!.attentionReference(f, 0, f, 0, f, 0, f, 0, Int32Array.of(0, 1), Int32Array.of(0), null, 1, 1, 1, 8, 1, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    await expect(gpu!.logProbsAsync(f, 0, 2, 8, Int32Array.of(0, 1), new Float64Array(2))).rejects.toMatchObject({ code: 'ZOTUNE_CUDA_UNAVAILABLE' });
  });

  (usable ? test : test.skip)(`fast and reference kernels equal the CPU (log-probs within 1e-14: CUDA's double log)${why}`, () => {
    const r = gpuCheck();
    const nn = nnOf(r);
    expect(nn.mismatches).toEqual([]);
    expect(nn.runs).toEqual({ ...perOp, rmsNormReference: perOp.rmsNorm, attentionReference: perOp.attention, logProbsReference: perOp.logProbs, argmaxReference: perOp.argmax });
    expect(nn.timings.every((t) => t.fastMs > 0 && t.referenceMs > 0)).toBe(true);
  });
});

describe('tensor-core GEMMs (cuda/kernels/gemm_tc)', () => {
  const w8 = (rows: number, cols: number, group = cols) => ({ format: 0, rows, cols, group, data: new Uint8Array(rows * cols), scales: new Float32Array(group ? rows * Math.ceil(cols / group) : 1) });

  builtTest(`the fast kernels' per-thread code, run on the host: W8A8, W4A8, f32 and W' rows bit-identical to the CPU, fp8 / bf16 / W4A16 within their NMSE bounds${gpu ? '' : notBuilt}`, () => {
    const { status, report } = gpuCheck('--emulate');
    const r = (report as unknown as { gemmTc: { cases: number; failures: number; emulated: boolean } }).gemmTc;
    expect(report.mismatches).toEqual([]);
    expect(status).toBe(0);
    expect(r).toEqual({ cases: 157, failures: 0, emulated: true });
  });

  builtTest(`bad arguments get coded errors before any GPU work${gpu ? '' : notBuilt}`, () => {
    const x = new Float32Array(6), y = new Float32Array(6);
    const fp8 = { format: 3, rows: 2, cols: 64, group: 32, data: new Uint8Array(128), scales: new Float32Array(4) };
    expect(() => gpu!.gemmW8A8(x, 0, 2, { ...w8(3, 3), format: 3 }, y, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => gpu!.gemmW4A8Emulated(x, 0, 2, w8(3, 3), y, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => gpu!.gemmW4A16Emulated(x, 0, 2, w8(3, 3), y, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => gpu!.gemmFp8(new Float32Array(128), 0, 2, fp8, new Float32Array(4), 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_UNSUPPORTED' }));
    expect(() => gpu!.gemmBf16Emulated(x, 0, 2, w8(3, 3), y, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => gpu!.gemmW8A8Emulated(x, 0, 3, w8(3, 3), y, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' })); // x holds 2 rows
    expect(() => gpu!.gemmW8A8Emulated(x, 0, 2, w8(3, 3), y, 0, new Float32Array(2), 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    const sq = new Float32Array(9);
    expect(() => gpu!.gemmF32Emulated(sq, 0, 3, new Float32Array(9), 0, 3, 3, sq, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' })); // y overlaps x
    expect(() => gpu!.gemmTcBench('int4' as never, 16, 16, 16, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => gpu!.gemmTcBench('w8a8', 0, 16, 16, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    const rows = (r0: number, n: number, out: Float32Array | Uint16Array, bf16 = false, alpha = 0.1) =>
      gpu!.weightRowsEmulated(w8(4, 10), r0, n, bf16, out, 0, alpha, 1n, 0, 0, 0, 4);
    expect(() => rows(3, 2, new Float32Array(20))).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' })); // rows 3..4 of 4
    expect(() => rows(0, 2, new Float32Array(19))).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' })); // out too small
    expect(gpu!.weightRowsLd(10)).toBe(16); // bf16 rows padded to 16 bytes
    expect(() => rows(0, 2, new Uint16Array(20), true)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    expect(() => rows(0, 2, new Float32Array(20), false, NaN)).toThrow(expect.objectContaining({ code: 'ZOTUNE_NONFINITE' }));
    rows(0, 2, new Uint16Array(32), true);
  });

  (gpu && !usable ? test : test.skip)('without a usable GPU, the GEMMs throw ZOTUNE_CUDA_UNAVAILABLE; the emulated ones still run', () => {
    const x = new Float32Array(2 * 3).fill(1), y = new Float32Array(2 * 3);
    const w = w8(3, 3);
    w.data.fill(2), w.scales.fill(0.5);
    expect(() => gpu!.gemmW8A8(x, 0, 2, w, y, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    expect(() => gpu!.gemmTcBench('bf16', 16, 16, 16, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    gpu!.gemmW8A8Emulated(x, 0, 2, w, y, 0, null, 0);
    // x = 1 quantizes to 127 with s_x = 1/127; y = (0.5 * (3 * 127 * 2)) * (1/127) = 3 up to one rounding.
    for (const v of y) expect(v).toBeCloseTo(3, 5);
  });

  (usable ? test : test.skip)(`on the GPU: every gemmTc case of scripts/gpu-check.js passes${usable ? '' : ` (skipped: ${status.reason})`}`, () => {
    const { status: code, report } = gpuCheck();
    expect(report.mismatches).toEqual([]);
    expect(code).toBe(0);
  });
});

/**
 * The device memory pool. Its cache logic runs over host memory here (poolSelfTest); the device
 * cases (round trips, statistics, ZOTUNE_OOM, use after free) are the checkPool section of
 * scripts/gpu-check.js, run on a GPU.
 */
describe('device memory pool', () => {
  const MiB = 1 << 20;
  const selfTest = (steps: PoolStep[], capacity: number) => gpu!.poolSelfTest(steps, capacity);

  builtTest(`size classes: 512 B steps up to 1 MiB, then 2 MiB steps${gpu ? '' : notBuilt}`, () => {
    const sizes = [1, 511, 512, 513, 1000, MiB - 1, MiB, MiB + 1, 2 * MiB, 2 * MiB + 1, 5 * MiB];
    const r = selfTest(sizes.map((bytes) => ({ op: 'alloc', bytes })), 64 * MiB);
    expect(r.map((x) => x.block)).toEqual([512, 512, 512, 1024, 1024, MiB, MiB, 2 * MiB, 2 * MiB, 4 * MiB, 6 * MiB]);
    const last = r[r.length - 1].stats;
    expect(last.live.other).toBe(sizes.reduce((a, b) => a + b));
    expect(last.reserved).toBe(r.reduce((a, x) => a + x.block!, 0));
    expect(last.driverAllocs).toBe(sizes.length);
    expect(new Set(r.map((x) => x.address)).size).toBe(sizes.length);
    expect(r.every((x) => x.address! % 256 === 0)).toBe(true);
  });

  builtTest(`a freed block is reused by the next request of its class; live, peak and cached follow${gpu ? '' : notBuilt}`, () => {
    const r = selfTest([
      { op: 'alloc', bytes: 1000, category: 'weights' }, // 0
      { op: 'alloc', bytes: 1, category: 'activations' }, // 1
      { op: 'free', step: 0 }, // 2
      { op: 'free', step: 0 }, // 3: already freed: ignored
      { op: 'alloc', bytes: 600, category: 'gradients' }, // 4: the 1024 B block of step 0
      { op: 'alloc', bytes: 1200, category: 'weights' }, // 5: another class: a new block
      { op: 'free', step: 1 }, // 6
      { op: 'resetPeaks' }, // 7
      { op: 'free', step: 7 }, // 8: not an alloc step
      { op: 'alloc', bytes: 0 }, // 9
    ], MiB);
    expect(r[0].stats).toMatchObject({ totalLive: 1000, totalPeak: 1000, cached: 0, reserved: 1024, driverAllocs: 1 });
    expect(r[0].stats.live).toEqual({ weights: 1000, activations: 0, gradients: 0, optimizer: 0, workspace: 0, other: 0 });
    expect(r[2].freed).toBe(true);
    expect(r[2].stats).toMatchObject({ totalLive: 1, totalPeak: 1001, cached: 1024, reserved: 1536, driverAllocs: 2 });
    expect(r[2].stats.peak.weights).toBe(1000);
    expect(r[3].freed).toBe(false);
    expect(r[3].stats).toEqual(r[2].stats);
    expect(r[4].address).toBe(r[0].address);
    expect(r[4].stats).toMatchObject({ totalLive: 601, totalPeak: 1001, cached: 0, reserved: 1536, driverAllocs: 2 });
    expect(r[4].stats.live.gradients).toBe(600);
    expect(r[5].address).not.toBe(r[0].address);
    expect(r[5].stats).toMatchObject({ totalLive: 1801, totalPeak: 1801, reserved: 3072, driverAllocs: 3 });
    expect(r[5].stats.peak.weights).toBe(1200); // per category: its own high-water mark
    expect(r[6].stats).toMatchObject({ totalLive: 1800, totalPeak: 1801, cached: 512 });
    expect(r[7].stats.peak).toEqual(r[7].stats.live);
    expect(r[7].stats.totalPeak).toBe(1800);
    expect(r[8].freed).toBe(false);
    expect(r[9]).toMatchObject({ address: 0, stats: r[8].stats });
    expect(r[9].block).toBeUndefined();
  });

  builtTest(`a cached block up to a quarter larger than the class serves a request (best fit), a larger one does not${gpu ? '' : notBuilt}`, () => {
    const r = selfTest([
      { op: 'alloc', bytes: 12 * MiB }, // 0: 12 MiB block
      { op: 'free', step: 0 }, // 1
      { op: 'alloc', bytes: 10 * MiB - 5 }, // 2: 10 MiB class, 12 <= 12.5: the cached block
      { op: 'free', step: 2 }, // 3: back as a 12 MiB block
      { op: 'alloc', bytes: 9 * MiB }, // 4: 10 MiB class again: reuses it
      { op: 'free', step: 4 }, // 5
      { op: 'alloc', bytes: 8 * MiB }, // 6: 8 MiB class, 12 > 10: a new block
    ], 64 * MiB);
    expect(r[2].address).toBe(r[0].address);
    expect(r[2].stats).toMatchObject({ cached: 0, reserved: 12 * MiB, driverAllocs: 1, totalLive: 10 * MiB - 5 });
    expect(r[3].stats).toMatchObject({ cached: 12 * MiB, reserved: 12 * MiB, totalLive: 0 });
    expect(r[4].address).toBe(r[0].address);
    expect(r[6].address).not.toBe(r[0].address);
    expect(r[6].stats).toMatchObject({ cached: 12 * MiB, reserved: 20 * MiB, driverAllocs: 2 });
  });

  builtTest(`when the source is full the cache is released and the request retried once, then ZOTUNE_OOM${gpu ? '' : notBuilt}`, () => {
    const r = selfTest([
      { op: 'alloc', bytes: 1000 }, // 0: 1 KiB
      { op: 'alloc', bytes: 3 * MiB }, // 1: 4 MiB
      { op: 'alloc', bytes: MiB + 1 }, // 2: 2 MiB
      { op: 'free', step: 1 }, // 3
      { op: 'free', step: 2 }, // 4: 6 MiB cached, 1 KiB live, capacity 7 MiB
      { op: 'alloc', bytes: 5 * MiB, category: 'weights' }, // 5: 6 MiB fits only once the cache is released
      { op: 'alloc', bytes: MiB, category: 'optimizer' }, // 6: 1 MiB: 1 MiB - 1 KiB left, nothing cached
      { op: 'release' }, // 7: nothing cached: no change
      { op: 'alloc', bytes: 2 ** 49 }, // 8: beyond any device
      { op: 'alloc', bytes: 1000 }, // 9
    ], 7 * MiB);
    expect(r[4].stats).toMatchObject({ cached: 6 * MiB, reserved: 6 * MiB + 1024, driverAllocs: 3 });
    expect(r[5].error).toBeUndefined();
    expect(r[5].block).toBe(6 * MiB);
    expect(r[5].stats).toMatchObject({ cached: 0, reserved: 6 * MiB + 1024, driverAllocs: 4, totalLive: 5 * MiB + 1000 });
    expect(r[6].error!.code).toBe('ZOTUNE_OOM');
    expect(r[6].error!.message).toContain(`allocating ${MiB} bytes (${MiB}-byte block) for optimizer`);
    expect(r[6].error!.message).toMatch(/live 5\.0 MiB, peak 5\.0 MiB, nothing cached; .* 1047552 of 7340032 bytes free$/);
    expect(r[6].stats).toEqual(r[5].stats); // a failed request changes nothing
    expect(r[7].stats).toEqual(r[5].stats);
    expect(r[8].error!.code).toBe('ZOTUNE_OOM');
    expect(r[8].error!.message).toContain('beyond any device');
    expect(r[9].error).toBeUndefined();
    expect(r[9].stats).toMatchObject({ reserved: 6 * MiB + 2048, driverAllocs: 5 });
  });

  builtTest(`release gives every cached block back; live blocks stay${gpu ? '' : notBuilt}`, () => {
    const r = selfTest([
      { op: 'alloc', bytes: 100 }, { op: 'alloc', bytes: 3 * MiB }, { op: 'alloc', bytes: 700 },
      { op: 'free', step: 1 }, { op: 'free', step: 2 }, { op: 'release' }, { op: 'alloc', bytes: 3 * MiB },
    ], 16 * MiB);
    expect(r[4].stats).toMatchObject({ cached: 4 * MiB + 1024, reserved: 4 * MiB + 1536, totalLive: 100 });
    expect(r[5].stats).toMatchObject({ cached: 0, reserved: 512, totalLive: 100, driverAllocs: 3 });
    expect(r[6].stats.driverAllocs).toBe(4); // the released block is gone: a new one
  });

  builtTest(`8 threads allocating and freeing concurrently leave nothing live and every block accounted${gpu ? '' : notBuilt}`, () => {
    const [r] = selfTest([{ op: 'hammer', threads: 8, iterations: 50_000 }], 256 * MiB);
    expect(r.error).toBeUndefined();
    expect(Object.values(r.stats.live)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(r.stats.totalLive).toBe(0);
    expect(r.stats.cached).toBe(r.stats.reserved);
    expect(r.stats.totalPeak).toBeGreaterThan(2 * MiB);
    // Each thread holds at most 4 blocks, so the cache never needs more than 4 per thread per class.
    expect(r.stats.driverAllocs).toBeLessThanOrEqual(8 * 4 * 7);
    const [oom] = selfTest([{ op: 'hammer', threads: 4, iterations: 1000 }], 3 * MiB);
    expect(oom.error!.code).toBe('ZOTUNE_OOM');
    expect(oom.stats.totalLive).toBe(0); // the threads freed what they held
  });

  builtTest(`bad self-test scripts and device-buffer arguments get coded errors, without a GPU${gpu ? '' : notBuilt}`, () => {
    const invalid = expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' });
    expect(() => selfTest([{ op: 'grow' } as never], MiB)).toThrow(invalid);
    expect(() => selfTest([{ op: 'alloc', bytes: -1 }], MiB)).toThrow(invalid);
    expect(() => selfTest([{ op: 'free', step: 3 }], MiB)).toThrow(invalid);
    expect(() => selfTest([{ op: 'alloc', bytes: 1, category: 'vram' }], MiB)).toThrow(invalid);
    expect(() => gpu!.deviceAlloc(1, 'vram')).toThrow(invalid);
    expect(() => gpu!.deviceAlloc(-1)).toThrow(invalid);
    // A 0-byte buffer needs no device memory, so the handle checks run here.
    const h = gpu!.deviceAlloc(0, 'weights');
    gpu!.deviceUpload(h, new Uint8Array(0), 0);
    expect(() => gpu!.deviceUpload(h, new Uint8Array(1), 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    expect(() => gpu!.deviceDownload(h, new Uint8Array(0), 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    expect(() => gpu!.deviceUpload({} as DeviceHandle, new Uint8Array(0), 0)).toThrow(invalid);
    expect(() => gpu!.deviceFree(null as never)).toThrow(invalid);
    gpu!.deviceFree(h);
    gpu!.deviceFree(h); // idempotent
    expect(() => gpu!.deviceDownload(h, new Uint8Array(0), 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DISPOSED' }));
    const m = gpu!.deviceMemory();
    expect(Object.keys(m.live)).toEqual(['weights', 'activations', 'gradients', 'optimizer', 'workspace', 'other']);
    expect(m).toMatchObject({ totalLive: expect.any(Number), cached: expect.any(Number), reserved: expect.any(Number), driverAllocs: expect.any(Number) });
  });

  (gpu && !usable ? test : test.skip)('without a usable GPU, device allocations throw ZOTUNE_CUDA_UNAVAILABLE and nothing is counted', () => {
    const before = gpu!.deviceMemory();
    expect(() => gpu!.deviceAlloc(1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    expect(() => DeviceTensor.empty([4])).toThrow(expect.objectContaining({ code: 'ZOTUNE_CUDA_UNAVAILABLE' }));
    expect(gpu!.deviceMemory()).toEqual(before);
  });

  builtTest(`the host cache checks of scripts/gpu-check.js pass (--emulate)${gpu ? '' : notBuilt}`, () => {
    const { report } = gpuCheckOnce('--emulate');
    const pool = (report as unknown as { pool: { cases: number; failures: unknown[] } }).pool;
    expect(pool).toEqual({ cases: 2, failures: [] });
  });

  test('memory() reports the device only when the CUDA backend is already loaded and usable; it never loads it', () => {
    const r = runNode(
      `const z = require('./dist');
       const loaded = () => Object.keys(require.cache).some((k) => k.endsWith('zotune_cuda.node'));
       const before = { device: 'device' in z.memory(), loaded: loaded() };
       const available = z.cudaStatus().available;
       const m = z.memory();
       console.log(JSON.stringify({ before, available, device: m.device ?? null, direct: z.deviceMemory() ?? null }));`,
    );
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.before).toEqual({ device: false, loaded: false });
    if (out.available) {
      expect(Object.keys(out.device.live)).toEqual(['weights', 'activations', 'gradients', 'optimizer', 'workspace', 'other']);
      expect(out.device).toMatchObject({ totalLive: expect.any(Number), totalPeak: expect.any(Number), cached: expect.any(Number) });
    } else {
      expect([out.device, out.direct]).toEqual([null, null]);
    }
  });
});

describe('device memory pool on a GPU', () => {
  const gpuTest = usable ? test : test.skip;
  const why = usable ? '' : ` (skipped: ${status.reason})`;

  gpuTest(`round trips, statistics, reuse by rngFill, ZOTUNE_OOM and use after free (gpu-check checkPool)${why}`, () => {
    const { report } = gpuCheckOnce();
    const pool = (report as unknown as { pool: { cases: number; failures: unknown[] } }).pool;
    expect(pool).toEqual({ cases: 7, failures: [] });
  });

  gpuTest(`DeviceTensor: upload, download, async copies, dispose; memory() shows the device bytes${why}`, async () => {
    const host = new Float32Array(1000).map((_, i) => i * 0.5 - 7);
    const before = memory().device!.live.activations;
    const d = DeviceTensor.from(Tensor.from(host), 'activations');
    expect(memory().device!.live.activations - before).toBe(4000);
    expect(Array.from(d.download())).toEqual(Array.from(host));
    await d.uploadAsync(new Float32Array([1, 2, 3]), 10);
    const part = (await d.downloadAsync(new Float32Array(4), 9)) as Float32Array;
    expect(Array.from(part)).toEqual([host[9], 1, 2, 3]);
    expect(() => d.upload(new Int32Array(4))).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => d.upload(new Float32Array(4), 997)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    // Freed while a copy is in flight: the copy completes, then the memory returns to the pool.
    const pending = d.downloadAsync();
    d.dispose();
    expect(d.disposed).toBe(true);
    expect(Array.from((await pending).subarray(0, 3))).toEqual([host[0], host[1], host[2]]);
    expect(memory().device!.live.activations).toBe(before);
    expect(() => d.download()).toThrow(expect.objectContaining({ code: 'ZOTUNE_DISPOSED' }));
  });
});
