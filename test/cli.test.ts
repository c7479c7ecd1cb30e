/** The `zotune` command line, spawned as users run it (the compiled dist/cli/main.js). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cpuInfo, cudaStatus, selectBackend, LlamaModel, LlamaTokenizer, perplexity } from '../lib';
import { nativeBinary } from '../lib/native/load';
import type { DoctorReport } from '../lib/cli/doctor';
import type { GenerateResult } from '../lib/cli/generate';
import type { EvalResult as AnyEvalResult, PerplexityEval } from '../lib/cli/eval';
import type { LogitsResult } from '../lib/cli/logits';
import type { InspectResult } from '../lib/cli/inspect';
import { modelDir } from './helpers/models';
import { root, run, cleanEnv } from './helpers/spawn';

/** `zotune eval --text` results (the perplexity mode). */
type EvalResult = AnyEvalResult & PerplexityEval;

const cli = path.join(root, 'dist', 'cli', 'main.js');
const zotune = (args: string[], env: Record<string, string> = {}) => run(process.execPath, [cli, ...args], { env: cleanEnv(env) });
const version = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;

test('the bin entry is the compiled CLI and starts with a shebang', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  expect(pkg.bin).toEqual({ zotune: 'dist/cli/main.js' });
  expect(fs.readFileSync(cli, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
});

test('--help lists the commands, --version prints the version', () => {
  const help = zotune(['--help']);
  expect(help.status).toBe(0);
  expect(help.stdout).toMatch(/Usage: zotune <command> \[options\]/);
  for (const c of ['generate', 'eval', 'logits', 'inspect', 'doctor']) expect(help.stdout).toMatch(new RegExp(`\\n {2}${c} +\\S`));
  expect(zotune(['help', 'doctor']).stdout).toContain('Usage: zotune doctor [options]');
  for (const flag of ['--version', '-v']) expect(zotune([flag])).toMatchObject({ status: 0, stdout: `${version}\n` });
});

test('usage mistakes: a clear message on stderr and exit status 2', () => {
  const cases: [string[], string][] = [
    [[], 'Usage: zotune <command>'],
    [['frobnicate'], "zotune: unknown command 'frobnicate'. Commands: generate, eval, logits, inspect, finetune, replay, pretrain, doctor"],
    [['--frobnicate'], "zotune: unknown option '--frobnicate'"],
    [['doctor', '--frobnicate'], "zotune doctor: unknown option '--frobnicate'. Run 'zotune doctor --help' for usage."],
    [['doctor', '--backend'], 'zotune doctor: option --backend needs a value'],
    [['doctor', '--backend', 'gpu'], "zotune doctor: --backend must be one of auto, cpu, cuda (got 'gpu')"],
    [['doctor', '--json=yes'], 'zotune doctor: option --json takes no value'],
    [['doctor', 'extra'], "zotune doctor: unexpected argument 'extra'"],
  ];
  for (const [args, msg] of cases) {
    const r = zotune(args);
    expect([args, r.status, r.stdout]).toEqual([args, 2, '']);
    expect(r.stderr).toContain(msg);
  }
});

test('doctor --help describes its options, --json included', () => {
  const r = zotune(['doctor', '--help']);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/--backend <auto\|cpu\|cuda>/);
  expect(r.stdout).toMatch(/--json {2,}Print the result as JSON/);
});

test('doctor --json reports what this process sees', () => {
  const r = zotune(['doctor', '--json']);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const d = JSON.parse(r.stdout) as DoctorReport;
  const info = cpuInfo();
  expect(d.zotune).toEqual({ version, root });
  expect(d.cpu.binary).toEqual(nativeBinary());
  expect(d.cpu.features).toEqual({ avx2: info.avx2, fma: info.fma, f16c: info.f16c, avx512vnni: info.avx512vnni });
  const avx2 = info.avx2 && info.fma && info.f16c;
  expect(d.cpu.path).toBe(avx2 && info.avx512vnni ? 'avx512' : avx2 ? 'avx2' : 'scalar');
  expect(d.cpu.threads).toBeGreaterThan(0);
  const cuda = cudaStatus();
  expect(d.cuda.available).toBe(cuda.available);
  expect(d.cuda.reason).toBe(cuda.reason);
  expect(d.cuda.binary).toEqual(cuda.binary);
  expect(d.cuda.candidates.length).toBeGreaterThan(0);
  expect(d.backend).toEqual({ preference: 'auto', ...selectBackend('auto') });
});

