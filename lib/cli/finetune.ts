/**
 * `zotune finetune`: zeroth-order fine-tuning of a (quantized) model on a prompt task, into a run
 * folder (lib/zo/run.ts) that can be resumed after any crash (--resume) and replayed
 * (`zotune replay`); or, as the reference, first-order fine-tuning (fo-adam, fo-sgd, qat-*,
 * lowprec-*: lib/fo/fit.ts) into the same kind of folder, resumable from its checkpoint.
 * Progress on stderr (loss, steps/s, ETA); the summary on stdout.
 */
import { fail } from '../errors';
import type { WeightScheme } from '../model/llama';
import { ZO_METHODS, type ZoMethod } from '../zo/optimizer';
import { finetune, isFoMethod, type RunConfig, type RunSummary } from '../zo/run';
import { FO_METHODS, foWeights, type FoMethod } from '../fo/fit';
import { UsageError, choice, intOr as int, numberOr as num, type Command, type OptionValues } from './command';
import { DEVICE_OPTIONS } from './model-options';

const pos = (values: OptionValues, name: string, dflt: number) => num(values, name, dflt, (n) => n > 0, 'a number > 0');

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  return h ? `${h}h${String(m % 60).padStart(2, '0')}m` : m ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(1)}s`;
}

/** Progress on stderr: a bar redrawn in place on a TTY, otherwise a line every 5 %. */
function progress() {
  const tty = !!process.stderr.isTTY;
  let t0 = 0, first = 0, total = 0, ema: number | undefined, lastLine = -1, acc = '';
  return {
    start(start: number, steps: number) {
      t0 = performance.now();
      first = start;
      total = steps;
      if (start > 0) process.stderr.write(`resuming at step ${start} of ${steps} (replayed ${start} logged steps)\n`);
    },
    eval(after: number, accuracy: number) {
      acc = ` dev ${(accuracy * 100).toFixed(1)}%`;
      if (!tty) process.stderr.write(`eval after ${after} steps: dev accuracy ${(accuracy * 100).toFixed(1)}%\n`);
    },
    step(step: number, loss: number, skipped: boolean) {
      if (!skipped && Number.isFinite(loss)) ema = ema === undefined ? loss : 0.95 * ema + 0.05 * loss;
      const done = step + 1, rate = (done - first) / ((performance.now() - t0) / 1000), eta = (total - done) / rate;
      const text = `${done}/${total} loss ${ema?.toFixed(4) ?? '?'}${acc} ${rate.toFixed(2)} steps/s ETA ${duration(eta)}${skipped ? ' (skipped a step)' : ''}`;
      if (tty) {
        const width = 24, fill = Math.round((done / total) * width);
        process.stderr.write(`\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${text}\x1b[K`);
        if (done === total) process.stderr.write('\n');
      } else {
        const bucket = Math.floor((done / total) * 20);
        if (bucket !== lastLine || done === total) {
          lastLine = bucket;
          process.stderr.write(text + '\n');
        }
      }
    },
  };
}

const pct = (x: number | undefined) => (x === undefined ? '-' : `${(x * 100).toFixed(1)}%`);

export const finetuneCommand: Command<RunSummary> = {
  name: 'finetune',
  summary: 'Zeroth-order fine-tuning (MeZO, QuZO, ZO-SGD momentum, ZO-Adam), or the first-order reference (AdamW, SGD, QAT, low-precision), of a model on a task, into a resumable run folder.',
  options: {
    model: { type: 'string', value: '<dir>', description: 'Hugging Face LLaMA checkpoint folder (the base weights)' },
    method: { type: 'string', value: `<${[...ZO_METHODS, ...FO_METHODS].join('|')}>`, description: 'Optimiser (default mezo); fo-* / qat-* / lowprec-* are first-order (backward passes)' },
    weights: { type: 'string', value: '<scheme>', description: 'Weight scheme: fp32 (default; lowprec-int8/int4: int8/int4), bf16, int8, int4, int4-g32/64/128, fp8-e4m3, fp8-e5m2, w8a8, w4a8' },
    task: { type: 'string', value: '<file|sentiment>', description: 'Builtin task (sentiment) or a task file (.json spec, or .jsonl/.csv of {text, label})' },
    out: { type: 'string', value: '<dir>', description: 'Run folder (config, zo.log, metrics.jsonl, curve.svg, model/)' },
    resume: { type: 'boolean', description: 'Continue the run in --out from its log (other settings come from its config.json)' },
    steps: { type: 'string', value: '<n>', description: 'ZO steps (default 1000)' },
    lr: { type: 'string', value: '<x>', description: 'Peak learning rate (default 1e-5)' },
    schedule: { type: 'string', value: '<constant|linear|cosine>', description: 'LR schedule (default constant)' },
    warmup: { type: 'string', value: '<n>', description: 'Linear warmup steps (default 0)' },
    eps: { type: 'string', value: '<x>', description: 'Perturbation scale ε (default 1e-3)' },
    batch: { type: 'string', value: '<n>', description: 'Examples per micro-batch (default 16)' },
    accumulate: { type: 'string', value: '<n>', description: 'Micro-batches per step, probed with the same directions (default 1)' },
    queries: { type: 'string', value: '<n>', description: 'SPSA queries per step (default 1)' },
    seed: { type: 'string', value: '<n>', description: 'Run seed: data order and directions (default 0)' },
    dist: { type: 'string', value: '<gaussian|rademacher>', description: 'Direction distribution (default gaussian)' },
    'dir-bits': { type: 'string', value: '<2..8>', description: 'QuZO direction bits (default 4)' },
    'weight-decay': { type: 'string', value: '<x>', description: 'Weight decay λ, skipping norms (default 0)' },
    'max-grad-norm': { type: 'string', value: '<x>', description: 'First-order: clip each gradient to this global L2 norm (default none)' },
    trainable: { type: 'string', value: '<globs>', description: "Comma-separated globs of trainable tensors (default all), e.g. 'model.layers.*.mlp.*'" },
    'eval-every': { type: 'string', value: '<n>', description: 'Evaluate on dev every n steps (default steps/5; 0 = only at the end)' },
    'eval-batch': { type: 'string', value: '<n>', description: 'Sequences per evaluation forward (default 32)' },
    'eval-examples': { type: 'string', value: '<n>', description: 'Dev examples per periodic evaluation (default all)' },
    'no-test': { type: 'boolean', description: 'Do not evaluate the final weights on the test split' },
    'keep-best': { type: 'boolean', description: 'End on the weights of the best dev evaluation (replayed from the log), as MeZO reports' },
    device: { ...DEVICE_OPTIONS.device, description: "Where the ZO steps run (default cpu): the GPU copy of the model for the ZO methods; auto falls back to the CPU; emulated runs the CUDA kernels' host emulation (checks)" },
    kernels: DEVICE_OPTIONS.kernels,
  },
  async run(values) {
    const out = values.out;
    if (typeof out !== 'string') throw new UsageError('missing --out <dir>');
    let config: RunConfig | undefined;
    if (!values.resume) {
      if (typeof values.model !== 'string') throw new UsageError('missing --model <dir>');
      if (typeof values.task !== 'string') throw new UsageError('missing --task <file|sentiment>');
      const method = choice('method', values.method, [...ZO_METHODS, ...FO_METHODS]) ?? ('mezo' as ZoMethod | FoMethod);
      const fo = isFoMethod(method);
      if (fo)
        for (const k of ['eps', 'queries', 'dist', 'dir-bits'])
          if (values[k] !== undefined) throw new UsageError(`--${k} is for the ZO methods, not ${method}`);
      if (!fo && values['max-grad-norm'] !== undefined) throw new UsageError('--max-grad-norm is for the first-order methods');
      const steps = int(values, 'steps', 1000, 1);
      config = {
        model: values.model,
        weights: (values.weights as WeightScheme | undefined) ?? (fo ? foWeights(method) : 'fp32'),
        method,
        task: values.task,
        steps,
        lr: num(values, 'lr', 1e-5, (n) => n >= 0, 'a number >= 0'),
        schedule: choice('schedule', values.schedule, ['constant', 'linear', 'cosine'] as const) ?? 'constant',
        warmup: int(values, 'warmup', 0, 0),
        eps: pos(values, 'eps', 1e-3),
        batch: int(values, 'batch', 16, 1),
        accumulate: int(values, 'accumulate', 1, 1),
        seed: int(values, 'seed', 0, 0),
        queries: int(values, 'queries', 1, 1),
        dist: choice('dist', values.dist, ['gaussian', 'rademacher'] as const) ?? 'gaussian',
        ...(method === 'quzo' ? { directionBits: int(values, 'dir-bits', 4, 2) } : {}),
        weightDecay: num(values, 'weight-decay', 0, (n) => n >= 0, 'a number >= 0'),
        ...(values['max-grad-norm'] !== undefined ? { maxGradNorm: pos(values, 'max-grad-norm', 1) } : {}),
        evalEvery: int(values, 'eval-every', Math.max(1, Math.floor(steps / 5)), 0),
        evalBatch: int(values, 'eval-batch', 32, 1),
        evalExamples: int(values, 'eval-examples', 0, 0),
        ...(typeof values.trainable === 'string' ? { trainable: values.trainable.split(',').map((s) => s.trim()).filter(Boolean) } : {}),
        test: !values['no-test'],
        ...(values['keep-best'] ? { keepBest: true } : {}),
        ...(values.device !== undefined ? { device: choice('device', values.device, ['cpu', 'auto', 'cuda', 'emulated'] as const) } : {}),
        ...(values.kernels !== undefined ? { kernels: choice('kernels', values.kernels, ['exact', 'fast'] as const) } : {}),
      };
      if (config.kernels && (config.device ?? 'cpu') === 'cpu') throw new UsageError('--kernels is for --device auto|cuda|emulated');
      if (method !== 'quzo' && values['dir-bits'] !== undefined) throw new UsageError('--dir-bits is for --method quzo');
    } else {
      // every setting of the run is in its config.json: a flag given here would be silently ignored
      const given = Object.keys(finetuneCommand.options ?? {}).filter((k) => k !== 'out' && k !== 'resume' && values[k] !== undefined);
      if (given.length) throw new UsageError(`--resume takes every setting from the run folder's config.json; drop ${given.map((k) => `--${k}`).join(', ')}`);
    }
    const p = progress();
    const ac = new AbortController();
    const onSigint = () => ac.abort(new Error('interrupted (the run resumes with --resume)'));
    process.once('SIGINT', onSigint);
    try {
      return await finetune(config, out, !!values.resume, {
        signal: ac.signal,
        onStart: ({ start, steps }) => p.start(start, steps),
        onEvent: (e) => (e.type === 'step' ? p.step(e.step, e.loss, !!e.skipped) : p.eval(e.after, e.metrics.accuracy)),
      });
    } catch (err) {
      if (ac.signal.aborted) fail('ZOTUNE_INVALID_ARGUMENT', String((ac.signal.reason as Error).message));
      throw err;
    } finally {
      process.off('SIGINT', onSigint);
    }
  },
  render(r) {
    const c = r.config;
    const rows: [string, string][] = [
      ['run', r.dir],
      ['model', `${c.model} (${c.weights})`],
      ['method', isFoMethod(c.method)
        ? `${c.method} (first-order), lr ${c.lr} ${c.schedule}${c.maxGradNorm ? `, gradient clipped to ${c.maxGradNorm}` : ''}`
        : `${c.method}${c.directionBits ? ` (${c.directionBits}-bit directions)` : ''}, lr ${c.lr} ${c.schedule}, ε ${c.eps}, ${c.queries} quer${c.queries === 1 ? 'y' : 'ies'}`],
      ['task', `${c.task}, batch ${c.batch}${c.accumulate > 1 ? ` × ${c.accumulate}` : ''}, seed ${c.seed}`],
      ['steps', `${r.steps}${r.resumedFrom ? ` (resumed at ${r.resumedFrom})` : ''}, ${r.skipped} skipped, ${r.forwardPasses} forward passes${r.backwardPasses ? ` + ${r.backwardPasses} backward passes` : ''}`],
      ['time', `${r.seconds.toFixed(1)} s, ${r.stepsPerSecond.toFixed(2)} steps/s`],
      ['device', `${r.device.ran}${r.device.kernels ? ` (${r.device.kernels} kernels)` : ''}: ${r.device.reason}`],
      ['train loss', Number.isFinite(r.trainLoss) ? r.trainLoss.toFixed(4) + ' (last 10 % of steps)' : '-'],
      ['dev accuracy', `zero-shot ${pct(r.zeroShot?.accuracy)}, best ${pct(r.best?.accuracy)}${r.best ? ` (after ${r.best.after} steps)` : ''}, final ${pct(r.final?.accuracy)}${r.finalAfter !== r.steps ? ` (the weights after ${r.finalAfter} steps, --keep-best)` : ''}`],
      ['test accuracy', r.test ? `${pct(r.test.accuracy)} (final weights, ${r.test.n} examples)` : '-'],
      ['memory', `engine peak ${(r.peakEngineBytes / 2 ** 20).toFixed(1)} MiB, optimizer state ${(r.optimizerStateBytes / 2 ** 20).toFixed(1)} MiB, RSS peak ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB`],
      ['files', `config.json ${isFoMethod(c.method) ? 'checkpoint.safetensors' : 'zo.log'} metrics.jsonl curve.svg summary.json model/`],
    ];
    const w = Math.max(...rows.map((x) => x[0].length)) + 2;
    return rows.map(([k, v]) => k.padEnd(w) + v).join('\n');
  },
};
