/**
 * ZO fine-tuning on the real engine (micro-llama): estimator statistics against the true
 * directional derivative, the trainer on a prompt task, and the run folder through the CLI:
 * replay is bit-exact, and a run killed with SIGKILL mid-run resumes to the same weights as an
 * uninterrupted run.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LlamaModel, LlamaTokenizer, Tensor, perturbSync } from '../lib';
import { ZoOptimizer, querySeed, type ZoDirection } from '../lib/zo/optimizer';
import { fit, taskData, type TrainEvent } from '../lib/zo/trainer';
import { finetune, readRunConfig, replayRun, type RunConfig } from '../lib/zo/run';
import { PromptTask } from '../lib/tasks/task';
import { modelDir } from './helpers/models';
import { root, run, cleanEnv } from './helpers/spawn';

const micro = modelDir('micro-llama');
const d = micro ? describe : describe.skip;
const cli = path.join(root, 'dist', 'cli', 'main.js');
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

const batch = [
  Array.from({ length: 21 }, (_, i) => (i * 131 + 7) % 4000),
  Array.from({ length: 12 }, (_, i) => (i * 17 + 300) % 4000),
];
const mb = { sequences: batch, forward: { targets: 'next' as const, logits: 'none' as const }, loss: (r: { loss: number }) => r.loss };

/** The direction of one tensor (the same kernel the model uses: stream = tensor id). */
function directionOf(numel: number, id: number, seed: bigint, dir: ZoDirection, purpose: 'probe' | 'update'): Float32Array {
  const z = Tensor.zeros([numel], 'f32');
  perturbSync(z, 1, { seed, stream: id, dist: dir.dist ?? 'gaussian', bits: dir.bits ?? 0, srPurpose: purpose });
  const out = Float32Array.from(z.data() as Float32Array);
  z.dispose();
  return out;
}

d('estimator on micro-llama: the mean of many projected gradients matches the true directional derivative', () => {
  // For a fixed vector v, E_z[g(z) (z·v)] = ∇L·v (E[z zᵀ] = I; for QuZO E[Q1(z) Q2(z)ᵀ] = I with
  // independent roundings). ∇L·v itself comes from a central difference of the fp32 weights along
  // v, checked stable between ε and ε/2. v is a pilot estimate of the gradient (the mean of 300
  // estimates with other seeds), so ∇L·v is large in standard errors and the test has power.
  // Bound: |mean of K = 1500 samples − ∇L·v| < 5 standard errors (sample standard deviation / √K).
  const K = 1500;
  async function check(trainable: string, method: 'mezo' | 'quzo', eps: number) {
    const model = await LlamaModel.load(micro!);
    try {
      model.setTrainable(trainable);
      const [t] = model.trainable();
      const opt = new ZoOptimizer({ method, eps, directionBits: method === 'quzo' ? 4 : undefined });
      const sample = async (runSeed: number, k: number) => {
        const seed = querySeed(runSeed, k, 0);
        const est = await opt.estimate(model, [mb], [seed]);
        return { g: est.queries[0].g, z: directionOf(t.numel, t.id, seed, opt.direction, 'update') };
      };
      const v = new Float64Array(t.numel);
      for (let k = 0; k < 300; k++) {
        const { g, z } = await sample(1, k);
        for (let i = 0; i < v.length; i++) v[i] += g * z[i];
      }
      const norm = Math.sqrt(dot(v, v));
      v.forEach((x, i) => (v[i] = x / norm));
      const w = model.tensor(t.name).data() as Float32Array, w0 = Float32Array.from(w);
      const lossAt = async (e: number) => {
        for (let i = 0; i < w.length; i++) w[i] = w0[i] + e * v[i];
        const r = await model.forward(batch, mb.forward);
        w.set(w0);
        return r.loss;
      };
      const fd = async (e: number) => ((await lossAt(e)) - (await lossAt(-e))) / (2 * e);
      const dv = await fd(eps), dv2 = await fd(eps / 2);
      expect(Math.abs(dv - dv2)).toBeLessThan(0.02 * Math.abs(dv));
      let sum = 0, sum2 = 0;
      for (let k = 0; k < K; k++) {
        const { g, z } = await sample(2, k);
        const x = g * dot(z, v);
        sum += x;
        sum2 += x * x;
      }
      const mean = sum / K, se = Math.sqrt((sum2 / K - mean * mean) / K);
      expect(Math.abs(mean - dv)).toBeLessThan(5 * se);
      // the bound is meaningful: ∇L·v is far from 0 in standard errors (a wrong sign or scale fails)
      expect(Math.abs(dv)).toBeGreaterThan(8 * se);
    } finally {
      model.dispose();
    }
  }

  test('MeZO (final norm, d = 64)', async () => {
    await check('model.norm.weight', 'mezo', 1e-2);
  });

  test('QuZO, 4-bit directions (a q_proj, d = 4096)', async () => {
    await check('model.layers.1.self_attn.q_proj.weight', 'quzo', 1e-2);
  });
});

