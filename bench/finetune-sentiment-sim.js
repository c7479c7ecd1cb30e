'use strict';
/**
 * Dev-only simulation of the sentiment experiment's ZO runs (bench/finetune-sentiment.js), used to
 * choose its budget and LR grid before any engine run. With only the final RMSNorm gain g (or the
 * LM-head rows R of the label words) trainable, the state at the label position does not change
 * during training: the two label logits of an example are R · (g ⊙ n) with n its normalized last
 * hidden state. n is recovered once per train / dev example from the fp32 model's full logits
 * (least squares against the LM head, exact to ~1e-5), and ZO-SGD (Gaussian SPSA, Q queries per step,
 * batch 16, constant LR, evaluation on dev every steps/EVALS steps, best evaluation kept) runs on
 * those features in float64. It does not read the test split.
 *
 *   node bench/finetune-sentiment-sim.js      (npm run build first)
 * Environment: ZT_SIM_SET (norm | rows | both, default norm; both: the rows in scaled coordinates, their LR
 * the norm's x ZT_SIM_ROWS_LR_SCALE, default 1e-3), ZT_SIM_STEPS (comma list, default 3000,10000,20000),
 * ZT_SIM_QUERIES (default 32), ZT_SIM_LRS (default 1,2,4; rows: use ~1e-3), ZT_SIM_SEEDS (default
 * 100,101,102: not the experiment's final seeds), ZT_SIM_EVALS (default 10), ZT_SIM_PROMPTS=all (every
 * single-token candidate prompt of the experiment's prompt table instead of the builtin one),
 * ZT_SIM_AVERAGE=1 (also score the average of the iterates of the second half of each run, Polyak-Ruppert).
 * About five minutes (ZT_SIM_PROMPTS=all: 2 minutes per prompt and budget).
 * Writes bench/results/finetune-sentiment-sim.md (the other sets: finetune-sentiment-sim-<set>.md; all
 * prompts: finetune-sentiment-sim-prompts.md; averaging: -average before .md).
 */
const fs = require('node:fs');
const path = require('node:path');
const h = require('./harness');

const ROOT = path.resolve(__dirname, '..');
const MODEL = path.join(process.env.ZOTUNE_MODELS || path.resolve(ROOT, '..', 'shared', 'models'), 'tiny-llama');
const list = (v, d) => (v || d).split(',').map(Number);
const SET = process.env.ZT_SIM_SET || 'norm';
if (!['norm', 'rows', 'both'].includes(SET)) throw new Error(`ZT_SIM_SET must be norm, rows or both, got ${SET}`);
// both: one direction over the norm and the rows, the rows in coordinates scaled by s (perturbed by
// eps s z, updated by LR s g z: their LR is LR s^2 = LR x ZT_SIM_ROWS_LR_SCALE, and their share of the
// projected gradient shrinks with them; a plain per-tensor LR leaves the rows' large gradient in every
// projected gradient, which then drives the norm's update: that diverged at every rows LR tried)
const ROWS_LR_SCALE = Number(process.env.ZT_SIM_ROWS_LR_SCALE || 1e-3), ROWS_S = Math.sqrt(ROWS_LR_SCALE);
const STEPS = list(process.env.ZT_SIM_STEPS, '3000,10000,20000');
const QUERIES = Number(process.env.ZT_SIM_QUERIES || 32);
const LRS = list(process.env.ZT_SIM_LRS, '1,2,4');
const SEEDS = list(process.env.ZT_SIM_SEEDS, '100,101,102');
const EVALS = Number(process.env.ZT_SIM_EVALS || 10);
const BATCH = 16, EPS = 1e-3, D = 256;
const AVERAGE = process.env.ZT_SIM_AVERAGE === '1';
const ALL_PROMPTS = process.env.ZT_SIM_PROMPTS === 'all';
if (AVERAGE && SET !== 'norm') throw new Error('ZT_SIM_AVERAGE averages the norm gain: use it with ZT_SIM_SET=norm');
if (process.env.ZT_SIM_PROMPTS && !ALL_PROMPTS) throw new Error(`ZT_SIM_PROMPTS must be all, got ${process.env.ZT_SIM_PROMPTS}`);
// the single-token (template, label words) candidates of the prompt table in finetune-sentiment.md
const PROMPTS = [
  ['{text} It was', [' bad', ' good']],
  ['{text} It was', [' bad', ' great']],
  ['{text} This is', [' bad', ' good']],
  ['Review: {text} Sentiment:', [' bad', ' good']],
  ['{text} All in all, it was', [' bad', ' good']],
  ['{text} It was', [' no', ' great']],
  ['{text} It was so', [' bad', ' good']],
  ['{text} I thought it was', [' bad', ' great']],
  ['{text}\nIt was', [' bad', ' great']],
];

