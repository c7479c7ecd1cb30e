import fs from 'node:fs';
import path from 'node:path';

/** Shared test checkpoints: $ZOTUNE_MODELS, else ../shared/models beside the repository. */
export function modelsDir(): string | undefined {
  const dir = process.env.ZOTUNE_MODELS ?? path.resolve(__dirname, '..', '..', '..', 'shared', 'models');
  return fs.existsSync(path.join(dir, 'micro-llama', 'config.json')) ? dir : undefined;
}

export function modelDir(name: 'micro-llama' | 'tiny-llama'): string | undefined {
  const d = modelsDir();
  if (!d) console.warn(`skipping tests that need ${name}: set ZOTUNE_MODELS to the shared models folder`);
  return d && path.join(d, name);
}