test('doctor follows ZOTUNE_FORCE_SCALAR and ZOTUNE_NUM_THREADS, and says why', () => {
  const r = zotune(['doctor', '--json'], { ZOTUNE_FORCE_SCALAR: '1', ZOTUNE_NUM_THREADS: '3' });
  const d = JSON.parse(r.stdout) as DoctorReport;
  expect(d.cpu.path).toBe('scalar');
  expect(d.cpu.pathReason).toBe(cpuInfo().avx2 ? 'ZOTUNE_FORCE_SCALAR=1' : 'the CPU lacks AVX2, FMA or F16C');
  expect([d.cpu.threads, d.cpu.threadsReason]).toEqual([3, 'ZOTUNE_NUM_THREADS=3']);
});

test('ZOTUNE_CPU_PATH=avx2 keeps a CPU with AVX-512 VNNI on the AVX2 kernels, and doctor says why', () => {
  const r = zotune(['doctor', '--json'], { ZOTUNE_CPU_PATH: 'avx2' });
  const d = JSON.parse(r.stdout) as DoctorReport;
  const info = cpuInfo();
  if (!info.avx2) return expect(d.cpu.path).toBe('scalar');
  expect(d.cpu.path).toBe('avx2');
  expect(d.cpu.pathReason).toBe(info.avx512vnni ? 'ZOTUNE_CPU_PATH=avx2' : 'the CPU has AVX2, FMA and F16C (no AVX-512 VNNI)');
});

test('doctor in words names the binary, the kernel path and the backend', () => {
  const r = zotune(['doctor']);
  expect(r.status).toBe(0);
  expect(r.stdout).toContain(nativeBinary().path);
  expect(r.stdout).toMatch(new RegExp(`kernel path +${cpuInfo().path} \\(`));
  expect(r.stdout).toMatch(new RegExp(`backend +${selectBackend('auto').backend} \\(`));
  expect(r.stdout).toMatch(/\nCUDA/);
});

test('doctor --backend cuda: exit status 1 and the coded reason when CUDA is unusable', () => {
  const r = zotune(['doctor', '--backend', 'cuda', '--json']);
  const d = JSON.parse(r.stdout) as DoctorReport;
  if (cudaStatus().available) {
    expect([r.status, d.backend.backend]).toEqual([0, 'cuda']);
  } else {
    expect(r.status).toBe(1);
    expect(d.backend.error!.code).toBe('ZOTUNE_CUDA_UNAVAILABLE');
    expect(d.backend.error!.message).toContain(cudaStatus().reason);
  }
});

// --- model commands (generate, eval, logits, inspect) against the shared micro-llama -------------

const micro = modelDir('micro-llama');
const withModel = micro ? describe : describe.skip;

interface GoldenPrompt {
  text: string;
  input_ids: number[];
  greedy: { new_ids: number[] };
}

