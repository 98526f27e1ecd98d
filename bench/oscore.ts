// OSCORE cost (RFC 8613 §8.1 + §8.2): protect + unprotect of one request per operation, for 16-, 64- and 512-byte
// payloads, with each AEAD backend (node:crypto, @noble/ciphers + our CCM), side by side with a bare node:crypto
// AES-CCM-16-64-128 encrypt + decrypt loop on the same plaintext and AAD lengths (ratio = what OSCORE adds: option
// split, plaintext encoding, CBOR AAD, nonce, sequence number, replay window, bindings). Then one and two nested
// layers (the core's protect / unprotect applied twice with two contexts, oscore-capable-proxies-07 §2 shape).
// Core only: no CoAP datagram encoding, no sockets. Interleaved runs, medians.
// Run: npm run build && node dist/bench/oscore.js [--runs=15] [--ms=300] [--sizes=16,64,512] [--quick]

import crypto from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { CODES } from '../src/coap/codes';
import { CoapMessage } from '../src/coap/message';
import { OPT } from '../src/coap/options';
import { AeadBackendName, SecurityContext, createAead, encodeAad, protectRequest, unprotectRequest } from '../src/oscore';
import { fmt, forceGc, listArg, loadAverage, machineBusyMicros, machineLine, median, numArg, parseArgs, table } from './common';

const args = parseArgs();
const quick = args.quick === 'true';
const RUNS = numArg(args, 'runs', quick ? 3 : 15);
const MS = numArg(args, 'ms', quick ? 100 : 300);
const SIZES = listArg(args, 'sizes', ['16', '64', '512']).map(Number);
/** Hard bound on iterations per measurement, whatever the speed. */
const MAX_OPS = 5_000_000;

let sink = 0;

/**
 * Operations per CPU second of this process (user + system, all its threads) for `op`, run in batches for about
 * `ms` of wall time after a short warm-up. CPU time rather than wall time because the machine is shared: time
 * spent descheduled while others run is not ours.
 */
function rate(op: () => void, ms: number): number {
  for (let i = 0; i < 200; i++) op();
  let n = 0;
  let batch = 64;
  const start = performance.now();
  const cpu = process.cpuUsage();
  let elapsed = 0;
  while (elapsed < ms && n < MAX_OPS) {
    for (let i = 0; i < batch; i++) op();
    n += batch;
    elapsed = performance.now() - start;
    if (elapsed < ms / 20) batch *= 2;
  }
  const used = process.cpuUsage(cpu);
  return n / ((used.user + used.system) / 1e6);
}

function pair(backend: AeadBackendName, ids: [string, string]): { client: SecurityContext; server: SecurityContext } {
  const masterSecret = crypto.randomBytes(16);
  const masterSalt = crypto.randomBytes(8);
  const [c, s] = ids.map((x) => Buffer.from(x, 'hex'));
  // Default AEAD (10, AES-CCM-16-64-128), HKDF SHA-256, replay window 32, sequence numbers in memory.
  return {
    client: SecurityContext.derive({ masterSecret, masterSalt, senderId: c, recipientId: s }, { aead: backend }),
    server: SecurityContext.derive({ masterSecret, masterSalt, senderId: s, recipientId: c }, { aead: backend }),
  };
}

function request(size: number): CoapMessage {
  return {
    type: 'CON',
    code: CODES.POST,
    messageId: 0x1234,
    token: crypto.randomBytes(8),
    options: [{ number: OPT.URI_PATH, value: Buffer.from('bench') }],
    payload: crypto.randomBytes(size),
  };
}

/** protect + unprotect of one request through `layers` nested contexts (the innermost layer first, OCP §2.3). */
function oscoreOp(backend: AeadBackendName, size: number, layers: number): () => void {
  const stack = Array.from({ length: layers }, (_, i) => pair(backend, [`c${i}`, `5${i}`]));
  const msg = request(size);
  const op = () => {
    let m: CoapMessage = msg;
    for (const p of stack) m = protectRequest(p.client, m).message;
    for (let i = stack.length - 1; i >= 0; i--) m = unprotectRequest(stack[i].server, m).message;
    sink ^= m.payload[0];
  };
  // Correctness once, before timing.
  let m: CoapMessage = msg;
  for (const p of stack) m = protectRequest(p.client, m).message;
  for (let i = stack.length - 1; i >= 0; i--) m = unprotectRequest(stack[i].server, m).message;
  if (!m.payload.equals(msg.payload) || m.code !== CODES.POST) throw new Error('round trip changed the message');
  return op;
}

/** The lengths our single layer feeds the AEAD for this payload: plaintext (ciphertext minus the tag) and AAD. */
function aeadInputs(size: number): { plaintext: Buffer; aad: Buffer; key: Buffer; nonce: Buffer } {
  const { client } = pair('node', ['c0', '50']);
  const p = protectRequest(client, request(size));
  const plaintextLength = p.message.payload.length - client.aead.tagLength;
  return {
    plaintext: crypto.randomBytes(plaintextLength),
    aad: encodeAad(client.alg, p.binding.kid, p.binding.piv),
    key: crypto.randomBytes(16),
    nonce: crypto.randomBytes(13),
  };
}

