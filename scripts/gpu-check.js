#!/usr/bin/env node
// GPU conformance check for a GPU host, in plain Node (no node_modules, no build tools): loads the
// CPU and CUDA addons by path, probes the GPU, and checks that the CUDA random fills equal the
// CPU's bit for bit on every distribution, unaligned starts and 64-bit element indices included.
// Section pool: the device memory pool (lines "pool <case>: ok | FAIL <why>").
//
//   node scripts/gpu-check.js [--cpu file.node] [--cuda file.node] [--json] [--emulate] [--only SECTION] [--sanitizer]
//
// --only runs one section: rng, gemv, perturb, nn, gemmTc, pool or llama (a quick rerun after a fix).
// --sanitizer: the run under compute-sanitizer, which skips the deliberately refused allocation (an
// API error to the sanitizer). A full run ends by checking that no device memory is live and
// releasing the pool's cache, so the sanitizer's leak check sees only memory the engine lost.
//
// --emulate runs the same cases against the kernels' per-thread code executed on the host: no GPU
// needed; it checks the thread -> element map and this script.
// Section checkNn: the transformer ops (cuda/kernels/nn.cu), fast and reference kernels, one line
// per case. Section checkLlama: the device-resident LLaMA vs the CPU model (forward, golden logits,
// ZO probe, ZO update, memory peak), one line per case.
//
// Defaults: build/Release/zotune.node or prebuilds/<platform>-<arch>/*.node; ZOTUNE_CUDA_BINARY,
// build-cuda/Release/cuda/zotune_cuda.node or prebuilds/<platform>-<arch>/cuda/zotune_cuda.node.
// Exit status: 0 all equal, 1 a mismatch, 2 an addon did not load, 3 no usable GPU (reason printed).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const target = `${process.platform}-${process.arch}`;

function firstExisting(list) {
  return list.find((f) => f && fs.existsSync(f));
}

function defaultCpu() {
  const pre = path.join(root, 'prebuilds', target);
  const shipped = fs.existsSync(pre) ? fs.readdirSync(pre).filter((f) => f.endsWith('.node')).map((f) => path.join(pre, f)) : [];
  return firstExisting([path.join(root, 'build', 'Release', 'zotune.node'), ...shipped]);
}

function defaultCuda() {
  return firstExisting([
    process.env.ZOTUNE_CUDA_BINARY,
    path.join(root, 'build-cuda', 'Release', 'cuda', 'zotune_cuda.node'),
    path.join(root, 'prebuilds', target, 'cuda', 'zotune_cuda.node'),
  ]);
}

const DISTS = ['uniform', 'normal', 'rademacher', 'bernoulli'];
const PURPOSE = { uniform: 2, normal: 0, rademacher: 1, bernoulli: 3 };

// [n, first]: empty, tiny, block edges, unaligned starts, 2^32 and 2^40 offsets, large fills.
const SHAPES = [
  [0, 0], [1, 0], [7, 3], [33, 31], [1000, 12345], [4097, 1023], [65536, 1e9 + 7],
  [100003, 2 ** 32 - 50], [300001, 2 ** 40 + 5], [1 << 22, 0], [(1 << 22) + 17, 123457],
];
const KEYS = [
  { seed: 0n, stream: 0 },
  { seed: 0x123456789abcdefn, stream: 7 },
  { seed: 0xffffffffffffffffn, stream: 0xffffffff },
];

// --- gemv: weight-streaming GEMV (cuda/kernels/gemv.h) --------------------------------------------
// The CUDA gemv takes the CPU gemm's argument list unchanged. Per case: the GPU fast and reference
// kernels equal their host emulations bit for bit (a difference is device arithmetic or a race,
// not the algorithm); every result is within the documented bound of the CPU's (gemm.h: per
// element (K + 64)·2^-23·Σ|a·w'| for each side, so twice that apart); the reference kernel (the
// CPU's GEMM order) equals the CPU bit for bit where the CPU runs its GEMM paths (M > 4). The fast
// kernel's blocked directions equal the CPU perturbation's z bit for bit.

const GEMV_FORMATS = { int8: 0, int4: 1, nf4: 2, 'fp8-e4m3': 3, 'fp8-e5m2': 4, bf16: 5, fp16: 6 };
const ZMAX = { 0: 4.8546, 1: 1 }; // largest |z|: Gaussian (philox.h box_muller), Rademacher

// Seeded xorshift: the same cases on every host.
function gemvRng(seed) {
  let x = seed >>> 0 || 1;
  const next = () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), (x >>> 0) / 4294967296);
  return { next, normal: () => Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next()) };
}

// A weight [n, k] of `fmt` ('f32' or a QFormat name) with random codes that decode to finite values.
function gemvWeight(fmt, n, k, group, asym, rng) {
  if (fmt === 'f32') return Float32Array.from({ length: n * k }, () => rng.normal() * 0.05);
  const code = GEMV_FORMATS[fmt];
  const four = fmt === 'int4' || fmt === 'nf4', two = fmt === 'bf16' || fmt === 'fp16';
  const rowBytes = four ? Math.ceil(k / 2) : two ? 2 * k : k;
  const data = new Uint8Array(n * rowBytes);
  if (two) {
    const h = new Uint16Array(data.buffer), f = new Float32Array(1), u = new Uint32Array(f.buffer);
    for (let i = 0; i < n * k; i++) {
      if (fmt === 'bf16') (f[0] = rng.normal() * 0.05), (h[i] = u[0] >>> 16);
      else h[i] = (rng.next() < 0.5 ? 0x8000 : 0) | ((8 + Math.floor(rng.next() * 9)) << 10) | Math.floor(rng.next() * 1024);
    }
  } else {
    for (let i = 0; i < data.length; i++) {
      let b = Math.floor(rng.next() * 256);
      if (fmt === 'int8' && b === 128) b = 129; // -128 is not on the int8 grid
      if (fmt === 'fp8-e4m3' && (b & 0x7f) === 0x7f) b ^= 1; // NaN
      if (fmt === 'fp8-e5m2' && ((b >> 2) & 31) === 31) b ^= 4; // Inf / NaN
      data[i] = b;
    }
    if (four && k % 2) for (let r = 0; r < n; r++) data[r * rowBytes + rowBytes - 1] &= 0x0f; // pad nibble
  }
  const desc = { format: code, rows: n, cols: k, group, data };
  if (!two) {
    const count = group === 0 ? 1 : n * Math.ceil(k / group);
    desc.scales = Float32Array.from({ length: count }, () => 0.005 + 0.02 * rng.next());
    if (asym) desc.zeros = Uint8Array.from({ length: count }, () => Math.floor(rng.next() * 16));
  }
  return desc;
}

// Per-element magnitude for the bound: |w|, or for int4 s·(u + zp) (the CPU GEMV sums x·u − zp·Σx).
function gemvMagnitudes(cpu, w, n, k) {
  if (w instanceof Float32Array) return w.map(Math.abs);
  const out = new Float32Array(n * k);
  cpu.dequantize(w, out, 0);
  if (w.format !== GEMV_FORMATS.int4) return out.map(Math.abs);
  const gpr = w.group === 0 ? 1 : Math.ceil(k / w.group), rowBytes = Math.ceil(k / 2);
  for (let r = 0; r < n; r++)
    for (let c = 0; c < k; c++) {
      const gi = w.group === 0 ? 0 : r * gpr + Math.floor(c / w.group);
      const u = (w.data[r * rowBytes + (c >> 1)] >> ((c & 1) * 4)) & 15, zp = w.zeros ? w.zeros[gi] : 8;
      out[r * k + c] = w.scales[gi] * (u + zp);
    }
  return out;
}

// [fmt, group, asym, M, N, K, perturb, bias/accumulate]: odd K (generic path), N = 1, 3, 4097, K
// splits (small N, long K), M = 1..17 (17: reference fallback), M > 4 (reference = CPU bits).
const GEMV_CASES = [
  ['f32', 0, false, 1, 4097, 256, null, false],
  ['f32', 0, false, 3, 5, 1001, { dist: 0, bits: 0, first: 7 }, true],
  ['int8', 'row', false, 1, 3, 8192, null, false],
  ['int8', 'row', false, 2, 64, 512, { dist: 0, bits: 0, first: 0 }, true],
  ['int4', 128, false, 1, 4097, 256, null, true],
  ['int4', 128, false, 4, 33, 4096, { dist: 0, bits: 0, first: 0 }, false],
  ['int4', 32, true, 1, 1, 4096, null, false],
  ['int4', 32, true, 16, 40, 320, { dist: 0, bits: 4, srPurpose: 4, first: 64 }, true],
  ['int4', 64, false, 5, 9, 130, null, false],
  ['int4', 'row', true, 3, 3, 127, { dist: 1, bits: 0, first: 5 }, false],
  ['int4', 64, true, 8, 6, 65536, null, false],
  ['nf4', 64, false, 2, 17, 200, { dist: 1, bits: 0, first: 1024 }, false],
  ['bf16', 0, false, 1, 3, 4096, null, true],
  ['bf16', 0, false, 6, 31, 264, { dist: 0, bits: 3, srPurpose: 5, first: 128 }, false],
  ['fp16', 0, false, 4, 7, 100, null, false],
  ['fp8-e4m3', 0, false, 1, 50, 448, { dist: 0, bits: 0, first: 3 }, false],
  ['fp8-e5m2', 'row', false, 9, 11, 96, null, true],
  ['int8', 'row', false, 17, 5, 70, { dist: 0, bits: 0, first: 0 }, true],
  ['int4', 128, false, 1, 64, 1024, { dist: 0, bits: 0, first: 0, sparse: 0.05 }, false],
  ['int8', 'row', false, 12, 20, 192, { dist: 1, bits: 0, first: 64, sparse: 0.3 }, true],
  ['f32', 0, false, 1, 4, 0, null, true],
  // aligned rows whose last chunk is partial (the staged kernel's tile covers full chunks only)
  ['f32', 0, false, 2, 70, 1000, null, false],
  ['bf16', 0, false, 4, 130, 1016, { dist: 0, bits: 0, first: 0 }, true],
];

