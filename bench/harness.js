'use strict';
/**
 * Benchmark harness: tinybench 6 timing, machine description, machine ceilings measured in the same
 * run, and markdown results in bench/results/<suite>.md.
 *
 * A suite is bench/<name>.bench.js exporting { name, title, run(h) }; `npm run bench [-- name...]`
 * (bench/run.js) runs them, `node bench/<name>.bench.js` runs one. Inside run(h):
 *
 *   const z = h.zotune();                               // the built package (dist/)
 *   const c = await h.measureCeilings(2);               // { read, update, fma, int8 } on 2 threads
 *   const r = await h.measure('gauss', () => z.perturbSync(t, 1e-3, dir), { threads: 2, work: n });
 *   h.rate(r)                                           // { best, median }: work per second
 *   // on a shared machine, measure the kernels interleaved with the ceilings they are judged by:
 *   const { ceilings, results } = await h.measureWithCeilings(2, [{ name, fn, work }, ...]);
 *   h.report({ columns, rows, method, notes });         // prints and writes the markdown file
 *
 * Rates are work / time per call; "best" uses the fastest call, "median" the median call
 * (the machine is shared: best is the closer estimate of what the hardware does, median of what a
 * user sees). Every benchmark states its result as a ratio to a ceiling or a peer measured here.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const RESULTS = path.join(__dirname, 'results');

// Sequential tinybench: at least `iterations` calls and `time` ms per case, after a short warm-up.
// Kept low so the whole default run stays within a few minutes on 2 cores; override with
// ZOTUNE_BENCH_TIME (ms), ZOTUNE_BENCH_ITERATIONS and ZOTUNE_BENCH_ROUNDS (interleaved rounds).
const DEFAULTS = {
  time: Number(process.env.ZOTUNE_BENCH_TIME || 400),
  iterations: Number(process.env.ZOTUNE_BENCH_ITERATIONS || 7),
  warmupTime: 50,
  warmupIterations: 2,
};
const ROUNDS = Number(process.env.ZOTUNE_BENCH_ROUNDS || 3);

let zt;
/** The built package; benchmarks run against dist/ and the compiled addon. */
function zotune() {
  if (zt) return zt;
  try {
    zt = require(path.join(ROOT, 'dist'));
  } catch (err) {
    throw new Error(`bench: cannot load ${path.join(ROOT, 'dist')} (${err.message}); run \`npm run build\` first`);
  }
  return zt;
}

/** Sets the engine's thread count for the duration of fn. */
async function withThreads(threads, fn) {
  const z = zotune(), before = z.cpuInfo().threads;
  z.setThreads(threads);
  try {
    return await fn();
  } finally {
    z.setThreads(before);
  }
}

/**
 * Times fn (synchronous or returning a Promise) with tinybench on `threads` engine threads.
 * `work` is the amount of work one call does (bytes, elements, FLOP...), used by rate().
 * Returns { name, threads, work, best, median, mean, samples, rme } with times in seconds.
 */
async function measure(name, fn, { threads, work = 1, time, iterations, warmup = true } = {}) {
  const { Bench } = await import('tinybench');
  const bench = new Bench({ ...DEFAULTS, ...(time ? { time } : {}), ...(iterations ? { iterations } : {}), warmup, throws: true });
  bench.add(name, fn);
  const run = () => bench.run();
  await (threads ? withThreads(threads, run) : run());
  const res = bench.tasks[0].result;
  if (!res || !res.latency) throw new Error(`bench: ${name} produced no timings (state ${res && res.state})`);
  const l = res.latency;
  return { name, threads, work, best: l.min / 1e3, median: l.p50 / 1e3, mean: l.mean / 1e3, samples: l.samplesCount, rme: l.rme };
}

/** Work per second of a measurement: { best, median }. */
function rate(m) {
  return { best: m.work / m.best, median: m.work / m.median };
}

/** Ratio of two rates, best to best and median to median. */
function ratio(a, b) {
  return { best: a.best / b.best, median: a.median / b.median };
}

