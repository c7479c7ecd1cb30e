/** `zotune generate`: continue a prompt with the KV-cache decoder, streaming text as tokens arrive. */
import { UsageError, intOption, numberOption, type Command, type OptionValues } from './command';
import { DEVICE_OPTIONS, MODEL_OPTION, WEIGHTS_OPTION, loadModel, loadTokenizer, placeFromOptions, secondsSince } from './model-options';
import type { Placement } from '../model/device-llama';
import type { GenerationConfig } from '../model/config';
import { defaultNewTokens, type GenerateOptions } from '../model/llama';

export type StopReason = 'eos' | 'max-tokens' | 'context';

export interface GenerateResult {
  model: string;
  weights: string;
  prompt: string;
  /** Prompt token ids as the model saw them (bos included). */
  promptIds: number[];
  /** Generated ids, the stop token included when generation stopped on one. */
  ids: number[];
  /** Decoded continuation (special tokens dropped). */
  text: string;
  /** The decoding used (options given, else generation_config defaults). */
  sampling: { sample: boolean; temperature?: number; topK?: number; topP?: number; seed?: number };
  /** Seconds from the start of the prompt's forward to the first token (prefill + one step). */
  timeToFirstToken: number | null;
  seconds: number;
  /** Generated tokens per second over the whole generation (prefill included). */
  tokensPerSecond: number;
  stopReason: StopReason;
  /** Where the decoder ran and why (--device). */
  device: Placement['info'];
}

function samplingOptions(values: OptionValues): GenerateOptions {
  const temperature = numberOption('temperature', values.temperature, (x) => x >= 0, 'a number >= 0');
  const topK = intOption('top-k', values['top-k'], 0);
  const topP = numberOption('top-p', values['top-p'], (x) => x >= 0 && x <= 1, 'in [0, 1]');
  const seed = intOption('seed', values.seed, 0);
  const tuned = [temperature, topK, topP, seed].some((x) => x !== undefined);
  if (values.greedy && (values.sample || tuned)) throw new UsageError('--greedy cannot be combined with --sample, --temperature, --top-k, --top-p or --seed');
  // Sampling parameters imply --sample; without any, the checkpoint's generation_config decides.
  const sample = values.greedy ? false : values.sample || tuned ? true : undefined;
  return { sample, temperature, topK, topP, seed };
}

/** The decoding actually used: the options given, else the checkpoint's generation_config. */
function effectiveSampling(opts: GenerateOptions, g: GenerationConfig): GenerateResult['sampling'] {
  if (!(opts.sample ?? g.doSample)) return { sample: false };
  return { sample: true, temperature: opts.temperature ?? g.temperature, topK: opts.topK ?? g.topK, topP: opts.topP ?? g.topP, seed: Number(opts.seed ?? 0) };
}

export const generate: Command<GenerateResult> = {
  name: 'generate',
  summary: 'Generate a continuation of a prompt, streamed to stdout as tokens arrive (greedy by default, seeded sampling with --sample).',
  options: {
    ...MODEL_OPTION,
    prompt: { type: 'string', value: '<text>', required: true, description: 'Prompt text (bos is added the way the tokenizer says)' },
    'max-tokens': { type: 'string', value: '<n>', description: "New tokens at most (default: the checkpoint's generation_config, capped by the context)" },
    ...WEIGHTS_OPTION,
    sample: { type: 'boolean', description: 'Sample instead of taking the most likely token' },
    greedy: { type: 'boolean', description: 'Take the most likely token even if generation_config says do_sample' },
    temperature: { type: 'string', value: '<t>', description: 'Sampling temperature (implies --sample)' },
    'top-k': { type: 'string', value: '<k>', description: 'Keep the k most likely tokens, 0 = all (implies --sample)' },
    'top-p': { type: 'string', value: '<p>', description: 'Nucleus sampling mass in [0, 1], 0 = the most likely token only (implies --sample)' },
    seed: { type: 'string', value: '<s>', description: 'Sampling seed (implies --sample; default 0)' },
    'ignore-eos': { type: 'boolean', description: 'Keep generating after an end-of-sequence token (up to --max-tokens)' },
    ...DEVICE_OPTIONS,
  },
  async run(values) {
    const maxTokens = intOption('max-tokens', values['max-tokens'], 0);
    const opts = samplingOptions(values);
    const tok = loadTokenizer(values);
    const model = await loadModel(values);
    let placement: Placement | undefined;
    try {
      placement = await placeFromOptions(model, values);
      const decoder = placement.device ?? model;
      const prompt = values.prompt as string;
      const promptIds = tok.encode(prompt);
      const c = model.config, g = model.generationConfig;
      const room = Math.max(c.maxPositionEmbeddings - promptIds.length, 0);
      const wanted = maxTokens ?? defaultNewTokens(g, promptIds.length);
      const stops = new Set(values['ignore-eos'] ? [] : g.eosTokenIds);
      const stream = values.json ? undefined : tok.decoder({ skipSpecialTokens: true });
      const ids: number[] = [];
      const t0 = performance.now();
      let firstAt: number | null = null;
      for await (const id of decoder.generate(promptIds, { ...opts, maxNewTokens: wanted, stopTokens: [...stops] })) {
        if (firstAt === null) firstAt = secondsSince(t0);
        ids.push(id);
        if (stream) process.stdout.write(stream.push(id));
      }
      const seconds = secondsSince(t0);
      if (stream) process.stdout.write(stream.flush());
      const last = ids[ids.length - 1];
      const stopReason: StopReason = last !== undefined && stops.has(last) ? 'eos' : ids.length < wanted || ids.length === room ? 'context' : 'max-tokens';
      return {
        model: model.dir,
        weights: model.weightScheme,
        prompt,
        promptIds,
        ids,
        text: tok.decode(ids, { skipSpecialTokens: true }),
        sampling: effectiveSampling(opts, g),
        timeToFirstToken: firstAt,
        seconds,
        tokensPerSecond: seconds > 0 ? ids.length / seconds : 0,
        stopReason,
        device: placement.info,
      };
    } finally {
      placement?.device?.dispose();
      model.dispose();
    }
  },
  // The text was streamed while generating; only the closing newline is left.
  render: () => '',
};
