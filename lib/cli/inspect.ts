/** `zotune inspect`: a checkpoint's config, parameter counts and memory per weight scheme, from the safetensors headers only. */
import fs from 'node:fs';
import path from 'node:path';
import { loadGenerationConfig, loadLlamaConfig, type LlamaConfig } from '../model/config';
import { footprints, configShapes, tensorKind, type Footprint, type TensorKind } from '../model/footprint';
import { llamaTensorNames } from '../model/llama';
import { ModelWeights, type SafetensorsDType } from '../io/safetensors';
import type { Command } from './command';
import { MODEL_OPTION } from './model-options';

export interface InspectResult {
  model: string;
  config: LlamaConfig;
  generation: { doSample: boolean; maxLength?: number; maxNewTokens?: number; eosTokenIds: number[] };
  checkpoint: {
    files: { name: string; bytes: number }[];
    /** Tensors per stored dtype. */
    dtypes: Partial<Record<SafetensorsDType, number>>;
    tensors: number;
  };
  parameters: { total: number; byKind: Record<TensorKind, number> };
  /** Engine memory of the weights under each scheme (linear weights quantized; embeddings and norms f32). */
  schemes: Footprint[];
  /** Why the checkpoint would not load: tensors it lacks, or has in another shape or in a dtype other than F32 / F16 / BF16. */
  problems: string[];
  /** Tensors beyond what the config needs (loading ignores them, e.g. a tied model's lm_head.weight). */
  unused: string[];
}

function inspect(dir: string): InspectResult {
  const config = loadLlamaConfig(dir);
  const gen = loadGenerationConfig(dir, config);
  const weights = ModelWeights.open(dir); // headers only
  try {
    const names = llamaTensorNames(config);
    const expected = configShapes(config);
    const problems: string[] = [];
    const byKind: Record<TensorKind, number> = { embedding: 0, attention: 0, mlp: 0, norm: 0, lm_head: 0 };
    const dtypes: Partial<Record<SafetensorsDType, number>> = {};
    let total = 0;
    for (const name of names) {
      if (!weights.has(name)) {
        problems.push(`missing tensor '${name}'`);
        continue;
      }
      const info = weights.info(name);
      if (info.shape.join() !== expected.get(name)!.join())
        problems.push(`tensor '${name}' is [${info.shape.join(', ')}], config.json implies [${expected.get(name)!.join(', ')}]`);
      if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16') problems.push(`tensor '${name}' is ${info.dtype}; weights load from F32, F16 or BF16`);
      const n = info.shape.reduce((a, b) => a * b, 1);
      byKind[tensorKind(name)] += n;
      total += n;
      dtypes[info.dtype] = (dtypes[info.dtype] ?? 0) + 1;
    }
    const wanted = new Set(names);
    const unused = weights.names().filter((n) => !wanted.has(n));
    const files = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.safetensors') || f.endsWith('.json'))
      .sort()
      .map((name) => ({ name, bytes: fs.statSync(path.join(dir, name)).size }));
    return {
      model: path.resolve(dir),
      config,
      generation: { doSample: gen.doSample, maxLength: gen.maxLength, maxNewTokens: gen.maxNewTokens, eosTokenIds: gen.eosTokenIds },
      checkpoint: { files, dtypes, tensors: weights.names().length },
      parameters: { total, byKind },
      schemes: footprints(config),
      problems,
      unused,
    };
  } finally {
    weights.close();
  }
}

const count = (n: number) => n.toLocaleString('en-US');
function size(b: number): string {
  if (b >= 2 ** 30) return `${(b / 2 ** 30).toFixed(2)} GiB`;
  if (b >= 2 ** 20) return `${(b / 2 ** 20).toFixed(2)} MiB`;
  if (b >= 2 ** 10) return `${(b / 2 ** 10).toFixed(1)} KiB`;
  return `${b} B`;
}

function render(r: InspectResult): string {
  const c = r.config;
  const rope = c.ropeScaling ? `theta ${c.ropeTheta}, llama3 scaling x${c.ropeScaling.factor} from ${c.ropeScaling.originalMaxPositionEmbeddings}` : `theta ${c.ropeTheta}`;
  const lines = [
    `model          ${r.model}`,
    `architecture   ${c.architecture}`,
    `layers         ${c.numLayers}, hidden ${c.hiddenSize}, MLP ${c.intermediateSize} (SwiGLU)`,
    `attention      ${c.numHeads} heads, ${c.numKvHeads} KV heads, head_dim ${c.headDim}`,
    `vocabulary     ${c.vocabSize}, bos ${c.bosTokenId ?? '-'}, eos ${c.eosTokenIds.join('/') || '-'}${c.tieWordEmbeddings ? ', tied embeddings' : ''}`,
    `context        ${c.maxPositionEmbeddings} positions, RoPE ${rope}, rms_norm_eps ${c.rmsNormEps}`,
    `checkpoint     ${r.checkpoint.tensors} tensors (${Object.entries(r.checkpoint.dtypes).map(([d, n]) => `${n} ${d}`).join(', ')}) in ${r.checkpoint.files.filter((f) => f.name.endsWith('.safetensors')).map((f) => `${f.name} ${size(f.bytes)}`).join(', ')}`,
    '',
    `parameters     ${count(r.parameters.total)}`,
    ...(Object.entries(r.parameters.byKind) as [TensorKind, number][]).filter(([, n]) => n > 0).map(([k, n]) => `  ${k.padEnd(13)}${count(n).padStart(14)}  ${((100 * n) / r.parameters.total).toFixed(1).padStart(5)} %`),
    '',
    'weights in memory per --weights scheme (linear layers quantized; embeddings and norms float32):',
    '  scheme      bytes          bits/param  quantized part',
    ...r.schemes.map((s) => `  ${s.scheme.padEnd(12)}${size(s.bytes).padEnd(15)}${s.bitsPerParameter.toFixed(2).padStart(10)}  ${size(s.quantizedBytes)}`),
  ];
  if (r.unused.length)
    lines.push('', `unused tensors (loading ignores them): ${r.unused.map((n) => `${n}${n === 'lm_head.weight' && c.tieWordEmbeddings ? ' (tied embeddings)' : ''}`).join(', ')}`);
  if (r.problems.length) lines.push('', 'problems (the checkpoint would not load):', ...r.problems.map((p) => `  ${p}`));
  return lines.join('\n');
}

export const inspectCommand: Command<InspectResult> = {
  name: 'inspect',
  summary: 'Show a checkpoint: config, parameter count per tensor kind, and weight memory per scheme (reads the safetensors headers only).',
  options: { ...MODEL_OPTION },
  run: (values) => inspect(values.model as string),
  render,
  exitCode: (r) => (r.problems.length ? 1 : 0),
};
