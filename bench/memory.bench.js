'use strict';
// Memory profiler: every configuration (inference forward, first-order AdamW/SGD, MeZO fp32, QuZO
// int8/int4) runs a few training steps in a FRESH child process, which reports its peak resident
// set (VmHWM of /proc/self/status) and the engine's peak bytes by category (weights, activations,
// gradients, optimizer, workspace). Models: tiny-llama (shared checkpoint) and random-weight
// LLaMA-architecture checkpoints with TinyLlama-1.1B layer shapes (hidden 2048, intermediate 5632,
// 32 heads / 4 KV heads, vocab 32000), plus a per-layer extrapolation of the categories to
// LLaMA-7B. Writes bench/results/memory.md and memory.svg.
//
//   npm run bench:memory            (node bench/memory.bench.js)
//   node bench/memory.bench.js --child '<json>'   (one configuration; used by the parent)
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..');
const RESULTS = path.join(__dirname, 'results');
const MODELS = process.env.ZOTUNE_MODELS || path.resolve(ROOT, '..', 'shared', 'models');
const CATS = ['weights', 'activations', 'gradients', 'optimizer', 'workspace', 'other'];
const STEPS = 2; // per configuration; the first is a warm-up, the step time is the second
const TOKENS = 128; // 2 sequences x 64 tokens per step

// --- configurations ------------------------------------------------------------------------
// Each is one entry: how the model is loaded and what one training step does.
const CONFIGS = [
  { id: 'forward', label: 'inference forward (fp32)', weights: 'fp32' },
  { id: 'fo-adamw', label: 'FO-AdamW fp32', weights: 'fp32' },
  { id: 'fo-adamw-recompute', label: 'FO-AdamW fp32, recomputation', weights: 'fp32' },
  { id: 'fo-sgd', label: 'FO-SGD fp32 (no momentum)', weights: 'fp32' },
  { id: 'qat-int8', label: 'QAT int8 (AdamW, fp32 masters)', weights: 'fp32', qat: { format: 'int8' } },
  { id: 'qat-int4', label: 'QAT int4-g128 (AdamW, fp32 masters)', weights: 'fp32', qat: { format: 'int4', granularity: 128 } },
  { id: 'mezo', label: 'MeZO fp32', weights: 'fp32' },
  { id: 'quzo-int8', label: 'QuZO int8', weights: 'int8', bits: 8 },
  { id: 'quzo-int4', label: 'QuZO int4 (g128)', weights: 'int4', bits: 4 },
  { id: 'lowprec-int8', label: 'low-precision FO int8 (SGD, SR onto the grid, no fp32 master)', weights: 'int8', lowprec: 'int8' },
  { id: 'lowprec-int4', label: 'low-precision FO int4 (g128) (SGD, SR onto the grid, no fp32 master)', weights: 'int4', lowprec: 'int4' },
];

function batch(vocab, step) {
  const seq = (s) => Array.from({ length: TOKENS / 2 }, (_, i) => (i * 7919 + s * 104729 + step * 31) % vocab);
  return [seq(1), seq(2)];
}

