/**
 * Prompt tasks for a causal LM: how examples become token sequences, what the training loss is,
 * and how a model is scored on them.
 *
 * - classification: the prompt template is rendered and each label word scored as its
 *   continuation (SST-2 style `<sentence> It was {terrible|great}`). When every label word is one
 *   token, ONE forward per example reads the candidates' logits at the last prompt position;
 *   otherwise each (example, candidate) is a sequence scored by the mean log-likelihood of the
 *   candidate's tokens (MeZO §1.2). Loss = cross-entropy over the candidates' scores.
 * - multiple-choice: candidates come from the example (a field holding a list), scored by mean
 *   log-likelihood per candidate token; loss = cross-entropy over those scores.
 * - generation: prompt + target; loss = token cross-entropy on the target span only; evaluation
 *   generates greedily and reports exact match and token F1 (SQuAD normalisation).
 */
import { ZotuneError, fail } from '../errors';
import type { ForwardOptions, ForwardResult, LlamaModel, Sequence } from '../model/llama';
import type { GradLoss } from '../model/grad';
import type { LlamaTokenizer } from '../model/tokenizer';
import type { Example } from './data';

export interface TaskSpecBase {
  /** Prompt template with {field} placeholders, e.g. '{text} It was'. */
  template: string;
  /** Longest prompt in tokens (longer prompts lose tokens after bos, the template tail is kept). */
  maxPromptTokens?: number;
}

export interface ClassificationSpec extends TaskSpecBase {
  kind: 'classification';
  /** Continuation of the prompt for each label index, e.g. [' terrible', ' great']. */
  labelWords: string[];
  /** Field holding the gold label index (default 'label'). */
  labelField?: string;
}

export interface MultipleChoiceSpec extends TaskSpecBase {
  kind: 'multiple-choice';
  /** Field holding the list of candidate continuations (default 'choices'). */
  choicesField?: string;
  /** Field holding the gold candidate index (default 'label'). */
  labelField?: string;
}

export interface GenerationSpec extends TaskSpecBase {
  kind: 'generation';
  /** Field holding the target text, or a list of acceptable answers (the first is trained on). Default 'answer'. */
  targetField?: string;
  /** New tokens at most when evaluating (default 32). */
  maxNewTokens?: number;
}

export type TaskSpec = ClassificationSpec | MultipleChoiceSpec | GenerationSpec;

/** What one training forward needs: sequences, forward options, and the loss from its result. */
export interface LossBatch {
  sequences: Sequence[];
  forward: ForwardOptions;
  /** The batch's scalar training loss from the forward's result. */
  loss(r: ForwardResult): number;
  /**
   * The same loss for the first-order backward (lossAndGrad options over the same sequences):
   * generation: token cross-entropy on the target span; classification with one-token label
   * words: cross-entropy over the label-word logits at the last position (candidates). Absent
   * where the backward has no such loss (scores averaged over multi-token candidates).
   */
  grad?: GradLoss;
}

export interface EvalResult {
  /** Examples scored. */
  n: number;
  /** Classification / multiple choice: fraction correct. Generation: exact match. */
  accuracy: number;
  /** Generation only: mean token F1. */
  f1?: number;
  /** Mean training loss over the examples (classification / multiple choice / generation). */
  loss: number;
}

export interface EvalOptions {
  /** Sequences per forward (default 32). */
  batchSize?: number;
  signal?: AbortSignal;
}

function render(template: string, ex: Example): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) => {
    if (!(k in ex)) fail('ZOTUNE_INVALID_ARGUMENT', `the template needs field '${k}', which an example lacks (fields: ${Object.keys(ex).join(', ')})`);
    return String(ex[k]);
  });
}

function labelOf(ex: Example, field: string, count: number): number {
  const raw = ex[field];
  const v = typeof raw === 'string' && /^(0|[1-9]\d{0,8})$/.test(raw) ? Number(raw) : raw; // CSV fields are strings
  if (!Number.isSafeInteger(v) || (v as number) < 0 || (v as number) >= count)
    fail('ZOTUNE_INVALID_ARGUMENT', `example field '${field}' must be a label index in [0, ${count}), got ${JSON.stringify(raw)}`);
  return v as number;
}

