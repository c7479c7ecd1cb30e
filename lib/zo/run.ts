/**
 * A fine-tuning run and its folder:
 *   config.json    the run's settings (a resumed run reads them back)
 *   zo.log         ZO methods: the step log (lib/zo/log.ts): base weights + this file = the fine-tuned weights
 *   checkpoint.safetensors  first-order methods (fo-adam, qat-int4, ...): the trained tensors and
 *                  the optimiser state, written at every evaluation and at the end (a gradient
 *                  step is not a function of a seed, so such a run cannot be replayed from a log)
 *   metrics.jsonl  one JSON line per step and per evaluation
 *   curve.svg      loss and accuracy curve
 *   summary.json   final numbers
 *   model/         the fine-tuned weights exported as a Hugging Face folder (model.save)
 * A run killed at any moment resumes with `resume: true`: the log's steps are replayed onto the
 * base weights and training continues at the next step, so no step is lost or done twice. A
 * first-order run resumes from its last checkpoint (the steps after it are run again, identically:
 * data order and rounding seeds are functions of (seed, step)).
 *
 * `device` places the ZO steps (every ZO method) on a device copy of the model (LlamaModel.toDevice):
 * evaluations, the export and replays read the host model, which the device copy is copied back
 * into first. The log is the same either way (seeds, projected gradients), and its updates are the
 * CPU's bit for bit, so a run made on the GPU replays on the CPU to the same weights.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZotuneError, fail } from '../errors';
import { writeWhole } from '../io/files';
import { LlamaModel, type WeightScheme } from '../model/llama';
import { DEVICE_CHOICES, placeModel, type DeviceChoice, type Placement } from '../model/device-llama';
import type { LlamaDeviceKernels } from '../native/binding';
import { LlamaTokenizer } from '../model/tokenizer';
import { memory } from '../runtime';
import { loadTask, resolveTask } from '../tasks/builtin';
import type { EvalResult } from '../tasks/task';
import type { ScheduleKind } from '../schedule';
import { curveSvg } from './curve';
import { ZoLog } from './log';
import { ZoOptimizer, type ZoMethod, type ZoModel } from './optimizer';
import { optimizerFromHeader, optimizerHeader, replay } from './replay';
import { checkSteps, fit, taskData, type StepOptimizer, type TrainEvent } from './trainer';
import { FO_METHODS, FoOptimizer, type FoMethod } from '../fo/fit';

/** Whether a run method is first-order (lib/fo/fit.ts) rather than ZO. */
export const isFoMethod = (m: string): m is FoMethod => (FO_METHODS as readonly string[]).includes(m);

/** Where the ZO steps run: 'cpu' (default), 'cuda', 'auto' (cuda when usable and supported, else the
 * CPU, with the reason in the summary) or 'emulated' (the CUDA kernels' host emulation: checks). */
export type RunDevice = DeviceChoice;

export interface RunConfig {
  model: string;
  weights: WeightScheme;
  method: ZoMethod | FoMethod;
  task: string;
  steps: number;
  lr: number;
  schedule: ScheduleKind;
  warmup: number;
  eps: number;
  batch: number;
  accumulate: number;
  seed: number;
  queries: number;
  dist: 'gaussian' | 'rademacher';
  /** QuZO direction bits. */
  directionBits?: number;
  weightDecay: number;
  /** First-order: clip each step's gradient to this global L2 norm (absent = no clipping). */
  maxGradNorm?: number;
  evalEvery: number;
  evalBatch: number;
  /** Dev examples used by the periodic evaluation (0 = all). */
  evalExamples: number;
  /** Trainable tensors (globs); absent = all. */
  trainable?: string[];
  /** Evaluate the final weights on the test split. */
  test: boolean;
  /**
   * End on the weights of the best periodic dev evaluation (MeZO's protocol: keep the best dev
   * checkpoint), rebuilt by replaying the log's first `best.after` steps onto the base weights;
   * the final dev / test numbers and the exported model are then those weights'. ZO methods only
   * (first-order runs keep no per-evaluation weights). Default false.
   */
  keepBest?: boolean;
  /** Where the ZO steps run (default 'cpu'). */
  device?: RunDevice;
  /** The device model's kernels (default 'exact': the CPU's bits; 'fast': gemv + bf16 tensor cores). */
  kernels?: LlamaDeviceKernels;
}

