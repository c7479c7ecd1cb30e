/**
 * The CUDA addon. On any machine where it is built: it loads without a GPU, probe() explains why
 * no device is usable, the kernels' thread -> element map (run on the host) equals the CPU's, and
 * backend selection follows the probe. On a GPU: CUDA fills are bit-identical to the CPU's.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { cudaStatus, selectBackend } from '../lib';
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
   * perturbation, and 21 GEMV cases (every format, odd K, N = 1/3/4097, K splits, M = 1..17, dense and
   * sparse perturb-on-load, bias + accumulate, K = 0) within the documented bound of the CPU gemm, the
   * reference kernel equal to the CPU's bits for M > 4.
   */
  builtTest(`the GEMV kernels' per-thread code, run on the host, matches the CPU gemm${gpu ? '' : notBuilt}`, () => {
    const { status, report } = gpuCheckOnce('--emulate');
    expect(report.mismatches).toEqual([]);
    expect([status, report.gemv]).toEqual([0, { cases: 37, failures: 0 }]);
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

  gpuTest(`CUDA gemv (fast and reference) equals its host emulation bit for bit and the CPU gemm within the bound${why}`, () => {
    const { status, report } = gpuCheckOnce();
    expect(report.mismatches).toEqual([]);
    expect([status, report.gemv]).toEqual([0, { cases: 37, failures: 0 }]);
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
