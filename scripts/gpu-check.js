#!/usr/bin/env node
// GPU conformance check for a GPU host, in plain Node (no node_modules, no build tools): loads the
// CPU and CUDA addons by path, probes the GPU, and checks that the CUDA random fills equal the
// CPU's bit for bit on every distribution, unaligned starts and 64-bit element indices included.
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
  if (emulate) {
    if (json) console.log(JSON.stringify(report, (k, v) => (typeof v === 'bigint' ? v.toString() : v), 2));
    return report.mismatches.length ? 1 : 0;
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
  return report.mismatches.length ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
