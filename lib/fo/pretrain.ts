/**
 * Pretraining a LLaMA model from a plain-text corpus with the first-order engine: the text is
 * tokenized once, the last `valFraction` of the tokens is held out, training batches are random
 * windows of the rest (offsets a pure function of (seed, step, row) via Philox), AdamW with a
 * cosine schedule and linear warmup. At every checkpoint the validation loss is measured over the
 * whole held-out stream and the model is saved (atomically, LlamaModel.save) into `<out>/model`,
 * with one line appended to `<out>/metrics.jsonl`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../errors';
import { Tensor } from '../tensor';
import { fillSync, philox4x32, Purpose } from '../rng';
import { writeSafetensors } from '../io/safetensors';
import { parseLlamaConfig } from '../model/config';
import { LlamaModel, expectedShape, llamaTensorNames } from '../model/llama';
import { makeSchedule } from '../schedule';
import { FoTrainer } from './trainer';
import { isNorm } from './optim';

/** Files that make a tokenizer; copied from the tokenizer folder into a fresh model. */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model'];

export interface RandomInitOptions {
  /** HF config.json contents (LlamaForCausalLM). */
  config: Record<string, unknown>;
  /** Folder holding tokenizer.json (and its companions), copied into `dir`. */
  tokenizerDir: string;
  seed?: number;
}

/**
 * Writes a HF folder with randomly initialised weights and loads it: every matrix normal(0,
 * initializer_range) (HF LlamaPreTrainedModel._init_weights; default 0.02), norm weights 1. The
 * values of tensor i are Philox normals of (seed, stream i), so an init is reproducible anywhere.
 */
export async function randomInit(dir: string, opts: RandomInitOptions): Promise<LlamaModel> {
  const json = { architectures: ['LlamaForCausalLM'], model_type: 'llama', torch_dtype: 'float32', ...opts.config };
  const config = parseLlamaConfig(json, 'the init config');
  const std = (json as { initializer_range?: unknown }).initializer_range ?? 0.02;
  if (typeof std !== 'number' || !(std > 0 && Number.isFinite(std))) fail('ZOTUNE_INVALID_ARGUMENT', `initializer_range must be a number > 0, got ${String(std)}`);
  if (!fs.existsSync(path.join(opts.tokenizerDir, 'tokenizer.json'))) fail('ZOTUNE_BAD_FILE', `${opts.tokenizerDir}: no tokenizer.json`);
  const seed = opts.seed ?? 0;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json, null, 2) + '\n');
  const gen: Record<string, unknown> = {};
  if (config.bosTokenId !== undefined) gen.bos_token_id = config.bosTokenId;
  if (config.eosTokenIds.length) gen.eos_token_id = config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds;
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify(gen, null, 2) + '\n');
  for (const f of TOKENIZER_FILES) if (fs.existsSync(path.join(opts.tokenizerDir, f))) fs.copyFileSync(path.join(opts.tokenizerDir, f), path.join(dir, f));
  const names = llamaTensorNames(config);
  writeSafetensors(
    path.join(dir, 'model.safetensors'),
    names.map((name, stream) => ({
      name,
      dtype: 'F32',
      shape: expectedShape(config, name),
      data: () => {
        const t = Tensor.empty(expectedShape(config, name), 'f32', 'workspace');
        const v = t.data() as Float32Array;
        if (isNorm(name)) v.fill(1);
        else {
          fillSync(t, 'normal', { seed, stream, purpose: Purpose.gauss });
          for (let i = 0; i < v.length; i++) v[i] *= std;
        }
        return { data: v, release: () => t.dispose() };
      },
    })),
    { format: 'pt' },
  );
  return LlamaModel.load(dir);
}

export interface PretrainOptions {
  /** Token ids of the whole corpus (no special tokens); the tail is the validation split. */
  ids: ArrayLike<number>;
  /** Run folder: `model/` (the HF checkpoint) and `metrics.jsonl`. */
  out: string;
  steps: number;
  /** Sequences per step (default 8). */
  batch?: number;
  /** Tokens per training sequence (default 128); at most max_position_embeddings. */
  seqLen?: number;
  /** Peak AdamW learning rate (default 1e-3). */
  lr?: number;
  /** Linear warmup steps (default min(100, steps / 10)). */
  warmup?: number;
  weightDecay?: number;
  /** Global gradient-norm clip (default 1). */
  maxGradNorm?: number;
  /** Checkpoint (validation loss + save) every n steps, and after the last (default steps / 5). */
  evalEvery?: number;
  /** Fraction of the tokens held out for validation (default 0.05). */
  valFraction?: number;
  seed?: number;
  /** Called after every step. */
  onStep?(s: { step: number; loss: number; lr: number; tokens: number; seconds: number }): void;
  /** Called after every checkpoint. */
  onCheckpoint?(c: Checkpoint): void;
}

export interface Checkpoint {
  step: number;
  /** Mean training loss over the steps since the previous checkpoint (NaN at step 0). */
  trainLoss: number;
  valLoss: number;
  /** Training tokens per second (predicted targets) since the previous checkpoint. */
  tokensPerSec: number;
  lr: number;
  seconds: number;
}

export interface PretrainResult {
  out: string;
  modelDir: string;
  trainTokens: number;
  valTokens: number;
  checkpoints: Checkpoint[];
}