/** log-sum-exp(scores) - scores[gold]: cross-entropy over candidate scores. */
export function candidateCrossEntropy(scores: ArrayLike<number>, gold: number): number {
  let m = -Infinity;
  for (let i = 0; i < scores.length; i++) m = Math.max(m, scores[i]);
  let s = 0;
  for (let i = 0; i < scores.length; i++) s += Math.exp(scores[i] - m);
  return m + Math.log(s) - scores[gold];
}

function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
}

/** SQuAD answer normalisation: lower case, no punctuation, no articles, single spaces. */
export function normalizeAnswer(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s]/gu, '')
    .replace(/\b(a|an|the)\b/g, ' ')
    .split(/\s+/)
    .filter(Boolean)
    .join(' ');
}

export function tokenF1(prediction: string, gold: string): number {
  const p = normalizeAnswer(prediction).split(' ').filter(Boolean), g = normalizeAnswer(gold).split(' ').filter(Boolean);
  if (p.length === 0 || g.length === 0) return p.length === g.length ? 1 : 0;
  const counts = new Map<string, number>();
  g.forEach((w) => counts.set(w, (counts.get(w) ?? 0) + 1));
  let common = 0;
  for (const w of p) {
    const c = counts.get(w) ?? 0;
    if (c > 0) {
      common++;
      counts.set(w, c - 1);
    }
  }
  if (common === 0) return 0;
  const precision = common / p.length, recall = common / g.length;
  return (2 * precision * recall) / (precision + recall);
}

interface Scored {
  /** Sequence per (example, candidate) or per example. */
  sequences: Sequence[];
  forward: ForwardOptions;
  /** Per example: candidate scores from the result. */
  scores(r: ForwardResult): number[][];
}

/** A task bound to a tokenizer: encodes (and caches) examples, builds loss batches, evaluates. */
export class PromptTask {
  readonly spec: TaskSpec;
  readonly tokenizer: LlamaTokenizer;
  /** Classification: one token id per label word when they are all single tokens, else null. */
  readonly labelTokens: number[] | null;
  private readonly maxPrompt: number;
  private readonly promptCache = new WeakMap<Example, number[]>();
  private readonly labelWordIds: number[][] = [];

