/** Options and loading shared by the commands that run a model (generate, eval, logits). */
import { LlamaModel, type WeightScheme } from '../model/llama';
import { DEVICE_CHOICES, placeModel, type Placement } from '../model/device-llama';
import { LlamaTokenizer } from '../model/tokenizer';
import { UsageError, choice, type OptionSpec, type OptionValues } from './command';

export const MODEL_OPTION: Record<string, OptionSpec> = {
  model: { type: 'string', value: '<dir>', required: true, description: 'Hugging Face LLaMA checkpoint folder (config.json, model.safetensors, tokenizer.json)' },
};

export const WEIGHTS_OPTION: Record<string, OptionSpec> = {
  weights: { type: 'string', value: '<scheme>', description: "Weight storage scheme the model is quantized to at load (default fp32; e.g. bf16, int8, int4-g128, fp8-e4m3, w8a8)" },
};

export const DEVICE_OPTIONS: Record<string, OptionSpec> = {
  device: { type: 'string', value: '<cpu|auto|cuda|emulated>', description: "Where the model runs (default cpu): its GPU copy with cuda; auto falls back to the CPU; emulated runs the CUDA kernels' host emulation (checks)" },
  kernels: { type: 'string', value: '<exact|fast>', description: "The device model's linears (default exact: the CPU's bits; fast: gemv and bf16 tensor cores)" },
};

/** The device copy --device / --kernels ask for (placeModel: 'auto' falls back to the CPU with its reason). */
export function placeFromOptions(model: LlamaModel, values: OptionValues): Promise<Placement> {
  const device = choice('device', values.device, DEVICE_CHOICES) ?? 'cpu';
  const kernels = choice('kernels', values.kernels, ['exact', 'fast'] as const);
  if (kernels && device === 'cpu') throw new UsageError('--kernels is for --device auto|cuda|emulated');
  return placeModel(model, device, kernels);
}

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
