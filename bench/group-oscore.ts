// Group OSCORE cost (RFC 10021 §7, §8): one operation = protect a request at the client + verify it at one server.
// Group mode (countersignature with EdDSA / Ed25519 or ECDSA / P-256, its keystream encryption, the longer
// external_aad) beside a bare node:crypto sign + verify of a message as long as the Countersign_structure, so the
// table shows how much of the group mode is the signature; pairwise mode beside RFC 8613 (the same AEAD, the
// longer external_aad and the per-peer keys). Core only: no datagram encoding, no sockets. Interleaved runs, medians
// of operations per CPU second.
// Run: npm run build && node dist/bench/group-oscore.js [--runs=11] [--ms=300] [--sizes=16,64,512] [--quick]

import crypto from 'node:crypto';
import { CODES } from '../src/coap/codes';
import { CoapMessage } from '../src/coap/message';
import { OPT } from '../src/coap/options';
import { GroupContext, MemorySequenceStore, PeerContext, RequestContext, SecurityContext, generateGroupKeyPair, protectRequest, unprotectRequest } from '../src/oscore';
import { COSE_ALG, parseCcs, privateKeyObject, publicKeyObject } from '../src/oscore/group';
import { CpuCell, fmt, listArg, machineLine, machineShare, numArg, parseArgs, runCpuCells, table } from './common';

const args = parseArgs();
const quick = args.quick === 'true';
const RUNS = numArg(args, 'runs', quick ? 3 : 11);
const MS = numArg(args, 'ms', quick ? 100 : 300);
const SIZES = listArg(args, 'sizes', ['16', '64', '512']).map(Number);
/** Hard bound on iterations per measurement, whatever the speed. */
const MAX_OPS = 2_000_000;

let sink = 0;

function request(size: number): CoapMessage {
  return { type: 'NON', code: CODES.POST, messageId: 0x1234, token: crypto.randomBytes(8), options: [{ number: OPT.URI_PATH, value: Buffer.from('bench') }], payload: crypto.randomBytes(size) };
}

function group(signatureAlg: number): { client: GroupContext; server: GroupContext } {
  const masterSecret = crypto.randomBytes(16);
  const masterSalt = crypto.randomBytes(8);
  const idContext = crypto.randomBytes(4);
  const c = { id: Buffer.from('c0', 'hex'), ...generateGroupKeyPair({ signatureAlg }) };
  const s = { id: Buffer.from('50', 'hex'), ...generateGroupKeyPair({ signatureAlg }) };
  const gmCredential = generateGroupKeyPair().credential;
  const make = (me: typeof c, other: typeof c) =>
    new GroupContext(
      { masterSecret, masterSalt, idContext, senderId: me.id, privateKey: me.privateKey, credential: me.credential, members: [{ senderId: other.id, credential: other.credential }], gmCredential, signatureAlg },
      { sequenceStore: new MemorySequenceStore() },
    );
  return { client: make(c, s), server: make(s, c) };
}

/** protect at the client + verify at the server, through `send` and `receive`. */
function roundTrip(send: RequestContext, receive: PeerContext | ((kid: Buffer, kc: Buffer | undefined, g: boolean) => PeerContext | undefined), size: number): () => void {
  const msg = request(size);
  const op = () => {
    const m = protectRequest(send, msg).message;
    sink ^= unprotectRequest(receive, m as CoapMessage).message.payload[0];
  };
  // Correctness once, before timing.
  const m = protectRequest(send, msg).message;
  const back = unprotectRequest(receive, m as CoapMessage).message;
  if (!back.payload.equals(msg.payload)) throw new Error('round trip changed the message');
  return op;
}

function groupMode(alg: number, size: number): () => void {
  const { client, server } = group(alg);
  return roundTrip(client.groupRequests(), (k, kc, g) => server.resolve(k, kc, g), size);
}

function pairwiseMode(size: number): () => void {
  const { client, server } = group(COSE_ALG.EdDSA);
  return roundTrip(client.peer(Buffer.from('50', 'hex'), 'pairwise')!, (k, kc, g) => server.resolve(k, kc, g), size);
}

