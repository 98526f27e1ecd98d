// OSCORE cost (RFC 8613 §8.1 + §8.2): protect + unprotect of one request per operation, for 16-, 64- and 512-byte
// payloads, with each AEAD backend (node:crypto, @noble/ciphers + our CCM), side by side with a bare node:crypto
// AES-CCM-16-64-128 encrypt + decrypt loop on the same plaintext and AAD lengths (ratio = what OSCORE adds: option
// split, plaintext encoding, CBOR AAD, nonce, sequence number, replay window, bindings). Then one and two nested
// layers (the core's protect / unprotect applied twice with two contexts, oscore-capable-proxies-07 §2 shape).
// Core only: no CoAP datagram encoding, no sockets. Interleaved runs, medians.
// Run: npm run build && node dist/bench/oscore.js [--runs=15] [--ms=300] [--sizes=16,64,512] [--quick]

import crypto from 'node:crypto';
import { CODES } from '../src/coap/codes';
import { CoapMessage } from '../src/coap/message';
import { OPT } from '../src/coap/options';
import { AeadBackendName, SecurityContext, createAead, encodeAad, protectRequest, unprotectRequest } from '../src/oscore';
import { CpuCell, fmt, listArg, machineLine, machineShare, numArg, parseArgs, runCpuCells, table } from './common';

const args = parseArgs();
const quick = args.quick === 'true';
const RUNS = numArg(args, 'runs', quick ? 3 : 15);
const MS = numArg(args, 'ms', quick ? 100 : 300);
const SIZES = listArg(args, 'sizes', ['16', '64', '512']).map(Number);
/** Hard bound on iterations per measurement, whatever the speed. */
const MAX_OPS = 5_000_000;

let sink = 0;

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

const CONFIGS: CpuCell[] = [
  { key: 'bare', make: bareCcm },
  { key: 'node-aead', make: (s) => aeadAlone('node', s) },
  { key: 'noble-aead', make: (s) => aeadAlone('noble', s) },
  { key: 'node-1', make: (s) => oscoreOp('node', s, 1) },
  { key: 'noble-1', make: (s) => oscoreOp('noble', s, 1) },
  { key: 'node-2', make: (s) => oscoreOp('node', s, 2) },
  { key: 'noble-2', make: (s) => oscoreOp('noble', s, 2) },
];

function main(): void {
  const share = machineShare();
  console.log(`# OSCORE protect + unprotect (one request per operation), ${RUNS} interleaved runs of ~${MS} ms, medians of operations per CPU second`);
  console.log(`# ${machineLine()}`);
  const results = runCpuCells(CONFIGS, { runs: RUNS, ms: MS, sizes: SIZES, warmupMs: MS, warmupOps: 200, firstBatch: 64, maxOps: MAX_OPS });
  const med = results.median;
  const x = (a: number, b: number) => `${fmt(a / b, 2)}x`;

  console.log('\n## One layer: protect + unprotect per CPU second, against a bare node:crypto AES-CCM encrypt + decrypt\n');
  console.log(
    table(
      ['payload (B)', 'bare node:crypto AES-CCM', 'ours, node:crypto', 'ours / bare', 'ours, noble', 'ours / bare (noble)', 'node AEAD alone', 'noble AEAD alone'],
      SIZES.map((s) => {
        const bare = med('bare', s);
        return [s, fmt(bare), fmt(med('node-1', s)), x(med('node-1', s), bare), fmt(med('noble-1', s)), x(med('noble-1', s), bare), fmt(med('node-aead', s)), fmt(med('noble-aead', s))];
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
  console.log(`\nwidest interquartile range of a cell: ${fmt(results.widestIqr * 100)}% of its median`);
  console.log(`\n${share.end()}  (sink ${sink & 1})`);
}

main();
