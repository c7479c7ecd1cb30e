/**
 * Tasks by name or file. Builtin `sentiment`: the UCI Sentiment Labelled Sentences (Kotzias et
 * al., KDD 2015; CC BY 4.0; 1000 Amazon + 1000 Yelp + 1000 IMDB sentences, balanced 0/1) as
 * shipped in the `sentiment@5.0.2` npm package's test fixtures — read from node_modules, never
 * bundled (`npm i -D sentiment@5.0.2`). Fixed splits: 1000 train / 500 dev / 1000 test.
 *
 * A task file is either a JSON spec ({ kind, template, labelWords | choicesField | targetField,
 * train, dev, test: data files relative to the spec, or data + split sizes }) or a .jsonl/.csv of
 * {text, label} examples, treated as binary sentiment-style classification with the sentiment
 * template and split 60/20/20 by the split seed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ZotuneError, fail } from '../errors';
import type { LlamaTokenizer } from '../model/tokenizer';
import { type Example, type Splits, loadExamples, split } from './data';
import { dataPackageDir } from '../io/files';
import { PromptTask, type TaskSpec } from './task';

/**
 * The sentiment prompt: the SST-2 template with single-token label words (one logits row per
 * example). Chosen on the dev split only, by zero-shot tiny-llama dev cross-entropy over 11
 * (template, label words) candidates: '{text} It was' {bad|great} had the lowest (0.692; dev
 * accuracy 54.2 %; the table is in bench/results/finetune-sentiment.md).
 */
export const SENTIMENT_SPEC: TaskSpec = { kind: 'classification', template: '{text} It was', labelWords: [' bad', ' great'], maxPromptTokens: 64 };

/** The split of the builtin sentiment data (seed 0 of the permutation in data.ts). */
export const SENTIMENT_SPLIT = { train: 1000, dev: 500, test: 1000, seed: 0 } as const;

export interface LoadedTask {
  name: string;
  task: PromptTask;
  splits: Splits;
}

/** The 3000 labelled sentences (amazon, yelp, imdb order; the empty trailing rows dropped). */
export function sentimentExamples(): Example[] {
  const pkg = dataPackageDir('sentiment');
  if (!pkg) fail('ZOTUNE_UNSUPPORTED', `the builtin 'sentiment' task reads the sentiment@5.0.2 package, found neither beside zotune nor in ${process.cwd()}: npm i -D sentiment@5.0.2 in your project`);
  const dir = path.join(pkg, 'test', 'fixtures');
  const out: Example[] = [];
  for (const source of ['amazon', 'yelp', 'imdb']) {
    const rows = JSON.parse(fs.readFileSync(path.join(dir, `${source}.json`), 'utf8')) as { text: string; class: number | null }[];
    for (const r of rows) if (r.class === 0 || r.class === 1) out.push({ text: r.text.trim(), label: r.class, source });
  }
  return out;
}

function specFile(file: string, tokenizer: LlamaTokenizer, seed: number): LoadedTask {
  let spec: Record<string, unknown>;
  try {
    spec = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ZotuneError('ZOTUNE_BAD_FILE', `${file}: ${(err as Error).message}`);
  }
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) fail('ZOTUNE_BAD_FILE', `${file}: a task spec is a JSON object`);
  const rel = (p: unknown) => {
    if (typeof p !== 'string') fail('ZOTUNE_BAD_FILE', `${file}: data paths must be strings`);
    return loadExamples(path.resolve(path.dirname(file), p));
  };
  let splits: Splits;
  if (spec.train !== undefined) {
    splits = { train: rel(spec.train), dev: spec.dev !== undefined ? rel(spec.dev) : [], test: spec.test !== undefined ? rel(spec.test) : [] };
  } else if (spec.data !== undefined) {
    const all = rel(spec.data);
    const sizes = (spec.split ?? {}) as Record<string, number>;
    const dev = sizes.dev ?? Math.floor(all.length * 0.2), test = sizes.test ?? Math.floor(all.length * 0.2);
    splits = split(all, { train: sizes.train ?? all.length - dev - test, dev, test }, (spec.splitSeed as number) ?? seed);
  } else {
    fail('ZOTUNE_BAD_FILE', `${file}: a task spec needs 'train' (and optional 'dev', 'test') or 'data' files`);
  }
  return { name: (spec.name as string) ?? path.basename(file, path.extname(file)), task: new PromptTask(spec as unknown as TaskSpec, tokenizer), splits };
}

/** The builtin task names. */
export const BUILTIN_TASKS = ['sentiment'] as const;

/** A task as a run stores it: a builtin name, or the absolute path of a task file (valid from any directory). */
export function resolveTask(nameOrFile: string): string {
  return (BUILTIN_TASKS as readonly string[]).includes(nameOrFile) ? nameOrFile : path.resolve(nameOrFile);
}

/** A builtin task name ('sentiment') or a task file; `splitSeed` seeds splits of files without fixed ones. */
export function loadTask(nameOrFile: string, tokenizer: LlamaTokenizer, splitSeed = 0): LoadedTask {
  if (nameOrFile === 'sentiment') {
    const { train, dev, test, seed } = SENTIMENT_SPLIT;
    return { name: 'sentiment', task: new PromptTask(SENTIMENT_SPEC, tokenizer), splits: split(sentimentExamples(), { train, dev, test }, seed) };
  }
  if (!fs.existsSync(nameOrFile)) fail('ZOTUNE_INVALID_ARGUMENT', `task '${nameOrFile}' is neither a builtin (sentiment) nor an existing file`);
  if (/\.json$/i.test(nameOrFile)) return specFile(nameOrFile, tokenizer, splitSeed);
  const all = loadExamples(nameOrFile);
  const dev = Math.floor(all.length * 0.2), test = Math.floor(all.length * 0.2);
  return { name: path.basename(nameOrFile).replace(/\.[^.]+$/, ''), task: new PromptTask(SENTIMENT_SPEC, tokenizer), splits: split(all, { train: all.length - dev - test, dev, test }, splitSeed) };
}