function rfc8613(size: number): () => void {
  const masterSecret = crypto.randomBytes(16);
  const masterSalt = crypto.randomBytes(8);
  const idContext = crypto.randomBytes(4);
  const client = SecurityContext.derive({ masterSecret, masterSalt, idContext, senderId: Buffer.from('c0', 'hex'), recipientId: Buffer.from('50', 'hex') });
  const server = SecurityContext.derive({ masterSecret, masterSalt, idContext, senderId: Buffer.from('50', 'hex'), recipientId: Buffer.from('c0', 'hex') });
  return roundTrip(client, server, size);
}

/** Bare node:crypto sign + verify of a message as long as this payload's Countersign_structure. */
function bareSignature(alg: number, size: number): () => void {
  const kp = generateGroupKeyPair({ signatureAlg: alg });
  const info = parseCcs(kp.credential);
  const priv = privateKeyObject(info, kp.privateKey);
  const pub = publicKeyObject(info);
  // "CounterSignature0" + two empty bstr + external_aad (~140 bytes with two 46-byte CCS) + ciphertext
  const data = crypto.randomBytes(20 + 2 + 140 + size + 15);
  const hash = alg === COSE_ALG.EdDSA ? null : 'sha256';
  const opts = alg === COSE_ALG.EdDSA ? {} : { dsaEncoding: 'ieee-p1363' as const };
  return () => {
    const sig = crypto.sign(hash, data, { key: priv, ...opts });
    if (!crypto.verify(hash, data, { key: pub, ...opts }, sig)) throw new Error('bare verify failed');
    sink ^= sig[0];
  };
}

const CONFIGS: CpuCell[] = [
  { key: 'bare-ed', make: (s: number) => bareSignature(COSE_ALG.EdDSA, s) },
  { key: 'group-ed', make: (s: number) => groupMode(COSE_ALG.EdDSA, s) },
  { key: 'bare-p256', make: (s: number) => bareSignature(COSE_ALG.ES256, s) },
  { key: 'group-p256', make: (s: number) => groupMode(COSE_ALG.ES256, s) },
  { key: 'rfc8613', make: rfc8613 },
  { key: 'pairwise', make: pairwiseMode },
];

function main(): void {
  const share = machineShare();
  console.log(`# Group OSCORE protect + verify (one request per operation), ${RUNS} interleaved runs of ~${MS} ms, medians of operations per CPU second`);
  console.log(`# ${machineLine()}`);
  const results = runCpuCells(CONFIGS, { runs: RUNS, ms: MS, sizes: SIZES, warmupMs: MS / 3, warmupOps: 20, firstBatch: 8, maxOps: MAX_OPS });
  const med = results.median;
  const pct = (a: number, b: number) => `${fmt((100 * a) / b)}%`;
  console.log('\n## Group mode: protect + verify per CPU second, against bare node:crypto sign + verify\n');
  console.log(
    table(
      ['payload (B)', 'bare Ed25519 sign+verify', 'group mode, Ed25519', 'group / bare', 'bare P-256 sign+verify', 'group mode, P-256', 'group / bare (P-256)'],
      SIZES.map((s) => [s, fmt(med('bare-ed', s)), fmt(med('group-ed', s)), pct(med('group-ed', s), med('bare-ed', s)), fmt(med('bare-p256', s)), fmt(med('group-p256', s)), pct(med('group-p256', s), med('bare-p256', s))]),
    ),
  );
  console.log('\n## Pairwise mode against RFC 8613: protect + verify per CPU second\n');
  console.log(
    table(
      ['payload (B)', 'RFC 8613', 'pairwise mode', 'pairwise / RFC 8613'],
      SIZES.map((s) => [s, fmt(med('rfc8613', s)), fmt(med('pairwise', s)), pct(med('pairwise', s), med('rfc8613', s))]),
    ),
  );
  console.log(`\nwidest interquartile range of a cell: ${fmt(results.widestIqr * 100)}% of its median`);
  console.log(`\n${share.end()}  (sink ${sink & 1})`);
}

main();
