// Shared by the benchmarks: figures, a printed table and bench/results/NAME.json.

import { writeFile, mkdir } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

export interface Figure {
  metric: string;
  value: number;
  unit: string;
  peer: string | null;
  peer_value: number | null;
  ratio: number | null;
  target: string | null;
  met: boolean | null;
}

export function figure(metric: string, value: number, unit: string, target?: { text: string; met: boolean }, peer?: { name: string; value: number }): Figure {
  return {
    metric,
    value: round(value),
    unit,
    peer: peer?.name ?? null,
    peer_value: peer ? round(peer.value) : null,
    ratio: peer && peer.value !== 0 ? round(value / peer.value) : null,
    target: target?.text ?? null,
    met: target?.met ?? null,
  };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)] ?? Number.NaN;
}

export function machine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  return `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${process.platform}`;
}

/** Prints the table and writes bench/results/NAME.json; `notes` say what the figures mean (peer, setup, differences). */
export async function report(name: string, figures: Figure[], notes: string[] = []): Promise<void> {
  const rows = figures.map((f) => [
    f.metric,
    `${f.value} ${f.unit}`,
    f.peer === null ? '' : `${f.peer}: ${f.peer_value ?? ''} ${f.unit}`,
    f.ratio === null ? '' : `${f.ratio}×`,
    f.target ?? '',
    f.met === null ? '' : f.met ? 'met' : 'MISSED',
  ]);
  const header = ['metric', 'value', 'peer', 'ratio', 'target', ''];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  console.log(`\n${name}`);
  console.log(line(header));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of rows) console.log(line(row));
  for (const note of notes) console.log(`- ${note}`);
  const dir = join(import.meta.dirname, 'results');
  await mkdir(dir, { recursive: true });
  const out = { name, date: new Date().toISOString(), machine: machine(), figures, ...(notes.length > 0 ? { notes } : {}) };
  await writeFile(join(dir, `${name}.json`), `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nwrote bench/results/${name}.json`);
}
