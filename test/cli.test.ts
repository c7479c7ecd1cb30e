/** The `zotune` command line, spawned as users run it (the compiled dist/cli/main.js). */
import fs from 'node:fs';
import path from 'node:path';
import { cpuInfo, cudaStatus, selectBackend } from '../lib';
import { nativeBinary } from '../lib/native/load';
import type { DoctorReport } from '../lib/cli/doctor';
import { root, run, cleanEnv } from './helpers/spawn';

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
  expect(help.stdout).toMatch(/\n {2}doctor {2}/);
  expect(zotune(['help', 'doctor']).stdout).toContain('Usage: zotune doctor [options]');
  for (const flag of ['--version', '-v']) expect(zotune([flag])).toMatchObject({ status: 0, stdout: `${version}\n` });
});

test('usage mistakes: a clear message on stderr and exit status 2', () => {
  const cases: [string[], string][] = [
    [[], 'Usage: zotune <command>'],
    [['frobnicate'], "zotune: unknown command 'frobnicate'. Commands: doctor"],
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
  expect(d.cpu.features).toEqual({ avx2: info.avx2, fma: info.fma, f16c: info.f16c });
  expect(d.cpu.path).toBe(info.avx2 && info.fma && info.f16c ? 'avx2' : 'scalar');
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
