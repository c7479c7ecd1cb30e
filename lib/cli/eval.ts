/**
 * `zotune eval`: score a model. Each way of scoring is an EvalMode picked by its own flag
 * (--text: perplexity over a text file); exactly one must be given. A new mode (e.g. --task,
 * accuracy on a classification task) is one more entry in EVAL_MODES with its options and renderer.
 */
import path from 'node:path';
import { readText } from '../io/files';
import type { LlamaModel } from '../model/llama';
import type { LlamaTokenizer } from '../model/tokenizer';
import { perplexity } from '../model/perplexity';
import { UsageError, intOption, type Command, type OptionSpec, type OptionValues } from './command';
import { MODEL_OPTION, WEIGHTS_OPTION, loadModel, loadTokenizer, secondsSince } from './model-options';
import { taskEvalMode, type TaskEval } from './eval-task';

interface EvalContext {
  model: LlamaModel;
  tokenizer: LlamaTokenizer;
  values: OptionValues;
  /** Progress line on stderr (a TTY only; cleared when done). */
  progress(done: number, total: number, what: string): void;
}

interface EvalMode<R extends { mode: string }> {
  /** Its result's `mode`. */
  name: R['mode'];
  /** The flag that selects this mode. */
  flag: string;
  /** Its options (the selecting flag included). */
  options: Record<string, OptionSpec>;
  /** Checks option values before the model loads (usage errors exit 2 without the wait). */
  validate?(values: OptionValues): void;
  run(ctx: EvalContext): Promise<R>;
  render(r: R): string[];
}

export interface PerplexityEval {
  mode: 'perplexity';
  text: string;
  /** Tokens of the file (no special tokens) = tokens predicted. */
  tokens: number;
  window: number;
  chunks: number;
  perplexity: number;
  meanLoss: number;
  totalNll: number;
  batch: number;
  seconds: number;
  tokensPerSecond: number;
}

const perplexityMode: EvalMode<PerplexityEval> = {
  name: 'perplexity',
  flag: 'text',
  options: {
    text: { type: 'string', value: '<file>', description: 'Perplexity over this UTF-8 text file' },
    window: { type: 'string', value: '<n>', description: 'Tokens per scored chunk, bos included (default 256, or the context if shorter): chunks of n - 1 file tokens' },
    batch: { type: 'string', value: '<n>', description: 'Chunks per forward pass (default 8)' },
  },
  validate(values) {
    intOption('window', values.window, 2);
    intOption('batch', values.batch, 1, 4096);
  },
  async run({ model, tokenizer, values, progress }) {
    const file = values.text as string;
    const text = readText(file);
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    const window = intOption('window', values.window, 2) ?? Math.min(256, model.config.maxPositionEmbeddings); // the default fits any context
    const batch = intOption('batch', values.batch, 1, 4096) ?? 8;
    const t0 = performance.now();
    const r = await perplexity(model, ids, { window, batchSize: batch, onProgress: (d, n) => progress(d, n, 'chunks') });
    const seconds = secondsSince(t0);
    return {
      mode: 'perplexity',
      text: path.resolve(file),
      tokens: r.predicted,
      window: r.window,
      chunks: r.chunks,
      perplexity: r.perplexity,
      meanLoss: r.meanLoss,
      totalNll: r.totalNll,
      batch,
      seconds,
      tokensPerSecond: seconds > 0 ? r.predicted / seconds : 0,
    };
  },
  render: (r) => [
    `text         ${r.text}`,
    `tokens       ${r.tokens} in ${r.chunks} chunk${r.chunks === 1 ? '' : 's'} of up to ${r.window - 1} (+ bos)`,
    `mean loss    ${r.meanLoss.toFixed(6)} nats/token`,
    `perplexity   ${r.perplexity.toFixed(4)}`,
    `speed        ${r.tokensPerSecond.toFixed(0)} tokens/s (${r.seconds.toFixed(2)} s, ${r.batch} chunks per forward)`,
  ],
};

const EVAL_MODES: EvalMode<EvalModeResult>[] = [perplexityMode, taskEvalMode];

/** What a mode returns; a new mode adds its result type to this union. */
export type EvalModeResult = PerplexityEval | TaskEval;
export type EvalResult = { model: string; weights: string } & EvalModeResult;

export const evalCommand: Command<EvalResult> = {
  name: 'eval',
  summary: 'Evaluate a model: perplexity and mean loss over a text file (--text, chunks of --window tokens), or accuracy on a task split (--task).',
  options: {
    ...MODEL_OPTION,
    ...Object.assign({}, ...EVAL_MODES.map((m) => m.options)),
    ...WEIGHTS_OPTION,
  },
  async run(values) {
    const chosen = EVAL_MODES.filter((m) => values[m.flag] !== undefined);
    const flags = EVAL_MODES.map((m) => `--${m.flag}`).join(', ');
    if (chosen.length !== 1) throw new UsageError(chosen.length ? `give only one of ${flags}` : `missing what to evaluate: ${flags}`);
    const mode = chosen[0];
    mode.validate?.(values);
    const tokenizer = loadTokenizer(values);
    const model = await loadModel(values);
    const tty = process.stderr.isTTY;
    let drawn = false;
    const clear = () => {
      if (drawn) process.stderr.write('\r\x1b[K');
      drawn = false;
    };
    const progress = (done: number, total: number, what: string) => {
      if (!tty) return;
      if (done >= total) return clear();
      process.stderr.write(`\reval: ${done}/${total} ${what}`);
      drawn = true;
    };
    try {
      const r = await mode.run({ model, tokenizer, values, progress });
      return { model: model.dir, weights: model.weightScheme, ...r };
    } finally {
      clear(); // an error message must not land behind a progress line
      model.dispose();
    }
  },
  render: (r) => [`model        ${r.model} (${r.weights})`, ...EVAL_MODES.find((m) => m.name === r.mode)!.render(r)].join('\n'),
};
