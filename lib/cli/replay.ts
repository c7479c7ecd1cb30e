/**
 * `zotune replay <run>`: rebuilds a run's fine-tuned weights from its base model and step log
 * (bit for bit the weights the run trained) and exports them as a Hugging Face folder.
 */
import path from 'node:path';
import { replayRun } from '../zo/run';
import { UsageError, intOption, type Command } from './command';

export interface ReplayResult {
  run: string;
  steps: number;
  out: string;
  seconds: number;
}

export const replayCommand: Command<ReplayResult> = {
  name: 'replay',
  summary: 'Rebuild the fine-tuned weights of a run folder from its base model and step log, and export them.',
  args: '<run-dir>',
  options: {
    out: { type: 'string', value: '<dir>', description: 'Folder for the exported model (default <run-dir>/replayed)' },
    steps: { type: 'string', value: '<n>', description: 'Apply only the first n logged steps (e.g. the best evaluation)' },
  },
  async run(values, positionals) {
    if (positionals.length !== 1) throw new UsageError('give exactly one run folder');
    const run = path.resolve(positionals[0]);
    const upTo = intOption('steps', values.steps, 0); // '' is refused: an empty shell variable must not export the base weights
    const t0 = performance.now();
    const r = await replayRun(run, typeof values.out === 'string' ? values.out : path.join(run, 'replayed'), upTo);
    return { run, steps: r.steps, out: r.out, seconds: (performance.now() - t0) / 1000 };
  },
  render: (r) => `replayed ${r.steps} steps of ${r.run} in ${r.seconds.toFixed(2)} s\nexported ${r.out}`,
};
