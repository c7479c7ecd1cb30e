'use strict';
// LLaMA forward on tiny-llama fp32: prefill and loss-forward tokens/s against the FMA peak and the
// model's own GEMMs alone, decode tokens/s against the memory read ceiling and its GEMVs alone,
// all measured in the same run. Needs the shared checkpoints ($ZOTUNE_MODELS, default ../shared/models).
const fs = require('node:fs');
const path = require('node:path');
const harness = require('./harness');

const MODELS = process.env.ZOTUNE_MODELS || path.resolve(__dirname, '..', '..', 'shared', 'models');
const BATCH = 4, SEQ = 128, PROMPT = 16, DECODE = 64;

const suite = {
  name: 'model',
  title: 'LLaMA forward and KV-cache decoding, tiny-llama fp32',
  async run(h) {
    const z = h.zotune();
    const dir = path.join(MODELS, 'tiny-llama');
    if (!fs.existsSync(path.join(dir, 'config.json'))) {
      console.log(`model: skipped, no checkpoint at ${dir} (set ZOTUNE_MODELS)`);
      return;
    }
    const model = await z.LlamaModel.load(dir);
    const c = model.config;
    const D = c.hiddenSize, Q = c.numHeads * c.headDim, KV = c.numKvHeads * c.headDim, I = c.intermediateSize, V = c.vocabSize;
    // linear layers in forward order: [name, out, in]
    const linears = [];
    for (let l = 0; l < c.numLayers; l++) {
      const p = `model.layers.${l}.`;
      linears.push([`${p}self_attn.q_proj.weight`, Q, D], [`${p}self_attn.k_proj.weight`, KV, D], [`${p}self_attn.v_proj.weight`, KV, D],
        [`${p}self_attn.o_proj.weight`, D, Q], [`${p}mlp.gate_proj.weight`, I, D], [`${p}mlp.up_proj.weight`, I, D], [`${p}mlp.down_proj.weight`, D, I]);
    }
    const head = [c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', V, D];
    const linParams = linears.reduce((s, [, o, i]) => s + o * i, 0);
    // FLOP of a forward: 2 per weight per token, the LM head on the rows that need logits, and
    // causal attention (q.k and p.v over t + 1 visible keys at position t).
    const attnFlop = (T) => c.numLayers * 4 * c.headDim * c.numHeads * (T * (T + 1)) / 2;
    // Prefill's last layer finishes only the LM-head rows (one per sequence), grown to 5 rows (llama.cc
    // last_rows); its k and v projections still run on every token.
    const L = c.numLayers, layerParams = linParams / L, kvParams = 2 * KV * D;
    const finished = Math.min(BATCH * SEQ, Math.max(BATCH, 5));
    const prefillFlop = BATCH * SEQ * 2 * (linParams - layerParams + kvParams) + finished * 2 * (layerParams - kvParams) +
      (attnFlop(SEQ) * BATCH * (L - 1)) / L + finished * 4 * c.headDim * c.numHeads * SEQ + BATCH * 2 * V * D;
    const lossFlop = BATCH * (SEQ * 2 * linParams + attnFlop(SEQ) + SEQ * 2 * V * D);

    let s = 1;
    const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const batch = Array.from({ length: BATCH }, () => Array.from({ length: SEQ }, () => Math.floor(rnd() * (V - 3))));
    const prompt = batch[0].slice(0, PROMPT);

    // The same matrix products through matmul alone (activations random, weights the model's).
    const xs = {};
    for (const m of [BATCH * SEQ, 1]) for (const k of new Set([D, Q, I])) xs[`${m}x${k}`] = z.Tensor.fromArray(Array.from({ length: m * k }, () => rnd() - 0.5), [m, k]);
    const outs = {};
    const gemms = (M, withHead) => {
      for (const [name, o, i] of withHead ? [...linears, head] : linears) {
        const key = `${M}x${o}`;
        outs[key] = outs[key] || z.Tensor.empty([M, o], 'f32', 'workspace');
        z.matmulSync(xs[`${M}x${i}`], model.tensor(name), { out: outs[key] });
      }
    };

    // One layer's causal attention alone at a longer context (nn.attention, tiny-llama's heads), and on
    // the avx512 path the same call on the AVX2 kernel as the peer (same bits).
    const ATT = 512;
    const att = { q: z.Tensor.empty([ATT, c.numHeads, c.headDim]), k: z.Tensor.empty([1, c.numKvHeads, c.headDim, ATT]), v: z.Tensor.empty([1, c.numKvHeads, ATT, c.headDim]) };
    Object.values(att).forEach((t, i) => z.rng.fillSync(t, 'normal', { seed: 11 + i, stream: 0 }));
    att.out = z.Tensor.empty([ATT, c.numHeads, c.headDim]);
    const attention = () => z.nn.attentionSync(att.q, att.k, att.v, { seqOffsets: [0, ATT] }, att.out);
    const zmm = z.cpuInfo().path === 'avx512';
    const attentionAvx2 = () => {
      z.setCpuPath('avx2');
      try {
        attention();
      } finally {
        z.setCpuPath('auto');
      }
    };
    const attFlop = 4 * c.headDim * c.numHeads * (ATT * (ATT + 1)) / 2;

    const rows = [];
    const all = z.cpuInfo().threads;
    try {
      for (const t of [...new Set([1, all])]) {
        const decodeFn = async () => {
          let n = 0;
          for await (const tok of model.generate(prompt, { maxNewTokens: DECODE, stopTokens: [] })) n += tok === undefined ? 0 : 1;
          if (n !== DECODE) throw new Error(`decode produced ${n} tokens`);
        };
        // interleaved with the machine ceilings, so every ratio compares runs under the same load
        const { ceilings: ceil, results } = await h.measureWithCeilings(t, [
          { name: 'prefill', fn: () => model.forward(batch, { targets: 'none', logits: 'last' }), work: BATCH * SEQ },
          { name: 'loss forward', fn: () => model.forward(batch), work: BATCH * SEQ },
          { name: 'gemms', fn: () => gemms(BATCH * SEQ, false), work: BATCH * SEQ },
          { name: 'decode', fn: decodeFn, work: DECODE },
          { name: 'gemvs', fn: () => gemms(1, true), work: 1 },
          { name: 'attention', fn: attention, work: ATT },
          ...(zmm ? [{ name: 'attention avx2', fn: attentionAvx2, work: ATT }] : []),
        ]);
        const [prefill, loss, gemmOnly, decode, gemvOnly, attOnly, attAvx2] = results.map((r) => h.rate(r));
        const flops = (r, perTok) => ({ best: r.best * perTok, median: r.median * perTok });
        // the blocked GEMM's full tiles run on zmm on the avx512 path: its FMA peak is the ceiling there
        const peak = ceil.fma512 || ceil.fma;
        const ofFma = (r) => (peak ? `${h.pct(r.best / peak.best, 1)} / ${h.pct(r.median / peak.median, 1)}` : 'n/a');
        const bytesPerToken = 4 * (linParams + V * D);
        const ofRead = (r) => `${h.pct((r.best * bytesPerToken) / ceil.read.best)} / ${h.pct((r.median * bytesPerToken) / ceil.read.median)}`;
        const tok = (r) => h.pair(r, (x) => x.toFixed(0));
        const gf = (r) => h.pair(r, (x) => h.giga(x, 1));
        const vs = (a, b) => `${h.times(a.best / b.best)} / ${h.times(a.median / b.median)}`;
        rows.push(
          [`prefill ${BATCH}x${SEQ}, last logits`, t, tok(prefill), gf(flops(prefill, prefillFlop / (BATCH * SEQ))), ofFma(flops(prefill, prefillFlop / (BATCH * SEQ))), vs(prefill, gemmOnly)],
          [`loss forward ${BATCH}x${SEQ}, log-probs of every next token`, t, tok(loss), gf(flops(loss, lossFlop / (BATCH * SEQ))), ofFma(flops(loss, lossFlop / (BATCH * SEQ))), '-'],
          [`linear layers alone (matmul, M = ${BATCH * SEQ})`, t, tok(gemmOnly), gf(flops(gemmOnly, 2 * linParams)), ofFma(flops(gemmOnly, 2 * linParams)), '1.00x'],
          [`decode, ${PROMPT}-token prompt + ${DECODE} tokens, KV cache, greedy`, t, tok(decode), `${h.pair(decode, (x) => h.giga(x * bytesPerToken, 1))} GB/s`, ofRead(decode), vs(decode, gemvOnly)],
          ['linear layers + LM head alone (matmul, M = 1)', t, tok(gemvOnly), `${h.pair(gemvOnly, (x) => h.giga(x * bytesPerToken, 1))} GB/s`, ofRead(gemvOnly), '1.00x'],
          [`one layer's causal attention alone, 1x${ATT} (nn.attention)`, t, tok(attOnly), gf(flops(attOnly, attFlop / ATT)), ofFma(flops(attOnly, attFlop / ATT)), attAvx2 ? `${vs(attOnly, attAvx2)} the AVX2 kernel (${gf(flops(attAvx2, attFlop / ATT))} GFLOP/s)` : '-'],
        );
      }
    } finally {
      Object.values(att).forEach((x) => x.dispose());
      Object.values(xs).forEach((x) => x.dispose());
      Object.values(outs).forEach((x) => x.dispose());
      model.dispose();
    }
    h.report({
      title: suite.title,
      threads: [...new Set([1, all])].join(' and '),
      method: [
        `tiny-llama (${c.numLayers} layers, hidden ${D}, ${c.numHeads}/${c.numKvHeads} heads of ${c.headDim}, FFN ${I}, vocab ${V}; ${(linParams / 1e6).toFixed(2)} M linear weights + ${(V * D / 1e6).toFixed(2)} M LM head), fp32 weights, one async native call per forward.`,
        `prefill: ${BATCH} sequences of ${SEQ} random tokens, logits of each last token only; loss forward: the same batch with the log-probability of every next token (LM head on all rows), as a ZO training step evaluates it.`,
        `FLOP per forward: 2 per weight per token, the LM head on the rows that need it, and 4·headDim·heads per visible key per layer for attention; prefill's last layer counts only what it computes (since 2026-11-25 it finishes only the rows the LM head reads, grown to 5: its k / v projections for every token, the rest for ${Math.min(BATCH * SEQ, Math.max(BATCH, 5))} rows), so its tokens/s may exceed the GEMMs alone; rates in GFLOP/s against the fp32 FMA peak (bench/ceilings; the AVX-512 one on the avx512 path, where the GEMM's full tiles are zmm).`,
        `decode: generate() with a KV cache, ${PROMPT}-token prompt then ${DECODE} greedy tokens per call (prefill of the prompt included; the decode loop runs natively in one call, llamaGenerate, since 2026-11-25: one JS round trip per token before); GB/s counts the ${(4 * (linParams + V * D) / 1e6).toFixed(1)} MB of linear and LM-head weights each token reads, against the streaming read ceiling.`,
        'reference rows: the same matrix products through matmul alone (the GEMM/GEMV floor of the forward); "vs GEMMs alone" = forward tokens/s ÷ that floor (1.00x = no overhead beyond the linear layers). The reference calls matmul once per weight, while the forward runs the projections that share an input (q/k/v, gate/up) as one parallel job (since 2026-11-24; it also packed that input once until A was read in place, 2026-11-25), so a forward dominated by synchronisation (decode at 2 threads) can exceed 1.00x.',
        'every case is measured in interleaved rounds together with the machine ceilings (harness measureWithCeilings), so a ratio compares runs under the same machine load.',
        `attention row: one layer of tiny-llama's grouped-query attention (${c.numHeads} query / ${c.numKvHeads} KV heads of ${c.headDim}) over one ${ATT}-token sequence, q.k and p.v counted as 4·headDim FLOP per visible key and head. Its numerics (native/common/nn_rows.h) round every product and sum separately (no FMA: the bits are the scalar reference's and the GPU's), so the instruction ceiling of this loop is half the FMA peak. On the avx512 path its last column compares it with the AVX2 kernel on the same call, measured interleaved.`,
      ],
      columns: ['case', 'threads', 'tokens/s best / median', 'GFLOP/s or GB/s best / median', '% of FMA peak or read ceiling (best / median)', 'vs GEMMs alone (best / median)'],
      rows,
      notes: [
        'tiny-llama is small (the whole model is ~26 MB, mostly in L2/L3 on these 2-core machines): decode is bounded by the GEMV kernels and per-op synchronisation, not DRAM; ratios to the ceilings are the figures to compare across machines.',
        'On a shared 2-core machine that is already busy, the 2-thread rows share cores with other processes: their ratios to the 2-thread ceilings (measured interleaved, under the same load) are meaningful, their absolute rates are not.',
        'Attention on the avx512 path since 2026-11-25 (native/cpu/nn_avx512.cc): the AVX2 kernel\'s operations on 16 lanes (32 key slots and a head\'s 32 values in two zmm each) with the rows that see a whole key block processed two at a time (attention_tile.inc, also used by the AVX2 kernel), same bits. Standalone, 1x512 on 2 threads: 1.44 ms (AVX2 kernel before) -> 1.38 ms (AVX2 with row pairs) / 0.95-0.99 ms (AVX-512); 1x2048 23.5 -> 14.6 ms; a 1x512 forward of tiny-llama (mean of 60 calls, builds before and after run alternately) 27.6-28.9 -> 25.3-25.9 ms.',
      ],
    });
  },
};

module.exports = suite;
if (require.main === module) harness.main(suite);