/** The floor: node:crypto AES-CCM-16-64-128 encrypt + decrypt, nothing else. */
function bareCcm(size: number): () => void {
  const { plaintext, aad, key, nonce } = aeadInputs(size);
  const op = () => {
    const c = crypto.createCipheriv('aes-128-ccm', key, nonce, { authTagLength: 8 });
    c.setAAD(aad, { plaintextLength: plaintext.length });
    const ct = Buffer.concat([c.update(plaintext), c.final()]);
    const tag = c.getAuthTag();
    const d = crypto.createDecipheriv('aes-128-ccm', key, nonce, { authTagLength: 8 });
    d.setAuthTag(tag);
    d.setAAD(aad, { plaintextLength: ct.length });
    const pt = d.update(ct);
    d.final();
    sink ^= pt[0];
  };
  return op;
}

/** One backend's AEAD alone (our interface, no OSCORE), for the noble column. */
function aeadAlone(backend: AeadBackendName, size: number): () => void {
  const { plaintext, aad, key, nonce } = aeadInputs(size);
  const aead = createAead(10, backend);
  const ct = aead.encrypt(key, nonce, aad, plaintext);
  if (!aead.decrypt(key, nonce, aad, ct).equals(plaintext)) throw new Error(`${backend} AEAD round trip failed`);
  return () => {
    const c = aead.encrypt(key, nonce, aad, plaintext);
    sink ^= aead.decrypt(key, nonce, aad, c)[0];
  };
}

interface Config {
  key: string;
  make(size: number): () => void;
}

const CONFIGS: Config[] = [
  { key: 'bare', make: bareCcm },
  { key: 'node-aead', make: (s) => aeadAlone('node', s) },
  { key: 'noble-aead', make: (s) => aeadAlone('noble', s) },
  { key: 'node-1', make: (s) => oscoreOp('node', s, 1) },
  { key: 'noble-1', make: (s) => oscoreOp('noble', s, 1) },
  { key: 'node-2', make: (s) => oscoreOp('node', s, 2) },
  { key: 'noble-2', make: (s) => oscoreOp('noble', s, 2) },
];

function main(): void {
  const loadBefore = loadAverage();
  const busyBefore = machineBusyMicros();
  const cpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  console.log(`# OSCORE protect + unprotect (one request per operation), ${RUNS} interleaved runs of ~${MS} ms, medians of operations per CPU second`);
  console.log(`# ${machineLine()}`);
  const results = new Map<string, number[]>();
  const ops = new Map<string, () => void>();
  for (const size of SIZES) for (const c of CONFIGS) ops.set(`${c.key}/${size}`, c.make(size));
  // One untimed pass over everything first, so that JIT tiers and inline caches have settled for all shapes before
  // any run counts (without it, whichever payload size comes first looks slower).
  for (const op of ops.values()) rate(op, MS);
  for (let r = 0; r < RUNS; r++) {
    for (const size of SIZES) {
      for (const c of CONFIGS) {
        const k = `${c.key}/${size}`;
        forceGc();
        const v = rate(ops.get(k)!, MS);
        results.set(k, [...(results.get(k) ?? []), v]);
      }
    }
  }
  const med = (key: string, size: number) => median(results.get(`${key}/${size}`)!);
  const x = (a: number, b: number) => `${fmt(a / b, 2)}x`;

  console.log('\n## One layer: protect + unprotect per CPU second, against a bare node:crypto AES-CCM encrypt + decrypt\n');
  console.log(
    table(
      ['payload (B)', 'bare node:crypto AES-CCM', 'ours, node:crypto', 'bare / ours', 'ours, noble', 'bare / ours (noble)', 'node AEAD alone', 'noble AEAD alone'],
      SIZES.map((s) => {
        const bare = med('bare', s);
        return [s, fmt(bare), fmt(med('node-1', s)), x(bare, med('node-1', s)), fmt(med('noble-1', s)), x(bare, med('noble-1', s)), fmt(med('node-aead', s)), fmt(med('noble-aead', s))];
      }),
    ),
  );

  console.log('\n## Nested layers: protect twice + unprotect twice (two contexts) against one layer\n');
  console.log(
    table(
      ['payload (B)', 'node: 1 layer', 'node: 2 layers', '2 / 1 layer time', 'noble: 1 layer', 'noble: 2 layers', '2 / 1 layer time (noble)'],
      SIZES.map((s) => [s, fmt(med('node-1', s)), fmt(med('node-2', s)), x(med('node-1', s), med('node-2', s)), fmt(med('noble-1', s)), fmt(med('noble-2', s)), x(med('noble-1', s), med('noble-2', s))]),
    ),
  );
  // Run-to-run noise: the widest interquartile range of any cell, relative to its median.
  let widest = 0;
  for (const xs of results.values()) {
    const sorted = [...xs].sort((a, b) => a - b);
    const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1) + 0.5))];
    widest = Math.max(widest, (q(0.75) - q(0.25)) / median(xs));
  }
  console.log(`\nwidest interquartile range of a cell: ${fmt(widest * 100)}% of its median`);
  // How much of the machine other processes took meanwhile (the machine is shared): all busy CPU time minus ours.
  const busyAfter = machineBusyMicros();
  const cpu = process.cpuUsage(cpuBefore);
  const wallMicros = (performance.now() - wallBefore) * 1000;
  const others = busyBefore !== undefined && busyAfter !== undefined ? (busyAfter - busyBefore - cpu.user - cpu.system) / wallMicros : undefined;
  const othersText = others === undefined ? 'unknown' : `${fmt(Math.max(0, others), 2)} of ${os.cpus().length} cores`;
  console.log(`\nload average before ${loadBefore}, after ${loadAverage()}; other processes used ${othersText} during the run  (sink ${sink & 1})`);
}

main();
