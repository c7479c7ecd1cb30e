/**
 * `zotune eval --task <file|sentiment>`: accuracy (and mean loss; EM/F1 for generation tasks) of a
 * model on a task split. An eval mode for lib/cli/eval.ts (one more entry in its mode list).
 */
import type { LlamaModel } from '../model/llama';
import type { LlamaTokenizer } from '../model/tokenizer';
import { loadTask } from '../tasks/builtin';
import type { OptionSpec, OptionValues } from './command';
import { UsageError, intOption } from './command';

export interface TaskEval {
  mode: 'task';
  task: string;
  split: 'train' | 'dev' | 'test';
  n: number;
  accuracy: number;
  f1?: number;
  meanLoss: number;
  seconds: number;
}

const SPLITS = ['train', 'dev', 'test'] as const;

const batchOf = (values: OptionValues): number => intOption('task-batch', values['task-batch'], 1) ?? 32;

export const taskEvalMode = {
  name: 'task' as const,
  flag: 'task',
  options: {
    task: { type: 'string', value: '<file|sentiment>', description: 'Accuracy on a task: builtin sentiment or a task file (.json spec, .jsonl/.csv of {text, label})' },
    split: { type: 'string', value: '<train|dev|test>', description: 'Task split to score (default test)' },
    'task-batch': { type: 'string', value: '<n>', description: 'Sequences per forward for --task (default 32)' },
  } as Record<string, OptionSpec>,
  validate(values: OptionValues): void {
    if (values.split !== undefined && !SPLITS.includes(values.split as never)) throw new UsageError(`--split must be one of ${SPLITS.join(', ')} (got '${String(values.split)}')`);
    batchOf(values);
  },
  async run(ctx: { model: LlamaModel; tokenizer: LlamaTokenizer; values: OptionValues; progress?(done: number, total: number, what: string): void }): Promise<TaskEval> {
    const split = (ctx.values.split as TaskEval['split'] | undefined) ?? 'test';
    const { name, task, splits } = loadTask(ctx.values.task as string, ctx.tokenizer);
    const examples = splits[split];
    if (!examples.length) throw new UsageError(`task '${name}' has no ${split} examples`);
    const t0 = performance.now();
    const r = await task.evaluate(ctx.model, examples, { batchSize: batchOf(ctx.values) });
    return { mode: 'task', task: name, split, n: r.n, accuracy: r.accuracy, ...(r.f1 !== undefined ? { f1: r.f1 } : {}), meanLoss: r.loss, seconds: (performance.now() - t0) / 1000 };
  },
  render: (r: TaskEval): string[] => [
    `task         ${r.task} (${r.split} split, ${r.n} examples)`,
    `${r.f1 !== undefined ? 'exact match ' : 'accuracy    '} ${(r.accuracy * 100).toFixed(2)}%`,
    ...(r.f1 !== undefined ? [`token F1     ${(r.f1 * 100).toFixed(2)}%`] : []),
    `mean loss    ${r.meanLoss.toFixed(6)}`,
    `time         ${r.seconds.toFixed(2)} s`,
  ],
};