function checkGemv(cpu, gpu, report, say, emulate) {
  const g = (report.gemv = { cases: 0, failures: 0 });
  const fail = (what) => {
    g.failures++;
    report.mismatches.push({ op: 'gemv', ...what });
  };
  // Directions: the fast kernel's 64-blocks vs the CPU perturbation of zeros (w' = z exactly).
  for (const [dist, bits, srPurpose] of [[0, 0, 4], [1, 0, 4], [0, 2, 4], [0, 8, 5]])
    for (const [n, first] of [[64, 0], [1000, 0], [700, 37], [256, 2 ** 32 + 64]]) {
      const want = new Float32Array(n), got = new Float32Array(n);
      cpu.perturb(want, 0, n, 1, 77n, 3, dist, bits, srPurpose, first);
      gpu.gemvDirectionsEmulated(got, 0, n, 77n, 3, dist, bits, srPurpose, first);
      g.cases++;
      const bad = got.findIndex((v, i) => !Object.is(v, want[i]));
      if (bad >= 0) {
        fail({ kind: 'directions', dist, bits, n, first, at: bad, cpu: want[bad], gpu: got[bad] });
        say(`gemv directions dist ${dist} bits ${bits} n ${n} first ${first}: FAIL at ${bad} (cpu ${want[bad]}, fast kernel ${got[bad]})`);
      }
    }
  say(`gemv directions: ${g.cases - g.failures}/${g.cases} blocked direction streams bit-identical to the CPU's`);

  const rng = gemvRng(12345);
  for (const [fmt, grp, asym, M, N, K, pert, extras] of GEMV_CASES) {
    const group = grp === 'row' ? K : grp;
    const w = gemvWeight(fmt, N, K, group, asym, rng);
    const a = Float32Array.from({ length: M * K }, () => rng.normal());
    const bias = extras ? Float32Array.from({ length: N }, () => rng.normal()) : null;
    const c0 = Float32Array.from({ length: M * N }, () => (extras ? rng.normal() : 0));
    let tail = [false];
    if (pert) {
      let idx = null;
      if (pert.sparse) {
        const list = [];
        for (let i = 0; i < N * K; i++) if (rng.next() < pert.sparse) list.push(i);
        idx = Uint32Array.from(list);
      }
      tail = [true, 99n, 7, 0.75, pert.dist, pert.bits, pert.srPurpose ?? 4, pert.first, idx, 0, idx ? idx.length : 0];
    }
    const run = (fn) => {
      const c = c0.slice();
      const r = fn(a, 0, M, K, w, 0, N, c, 0, bias, 0, extras, ...tail);
      return { c, ms: r && r.kernelMs };
    };
    const cpuOut = run(cpu.gemm).c;
    const emu = run(gpu.gemvEmulated).c, remu = run(gpu.gemvReferenceEmulated).c, semu = run(gpu.gemvStagedEmulated).c;
    const fast = emulate ? null : run(gpu.gemv), ref = emulate ? null : run(gpu.gemvReference);
    const staged = emulate ? null : run(gpu.gemvStaged);

    // Bound per output: twice (K + 66)·2^-23·(Σ|a|·(|w| + |alpha|·zmax) + |C0| + |bias|).
    const mag = gemvMagnitudes(cpu, w, N, K), zterm = pert ? 0.75 * ZMAX[pert.dist] : 0;
    const tol = new Float64Array(M * N);
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let s = Math.abs(c0[m * N + n]) + (bias ? Math.abs(bias[n]) : 0);
        for (let k = 0; k < K; k++) s += Math.abs(a[m * K + k]) * (mag[n * K + k] + zterm);
        tol[m * N + n] = 2 * (K + 66) * 2 ** -23 * s;
      }
    const within = (x) => {
      let worst = 0, at = -1;
      for (let i = 0; i < x.length; i++) {
        const r = Math.abs(x[i] - cpuOut[i]) / tol[i];
        if (!(r <= worst)) (worst = r), (at = i);
      }
      return { ok: !(worst > 1), worst, at };
    };
    const same = (x, y) => x.findIndex((v, i) => !Object.is(v, y[i]));
    const name = `gemv ${fmt}${fmt === 'f32' || fmt === 'bf16' || fmt === 'fp16' ? '' : `/${grp}${asym ? '/zp' : ''}`} M=${M} N=${N} K=${K}` +
      `${pert ? ` ${pert.sparse ? 'sparse' : 'dense'}-${pert.dist ? 'rademacher' : 'gauss'}${pert.bits ? pert.bits : ''}` : ''}${extras ? ' +bias+acc' : ''}`;
    const problems = [], notes = [];
    const bound = (label, x) => {
      const r = within(x);
      if (!r.ok) problems.push(`${label} vs cpu ${r.worst.toFixed(2)}x the bound at ${r.at} (${x[r.at]} vs ${cpuOut[r.at]})`);
      else notes.push(`${label} ${r.worst.toExponential(1)} of bound`);
    };
    const exact = (label, x, y, why) => {
      const i = same(x, y);
      if (i >= 0) problems.push(`${label} differ at ${i} (${x[i]} vs ${y[i]}): ${why}`);
      else notes.push(`${label} bit-identical`);
    };
    bound(emulate ? 'fast(emulated)' : 'fast', emulate ? emu : fast.c);
    bound(emulate ? 'reference(emulated)' : 'reference', emulate ? remu : ref.c);
    if (M > 4) exact('reference=cpu', emulate ? remu : ref.c, cpuOut, 'the reference kernel is the CPU GEMM order');
    exact('staged(emulated)=fast(emulated)', semu, emu, 'the staged kernel\'s tile or its row / split map differs from the fast kernel\'s lanes');
    if (!emulate) {
      exact('fast=emulation', fast.c, emu, 'device arithmetic or a race differs from the per-thread code');
      exact('staged=emulation', staged.c, emu, 'the staged kernel\'s shared-memory tile or its row / split map differs from the fast kernel\'s lanes');
      exact('reference=emulation', ref.c, remu, 'device arithmetic differs from the per-thread code');
    }
    g.cases++;
    if (problems.length) {
      fail({ kind: 'gemv', case: name, problems });
      say(`${name}: FAIL ${problems.join('; ')}`);
    } else {
      say(`${name}: ok (${notes.join(', ')}${emulate ? '' : `; fast ${fast.ms.toFixed(3)} ms, staged ${staged.ms.toFixed(3)} ms, reference ${ref.ms.toFixed(3)} ms`})`);
    }
  }
  say(`gemv${emulate ? ' (host emulation of the kernels)' : ''}: ${g.cases - g.failures}/${g.cases} cases pass`);
}

// ---- tensor-core GEMMs (cuda/kernels/gemm_tc.h) ------------------------------------------------
// W8A8 and W4A8 must equal the CPU's gemmInt8 bit for bit; W4A16 is held to the bf16 bound; f32 must equal the CPU gemm bit for bit where
// the CPU uses one fma chain per output (M > 4); fp8 / bf16 are held to the NMSE bounds of
// gemm_tc.h against float64 over the same quantized operands (made by the CPU quantizer), and the
// fast kernel to the reference kernel. One line per case; failures also go to report.mismatches.
const FMT = { int8: 0, int4: 1, e4m3: 3, e5m2: 4, bf16: 5 };
const NMSE_BOUND = { fp8: 1e-5, bf16: 1e-8, bf16VsCpu: 1e-5, f32VsCpu: 1e-10 };

function gemmTcRandom(n, seed) {  // roughly N(0, 1), from a fixed xorshift stream
  const v = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  const u = () => ((s ^= s << 13), (s ^= s >>> 17), (s ^= s << 5), (s >>> 0) / 4294967296);
  for (let i = 0; i < n; i++) v[i] = (u() + u() + u() + u() - 2) * 1.7;
  return v;
}

// A QTensor descriptor of `format` filled by the CPU quantizer from f32 [rows, cols] (int4 with
// zero-points when `asym`).
function gemmTcQuantize(cpu, x, rows, cols, format, group, asym = false) {
  const bytes = format === FMT.bf16 ? 2 * rows * cols : format === FMT.int4 ? rows * Math.ceil(cols / 2) : rows * cols;
  const d = { format, rows, cols, group, data: new Uint8Array(bytes) };
  if (format !== FMT.bf16) d.scales = new Float32Array(group === 0 ? 1 : rows * Math.ceil(cols / group));
  if (asym) d.zeros = new Uint8Array(d.scales.length);
  cpu.quantize(x, 0, d, format === FMT.bf16 ? 0 : 1, false, 0, 0);
  return d;
}

function gemmTcDequantize(cpu, d) {
  const out = new Float32Array(d.rows * d.cols);
  cpu.dequantize(d, out, 0);
  return out;
}

// float64 x̂ · ŵᵀ + bias.
function gemmTcF64(x, w, bias, M, N, K) {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = s + (bias ? bias[n] : 0);
    }
  return y;
}

function nmse(got, want) {
  let e = 0, r = 0;
  for (let i = 0; i < want.length; i++) (e += (got[i] - want[i]) ** 2), (r += want[i] ** 2);
  return r > 0 ? e / r : e;
}

// Elements of two typed arrays of one element size whose bits differ: their count and the first.
// (One name per helper: a second `function firstDiff` further down this file once replaced this
// one for every caller, and these checks could not fail.)
function firstDiff(a, b) {
  const U = a.BYTES_PER_ELEMENT === 2 ? Uint16Array : Uint32Array;
  const ua = new U(a.buffer, a.byteOffset, a.length), ub = new U(b.buffer, b.byteOffset, b.length);
  let bad = 0, at = -1;
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) (bad++, at < 0 && (at = i));
  return { bad, at };
}

