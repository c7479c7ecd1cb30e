'use strict';
// Machine ceilings every other suite divides by: memory read and read-modify-write bandwidth,
// fp32 FMA and int8 dot peaks (AVX2, and AVX-512 VNNI where the CPU has it), on 1 thread and on all
// engine threads.
const harness = require('./harness');

// 2-core Zen 3 dev machine of kernels.md section 7 (best, 1 thread / 2 threads): context only.
const ZEN3 = { read: [17.7, 28.7], update: [27.8, 44.3], fma: [102.5, 204.2], int8: [199.1, 396.1] };

const suite = {
  name: 'ceilings',
  title: 'Machine ceilings (memory bandwidth, fp32 FMA and int8 dot peaks)',
  async run(h) {
    const z = h.zotune(), all = z.cpuInfo().threads;
    const counts = [...new Set([1, all])];
    const c = {};
    for (const t of counts) c[t] = await h.measureCeilings(t);
    const rows = [];
    const QUANT = [
      ['read', 'streaming read (sum of 256 MiB)', 'GB/s'],
      ['update', 'in-place read-modify-write (x += d over 256 MiB, read + write bytes)', 'GB/s'],
      ['fma', 'fp32 FMA peak (12 chains x 8 lanes, inline asm)', 'GFLOP/s'],
      ['int8', 'int8 dot peak (vpmaddubsw + vpmaddwd + vpaddd, 64 ops / instruction)', 'GOPS'],
      ...(c[1].fma512 ? [['fma512', 'AVX-512 fp32 FMA peak (12 chains x 16 lanes, inline asm)', 'GFLOP/s']] : []),
      ...(c[1].vnni ? [['vnni', 'AVX-512 VNNI int8 dot peak (12 chains of vpdpbusd zmm, 128 ops / instruction)', 'GOPS']] : []),
    ];
    for (const [key, what, unit] of QUANT)
      for (const t of counts) {
        const r = c[t][key];
        const scale = t === 1 || !r ? null : h.ratio(r, c[1][key]);
        const zen3 = ZEN3[key] && ZEN3[key][t === 1 ? 0 : 1];
        rows.push([what, t, unit, h.pair(r, (x) => h.giga(x, 1)), scale ? h.times(scale.best) : '-', !zen3 ? '- (Zen 3 has no AVX-512)' : r ? `${h.pct(r.best / 1e9 / zen3)} of ${zen3}` : 'n/a']);
      }
    h.report({
      title: suite.title,
      threads: counts.join(' and '),
      method: [
        'Native ops in native/cpu/ceilings*.cc, each a fixed amount of work per call on every engine thread (memory: tasks of 256 Ki elements, 1 MiB, since 2026-11-25: 256 KiB tasks read ~10 % low; compute: a fixed iteration count), with a checksum verified on every call.',
        'Memory: 64 Mi f32 (256 MiB) buffer; read counts 4 B/element, read-modify-write 8 B/element (STREAM-style; write-allocate not counted: the lines are already in cache after the read).',
        'fp32 FMA: 32 tasks x 100 000 iterations x 12 independent vfmadd231ps chains (inline asm, so GCC can neither merge the chains nor fold them); 16 FLOP per 8-lane FMA.',
        'int8: 32 tasks x 100 000 iterations x 6 chains of vpmaddubsw + vpmaddwd(ones) + vpaddd (int32 accumulation, the safe sequence); 32 MAC = 64 ops per vpmaddubsw.',
        ...(c[1].vnni ? ['AVX-512 (avx512 path only): 32 tasks x 50 000 iterations x 12 independent vfmadd231ps zmm chains (32 FLOP each) / vpdpbusd zmm chains (64 MAC = 128 ops each). The blocked fp32 GEMM\'s 6x32 tile and the integer GEMM\'s packed micro-kernel run on these units on such a CPU.'] : []),
      ],
      columns: ['ceiling', 'threads', 'unit', 'best / median', 'scaling vs 1 thread (best)', 'vs Zen 3 reference, kernels.md section 7 (best)'],
      rows,
      notes: [
        'The Zen 3 column is the documented reference machine, not this one; it is context, not a target. Zen 1 splits every 256-bit operation into two 128-bit halves and has one vector multiplier, so its compute peaks are about half per clock.',
        'Other suites call measureCeilings() from bench/harness.js, which measures these once per process and thread count.',
      ],
    });
  },
};

module.exports = suite;
if (require.main === module) harness.main(suite);
