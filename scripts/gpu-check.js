#!/usr/bin/env node
// GPU conformance check for a GPU host, in plain Node (no node_modules, no build tools): loads the
// CPU and CUDA addons by path, probes the GPU, and checks that the CUDA random fills equal the
// CPU's bit for bit on every distribution, unaligned starts and 64-bit element indices included.
// Section pool: the device memory pool (lines "pool <case>: ok | FAIL <why>").
//
//   node scripts/gpu-check.js [--cpu file.node] [--cuda file.node] [--json] [--emulate]
//
// --emulate runs the same cases against the kernels' per-thread code executed on the host: no GPU
// needed; it checks the thread -> element map and this script.
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
  check('twice the device memory -> ZOTUNE_OOM naming the size, live and free memory; nothing leaks', () => {
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

function main(argv) {
  let cpuPath, cudaPath, json = false, emulate = false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--cpu') cpuPath = path.resolve(argv[++i]);
    else if (argv[i] === '--cuda') cudaPath = path.resolve(argv[++i]);
    else if (argv[i] === '--json') json = true;
    else if (argv[i] === '--emulate') emulate = true;
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

  for (const dist of DISTS)
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
  say(`conformance${emulate ? ' (host emulation of the kernels)' : ''}: ${report.cases - report.mismatches.length}/${report.cases} cases bit-identical`);
  checkPerturb(cpu, gpu, report, say, emulate);
  checkPool(cpu, gpu, report, say, emulate);
  const failed = report.mismatches.length || report.pool.failures.length;
  if (emulate) {
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
  if (json) console.log(JSON.stringify(report, (k, v) => (typeof v === 'bigint' ? v.toString() : v), 2));
  return failed ? 1 : 0;
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
function firstDiff(a, b) {
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
    const at = firstDiff(a.out[k], b.out[k]);
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

process.exitCode = main(process.argv.slice(2));
