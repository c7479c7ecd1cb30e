#!/usr/bin/env node
/** The `zotune` command line. To add a command: write lib/cli/<name>.ts exporting a Command, list it below. */
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../native/load';
import { commandHelp, parseCommandArgs, UsageError, type Command } from './command';
import { doctor } from './doctor';
import { evalCommand } from './eval';
import { finetuneCommand } from './finetune';
import { generate } from './generate';
import { inspectCommand } from './inspect';
import { logits } from './logits';
import { pretrainCommand } from './pretrain';
import { replayCommand } from './replay';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const COMMANDS: Command<any>[] = [generate, evalCommand, logits, inspectCommand, finetuneCommand, replayCommand, pretrainCommand, doctor];

function mainHelp(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    'zotune: zeroth-order fine-tuning of quantized LLMs',
    '',
    'Usage: zotune <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}${c.summary.split('. ')[0].replace(/\.$/, '')}`),
    '',
    'Options:',
    '  -h, --help     Show this help (zotune <command> --help for a command)',
    '  -v, --version  Print the version',
    '',
    'Every command takes --json for machine-readable output.',
  ].join('\n');
}

function version(): string {
  return (JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === '-h' || first === '--help' || first === 'help') {
    const cmd = COMMANDS.find((c) => c.name === rest[0]);
    console.log(cmd ? commandHelp(cmd) : mainHelp());
    return 0;
  }
  if (first === '-v' || first === '--version') {
    console.log(version());
    return 0;
  }
  if (first === undefined) {
    console.error(mainHelp());
    return 2;
  }
  const cmd = COMMANDS.find((c) => c.name === first);
  if (!cmd) {
    const what = first.startsWith('-') ? `unknown option '${first}'` : `unknown command '${first}'`;
    console.error(`zotune: ${what}. Commands: ${COMMANDS.map((c) => c.name).join(', ')}. Run 'zotune --help' for usage.`);
    return 2;
  }
  // A usage error: exit status 2, the message on stderr and, under --json, as the usual error object on stdout.
  const usage = (err: UsageError, json: boolean) => {
    console.error(`zotune ${cmd.name}: ${err.message}. Run 'zotune ${cmd.name} --help' for usage.`);
    if (json) console.log(JSON.stringify({ error: { code: 'ZOTUNE_INVALID_ARGUMENT', message: err.message, usage: true } }, null, 2));
    return 2;
  };
  let values, positionals;
  try {
    ({ values, positionals } = parseCommandArgs(cmd, rest));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    return usage(err, rest.includes('--json'));
  }
  if (values.help) {
    console.log(commandHelp(cmd));
    return 0;
  }
  try {
    const result = await cmd.run(values, positionals);
    console.log(values.json ? JSON.stringify(result, null, 2) : cmd.render(result));
    return cmd.exitCode?.(result) ?? 0;
  } catch (err) {
    if (err instanceof UsageError) return usage(err, !!values.json);
    const e = err as { code?: string; message?: string };
    if (debug()) console.error(err);
    if (values.json) console.log(JSON.stringify({ error: { code: e.code ?? 'ZOTUNE_INTERNAL', message: e.message ?? String(err) } }, null, 2));
    else console.error(`zotune ${cmd.name}: ${e.code ?? 'ZOTUNE_INTERNAL'}: ${e.message ?? String(err)}`);
    return 1;
  }
}

/** ZOTUNE_DEBUG=1: print the stack of every error (otherwise only `code: message`). */
const debug = () => !!process.env.ZOTUNE_DEBUG && process.env.ZOTUNE_DEBUG !== '0';

// A closed pipe (zotune generate ... | head) ends the command quietly, like other Unix tools.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    const e = err as { code?: string; message?: string };
    console.error(debug() ? err : `zotune: ${e.code ?? 'ZOTUNE_INTERNAL'}: ${e.message ?? String(err)}`);
    process.exitCode = 1;
  },
);
