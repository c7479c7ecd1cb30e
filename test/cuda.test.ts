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
  return { status: r.status, report: JSON.parse(r.stdout) as { cases: number; mismatches: unknown[]; throughput: { dist: string; kernelMs: number }[] } };
}

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
    const { status, report } = gpuCheck('--emulate');
    expect(report.mismatches).toEqual([]);
    expect([status, report.cases]).toEqual([0, 132]);
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
    const { status, report } = gpuCheck();
    expect(report.mismatches).toEqual([]);
    expect([status, report.cases]).toEqual([0, 132]);
    expect(report.throughput.every((t) => t.kernelMs > 0)).toBe(true);
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
