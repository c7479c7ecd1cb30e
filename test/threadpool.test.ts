/**
 * The engine's thread pool under setThreads(): a job that starts right after the pool was resized
 * must count each worker once. A new worker used to take the last (long finished) job for a new one
 * and count itself out of the next job twice: that job's caller waited forever on a negative count,
 * or returned while a task still ran. The stress loop runs in a child with a timeout, so a
 * regression fails this test instead of hanging the suite.
 */
import { runNode } from './helpers/spawn';

/** Runs `setup`, then `body` (which may await and throws on a wrong result) for i < 20000 in a child with a timeout. */
function stress(setup: string, body: string): void {
  const r = runNode(
    `const z = require('./dist');
     ${setup}
     (async () => {
       for (let i = 0; i < 20000; i++) { ${body} }
       console.log('ok');
     })().catch((e) => { console.error(e); process.exit(1); });`,
    { timeout: 90_000 },
  );
  expect({ status: r.status, signal: r.signal, stderr: r.stderr, stdout: r.stdout.trim() }).toEqual({ status: 0, signal: null, stderr: '', stdout: 'ok' });
}

test('resizing the pool between jobs, with sync and async jobs in flight, never hangs or loses a task', () => {
  stress(
    `const a = z.Tensor.fromArray(Float32Array.from({ length: 64 * 256 }, (_, i) => (i % 7) - 3), [64, 256], 'f32', 'activations');
     const w = z.Tensor.fromArray(Float32Array.from({ length: 96 * 256 }, (_, i) => (i % 5) - 2), [96, 256], 'f32', 'weights');
     const want = Buffer.from(z.matmulSync(a, w).data().buffer);`,
    `z.setThreads(1 + (i % 3));
     const p = z.matmul(a, w);                 // on a libuv thread
     const s = z.matmulSync(a, w);             // on the main thread, meanwhile
     const y = await p;
     if (!Buffer.from(y.data().buffer).equals(want) || !Buffer.from(s.data().buffer).equals(want)) throw new Error('wrong result at ' + i);
     y.dispose(); s.dispose();`,
  );
}, 120_000);

// The caller waits for a job's tasks, not for the workers: a worker that wakes late must neither
// take a task of the next job with the previous job's function nor lose one. Many short jobs in a
// row (a few tasks each, mostly finished by the caller before the worker wakes), sync and async
// callers interleaved, every result compared.
test('back-to-back short jobs: late workers never run or lose a task of the next job', () => {
  stress(
    `z.setThreads(2);
     const mk = (m, k, s) => z.Tensor.fromArray(Float32Array.from({ length: m * k }, (_, i) => ((i * s) % 11) - 5), [m, k], 'f32', 'activations');
     const a1 = mk(1, 512, 3), a7 = mk(7, 64, 5), w1 = mk(200, 512, 7), w7 = mk(130, 64, 2);
     const want1 = Buffer.from(z.matmulSync(a1, w1).data().buffer), want7 = Buffer.from(z.matmulSync(a7, w7).data().buffer);`,
    `const p = i % 2 ? z.matmul(a1, w1) : z.matmul(a7, w7);
     const s = i % 2 ? z.matmulSync(a7, w7) : z.matmulSync(a1, w1);
     const y = await p;
     const ok = i % 2 ? Buffer.from(y.data().buffer).equals(want1) && Buffer.from(s.data().buffer).equals(want7)
                      : Buffer.from(y.data().buffer).equals(want7) && Buffer.from(s.data().buffer).equals(want1);
     if (!ok) throw new Error('wrong result at ' + i);
     y.dispose(); s.dispose();`,
  );
}, 120_000);
