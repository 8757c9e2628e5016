// npm run bench -- NAME: runs bench/NAME.ts, which prints a table and writes bench/results/NAME.json.

import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const available = (await readdir(import.meta.dirname))
  .filter((f) => f.endsWith('.ts') && !['run.ts', 'lib.ts'].includes(f))
  .map((f) => f.slice(0, -3))
  .sort();
const name = process.argv[2];
if (name === undefined || !available.includes(name)) {
  console.error(`usage: npm run bench -- NAME, NAME one of: ${available.join(', ')}`);
  process.exit(2);
}
await import(pathToFileURL(join(import.meta.dirname, `${name}.ts`)).href);