d('trainer on micro-llama', () => {
  test('MeZO fit on a prompt task lowers the training loss and keeps weights finite', async () => {
    const model = await LlamaModel.load(micro!);
    const tok = LlamaTokenizer.load(micro!);
    try {
      const task = new PromptTask({ kind: 'classification', template: '{text} It was', labelWords: [' bad', ' great'] }, tok);
      const train = Array.from({ length: 16 }, (_, i) => ({ text: i % 2 ? 'good fun and great times' : 'sad and awful, a waste', label: i % 2 }));
      const before = (await task.evaluate(model, train)).loss;
      const opt = new ZoOptimizer({ method: 'mezo', eps: 1e-3 });
      for await (const e of fit(model, opt, taskData(task, train, { batchSize: 8, seed: 1 }), { steps: 60, lr: 1e-3, seed: 1 })) expect(e.type === 'step' && e.skipped).toBeFalsy();
      const after = (await task.evaluate(model, train)).loss;
      expect(after).toBeLessThan(before);
    } finally {
      model.dispose();
    }
  });
});

d('zotune finetune / replay (run folder, kill -9 and resume)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-ft-'));
  const taskFile = path.join(tmp, 'toy.jsonl');
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  beforeAll(() => {
    const rows = Array.from({ length: 60 }, (_, i) => JSON.stringify({ text: `${['nice', 'bad', 'great', 'awful'][i % 4]} thing number ${i}`, label: i % 4 === 0 || i % 4 === 2 ? 1 : 0 }));
    fs.writeFileSync(taskFile, rows.join('\n') + '\n');
  });
  const args = (out: string, method = 'mezo') => ['finetune', '--model', micro!, '--task', taskFile, '--method', method, '--steps', '40', '--lr', '1e-3', '--batch', '4', '--seed', '7', '--eval-every', '20', '--out', out];
  const weightsOf = (dir: string) => fs.readFileSync(path.join(dir, 'model', 'model.safetensors'));

  test('a run folder: log, metrics, curve, summary, exported model; replay rebuilds the same bytes', () => {
    const out = path.join(tmp, 'a');
    const r = run(process.execPath, [cli, ...args(out), '--json'], { env: cleanEnv() });
    expect(r.stderr).toContain('40/40');
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ steps: 40, resumedFrom: 0, forwardPasses: 80 });
    expect(s.zeroShot.accuracy).toBeGreaterThanOrEqual(0);
    expect(s.test.n).toBe(12);
    for (const f of ['config.json', 'zo.log', 'metrics.jsonl', 'curve.svg', 'summary.json', 'model/model.safetensors', 'model/config.json', 'model/tokenizer.json']) expect(fs.existsSync(path.join(out, f))).toBe(true);
    const metrics = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.filter((m) => m.type === 'step')).toHaveLength(40);
    expect(metrics.filter((m) => m.type === 'eval').map((m) => m.after)).toEqual([0, 20, 40]);
    expect(fs.readFileSync(path.join(out, 'curve.svg'), 'utf8')).toMatch(/^<svg[^]*<\/svg>\n$/);
    const rp = run(process.execPath, [cli, 'replay', out, '--out', path.join(tmp, 'a-replayed')], { env: cleanEnv() });
    expect(rp.status).toBe(0);
    expect(rp.stdout).toContain('replayed 40 steps');
    expect(fs.readFileSync(path.join(tmp, 'a-replayed', 'model.safetensors')).equals(weightsOf(out))).toBe(true);
    // a prefix is a different model; the exported folder loads back
    expect(run(process.execPath, [cli, 'replay', out, '--steps', '10', '--out', path.join(tmp, 'a-10')], { env: cleanEnv() }).status).toBe(0);
    expect(fs.readFileSync(path.join(tmp, 'a-10', 'model.safetensors')).equals(weightsOf(out))).toBe(false);
    // zotune eval --task on the exported folder gives the run's test accuracy
    const ev = run(process.execPath, [cli, 'eval', '--model', path.join(out, 'model'), '--task', taskFile, '--split', 'test', '--json'], { env: cleanEnv() });
    expect(ev.status).toBe(0);
    expect(JSON.parse(ev.stdout)).toMatchObject({ mode: 'task', split: 'test', n: 12, accuracy: s.test.accuracy });
    expect(run(process.execPath, [cli, 'eval', '--model', path.join(out, 'model'), '--task', taskFile, '--split', 'nope'], { env: cleanEnv() }).status).toBe(2);
    // bad uses
    expect(run(process.execPath, [cli, ...args(out)], { env: cleanEnv() })).toMatchObject({ status: 1 });
    expect(run(process.execPath, [cli, 'finetune', '--model', micro!, '--task', taskFile, '--method', 'sgd', '--out', path.join(tmp, 'x')], { env: cleanEnv() })).toMatchObject({ status: 2 });
    expect(run(process.execPath, [cli, 'replay', path.join(tmp, 'nothing')], { env: cleanEnv() }).stderr).toContain('ZOTUNE_BAD_FILE');
    // a resumed run takes every setting from its folder: a flag would be silently ignored
    const again = run(process.execPath, [cli, 'finetune', '--resume', '--out', out, '--seed', '9', '--keep-best'], { env: cleanEnv() });
    expect(again.status).toBe(2);
    expect(again.stderr).toContain('drop --seed, --keep-best');
    // replay never overwrites the run folder it reads
    expect(run(process.execPath, [cli, 'replay', out, '--out', out], { env: cleanEnv() }).stderr).toContain('ZOTUNE_INVALID_ARGUMENT');
    expect(fs.existsSync(path.join(out, 'zo.log'))).toBe(true);
  });

  test('--keep-best ends on the best dev evaluation: the replayed prefix of the log, evaluated and exported', () => {
    const out = path.join(tmp, 'best');
    const r = run(process.execPath, [cli, ...args(out), '--eval-every', '10', '--lr', '3e-3', '--keep-best', '--json'], { env: cleanEnv() });
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    const evals = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.type === 'eval');
    expect(evals.map((m) => m.after)).toEqual([0, 10, 20, 30, 40]);
    // the best: highest dev accuracy, ties to the lower loss, earliest first
    let best = evals[0];
    for (const e of evals) if (e.metrics.accuracy > best.metrics.accuracy || (e.metrics.accuracy === best.metrics.accuracy && e.metrics.loss < best.metrics.loss)) best = e;
    expect(s.best).toEqual({ after: best.after, accuracy: best.metrics.accuracy, loss: best.metrics.loss });
    expect(s.finalAfter).toBe(best.after);
    expect(s.final.accuracy).toBe(best.metrics.accuracy);
    expect(s.final.loss).toBeCloseTo(best.metrics.loss, 12);
    // the exported weights are base + the log's first best.after steps, byte for byte
    const rp = run(process.execPath, [cli, 'replay', out, '--steps', String(best.after), '--out', path.join(tmp, 'best-replayed')], { env: cleanEnv() });
    expect(rp.status).toBe(0);
    expect(fs.readFileSync(path.join(tmp, 'best-replayed', 'model.safetensors')).equals(weightsOf(out))).toBe(true);
    // and the test number is those weights' (zotune eval on the export)
    const ev = run(process.execPath, [cli, 'eval', '--model', path.join(out, 'model'), '--task', taskFile, '--split', 'test', '--json'], { env: cleanEnv() });
    expect(JSON.parse(ev.stdout).accuracy).toBe(s.test.accuracy);
    // first-order runs keep no step log to rebuild an evaluation from: refused before anything is written
    const fo = run(process.execPath, [cli, ...args(path.join(tmp, 'best-fo'), 'fo-adam'), '--keep-best'], { env: cleanEnv() });
    expect(fo.status).toBe(1);
    expect(fo.stderr).toContain('ZOTUNE_UNSUPPORTED');
    expect(fs.existsSync(path.join(tmp, 'best-fo', 'config.json'))).toBe(false);
    // without --keep-best the final weights are the last step's
    expect(JSON.parse(fs.readFileSync(path.join(tmp, 'a', 'summary.json'), 'utf8')).finalAfter).toBe(40);
  });

  test.each(['mezo', 'zo-adam'])('%s: kill -9 mid-run, --resume: the same final weights as the uninterrupted run', async (method) => {
    const full = path.join(tmp, `full-${method}`), killed = path.join(tmp, `killed-${method}`);
    expect(run(process.execPath, [cli, ...args(full, method)], { env: cleanEnv() }).status).toBe(0);
    // start the same run, kill it with SIGKILL once the log holds some steps
    const child = spawn(process.execPath, [cli, ...args(killed, method)], { env: cleanEnv(), stdio: 'ignore' });
    const logFile = path.join(killed, 'zo.log');
    const target = 12 + Math.floor(Math.random() * 15); // "any moment"
    await new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        const lines = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n').length - 2 : 0;
        if (lines >= target) {
          clearInterval(timer);
          child.kill('SIGKILL');
        }
      }, 5);
      child.on('exit', (code, signal) => {
        clearInterval(timer);
        if (signal === 'SIGKILL') resolve();
        else reject(new Error(`the child exited by itself (${code}) before it was killed`));
      });
    });
    expect(fs.existsSync(path.join(killed, 'model'))).toBe(false);
    const r = run(process.execPath, [cli, 'finetune', '--resume', '--out', killed, '--json'], { env: cleanEnv() });
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.resumedFrom).toBeGreaterThanOrEqual(target);
    expect(s.resumedFrom).toBeLessThan(40);
    const steps = fs.readFileSync(logFile, 'utf8').trim().split('\n').slice(1).map((l) => JSON.parse(l.split('\t')[0]).step);
    expect(steps).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(weightsOf(killed).equals(weightsOf(full))).toBe(true);
    const metrics = fs.readFileSync(path.join(killed, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.filter((m) => m.type === 'step').map((m) => m.step)).toEqual(steps);
  });
});

