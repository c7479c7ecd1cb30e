// The ceiling ops benchmarks divide work by time: here only that each op does all of its work
// (checksums), validates its arguments and agrees across paths. No timing.
import { ceilings, cpuInfo, setCpuPath, setThreads, Tensor } from '../lib';
import { CPU_PATHS, prng } from './helpers/reference';

const hasAvx2 = cpuInfo().avx2;
const { floor } = Math; // Math.* lookups are slow inside jest's sandbox

afterAll(() => {
  setCpuPath('auto');
  setThreads(cpuInfo().threads);
});

describe.each(CPU_PATHS)('memory ceilings on the %s path', (path) => {
  const run = path === 'scalar' || hasAvx2 ? test : test.skip;
  beforeEach(() => {
    if (path === 'scalar' || hasAvx2) setCpuPath(path);
  });

  run.each([0, 1, 31, 33, 65_536, 65_536 * 3 + 17])('readSum of %i small integers is exact', (n) => {
    const t = Tensor.zeros([n]), d = t.data(), r = prng(n);
    let want = 0;
    for (let i = 0; i < n; i++) {
      d[i] = floor(r() * 16) - 8;
      want += d[i];
    }
    expect(ceilings.readSum(t)).toBe(want);
    t.dispose();
  });

  run.each([5, 40, 200_003])('update adds delta to each of %i elements', (n) => {
    const t = Tensor.zeros([n]), d = t.data();
    for (let i = 0; i < n; i++) d[i] = i % 1000;
    ceilings.update(t, 0.5);
    ceilings.update(t, 2);
    for (let i = 0; i < n; i++) if (d[i] !== (i % 1000) + 2.5) throw new Error(`element ${i}: ${d[i]}`);
    t.dispose();
  });

  run('compute ceilings return their exact checksums on AVX2, ZOTUNE_UNSUPPORTED on scalar', () => {
    if (path === 'scalar') {
      expect(() => ceilings.fmaPeak(2, 10)).toThrow(expect.objectContaining({ code: 'ZOTUNE_UNSUPPORTED' }));
      expect(() => ceilings.int8Peak(2, 10)).toThrow(expect.objectContaining({ code: 'ZOTUNE_UNSUPPORTED' }));
      return;
    }
    expect(ceilings.fmaPeak(7, 1000)).toBe(7 * 96 * 1000);
    expect(ceilings.fmaPeak(1, 0)).toBe(0);
    expect(ceilings.int8Peak(5, 1234)).toBe(5 * 192 * 1234);
  });
});

describe('the AVX-512 ceilings', () => {
  afterAll(() => setCpuPath('auto'));
  const { avx512vnni } = cpuInfo();
  (avx512vnni ? test : test.skip)(`return their exact checksums on the avx512 path, ZOTUNE_UNSUPPORTED on the others${avx512vnni ? '' : ' (skipped: no AVX-512 VNNI on this CPU)'}`, () => {
    setCpuPath('avx512');
    expect(ceilings.vnniPeak(5, 1234)).toBe(5 * 768 * 1234);
    expect(ceilings.vnniPeak(1, 0)).toBe(0);
    expect(ceilings.fma512Peak(7, 1000)).toBe(7 * 192 * 1000);
    expect(() => ceilings.vnniPeak(1, 2 ** 21)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' })); // the int32 sum would overflow
    expect(() => ceilings.fma512Peak(1, 2 ** 20)).toThrow(expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT' })); // the float sums would round
    for (const p of ['avx2', 'scalar'] as const) {
      setCpuPath(p);
      expect(() => ceilings.vnniPeak(1, 10)).toThrow(expect.objectContaining({ code: 'ZOTUNE_UNSUPPORTED' }));
      expect(() => ceilings.fma512Peak(1, 10)).toThrow(expect.objectContaining({ code: 'ZOTUNE_UNSUPPORTED' }));
    }
  });
  (avx512vnni ? test.skip : test)(`setCpuPath("avx512") is refused with a coded error on a CPU without AVX-512 VNNI${avx512vnni ? ' (skipped: this CPU has AVX-512 VNNI)' : ''}`, () => {
    expect(() => setCpuPath('avx512')).toThrow(expect.objectContaining({ code: 'ZOTUNE_UNSUPPORTED' }));
  });
});

describe('memory ceilings agree across paths and thread counts', () => {
  (hasAvx2 ? test : test.skip)('readSum gives the same bits for arbitrary floats (skipped: no AVX2 on this CPU)', () => {
    const n = 300_001, t = Tensor.zeros([n]), d = t.data(), r = prng(5);
    for (let i = 0; i < n; i++) d[i] = (r() - 0.5) * 1e3;
    const sums: number[] = [];
    for (const path of CPU_PATHS)
      for (const threads of [1, 2, 3]) {
        setCpuPath(path);
        setThreads(threads);
        sums.push(ceilings.readSum(t));
      }
    expect(new Set(sums).size).toBe(1);
    t.dispose();
  });
});

describe('ceiling ops validate their arguments', () => {
  test('tasks and iterations', () => {
    const code = { code: 'ZOTUNE_INVALID_ARGUMENT' };
    expect(() => ceilings.fmaPeak(0, 10)).toThrow(expect.objectContaining(code));
    expect(() => ceilings.fmaPeak(5000, 10)).toThrow(expect.objectContaining(code));
    expect(() => ceilings.fmaPeak(1, 2 ** 24)).toThrow(expect.objectContaining(code)); // checksum would round
    expect(() => ceilings.int8Peak(1, 2 ** 29)).toThrow(expect.objectContaining(code)); // int32 lanes would overflow
    expect(() => ceilings.int8Peak(1.5, 10)).toThrow(expect.objectContaining(code));
  });
  test('buffers', () => {
    expect(() => ceilings.readSum(Tensor.zeros([4], 'i32'))).toThrow(expect.objectContaining({ code: 'ZOTUNE_DTYPE' }));
    const t = Tensor.zeros([4]);
    expect(() => ceilings.update(t, NaN)).toThrow(expect.objectContaining({ code: 'ZOTUNE_NONFINITE' }));
    t.dispose();
    expect(() => ceilings.readSum(t)).toThrow(expect.objectContaining({ code: 'ZOTUNE_DISPOSED' }));
  });
});