test('each model command documents its options; missing or malformed options exit 2 before any work', () => {
  for (const [cmd, required] of [['generate', ['--model', '--prompt']], ['eval', ['--model', '--text']], ['logits', ['--model', '--ids']], ['inspect', ['--model']]] as const) {
    const h = zotune([cmd, '--help']);
    expect(h.status).toBe(0);
    expect(h.stdout).toContain(`Usage: zotune ${cmd} [options]`);
    for (const r of required) expect(h.stdout).toContain(r);
  }
  const dir = micro ?? '/nonexistent';
  const cases: [string[], string][] = [
    [['generate', '--prompt', 'hi'], 'zotune generate: missing required option --model'],
    [['generate'], 'missing required options --model, --prompt'],
    [['generate', '--model', dir, '--prompt', 'hi', '--max-tokens', 'ten'], "--max-tokens must be an integer >= 0 (got 'ten')"],
    [['generate', '--model', dir, '--prompt', 'hi', '--max-tokens=-1'], "--max-tokens must be an integer >= 0 (got '-1')"],
    [['generate', '--model', dir, '--prompt', 'hi', '--top-p', '1.5'], "--top-p must be in [0, 1] (got '1.5')"],
    [['generate', '--model', dir, '--prompt', 'hi', '--temperature', 'nan'], '--temperature must be a number >= 0'],
    [['generate', '--model', dir, '--prompt', 'hi', '--greedy', '--seed', '3'], '--greedy cannot be combined with'],
    [['generate', '--model', dir, '--prompt'], 'option --prompt needs a value'],
    [['generate', '--model', dir, '--prompt', '--json'], "option --prompt needs a value (write --prompt=-... for a value starting with '-')"],
    [['generate', '--model', dir, '--prompt', 'hi', '--tokens', '3'], "zotune generate: unknown option '--tokens'"],
    [['eval', '--model', dir], 'zotune eval: missing what to evaluate: --text'],
    [['eval', '--model', dir, '--text', 'x', '--window', '1'], "--window must be an integer >= 2 (got '1')"],
    [['eval', '--model', dir, '--text', 'x', '--batch', '0'], '--batch must be an integer in [1, 4096]'],
    [['logits', '--model', dir, '--ids', '1,,2'], "--ids must be a comma-separated list of token ids such as 1,2,3 (got '1,,2')"],
    [['logits', '--model', dir, '--ids', '1,-2'], '--ids must be a comma-separated list'],
    [['logits', '--model', dir, '--ids', '1', '--top', 'all'], "--top must be an integer >= 0 (got 'all')"],
    [['inspect'], 'zotune inspect: missing required option --model'],
    [['generate', '--model', dir, '--prompt', 'hi', '--bogus', '--json'], "zotune generate: unknown option '--bogus'"],
    [['replay', '/tmp', '--steps', ''], "--steps must be an integer >= 0 (got '')"],
  ];
  for (const [args, msg] of cases) {
    const r = zotune(args);
    // --json: the error object on stdout as well (machine readers get JSON whatever failed)
    const out = args.includes('--json') ? JSON.parse(r.stdout).error : r.stdout;
    expect([args, r.status, out]).toEqual([args, 2, args.includes('--json') ? expect.objectContaining({ code: 'ZOTUNE_INVALID_ARGUMENT', usage: true }) : '']);
    expect(r.stderr).toContain(msg);
    expect(r.stderr).toMatch(/Run 'zotune \w+ --help' for usage\.\n$/);
  }
});