function checkGemmTc(cpu, gpu, report, say, emulate) {
  const r = (report.gemmTc = { cases: 0, failures: 0, emulated: emulate });
  const impl = emulate ? 'Emulated' : '';
  const ms = (res) => (res && res.kernelMs !== undefined ? `, ${res.kernelMs.toFixed(3)} ms` : '');
  const fail = (line, extra) => {
    r.failures++;
    report.mismatches.push({ op: 'gemmTc', line, ...extra });
    say(`MISMATCH ${line}`);
  };
  const ok = (line) => say(`ok       ${line}`);
  // Localises a W8A8 / f32 mismatch of the fast kernel: host emulation right -> device-only bug.
  const where = (op, args, want) => {
    if (emulate) return 'host emulation';
    const e = new Float32Array(want.length);
    gpu[`${op}Emulated`](...args(e));
    const ref = new Float32Array(want.length);
    gpu[`${op}Reference`](...args(ref));
    const eOk = firstDiff(e, want).bad === 0, rOk = firstDiff(ref, want).bad === 0;
    return `host emulation ${eOk ? 'matches the CPU: device-side bug (pipeline, cp.async, intrinsics)' : 'differs too: tile / fragment map bug'}; reference kernel ${rOk ? 'matches' : 'differs'}`;
  };

  const Ms = [1, 3, 16, 17, 128, 257];
  const NKs = emulate ? [[40, 70], [136, 200]] : [[40, 70], [136, 200], [300, 1000], [520, 4100]];
  let seed = 1;
  for (const [N, K] of NKs)
    for (const M of Ms) {
      const x = gemmTcRandom(M * K, seed++), w32 = gemmTcRandom(N * K, seed++), bias = gemmTcRandom(N, seed++);
      const shape = `M ${M} N ${N} K ${K}`;

      // W8A8, int8 weights per row (and per tensor / groups of 64 on some shapes), and W4A8, int4
      // weights in groups of 32 (other groups, zero-points on some shapes): bit for bit.
      const intCases = [
        ...(M === 17 ? [[K, false], [0, false], [64, false]] : [[K, false]]).map(([g, z]) => ['W8A8', FMT.int8, g, z, g === K]),
        ...(M === 17 ? [[32, false], [64, true], [128, false], [K, true], [0, false]] : [[32, false]]).map(([g, z]) => ['W4A8', FMT.int4, g, z, g === 32]),
      ];
      for (const [op, format, group, asym, withReference] of intCases) {
        const wq = gemmTcQuantize(cpu, w32, N, K, format, group, asym);
        const want = new Float32Array(M * N), got = new Float32Array(M * N);
        cpu.gemmInt8(x, 0, M, wq, want, 0, bias, 0, null, 0, null, null, 0, 0);
        const args = (y) => [x, 0, M, wq, y, 0, bias, 0];
        const res = gpu[`gemm${op}${impl}`](...args(got));
        const d = firstDiff(got, want);
        const line = `${op.toLowerCase()} ${group === K ? 'per-row' : group === 0 ? 'per-tensor' : 'group ' + group}${asym ? ' zero-points' : ''} ${shape}`;
        r.cases++;
        if (d.bad) fail(`${line}: ${d.bad}/${M * N} outputs differ from the CPU, first (m ${Math.floor(d.at / N)}, n ${d.at % N}) cpu ${want[d.at]} gpu ${got[d.at]}; ${where(`gemm${op}`, args, want)}`, { kind: op.toLowerCase(), M, N, K, group, bad: d.bad });
        else ok(`${line}: bit-identical to the CPU${ms(res)}`);
        if (!emulate && withReference) {
          const ref = new Float32Array(M * N);
          gpu[`gemm${op}Reference`](...args(ref));
          const dr = firstDiff(ref, want);
          r.cases++;
          if (dr.bad) fail(`${line} reference kernel: ${dr.bad} outputs differ from the CPU`, { kind: `${op.toLowerCase()}-ref`, M, N, K });
          else ok(`${line} reference kernel: bit-identical to the CPU`);
        }
      }

      // FP8: activations per row (the CPU quantizer's codes), weights per row (e4m3) / per tensor (e5m2).
      for (const [fname, group] of [['e4m3', K], ['e5m2', 0]]) {
        const wq = gemmTcQuantize(cpu, w32, N, K, FMT[fname], group);
        const xq = gemmTcQuantize(cpu, x, M, K, FMT[fname], K);
        const want = gemmTcF64(gemmTcDequantize(cpu, xq), gemmTcDequantize(cpu, wq), bias, M, N, K);
        const got = new Float32Array(M * N);
        const args = (y) => [x, 0, M, wq, y, 0, bias, 0];
        const line = `fp8 ${fname} ${group ? 'per-row' : 'per-tensor'} ${shape}`;
        let res;
        try {
          res = gpu[`gemmFp8${impl}`](...args(got));
        } catch (e) {
          r.cases++;
          if (e.code === 'ZOTUNE_UNSUPPORTED') say(`skipped  ${line}: ${e.message}`);
          else fail(`${line}: threw ${e.code}: ${e.message}`, { kind: fname });
          continue;
        }
        const err = nmse(got, want);
        r.cases++;
        if (!(err <= NMSE_BOUND.fp8)) fail(`${line}: NMSE ${err.toExponential(2)} vs float64 > ${NMSE_BOUND.fp8}`, { kind: fname, M, N, K, nmse: err });
        else ok(`${line}: NMSE ${err.toExponential(2)} vs float64 (bound ${NMSE_BOUND.fp8})${ms(res)}`);
        if (!emulate) {
          const ref = new Float32Array(M * N);
          gpu.gemmFp8Reference(...args(ref));
          const e2 = nmse(got, ref);
          r.cases++;
          if (!(e2 <= NMSE_BOUND.fp8)) fail(`${line}: fast vs reference kernel NMSE ${e2.toExponential(2)} > ${NMSE_BOUND.fp8}`, { kind: fname + '-ref' });
          else ok(`${line}: fast vs reference kernel NMSE ${e2.toExponential(2)}`);
        }
      }

      // BF16 weights, and W4A16 (int4 weights dequantised in the tile, groups of 128; other groups
      // and zero-points on some shapes), bf16 activations: vs float64 over the bf16-rounded
      // activations and the (dequantised) weights, and vs the CPU gemm (f32 activations).
      const bf16Cases = [
        ['Bf16', FMT.bf16, 0, false, true],
        ...(M === 17 ? [[32, false], [64, true], [K, true], [0, false]] : [[128, false]]).map(([g, z]) => ['W4A16', FMT.int4, g, z, g === 128]),
      ];
      for (const [op, format, group, asym, withReference] of bf16Cases) {
        const wq = gemmTcQuantize(cpu, w32, N, K, format, group, asym);
        const xq = gemmTcQuantize(cpu, x, M, K, FMT.bf16, 0);
        const want = gemmTcF64(gemmTcDequantize(cpu, xq), gemmTcDequantize(cpu, wq), bias, M, N, K);
        const got = new Float32Array(M * N), cpuY = new Float32Array(M * N);
        const args = (y) => [x, 0, M, wq, y, 0, bias, 0];
        const res = gpu[`gemm${op}${impl}`](...args(got));
        cpu.gemm(x, 0, M, K, wq, 0, N, cpuY, 0, bias, 0, false, false);
        const e1 = nmse(got, want), e2 = nmse(got, cpuY);
        const line = op === 'Bf16' ? `bf16 ${shape}` : `w4a16 ${group === K ? 'per-row' : group === 0 ? 'per-tensor' : 'group ' + group}${asym ? ' zero-points' : ''} ${shape}`;
        r.cases++;
        if (!(e1 <= NMSE_BOUND.bf16) || !(e2 <= NMSE_BOUND.bf16VsCpu))
          fail(`${line}: NMSE ${e1.toExponential(2)} vs float64 (bound ${NMSE_BOUND.bf16}), ${e2.toExponential(2)} vs the CPU gemm (bound ${NMSE_BOUND.bf16VsCpu})`, { kind: op.toLowerCase(), M, N, K, group });
        else ok(`${line}: NMSE ${e1.toExponential(2)} vs float64, ${e2.toExponential(2)} vs the CPU gemm (f32 activations)${ms(res)}`);
        if (!emulate && withReference) {
          const ref = new Float32Array(M * N);
          gpu[`gemm${op}Reference`](...args(ref));
          const e3 = nmse(got, ref);
          r.cases++;
          if (!(e3 <= NMSE_BOUND.bf16)) fail(`${line}: fast vs reference kernel NMSE ${e3.toExponential(2)} > ${NMSE_BOUND.bf16}`, { kind: `${op.toLowerCase()}-ref` });
          else ok(`${line}: fast vs reference kernel NMSE ${e3.toExponential(2)}`);
        }
      }

      // F32 SIMT fallback: the CPU gemm's fma chain for M > 4 (bit for bit), NMSE for its GEMV (M <= 4).
      {
        const want = new Float32Array(M * N), got = new Float32Array(M * N);
        cpu.gemm(x, 0, M, K, w32, 0, N, want, 0, bias, 0, false, false);
        const args = (y) => [x, 0, M, w32, 0, N, K, y, 0, bias, 0];
        const res = gpu[`gemmF32${impl}`](...args(got));
        const line = `f32 ${shape}`;
        r.cases++;
        if (M > 4) {
          const d = firstDiff(got, want);
          if (d.bad) fail(`${line}: ${d.bad}/${M * N} outputs differ from the CPU gemm, first (m ${Math.floor(d.at / N)}, n ${d.at % N}) cpu ${want[d.at]} gpu ${got[d.at]}; ${where('gemmF32', args, want)}`, { kind: 'f32', M, N, K, bad: d.bad });
          else ok(`${line}: bit-identical to the CPU gemm${ms(res)}`);
        } else {
          const e = nmse(got, want);
          if (!(e <= NMSE_BOUND.f32VsCpu)) fail(`${line}: NMSE ${e.toExponential(2)} vs the CPU gemm (GEMV order) > ${NMSE_BOUND.f32VsCpu}`, { kind: 'f32', M, N, K });
          else ok(`${line}: NMSE ${e.toExponential(2)} vs the CPU gemm (its GEMV sums in another order)${ms(res)}`);
        }
      }
    }

  // W8A8 accumulation groups: int8 scales per 32 / 128 elements, and K past one 65536-element chunk.
  const groupCases = emulate ? [[17, 40, 300, 32], [5, 24, 130, 128]] : [[17, 40, 300, 32], [5, 24, 130, 128], [3, 9, 70000, 70000], [130, 70, 66000, 0]];
  for (const [M, N, K, group] of groupCases) {
    const x = gemmTcRandom(M * K, seed++), w32 = gemmTcRandom(N * K, seed++);
    const wq = gemmTcQuantize(cpu, w32, N, K, FMT.int8, group);
    const want = new Float32Array(M * N), got = new Float32Array(M * N);
    cpu.gemmInt8(x, 0, M, wq, want, 0, null, 0, null, 0, null, null, 0, 0);
    const args = (y) => [x, 0, M, wq, y, 0, null, 0];
    gpu[`gemmW8A8${impl}`](...args(got));
    const d = firstDiff(got, want);
    const line = `w8a8 ${group === K ? 'per-row' : group === 0 ? 'per-tensor' : 'group ' + group} M ${M} N ${N} K ${K} (accumulation groups)`;
    r.cases++;
    if (d.bad) fail(`${line}: ${d.bad}/${M * N} outputs differ from the CPU; ${where('gemmW8A8', args, want)}`, { kind: 'w8a8-groups', M, N, K, group });
    else ok(`${line}: bit-identical to the CPU`);
  }
  // W4A8 / W4A16 with an odd K (the last byte's high nibble unused) and K past one 65536-element chunk.
  const int4Cases = emulate ? [[9, 40, 131, 32, true], [130, 24, 77, 77, false]] : [[9, 40, 131, 32, true], [130, 24, 77, 77, false], [3, 9, 70001, 0, false], [33, 70, 66000, 66000, true]];
  for (const [M, N, K, group, asym] of int4Cases) {
    const x = gemmTcRandom(M * K, seed++), w32 = gemmTcRandom(N * K, seed++);
    const wq = gemmTcQuantize(cpu, w32, N, K, FMT.int4, group, asym);
    const want = new Float32Array(M * N), got = new Float32Array(M * N);
    cpu.gemmInt8(x, 0, M, wq, want, 0, null, 0, null, 0, null, null, 0, 0);
    const args = (y) => [x, 0, M, wq, y, 0, null, 0];
    gpu[`gemmW4A8${impl}`](...args(got));
    const d = firstDiff(got, want);
    const line = `w4a8 ${group === K ? 'per-row' : group === 0 ? 'per-tensor' : 'group ' + group}${asym ? ' zero-points' : ''} M ${M} N ${N} K ${K}`;
    r.cases++;
    if (d.bad) fail(`${line}: ${d.bad}/${M * N} outputs differ from the CPU; ${where('gemmW4A8', args, want)}`, { kind: 'w4a8-k', M, N, K, group });
    else ok(`${line}: bit-identical to the CPU`);
    const want16 = gemmTcF64(gemmTcDequantize(cpu, gemmTcQuantize(cpu, x, M, K, FMT.bf16, 0)), gemmTcDequantize(cpu, wq), null, M, N, K);
    gpu[`gemmW4A16${impl}`](...args(got));
    const e = nmse(got, want16);
    r.cases++;
    if (!(e <= NMSE_BOUND.bf16)) fail(`w4a16${line.slice(4)}: NMSE ${e.toExponential(2)} vs float64 > ${NMSE_BOUND.bf16}`, { kind: 'w4a16-k', M, N, K, group });
    else ok(`w4a16${line.slice(4)}: NMSE ${e.toExponential(2)} vs float64`);
  }

  // A non-finite activation is refused like the CPU does.
  {
    const x = gemmTcRandom(3 * 8, 99);
    x[13] = NaN;
    const wq = gemmTcQuantize(cpu, gemmTcRandom(4 * 8, 98), 4, 8, FMT.int8, 8);
    let code = 'no error';
    try {
      gpu[`gemmW8A8${impl}`](x, 0, 3, wq, new Float32Array(12), 0, null, 0);
    } catch (e) {
      code = e.code;
    }
    r.cases++;
    if (code !== 'ZOTUNE_NONFINITE') fail(`w8a8 NaN activation: expected ZOTUNE_NONFINITE, got ${code}`, { kind: 'w8a8-nonfinite' });
    else ok('w8a8 NaN activation: ZOTUNE_NONFINITE');
  }
  // W' rows (weight_rows_launch: the device model's tile operands): the CPU's dequantize, then its
  // perturb over the same element indices (one fma), bf16 codes by RTNE, zero padded; bit for bit.
  // Odd K (runs across rows), groups ending inside runs, first rows skipped, several tiles.
  {
    const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
    const bf16Code = (x) => ((f32[0] = x), ((u32[0] + 0x7fff + ((u32[0] >>> 16) & 1)) >>> 16) & 0xffff);
    const shapes = [ // format, group, zero-points, N, K, r0, rows
      [FMT.int8, 70, false, 9, 70, 2, 5], [FMT.int8, 32, false, 300, 102, 17, 250], [FMT.int4, 32, true, 33, 131, 0, 33],
      [FMT.int4, 128, false, 64, 4096, 3, 50], [FMT.bf16, 0, false, 5, 67, 1, 3], [FMT.e4m3, 200, false, 12, 200, 4, 8],
    ];
    const dirs = [[0.0, 0, 0], [0.05, 0, 0], [0.05, 0, 4], [-0.03, 1, 0]]; // alpha, dist, QuZO bits
    for (const [format, group, asym, N, K, r0, rows] of shapes) {
      const wq = gemmTcQuantize(cpu, gemmTcRandom(N * K, N + K), N, K, format, group, asym);
      const dq = gemmTcDequantize(cpu, wq);
      const ld = gpu.weightRowsLd(K);
      for (const [alpha, dist, bits] of dirs)
        for (const bf16 of [false, true]) {
          const want = dq.slice(r0 * K, (r0 + rows) * K);
          if (alpha !== 0) cpu.perturb(want, 0, want.length, alpha, 0x77n, 3, dist, bits, 4, r0 * K);
          let wantOut = want;
          if (bf16) {
            wantOut = new Uint16Array(rows * ld);
            for (let i = 0; i < rows; i++) for (let k = 0; k < K; k++) wantOut[i * ld + k] = bf16Code(want[i * K + k]);
          }
          const got = bf16 ? new Uint16Array(rows * ld) : new Float32Array(rows * K);
          got.fill(0xffff);
          const res = gpu[`weightRows${impl}`](wq, r0, rows, bf16, got, 0, alpha, 0x77n, 3, dist, bits, 4);
          const d = firstDiff(got, wantOut);
          const line = `weightRows fmt ${format} group ${group}${asym ? ' zp' : ''} ${N}x${K} rows ${r0}+${rows} alpha ${alpha} dist ${dist} bits ${bits} ${bf16 ? 'bf16' : 'f32'}`;
          r.cases++;
          if (d.bad) fail(`${line}: ${d.bad} half-words differ, first at ${d.at}`, { kind: 'weightRows' });
          else ok(`${line}: bit-identical to the CPU${ms(res)}`);
        }
    }
  }
  say(`gemmTc${emulate ? ' (host emulation of the kernels)' : ''}: ${r.cases - r.failures}/${r.cases} cases pass`);
}

