/**
 * What a CLI command is, and the option parsing every command shares. A command is one module
 * under lib/cli/ exporting a Command, listed once in main.ts; --help and --json come for free.
 */
import { parseArgs } from 'node:util';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** Shown in --help, e.g. '<auto|cpu|cuda>'. */
  value?: string;
  description: string;
  /** Missing → usage error (exit status 2), unless --help is given. */
  required?: boolean;
}

export type OptionValues = Record<string, string | boolean | undefined>;

export interface Command<R = unknown> {
  name: string;
  /** One line, shown in `zotune --help`. */
  summary: string;
  /** Positional arguments for the usage line, e.g. '<model>'; none when absent. */
  args?: string;
  options?: Record<string, OptionSpec>;
  run(values: OptionValues, positionals: string[]): R | Promise<R>;
  /** Human-readable form of the result; --json prints the result itself. */
  render(result: R): string;
  /** Exit status for a result (default 0). */
  exitCode?(result: R): number;
}

/** A mistake in the command line: message on stderr, exit status 2. */
export class UsageError extends Error {}

const COMMON: Record<string, OptionSpec> = {
  json: { type: 'boolean', description: 'Print the result as JSON' },
  help: { type: 'boolean', short: 'h', description: 'Show this help' },
};

export function parseCommandArgs(cmd: Command, argv: string[]): { values: OptionValues; positionals: string[] } {
  const specs = { ...cmd.options, ...COMMON };
  const options = Object.fromEntries(Object.entries(specs).map(([k, s]) => [k, s.short ? { type: s.type, short: s.short } : { type: s.type }]));
  try {
    const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: !!cmd.args });
    if (!values.help) {
      const missing = Object.entries(specs).filter(([k, s]) => s.required && values[k] === undefined).map(([k]) => `--${k}`);
      if (missing.length) throw new UsageError(`missing required option${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
    }
    return { values: values as OptionValues, positionals };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    const e = err as { code?: string; message: string };
    const token = /'([^']*)'/.exec(e.message)?.[1] ?? '';
    switch (e.code) {
      case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
        throw new UsageError(`unknown option '${token}'`);
      case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
        const opt = token.split(' ')[0] || token;
        if (/argument is ambiguous/.test(e.message)) throw new UsageError(`option ${opt} needs a value (write ${opt}=-... for a value starting with '-')`);
        throw new UsageError(`option ${opt} ${/argument missing/.test(e.message) ? 'needs a value' : 'takes no value'}`);
      }
      case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
        throw new UsageError(`unexpected argument '${token}'`);
      default:
        throw new UsageError(e.message);
    }
  }
}

export function commandHelp(cmd: Command): string {
  const specs = { ...cmd.options, ...COMMON };
  const rows = Object.entries(specs).map(([k, s]) => [`${s.short ? `-${s.short}, ` : '    '}--${k}${s.value ? ` ${s.value}` : ''}`, `${s.required ? '(required) ' : ''}${s.description}`]);
  const width = Math.max(...rows.map((r) => r[0].length)) + 2;
  return [
    `Usage: zotune ${cmd.name}${cmd.args ? ` ${cmd.args}` : ''} [options]`,
    '',
    cmd.summary,
    '',
    'Options:',
    ...rows.map(([a, b]) => `  ${a.padEnd(width)}${b}`),
  ].join('\n');
}

/** One-of check for string options. */
export function choice<T extends string>(name: string, value: string | boolean | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !allowed.includes(value as T))
    throw new UsageError(`--${name} must be one of ${allowed.join(', ')} (got '${String(value)}')`);
  return value as T;
}

/** An integer option in [min, max]; undefined when absent. */
export function intOption(name: string, value: string | boolean | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'string' && /^[+-]?\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`--${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`} (got '${String(value)}')`);
  return n;
}

/** intOption of values[name], `dflt` when absent. */
export function intOr<D extends number | undefined>(values: OptionValues, name: string, dflt: D, min: number): number | D {
  return intOption(name, values[name], min) ?? dflt;
}

/** numberOption of values[name], `dflt` when absent. */
export function numberOr<D extends number | undefined>(values: OptionValues, name: string, dflt: D, ok: (x: number) => boolean, what: string): number | D {
  return numberOption(name, values[name], ok, what) ?? dflt;
}

/** A finite number option accepted by `ok` (described by `what`); undefined when absent. */
export function numberOption(name: string, value: string | boolean | undefined, ok: (x: number) => boolean, what: string): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  if (!Number.isFinite(n) || !ok(n)) throw new UsageError(`--${name} must be ${what} (got '${String(value)}')`);
  return n;
}

/** A comma-separated list of non-negative integers, e.g. --ids 1,2,3. */
export function idListOption(name: string, value: string | boolean | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = typeof value === 'string' ? value.split(',').map((x) => x.trim()) : [];
  if (parts.length === 0 || parts.some((x) => !/^\d+$/.test(x) || !Number.isSafeInteger(Number(x))))
    throw new UsageError(`--${name} must be a comma-separated list of token ids such as 1,2,3 (got '${String(value)}')`);
  return parts.map(Number);
}
