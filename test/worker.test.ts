/**
 * worker_threads: the addons keep no static per-environment state, so several Workers can load
 * them at once, run kernels concurrently with the main thread, and be terminated mid-flight.
 * Runs in a child process so that a crash shows up as a failed exit, not a dead jest worker.
 */
import { loadCuda } from '../lib/native/load';
import { root, runNode } from './helpers/spawn';

const cuda = loadCuda();

const script = (cudaPath: string | undefined) => `
const { Worker } = require('node:worker_threads');
const cpuPath = require('node-gyp-build').resolve(${JSON.stringify(root)});
const cudaPath = ${JSON.stringify(cudaPath ?? null)};
const N = 200003;

// Each worker: sync and async fills into TypedArrays and NativeBuffers, its own stream id.
const body = \`
  const { parentPort, workerData: w } = require('node:worker_threads');
  const addon = require(w.cpuPath);
  const cuda = w.cudaPath ? require(w.cudaPath) : null;
  (async () => {
    const out = new Float32Array(w.n);
    for (let r = 0; r < 6; r++) {
      addon.rngFill(out, 0, w.n, 1, 42, w.id, 0, 0);
      await addon.rngFillAsync(out, 0, w.n, 1, 42, w.id, 0, 0);
      const nb = new addon.NativeBuffer(w.n * 4, 'workspace');
      await addon.rngFillAsync(nb, 0, w.n, 0, 7, w.id, 2, 0);
      nb.dispose();
    }
    if (w.stall) {
      // Leave work in flight and an undisposed buffer behind, then get terminated.
      new addon.NativeBuffer(1 << 20);
      const big = new Float32Array(1 << 22);
      for (let i = 0; i < 8; i++) addon.rngFillAsync(big, 0, big.length, 1, i, 0, 0, 0);
      parentPort.postMessage({ stalled: true });
      setInterval(() => {}, 1000);
      return;
    }
    parentPort.postMessage({ id: w.id, out, probe: cuda ? cuda.probe().usable : null });
  })().catch((e) => { console.error(e); process.exit(3); });
\`;

function start(id, stall) {
  return new Worker(body, { eval: true, workerData: { id, n: N, cpuPath, cudaPath, stall } });
}

(async () => {
  const addon = require(cpuPath);
  const ids = [11, 12];
  const results = await Promise.all(ids.map((id) => new Promise((resolve, reject) => {
    const w = start(id, false);
    let msg;
    w.on('message', (m) => (msg = m));
    w.on('error', reject);
    w.on('exit', (code) => (code === 0 ? resolve(msg) : reject(new Error('worker exit ' + code))));
  })));
  // main thread: same values for the same keys, computed while the workers were running
  for (const r of results) {
    const ref = new Float32Array(N);
    addon.rngFill(ref, 0, N, 1, 42, r.id, 0, 0);
    if (!Buffer.from(ref.buffer).equals(Buffer.from(r.out.buffer))) throw new Error('worker ' + r.id + ' values differ');
  }
  // terminate a worker with ops in flight
  const w = start(13, true);
  await new Promise((resolve) => w.on('message', resolve));
  const code = await w.terminate();
  // the engine still works afterwards
  const after = new Float32Array(1000);
  await addon.rngFillAsync(after, 0, 1000, 1, 42, 11, 0, 0);
  console.log(JSON.stringify({ ok: true, workers: results.length, probes: results.map((r) => r.probe), terminated: code }));
})().catch((e) => { console.error(e); process.exit(2); });
`;

test(`two Workers run kernels concurrently and terminate cleanly${cuda.addon ? ' (CUDA addon loaded in each)' : ''}`, () => {
  const r = runNode(script(cuda.addon ? cuda.binary!.path : undefined), { timeout: 120_000 });
  expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
  const res = JSON.parse(r.stdout) as { ok: boolean; workers: number; probes: (boolean | null)[]; terminated: number };
  expect(res.ok).toBe(true);
  expect(res.workers).toBe(2);
  expect(res.terminated).toBe(1); // terminate() resolves with exit code 1
  if (cuda.addon) expect(res.probes.every((p) => typeof p === 'boolean')).toBe(true);
});
