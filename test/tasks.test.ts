/** Tasks and data: loaders, seeded splits, prompt tasks (loss + evaluation) */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LlamaModel } from '../lib/model/llama';
import { LlamaTokenizer } from '../lib/model/tokenizer';
import { kShot, parseCsv, parseJsonl, permutation, split, loadExamples } from '../lib/tasks/data';
import { dataPackageDir } from '../lib/io/files';
import { PromptTask, candidateCrossEntropy, normalizeAnswer, tokenF1 } from '../lib/tasks/task';
import { loadTask, sentimentExamples, SENTIMENT_SPLIT } from '../lib/tasks/builtin';
import { modelDir } from './helpers/models';

const code = (c: string) => expect.objectContaining({ code: c });

describe('data', () => {
  test('permutations are seeded, complete and independent of anything else', () => {
    const p = permutation(1000, 7);
    expect([...p].sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(permutation(1000, 7)).toEqual(p);
    expect(permutation(1000, 8)).not.toEqual(p);
    expect(permutation(0, 1)).toEqual([]);
  });

  test('splits are disjoint, sized and seeded; k-shot takes k per label', () => {
    const items = Array.from({ length: 100 }, (_, i) => ({ id: i, label: i % 3 }));
    const s = split(items, { train: 50, dev: 20, test: 30 }, 1);
    const ids = [...s.train, ...s.dev, ...s.test].map((e) => e.id);
    expect(new Set(ids).size).toBe(100);
    expect([s.train.length, s.dev.length, s.test.length]).toEqual([50, 20, 30]);
    expect(split(items, { train: 50, dev: 20, test: 30 }, 1)).toEqual(s);
    expect(split(items, { train: 50, dev: 20, test: 30 }, 2).train).not.toEqual(s.train);
    expect(() => split(items, { train: 90, dev: 20, test: 0 }, 1)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
    const k = kShot(items, 4, 5);
    expect(k).toHaveLength(12);
    for (const l of [0, 1, 2]) expect(k.filter((e) => e.label === l)).toHaveLength(4);
    expect(() => kShot(items, 40, 5)).toThrow(code('ZOTUNE_OUT_OF_RANGE'));
  });

  test('JSONL and CSV (quotes, commas, newlines, CRLF) parse; bad files are ZOTUNE_BAD_FILE', () => {
    expect(parseJsonl('{"a":1}\n\n{"a":"x"}\n')).toEqual([{ a: 1 }, { a: 'x' }]);
    expect(() => parseJsonl('{"a":1}\nnope\n')).toThrow(code('ZOTUNE_BAD_FILE'));
    expect(() => parseJsonl('[1]\n')).toThrow(code('ZOTUNE_BAD_FILE'));
    expect(parseCsv('text,label\r\n"Hi, ""you""",1\r\n"two\nlines",0\r\n')).toEqual([{ text: 'Hi, "you"', label: '1' }, { text: 'two\nlines', label: '0' }]);
    expect(parseCsv('id,text,label\n007,0123,1\n')).toEqual([{ id: '007', text: '0123', label: '1' }]); // fields stay text
    expect(() => parseCsv('a,b\n1\n')).toThrow(code('ZOTUNE_BAD_FILE'));
    expect(() => parseCsv('a\n"open\n')).toThrow(code('ZOTUNE_BAD_FILE'));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-data-'));
    fs.writeFileSync(path.join(dir, 'x.csv'), '\uFEFFtext,label\nok,1\n'); // Excel writes a byte-order mark
    expect(loadExamples(path.join(dir, 'x.csv'))).toEqual([{ text: 'ok', label: '1' }]);
    fs.writeFileSync(path.join(dir, 'x.jsonl'), '\uFEFF{"text":"ok","label":1}\n');
    expect(loadExamples(path.join(dir, 'x.jsonl'))).toEqual([{ text: 'ok', label: 1 }]);
    expect(() => loadExamples(path.join(dir, 'x.txt'))).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => loadExamples(path.join(dir, 'missing.csv'))).toThrow(code('ZOTUNE_IO'));
    fs.rmSync(dir, { recursive: true });
  });

  test('data packages are found beside zotune or in the project a global / npx zotune runs in', () => {
    expect(dataPackageDir('sentiment')).toBe(path.dirname(require.resolve('sentiment/package.json')));
    expect(dataPackageDir('zotune-no-such-package')).toBeUndefined();
    const project = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-project-'));
    const cwd = process.cwd();
    try {
      fs.mkdirSync(path.join(project, 'node_modules', 'only-here'), { recursive: true });
      fs.writeFileSync(path.join(project, 'node_modules', 'only-here', 'package.json'), '{"name": "only-here", "version": "1.0.0"}');
      process.chdir(project);
      expect(dataPackageDir('only-here')).toBe(fs.realpathSync(path.join(project, 'node_modules', 'only-here')));
    } finally {
      process.chdir(cwd);
      fs.rmSync(project, { recursive: true, force: true });
    }
  });

  test('the builtin sentiment data: 3000 balanced sentences from sentiment@5.0.2, fixed 1000/500/1000 splits', () => {
    const all = sentimentExamples();
    expect(all).toHaveLength(3000);
    expect(all.filter((e) => e.label === 1)).toHaveLength(1500);
    expect(all.every((e) => typeof e.text === 'string' && (e.text as string).length > 0)).toBe(true);
    const s = split(all, SENTIMENT_SPLIT, SENTIMENT_SPLIT.seed);
    expect([s.train.length, s.dev.length, s.test.length]).toEqual([1000, 500, 1000]);
  });
});

describe('metrics', () => {
  test('candidate cross-entropy, SQuAD normalisation and token F1', () => {
    expect(candidateCrossEntropy([0, 0], 1)).toBeCloseTo(Math.log(2), 12);
    expect(candidateCrossEntropy([1000, 0], 0)).toBeCloseTo(0, 12); // no overflow
    expect(candidateCrossEntropy([1, 3, 2], 0)).toBeCloseTo(Math.log(Math.exp(1) + Math.exp(3) + Math.exp(2)) - 1, 12);
    expect(normalizeAnswer('The  Cat, sat!')).toBe('cat sat');
    expect(tokenF1('the cat sat', 'a cat sat down')).toBeCloseTo((2 * 1 * (2 / 3)) / (1 + 2 / 3), 12);
    expect(tokenF1('dog', 'cat')).toBe(0);
    expect(tokenF1('', '')).toBe(1);
  });
});

const micro = modelDir('micro-llama');
(micro ? describe : describe.skip)('prompt tasks on micro-llama', () => {
  let model: LlamaModel, tok: LlamaTokenizer;
  beforeAll(async () => {
    model = await LlamaModel.load(micro!);
    tok = LlamaTokenizer.load(micro!);
  });
  afterAll(() => model.dispose());
  const examples = [
    { text: 'A fine day.', label: 1 },
    { text: 'Nothing worked at all, sadly', label: 0 },
    { text: 'Yes', label: 1 },
  ];

  test('single-token label words: one forward per example, scores = last-position logits; matches the multi-token path', async () => {
    const single = new PromptTask({ kind: 'classification', template: '{text} It was', labelWords: [' bad', ' great'] }, tok);
    expect(single.labelTokens).toHaveLength(2);
    const lb = single.lossBatch(examples);
    expect(lb.sequences).toHaveLength(3);
    expect(Array.from(lb.forward.logitTokens!)).toEqual(single.labelTokens); // only the label words' LM-head rows
    const r = await model.forward(lb.sequences, lb.forward);
    const full = await model.forward(lb.sequences, { ...lb.forward, logitTokens: undefined });
    const expected = examples.map((ex, i) => {
      const row = full.logits[i], lt = single.labelTokens!;
      // CE over the two label logits == CE over the two label log-probs (softmax normaliser cancels)
      return candidateCrossEntropy([row[lt[0]], row[lt[1]]], ex.label);
    });
    expect(lb.loss(r)).toBeCloseTo(expected.reduce((a, b) => a + b) / 3, 10);
    // The same candidates scored as sequences (a one-token candidate's mean log-likelihood).
    const multiSpec = new PromptTask({ kind: 'multiple-choice', template: '{text} It was' }, tok);
    const mcExamples = examples.map((ex) => ({ ...ex, choices: [' bad', ' great'] }));
    const mb = multiSpec.lossBatch(mcExamples);
    expect(mb.sequences).toHaveLength(6);
    const mr = await model.forward(mb.sequences, mb.forward);
    expect(mb.loss(mr)).toBeCloseTo(lb.loss(r), 4);
    const e1 = await single.evaluate(model, examples, { batchSize: 2 });
    const e2 = await multiSpec.evaluate(model, mcExamples, { batchSize: 3 });
    expect(e1.accuracy).toBe(e2.accuracy);
    expect(e1.loss).toBeCloseTo(e2.loss, 4);
  });

  test('multi-token candidates: mean log-likelihood of the candidate tokens', async () => {
    const t = new PromptTask({ kind: 'classification', template: '{text} It was', labelWords: [' terrible', ' great'] }, tok);
    expect(t.labelTokens).toBeNull();
    const lb = t.lossBatch([examples[0]]);
    const r = await model.forward(lb.sequences, lb.forward);
    const p = t.prompt(examples[0]), cand = tok.encode(' terrible', { addSpecialTokens: false });
    const whole = await model.forward([[...p, ...cand]], { targets: 'next' });
    let s = 0;
    for (let i = p.length - 1; i < p.length - 1 + cand.length; i++) s += whole.logprobs[0][i];
    const great = tok.encode(' great', { addSpecialTokens: false });
    const g = await model.forward([[...p, ...great]], { targets: 'next' });
    const scoreGreat = g.logprobs[0][p.length - 1];
    expect(lb.loss(r)).toBeCloseTo(candidateCrossEntropy([s / cand.length, scoreGreat], 1), 6);
  });

  test('generation: loss on the target span only; greedy EM/F1 evaluation', async () => {
    const t = new PromptTask({ kind: 'generation', template: 'Q: {q}\nA:', maxNewTokens: 4 }, tok);
    const ex = { q: 'who?', answer: ' me' };
    const lb = t.lossBatch([ex]);
    const mask = lb.forward.lossMask![0];
    const p = t.prompt(ex);
    expect(Array.from(mask).reduce((a, b) => a + b, 0)).toBe(lb.sequences[0].length - p.length);
    const r = await model.forward(lb.sequences, lb.forward);
    expect(r.count).toBe(lb.sequences[0].length - p.length);
    const e = await t.evaluate(model, [ex, { q: 'what?', answer: ['x', 'y'] }]);
    expect(e.n).toBe(2);
    expect(e.f1).toBeGreaterThanOrEqual(e.accuracy);
  });

  test('bad task specs and examples are ZotuneErrors', () => {
    expect(() => new PromptTask({ kind: 'classification', template: '{text}', labelWords: [' a'] }, tok)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => new PromptTask({ kind: 'nope' } as never, tok)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    const t = new PromptTask({ kind: 'classification', template: '{text} It was', labelWords: [' bad', ' great'] }, tok);
    expect(() => t.lossBatch([{ other: 1, label: 0 }])).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => t.lossBatch([{ text: 'x', label: 2 }])).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
    expect(() => loadTask('no-such-task', tok)).toThrow(code('ZOTUNE_INVALID_ARGUMENT'));
  });

  test('long prompts keep bos and the template tail', () => {
    const t = new PromptTask({ kind: 'classification', template: '{text} It was', labelWords: [' bad', ' great'], maxPromptTokens: 8 }, tok);
    const ids = t.prompt({ text: 'word '.repeat(50), label: 0 });
    expect(ids).toHaveLength(8);
    if (tok.bosTokenId !== undefined) expect(ids[0]).toBe(tok.bosTokenId);
    const tail = tok.encode(' It was', { addSpecialTokens: false });
    expect(ids.slice(-tail.length)).toEqual(tail);
  });

  test('a task spec file with data files', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zotune-task-'));
    fs.writeFileSync(path.join(dir, 'all.jsonl'), Array.from({ length: 10 }, (_, i) => JSON.stringify({ s: `s${i}`, y: i % 2 })).join('\n'));
    fs.writeFileSync(path.join(dir, 'task.json'), JSON.stringify({ kind: 'classification', template: '{s} It was', labelWords: [' bad', ' great'], labelField: 'y', data: 'all.jsonl', split: { train: 6, dev: 2, test: 2 } }));
    const lt = loadTask(path.join(dir, 'task.json'), tok);
    expect([lt.splits.train.length, lt.splits.dev.length, lt.splits.test.length]).toEqual([6, 2, 2]);
    expect(lt.name).toBe('task');
    fs.rmSync(dir, { recursive: true });
  });
});