test('library errors print `code: message` and exit 1; a stack trace only with ZOTUNE_DEBUG=1', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-cli-'));
  try {
    const r = zotune(['logits', '--model', tmp, '--ids', '1,2']);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`zotune logits: ZOTUNE_IO: ${path.join(tmp, 'config.json')}: no such file\n`);
    const j = zotune(['inspect', '--model', tmp, '--json']);
    expect(j.status).toBe(1);
    expect(JSON.parse(j.stdout)).toEqual({ error: { code: 'ZOTUNE_IO', message: `${path.join(tmp, 'config.json')}: no such file` } });
    const d = zotune(['inspect', '--model', tmp], { ZOTUNE_DEBUG: '1' });
    expect(d.status).toBe(1);
    expect(d.stderr).toMatch(/ZotuneError: .*no such file\n\s+at /);
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify({ architectures: ['MistralForCausalLM'], model_type: 'mistral' }));
    const u = zotune(['inspect', '--model', tmp]);
    expect(u.status).toBe(1);
    expect(u.stderr).toMatch(/^zotune inspect: ZOTUNE_UNSUPPORTED: .*MistralForCausalLM.* is not supported\. Supported: LlamaForCausalLM/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

withModel('model commands on micro-llama', () => {
  const dir = micro!;
  const goldens = (): GoldenPrompt[] => JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8')).prompts;
  let model: LlamaModel;
  let tok: LlamaTokenizer;
  beforeAll(async () => {
    model = await LlamaModel.load(dir);
    tok = LlamaTokenizer.load(dir);
  });
  afterAll(() => model?.dispose());

  test('generate (greedy) reproduces golden.json token for token; stops at eos unless --ignore-eos', () => {
    for (const g of goldens()) {
      const n = g.greedy.new_ids.length;
      const full = zotune(['generate', '--model', dir, '--prompt', g.text, '--max-tokens', String(n), '--ignore-eos', '--json']);
      expect(full.status).toBe(0);
      const r = JSON.parse(full.stdout) as GenerateResult;
      expect(r.promptIds).toEqual(g.input_ids);
      expect(r.ids).toEqual(g.greedy.new_ids);
      expect(r.stopReason).toBe('max-tokens');
      expect(r.text).toBe(tok.decode(r.ids, { skipSpecialTokens: true }));
      expect(r.tokensPerSecond).toBeGreaterThan(0);

      const eos = g.greedy.new_ids.indexOf(4094);
      const stopped = JSON.parse(zotune(['generate', '--model', dir, '--prompt', g.text, '--max-tokens', String(n), '--json']).stdout) as GenerateResult;
      expect(stopped.ids).toEqual(eos < 0 ? g.greedy.new_ids : g.greedy.new_ids.slice(0, eos + 1));
      expect(stopped.stopReason).toBe(eos < 0 ? 'max-tokens' : 'eos');
    }
  });

  test('generate streams exactly the decoded continuation to stdout', () => {
    const g = goldens()[0];
    const r = zotune(['generate', '--model', dir, '--prompt', g.text, '--max-tokens', '40', '--ignore-eos']);
    expect([r.status, r.stderr]).toEqual([0, '']);
    const ids = JSON.parse(zotune(['generate', '--model', dir, '--prompt', g.text, '--max-tokens', '40', '--ignore-eos', '--json']).stdout).ids;
    expect(r.stdout).toBe(tok.decode(ids, { skipSpecialTokens: true }) + '\n');
  });

  test('the incremental decoder holds back split multi-byte characters', () => {
    const text = 'naïve café — 世界 🎉 done';
    const ids = tok.encode(text, { addSpecialTokens: false });
    const d = tok.decoder();
    const pieces = ids.map((id) => d.push(id));
    expect(pieces.join('') + d.flush()).toBe(text);
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    // the byte-level vocabulary splits at least one of these characters over several tokens
    expect(pieces.some((p) => p === '')).toBe(true);
  });

  test('generate --sample is seeded: the same seed gives the library result, another seed differs', async () => {
    const prompt = 'It was a dark and stormy night';
    const args = (seed: number) => ['generate', '--model', dir, '--prompt', prompt, '--max-tokens', '30', '--ignore-eos', '--temperature', '0.9', '--top-k', '40', '--top-p', '0.95', '--seed', String(seed), '--json'];
    const a = JSON.parse(zotune(args(7)).stdout) as GenerateResult;
    const b = JSON.parse(zotune(args(8)).stdout) as GenerateResult;
    const lib: number[] = [];
    for await (const id of model.generate(tok.encode(prompt), { maxNewTokens: 30, sample: true, temperature: 0.9, topK: 40, topP: 0.95, seed: 7, stopTokens: [] })) lib.push(id);
    expect(a.ids).toEqual(lib);
    expect(a.sampling).toEqual({ sample: true, temperature: 0.9, topK: 40, topP: 0.95, seed: 7 });
    expect(b.ids).not.toEqual(a.ids);
    // --sample alone: generation_config / HF defaults (temperature 1, top-k 50, top-p 1, seed 0)
    const plain = JSON.parse(zotune(['generate', '--model', dir, '--prompt', prompt, '--max-tokens', '12', '--ignore-eos', '--sample', '--json']).stdout) as GenerateResult;
    expect(plain.sampling).toEqual({ sample: true, temperature: 1, topK: 50, topP: 1, seed: 0 });
    const libPlain: number[] = [];
    for await (const id of model.generate(tok.encode(prompt), { maxNewTokens: 12, sample: true, stopTokens: [] })) libPlain.push(id);
    expect(plain.ids).toEqual(libPlain);
  });

  test('generate: an empty prompt is just bos; --max-tokens 0 generates nothing', () => {
    const e = JSON.parse(zotune(['generate', '--model', dir, '--prompt', '', '--max-tokens', '3', '--ignore-eos', '--json']).stdout) as GenerateResult;
    expect([e.promptIds, e.ids.length]).toEqual([[4093], 3]);
    const z = zotune(['generate', '--model', dir, '--prompt', 'Call me', '--max-tokens', '0', '--json']);
    expect(z.status).toBe(0);
    expect(JSON.parse(z.stdout)).toMatchObject({ ids: [], text: '', stopReason: 'max-tokens', timeToFirstToken: null });
    expect(zotune(['generate', '--model', dir, '--prompt', 'Call me', '--max-tokens', '0'])).toMatchObject({ status: 0, stdout: '\n', stderr: '' });
  });

  test('generate: a prompt that fills the context is a coded error; --max-tokens beyond it stops at the context', () => {
    const long = zotune(['generate', '--model', dir, '--prompt', 'the '.repeat(600), '--max-tokens', '5']);
    expect(long.status).toBe(1);
    expect(long.stderr).toMatch(/^zotune generate: ZOTUNE_OUT_OF_RANGE: a prompt of \d+ tokens leaves no room below max_position_embeddings 512\n$/);
    const prompt = 'the '.repeat(500);
    const r = JSON.parse(zotune(['generate', '--model', dir, '--prompt', prompt, '--max-tokens', '100', '--ignore-eos', '--json']).stdout) as GenerateResult;
    expect(r.promptIds.length + r.ids.length).toBe(512);
    expect(r.stopReason).toBe('context');
  });

  test('eval perplexity equals exp(total NLL / tokens) from model.forward on the same chunks', async () => {
    const file = path.join(os.tmpdir(), `zotune-eval-${process.pid}.txt`);
    const text = goldens().map((g) => g.text).join('\n').repeat(6);
    fs.writeFileSync(file, text);
    try {
      const window = 48;
      const outs = [1, 5].map((batch) => zotune(['eval', '--model', dir, '--text', file, '--window', String(window), '--batch', String(batch), '--json']));
      for (const o of outs) expect([o.status, o.stderr]).toEqual([0, '']);
      const [one, five] = outs.map((o) => JSON.parse(o.stdout) as EvalResult);
      // independent chunking: consecutive runs of window - 1 file tokens, bos first, one forward each
      const ids = tok.encode(text, { addSpecialTokens: false });
      let nll = 0, count = 0, chunks = 0;
      for (let at = 0; at < ids.length; at += window - 1, chunks++) {
        const r = await model.forward([[4093, ...ids.slice(at, at + window - 1)]]);
        nll += r.loss * r.count;
        count += r.count;
      }
      expect(count).toBe(ids.length);
      expect(ids.length % (window - 1)).not.toBe(0); // a short last chunk is covered
      for (const r of [one, five]) {
        expect(r).toMatchObject({ mode: 'perplexity', tokens: ids.length, chunks, window, weights: 'fp32' });
        expect(Math.abs(r.totalNll - nll) / nll).toBeLessThan(1e-12);
        expect(Math.abs(r.meanLoss - nll / count)).toBeLessThan(1e-12);
        expect(Math.abs(r.perplexity - Math.exp(nll / count)) / r.perplexity).toBeLessThan(1e-12);
      }
      const words = zotune(['eval', '--model', dir, '--text', file, '--window', String(window)]);
      expect(words.stdout).toContain(`perplexity   ${one.perplexity.toFixed(4)}`);
      expect(words.stderr).toBe(''); // progress goes to a TTY only
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  // `script` gives the CLI a terminal for stderr; the progress line is then drawn and cleared
  (fs.existsSync('/usr/bin/script') ? test : test.skip)('eval draws its progress on a TTY only, and clears it', () => {
    const file = path.join(os.tmpdir(), `zotune-tty-${process.pid}.txt`);
    fs.writeFileSync(file, goldens().map((g) => g.text).join('\n').repeat(4));
    try {
      const cmd = [process.execPath, cli, 'eval', '--model', dir, '--text', file, '--window', '32', '--batch', '2'].map((a) => `'${a}'`).join(' ');
      const r = run('/usr/bin/script', ['-qec', cmd, '/dev/null']);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/\reval: 2\/\d+ chunks\reval: 4\/\d+ chunks/);
      expect(r.stdout).toMatch(/\r\x1b\[Kmodel {8}/);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  test('eval: a missing file, an empty file and a window beyond the context are coded errors', () => {
    const empty = path.join(os.tmpdir(), `zotune-empty-${process.pid}.txt`);
    fs.writeFileSync(empty, '');
    try {
      const cases: [string[], RegExp][] = [
        [['--text', '/nonexistent/x.txt'], /ZOTUNE_IO: \/nonexistent\/x.txt: no such file/],
        [['--text', empty], /ZOTUNE_INVALID_ARGUMENT: there are no tokens to score/],
        [['--text', empty, '--window', '513'], /ZOTUNE_OUT_OF_RANGE: window must be an integer in \[2, max_position_embeddings 512\], got 513/],
      ];
      for (const [args, why] of cases) {
        const r = zotune(['eval', '--model', dir, ...args]);
        expect(r.status).toBe(1);
        expect(r.stderr).toMatch(why);
      }
    } finally {
      fs.rmSync(empty, { force: true });
    }
  });

  test('logits --json: all last-position logits and the mean next-token loss of model.forward', async () => {
    const ids = goldens()[1].input_ids;
    const r = zotune(['logits', '--model', dir, '--ids', ids.join(','), '--top', '3', '--json']);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as LogitsResult;
    const ref = await model.forward([ids]);
    expect(out.logits).toEqual(Array.from(ref.logits[0]));
    expect(out.loss).toBe(ref.loss);
    expect(out.count).toBe(ids.length - 1);
    const order = Array.from(ref.logits[0].keys()).sort((a, b) => ref.logits[0][b] - ref.logits[0][a]);
    expect(out.top.map((t) => t.id)).toEqual(order.slice(0, 3));
    expect(out.top[0].text).toBe(tok.decode([order[0]]));
    const p = out.top.reduce((a, t) => a + Math.exp(t.logprob), 0);
    expect(p).toBeGreaterThan(0);
    expect(p).toBeLessThanOrEqual(1 + 1e-9);
    const words = zotune(['logits', '--model', dir, '--ids', ids.join(',')]);
    expect(words.stdout).toContain(`mean loss  ${ref.loss.toFixed(6)} over ${ids.length - 1} next-token targets`);
    expect(words.stdout.match(/^ {2}\d+ +\d+ /gm)).toHaveLength(10);
    const single = JSON.parse(zotune(['logits', '--model', dir, '--ids', '4093', '--json']).stdout) as LogitsResult;
    expect([single.loss, single.count, single.logits.length]).toEqual([null, 0, 4096]);
  });

  test('logits: token ids out of range and sequences beyond the context are coded errors', () => {
    const big = zotune(['logits', '--model', dir, '--ids', '4093,4096']);
    expect(big.status).toBe(1);
    expect(big.stderr).toBe('zotune logits: ZOTUNE_OUT_OF_RANGE: sequence 0: token id 4096 at 1 is outside [0, 4096)\n');
    const long = zotune(['logits', '--model', dir, '--ids', new Array(513).fill(7).join(',')]);
    expect(long.status).toBe(1);
    expect(long.stderr).toBe('zotune logits: ZOTUNE_OUT_OF_RANGE: sequence 0 has 513 tokens, more than max_position_embeddings 512\n');
  });

  test('inspect: config, parameter counts per kind and bytes per scheme from the headers', async () => {
    const r = zotune(['inspect', '--model', dir, '--json']);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as InspectResult;
    expect(out.config).toEqual(model.config);
    expect(out.problems).toEqual([]);
    // micro-llama/README.md: 615,232 parameters, embed_tokens and lm_head 262,144 each
    expect(out.parameters.total).toBe(615_232);
    const D = 64, I = 172, L = 2, Q = 64, KV = 32, V = 4096;
    expect(out.parameters.byKind).toEqual({ embedding: V * D, lm_head: V * D, attention: L * (2 * Q * D + 2 * KV * D), mlp: L * 3 * I * D, norm: (2 * L + 1) * D });
    expect(out.checkpoint).toMatchObject({ tensors: 21, dtypes: { F32: 21 } });
    // by hand: linear [rows, cols] list; f32 rest = embeddings + norms
    const linears: [number, number][] = [[V, D]];
    for (let l = 0; l < L; l++) linears.push([Q, D], [KV, D], [KV, D], [D, Q], [I, D], [I, D], [D, I]);
    const rest = 4 * (V * D + (2 * L + 1) * D);
    const sum = (f: (r: number, c: number) => number) => rest + linears.reduce((a, [rr, c]) => a + f(rr, c), 0);
    const expected: Record<string, number> = {
      fp32: sum((rr, c) => 4 * rr * c),
      bf16: sum((rr, c) => 2 * rr * c),
      int8: sum((rr, c) => rr * c + 4 * rr),
      'int4-g32': sum((rr, c) => rr * Math.ceil(c / 2) + 4 * rr * Math.ceil(c / 32)),
      'int4-g64': sum((rr, c) => rr * Math.ceil(c / 2) + 4 * rr * Math.ceil(c / 64)),
      'int4-g128': sum((rr, c) => rr * Math.ceil(c / 2) + 4 * rr * Math.ceil(c / 128)),
      'fp8-e4m3': sum((rr, c) => rr * c + 4 * rr),
      'fp8-e5m2': sum((rr, c) => rr * c + 4 * rr),
      w8a8: sum((rr, c) => rr * c + 4 * rr),
      w4a8: sum((rr, c) => rr * Math.ceil(c / 2) + 4 * rr * Math.ceil(c / 128)),
    };
    expect(Object.fromEntries(out.schemes.map((s) => [s.scheme, s.bytes]))).toEqual(expected);
    expect(out.schemes[0].bytes).toBe(fs.statSync(path.join(dir, 'model.safetensors')).size - 8 - Number(fs.readFileSync(path.join(dir, 'model.safetensors')).readBigUInt64LE(0)));
    const words = zotune(['inspect', '--model', dir]);
    expect(words.stdout).toContain('parameters     615,232');
    const int8 = out.schemes.find((x) => x.scheme === 'int8')!;
    expect(int8.bitsPerParameter).toBeCloseTo((8 * expected.int8) / 615_232, 12);
    expect(words.stdout).toMatch(new RegExp(`\\n {2}int8 +1\\.36 MiB +${int8.bitsPerParameter.toFixed(2)} `));
 
    // and each is what LlamaModel.load actually holds under that scheme
    for (const s of out.schemes) {
      const m = await LlamaModel.load(dir, { weights: s.scheme });
      try {
        expect([s.scheme, s.bytes]).toEqual([s.scheme, m.weightBytes]);
      } finally {
        m.dispose();
      }
    }
  });

  test('inspect reads headers only: data it never reads may be garbage; missing and extra tensors are listed (exit 1)', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-inspect-'));
    try {
      for (const f of ['config.json', 'generation_config.json']) fs.copyFileSync(path.join(dir, f), path.join(tmp, f));
      const st = fs.readFileSync(path.join(dir, 'model.safetensors'));
      const n = 8 + Number(st.readBigUInt64LE(0));
      st.fill(0xff, n); // every weight NaN: a loader would still accept it, inspect never looks
      fs.writeFileSync(path.join(tmp, 'model.safetensors'), st);
      expect(zotune(['inspect', '--model', tmp]).status).toBe(0);
      const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
      fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 3, tie_word_embeddings: true }));
      const r = zotune(['inspect', '--model', tmp, '--json']);
      expect(r.status).toBe(1);
      const out = JSON.parse(r.stdout) as InspectResult;
      expect(out.problems).toContain("missing tensor 'model.layers.2.self_attn.q_proj.weight'");
      expect(out.unused).toEqual(['lm_head.weight']); // ignored by loading: not a problem
      expect(out.problems.every((p) => p.startsWith('missing tensor'))).toBe(true);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('--weights: eval, logits and generate run the quantized model LlamaModel.load builds', async () => {
    const file = path.join(os.tmpdir(), `zotune-evalq-${process.pid}.txt`);
    fs.writeFileSync(file, goldens().map((g) => g.text).join('\n').repeat(3));
    try {
      const ids = tok.encode(fs.readFileSync(file, 'utf8'), { addSpecialTokens: false });
      const fp32 = JSON.parse(zotune(['eval', '--model', dir, '--text', file, '--window', '64', '--json']).stdout) as EvalResult;
      for (const weights of ['int8', 'int4-g32', 'w8a8', 'fp8-e4m3']) {
        const r = zotune(['eval', '--model', dir, '--text', file, '--window', '64', '--weights', weights, '--json']);
        expect([weights, r.status, r.stderr]).toEqual([weights, 0, '']);
        const q = JSON.parse(r.stdout) as EvalResult;
        expect(q.weights).toBe(weights);
        const m = await LlamaModel.load(dir, { weights: weights as 'int8' });
        try {
          const ref = await perplexity(m, ids, { window: 64 });
          expect(Math.abs(q.perplexity - ref.perplexity) / ref.perplexity).toBeLessThan(1e-12);
          const l = JSON.parse(zotune(['logits', '--model', dir, '--ids', '4093,50,60,70', '--weights', weights, '--json']).stdout) as LogitsResult;
          expect(l.logits).toEqual(Array.from((await m.forward([[4093, 50, 60, 70]])).logits[0]));
        } finally {
          m.dispose();
        }
        // quantization changes the numbers, but not by much on this text
        expect(q.perplexity).not.toBe(fp32.perplexity);
        expect(Math.abs(q.meanLoss - fp32.meanLoss)).toBeLessThan(0.2);
      }
      const g = JSON.parse(zotune(['generate', '--model', dir, '--prompt', 'Call me', '--max-tokens', '8', '--weights', 'w4a8', '--ignore-eos', '--json']).stdout) as GenerateResult;
      expect([g.weights, g.ids.length]).toEqual(['w4a8', 8]);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  test('--weights is passed to LlamaModel.load unchanged: an unknown scheme is its coded error', () => {
    const r = zotune(['logits', '--model', dir, '--ids', '1,2', '--weights', 'int3']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^zotune logits: ZOTUNE_UNSUPPORTED: weight scheme 'int3' is not supported/);
  });
});
