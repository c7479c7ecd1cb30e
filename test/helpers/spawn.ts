/** Running node in a child process: for loader, CLI and crash-isolation tests. */
import { spawnSync, SpawnSyncReturns } from 'node:child_process';
import path from 'node:path';

export const root = path.resolve(__dirname, '..', '..');

export interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function done(r: SpawnSyncReturns<string>): Run {
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Environment without the settings that change the engine, plus `env`. */
export function cleanEnv(env: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(ZOTUNE_|LIBC$|PREBUILDS_ONLY$)/.test(k)) out[k] = v;
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** Runs a CommonJS script with `node -e` in `cwd`. */
export function runNode(code: string, opts: { cwd?: string; env?: Record<string, string | undefined>; timeout?: number } = {}): Run {
  return done(spawnSync(process.execPath, ['-e', code], { cwd: opts.cwd ?? root, env: cleanEnv(opts.env), encoding: 'utf8', timeout: opts.timeout ?? 60_000 }));
}

/** Runs a program with arguments. */
export function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Run {
  return done(spawnSync(cmd, args, { cwd: opts.cwd ?? root, env: opts.env ?? cleanEnv(), encoding: 'utf8', timeout: opts.timeout ?? 120_000 }));
}
