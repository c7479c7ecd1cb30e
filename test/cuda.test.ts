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

describe('tensor-core GEMMs (cuda/kernels/gemm_tc)', () => {
  const w8 = (rows: number, cols: number, group = cols) => ({ format: 0, rows, cols, group, data: new Uint8Array(rows * cols), scales: new Float32Array(group ? rows * Math.ceil(cols / group) : 1) });

  builtTest(`the fast kernels' per-thread code, run on the host: W8A8 and f32 bit-identical to the CPU, fp8 / bf16 within their NMSE bounds${gpu ? '' : notBuilt}`, () => {
    const { status, report } = gpuCheck('--emulate');
    const r = (report as unknown as { gemmTc: { cases: number; failures: number; emulated: boolean } }).gemmTc;
    expect(report.mismatches).toEqual([]);
    expect(status).toBe(0);
    expect(r).toEqual({ cases: 67, failures: 0, emulated: true });
  });

  builtTest(`bad arguments get coded errors before any GPU work${gpu ? '' : notBuilt}`, () => {
    const x = new Float32Array(6), y = new Float32Array(6);
    const fp8 = { format: 3, rows: 2, cols: 64, group: 32, data: new Uint8Array(128), scales: new Float32Array(4) };
    expect(() => gpu!.gemmW8A8(x, 0, 2, { ...w8(3, 3), format: 3 }, y, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => gpu!.gemmFp8(new Float32Array(128), 0, 2, fp8, new Float32Array(4), 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_UNSUPPORTED' }));
    expect(() => gpu!.gemmBf16Emulated(x, 0, 2, w8(3, 3), y, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    expect(() => gpu!.gemmW8A8Emulated(x, 0, 3, w8(3, 3), y, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' })); // x holds 2 rows
    expect(() => gpu!.gemmW8A8Emulated(x, 0, 2, w8(3, 3), y, 0, new Float32Array(2), 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
    const sq = new Float32Array(9);
    expect(() => gpu!.gemmF32Emulated(sq, 0, 3, new Float32Array(9), 0, 3, 3, sq, 0, null, 0)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' })); // y overlaps x
    expect(() => gpu!.gemmTcBench('int4' as never, 16, 16, 16, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' }));
    expect(() => gpu!.gemmTcBench('w8a8', 0, 16, 16, 1)).toThrow(expect.objectContaining({ code: 'ZOTUNE_OUT_OF_RANGE' }));
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