// Cholesky solve of the normal equations (WᵀW) u = Wᵀx for every row x of X: the hidden states.
function leastSquares(W, V, X) {
  const G = new Float64Array(D * D);
  for (let v = 0; v < V; v++)
    for (let i = 0; i < D; i++) {
      const a = W[v * D + i];
      for (let j = 0; j <= i; j++) G[i * D + j] += a * W[v * D + j];
    }
  for (let j = 0; j < D; j++) {
    let s = G[j * D + j];
    for (let k = 0; k < j; k++) s -= G[j * D + k] ** 2;
    G[j * D + j] = Math.sqrt(s);
    for (let i = j + 1; i < D; i++) {
      let t = G[i * D + j];
      for (let k = 0; k < j; k++) t -= G[i * D + k] * G[j * D + k];
      G[i * D + j] = t / G[j * D + j];
    }
  }
  return X.map((x) => {
    const u = new Float64Array(D);
    for (let v = 0; v < V; v++) for (let i = 0; i < D; i++) u[i] += W[v * D + i] * x[v];
    for (let i = 0; i < D; i++) {
      for (let k = 0; k < i; k++) u[i] -= G[i * D + k] * u[k];
      u[i] /= G[i * D + i];
    }
    for (let i = D - 1; i >= 0; i--) {
      for (let k = i + 1; k < D; k++) u[i] -= G[k * D + i] * u[k];
      u[i] /= G[i * D + i];
    }
    return u;
  });
}

// xoshiro128** with Box-Muller normals: the simulation's own stream (not the engine's).
function normals(seed) {
  const st = Uint32Array.from([seed ^ 0x9e3779b9, 0x243f6a88, 0x85a308d3, 0x13198a2e]);
  const next = () => {
    const r = Math.imul(((st[1] * 5) << 7) | ((st[1] * 5) >>> 25), 9) >>> 0, t = st[1] << 9;
    st[2] ^= st[0], st[3] ^= st[1], st[1] ^= st[2], st[0] ^= st[3], st[2] ^= t;
    st[3] = (st[3] << 11) | (st[3] >>> 21);
    return r;
  };
  for (let i = 0; i < 16; i++) next();
  const u = () => (next() + 0.5) / 4294967296;
  let spare = null;
  return {
    uniform: u,
    normal() {
      if (spare !== null) {
        const s = spare;
        spare = null;
        return s;
      }
      const r = Math.sqrt(-2 * Math.log(u())), t = 2 * Math.PI * u();
      spare = r * Math.sin(t);
      return r * Math.cos(t);
    },
  };
}

// Mean cross-entropy and accuracy over examples (features n, gold y) at gain g and rows R [2][D].
function score(n, y, g, R) {
  let loss = 0, right = 0;
  for (let e = 0; e < n.length; e++) {
    let z0 = 0, z1 = 0;
    for (let i = 0; i < D; i++) {
      const f = g[i] * n[e][i];
      z0 += f * R[i];
      z1 += f * R[D + i];
    }
    const m = Math.max(z0, z1), lse = m + Math.log(Math.exp(z0 - m) + Math.exp(z1 - m));
    loss += lse - (y[e] ? z1 : z0);
    right += (z1 > z0 ? 1 : 0) === y[e] ? 1 : 0;
  }
  return { loss: loss / n.length, acc: right / n.length };
}

