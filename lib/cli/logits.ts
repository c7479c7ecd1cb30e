/** `zotune logits`: last-position logits of a token sequence and its mean next-token loss. */
import fs from 'node:fs';
import path from 'node:path';
import { idListOption, intOption, type Command } from './command';
import { MODEL_OPTION, WEIGHTS_OPTION, loadModel, loadTokenizer } from './model-options';

export interface LogitsResult {
  model: string;
  weights: string;
  ids: number[];
  /** Mean -log p(next token) over the ids' ids.length - 1 next-token targets; null for one id. */
  loss: number | null;
  count: number;
  /** The `top` most likely next tokens, best first. */
  top: { id: number; token: string | null; text: string | null; logit: number; logprob: number }[];
  /** All vocab_size logits at the last position. */
  logits: number[];
}

/** log Σ exp(x) in float64. */
function logSumExp(x: Float32Array): number {
  let m = -Infinity;
  for (const v of x) if (v > m) m = v;
  let s = 0;
  for (const v of x) s += Math.exp(v - m);
  return m + Math.log(s);
}

export const logits: Command<LogitsResult> = {
  name: 'logits',
  summary: 'Print the last-position logits of a token-id sequence (top N in words, all with --json) and its mean next-token loss.',
  options: {
    ...MODEL_OPTION,
    ids: { type: 'string', value: '<id,id,...>', required: true, description: 'Token ids, comma-separated (no bos is added)' },
    top: { type: 'string', value: '<n>', description: 'How many of the most likely next tokens to list (default 10)' },
    ...WEIGHTS_OPTION,
  },
  async run(values) {
    const ids = idListOption('ids', values.ids)!;
    const topN = intOption('top', values.top, 0) ?? 10;
    const model = await loadModel(values);
    try {
      // Token strings are a convenience: a folder without tokenizer.json still gets logits.
      const tok = fs.existsSync(path.join(values.model as string, 'tokenizer.json')) ? loadTokenizer(values) : undefined;
      const r = await model.forward([ids], { targets: 'next', logits: 'last' });
      const row = r.logits[0];
      const lse = logSumExp(row);
      const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a] || a - b).slice(0, topN);
      return {
        model: model.dir,
        weights: model.weightScheme,
        ids,
        loss: r.count ? r.loss : null,
        count: r.count,
        top: order.map((id) => ({ id, token: tok?.idToToken(id) ?? null, text: tok ? tok.decode([id]) : null, logit: row[id], logprob: row[id] - lse })),
        logits: Array.from(row),
      };
    } finally {
      model.dispose();
    }
  },
  render(r) {
    const lines = [
      `ids        ${r.ids.length} token${r.ids.length === 1 ? '' : 's'}, last ${r.ids[r.ids.length - 1]}`,
      `mean loss  ${r.loss === null ? 'n/a (one token has no next-token target)' : `${r.loss.toFixed(6)} over ${r.count} next-token targets`}`,
    ];
    if (r.top.length) {
      lines.push('', `top ${r.top.length} next tokens:`, '  rank  id      logit        logprob      text');
      r.top.forEach((t, i) =>
        lines.push(`  ${String(i + 1).padEnd(6)}${String(t.id).padEnd(8)}${t.logit.toFixed(6).padStart(11)}  ${t.logprob.toFixed(6).padStart(11)}  ${t.text === null ? '' : JSON.stringify(t.text)}`),
      );
    }
    return lines.join('\n');
  },
};