// --- device memory pool ------------------------------------------------------------------------
// --emulate: the pool's cache logic over host memory (poolSelfTest): size classes, reuse, release,
// the OOM path and concurrent use. On a GPU, also device buffers: round trips, statistics, reuse
// by rngFill, ZOTUNE_OOM, use after free. One line per case; failures go to report.pool.failures.
function checkPool(cpu, gpu, report, say, emulate) {
  const pool = (report.pool = { cases: 0, failures: [] });
  const check = (name, fn) => {
    pool.cases++;
    let why;
    try {
      why = fn();
    } catch (err) {
      why = `threw ${err.code || ''} ${err.message}`;
    }
    if (why) pool.failures.push({ name, why });
    say(`pool ${name}: ${why ? 'FAIL ' + why : 'ok'}`);
  };
  const MiB = 1 << 20;
  const expectCode = (fn, code) => {
    try {
      fn();
    } catch (err) {
      return err.code === code ? '' : `expected ${code}, got ${err.code}: ${err.message}`;
    }
    return `expected ${code}, nothing thrown`;
  };

  check('host: size classes, reuse of a freed block, release and retry, OOM', () => {
    const r = gpu.poolSelfTest([
      { op: 'alloc', bytes: 1000 }, { op: 'free', step: 0 }, { op: 'alloc', bytes: 513 },
      { op: 'alloc', bytes: MiB + 1 }, { op: 'free', step: 3 }, { op: 'alloc', bytes: 3 * MiB }, { op: 'alloc', bytes: 2 * MiB },
    ], 5 * MiB);
    if (r[0].block !== 1024 || r[3].block !== 2 * MiB || r[5].block !== 4 * MiB) return `size classes ${r[0].block}, ${r[3].block}, ${r[5].block}`;
    if (r[2].address !== r[0].address || r[2].stats.driverAllocs !== 1) return 'a freed block of the same class was not reused';
    if (r[5].error || r[5].stats.cached !== 0 || r[5].stats.reserved !== 1024 + 4 * MiB) return `release and retry: ${JSON.stringify(r[5])}`;
    if (r[6].error?.code !== 'ZOTUNE_OOM') return `expected ZOTUNE_OOM when full, got ${JSON.stringify(r[6])}`;
    return '';
  });
  check('host: 8 threads x 20000 allocations, every block returned', () => {
    const [r] = gpu.poolSelfTest([{ op: 'hammer', threads: 8, iterations: 20000 }], 256 * MiB);
    const s = r.stats;
    if (r.error || s.totalLive !== 0 || s.cached !== s.reserved || Object.values(s.live).some((v) => v !== 0)) return JSON.stringify(r);
    return '';
  });
  if (emulate) return;

  const probe = gpu.probe();
  const total = probe.devices.find((d) => d.usable).totalMemory;
  check('round trips of 1 B, 1000 B and 5 MiB + 3 B, and an offset region', () => {
    for (const bytes of [1, 1000, 5 * MiB + 3]) {
      const src = new Uint8Array(bytes);
      cpu.rngWords(src.buffer, 0, bytes >> 2, 7, bytes, 0, 0);
      src[bytes - 1] = 0xa5;
      const h = gpu.deviceAlloc(bytes, 'activations');
      gpu.deviceUpload(h, src, 0);
      const back = new Uint8Array(bytes);
      gpu.deviceDownload(h, back, 0);
      const part = new Uint8Array(Math.min(bytes, 100));
      gpu.deviceDownload(h, part, bytes - part.length);
      gpu.deviceFree(h);
      if (!Buffer.from(back).equals(Buffer.from(src))) return `${bytes} B came back different`;
      if (!Buffer.from(part).equals(Buffer.from(src.subarray(bytes - part.length)))) return `${bytes} B: offset download differs`;
    }
    return '';
  });
  check('statistics: live and peak by category, cached after free, reuse without cudaMalloc', () => {
    gpu.deviceReleaseCache();
    gpu.deviceResetPeaks();
    const s0 = gpu.deviceMemory();
    const h = gpu.deviceAlloc(3 * MiB + 5, 'optimizer');
    const s1 = gpu.deviceMemory();
    gpu.deviceFree(h);
    gpu.deviceFree(h); // idempotent
    const s2 = gpu.deviceMemory();
    const h2 = gpu.deviceAlloc(3 * MiB, 'weights');
    const s3 = gpu.deviceMemory();
    gpu.deviceFree(h2);
    if (s1.live.optimizer - s0.live.optimizer !== 3 * MiB + 5 || s1.peak.optimizer < s1.live.optimizer) return `after alloc: ${JSON.stringify(s1)}`;
    if (s1.reserved - s0.reserved !== 4 * MiB || s1.driverAllocs !== s0.driverAllocs + 1) return `reserved/driverAllocs after alloc: ${JSON.stringify(s1)}`;
    if (s2.live.optimizer !== s0.live.optimizer || s2.peak.optimizer !== s1.peak.optimizer || s2.cached - s0.cached !== 4 * MiB) return `after free: ${JSON.stringify(s2)}`;
    if (s3.driverAllocs !== s1.driverAllocs || s3.cached !== s0.cached || s3.live.weights - s0.live.weights !== 3 * MiB) return `not reused: ${JSON.stringify(s3)}`;
    return '';
  });
  check('rngFill takes its buffer from the pool and gives it back', () => {
    const out = new Float32Array(MiB);
    gpu.rngFill(out, 0, MiB, 1, 1, 0, 0, 0);
    const s0 = gpu.deviceMemory();
    gpu.rngFill(out, 0, MiB, 1, 2, 0, 0, 0);
    const s1 = gpu.deviceMemory();
    if (s1.driverAllocs !== s0.driverAllocs || s1.live.workspace !== s0.live.workspace || s0.cached < 4 * MiB) return `${JSON.stringify(s0)} -> ${JSON.stringify(s1)}`;
    return '';
  });
  // compute-sanitizer reports a refused cudaMalloc as an API error: its run skips the deliberate OOMs
  if (sanitizer) say('pool OOM requests: skipped under compute-sanitizer (the plain run checks them)');
  else check('twice the device memory -> ZOTUNE_OOM naming the size, live and free memory; nothing leaks', () => {
    const s0 = gpu.deviceMemory();
    const bytes = 2 * total;
    try {
      gpu.deviceAlloc(bytes, 'weights');
      return 'no error';
    } catch (err) {
      if (err.code !== 'ZOTUNE_OOM' || !err.message.includes(String(bytes)) || !/live .* free/.test(err.message)) return `${err.code}: ${err.message}`;
    }
    const s1 = gpu.deviceMemory();
    if (s1.totalLive !== s0.totalLive || s1.cached !== 0) return `after OOM: ${JSON.stringify(s1)}`;
    return expectCode(() => gpu.deviceAlloc(2 ** 52), 'ZOTUNE_OOM');
  });
  check('use after free, bad handles and out-of-range regions -> coded errors', () => {
    const h = gpu.deviceAlloc(64);
    const why =
      expectCode(() => gpu.deviceUpload(h, new Uint8Array(65), 0), 'ZOTUNE_OUT_OF_RANGE') ||
      expectCode(() => gpu.deviceDownload(h, new Uint8Array(8), 57), 'ZOTUNE_OUT_OF_RANGE') ||
      expectCode(() => gpu.deviceUpload({}, new Uint8Array(1), 0), 'ZOTUNE_INVALID_ARGUMENT');
    gpu.deviceFree(h);
    return why || expectCode(() => gpu.deviceDownload(h, new Uint8Array(8), 0), 'ZOTUNE_DISPOSED');
  });
}

let sanitizer = false;  // --sanitizer: the run under compute-sanitizer (no deliberate API errors)