d('run folder safety (lib/zo/run.ts): inputs checked before anything is written, evaluations survive a kill, exports never replace foreign folders', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-runs-'));
  const taskFile = path.join(tmp, 'toy.csv');
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  beforeAll(() => {
    const rows = Array.from({ length: 40 }, (_, i) => `${['nice', 'bad', 'great', 'awful'][i % 4]} thing ${i},${i % 4 === 0 || i % 4 === 2 ? 1 : 0}`);
    fs.writeFileSync(taskFile, '\uFEFFtext,label\n' + rows.join('\n') + '\n'); // CSV labels are text; the BOM is Excel's
  });
  const config = (over: Partial<RunConfig> = {}): RunConfig => ({
    model: micro!, weights: 'fp32', method: 'mezo', task: path.relative(process.cwd(), taskFile), steps: 6, lr: 3e-3, schedule: 'constant', warmup: 0, eps: 1e-3,
    batch: 4, accumulate: 1, seed: 3, queries: 1, dist: 'gaussian', weightDecay: 0, evalEvery: 2, evalBatch: 16, evalExamples: 0, test: false, keepBest: true, ...over,
  });
  const evalsOf = (dir: string) => fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'eval').map((e) => e.after);
  const codeOf = async (p: Promise<unknown>) => p.then(() => 'no error', (e) => (e as { code?: string }).code ?? String(e));

  test('a kill just before an evaluation loses nothing: the resumed run evaluates, keeps and exports what the uninterrupted run does', async () => {
    const full = await finetune(config(), path.join(tmp, 'full'), false, { save: false });
    expect(evalsOf(path.join(tmp, 'full'))).toEqual([0, 2, 4, 6]);
    const dir = path.join(tmp, 'killed');
    const crash = (e: TrainEvent) => {
      if (e.type === 'step' && e.step === 3) throw new Error('killed'); // step 3 logged, the evaluation after 4 not yet run
    };
    expect(await codeOf(finetune(config(), dir, false, { save: false, onEvent: crash }))).toBe('Error: killed');
    const resumed = await finetune(undefined, dir, true, { save: false });
    expect(resumed.resumedFrom).toBe(4);
    expect(evalsOf(dir)).toEqual([0, 2, 4, 6]);
    expect(resumed.best).toEqual(full.best);
    expect(resumed.finalAfter).toBe(full.finalAfter);
    expect(resumed.zeroShot).toEqual(full.zeroShot);
    // the task was stored as an absolute path: the run resumes from any working directory
    expect(readRunConfig(dir).task).toBe(taskFile);
  });

  test('--eval-every 0 evaluates after the last step, and that evaluation is a keep-best candidate', async () => {
    const dir = path.join(tmp, 'every0');
    const s = await finetune(config({ evalEvery: 0 }), dir, false, { save: false });
    expect(evalsOf(dir)).toEqual([0, 6]);
    expect(s.finalAfter).toBe(s.best!.after);
    expect([0, 6]).toContain(s.best!.after);
  });

  test('bad settings are refused before the folder is written; a folder whose run never started is reused', async () => {
    const dir = path.join(tmp, 'bad');
    expect(await codeOf(finetune(config({ task: path.join(tmp, 'typo.csv') }), dir, false))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(await codeOf(finetune(config({ schedule: 'linear', warmup: 6 }), dir, false))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(await codeOf(finetune(config({ method: 'zo-adam', weights: 'int8' }), dir, false))).toBe('ZOTUNE_UNSUPPORTED');
    expect(await codeOf(finetune(config({ weightDecay: 1000 }), dir, false))).toBe('ZOTUNE_INVALID_ARGUMENT');
    const badLabel = path.join(tmp, 'bad-label.csv'); // one bad example deep in the file: found before step 0, not when sampled
    fs.writeFileSync(badLabel, fs.readFileSync(taskFile, 'utf8') + 'odd one,7\n');
    await expect(finetune(config({ task: badLabel }), dir, false)).rejects.toThrow(/example \d+: example field 'label' must be a label index/);
    expect(fs.existsSync(path.join(dir, 'config.json')) || fs.existsSync(path.join(dir, 'zo.log'))).toBe(false);
    // killed between config.json and zo.log: resume says so, and a new run may start there
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config()));
    expect(await codeOf(finetune(undefined, dir, true))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect((await finetune(config({ steps: 1, evalEvery: 0 }), dir, false, { save: false })).steps).toBe(1);
    // a model folder's config.json is never taken for a run's
    expect(await codeOf(finetune(config(), micro!, false))).toBe('ZOTUNE_INVALID_ARGUMENT');
  });

  test('exports refuse folders holding other files (a run folder, user files) and the base model folder', async () => {
    const dir = path.join(tmp, 'full');
    const before = fs.readdirSync(dir).sort();
    expect(await codeOf(replayRun(dir, dir))).toBe('ZOTUNE_INVALID_ARGUMENT');
    const mine = path.join(tmp, 'mine');
    fs.mkdirSync(mine);
    fs.writeFileSync(path.join(mine, 'notes.txt'), 'keep me');
    expect(await codeOf(replayRun(dir, mine))).toBe('ZOTUNE_INVALID_ARGUMENT');
    expect(fs.readFileSync(path.join(mine, 'notes.txt'), 'utf8')).toBe('keep me');
    expect(fs.readdirSync(dir).sort()).toEqual(before);
    const base = path.join(tmp, 'base'); // the run's base model folder (only export files): never overwritten
    fs.cpSync(micro!, base, { recursive: true, filter: (f) => !f.endsWith('golden.json') && !f.endsWith('README.md') });
    fs.cpSync(path.join(tmp, 'full'), path.join(tmp, 'rebased'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'rebased', 'config.json'), JSON.stringify({ ...readRunConfig(dir), model: base }));
    expect(await codeOf(replayRun(path.join(tmp, 'rebased'), base))).toBe('ZOTUNE_INVALID_ARGUMENT');
    // an earlier export is replaced
    const out = path.join(tmp, 'export');
    await replayRun(dir, out, 2);
    expect((await replayRun(dir, out)).steps).toBe(6);
  });
});