async function child(spec) {
  const z = require(path.join(ROOT, 'dist'));
  const cfg = CONFIGS.find((c) => c.id === spec.config);
  const { expectedShape } = require(path.join(ROOT, 'dist', 'model', 'llama'));
  const model = await z.LlamaModel.load(spec.dir, { weights: cfg.weights });
  const V = model.config.vocabSize;
  let step;
  let trainer;
  if (cfg.id === 'forward') step = (s) => model.forward(batch(V, s), { logits: 'none' });
  else if (cfg.lowprec) {
    trainer = new z.fo.LowPrecisionTrainer(model, { lr: 1e-4, seed: 1, maxGradNorm: 1 });
    step = (s) => trainer.step([{ batch: batch(V, s) }]);
  } else if (cfg.id.startsWith('fo-') || cfg.qat) {
    const optimizer = cfg.id === 'fo-sgd' ? { kind: 'sgd', lr: 1e-4 } : { kind: 'adamw', lr: 1e-5 };
    trainer = new z.fo.FoTrainer(model, { optimizer, recompute: cfg.id.endsWith('recompute'), maxGradNorm: 1, qat: cfg.qat });
    step = (s) => trainer.step([{ batch: batch(V, s) }]);
  } else {
    // MeZO / QuZO: one two-point probe (perturbation inside the weight loads), one fused update
    const direction = { dist: 'gaussian', bits: cfg.bits ?? 0 };
    step = async (s) => {
      const { plus, minus } = await model.zoProbe(batch(V, s), { seed: s + 1, eps: 1e-3, direction, logits: 'none' });
      const g = (plus.loss - minus.loss) / 2e-3;
      await model.zoUpdate({ seed: s + 1, scale: 1e-6 * g, direction });
    };
  }
  const times = [];
  for (let s = 0; s < STEPS; s++) {
    const t0 = performance.now();
    await step(s);
    times.push(performance.now() - t0);
  }
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const kb = (k) => Number((status.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm')) || [])[1]) * 1024;
  const eng = z.memory().engine;
  // weight bytes of the layers vs the rest (embedding, LM head, final norm): storage differs per scheme
  let layerBytes = 0, fixedBytes = 0, qatCopyBytes = 0;
  for (const n of z.llamaTensorNames(model.config)) {
    const b = model.weight(n).byteLength;
    if (cfg.qat && z.isLinearWeight(n)) qatCopyBytes += b; // the fake-quantized fp32 copies (workspace)
    if (cfg.lowprec && z.isLinearWeight(n)) qatCopyBytes += 4 * expectedShape(model.config, n).reduce((a, d) => a * d, 1); // the dequantized fp32 views lossAndGrad differentiates (workspace)
    if (n.startsWith('model.layers.')) layerBytes += b;
    else fixedBytes += b;
  }
  const stepMs = times[times.length - 1];
  process.stdout.write(JSON.stringify({ hwm: kb('VmHWM'), peak: eng.peak, totalPeak: eng.totalPeak, stepMs, layerBytes, fixedBytes, qatCopyBytes }) + '\n');
  trainer?.dispose();
  model.dispose();
}

// --- random TinyLlama-shaped checkpoints ----------------------------------------------------

const TINYLLAMA = { hidden: 2048, inter: 5632, heads: 32, kvHeads: 4, vocab: 32000 };
const LLAMA7B = { hidden: 4096, inter: 11008, heads: 32, kvHeads: 32, vocab: 32000, layers: 32 };

function layerParams(s) {
  const hd = s.hidden / s.heads;
  return 2 * s.hidden * s.hidden + 2 * s.hidden * s.kvHeads * hd + 3 * s.hidden * s.inter + 2 * s.hidden;
}
function fixedParams(s) {
  return 2 * s.vocab * s.hidden + s.hidden; // embedding, LM head, final norm
}
// floats kept per token per layer by the training forward (llama_grad.cc act_floats)
function actPerTokenLayer(s) {
  const hd = s.hidden / s.heads;
  return 3 * s.hidden + 2 * s.hidden + 2 * s.kvHeads * hd + 2 * s.inter;
}

function writeRandomCheckpoint(dir, s, layers) {
  const z = require(path.join(ROOT, 'dist'));
  fs.mkdirSync(dir, { recursive: true });
  const cfg = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: s.hidden, intermediate_size: s.inter, num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads, num_hidden_layers: layers, vocab_size: s.vocab, max_position_embeddings: 2048, rms_norm_eps: 1e-5,
    rope_theta: 10000, tie_word_embeddings: false, hidden_act: 'silu', torch_dtype: 'float32',
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  const c = z.parseLlamaConfig(cfg);
  let seed = 12345;
  const entries = z.llamaTensorNames(c).map((name) => {
    const D = s.hidden, hd = D / s.heads, KV = s.kvHeads * hd;
    const shape = /norm/.test(name) ? [D] : /embed|lm_head/.test(name) ? [s.vocab, D] : /[kv]_proj/.test(name) ? [KV, D]
      : /down/.test(name) ? [D, s.inter] : /gate|up/.test(name) ? [s.inter, D] : [D, D];
    const n = shape.reduce((a, b) => a * b, 1), data = new Float32Array(n);
    if (/norm/.test(name)) data.fill(1);
    else {
      const amp = 1 / Math.sqrt(shape[1]);
      for (let i = 0; i < n; i++) {
        seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
        data[i] = amp * ((seed / 4294967296) * 2 - 1);
      }
    }
    return { name, dtype: 'F32', shape, data };
  });
  z.writeSafetensors(path.join(dir, 'model.safetensors'), entries);
}

// --- parent ---------------------------------------------------------------------------------

function runChild(spec) {
  const out = execFileSync(process.execPath, [__filename, '--child', JSON.stringify(spec)], {
    encoding: 'utf8', maxBuffer: 1 << 20, env: { ...process.env }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out.trim().split('\n').pop());
}

const mib = (b) => (b / 2 ** 20).toFixed(b < 10 * 2 ** 20 ? 1 : 0);
const gib = (b) => (b / 2 ** 30).toFixed(2);

function svgChart(groups) {
  // one horizontal stacked bar per (model, config): engine categories + rest of the resident set
  const colors = { weights: '#4e79a7', activations: '#f28e2b', gradients: '#e15759', optimizer: '#76b7b2', workspace: '#59a14f', other: '#edc948', runtime: '#bab0ac' };
  const rows = [];
  for (const g of groups) for (const r of g.rows) rows.push({ label: `${g.model}: ${r.label}`, r, max: g.max });
  const W = 900, left = 330, barW = W - left - 20, rowH = 22, top = 40, H = top + rows.length * rowH + 40;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<text x="10" y="20" font-size="14">Peak resident set by engine category (each model's bars scaled to its largest)</text>`];
  rows.forEach(({ label, r, max }, i) => {
    const y = top + i * rowH;
    parts.push(`<text x="${left - 6}" y="${y + 14}" text-anchor="end">${label.replace(/&/g, '&amp;')}</text>`);
    let x = left;
    const segs = [...CATS.map((c) => [c, r.peak[c] || 0]), ['runtime', Math.max(0, r.hwm - r.totalPeak)]];
    for (const [c, b] of segs) {
      const w = (b / max) * barW;
      if (w > 0.2) parts.push(`<rect x="${x.toFixed(1)}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${colors[c]}"/>`);
      x += w;
    }
    parts.push(`<text x="${(x + 4).toFixed(1)}" y="${y + 14}">${mib(r.hwm)} MiB</text>`);
  });
  let lx = left;
  for (const [c, col] of Object.entries(colors)) {
    parts.push(`<rect x="${lx}" y="${H - 25}" width="12" height="12" fill="${col}"/><text x="${lx + 16}" y="${H - 15}">${c}</text>`);
    lx += 95;
  }
  parts.push('</svg>');
  return parts.join('\n');
}

async function parent() {
  const t0 = Date.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-memory-'));
  const models = [];
  const tiny = path.join(MODELS, 'tiny-llama');
  if (fs.existsSync(path.join(tiny, 'config.json'))) models.push({ name: 'tiny-llama', dir: tiny });
  else console.log(`memory: no tiny-llama at ${tiny} (set ZOTUNE_MODELS); random models only`);
  const LAYERS = Number(process.env.ZOTUNE_MEMORY_LAYERS || 4);
  const rdir = path.join(tmp, `tinyllama-shape-${LAYERS}l`);
  console.log(`memory: writing a random ${LAYERS}-layer TinyLlama-1.1B-shaped checkpoint to ${rdir}`);
  writeRandomCheckpoint(rdir, TINYLLAMA, LAYERS);
  models.push({ name: `TinyLlama-1.1B shapes, ${LAYERS} layers (random)`, dir: rdir, shape: TINYLLAMA, layers: LAYERS });
  const groups = [];
  try {
    for (const m of models) {
      const rows = [];
      for (const cfg of CONFIGS) {
        process.stdout.write(`memory: ${m.name} / ${cfg.label} ... `);
        try {
          const r = runChild({ dir: m.dir, config: cfg.id });
          console.log(`VmHWM ${mib(r.hwm)} MiB, engine peak ${mib(r.totalPeak)} MiB, step ${r.stepMs.toFixed(0)} ms`);
          rows.push({ ...cfg, ...r });
        } catch (err) {
          console.log(`failed: ${String(err.message).split('\n')[0]}`);
          rows.push({ ...cfg, error: String(err.message).split('\n')[0] });
        }
      }
      const ok = rows.filter((r) => !r.error);
      groups.push({ model: m.name, m, rows: ok, failed: rows.filter((r) => r.error), max: Math.max(...ok.map((r) => r.hwm)) });
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  // table
  const md = [];
  md.push('# Memory: first-order vs zeroth-order fine-tuning', '');
  md.push(`Machine: ${os.cpus()[0]?.model ?? 'cpu'}, ${os.cpus().length} cores, ${gib(os.totalmem())} GiB; Node ${process.version}; ${new Date().toISOString()}.`, '');
  md.push('## Method', '');
  md.push(`- Each configuration runs in a fresh child process: load the model, ${STEPS} training steps on 2 sequences × ${TOKENS / 2} tokens, then report the peak resident set (VmHWM from /proc/self/status: Node runtime and everything else included) and the engine's peak bytes per category (lib memory(): weights, activations, gradients, optimizer state, workspace; peaks are per category, so they need not add up to the total peak).`);
  md.push('- FO: `FoTrainer` (lossAndGrad + fused AdamW/SGD update, clipping to norm 1), all parameters trained, gradients fp32; QAT: the same with fake-quantized copies of the linear layers and LM head in the forward (straight-through gradients to the fp32 masters; the copies are workspace). MeZO/QuZO: `model.zoProbe` (two forwards with the perturbation inside the weight loads) + `model.zoUpdate`, all parameters trained; QuZO on int8 / int4-g128 weights with 8-/4-bit stochastically rounded directions.');
  md.push('- "× forward" divides a configuration\'s VmHWM by the inference forward\'s VmHWM on the same model, measured in the same run; step time: the second step, after a warm-up step (the machine is shared: compare ratios within one run).');
  md.push('');
  md.push('## Results', '');
  const cols = ['model', 'configuration', 'VmHWM MiB', '× forward', ...CATS.map((c) => `${c} MiB`), 'engine peak MiB', 'step ms', 'step × forward'];
  md.push(`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`);
  for (const g of groups) {
    const fwd = g.rows.find((r) => r.id === 'forward');
    for (const r of g.rows)
      md.push(`| ${g.model} | ${r.label} | ${mib(r.hwm)} | ${fwd ? (r.hwm / fwd.hwm).toFixed(2) : '-'} | ${CATS.map((c) => mib(r.peak[c] || 0)).join(' | ')} | ${mib(r.totalPeak)} | ${r.stepMs.toFixed(0)} | ${fwd ? (r.stepMs / fwd.stepMs).toFixed(2) : '-'} |`);
    for (const r of g.failed) md.push(`| ${g.model} | ${r.label} | failed: ${r.error} |${' |'.repeat(cols.length - 3)}`);
  }
  md.push('');
  // headline ratios per model
  md.push('## Ratios (same run)', '');
  for (const g of groups) {
    const by = Object.fromEntries(g.rows.map((r) => [r.id, r]));
    const pair = (a, b) => (by[a] && by[b] ? `${(by[a].hwm / by[b].hwm).toFixed(2)}×` : 'n/a');
    md.push(`- ${g.model}: FO-AdamW fp32 ÷ MeZO fp32 = ${pair('fo-adamw', 'mezo')}; FO-AdamW fp32 ÷ QuZO int8 = ${pair('fo-adamw', 'quzo-int8')}; FO-AdamW fp32 ÷ QuZO int4 = ${pair('fo-adamw', 'quzo-int4')}; FO-SGD ÷ MeZO = ${pair('fo-sgd', 'mezo')}; QAT int8 ÷ QuZO int8 = ${pair('qat-int8', 'quzo-int8')}; QAT int4 ÷ QuZO int4 = ${pair('qat-int4', 'quzo-int4')}; low-precision FO int8 ÷ QuZO int8 = ${pair('lowprec-int8', 'quzo-int8')}; low-precision FO int4 ÷ QuZO int4 = ${pair('lowprec-int4', 'quzo-int4')} (peak resident set).`);
  }
  md.push('');

  // per-layer extrapolation to LLaMA-7B from the random model's engine categories
  const rg = groups.find((g) => g.m.shape);
  if (rg) {
    const s = rg.m.shape, L = rg.m.layers;
    const pMeas = layerParams(s) * L + fixedParams(s), p7 = layerParams(LLAMA7B) * LLAMA7B.layers + fixedParams(LLAMA7B);
    const a7 = actPerTokenLayer(LLAMA7B) * LLAMA7B.layers, aMeas = actPerTokenLayer(s) * L;
    md.push('## Extrapolation to LLaMA-7B (32 layers, hidden 4096, intermediate 11008, 32 KV heads, vocab 32000)', '');
    md.push(`- Per category, from the ${L}-layer run: weights split into the layers' bytes (scaled by the layer parameter count, ${(layerParams(s) * L / 1e6).toFixed(0)} M → ${(layerParams(LLAMA7B) * LLAMA7B.layers / 1e9).toFixed(2)} B) and the embedding/LM head/final norm bytes (scaled by their parameter count, ${(fixedParams(s) / 1e6).toFixed(0)} M → ${(fixedParams(LLAMA7B) / 1e6).toFixed(0)} M), each keeping its measured bytes per parameter (fp32 / int8 / int4 storage); gradients and optimizer state (fp32, all parameters) scale with the total parameter count (${(pMeas / 1e6).toFixed(0)} M → ${(p7 / 1e9).toFixed(2)} B); activations scale with the floats kept per token and layer (${aMeas} → ${a7}, same token count); workspace (transposed GEMM blocks, LM-head chunks, per-layer temporaries) with the hidden size (×${(LLAMA7B.hidden / s.hidden).toFixed(0)}), except QAT's fake-quantized weight copies and low-precision FO's dequantized views, which scale with the linear parameter count; the runtime rest (VmHWM − engine total peak) is kept as measured. Engine categories peak at different moments, so the sum over-estimates slightly.`);
    md.push('');
    md.push('| configuration | weights GiB | activations GiB | gradients GiB | optimizer GiB | workspace GiB | other GiB | estimated peak GiB | × MeZO fp32 | × QuZO same bits |', '|---|---|---|---|---|---|---|---|---|---|');
    const est = {};
    for (const r of rg.rows) {
      const sc = { weights: p7 / pMeas, gradients: p7 / pMeas, optimizer: p7 / pMeas, activations: a7 / aMeas, workspace: LLAMA7B.hidden / s.hidden, other: 1 };
      const parts = CATS.map((c) => (r.peak[c] || 0) * sc[c]);
      // weights: measured peak minus the checkpoint's own bytes is load-time overhead, kept as is
      const wLayers = r.layerBytes * (layerParams(LLAMA7B) * LLAMA7B.layers) / (layerParams(s) * L);
      const wFixed = r.fixedBytes * fixedParams(LLAMA7B) / fixedParams(s);
      parts[0] = wLayers + wFixed + Math.max(0, (r.peak.weights || 0) - r.layerBytes - r.fixedBytes);
      // QAT's fake-quantized copies scale with the linear parameters (layers + LM head)
      const lin7 = layerParams(LLAMA7B) * LLAMA7B.layers + LLAMA7B.vocab * LLAMA7B.hidden, linMeas = layerParams(s) * L + s.vocab * s.hidden;
      parts[4] = Math.max(0, (r.peak.workspace || 0) - r.qatCopyBytes) * sc.workspace + r.qatCopyBytes * lin7 / linMeas;
      est[r.id] = parts.reduce((a, b) => a + b, 0) + Math.max(0, r.hwm - r.totalPeak);
      r.est7 = parts;
    }
    const same = (r) => (r.qat ? `quzo-${r.qat.format}` : r.lowprec ? `quzo-${r.lowprec}` : undefined);
    for (const r of rg.rows)
      md.push(`| ${r.label} | ${r.est7.map(gib).join(' | ')} | ${gib(est[r.id])} | ${est.mezo ? (est[r.id] / est.mezo).toFixed(2) : '-'} | ${same(r) && est[same(r)] ? (est[r.id] / est[same(r)]).toFixed(2) : '-'} |`);
    md.push('');
  }
  md.push('Notes: QAT here fake-quantizes every selected weight into one fp32 copy for the whole step (workspace); quantizing each layer just before its use would bring QAT down to FO-AdamW\'s peak. Low-precision FO keeps no fp32 master or optimizer state, but lossAndGrad differentiates a dequantized fp32 view of the weights and the gradients are fp32 (workspace and gradients columns). Step times come from a shared 2-core machine (load average 6-9 during this run): use them only as ratios within the run.', '');
  md.push('![peak memory by category](memory.svg)', '');
  md.push(`Run time: ${((Date.now() - t0) / 1e3).toFixed(0)} s.`, '');
  fs.mkdirSync(RESULTS, { recursive: true });
  fs.writeFileSync(path.join(RESULTS, 'memory.md'), md.join('\n'));
  fs.writeFileSync(path.join(RESULTS, 'memory.svg'), svgChart(groups));
  console.log(`\n${md.join('\n')}\nwritten: bench/results/memory.md, bench/results/memory.svg`);
}

// bench/run.js loads suites as modules: expose the profiler as a suite whose run() is the parent.
const suite = { name: 'memory', title: 'Peak memory of FO and ZO fine-tuning (child processes)', run: () => parent() };

if (require.main === module) {
  const i = process.argv.indexOf('--child');
  (i > 0 ? child(JSON.parse(process.argv[i + 1])) : parent()).catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
} else {
  module.exports = suite;
}