export interface RunSummary {
  dir: string;
  config: RunConfig;
  steps: number;
  resumedFrom: number;
  skipped: number;
  /**
   * Forward passes of training batches (ZO: 2 per query and micro-batch, counted whole although the
   * queries of a micro-batch share one zoProbeMany call that runs the layers below the trainable
   * tensors once; first-order: 1 per micro-batch).
   */
  forwardPasses: number;
  /** Backward passes (first-order: 1 per micro-batch, each costing about 2 forwards; ZO: 0). */
  backwardPasses: number;
  seconds: number;
  stepsPerSecond: number;
  /** Mean training loss over the last 10 % of the steps run in this process. */
  trainLoss: number;
  zeroShot?: EvalResult;
  best?: { after: number; accuracy: number; loss: number };
  /** The step count whose weights `final`, `test` and the exported model are (< steps with keepBest). */
  finalAfter: number;
  final?: EvalResult;
  test?: EvalResult;
  optimizerStateBytes: number;
  peakEngineBytes: number;
  peakRssBytes: number;
  /** Where the steps ran, and why there. */
  device: Placement['info'];
}

export interface RunHooks {
  signal?: AbortSignal;
  onEvent?: (e: TrainEvent) => void;
  /** Called once before the first step with the step a resumed run starts at. */
  onStart?: (info: { start: number; steps: number }) => void;
  /** Export the final weights into dir/model (default true). */
  save?: boolean;
  /** Evaluate on dev before the first step (default true; the zero-shot row of the summary). */
  evalAtStart?: boolean;
}

const CONFIG = 'config.json', LOG = 'zo.log', METRICS = 'metrics.jsonl', CHECKPOINT = 'checkpoint.safetensors';

function foOptimizer(c: RunConfig): FoOptimizer {
  return new FoOptimizer({ method: c.method as FoMethod, weightDecay: c.weightDecay, maxGradNorm: c.maxGradNorm, seed: c.seed });
}

/** LlamaModel implements the ZO contract the optimisers use (checked here by the compiler). */
const asZoModel = (model: LlamaModel): ZoModel => model;

async function loadRunModel(c: RunConfig): Promise<LlamaModel> {
  const model = await LlamaModel.load(c.model, { weights: c.weights });
  if (c.trainable && c.trainable.length) model.setTrainable(c.trainable);
  return model;
}

/** Why the steps of run c cannot run on the device model, if they cannot. */
function deviceLimit(c: RunConfig): string | undefined {
  if (isFoMethod(c.method)) return `${c.method} is first-order (the device model runs ZO steps)`;
  return undefined;
}

/** A run that asks for the device ('cuda' or 'emulated') must be able to use it. */
function checkDevice(c: RunConfig): void {
  const limit = c.device === 'cuda' || c.device === 'emulated' ? deviceLimit(c) : undefined;
  if (limit) fail('ZOTUNE_UNSUPPORTED', `device '${c.device}': ${limit}; use device 'cpu' (or 'auto', which falls back to it)`);
}

/** The device copy the ZO steps of run c take, if any (c.device; 'auto' falls back to the CPU). */
function placeSteps(model: LlamaModel, c: RunConfig): Promise<Placement> {
  return placeModel(model, c.device ?? 'cpu', c.kernels, deviceLimit(c));
}

const runSchedule = (c: RunConfig) => ({ kind: c.schedule, lr: c.lr, totalSteps: c.steps, warmupSteps: c.warmup });

/** A folder whose ZO run was killed before its log existed: only its config.json (safe to start afresh). */
function unstartedZoRun(dir: string): boolean {
  if (fs.existsSync(path.join(dir, LOG))) return false;
  try {
    const c = JSON.parse(fs.readFileSync(path.join(dir, CONFIG), 'utf8')) as Partial<RunConfig>;
    return typeof c.method === 'string' && !isFoMethod(c.method) && typeof c.task === 'string' && typeof c.steps === 'number';
  } catch {
    return false;
  }
}

export function readRunConfig(dir: string): RunConfig {
  const file = path.join(dir, CONFIG);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as RunConfig;
  } catch (err) {
    throw new ZotuneError('ZOTUNE_BAD_FILE', `${file}: ${(err as Error).message} (not a zotune run folder?)`);
  }
}