  constructor(spec: TaskSpec, tokenizer: LlamaTokenizer) {
    this.spec = spec;
    this.tokenizer = tokenizer;
    if (typeof spec.template !== 'string' || !spec.template) fail('ZOTUNE_INVALID_ARGUMENT', 'a task needs a prompt template');
    this.maxPrompt = spec.maxPromptTokens ?? 256;
    if (!Number.isSafeInteger(this.maxPrompt) || this.maxPrompt < 2) fail('ZOTUNE_INVALID_ARGUMENT', `maxPromptTokens must be an integer >= 2, got ${spec.maxPromptTokens}`);
    if (spec.kind === 'classification') {
      if (!Array.isArray(spec.labelWords) || spec.labelWords.length < 2) fail('ZOTUNE_INVALID_ARGUMENT', 'a classification task needs at least two label words');
      this.labelWordIds = spec.labelWords.map((w) => {
        const ids = tokenizer.encode(w, { addSpecialTokens: false });
        if (ids.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', `label word ${JSON.stringify(w)} encodes to no tokens`);
        return ids;
      });
      const single = this.labelWordIds.every((ids) => ids.length === 1);
      this.labelTokens = single ? this.labelWordIds.map((ids) => ids[0]) : null;
      if (this.labelTokens && new Set(this.labelTokens).size !== this.labelTokens.length) fail('ZOTUNE_INVALID_ARGUMENT', 'two label words encode to the same token');
    } else if (spec.kind === 'multiple-choice' || spec.kind === 'generation') {
      this.labelTokens = null;
    } else {
      fail('ZOTUNE_INVALID_ARGUMENT', `task kind must be classification, multiple-choice or generation, got ${String((spec as { kind: unknown }).kind)}`);
    }
  }

  get kind(): TaskSpec['kind'] {
    return this.spec.kind;
  }

  /** Prompt token ids (bos + rendered template), cut to maxPromptTokens keeping bos and the tail. */
  prompt(ex: Example): number[] {
    let ids = this.promptCache.get(ex);
    if (!ids) {
      ids = this.tokenizer.encode(render(this.spec.template, ex));
      const keepBos = this.tokenizer.bosTokenId !== undefined && ids[0] === this.tokenizer.bosTokenId ? 1 : 0;
      if (ids.length > this.maxPrompt) ids = [...ids.slice(0, keepBos), ...ids.slice(ids.length - (this.maxPrompt - keepBos))];
      this.promptCache.set(ex, ids);
    }
    return ids;
  }

  private candidates(ex: Example): number[][] {
    const s = this.spec;
    if (s.kind === 'classification') return this.labelWordIds;
    if (s.kind !== 'multiple-choice') fail('ZOTUNE_INTERNAL', 'candidates of a generation task');
    const field = s.choicesField ?? 'choices', list = ex[field];
    if (!Array.isArray(list) || list.length < 2 || list.some((c) => typeof c !== 'string'))
      fail('ZOTUNE_INVALID_ARGUMENT', `example field '${field}' must be a list of at least two strings`);
    return (list as string[]).map((c) => {
      const ids = this.tokenizer.encode(c, { addSpecialTokens: false });
      if (!ids.length) fail('ZOTUNE_INVALID_ARGUMENT', `candidate ${JSON.stringify(c)} encodes to no tokens`);
      return ids;
    });
  }

  /** Refuses the first example the task cannot use (a missing template field, a bad label, ...), naming it: runs check every split before their first step. */
  check(examples: readonly Example[], where: string): void {
    examples.forEach((ex, i) => {
      try {
        render(this.spec.template, ex);
        if (this.spec.kind === 'generation') this.targets(ex);
        else this.gold(ex);
      } catch (err) {
        if (err instanceof ZotuneError) throw new ZotuneError(err.code, `${where}, example ${i + 1}: ${err.message}`);
        throw err;
      }
    });
  }

  gold(ex: Example): number {
    const s = this.spec;
    if (s.kind === 'generation') fail('ZOTUNE_INTERNAL', 'gold index of a generation task');
    return labelOf(ex, s.labelField ?? 'label', this.candidates(ex).length);
  }

  private targets(ex: Example): string[] {
    const s = this.spec as GenerationSpec, field = s.targetField ?? 'answer', v = ex[field];
    const list = Array.isArray(v) ? v : [v];
    if (!list.length || list.some((a) => typeof a !== 'string')) fail('ZOTUNE_INVALID_ARGUMENT', `example field '${field}' must be a string or a list of strings`);
    return list as string[];
  }

  /** Candidate scores for a set of examples (one forward's worth). */
  private scored(examples: readonly Example[]): Scored {
    if (this.labelTokens) {
      const tokens = this.labelTokens;
      return {
        sequences: examples.map((ex) => this.prompt(ex)),
        // only the label words' LM-head rows: the same logits, and a probe perturbs only those rows
        forward: { targets: 'none', logits: 'last', logitTokens: tokens },
        scores: (r) => r.logits.map((row) => Array.from(row)),
      };
    }
    const sequences: number[][] = [], lossMask: number[][] = [], spans: { example: number; start: number; len: number }[] = [];
    const perExample: number[] = [];
    examples.forEach((ex, e) => {
      const p = this.prompt(ex), cands = this.candidates(ex);
      perExample.push(cands.length);
      for (const c of cands) {
        const seq = [...p, ...c];
        // the candidate's tokens are predicted from the position before each
        sequences.push(seq);
        lossMask.push(seq.map((_, i) => (i >= p.length - 1 && i < seq.length - 1 ? 1 : 0)));
        spans.push({ example: e, start: p.length - 1, len: c.length });
      }
    });
    return {
      sequences,
      forward: { targets: 'next', lossMask, logits: 'none' },
      scores: (r) => {
        const out: number[][] = perExample.map(() => []);
        spans.forEach((s, k) => {
          let sum = 0;
          for (let i = s.start; i < s.start + s.len; i++) sum += r.logprobs[k][i];
          out[s.example].push(sum / s.len);
        });
        return out;
      },
    };
  }

  /** Sequences, forward options and loss function of one training batch. */
  lossBatch(examples: readonly Example[]): LossBatch {
    if (examples.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'a loss batch needs at least one example');
    if (this.spec.kind === 'generation') {
      const sequences: number[][] = [], lossMask: number[][] = [];
      for (const ex of examples) {
        const p = this.prompt(ex), t = this.tokenizer.encode(this.targets(ex)[0], { addSpecialTokens: false });
        const eos = this.tokenizer.eosTokenId;
        const seq = [...p, ...t, ...(eos !== undefined ? [eos] : [])];
        sequences.push(seq);
        lossMask.push(seq.map((_, i) => (i >= p.length - 1 && i < seq.length - 1 ? 1 : 0)));
      }
      return { sequences, forward: { targets: 'next', lossMask, logits: 'none' }, loss: (r) => r.loss, grad: { targets: 'next', lossMask } };
    }
    const s = this.scored(examples), gold = examples.map((ex) => this.gold(ex));
    const labels = this.labelTokens;
    return {
      sequences: s.sequences,
      forward: s.forward,
      // one-token label words: the gold word as the last position's target, softmax over the label words
      ...(labels ? { grad: { targets: s.sequences.map((seq, i) => Int32Array.from({ length: seq.length }, (_, j) => (j === seq.length - 1 ? labels[gold[i]] : -1))), candidates: labels } } : {}),
      loss: (r) => {
        const scores = s.scores(r);
        let sum = 0;
        scores.forEach((sc, i) => (sum += candidateCrossEntropy(sc, gold[i])));
        return sum / scores.length;
      },
    };
  }

  /** Accuracy (or EM/F1) and mean loss of a model on examples, in batched forwards. */
  async evaluate(model: LlamaModel, examples: readonly Example[], opts: EvalOptions = {}): Promise<EvalResult> {
    const bs = opts.batchSize ?? 32;
    if (!Number.isSafeInteger(bs) || bs < 1) fail('ZOTUNE_INVALID_ARGUMENT', `batchSize must be a positive integer, got ${bs}`);
    if (examples.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'nothing to evaluate: no examples');
    if (this.spec.kind === 'generation') return this.evaluateGeneration(model, examples, bs, opts.signal);
    let correct = 0, lossSum = 0;
    // multi-token candidates make several sequences per example: keep about bs sequences per forward
    const per = this.labelTokens ? 1 : Math.max(1, this.candidates(examples[0]).length);
    const step = Math.max(1, Math.floor(bs / per));
    for (let b = 0; b < examples.length; b += step) {
      opts.signal?.throwIfAborted();
      const chunk = examples.slice(b, b + step), s = this.scored(chunk);
      const r = await model.forward(s.sequences, s.forward);
      s.scores(r).forEach((sc, i) => {
        const g = this.gold(chunk[i]);
        if (argmax(sc) === g) correct++;
        lossSum += candidateCrossEntropy(sc, g);
      });
    }
    return { n: examples.length, accuracy: correct / examples.length, loss: lossSum / examples.length };
  }

  private async evaluateGeneration(model: LlamaModel, examples: readonly Example[], bs: number, signal?: AbortSignal): Promise<EvalResult> {
    const spec = this.spec as GenerationSpec, maxNew = spec.maxNewTokens ?? 32;
    const newline = this.tokenizer.encode('\n', { addSpecialTokens: false });
    const stop = [...(this.tokenizer.eosTokenId !== undefined ? [this.tokenizer.eosTokenId] : []), ...(newline.length === 1 ? newline : [])];
    let em = 0, f1 = 0, lossSum = 0;
    for (let b = 0; b < examples.length; b += bs) {
      const chunk = examples.slice(b, b + bs);
      const lb = this.lossBatch(chunk);
      const r = await model.forward(lb.sequences, lb.forward);
      lossSum += lb.loss(r) * chunk.length;
      const outs: number[][] = chunk.map(() => []);
      for await (const step of model.generateBatch(chunk.map((ex) => this.prompt(ex)), { maxNewTokens: maxNew, sample: false, stopTokens: stop, signal }))
        step.forEach((id, i) => {
          if (id !== undefined && !stop.includes(id)) outs[i].push(id);
        });
      chunk.forEach((ex, i) => {
        const text = this.tokenizer.decode(outs[i], { skipSpecialTokens: true }).trim();
        const golds = this.targets(ex);
        em += golds.some((g) => normalizeAnswer(g) === normalizeAnswer(text)) ? 1 : 0;
        f1 += Math.max(...golds.map((g) => tokenF1(text, g)));
      });
    }
    return { n: examples.length, accuracy: em / examples.length, f1: f1 / examples.length, loss: lossSum / examples.length };
  }
}