function main(argv) {
  let cpuPath, cudaPath, json = false, emulate = false, only = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--cpu') cpuPath = path.resolve(argv[++i]);
    else if (argv[i] === '--cuda') cudaPath = path.resolve(argv[++i]);
    else if (argv[i] === '--json') json = true;
    else if (argv[i] === '--emulate') emulate = true;
    else if (argv[i] === '--only') only = argv[++i];
    else if (argv[i] === '--sanitizer') sanitizer = true;
    else {
      console.error(`gpu-check: unknown argument '${argv[i]}'`);
      return 2;
    }
  }
  cpuPath = cpuPath || defaultCpu();
  cudaPath = cudaPath || defaultCuda();
  const report = { cpu: cpuPath, cuda: cudaPath, emulate, probe: null, cases: 0, mismatches: [], throughput: [] };
  const say = (s) => json || console.log(s);
  let cpu, gpu;
  try {
    if (!cpuPath) throw new Error('no CPU addon found (npm run build:cpu)');
    if (!cudaPath) throw new Error('no CUDA addon found (npm run build:cuda)');
    cpu = require(cpuPath);
    gpu = require(cudaPath);
  } catch (err) {
    console.error(`gpu-check: ${err.message}`);
    return 2;
  }
  say(`CPU addon  ${cpuPath} (kernel path ${cpu.cpuInfo().path})`);
  say(`CUDA addon ${cudaPath}`);
  const probe = gpu.probe();
  report.probe = probe;
  const ver = (v) => (v ? `${Math.floor(v / 1000)}.${(v % 1000) / 10}` : 'none');
  say(`CUDA runtime ${ver(probe.runtimeVersion)}, driver ${ver(probe.driverVersion)}, built for ${probe.archs}`);
  for (const d of probe.devices)
    say(`  #${d.index} ${d.name}, cc ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB, ${d.multiprocessors} SMs: ${d.usable ? 'usable' : d.error.name + ': ' + d.error.reason}`);
  if (!probe.usable && !emulate) {
    say(`no usable GPU: ${probe.error.name} (${probe.error.code}): ${probe.error.reason}`);
    if (json) console.log(JSON.stringify(report, null, 2));
    return 3;
  }

  const SECTIONS = { gemv: checkGemv, perturb: checkPerturb, nn: checkNn, gemmTc: checkGemmTc, pool: checkPool, llama: checkLlama };
  if (only && only !== 'rng' && !SECTIONS[only]) {
    console.error(`gpu-check: --only takes rng, ${Object.keys(SECTIONS).join(', ')}; got '${only}'`);
    return 2;
  }
  for (const dist of only && only !== 'rng' ? [] : DISTS)
    for (const key of KEYS)
      for (const [n, first] of SHAPES) {
        const a = new Float32Array(n), b = new Float32Array(n);
        const args = [0, n, DISTS.indexOf(dist), key.seed, key.stream, PURPOSE[dist], first, 0.3];
        cpu.rngFill(a, ...args);
        if (emulate) gpu.rngFillEmulated(b, ...args);
        else gpu.rngFill(b, ...args);
        report.cases++;
        const ua = new Uint32Array(a.buffer), ub = new Uint32Array(b.buffer);
        let bad = 0, at = -1;
        for (let j = 0; j < n; j++) if (ua[j] !== ub[j]) (bad++, at < 0 && (at = j));
        if (bad) {
          // The host emulation of the kernel separates a wrong thread map from device arithmetic.
          const e = new Float32Array(n);
          gpu.rngFillEmulated(e, ...args);
          const mapOk = Buffer.from(e.buffer).equals(Buffer.from(a.buffer));
          const m = { dist, seed: key.seed.toString(), stream: key.stream, n, first, mismatches: bad, firstAt: at, cpu: a[at], gpu: b[at], emulationMatchesCpu: mapOk };
          report.mismatches.push(m);
          say(`MISMATCH ${dist} seed ${m.seed} stream ${key.stream} n ${n} first ${first}: ${bad} values differ, first at ${at} (cpu ${a[at]}, gpu ${b[at]}); host emulation ${mapOk ? 'matches the CPU: device arithmetic differs' : 'differs too: thread map bug'}`);
        }
      }
  if (!only || only === 'rng') say(`conformance${emulate ? ' (host emulation of the kernels)' : ''}: ${report.cases - report.mismatches.length}/${report.cases} cases bit-identical`);
  for (const [name, check] of Object.entries(SECTIONS)) if (!only || only === name) check(cpu, gpu, report, say, emulate);
  const failed = report.mismatches.length || (report.pool ? report.pool.failures.length : 0);
  if (emulate || only) {
    if (json) console.log(JSON.stringify(report, (k, v) => (typeof v === 'bigint' ? v.toString() : v), 2));
    return failed ? 1 : 0;
  }

  // Kernel times (CUDA events) for a 256 MiB fill: not a benchmark, a sanity check of the scale.
  const n = 1 << 26;
  const out = new Float32Array(n);
  for (const dist of DISTS) {
    let best = Infinity;
    for (let r = 0; r < 5; r++) best = Math.min(best, gpu.rngFill(out, 0, n, DISTS.indexOf(dist), 42, 1, PURPOSE[dist], 0, 0.5).kernelMs);
    const t = { dist, n, kernelMs: best, gbPerS: (n * 4) / best / 1e6 };
    report.throughput.push(t);
    say(`${dist.padEnd(10)} ${n} floats: ${best.toFixed(3)} ms, ${t.gbPerS.toFixed(0)} GB/s written`);
  }
  // Every op gave its device memory back to the pool; then the pool gives its blocks back to CUDA, so
  // a leak check (compute-sanitizer --leak-check full) sees only memory the engine lost.
  const mem = gpu.deviceMemory();
  const lost = mem.totalLive !== 0 || Object.values(mem.live).some((v) => v !== 0);
  gpu.deviceReleaseCache();
  const left = gpu.deviceMemory();
  say(`device pool after the checks: ${mem.totalLive} B live, ${(mem.cached / 2 ** 20).toFixed(1)} MiB cached -> released, ${left.reserved} B reserved: ${lost || left.reserved ? 'LEAK' : 'ok'}`);
  if (lost || left.reserved) report.mismatches.push({ section: 'pool', case: 'memory after the checks', stats: mem });
  if (json) console.log(JSON.stringify(report, (k, v) => (typeof v === 'bigint' ? v.toString() : v), 2));
  return failed || lost || left.reserved ? 1 : 0;
}

// --- perturbation, quantization and quantized ZO updates (cuda/kernels/perturb.cu, quant.cu) ---------
// Every case runs the CPU addon op and the CUDA op on copies of the same inputs and compares all
// output bytes; on the GPU the reference kernel (one thread per element) runs too, and on a
// mismatch the host emulation tells a wrong thread map (emulation differs) from device arithmetic.
// Cases are counted in report.perturbCases; mismatches go to report.mismatches (section 'perturb').