/**
 * Measures cases [{ name, fn, work }] in `rounds` interleaved rounds (A B C, A B C, ...), so that
 * load from other processes on a shared machine hits every case alike and each case gets its share
 * of the quiet moments. Per case: best = fastest call of any round, median = median of the round
 * medians. Returns one measurement per case, as measure() does. `settleMs`: sleep before every
 * case (a peer's thread pool that spins after its calls, e.g. onnxruntime's, would otherwise take
 * cores from the case that follows it).
 */
async function measureInterleaved(cases, { threads, rounds = ROUNDS, settleMs = 0 } = {}) {
  const per = cases.map(() => []);
  const time = Math.ceil(DEFAULTS.time / rounds), iterations = Math.ceil(DEFAULTS.iterations / rounds);
  for (let r = 0; r < rounds; r++)
    for (let k = 0; k < cases.length; k++) {
      const c = cases[k];
      if (settleMs) await new Promise((resolve) => setTimeout(resolve, settleMs));
      per[k].push(await measure(c.name, c.fn, { threads, work: c.work, time, iterations, warmup: r === 0 }));
    }
  return per.map((ms) => {
    const medians = ms.map((m) => m.median).sort((a, b) => a - b);
    return {
      ...ms[0],
      best: Math.min(...ms.map((m) => m.best)),
      median: medians[(medians.length - 1) >> 1],
      mean: ms.reduce((a, m) => a + m.mean, 0) / ms.length,
      samples: ms.reduce((a, m) => a + m.samples, 0),
      rounds,
    };
  });
}

const ceilingCache = new Map();
const CEILING_ELEMENTS = 64 * 1024 * 1024; // 256 MiB of f32: far larger than any L3 here

/**
 * Machine ceilings on `threads` engine threads (default: all), measured once per process and
 * thread count (measureWithCeilings() refreshes them):
 *   read   - streaming read bandwidth, bytes/s (sum over 256 MiB)
 *   update - in-place read-modify-write bandwidth, bytes/s counted as read + write (2 x 256 MiB)
 *   fma    - fp32 FMA peak, FLOP/s (12 independent 8-lane chains per task, inline asm)
 *   int8   - int8 dot peak, ops/s (vpmaddubsw + vpmaddwd + vpaddd, 32 MAC = 64 ops per instruction)
 *   fma512 - AVX-512 fp32 FMA peak, FLOP/s (12 independent 16-lane chains); avx512 path only
 *   vnni   - AVX-512 VNNI int8 dot peak, ops/s (vpdpbusd zmm, 64 MAC = 128 ops per instruction); avx512 path only
 * Each is { best, median } (from rate()) plus the raw measurement in `.m`. The compute peaks are
 * null on the scalar path (they measure the AVX2/FMA units), fma512 and vnni also on the avx2 path. Every
 * call's checksum is verified.
 */
async function measureCeilings(threads) {
  threads = threads || zotune().cpuInfo().threads;
  if (!ceilingCache.has(threads)) await measureWithCeilings(threads, []);
  return ceilingCache.get(threads);
}

/**
 * Measures a suite's cases interleaved with the ceilings (see measureInterleaved), so that kernel
 * and ceiling see the same machine state: the ratio between them is what a shared machine can
 * report reliably. Returns { ceilings, results } (results in the order of `cases`).
 */