/** Runs (or resumes) a fine-tuning run in `dir`. */
export async function finetune(config: RunConfig | undefined, dir: string, resume: boolean, hooks: RunHooks = {}): Promise<RunSummary> {
  dir = path.resolve(dir);
  const logFile = path.join(dir, LOG), configFile = path.join(dir, CONFIG), ckptFile = path.join(dir, CHECKPOINT);
  let c: RunConfig;
  let log: ZoLog | undefined;
  let create: (() => void) | undefined; // a new run's folder: written once everything the run needs loaded and checked out
  let checkNew: ((model: LlamaModel) => void) | undefined;
  if (resume) {
    if (!fs.existsSync(logFile) && !fs.existsSync(configFile)) fail('ZOTUNE_INVALID_ARGUMENT', `${dir} holds no run to resume (no ${LOG} or ${CONFIG})`);
    c = readRunConfig(dir);
    if (!isFoMethod(c.method)) {
      if (!fs.existsSync(logFile)) fail('ZOTUNE_INVALID_ARGUMENT', `${dir} holds no run to resume: no ${LOG}, the run never started (start it again, without resume)`);
      log = ZoLog.open(logFile);
    }
  } else {
    if (!config) fail('ZOTUNE_INVALID_ARGUMENT', 'a new run needs its settings');
    if (fs.existsSync(logFile) || fs.existsSync(ckptFile) || (fs.existsSync(configFile) && !unstartedZoRun(dir)))
      fail('ZOTUNE_INVALID_ARGUMENT', `${dir} already holds a run (or a ${CONFIG} that is not a run's): resume it or choose another folder`);
    c = { ...config, model: path.resolve(config.model), task: resolveTask(config.task) };
    if (c.device !== undefined && !DEVICE_CHOICES.includes(c.device)) fail('ZOTUNE_INVALID_ARGUMENT', `device must be one of ${DEVICE_CHOICES.join(', ')}, got ${String(c.device)}`);
    if (c.kernels !== undefined && c.kernels !== 'exact' && c.kernels !== 'fast') fail('ZOTUNE_INVALID_ARGUMENT', `kernels must be 'exact' or 'fast', got ${String(c.kernels)}`);
    checkDevice(c);
    if (c.keepBest && isFoMethod(c.method)) fail('ZOTUNE_UNSUPPORTED', `keepBest rebuilds the best evaluation from the ZO step log; ${c.method} keeps no log`);
    const nc = c;
    const zo = isFoMethod(nc.method) ? undefined : new ZoOptimizer({ method: nc.method, eps: nc.eps, queries: nc.queries, dist: nc.dist, directionBits: nc.directionBits, weightDecay: nc.weightDecay });
    if (!zo) foOptimizer(nc).dispose();
    const header = zo ? optimizerHeader(zo) : undefined;
    checkNew = (m) => {
      const fo = zo ? undefined : foOptimizer(nc);
      try {
        checkSteps(m, (zo ?? fo)!, runSchedule(nc), 0, nc.steps, !!zo);
      } finally {
        (zo ?? fo)!.dispose();
      }
    };
    create = () => {
      fs.mkdirSync(dir, { recursive: true });
      writeWhole(configFile, JSON.stringify(nc, null, 2) + '\n', 'replace');
      fs.rmSync(path.join(dir, METRICS), { force: true });
      if (header) log = ZoLog.create(logFile, { optimizer: header, seed: nc.seed, model: nc.model, weights: nc.weights, task: nc.task });
    };
  }
  let model: LlamaModel | undefined;
  let optimizer: StepOptimizer | undefined;
  let placement: Placement | undefined;
  try {
    model = await loadRunModel(c);
    const tokenizer = LlamaTokenizer.load(c.model);
    const { name, task, splits } = loadTask(c.task, tokenizer); // fixed splits: the run seed orders the data, never re-splits it
    for (const [split, examples] of Object.entries(splits)) task.check(examples, `task ${c.task}, ${split} split`);
    checkNew?.(model);
    // where training continues: after the log's steps (ZO) or the last checkpoint (first-order)
    let resumeFrom: { step: number; lossSum: number; lossCount: number } | undefined;
    if (log) {
      optimizer = optimizerFromHeader(log.header);
      await replay(asZoModel(model), optimizer as ZoOptimizer, log, { signal: hooks.signal });
    }
    placement = await placeSteps(model, c);
    create?.(); // a new run: its settings, model, task, schedule and device all work
    if (!optimizer) optimizer = log ? optimizerFromHeader(log.header) : foOptimizer(c);
    const fo = optimizer instanceof FoOptimizer ? optimizer : undefined;
    const zm = asZoModel(model);
    if (fo && fs.existsSync(ckptFile)) {
      const meta = fo.restore(zm, ckptFile);
      resumeFrom = { step: Number(meta.step), lossSum: Number(meta.lossSum), lossCount: Number(meta.lossCount) };
    }
    const start = log ? log.nextStep : resumeFrom?.step ?? 0;
    const stepModel: ZoModel = placement.device ?? zm;
    // the host model reads the device copy's weights before anything else reads them
    const toHost = async () => placement?.device?.toHost();

    // metrics: keep what the log / checkpoint confirms (a kill may leave the file behind the log,
    // never ahead of it; a first-order run redoes the steps after its checkpoint), then add the
    // steps it missed from the log records
    const metricsFile = path.join(dir, METRICS);
    const kept: string[] = [];
    const seenSteps = new Set<number>();
    if (fs.existsSync(metricsFile))
      for (const line of fs.readFileSync(metricsFile, 'utf8').split('\n')) {
        if (!line.trim()) continue;
        let e: TrainEvent;
        try {
          e = JSON.parse(line);
        } catch {
          continue; // a torn last line
        }
        if ((e.type === 'step' && e.step < start) || (e.type === 'eval' && e.after <= start)) {
          kept.push(line);
          if (e.type === 'step') seenSteps.add(e.step);
        }
      }
    for (const r of log?.records() ?? [])
      if (!seenSteps.has(r.step))
        kept.push(JSON.stringify({ type: 'step', step: r.step, loss: r.loss, g: r.queries.map((q) => q.g), lr: r.lr, fromLog: true, ...(r.skipped ? { skipped: r.skipped } : {}) }));
    fs.writeFileSync(metricsFile, kept.length ? kept.join('\n') + '\n' : '');

    const dev = c.evalExamples > 0 ? splits.dev.slice(0, c.evalExamples) : splits.dev;
    // QAT is evaluated (and exported) with the weights it deploys: its fake-quantized linear layers
    const deployed = <T>(fn: () => Promise<T>): Promise<T> => (fo ? fo.withDeployedWeights(zm, fn) : fn());
    const evaluateOn = async (examples: typeof dev) => {
      await toHost();
      return deployed(() => task.evaluate(model!, examples, { batchSize: c.evalBatch, signal: hooks.signal }));
    };
    const evaluate = dev.length
      ? async () => {
          const r = await evaluateOn(dev);
          return { accuracy: r.accuracy, loss: r.loss, ...(r.f1 !== undefined ? { f1: r.f1 } : {}) };
        }
      : undefined;
    const data = taskData(task, splits.train, { batchSize: c.batch, microBatches: c.accumulate, seed: c.seed });
    hooks.onStart?.({ start, steps: c.steps });
    const t0 = performance.now();
    const losses: number[] = [];
    let skipped = log ? log.records().filter((r) => r.skipped).length : 0;
    for (const l of kept) if (!log && JSON.parse(l).skipped) skipped++;
    // the divergence guard's running loss, kept for first-order checkpoints
    let lossSum = resumeFrom?.lossSum ?? 0, lossCount = resumeFrom?.lossCount ?? 0;
    const writeCheckpoint = (step: number) => fo?.checkpoint(zm, ckptFile, { step, lossSum, lossCount, seed: c.seed });
    let zeroShot: EvalResult | undefined;
    let lastEval: (TrainEvent & { type: 'eval' }) | undefined;
    let best: RunSummary['best'];
    const evaluated = new Set<number>(); // the evaluations a resumed run already has
    for (const r of fs.readFileSync(metricsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as TrainEvent)) {
      if (r.type !== 'eval') continue;
      evaluated.add(r.after);
      lastEval = r;
      if (r.after === 0) zeroShot = { n: dev.length, ...r.metrics };
      if (!best || r.metrics.accuracy > best.accuracy || (r.metrics.accuracy === best.accuracy && r.metrics.loss < best.loss))
        best = { after: r.after, accuracy: r.metrics.accuracy, loss: r.metrics.loss };
    }
    // evalEvery 0: only after the last step (a keepBest candidate too); a resumed run first redoes an
    // evaluation due where it starts that a kill lost, so it evaluates exactly where an uninterrupted run does
    const every = c.evalEvery > 0 ? c.evalEvery : c.steps;
    const due = start === 0 ? (hooks.evalAtStart ?? true) : every > 0 && (start % every === 0 || start === c.steps);
    const it = fit(stepModel, optimizer, data, {
      steps: c.steps,
      lr: runSchedule(c),
      seed: c.seed,
      microBatches: c.accumulate,
      ...(log ? { log } : { resumeFrom }),
      evalEvery: evaluate ? every : 0,
      evaluate,
      evalAtStart: !!evaluate && due && !evaluated.has(start),
      signal: hooks.signal,
    });
    for await (const e of it) {
      fs.appendFileSync(metricsFile, JSON.stringify(e) + '\n');
      if (e.type === 'step') {
        if (e.skipped) skipped++;
        else {
          losses.push(e.loss);
          lossSum += e.loss;
          lossCount++;
        }
      } else {
        if (e.after > start) writeCheckpoint(e.after);
        lastEval = e;
        if (e.after === 0) zeroShot = { n: dev.length, ...e.metrics };
        if (!best || e.metrics.accuracy > best.accuracy || (e.metrics.accuracy === best.accuracy && e.metrics.loss < best.loss))
          best = { after: e.after, accuracy: e.metrics.accuracy, loss: e.metrics.loss };
      }
      hooks.onEvent?.(e);
    }
    const seconds = (performance.now() - t0) / 1000;
    const ran = c.steps - start;
    const tail = losses.slice(Math.floor(losses.length * 0.9));
    // keepBest: back to the best evaluated weights = base + the log's first best.after steps
    let finalAfter = c.steps;
    await toHost();
    if (c.keepBest && log && best && best.after < c.steps) {
      const restored = await loadRunModel(c);
      const replayer = optimizerFromHeader(log.header);
      try {
        await replay(asZoModel(restored), replayer, log, { upTo: best.after, signal: hooks.signal });
      } catch (err) {
        restored.dispose();
        throw err;
      } finally {
        replayer.dispose();
      }
      placement.device?.dispose();
      placement.device = undefined;
      model.dispose();
      model = restored;
      finalAfter = best.after;
    }
    const summary: RunSummary = {
      dir, config: c, steps: c.steps, resumedFrom: start, skipped, finalAfter,
      forwardPasses: fo ? c.steps * c.accumulate : c.steps * 2 * c.queries * c.accumulate,
      backwardPasses: fo ? c.steps * c.accumulate : 0,
      seconds, stepsPerSecond: ran > 0 ? ran / seconds : 0,
      trainLoss: tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length : NaN,
      zeroShot, best,
      optimizerStateBytes: optimizer.stateBytes,
      peakEngineBytes: memory().engine.totalPeak,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      device: placement.info,
    };
    // the final weights on the whole dev split (the last periodic evaluation already is that when it ran on all of dev)
    const last = lastEval?.after === finalAfter && dev.length === splits.dev.length ? lastEval : undefined;
    if (last) summary.final = { n: dev.length, accuracy: last.metrics.accuracy, loss: last.metrics.loss, ...(last.metrics.f1 !== undefined ? { f1: last.metrics.f1 } : {}) };
    else if (splits.dev.length) summary.final = await evaluateOn(splits.dev);
    if (c.test && splits.test.length) summary.test = await evaluateOn(splits.test);
    if (fo && lastEval?.after !== c.steps) writeCheckpoint(c.steps);
    const events = fs.readFileSync(metricsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as TrainEvent & { loss?: number });
    fs.writeFileSync(
      path.join(dir, 'curve.svg'),
      curveSvg({
        title: `${c.method} · ${c.weights} · ${name} · lr ${c.lr}${fo ? '' : ` · ε ${c.eps}`} · batch ${c.batch}`,
        loss: events.filter((e): e is TrainEvent & { type: 'step' } => e.type === 'step' && !e.skipped && Number.isFinite(e.loss)).map((e) => [e.step, e.loss]),
        accuracy: events.filter((e): e is TrainEvent & { type: 'eval' } => e.type === 'eval').map((e) => [e.after, e.metrics.accuracy]),
      }),
    );
    if (hooks.save ?? true) await deployed(() => model!.save(path.join(dir, 'model')));
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    return summary;
  } finally {
    log?.close();
    optimizer?.dispose();
    placement?.device?.dispose();
    model?.dispose();
  }
}

