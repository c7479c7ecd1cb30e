import type { LlamaModel } from '../../lib';
import { lossAndGradF64 } from '../../lib/model/grad';
import { llamaTensorNames } from '../../lib/model/llama';
import { uniforms } from './random-llama';

type F64Options = Parameters<typeof lossAndGradF64>[3];
type Batch = Parameters<typeof lossAndGradF64>[2];

export function f64Weights(w: Map<string, Float32Array>): Map<string, Float64Array> {
  return new Map([...w].map(([k, v]) => [k, Float64Array.from(v)]));
}

/** ‖a − b‖ / ‖b‖. */
export function normRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

/**
 * Float64 gradients of every tensor against central finite differences (step 1e-5) on the 3
 * largest-gradient elements plus 3 random ones; throws naming the first tensor above `bound`.
 * Returns the analytic gradients.
 */
export function checkFiniteDifferences(model: LlamaModel, w: Map<string, Float64Array>, batch: Batch, opts: F64Options, seed: number, bound = 1e-6): Map<string, Float64Array> {
  const { grads } = lossAndGradF64(model, w, batch, opts);
  const h = 1e-5, u = uniforms(seed);
  const loss = () => lossAndGradF64(model, w, batch, { ...opts, lossOnly: true }).loss;
  for (const name of llamaTensorNames(model.config)) {
    const p = w.get(name)!, g = grads.get(name)!;
    const order = Array.from(g.keys()).sort((a, b) => Math.abs(g[b]) - Math.abs(g[a]));
    const idx = [...order.slice(0, 3), ...[0, 1, 2].map(() => Math.floor(((u() + 1) / 2) * g.length))];
    const fd: number[] = [], an: number[] = [];
    for (const i of idx) {
      const w0 = p[i];
      p[i] = w0 + h;
      const lp = loss();
      p[i] = w0 - h;
      const lm = loss();
      p[i] = w0;
      fd.push((lp - lm) / (2 * h));
      an.push(g[i]);
    }
    const rel = normRel(an, fd);
    if (!(rel <= bound)) throw new Error(`${name}: relative error ${rel} (analytic ${an}, fd ${fd})`);
  }
  return grads;
}
