/**
 * ISA audit of the built CPU addon: AVX2 code lives only in zt::avx2 and zt::avx512, AVX-512 code
 * only in zt::avx512 (both reached through the runtime dispatch), so a narrower path never executes
 * an instruction an older CPU lacks; and the scalar path really runs under ZOTUNE_FORCE_SCALAR=1.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cpuInfo, rng, setCpuPath, Tensor } from '../lib';
import { loadCuda } from '../lib/native/load';
import { functionsUsingVex, inAvx2Namespace, inAvx512Namespace } from './helpers/isa';
import { root, runNode } from './helpers/spawn';

const binary = path.join(root, 'build', 'Release', 'zotune.node'); // the unstripped source build
const archive = path.join(root, 'build', 'Release', 'zotune_avx2.a'); // the avx2 group's objects
const archive512 = path.join(root, 'build', 'Release', 'zotune_avx512.a'); // the avx512 group's objects

const disassemble = (file: string) => execFileSync('objdump', ['-d', '--demangle', '--no-show-raw-insn', file], { encoding: 'utf8', maxBuffer: 1 << 28 });

/** nm of the AVX2 (or AVX-512) objects: [type letter, demangled name]. */
function avx2Symbols(file = archive): [string, string][] {
  const out = execFileSync('nm', ['-C', '--defined-only', file], { encoding: 'utf8' });
  return out.split('\n').flatMap((l) => {
    const m = /^[0-9a-f]+ (\S) (.+)$/.exec(l);
    return m ? [[m[1], m[2]] as [string, string]] : [];
  });
}

describe('ISA audit', () => {
  test('the audit flags AVX code outside zt::avx2 (synthetic listing)', () => {
    const listing = [
      '0000000000001000 <zt::rng_fill(float*, unsigned long)>:',
      '    1000:\tvmovups %ymm0,(%rdi)',
      '0000000000002000 <zt::avx2::fill(float*)>:',
      '    2000:\tvfmadd231ps %ymm1,%ymm2,%ymm0',
      '0000000000003000 <scalar_helper>:',
      '    3000:\tvaddss %xmm1,%xmm0,%xmm0',
      '0000000000004000 <plain>:',
      '    4000:\taddss  %xmm1,%xmm0',
      '0000000000005000 <zt::avx2::wide(float*)>:',
      '    5000:\tvmovups %zmm0,(%rdi)',
    ].join('\n');
    const f = functionsUsingVex(listing);
    expect(f.map((x) => x.name)).toEqual(['zt::rng_fill(float*, unsigned long)', 'zt::avx2::fill(float*)', 'scalar_helper', 'zt::avx2::wide(float*)']);
    expect(f.filter((x) => x.ymm && !inAvx2Namespace(x.name)).map((x) => x.name)).toEqual(['zt::rng_fill(float*, unsigned long)']);
    expect(f.filter((x) => x.zmm).map((x) => x.name)).toEqual(['zt::avx2::wide(float*)']);
    expect(inAvx2Namespace('void zt::avx2::k<float>(float*)')).toBe(true);
    expect(inAvx2Namespace('zt::notavx2::k()')).toBe(false);
  });

  test('YMM code of the CPU addon is in zt::avx2 or zt::avx512, ZMM code only in zt::avx512, and there is such code', () => {
    expect(fs.existsSync(binary)).toBe(true);
    const funcs = functionsUsingVex(disassemble(binary));
    const simd = (n: string) => inAvx2Namespace(n) || inAvx512Namespace(n);
    expect(funcs.filter((f) => f.ymm && !simd(f.name)).map((f) => f.name)).toEqual([]);
    expect(funcs.filter((f) => f.zmm && !inAvx512Namespace(f.name)).map((f) => f.name)).toEqual([]);
    // not vacuous: the dispatched AVX2 and AVX-512 kernels are there and do use their registers
    expect(funcs.some((f) => inAvx2Namespace(f.name) && f.ymm > 0)).toBe(true);
    expect(funcs.some((f) => inAvx512Namespace(f.name) && f.zmm > 0)).toBe(true);
  });

  test('other VEX code comes only from internal-linkage helpers of the AVX2 and AVX-512 objects', () => {
    const unclone = (n: string) => n.replace(/ \[clone .*\]$/, '');
    const local = new Set([...avx2Symbols(), ...avx2Symbols(archive512)].filter(([t]) => t === 't').map(([, n]) => unclone(n)));
    const funcs = functionsUsingVex(disassemble(binary));
    const leaked = funcs.filter((f) => f.vex && !inAvx2Namespace(f.name) && !inAvx512Namespace(f.name) && !local.has(unclone(f.name)));
    expect(leaked.map((f) => f.name)).toEqual([]);
  });

  test.each([
    ['AVX2', archive, inAvx2Namespace],
    ['AVX-512', archive512, inAvx512Namespace],
  ] as const)('%s objects export nothing outside their namespace and hold no globals or static constructors', (_, file, inNamespace) => {
    // A weak (inline, template) symbol compiled with -mavx2 may be the copy the linker keeps for
    // scalar callers; globals bring static initialisers that run on every CPU.
    const syms = avx2Symbols(file);
    expect(syms.length).toBeGreaterThan(0);
    expect(syms.filter(([t, n]) => /[TWVuiw]/.test(t) && !inNamespace(n)).map(([t, n]) => `${t} ${n}`)).toEqual([]);
    expect(syms.filter(([t]) => /[DdBbCG]/.test(t)).map(([t, n]) => `${t} ${n}`)).toEqual([]);
    const sections = execFileSync('objdump', ['-h', file], { encoding: 'utf8' });
    expect(sections).not.toMatch(/\.init_array|\.ctors/);
  });

  const cuda = loadCuda();
  (cuda.addon ? test : test.skip)(`the CUDA addon's host code has no AVX at all${cuda.addon ? '' : ' (skipped: CUDA addon not built)'}`, () => {
    expect(functionsUsingVex(disassemble(cuda.binary!.path)).map((f) => f.name)).toEqual([]);
  });
});

