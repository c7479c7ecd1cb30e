/**
 * The engine's thread pool under setThreads(): a job that starts right after the pool was resized
 * must count each worker once. A new worker used to take the last (long finished) job for a new one
 * and count itself out of the next job twice: that job's caller waited forever on a negative count,
 * or returned while a task still ran. The stress loop runs in a child with a timeout, so a
 * regression fails this test instead of hanging the suite.
 */
import { runNode } from './helpers/spawn';

test('resizing the pool between jobs, with sync and async jobs in flight, never hangs or loses a task', () => {
  const r = runNode(
    `const z = require('./dist');
     const a = z.Tensor.fromArray(Float32Array.from({ length: 64 * 256 }, (_, i) => (i % 7) - 3), [64, 256], 'f32', 'activations');
     const w = z.Tensor.fromArray(Float32Array.from({ length: 96 * 256 }, (_, i) => (i % 5) - 2), [96, 256], 'f32', 'weights');
     const want = Buffer.from(z.matmulSync(a, w).data().buffer);
     (async () => {
       for (let i = 0; i < 20000; i++) {
         z.setThreads(1 + (i % 3));
         const p = z.matmul(a, w);                 // on a libuv thread
         const s = z.matmulSync(a, w);             // on the main thread, meanwhile
         const y = await p;
         if (!Buffer.from(y.data().buffer).equals(want) || !Buffer.from(s.data().buffer).equals(want)) throw new Error('wrong result at ' + i);
         y.dispose(); s.dispose();
       }
       console.log('ok');
     })().catch((e) => { console.error(e); process.exit(1); });`,
    { timeout: 90_000 },
  );
  expect({ status: r.status, signal: r.signal, stderr: r.stderr, stdout: r.stdout.trim() }).toEqual({ status: 0, signal: null, stderr: '', stdout: 'ok' });
}, 120_000);