async function measureWithCeilings(threads, cases) {
  const z = zotune();
  threads = threads || z.cpuInfo().threads;
  const n = CEILING_ELEMENTS;
  const buf = z.Tensor.zeros([n], 'f32', 'workspace');
  try {
    z.ceilings.update(buf, 1); // every element 1.0: the read checksum is n
    const own = [
      { key: 'read', name: 'ceiling: read', fn: () => check(z.ceilings.readSum(buf), n, 'read'), work: n * 4 },
      { key: 'update', name: 'ceiling: update', fn: () => z.ceilings.update(buf, 0), work: n * 8 },
    ];
    const cpuPath = z.cpuInfo().path;
    if (cpuPath !== 'scalar') {
      const tasks = 32, iters = 100_000;
      own.push(
        { key: 'fma', name: 'ceiling: fma', fn: () => check(z.ceilings.fmaPeak(tasks, iters), tasks * 96 * iters, 'fma'), work: tasks * iters * z.ceilings.FLOP_PER_FMA_ITER },
        { key: 'int8', name: 'ceiling: int8', fn: () => check(z.ceilings.int8Peak(tasks, iters), tasks * 192 * iters, 'int8'), work: tasks * iters * z.ceilings.OPS_PER_INT8_ITER },
      );
    }
    if (cpuPath === 'avx512') {
      const tasks = 32, iters = 50_000; // 2x / 4x the work per iteration of fma / int8: about the same time
      own.push(
        { key: 'fma512', name: 'ceiling: fma512', fn: () => check(z.ceilings.fma512Peak(tasks, iters), tasks * 192 * iters, 'fma512'), work: tasks * iters * z.ceilings.FLOP_PER_FMA512_ITER },
        { key: 'vnni', name: 'ceiling: vnni', fn: () => check(z.ceilings.vnniPeak(tasks, iters), tasks * 768 * iters, 'vnni'), work: tasks * iters * z.ceilings.OPS_PER_VNNI_ITER },
      );
    }
    const ms = await measureInterleaved([...own, ...cases], { threads });
    check(z.ceilings.readSum(buf), n, 'update'); // update added 0: the buffer is intact
    const c = { fma: null, int8: null, fma512: null, vnni: null };
    own.forEach((o, k) => (c[o.key] = withRaw(ms[k])));
    ceilingCache.set(threads, c);
    return { ceilings: c, results: ms.slice(own.length) };
  } finally {
    buf.dispose();
  }
}

function withRaw(m) {
  return { ...rate(m), m };
}

function check(got, want, what) {
  if (got !== want) throw new Error(`bench: ${what} checksum ${got}, expected ${want}: the kernel skipped work`);
}

// Machine-wide CPU time from /proc/stat (Linux), in ticks, with this process's own CPU time.
function cpuSnapshot() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const u = process.cpuUsage();
    return { total: f.reduce((a, b) => a + b, 0), idle: f[3] + (f[4] || 0), ownMs: (u.user + u.system) / 1e3 };
  } catch {
    return null;
  }
}

/** Fraction of the machine's CPU time that other processes used between two snapshots, or null. */
function othersBusy(a, b) {
  if (!a || !b || b.total <= a.total) return null;
  const tickMs = 10; // USER_HZ = 100 on Linux
  const busyMs = (b.total - a.total - (b.idle - a.idle)) * tickMs, totalMs = (b.total - a.total) * tickMs;
  return Math.min(1, Math.max(0, (busyMs - (b.ownMs - a.ownMs)) / totalMs));
}

/** Fraction of CPU time the whole machine spent busy over `ms`, or null. */
function machineBusy(ms = 500) {
  const a = cpuSnapshot();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); // sleep: a busy wait would count itself
  return othersBusy(a, cpuSnapshot());
}

function cpuModel() {
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const get = (k) => (info.match(new RegExp(`^${k}\\s*:\\s*(.*)$`, 'm')) || [])[1];
    return `${get('model name') || os.cpus()[0].model} (family ${get('cpu family')}, model ${get('model')})`;
  } catch {
    return os.cpus()[0] ? os.cpus()[0].model : 'unknown';
  }
}

/** The machine and run description every results file starts with. */
function machine(threadsUsed) {
  const z = zotune(), info = z.cpuInfo();
  return {
    cpu: cpuModel(),
    cores: os.availableParallelism ? os.availableParallelism() : os.cpus().length,
    threads: threadsUsed,
    path: info.path,
    node: process.version,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    date: new Date().toISOString(),
  };
}

// --- formatting ------------------------------------------------------------------------------

