/**
 * Engine memory counters are per process, and a tensor nobody disposed is freed whenever the
 * garbage collector finalizes its wrapper — possibly in the middle of another suite's test. Tests
 * that compare exact live counts collect that garbage first, so the counts are their own.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { memory } from '../../lib';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Runs full collections (finalizers included) so that only referenced tensors stay counted. */
export async function collectGarbage(): Promise<void> {
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  await new Promise((resolve) => setImmediate(resolve));
}

/** The engine's live bytes per category after collecting garbage. */
export async function settledLive(): Promise<Record<string, number>> {
  await collectGarbage();
  return memory().engine.live as unknown as Record<string, number>;
}
