/**
 * Perplexity of a causal LM over a token stream, the way `zotune eval --text` reports it: the ids
 * (no special tokens) are cut into consecutive chunks of `window - 1` tokens, each chunk is scored
 * as [bos] + chunk with every chunk token predicted (the first from bos alone), and
 * perplexity = exp(total NLL / predicted tokens). Chunks do not see each other (no sliding
 * context), so the number is comparable across engines that score the same chunks.
 */
import { fail } from '../errors';
import type { LlamaModel } from './llama';

export interface PerplexityOptions {
  /** Tokens per scored sequence, bos included (default 256); at most max_position_embeddings. */
  window?: number;
  /** Chunks per forward pass (default 8). */
  batchSize?: number;
  /** Id prepended to every chunk (default: the model's bos_token_id). */
  bos?: number;
  /** Called after each forward with the chunks done so far. */
  onProgress?(done: number, total: number): void;
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood per predicted token (nats). */
  meanLoss: number;
  totalNll: number;
  /** Predicted tokens (= the tokens of the stream). */
  predicted: number;
  chunks: number;
  window: number;
}

/** [bos] + each consecutive run of `window - 1` ids (the last chunk may be shorter). */
export function perplexityChunks(ids: ArrayLike<number>, window: number, bos: number): number[][] {
  if (!Number.isSafeInteger(window) || window < 2) fail('ZOTUNE_INVALID_ARGUMENT', `window must be an integer >= 2, got ${window}`);
  const out: number[][] = [];
  for (let at = 0; at < ids.length; at += window - 1) {
    const chunk = [bos];
    for (let i = at; i < Math.min(at + window - 1, ids.length); i++) chunk.push(ids[i]);
    out.push(chunk);
  }
  return out;
}

export async function perplexity(model: LlamaModel, ids: ArrayLike<number>, opts: PerplexityOptions = {}): Promise<PerplexityResult> {
  const window = opts.window ?? 256, batchSize = opts.batchSize ?? 8;
  const maxPos = model.config.maxPositionEmbeddings;
  if (!Number.isSafeInteger(window) || window < 2 || window > maxPos)
    fail('ZOTUNE_OUT_OF_RANGE', `window must be an integer in [2, max_position_embeddings ${maxPos}], got ${window}`);
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) fail('ZOTUNE_INVALID_ARGUMENT', `batchSize must be a positive integer, got ${batchSize}`);
  const bos = opts.bos ?? model.config.bosTokenId ?? model.generationConfig.bosTokenId;
  if (bos === undefined) fail('ZOTUNE_INVALID_ARGUMENT', 'the checkpoint names no bos_token_id: pass the id to prepend to every chunk (bos)');
  if (ids.length === 0) fail('ZOTUNE_INVALID_ARGUMENT', 'there are no tokens to score');
  const chunks = perplexityChunks(ids, window, bos);
  let totalNll = 0, predicted = 0;
  for (let at = 0; at < chunks.length; at += batchSize) {
    const batch = chunks.slice(at, at + batchSize);
    const r = await model.forward(batch, { targets: 'next', logits: 'none' });
    // Sum the per-token log-probabilities in float64 (the mean of the batch would lose the counts' weighting).
    for (const lp of r.logprobs) for (let i = 0; i < lp.length - 1; i++) totalNll -= lp[i];
    predicted += r.count;
    opts.onProgress?.(Math.min(at + batchSize, chunks.length), chunks.length);
  }
  const meanLoss = totalNll / predicted;
  return { perplexity: Math.exp(meanLoss), meanLoss, totalNll, predicted, chunks: chunks.length, window };
}