/** x in units of 1e9 with `d` decimals. */
const giga = (x, d = 2) => (x == null ? 'n/a' : (x / 1e9).toFixed(d));
const pct = (x, d = 0) => (x == null ? 'n/a' : `${(100 * x).toFixed(d)} %`);
const times = (x, d = 2) => (x == null ? 'n/a' : `${x.toFixed(d)}x`);
/** best / median pair: "1.23 / 1.10". */
const pair = (r, f = giga) => (r == null ? 'n/a' : `${f(r.best)} / ${f(r.median)}`);

function markdownTable(columns, rows) {
  const esc = (v) => String(v).replace(/\|/g, '\\|');
  return [`| ${columns.map(esc).join(' | ')} |`, `|${columns.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

/**
 * Prints a suite's table and writes bench/results/<suite>.md: title, machine, method, the table
 * (one row per case) and notes. Returns the markdown.
 */
function report(suite, { title, threads, method = [], columns, rows, notes = [] }) {
  const m = machine(threads);
  const md = [
    `# ${title}`,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memory}; ${m.path} path; threads used: ${m.threads}; Node ${m.node}; ${m.date}.`,
    ...(suite.busy != null
      ? [`Other processes used ${pct(suite.busy)} of the machine just before the run and ${pct(othersBusy(suite.start, cpuSnapshot()))} during it (shared machine: compare ratios, not absolute rates, between runs).`]
      : []),
    '',
    '## Method',
    '',
    ...method.map((l) => `- ${l}`),
    `- tinybench ${tinybenchVersion()}; cases and the ceilings they are compared with run in ${ROUNDS} interleaved rounds (each at least ${Math.ceil(DEFAULTS.iterations / ROUNDS)} calls and ${Math.ceil(DEFAULTS.time / ROUNDS)} ms per case; ${DEFAULTS.warmupIterations} warm-up calls in the first), so load from other processes hits them alike. Rates are work / time of one call: **best** (fastest call) / median (of the round medians).`,
    '',
    '## Results',
    '',
    markdownTable(columns, rows),
    '',
    ...(notes.length ? ['## Notes', '', ...notes.map((l) => `- ${l}`), ''] : []),
  ].join('\n');
  fs.mkdirSync(RESULTS, { recursive: true });
  fs.writeFileSync(path.join(RESULTS, `${suite.name}.md`), md);
  console.log(`\n${markdownTable(columns, rows)}\n\nwritten: ${path.relative(ROOT, path.join(RESULTS, `${suite.name}.md`))}`);
  return md;
}

function tinybenchVersion() {
  try {
    return JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'tinybench', 'package.json'), 'utf8')).version;
  } catch {
    return '6';
  }
}

/** Runs one suite module: logs, measures how busy the machine was, and calls suite.run(h). */
async function runSuite(suite) {
  const h = { LLC_BYTES, zotune, measure, measureInterleaved, rate, ratio, measureCeilings, measureWithCeilings, withThreads, giga, pct, times, pair, report: (r) => report(ctx, r) };
  const ctx = { name: suite.name, busy: machineBusy(), start: cpuSnapshot() };
  console.log(`\n== ${suite.name}: ${suite.title}${ctx.busy != null ? ` (other processes: ${pct(ctx.busy)} of the machine)` : ''}`);
  const t0 = Date.now();
  await suite.run(h);
  console.log(`== ${suite.name} done in ${((Date.now() - t0) / 1e3).toFixed(1)} s`);
}

/** For `node bench/<suite>.bench.js`. */
function main(suite) {
  runSuite(suite).catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}

// Last-level cache assumed by the "weights from DRAM" rows (they rotate through copies adding up to
// 4x this): 32 MiB, the L3 of one Zen 4 / Zen 5 CCD (virtual machines often hide the real size);
// ZOTUNE_BENCH_LLC_MB overrides it.
const LLC_BYTES = (Number(process.env.ZOTUNE_BENCH_LLC_MB) || 32) * 2 ** 20;

module.exports = { LLC_BYTES, zotune, measure, measureInterleaved, rate, ratio, measureCeilings, measureWithCeilings, withThreads, machine, machineBusy, report, runSuite, main, giga, pct, times, pair, markdownTable, DEFAULTS };
