// Runs every benchmark in sequence, each in a fresh Node process with --expose-gc (so one benchmark's sockets,
// heap and JIT state cannot colour the next), and lets each print its tables. Arguments are passed through
// (e.g. --quick for a short smoke run). Run: npm run bench

import { fork } from 'node:child_process';
import path from 'node:path';

const BENCHMARKS = ['fan-in.js', 'unicast-throughput.js', 'endpoint-cpu.js', 'proxy.js', 'proxy-abuse.js', 'observe.js', 'oscore.js', 'group-oscore.js', 'oscore-proxy.js', 'group-oscore-proxy.js', 'group-oscore-deterministic.js', 'http-proxy.js', 'cbor-encoders.js'];

function runOne(file: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = fork(path.join(__dirname, file), args, { execArgv: ['--expose-gc'], stdio: 'inherit' });
    child.once('exit', (code) => resolve(code ?? 1));
  });
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let failed = 0;
  for (const file of BENCHMARKS) {
    console.log(`\n=== ${file} ${args.join(' ')}\n`);
    const code = await runOne(file, args);
    if (code !== 0) {
      failed++;
      console.error(`${file} exited with ${code}`);
    }
  }
  process.exitCode = failed ? 1 : 0;
}

void main();
