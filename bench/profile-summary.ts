// Reads a V8 .cpuprofile (node --cpu-prof) and prints the functions with the most self time, as a Markdown table:
// what docs/BENCHMARKS.md's "where the time goes" paragraphs are made from. Not a benchmark itself.
// Run: node --cpu-prof --cpu-prof-dir=/tmp/prof dist/bench/oscore.js --sizes=64 --runs=3
//      node dist/bench/profile-summary.js /tmp/prof/<file>.cpuprofile [--top=25]

import fs from 'node:fs';
import path from 'node:path';
import { fmt, numArg, parseArgs, table } from './common';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function main(): void {
  const file = process.argv.slice(2).find((a) => !a.startsWith('--'));
  if (!file) throw new Error('usage: profile-summary <file.cpuprofile> [--top=25]');
  const top = numArg(parseArgs(), 'top', 25);
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Self time per sample: the delta that follows it (V8's convention for the sample's duration).
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]);
    const dt = p.timeDeltas[i + 1] ?? 0;
    if (!n) continue;
    const f = n.callFrame;
    const where = f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  }
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  console.log(`${fmt(total / 1000, 0)} ms sampled in ${path.basename(file)}\n`);
  console.log(table(['function', 'self ms', 'self %'], rows.map(([k, v]) => [k, fmt(v / 1000, 1), `${fmt((100 * v) / total, 1)}%`])));
}

main();
