/** Options and loading shared by the commands that run a model (generate, eval, logits). */
import { LlamaModel, type WeightScheme } from '../model/llama';
import { LlamaTokenizer } from '../model/tokenizer';
import type { OptionSpec, OptionValues } from './command';

export const MODEL_OPTION: Record<string, OptionSpec> = {
  model: { type: 'string', value: '<dir>', required: true, description: 'Hugging Face LLaMA checkpoint folder (config.json, model.safetensors, tokenizer.json)' },
};

export const WEIGHTS_OPTION: Record<string, OptionSpec> = {
  weights: { type: 'string', value: '<scheme>', description: "Weight storage scheme the model is quantized to at load (default fp32; e.g. bf16, int8, int4-g128, fp8-e4m3, w8a8)" },
};

/**
 * Loads the model with the scheme as given: LlamaModel.load validates it (and reports the
 * supported schemes in its coded error), so the CLI never keeps its own copy of that list.
 */
export function loadModel(values: OptionValues): Promise<LlamaModel> {
  const weights = values.weights as WeightScheme | undefined;
  return LlamaModel.load(values.model as string, weights === undefined ? {} : { weights });
}

export function loadTokenizer(values: OptionValues): LlamaTokenizer {
  return LlamaTokenizer.load(values.model as string);
}

/** Seconds since `t0` (from performance.now()). */
export const secondsSince = (t0: number): number => (performance.now() - t0) / 1000;
