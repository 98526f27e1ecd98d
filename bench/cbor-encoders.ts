// The hand-written deterministic CBOR writer of src/oscore/cbor.ts against the package's cbor-x configuration
// (src/cbor/cbor.ts) on the structures OSCORE encodes per message: the RFC 8613 §5.4 aad_array and Enc_structure of
// a request with a 1-byte kid and 1-byte Partial IV, and the Group OSCORE (RFC 10021 §3.4) aad_array shape with
// 32-byte credentials. Checks the two agree byte for byte first. Interleaved runs, medians of encodings per CPU s.
// Run: npm run build && node --expose-gc dist/bench/cbor-encoders.js [--runs=9] [--ms=200]

import { performance } from 'node:perf_hooks';
import { encodeCbor as cborX } from '../src/cbor/cbor';
import { CborValue, encodeCbor as ours } from '../src/oscore/cbor';
import { fmt, forceGc, loadAverage, machineLine, median, numArg, parseArgs, table } from './common';

const args = parseArgs();
const RUNS = numArg(args, 'runs', 9);
const MS = numArg(args, 'ms', 200);
let sink = 0;

function rate(op: () => Uint8Array, ms: number): number {
  for (let i = 0; i < 1000; i++) sink ^= op().length;
  let n = 0;
  const start = performance.now();
  const cpu = process.cpuUsage();
  while (performance.now() - start < ms) {
    for (let i = 0; i < 256; i++) sink ^= op().length;
    n += 256;
  }
  const used = process.cpuUsage(cpu);
  return n / ((used.user + used.system) / 1e6);
}

const kid = Buffer.from([0x01]);
const piv = Buffer.from([0x14]);
const empty = Buffer.alloc(0);
const aadArray: CborValue = [1, [10], kid, piv, empty];
const cred = Buffer.alloc(32, 7);
const groupAadArray: CborValue = [1, [10, -65534, -8, -27], kid, piv, empty, Buffer.from([0xdd, 0x11]), Buffer.from([0x29, 0x14, 0x01, 0xdd, 0x11]), cred, cred];

const SHAPES: { name: string; make: (enc: (v: CborValue) => Uint8Array) => () => Uint8Array }[] = [
  { name: 'aad_array (RFC 8613 §5.4)', make: (enc) => () => enc(aadArray) },
  { name: 'Enc_structure incl. aad_array', make: (enc) => () => enc(['Encrypt0', empty, enc(aadArray)]) },
  { name: 'Group OSCORE aad_array (RFC 10021 §3.4)', make: (enc) => () => enc(groupAadArray) },
];

function main(): void {
  console.log(`# CBOR: src/oscore/cbor.ts against cbor-x (src/cbor/cbor.ts), ${RUNS} interleaved runs of ~${MS} ms`);
  console.log(`# ${machineLine()}`);
  const res = new Map<string, number[]>();
  for (const s of SHAPES) {
    const a = Buffer.from(s.make(ours)()).toString('hex');
    const b = Buffer.from(s.make(cborX as (v: CborValue) => Uint8Array)()).toString('hex');
    if (a !== b) throw new Error(`${s.name}: encoders disagree (${a} / ${b})`);
  }
  for (let r = 0; r < RUNS; r++) {
    for (const s of SHAPES) {
      for (const [k, enc] of [['ours', ours], ['cbor-x', cborX]] as const) {
        forceGc();
        const key = `${s.name}/${k}`;
        res.set(key, [...(res.get(key) ?? []), rate(s.make(enc as (v: CborValue) => Uint8Array), MS)]);
      }
    }
  }
  console.log();
  console.log(
    table(
      ['structure', 'src/oscore/cbor.ts /s', 'cbor-x /s', 'ours / cbor-x'],
      SHAPES.map((s) => {
        const o = median(res.get(`${s.name}/ours`)!);
        const x = median(res.get(`${s.name}/cbor-x`)!);
        return [s.name, fmt(o), fmt(x), `${fmt(o / x, 2)}x`];
      }),
    ),
  );
  console.log(`\nload average at the end ${loadAverage()} (sink ${sink & 1})`);
}

main();