function run(data, g0, R0, { lr, steps, seed }) {
  const rnd = normals(seed), g = Float64Array.from(g0), R = Float64Array.from(R0);
  // the trainable tensors, each with its learning rate; z spans them all, in this order
  const parts = SET === 'norm' ? [[g, 1]] : SET === 'rows' ? [[R, 1]] : [[g, 1], [R, ROWS_S]];  // [tensor, coordinate scale]
  const d = parts.reduce((a, [t]) => a + t.length, 0);
  const theta = {  // theta[i] += v * its scale, over the concatenated tensors
    add(i, v) {
      for (const [t, sc] of parts) {
        if (i < t.length) return void (t[i] += v * sc);
        i -= t.length;
      }
    },
  };
  const [tn, ty] = data.train, [dn, dy] = data.dev;
  let order = [], best = { acc: -1 }, bestAvg = { acc: -1 }, n_avg = 0;
  const avg = Float64Array.from(g);  // the mean of g over the steps after steps / 2
  const z = Array.from({ length: QUERIES }, () => new Float64Array(d)), pg = new Float64Array(QUERIES);
  const bn = [], by = [];
  for (let t = 1; t <= steps; t++) {
    if (order.length < BATCH) {
      order = Array.from({ length: tn.length }, (_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(rnd.uniform() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
    }
    bn.length = by.length = 0;
    for (let k = 0; k < BATCH; k++) {
      const e = order.pop();
      bn.push(tn[e]), by.push(ty[e]);
    }
    for (let q = 0; q < QUERIES; q++) {
      for (let i = 0; i < d; i++) z[q][i] = rnd.normal();
      for (let i = 0; i < d; i++) theta.add(i, EPS * z[q][i]);
      const plus = score(bn, by, g, R).loss;
      for (let i = 0; i < d; i++) theta.add(i, -2 * EPS * z[q][i]);
      const minus = score(bn, by, g, R).loss;
      for (let i = 0; i < d; i++) theta.add(i, EPS * z[q][i]);
      pg[q] = (plus - minus) / (2 * EPS);
    }
    for (let q = 0; q < QUERIES; q++)
      for (let i = 0, at = 0; at < parts.length; at++)
        for (let j = 0; j < parts[at][0].length; j++, i++) parts[at][0][j] -= ((lr * parts[at][1]) / QUERIES) * pg[q] * z[q][i];
    if (AVERAGE && 2 * t > steps) {
      n_avg++;
      for (let i = 0; i < D; i++) avg[i] += (g[i] - avg[i]) / n_avg;
    }
    if (t % Math.floor(steps / EVALS) === 0) {
      const s = score(dn, dy, g, R);
      if (s.acc > best.acc) best = { ...s, after: t };
      if (n_avg > 0) {
        const a = score(dn, dy, avg, R);
        if (a.acc > bestAvg.acc) bestAvg = { ...a, after: t };
      }
    }
  }
  return { best, last: score(dn, dy, g, R), bestAvg, lastAvg: score(dn, dy, avg, R) };
}

// Train and dev features of one prompt: the normalized last hidden state of every example.
async function features(model, W, V, g0, task, splits) {
  const data = {};
  for (const name of ['train', 'dev']) {
    const ex = splits[name], logits = [];
    for (let i = 0; i < ex.length; i += 64) {
      const r = await model.forward(ex.slice(i, i + 64).map((e) => task.prompt(e)), { logits: 'last', targets: 'none' });
      logits.push(...r.logits);
    }
    const n = leastSquares(W, V, logits).map((u) => u.map((v, i) => v / g0[i]));
    data[name] = [n, ex.map((e) => task.gold(e))];
  }
  return data;
}

async function main() {
  const z = h.zotune();
  const { LlamaModel, ModelWeights } = z;
  const { loadTask, SENTIMENT_SPEC } = require(path.join(ROOT, 'dist', 'tasks', 'builtin'));
  const { PromptTask } = require(path.join(ROOT, 'dist', 'tasks', 'task'));
  const model = await LlamaModel.load(MODEL, { weights: 'fp32' });
  const tokenizer = z.LlamaTokenizer.load(MODEL);
  const { splits } = loadTask('sentiment', tokenizer);
  const weights = ModelWeights.open(MODEL);
  const W = weights.readF32('lm_head.weight').data(), g0 = Float64Array.from(weights.readF32('model.norm.weight').data());
  weights.close();
  const V = W.length / D;
  const prompts = ALL_PROMPTS ? PROMPTS : [[SENTIMENT_SPEC.template, SENTIMENT_SPEC.labelWords]];
  const rows = [], zeroShot = [];
  for (const [template, labelWords] of prompts) {
    const task = new PromptTask({ ...SENTIMENT_SPEC, template, labelWords }, tokenizer);
    const [bad, great] = task.labelTokens;
    const R0 = new Float64Array(2 * D);
    for (let i = 0; i < D; i++) (R0[i] = W[bad * D + i]), (R0[D + i] = W[great * D + i]);
    const data = await features(model, W, V, g0, task, splits);
    const zs = score(data.dev[0], data.dev[1], g0, R0);
    const name = `\`${template.replace('\n', '\\n')}\` ${labelWords.map((w) => `\`${w}\``).join(' / ')}`;
    zeroShot.push(`${name}: ${(100 * zs.acc).toFixed(1)} % / ${zs.loss.toFixed(4)}`);
    console.log(`${name} zero-shot dev ${(100 * zs.acc).toFixed(1)} % / ${zs.loss.toFixed(4)}`);
    for (const steps of STEPS)
      for (const lr of LRS) {
        const runs = SEEDS.map((seed) => run(data, g0, R0, { lr, steps, seed }));
        const mean = (f) => runs.reduce((a, r) => a + f(r), 0) / runs.length;
        const row = [steps, lr, runs.map((r) => (100 * r.best.acc).toFixed(1)).join(' / '), (100 * mean((r) => r.best.acc)).toFixed(1),
          runs.map((r) => r.best.after).join(' / '), mean((r) => r.best.loss).toFixed(4), mean((r) => r.last.loss).toFixed(4)];
        if (AVERAGE)
          row.push((100 * mean((r) => r.bestAvg.acc)).toFixed(1), (100 * mean((r) => r.last.acc)).toFixed(1), (100 * mean((r) => r.lastAvg.acc)).toFixed(1),
            mean((r) => r.lastAvg.loss).toFixed(4));
        if (ALL_PROMPTS) row.unshift(name);
        rows.push(row);
        console.log(row.join('  '));
      }
  }
  model.dispose();
  const head = [...(ALL_PROMPTS ? ['prompt'] : []), 'steps', 'LR', 'best dev % per seed', 'mean best dev %', 'best after (steps)', 'dev loss at best (mean)', 'final dev loss (mean)',
    ...(AVERAGE ? ['averaged: mean best dev %', 'final dev % (mean)', 'averaged: final dev % (mean)', 'averaged: final dev loss (mean)'] : [])];
  const md = [
    `# Dev-only simulation of the sentiment ZO runs (${ALL_PROMPTS ? 'choice of prompt' : AVERAGE ? 'iterate averaging' : 'choice of budget and LR'})`,
    '',
    `Written by \`node bench/finetune-sentiment-sim.js\` (${new Date().toISOString()}); method in the script's header. Trainable: ${SET === 'norm' ? 'the final RMSNorm gain (256)' : SET === 'rows' ? 'the LM-head rows of the two label words (512)' : `the final RMSNorm gain (256) and the LM-head rows of the two label words (512) in coordinates scaled by ${ROWS_S.toPrecision(3)} (their LR: LR x ${ROWS_LR_SCALE}), one direction over both`}; ` +
      `${QUERIES} Gaussian queries per step, batch ${BATCH}, ε ${EPS}, constant LR, dev evaluated every steps / ${EVALS} steps; seeds ${SEEDS.join(', ')}. ` +
      (AVERAGE ? 'Averaged: the mean of the gain over the second half of each run (Polyak-Ruppert), scored at the same evaluations. ' : '') +
      `Zero-shot dev (the engine's, from the same features): ${zeroShot.join('; ')}. The test split is not read.`,
    '',
    h.markdownTable(head, rows),
    '',
  ];
  const file = `finetune-sentiment-sim${SET === 'norm' ? '' : `-${SET}`}${ALL_PROMPTS ? '-prompts' : ''}${AVERAGE ? '-average' : ''}.md`;
  const out = path.join(ROOT, 'bench', 'results', file);
  fs.writeFileSync(out, md.join('\n'));
  console.log(`wrote ${out}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