// Deterministic test data in [-scale, scale) with exact zeros and ties sprinkled in.
function testData(n, seed, scale = 1) {
  const x = new Float32Array(n);
  let s = (seed * 2654435761 + 12345) >>> 0;
  for (let i = 0; i < n; i++) {
    s ^= s << 13, s >>>= 0, s ^= s >>> 17, s ^= s << 5, s >>>= 0;
    x[i] = i % 97 === 5 ? 0 : i % 89 === 7 ? 0.5 * scale : ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return x;
}

const QFMT = { int8: 0, int4: 1, nf4: 2, e4m3: 3, e5m2: 4, bf16: 5, fp16: 6 };
function qdesc(format, rows, cols, group, zeros) {
  const rowBytes = format === 1 || format === 2 ? Math.ceil(cols / 2) : format >= 5 ? 2 * cols : cols;
  const scaled = format < 5, nScales = group === 0 ? 1 : rows * Math.ceil(cols / group);
  return {
    format, rows, cols, group,
    data: new Uint8Array(rows * rowBytes),
    scales: scaled ? new Float32Array(nScales) : undefined,
    zeros: zeros ? new Uint8Array(nScales) : undefined,
  };
}
function qclone(q) {
  return { ...q, data: q.data.slice(), scales: q.scales && q.scales.slice(), zeros: q.zeros && q.zeros.slice() };
}
const bytesOf = (a) => (a ? Buffer.from(a.buffer, a.byteOffset, a.byteLength) : Buffer.alloc(0));
function firstByteDiff(a, b) {
  const x = bytesOf(a), y = bytesOf(b);
  if (x.length !== y.length) return 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}
// The outputs of an op as named byte arrays, or the error code it threw.
function outcome(f) {
  try {
    return { out: f() };
  } catch (e) {
    return { error: e.code || String(e.message) };
  }
}
function sameOutcome(a, b) {
  if (a.error || b.error) return a.error === b.error ? null : `error ${a.error || 'none'} vs ${b.error || 'none'}`;
  for (const k of Object.keys(a.out)) {
    const at = firstByteDiff(a.out[k], b.out[k]);
    if (at >= 0) return `${k} differs from byte ${at}`;
  }
  return null;
}

function checkPerturb(cpu, gpu, report, say, emulate) {
  report.perturbCases = 0;
  // run(impl) -> outputs; impls: 'cpu', 'gpu' (fast), 'ref' (reference kernel), 'emu' (host emulation).
  const check = (name, run, hasRef) => {
    report.perturbCases++;
    const want = outcome(() => run('cpu'));
    const got = outcome(() => run(emulate ? 'emu' : 'gpu'));
    let bad = sameOutcome(want, got);
    let refBad = null;
    if (!emulate && hasRef) refBad = sameOutcome(want, outcome(() => run('ref')));
    if (bad || refBad) {
      const emu = emulate ? null : sameOutcome(want, outcome(() => run('emu')));
      const m = { section: 'perturb', case: name, fast: bad, reference: refBad, emulationMatchesCpu: emulate ? false : !emu };
      report.mismatches.push(m);
      say(`MISMATCH ${name}: ${emulate ? 'emulation' : 'fast kernel'} ${bad || 'ok'}${hasRef && !emulate ? `, reference kernel ${refBad || 'ok'}` : ''}` +
        (emulate ? '' : `; host emulation ${emu ? 'differs too: thread map bug' : 'matches the CPU: device arithmetic differs'}`));
    } else {
      say(`ok ${name}${want.error ? ` (both throw ${want.error})` : ''}`);
    }
  };

  // Dense perturbation: [n, first] with unaligned starts, block edges and 2^32 / 2^40 offsets.
  const shapes = [[0, 0], [1, 0], [3, 5], [7, 3], [33, 31], [64, 0], [1000, 12345], [4097, 1023], [65539, 1e9 + 7],
    [100003, 2 ** 32 - 50], [30001, 2 ** 40 + 5], [(1 << 20) + 17, 123457]];
  const dirs = [[0, 0, 4], [1, 0, 4], [1, 3, 5]];
  for (let b = 2; b <= 8; b++) dirs.push([0, b, b % 2 ? 5 : 4]);
  const keys = [[0n, 0], [0xfedcba9876543210n, 0xffffffff]];
  for (const [dist, bits, srp] of dirs)
    for (const [seed, stream] of keys)
      for (const [n, first] of shapes) {
        if (n > 1e5 && (bits % 3 !== 0 || seed)) continue;  // the largest shapes for a few directions
        const w0 = testData(n, n + bits);
        const alpha = bits === 5 ? -3e-3 : 1e-3;
        const args = [0, n, alpha, seed, stream, dist, bits, srp, first];
        check(`perturb dist ${dist} bits ${bits} seed ${seed} n ${n} first ${first}`, (impl) => {
          const w = w0.slice();
          ({ cpu: () => cpu.perturb(w, ...args), gpu: () => gpu.perturb(w, ...args), ref: () => gpu.perturbReference(w, ...args), emu: () => gpu.perturbEmulated(w, ...args) })[impl]();
          return { w };
        }, true);
      }

  // Sparse perturbation: empty, one, sorted, shuffled, every element, and the errors.
  const N = 5003;
  const sorted = [], all = [];
  for (let i = 0; i < N; i++) (all.push(i), i % 7 === 3 && sorted.push(i));
  const shuffled = sorted.slice().reverse();
  const lists = { empty: [], one: [N - 1], sorted, shuffled, all, outOfRange: [1, N], repeated: [4, 9, 4] };
  for (const [dist, bits, srp] of [[0, 0, 4], [0, 3, 5], [1, 0, 4]])
    for (const first of [0, 77, 2 ** 40 + 3])
      for (const [lname, list] of Object.entries(lists)) {
        const idx = Uint32Array.from(list), w0 = testData(N, 3);
        const args = [0, N, idx, 0, idx.length, 2e-3, 99n, 5, dist, bits, srp, first];
        check(`perturbIndices dist ${dist} bits ${bits} first ${first} ${lname} (${idx.length})`, (impl) => {
          const w = w0.slice();
          ({ cpu: () => cpu.perturbIndices(w, ...args), gpu: () => gpu.perturbIndices(w, ...args), emu: () => gpu.perturbIndicesEmulated(w, ...args) })[impl]();
          return { w };
        }, false);
      }

  // Quantize (every format and group, RTNE and SR, scales from data / kept / one), dequantize and the
  // quantized ZO update (dense and index lists) on the same tensors.
  const qshapes = [[1, 1], [3, 7], [5, 33], [4, 64], [7, 129], [2, 300], [64, 256], [17, 1001]];
  const qop = (impl, name) => (impl === 'cpu' ? cpu[name] : impl === 'emu' ? gpu[name + 'Emulated'] : impl === 'ref' ? gpu[name + 'Reference'] : gpu[name]);
  for (const [fname, format] of Object.entries(QFMT))
    for (const [rows, cols] of qshapes) {
      const groups = format >= 5 ? [0] : [0, cols, 32, 64, 128];
      for (const group of groups)
        for (const zeros of format === 1 ? [false, true] : [false]) {
          const tag = `${fname} ${rows}x${cols} group ${group}${zeros ? ' asym' : ''}`;
          const x = testData(rows * cols, rows * 31 + cols, format === 4 ? 3000 : 2);
          const modes = [[1, false], [1, true], [0, true]];
          if (!zeros && group === 0 && format >= 3) modes.push([2, false], [2, true]);
          // A tensor quantized from x (scales from data) by the CPU: the input of Keep, dequantize and updates.
          const base = qdesc(format, rows, cols, group, zeros);
          cpu.quantize(x, 0, base, 1, false, 0n, 0);
          for (const [mode, sr] of modes) {
            check(`quantize ${tag} mode ${mode} ${sr ? 'SR' : 'RTNE'}`, (impl) => {
              const q = mode === 0 ? qclone(base) : qdesc(format, rows, cols, group, zeros);
              const fake = new Float32Array(rows * cols);
              qop(impl, 'quantize')(x, 0, q, mode, sr, 0x1234n, 3, fake, 0);
              return { data: q.data, scales: q.scales, zeros: q.zeros, fake };
            }, false);
          }
          check(`dequantize ${tag}`, (impl) => {
            const y = new Float32Array(rows * cols);
            qop(impl, 'dequantize')(qclone(base), y, 0);
            return { y };
          }, false);
          for (const [dist, bits, srp] of [[0, 0, 5], [1, 0, 5], [0, 4, 4]]) {
            const alpha = format >= 5 ? 0.03 : 0.05;
            check(`quantUpdate ${tag} dist ${dist} bits ${bits}`, (impl) => {
              const q = qclone(base);
              qop(impl, 'quantUpdate')(q, alpha, 0xabcdefn, 11, dist, bits, srp);
              return { data: q.data };
            }, true);
          }
          const n = rows * cols, odd = [], rev = [];
          for (let i = 0; i < n; i++) if (i % 3 !== 1) odd.push(i);  // neighbours sharing 4-bit bytes
          for (let i = n - 1; i >= 0; i -= 2) rev.push(i);
          for (const [lname, list] of Object.entries({ empty: [], mixed: odd, reversed: rev })) {
            const idx = Uint32Array.from(list);
            check(`quantUpdateIndices ${tag} ${lname} (${idx.length})`, (impl) => {
              const q = qclone(base);
              qop(impl, 'quantUpdateIndices')(q, idx, 0, idx.length, -0.04, 7n, 2, 0, 0, 5);
              return { data: q.data };
            }, false);
          }
        }
    }
  const bad = report.mismatches.filter((m) => m.section === 'perturb').length;
  say(`perturbation / quantization${emulate ? ' (host emulation of the kernels)' : ''}: ${report.perturbCases - bad}/${report.perturbCases} cases bit-identical to the CPU addon`);
}

// --- transformer ops (cuda/kernels/nn.cu) -------------------------------------------------------
// Every case runs the CPU op and, on the same inputs, the GPU fast kernel and (rmsNorm, attention,
// logProbs, argmax) the one-thread-per-row reference kernel, or with --emulate the fast kernels' per-lane
// code on the host. All must equal the CPU bit for bit (any NaN equals any NaN: x86 and CUDA make
// different NaN payloads), except the GPU log-probs: their last step is CUDA's double log, so they
// may differ from glibc's by an ulp (tolerance 1e-14 relative). On a mismatch the host emulation
// tells a lane-map bug (it differs too) from device arithmetic (it matches the CPU).

function nnRandom(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function nnValues(n, seed, scale = 1) {
  const r = nnRandom(seed), a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() + r() + r() - 1.5) * 2 * scale;
  return a;
}

// Index of the first difference (-1: none); exact bits, or within rel (doubles) when rel > 0.
function nnFirstDiff(a, b, rel) {
  const Bits = a instanceof Float64Array ? BigUint64Array : Uint32Array;
  const ua = new Bits(a.buffer, a.byteOffset, a.length), ub = new Bits(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) {
    if (ua[i] === ub[i] || (Number.isNaN(a[i]) && Number.isNaN(b[i]))) continue;
    if (rel > 0 && Math.abs(a[i] - b[i]) <= rel * Math.max(1, Math.abs(a[i]))) continue;
    return i;
  }
  return -1;
}

const NN_ROPE_PLAIN = [10000, 0, 1, 1, 4, 8192];
const NN_ROPE_LLAMA3 = [500000, 1, 8, 1, 4, 8192];

// Each case: op, a description, and run(f) calling one implementation of the op (the CPU addon's or
// a CUDA variant, same arguments) on fresh copies of the inputs and returning its output.
function nnCases() {
  const cases = [];
  for (const [rows, dim, eps] of [[1, 1, 1e-6], [1, 7, 1e-5], [3, 8, 1e-6], [5, 13, 0], [33, 100, 1e-6], [17, 257, 1e-5], [2, 4099, 1e-6], [8, 2053, 1e-6]]) {
    const x = nnValues(rows * dim, rows * 7919 + dim), w = nnValues(dim, dim + 1);
    if (rows > 2 && eps > 0) x.fill(0, 0, dim); // a zero row: its scale is 1/sqrt(eps)
    cases.push({ op: 'rmsNorm', what: `rows ${rows} dim ${dim} eps ${eps}`, run: (f) => {
      const out = new Float32Array(rows * dim);
      f(out, 0, x, 0, w, 0, rows, dim, eps);
      return out;
    } });
  }
  for (const [rows, heads, hd, first, step, rope] of [[1, 1, 2, 0, 1, NN_ROPE_PLAIN], [7, 3, 32, 5, 1, NN_ROPE_LLAMA3], [33, 4, 64, 1000, 3, NN_ROPE_PLAIN], [16, 2, 128, 8180, 1, NN_ROPE_LLAMA3], [5, 3, 6, 0, 7, NN_ROPE_PLAIN], [9, 8, 128, 100000, 13, NN_ROPE_LLAMA3], [12, 2, 34, 0, 1, NN_ROPE_PLAIN]]) {
    const x = nnValues(rows * heads * hd, rows + heads * 31 + hd);
    const pos = Int32Array.from({ length: rows }, (_, r) => first + ((r * 7) % rows) * step); // out of order
    cases.push({ op: 'rope', what: `rows ${rows} heads ${heads} headDim ${hd} positions ${first}+${step}k ${rope[1] ? 'llama3' : `theta ${rope[0]}`}`, run: (f) => {
      const y = x.slice();
      f(y, 0, rows, heads, hd, pos, 0, Float64Array.from(rope));
      return y;
    } });
  }
  // lens: query rows per sequence; starts: KV slot of each first query; hide(b, j): masked slot
  const ATTN = [
    { lens: [1], starts: [0], cap: 1, Hq: 1, Hkv: 1, hd: 32 },
    { lens: [5, 0, 33], starts: [0, 3, 2], cap: 40, Hq: 4, Hkv: 2, hd: 64, hide: (b, j) => (b * 13 + j * 7) % 5 === 0 },
    { lens: [17, 4], starts: [70, 100], cap: 110, Hq: 8, Hkv: 2, hd: 128, hide: (b, j) => j < 3 || (j * 11) % 9 === 4 },
    { lens: [33], starts: [0], cap: 33, Hq: 2, Hkv: 2, hd: 20 },
    { lens: [3, 9], starts: [1, 31], cap: 64, Hq: 6, Hkv: 3, hd: 7, hide: (b, j) => (j + b) % 3 === 1 },
    { lens: [2], starts: [40], cap: 42, Hq: 4, Hkv: 1, hd: 128, hide: (b, j) => j <= 40 }, // row 0 sees no key: zeros
    { lens: [24, 1], starts: [0, 300], cap: 301, Hq: 8, Hkv: 8, hd: 100, hide: (b, j) => b === 1 && j % 64 < 32 },
  ];
  for (const c of ATTN) {
    const B = c.lens.length, off = new Int32Array(B + 1);
    c.lens.forEach((n, b) => (off[b + 1] = off[b] + n));
    const nq = off[B], seed = c.cap * 131 + c.hd;
    const q = nnValues(nq * c.Hq * c.hd, seed), k = nnValues(B * c.Hkv * c.hd * c.cap, seed + 1), v = nnValues(B * c.Hkv * c.cap * c.hd, seed + 2);
    const mask = c.hide ? Uint8Array.from({ length: B * c.cap }, (_, i) => (c.hide(Math.floor(i / c.cap), i % c.cap) ? 0 : 1)) : null;
    cases.push({ op: 'attention', what: `seqs [${c.lens}] from [${c.starts}] cap ${c.cap} heads ${c.Hq}/${c.Hkv} headDim ${c.hd}${mask ? ' masked' : ''}`, run: (f) => {
      const out = new Float32Array(nq * c.Hq * c.hd);
      f(out, 0, q, 0, k, 0, v, 0, off, Int32Array.from(c.starts), mask, B, c.Hq, c.Hkv, c.hd, c.cap, 1 / Math.sqrt(c.hd));
      return out;
    } });
  }
  const SPECIAL = [-200, 200, 90, -90, NaN, Infinity, -Infinity, 0, -0, 1e-40, -88.5, 88.7];
  for (const n of [1, 7, 1000, 4099]) {
    const g = nnValues(n, n, 8), u = nnValues(n, n + 1);
    g.set(SPECIAL.slice(0, n));
    cases.push({ op: 'swiglu', what: `n ${n}`, run: (f) => {
      const out = new Float32Array(n);
      f(out, 0, g, 0, u, 0, n);
      return out;
    } });
  }
  for (const [vocab, dim, n] of [[1, 1, 1], [50, 13, 33], [300, 64, 7], [17, 100, 20]]) {
    const table = nnValues(vocab * dim, vocab + dim), ids = Int32Array.from({ length: n }, (_, i) => (i * 7919 + 3) % vocab);
    cases.push({ op: 'embedding', what: `vocab ${vocab} dim ${dim} ids ${n}`, run: (f) => {
      const out = new Float32Array(n * dim);
      f(out, 0, table, 0, vocab, dim, ids, n);
      return out;
    } });
  }
  for (const [rows, n, scale] of [[1, 1, 1], [3, 7, 1], [33, 1000, 4], [5, 4096, 30], [2, 32003, 8], [9, 129, 1]]) {
    const x = nnValues(rows * n, rows * 17 + n, scale);
    if (rows >= 3) {
      for (let i = 0; i < n; i++) x[i] = i % 3 ? 0 : -0; // row 0: ties of +0 and -0
      x[n + 1] = NaN; // row 1: NaN and -inf are never the max
      x[n + 2] = -Infinity;
    }
    const targets = Int32Array.from({ length: rows }, (_, r) => (r % 4 === 3 ? -1 : (r * 7919) % n));
    cases.push({ op: 'logProbs', what: `rows ${rows} n ${n} scale ${scale}`, run: (f) => {
      const out = new Float64Array(rows);
      f(x, 0, rows, n, targets, out);
      return out;
    } });
  }
  for (const [rows, n] of [[1, 1], [3, 7], [33, 1000], [4, 4099], [2, 32003]]) {
    const x = nnValues(rows * n, rows * 29 + n, 4);
    if (rows >= 3) {
      x[n - 1] = x[0] = 50; // row 0: a tie, the first wins
      for (let i = n; i < 2 * n; i++) x[i] = i % 5 ? -Infinity : NaN; // row 1: -inf and NaN only
      for (let i = 2 * n; i < 3 * n; i++) x[i] = i % 2 ? 0 : -0; // row 2: zeros of both signs
    }
    cases.push({ op: 'argmax', what: `rows ${rows} n ${n}`, run: (f) => {
      const out = new Int32Array(rows);
      f(x, 0, rows, n, out);
      return out;
    } });
  }
  return cases;
}

const NN_REFERENCE = new Set(['rmsNorm', 'attention', 'logProbs', 'argmax']);

function checkNn(cpu, gpu, report, say, emulate) {
  const nn = { cases: 0, runs: {}, mismatches: [], timings: [] };
  report.nn = nn;
  for (const c of nnCases()) {
    const want = c.run((...a) => cpu[c.op](...a));
    const variants = emulate ? ['Emulated'] : NN_REFERENCE.has(c.op) ? ['', 'Reference'] : [''];
    const status = [];
    for (const variant of variants) {
      const name = c.op + variant;
      const got = c.run((...a) => gpu[name](...a));
      const rel = c.op === 'logProbs' && variant !== 'Emulated' ? 1e-14 : 0;
      const at = nnFirstDiff(want, got, rel);
      nn.cases++;
      nn.runs[name] = (nn.runs[name] || 0) + 1;
      if (at < 0) {
        status.push(`${variant || 'fast'} ok`);
        continue;
      }
      const emu = variant === 'Emulated' ? got : c.run((...a) => gpu[c.op + 'Emulated'](...a));
      const m = { op: name, case: c.what, firstAt: at, cpu: want[at], gpu: got[at], emulationMatchesCpu: nnFirstDiff(want, emu, 0) < 0 };
      nn.mismatches.push(m);
      report.mismatches.push(m);
      status.push(`${variant || 'fast'} MISMATCH at ${at} (cpu ${want[at]}, gpu ${got[at]}; host emulation ${m.emulationMatchesCpu ? 'matches the CPU: device arithmetic differs' : 'differs too: lane map bug'})`);
    }
    say(`nn ${c.op} ${c.what}: ${status.join(', ')}`);
  }
  say(`nn conformance${emulate ? ' (host emulation)' : ''}: ${nn.cases - nn.mismatches.length}/${nn.cases} runs equal the CPU`);
  if (emulate) return;

  // Kernel times (CUDA events) at LLaMA-7B-like shapes: a sanity check of scale, not a benchmark.
  const T = 512, D = 4096, H = 32, KVH = 8, HD = 128, V = 32000;
  const x = nnValues(T * D, 1), w = nnValues(D, 2), y = new Float32Array(T * D);
  const q = nnValues(T * H * HD, 3), kv = nnValues(KVH * HD * T, 4), att = new Float32Array(T * H * HD);
  const logits = nnValues(16 * V, 5, 4), lp = new Float64Array(16), tg = Int32Array.from({ length: 16 }, (_, i) => i * 1000);
  const timed = [
    [`rmsNorm ${T}x${D}`, (v) => gpu['rmsNorm' + v](y, 0, x, 0, w, 0, T, D, 1e-5)],
    [`attention prefill ${T} tokens ${H}/${KVH} heads x ${HD}`, (v) => gpu['attention' + v](att, 0, q, 0, kv, 0, kv, 0, Int32Array.of(0, T), Int32Array.of(0), null, 1, H, KVH, HD, T, 1 / Math.sqrt(HD))],
    [`logProbs 16x${V}`, (v) => gpu['logProbs' + v](logits, 0, 16, V, tg, lp)],
  ];
  for (const [what, f] of timed) {
    const best = (v) => Math.min(...[0, 1, 2].map(() => f(v).kernelMs));
    const t = { what, fastMs: best(''), referenceMs: best('Reference') };
    nn.timings.push(t);
    say(`nn ${what}: fast ${t.fastMs.toFixed(3)} ms, reference ${t.referenceMs.toFixed(3)} ms`);
  }
}

// --- the device-resident LLaMA (cuda/kernels/llama.h) ---------------------------------------------
// micro-llama and tiny-llama (ZOTUNE_MODELS, .gpu/models or ../shared/models), fp32 and int8
// weights: the device forward vs the CPU addon's llamaForward (logits bit for bit: every GEMM here
// has M > 4 rows; log-prob sum within 1e-12 relative: CUDA's log), tiny-llama's fp32 logits vs
// golden.json (float64 reference) within 1e-4 of the largest |logit|; the ZO probe's two losses and
// projected gradient vs the CPU probe (same sign, relative difference printed); the ZO update
// bit for bit; the device memory peak. --emulate runs the same on the host (micro-llama only).
// One line per case: "llama <model> <scheme> <what>: ok | FAIL ...".

// The models folder; .gpu/models only once unpacked (scripts/gpu-pack.sh leaves model.safetensors.xz
// there, scripts/gpu-run.sh unpacks a copy on the GPU host).
function llamaModelsDir() {
  const packed = path.join(root, '.gpu', 'models', 'micro-llama', 'model.safetensors.xz');
  return firstExisting([process.env.ZOTUNE_MODELS, fs.existsSync(packed) ? null : path.join(root, '.gpu', 'models'), path.join(root, '..', 'shared', 'models')]);
}

// fp32 tensors of a safetensors file (F32 only: the shared models are fp32).
function readSafetensors(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (t.dtype !== 'F32') throw new Error(`${file}: ${name} is ${t.dtype}, expected F32`);
    const [b, e] = t.data_offsets;
    const bytes = buf.subarray(8 + n + b, 8 + n + e);
    out.set(name, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
  }
  return out;
}

// cfg vector, tensor ids and weight arguments in the native argument order (lib/model/llama.ts).
function llamaLoad(cpu, dir, scheme) {
  const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const t = readSafetensors(path.join(dir, 'model.safetensors'));
  const hd = c.head_dim || c.hidden_size / c.num_attention_heads;
  const cfg = Float64Array.from([c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, hd, c.intermediate_size,
    c.vocab_size, c.max_position_embeddings, c.rms_norm_eps, c.rope_theta, 0, 1, 1, 4, 8192]);
  if (c.rope_scaling) throw new Error(`${dir}: rope_scaling is not handled by gpu-check`);
  const names = ['model.embed_tokens.weight'];
  for (let l = 0; l < c.num_hidden_layers; l++)
    for (const n of ['input_layernorm', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'post_attention_layernorm', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'])
      names.push(`model.layers.${l}.${n}.weight`);
  names.push('model.norm.weight', c.tie_word_embeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  const ids = Uint32Array.from(names, (n, i) => (n === names[0] ? 0 : i));
  const quantized = (n) => (scheme === 'int8' || scheme === 'w8a8') && n !== names[0] && !n.endsWith('norm.weight');
  const rowsOf = (n) => t.get(n).length / (n.includes('down_proj') ? c.intermediate_size : n.includes('o_proj') ? c.num_attention_heads * hd : c.hidden_size);
  const weights = names.map((n) => {
    const x = t.get(n);
    if (!quantized(n)) return x;
    const rows = rowsOf(n), cols = x.length / rows;
    const q = { format: 0, rows, cols, group: cols, data: new Int8Array(rows * cols), scales: new Float32Array(rows), intAct: scheme === 'w8a8' };
    cpu.quantize(x, 0, q, 1, false, 0, 0);
    return q;
  });
  return { c, cfg, ids, names, weights, scheme, golden: fs.existsSync(path.join(dir, 'golden.json')) ? JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8')) : null };
}

function llamaBatch(m, take = Infinity) {  // take: the first tokens of each prompt only
  const prompts = (m.golden ? m.golden.prompts.map((p) => p.input_ids) : [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13]]).map((p) => p.slice(0, take));
  const N = prompts.reduce((s, p) => s + p.length, 0);
  const tokens = new Int32Array(N), offsets = new Int32Array(prompts.length + 1), positions = new Int32Array(N), targets = new Int32Array(N).fill(-1);
  let at = 0;
  prompts.forEach((p, b) => {
    offsets[b] = at;
    p.forEach((id, i) => {
      tokens[at] = id;
      positions[at] = i;
      if (i + 1 < p.length) targets[at] = p[i + 1];
      at++;
    });
  });
  offsets[prompts.length] = N;
  return { prompts, N, tokens, offsets, positions, targets, rows: Int32Array.from({ length: N }, (_, i) => i) };
}

const f32bits = (a) => new Uint32Array(a.buffer, a.byteOffset, a.length);
function llamaCompare(want, got) {  // {same, differ, maxRel}
  const a = f32bits(want), b = f32bits(got);
  let differ = 0, maxRel = 0, scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++)
    if (a[i] !== b[i]) (differ++, (maxRel = Math.max(maxRel, Math.abs(got[i] - want[i]) / (scale || 1))));
  return { same: differ === 0, differ, maxRel };
}

// kernels 'fast' (llama.h LlamaKernels::Fast) against the CPU within test/cuda-llama.test.ts's
// bounds: the fast gemv (a batch of <= 16 tokens) within 1e-5 of the largest |logit|, the bf16 tiles
// (the golden prompts) within 2e-2, and the projected gradient at eps 0.05 within 0.1 + 3 %. Not
// compared bit for bit with the emulation: the order of the MMA's internal sums is the hardware's.
// w8a8: forwards through the integer tiles equal the CPU (limit 0), probes (bf16 W' moves int8
// activation codes) within 0.5 + 5 %.
// m's weights must be the CPU's unchanged ones (call before any update of the CPU arrays).
function checkLlamaFast(cpu, gpu, m, tag, emulate, line) {
  const V = m.c.vocab_size, wide = llamaBatch(m), short = llamaBatch(m, 5), intAct = m.scheme === 'w8a8';
  const h = gpu.llamaDeviceCreate(m.cfg, m.ids, emulate, 'fast', ...m.weights);
  try {
    const cases = intAct ? [[short, 0, 'integer GEMV'], [wide, 0, 'integer tiles']] : [[short, 1e-5, 'fast gemv'], [wide, 2e-2, 'bf16 tiles']];
    for (const [b, limit, what] of cases) {
      const lw = new Float32Array(b.N * V), lf = new Float32Array(b.N * V);
      cpu.llamaForward(m.cfg, m.ids, b.tokens, b.offsets, b.positions, null, b.targets, new Float64Array(b.N), b.rows, lw, null, null, null, null, null, 0, null, null, 0, ...m.weights);
      const f = gpu.llamaDeviceForward(h, b.tokens, b.offsets, b.positions, null, b.targets, new Float64Array(b.N), b.rows, lf, null);
      let worst = 0, scale = 0;
      for (let i = 0; i < lw.length; i++) (scale = Math.max(scale, Math.abs(lw[i]))), (worst = Math.max(worst, Math.abs(lf[i] - lw[i])));
      line(worst / scale <= limit, `${tag} fast kernels, ${what} (${b.N} tokens, ${f.kernelMs.toFixed(2)} ms): logits max |diff| / max |logit| = ${(worst / scale).toExponential(2)} (limit ${limit})`);
    }
    const eps = 0.05, trainable = new Uint8Array(m.ids.length).fill(1), lp = () => new Float64Array(wide.N);
    const loss = (x) => -x.logprobSum / x.count, grad = (x) => (loss(x.plus) - loss(x.minus)) / (2 * eps);
    const cw = cpu.llamaZoProbe(m.cfg, m.ids, wide.tokens, wide.offsets, wide.positions, null, wide.targets, lp(), lp(), null, null, null, null, 2n, 0, 0, eps, 0, trainable, ...m.weights);
    const cf = gpu.llamaDeviceZoProbe(h, wide.tokens, wide.offsets, wide.positions, null, wide.targets, lp(), lp(), null, null, null, null, 2n, 0, 0, eps, trainable);
    const gw = grad(cw), gf = grad(cf), [abs, rel] = intAct ? [0.5, 0.05] : [0.1, 0.03];
    line(Math.abs(gf - gw) <= abs + rel * Math.abs(gw), `${tag} fast kernels, probe (eps ${eps}, ${cf.kernelMs.toFixed(2)} ms): projected gradient ${gf.toPrecision(6)} vs CPU ${gw.toPrecision(6)} (limit ${abs} + ${rel * 100} %)`);
  } finally {
    gpu.llamaDeviceFree(h);
  }
}

// Greedy continuation of one prompt through a device KV cache: the prompt, then one token per call.
function llamaGreedy(gpu, h, prompt, n) {
  const cache = gpu.llamaDeviceCacheCreate(h, 1, prompt.length + n);
  const past = new Int32Array(1), next = new Int32Array(1), out = [];
  try {
    for (let feed = prompt; out.length < n; feed = [next[0]]) {
      const positions = Int32Array.from(feed, (_, j) => past[0] + j);
      gpu.llamaDeviceForward(h, Int32Array.from(feed), Int32Array.of(0, feed.length), positions, null, null, null, null, null, null, cache, past, next, null, 0);
      past[0] += feed.length;
      out.push(next[0]);
    }
  } finally {
    gpu.llamaDeviceCacheFree(cache);
  }
  return out;
}

function checkLlama(cpu, gpu, report, say, emulate) {
  const r = (report.llama = { cases: 0, failures: 0, emulated: emulate });
  const dir = llamaModelsDir();
  const line = (ok, s, extra) => {
    r.cases++;
    if (!ok) (r.failures++, report.mismatches.push({ section: 'llama', line: s, ...extra }));
    say(`llama ${s}: ${ok ? 'ok' : 'FAIL'}`);
  };
  if (!dir || !gpu.llamaDeviceCreate) {
    say(`llama: skipped (${!dir ? 'no models folder: set ZOTUNE_MODELS' : 'the CUDA addon has no device LLaMA'})`);
    return;
  }
  for (const name of emulate ? ['micro-llama'] : ['micro-llama', 'tiny-llama'])
    for (const scheme of ['fp32', 'int8', 'w8a8']) {
      if (!fs.existsSync(path.join(dir, name))) {
        say(`llama ${name}: skipped (not in ${dir})`);
        continue;
      }
      const m = llamaLoad(cpu, path.join(dir, name), scheme), b = llamaBatch(m), V = m.c.vocab_size, tag = `${name} ${scheme}`;
      if (!emulate) gpu.deviceResetPeaks();
      const live0 = emulate ? 0 : gpu.deviceMemory().totalLive;
      let h;
      try {
        h = gpu.llamaDeviceCreate(m.cfg, m.ids, emulate, 'exact', ...m.weights);
      } catch (err) {
        line(false, `${tag} upload (${err.code}: ${err.message})`);
        continue;
      }
      try {
        // forward: logits of every row, log-probs of next tokens
        const lw = new Float32Array(b.N * V), lg = new Float32Array(b.N * V), pw = new Float64Array(b.N), pg = new Float64Array(b.N);
        const fw = cpu.llamaForward(m.cfg, m.ids, b.tokens, b.offsets, b.positions, null, b.targets, pw, b.rows, lw, null, null, null, null, null, 0, null, null, 0, ...m.weights);
        const fg = gpu.llamaDeviceForward(h, b.tokens, b.offsets, b.positions, null, b.targets, pg, b.rows, lg, null);
        const cmp = llamaCompare(lw, lg), dl = Math.abs(fg.logprobSum - fw.logprobSum) / Math.abs(fw.logprobSum);
        line(cmp.same && fg.count === fw.count && dl <= 1e-12,
          `${tag} forward vs CPU (${b.N} tokens, ${fg.kernelMs.toFixed(2)} ms): logits ${cmp.same ? 'bit-identical' : `${cmp.differ} differ, max rel ${cmp.maxRel.toExponential(2)}`}, log-prob sum rel diff ${dl.toExponential(2)}`);
        if (!emulate && name === 'micro-llama') {
          // The host emulation of the same kernels: device = emulation but != CPU is an orchestration or
          // numerics bug (reproducible here); device != emulation is device arithmetic, a race or a launch bug.
          const he = gpu.llamaDeviceCreate(m.cfg, m.ids, true, 'exact', ...m.weights), le = new Float32Array(b.N * V);
          try {
            gpu.llamaDeviceForward(he, b.tokens, b.offsets, b.positions, null, b.targets, new Float64Array(b.N), b.rows, le, null);
          } finally {
            gpu.llamaDeviceFree(he);
          }
          const ce = llamaCompare(le, lg);
          line(ce.same, `${tag} forward vs its host emulation: logits ${ce.same ? 'bit-identical' : `${ce.differ} differ, max rel ${ce.maxRel.toExponential(2)}`}`);
        }
        if (m.golden && scheme === 'fp32') {
          let worst = 0, scale = 0;
          m.golden.prompts.forEach((p, s) =>
            p.logits.positions.forEach((pos, i) => {
              const ref = p.logits.values[i], row = (b.offsets[s] + pos) * V;
              for (let v = 0; v < V; v++) (scale = Math.max(scale, Math.abs(ref[v]))), (worst = Math.max(worst, Math.abs(lg[row + v] - ref[v])));
            }),
          );
          line(worst / scale <= 1e-4, `${tag} logits vs golden.json (float64): max |diff| / max |logit| = ${(worst / scale).toExponential(2)} (limit 1e-4)`);
          const g = m.golden.prompts[0], want = g.greedy.new_ids, got = llamaGreedy(gpu, h, g.input_ids, want.length);
          const same = got.every((t, i) => t === want[i]);
          line(same, `${tag} greedy generation with the device KV cache vs golden.json: ${same ? `${want.length} tokens equal` : `differs at token ${got.findIndex((t, i) => t !== want[i])}`}`);
        }
        // probe: both losses and the projected gradient
        const eps = 1e-3, seed = 0x5eedn, trainable = new Uint8Array(m.ids.length).fill(1);
        const pp = [new Float64Array(b.N), new Float64Array(b.N), new Float64Array(b.N), new Float64Array(b.N)];
        const cw = cpu.llamaZoProbe(m.cfg, m.ids, b.tokens, b.offsets, b.positions, null, b.targets, pp[0], pp[1], null, null, null, null, seed, 0, 0, eps, 0, trainable, ...m.weights);
        const cg = gpu.llamaDeviceZoProbe(h, b.tokens, b.offsets, b.positions, null, b.targets, pp[2], pp[3], null, null, null, null, seed, 0, 0, eps, trainable);
        const loss = (x) => -x.logprobSum / x.count, grad = (x) => (loss(x.plus) - loss(x.minus)) / (2 * eps);
        const gw = grad(cw), gg = grad(cg), rel = Math.abs(gg - gw) / Math.abs(gw);
        const exact = loss(cw.plus) === loss(cg.plus) && loss(cw.minus) === loss(cg.minus);
        line(Math.sign(gw) === Math.sign(gg) && rel <= 1e-6,
          `${tag} probe vs CPU (${cg.kernelMs.toFixed(2)} ms): losses ${exact ? 'bit-identical' : 'differ'}, projected gradient ${gg.toPrecision(8)} vs CPU ${gw.toPrecision(8)} (rel diff ${rel.toExponential(2)})`);
        {
          // several queries in one call, the upper layers trainable (the lower ones run once for all)
          const seeds = BigUint64Array.from([11n, 12n, 13n]), Q = seeds.length, upper = new Uint8Array(m.ids.length);
          const L = m.cfg[1];
          for (let i = 1 + 9 * Math.floor(L / 2); i < m.ids.length; i++) upper[i] = 1;
          const qq = Array.from({ length: 4 }, () => new Float64Array(Q * b.N));
          const mw = cpu.llamaZoProbe(m.cfg, m.ids, b.tokens, b.offsets, b.positions, null, b.targets, qq[0], qq[1], null, null, null, null, seeds, 0, 0, eps, 0, upper, ...m.weights);
          const mg = gpu.llamaDeviceZoProbe(h, b.tokens, b.offsets, b.positions, null, b.targets, qq[2], qq[3], null, null, null, null, seeds, 0, 0, eps, upper);
          const worst = Math.max(...mw.map((w, q) => Math.abs(grad(mg.queries[q]) - grad(w)) / Math.abs(grad(w))));
          const signs = mw.every((w, q) => Math.sign(grad(w)) === Math.sign(grad(mg.queries[q])));
          line(signs && worst <= 1e-6, `${tag} ${Q} queries in one probe call, layers ${Math.floor(L / 2)}+ trainable, vs CPU (${mg.kernelMs.toFixed(2)} ms): projected gradients max rel diff ${worst.toExponential(2)}`);
        }
        if (scheme === 'w8a8') {
          // a QuZO probe of <= 16 rows: the CPU's integer path (gemm_int8.h step 2'), the reference kernel here
          const s5 = llamaBatch(m, 5), q = Array.from({ length: 4 }, () => new Float64Array(s5.N));
          const qw = cpu.llamaZoProbe(m.cfg, m.ids, s5.tokens, s5.offsets, s5.positions, null, s5.targets, q[0], q[1], null, null, null, null, seed, 0, 4, eps, 0, trainable, ...m.weights);
          const qg = gpu.llamaDeviceZoProbe(h, s5.tokens, s5.offsets, s5.positions, null, s5.targets, q[2], q[3], null, null, null, null, seed, 0, 4, eps, trainable);
          line(loss(qw.plus) === loss(qg.plus) && loss(qw.minus) === loss(qg.minus),
            `${tag} QuZO probe (4-bit z, ${s5.N} tokens: integer path) vs CPU (${qg.kernelMs.toFixed(2)} ms): losses ${loss(qw.plus) === loss(qg.plus) && loss(qw.minus) === loss(qg.minus) ? 'bit-identical' : `differ (${grad(qg)} vs ${grad(qw)})`}`);
        }
        checkLlamaFast(cpu, gpu, m, tag, emulate, line);
        // update: the CPU's zoUpdate on its arrays, the device's on its copy, then compared byte for byte
        const upd = [...new Set(m.ids)].map((id) => m.ids.indexOf(id));
        const tensors = upd.map((i) => m.weights[i]);
        const counts = Float64Array.from(tensors, (w) => (w.format === undefined ? w.length : w.rows * w.cols));
        const uids = Uint32Array.from(upd, (i) => m.ids[i]);
        const decays = Uint8Array.from(upd, (i) => (m.names[i].endsWith('norm.weight') ? 0 : 1));  // weight decay 0.05, norms not decayed
        cpu.zoUpdate(0x77n, 0, 4, 1e-3, 0.05, uids, decays, counts, ...tensors);
        const ug = gpu.llamaDeviceZoUpdate(h, 0x77n, 0, 4, 1e-3, 0.05, uids, decays);
        let bad = 0;
        upd.forEach((i) => {
          const w = m.weights[i];
          const dst = w.format === undefined ? new Float32Array(w.length) : { ...w, data: new Int8Array(w.data.length), scales: new Float32Array(w.scales.length) };
          gpu.llamaDeviceRead(h, i, dst);
          const same = w.format === undefined ? bytesOf(dst).equals(bytesOf(w)) : bytesOf(dst.data).equals(bytesOf(w.data)) && bytesOf(dst.scales).equals(bytesOf(w.scales));
          if (!same) bad++;
        });
        line(bad === 0, `${tag} update vs CPU (QuZO 4-bit z, weight decay 0.05, ${ug.kernelMs.toFixed(2)} ms): ${bad ? `${bad}/${upd.length} tensors differ` : `${upd.length} tensors bit-identical`}`);
        if (!emulate) {
          const mem = gpu.deviceMemory(), wb = m.weights.reduce((s, w, i) => s + (upd.includes(i) ? (w.format === undefined ? w.byteLength : w.data.byteLength + w.scales.byteLength) : 0), 0);
          say(`llama ${tag} device memory: weights ${(mem.live.weights / 2 ** 20).toFixed(2)} MiB live (${(wb / 2 ** 20).toFixed(2)} MiB of tensors), peak activations ${(mem.peak.activations / 2 ** 20).toFixed(2)} MiB, total peak ${((mem.totalPeak - live0) / 2 ** 20).toFixed(2)} MiB`);
        }
      } catch (err) {
        line(false, `${tag} threw ${err.code}: ${err.message}`);
      } finally {
        gpu.llamaDeviceFree(h);
      }
    }
  say(`llama: ${r.cases - r.failures}/${r.cases} cases ok${emulate ? ' (host emulation of the kernels)' : ''}`);
}

process.exitCode = main(process.argv.slice(2));