/** Rebuilds the weights of a run (optionally only its first `upTo` steps) and exports them. */
export async function replayRun(dir: string, out: string, upTo?: number, onStep?: (step: number) => void): Promise<{ steps: number; out: string }> {
  const c = readRunConfig(dir);
  if (isFoMethod(c.method))
    fail('ZOTUNE_UNSUPPORTED', `${dir} is a first-order run (${c.method}): its steps are gradients, not seeds, so no log can replay them; its weights are in ${path.join(dir, 'model')} (and ${path.join(dir, CHECKPOINT)} for resuming)`);
  const real = (p: string) => (fs.existsSync(p) ? fs.realpathSync(p) : path.resolve(p));
  if (real(out) === real(c.model)) fail('ZOTUNE_INVALID_ARGUMENT', `${out} is the run's base model: export to another folder (the log replays onto those weights)`);
  const log = ZoLog.read(path.join(dir, LOG)); // never written: a live run may be appending to it
  const model = await loadRunModel(c);
  const optimizer = optimizerFromHeader(log.header);
  try {
    const n = await replay(asZoModel(model), optimizer, log, { upTo, onStep: (r) => onStep?.(r.step) });
    await model.save(out);
    return { steps: n, out: path.resolve(out) };
  } finally {
    log.close();
    optimizer.dispose();
    model.dispose();
  }
}