/** Mean next-token loss over consecutive seqLen windows of the validation stream. */
export async function streamLoss(model: LlamaModel, ids: ArrayLike<number>, seqLen: number, batch = 16): Promise<number> {
  const windows: number[][] = [];
  for (let at = 0; at + 1 < ids.length; at += seqLen) windows.push(Array.from({ length: Math.min(seqLen + 1, ids.length - at) }, (_, i) => ids[at + i]));
  let nll = 0, count = 0;
  for (let i = 0; i < windows.length; i += batch) {
    const r = await model.forward(windows.slice(i, i + batch), { targets: 'next', logits: 'none' });
    nll += r.loss * r.count;
    count += r.count;
  }
  return nll / count;
}

function checkInt(name: string, v: number, min: number): number {
  if (!Number.isSafeInteger(v) || v < min) fail('ZOTUNE_INVALID_ARGUMENT', `${name} must be an integer >= ${min}, got ${v}`);
  return v;
}

export async function pretrain(model: LlamaModel, opts: PretrainOptions): Promise<PretrainResult> {
  const steps = checkInt('steps', opts.steps, 1);
  const batch = checkInt('batch', opts.batch ?? 8, 1);
  const seqLen = checkInt('seqLen', opts.seqLen ?? 128, 2);
  const seed = checkInt('seed', opts.seed ?? 0, 0);
  const evalEvery = checkInt('evalEvery', opts.evalEvery ?? Math.max(1, Math.floor(steps / 5)), 1);
  const warmup = checkInt('warmup', opts.warmup ?? Math.min(100, Math.floor(steps / 10)), 0);
  const valFraction = opts.valFraction ?? 0.05;
  if (!(valFraction > 0 && valFraction < 1)) fail('ZOTUNE_INVALID_ARGUMENT', `valFraction must be in (0, 1), got ${valFraction}`);
  if (seqLen + 1 > model.config.maxPositionEmbeddings) fail('ZOTUNE_OUT_OF_RANGE', `seqLen + 1 (${seqLen + 1}) exceeds max_position_embeddings ${model.config.maxPositionEmbeddings}`);
  const ids = Int32Array.from(opts.ids as ArrayLike<number>);
  const valStart = ids.length - Math.max(seqLen + 1, Math.round(ids.length * valFraction));
  if (valStart < seqLen + 2) fail('ZOTUNE_INVALID_ARGUMENT', `the corpus (${ids.length} tokens) is too short for seqLen ${seqLen} and a ${valFraction} validation split`);
  const train = ids.subarray(0, valStart), val = ids.subarray(valStart);
  for (const t of ids) if (t < 0 || t >= model.config.vocabSize) fail('ZOTUNE_OUT_OF_RANGE', `token id ${t} is outside the vocabulary (${model.config.vocabSize})`);

  const schedule = makeSchedule({ lr: opts.lr ?? 1e-3, kind: 'cosine', warmupSteps: Math.min(warmup, steps - 1), totalSteps: steps, minLr: (opts.lr ?? 1e-3) * 0.1 });
  const trainer = new FoTrainer(model, {
    optimizer: { kind: 'adamw', lr: schedule, weightDecay: opts.weightDecay ?? 0.1, betas: [0.9, 0.95] },
    maxGradNorm: opts.maxGradNorm ?? 1,
  });
  const modelDir = path.join(opts.out, 'model');
  const metrics = path.join(opts.out, 'metrics.jsonl');
  fs.mkdirSync(opts.out, { recursive: true });
  fs.writeFileSync(metrics, '');
  const checkpoints: Checkpoint[] = [];
  const t0 = performance.now();
  let since = t0, lossSum = 0, lossSteps = 0, tokens = 0;
  const checkpoint = async (step: number) => {
    const now = performance.now();
    const c: Checkpoint = {
      step,
      trainLoss: lossSteps ? lossSum / lossSteps : NaN,
      valLoss: await streamLoss(model, val, seqLen),
      tokensPerSec: tokens / ((now - since) / 1000) || 0,
      lr: schedule(Math.min(step, steps - 1)),
      seconds: (now - t0) / 1000,
    };
    await model.save(modelDir);
    fs.appendFileSync(metrics, JSON.stringify(c) + '\n');
    checkpoints.push(c);
    opts.onCheckpoint?.(c);
    lossSum = lossSteps = tokens = 0;
    since = performance.now();
  };
  try {
    await checkpoint(0);
    const span = train.length - seqLen; // window starts in [0, span): seqLen + 1 tokens each
    for (let step = 0; step < steps; step++) {
      const rows: Int32Array[] = [];
      for (let b = 0; b < batch; b++) {
        const w = philox4x32([step, b, Purpose.uniform, 0], [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0]);
        const at = Number(((BigInt(w[0]) << 32n) | BigInt(w[1])) % BigInt(span));
        rows.push(train.subarray(at, at + seqLen + 1));
      }
      const r = await trainer.step([{ batch: rows }]);
      if (!Number.isFinite(r.loss)) fail('ZOTUNE_NONFINITE', `training loss became ${r.loss} at step ${step}`);
      lossSum += r.loss;
      lossSteps++;
      tokens += r.count;
      opts.onStep?.({ step, loss: r.loss, lr: schedule(step), tokens: r.count, seconds: (performance.now() - t0) / 1000 });
      if ((step + 1) % evalEvery === 0 || step + 1 === steps) await checkpoint(step + 1);
    }
  } finally {
    trainer.dispose();
  }
  return { out: path.resolve(opts.out), modelDir: path.resolve(modelDir), trainTokens: train.length, valTokens: val.length, checkpoints };
}