describe('scalar path', () => {
  afterAll(() => setCpuPath('auto'));

  test('ZOTUNE_FORCE_SCALAR=1 runs the scalar kernels in a fresh process, with the same values', () => {
    const n = 5000, first = 12345;
    const script = `
      const addon = require(require('node-gyp-build').resolve(${JSON.stringify(root)}));
      const before = addon.cpuInfo().path;
      addon.setCpuPath('auto'); // 'auto' honours the variable too
      const out = [];
      for (const dist of [0, 1, 2, 3]) {
        const a = new Float32Array(${n});
        addon.rngFill(a, 0, ${n}, dist, 99, 3, dist, ${first}, 0.25);
        out.push(Buffer.from(a.buffer).toString('base64'));
      }
      console.log(JSON.stringify({ before, after: addon.cpuInfo().path, out }));`;
    const r = runNode(script, { env: { ZOTUNE_FORCE_SCALAR: '1' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const child = JSON.parse(r.stdout) as { before: string; after: string; out: string[] };
    expect([child.before, child.after]).toEqual(['scalar', 'scalar']);

    if (cpuInfo().avx2) setCpuPath('avx2'); // compare against the fast path where there is one
    const dists = ['uniform', 'normal', 'rademacher', 'bernoulli'] as const;
    dists.forEach((dist, i) => {
      const t = Tensor.zeros([n]);
      rng.fillSync(t, dist, { seed: 99, stream: 3, purpose: i }, { first, p: 0.25 });
      expect([dist, Buffer.from((t.data() as Float32Array).buffer, 0, n * 4).toString('base64')]).toEqual([dist, child.out[i]]);
      t.dispose();
    });
  });
});
