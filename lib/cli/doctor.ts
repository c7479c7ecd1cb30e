/** `zotune doctor`: which binaries loaded and from where, the CPU kernel path, threads, CUDA, backend. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cudaStatus, selectBackend, type BackendPreference } from '../backend';
import { detectLibc, loadCuda, native, nativeBinary, packageRoot, type BinaryInfo, type CudaCandidate } from '../native/load';
import type { CpuInfo, CudaProbe } from '../native/binding';
import { choice, type Command } from './command';

interface ErrorInfo {
  code: string;
  message: string;
}

export interface DoctorReport {
  zotune: { version: string; root: string };
  node: { version: string; napi: string; platform: string; arch: string; libc: string; glibc?: string };
  cpu: {
    binary?: BinaryInfo;
    error?: ErrorInfo;
    features?: { avx2: boolean; fma: boolean; f16c: boolean; avx512vnni: boolean };
    path?: CpuInfo['path'];
    pathReason?: string;
    threads?: number;
    threadsReason?: string;
  };
  cuda: {
    candidates: CudaCandidate[];
    binary?: BinaryInfo;
    loadError?: string;
    probe?: CudaProbe;
    available: boolean;
    reason: string;
  };
  backend: { preference: BackendPreference; backend?: 'cpu' | 'cuda'; reason?: string; error?: ErrorInfo };
}

const errorInfo = (e: unknown): ErrorInfo => ({ code: (e as { code?: string }).code ?? 'ZOTUNE_INTERNAL', message: e instanceof Error ? e.message : String(e) });

function cpuSection(): DoctorReport['cpu'] {
  try {
    const addon = native();
    const info = addon.cpuInfo();
    const forced = !!process.env.ZOTUNE_FORCE_SCALAR && process.env.ZOTUNE_FORCE_SCALAR !== '0';
    const cpuPath = process.env.ZOTUNE_CPU_PATH;
    const pathReason =
      info.path === 'avx512'
        ? 'the CPU has AVX2, FMA, F16C and AVX-512 VNNI (integer GEMMs on VNNI, the rest on AVX2)'
        : info.path === 'avx2'
          ? info.avx512vnni
            ? cpuPath === 'avx2' ? 'ZOTUNE_CPU_PATH=avx2' : 'selected with setCpuPath()'
            : 'the CPU has AVX2, FMA and F16C (no AVX-512 VNNI)'
          : !(info.avx2 && info.fma && info.f16c)
            ? 'the CPU lacks AVX2, FMA or F16C'
            : forced
              ? `ZOTUNE_FORCE_SCALAR=${process.env.ZOTUNE_FORCE_SCALAR}`
              : cpuPath === 'scalar' ? 'ZOTUNE_CPU_PATH=scalar' : 'selected with setCpuPath()';
    const env = process.env.ZOTUNE_NUM_THREADS;
    return {
      binary: nativeBinary(),
      features: { avx2: info.avx2, fma: info.fma, f16c: info.f16c, avx512vnni: info.avx512vnni },
      path: info.path,
      pathReason,
      threads: info.threads,
      threadsReason: env ? `ZOTUNE_NUM_THREADS=${env}` : `all ${os.availableParallelism()} online cores`,
    };
  } catch (err) {
    return { error: errorInfo(err) };
  }
}

function cudaSection(): DoctorReport['cuda'] {
  const load = loadCuda();
  const s = cudaStatus();
  return { candidates: load.candidates, binary: s.binary, loadError: load.error, probe: s.probe, available: s.available, reason: s.reason };
}

function backendSection(pref: BackendPreference): DoctorReport['backend'] {
  try {
    return { preference: pref, ...selectBackend(pref) };
  } catch (err) {
    return { preference: pref, error: errorInfo(err) };
  }
}

function report(pref: BackendPreference): DoctorReport {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return {
    zotune: { version: pkg.version, root: packageRoot },
    node: {
      version: process.version,
      napi: process.versions.napi ?? '?',
      platform: process.platform,
      arch: process.arch,
      libc: detectLibc(),
      ...(header?.glibcVersionRuntime ? { glibc: header.glibcVersionRuntime } : {}),
    },
    cpu: cpuSection(),
    cuda: cudaSection(),
    backend: backendSection(pref),
  };
}

const cudaVersion = (v: number) => (v ? `${Math.floor(v / 1000)}.${(v % 1000) / 10}` : 'none found');
const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;

function render(r: DoctorReport): string {
  const lines: [string, string][] = [];
  const row = (k: string, v: string) => lines.push([k, v]);
  row('zotune', `${r.zotune.version}  ${r.zotune.root}`);
  row('node', `${r.node.version} (N-API ${r.node.napi}), ${r.node.platform}-${r.node.arch}, ${r.node.libc}${r.node.glibc ? ` ${r.node.glibc}` : ''}`);
  if (r.cpu.error) {
    row('CPU addon', `FAILED ${r.cpu.error.code}: ${r.cpu.error.message}`);
  } else {
    row('CPU addon', r.cpu.binary!.path);
    row('', r.cpu.binary!.origin);
    const f = r.cpu.features!;
    row('CPU features', (Object.keys(f) as (keyof typeof f)[]).map((k) => (f[k] ? k : `no-${k}`)).join(' '));
    row('kernel path', `${r.cpu.path} (${r.cpu.pathReason})`);
    row('threads', `${r.cpu.threads} (${r.cpu.threadsReason})`);
  }
  const c = r.cuda;
  if (c.binary) {
    row('CUDA addon', c.binary.path);
    row('', c.binary.origin);
  } else {
    row('CUDA addon', `not loaded: ${c.loadError}`);
    for (const x of c.candidates) row('', `${x.exists ? 'found  ' : 'missing'} ${x.path}`);
  }
  if (c.probe) {
    const p = c.probe;
    row('CUDA', `runtime ${cudaVersion(p.runtimeVersion)}, driver ${cudaVersion(p.driverVersion)}; kernels built for ${p.archs}`);
    if (p.devices.length === 0) row('CUDA devices', `none: ${p.error ? `${p.error.name} (${p.error.code}): ${p.error.reason}` : 'none found'}`);
    for (const d of p.devices)
      row(d.index === 0 ? 'CUDA devices' : '', `#${d.index} ${d.name}, compute capability ${d.computeCapability}, ${gib(d.totalMemory)}, ${d.multiprocessors} SMs: ${d.usable ? 'usable' : `unusable: ${d.error?.name} (${d.error?.code}): ${d.error?.reason}`}`);
  }
  const b = r.backend;
  row('backend', b.error ? `${b.preference}: FAILED ${b.error.code}: ${b.error.message}` : `${b.backend} (${b.reason})`);
  const w = Math.max(...lines.map(([k]) => k.length)) + 2;
  return lines.map(([k, v]) => `${k.padEnd(w)}${v}`).join('\n');
}

export const doctor: Command<DoctorReport> = {
  name: 'doctor',
  summary: 'Report the native engine: which binaries loaded and from where, CPU features and kernel path, threads, the CUDA addon and GPU probe, and the backend chosen.',
  options: {
    backend: { type: 'string', value: '<auto|cpu|cuda>', description: 'Backend to check (default: ZOTUNE_BACKEND or auto); exit status 1 if unavailable' },
  },
  run(values) {
    const pref = choice('backend', values.backend, ['auto', 'cpu', 'cuda'] as const) ?? (process.env.ZOTUNE_BACKEND as BackendPreference | undefined) ?? 'auto';
    return report(pref);
  },
  render,
  exitCode: (r) => (r.cpu.error || r.backend.error ? 1 : 0),
};
