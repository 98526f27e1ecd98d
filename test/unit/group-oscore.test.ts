// Group OSCORE message processing (RFC 10021 §3-§9) through protect.ts: group mode with Ed25519 and
// ECDSA P-256, pairwise mode with X25519-mapped and P-256 keys, the §4.3 compression examples, a tampering test
// that flips every external_aad field, the signature, kid, kid context and Group Flag in turn, the §7.2 errors,
// per-sender replay windows and Response Numbers, Echo recovery of lost windows, persistence, and a group context
// inside nested OSCORE layers.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, getOption } from '../../src/coap/message';
import { OPT, decodeUint } from '../../src/coap/options';
import {
  ContextRegistry,
  EchoRequiredError,
  FileSequenceStore,
  GroupContext,
  GroupContextOptions,
  MemorySequenceStore,
  OscoreError,
  SecurityContext,
  decodeOscoreOption,
  echoChallenge,
  encodeOscoreOption,
  generateGroupKeyPair,
  groupOscoreLeisure,
  oscoreErrorResponse,
  protectRequest,
  protectResponse,
  unprotectRequest,
  unprotectResponse,
  bindOwnRequest,
} from '../../src/oscore';
import { COSE_ALG, COSE_CRV, COSE_KTY, SignatureChecker, encodeCcs, parseCcs, publicKeyOf } from '../../src/oscore/group';
import { CLIENT_TO_PROXY_VIEW, END_TO_END_VIEW, oscoreServerTransform, protectRequestLayers, protectResponseLayers, removeRequestLayers, unprotectResponseLayers } from '../../src/oscore/nested';

const h = (x: string): Buffer => Buffer.from(x, 'hex');
const GID = h('feedca57');
const SECRET = h('00112233445566778899aabbccddeeff');
const SALT = h('5a17');

interface Keys {
  id: Buffer;
  privateKey: Buffer;
  credential: Buffer;
}

function keys(ids: string[], signatureAlg: number): Keys[] {
  return ids.map((id) => ({ id: h(id), ...generateGroupKeyPair({ signatureAlg }) }));
}

function groupOf(all: Keys[], me: number, extra: Partial<ConstructorParameters<typeof GroupContext>[0]> = {}, opts: GroupContextOptions = {}): GroupContext {
  const k = all[me];
  return new GroupContext(
    {
      masterSecret: SECRET,
      masterSalt: SALT,
      idContext: GID,
      senderId: k.id,
      privateKey: k.privateKey,
      credential: k.credential,
      members: all.filter((_, i) => i !== me).map((o) => ({ senderId: o.id, credential: o.credential })),
      gmCredential: h('a10474'),
      signatureAlg: parseCcs(k.credential).alg,
      ...extra,
    },
    opts,
  );
}

const get = (path = 'light', mid = 1): CoapMessage => ({ type: 'NON', code: CODES.GET, messageId: mid, token: h('0102'), options: [{ number: OPT.URI_PATH, value: Buffer.from(path) }], payload: Buffer.alloc(0) });
const reply = (text: string, mid = 2): CoapMessage => ({ type: 'NON', code: CODES.CONTENT, messageId: mid, token: h('0102'), options: [], payload: Buffer.from(text) });
/** through the wire format, so the test sees what a peer would receive */
const wire = (m: { type?: unknown; code: number; options?: unknown; payload?: Buffer }): CoapMessage => decode(encode(m as CoapMessage));
const resolverOf = (g: GroupContext) => (kid: Buffer, kidContext: Buffer | undefined, group: boolean) => g.resolve(kid, kidContext, group);
const code = (c: string) => (e: unknown) => e instanceof OscoreError && e.code === c;

for (const [name, alg] of [
  ['EdDSA / Ed25519', COSE_ALG.EdDSA],
  ['ECDSA / P-256', COSE_ALG.ES256],
] as const) {
  describe(`Group OSCORE with ${name} (RFC 10021)`, function () {
    const all = keys(['01', '11', '12', '13'], alg);
    const client = () => groupOf(all, 0);
    const server = (i: number, opts?: GroupContextOptions) => groupOf(all, i, {}, opts);

    it('§8: one group-mode request verified by every server; each answers in group or pairwise mode and the client attributes every response', function () {
      const c = client();
      const { message, binding } = protectRequest(c.groupRequests(), get());
      const req = wire(message);
      const f = decodeOscoreOption(getOption(req, OPT.OSCORE)!);
      assert.equal(f.group, true, 'Group Flag');
      assert.deepEqual(f.kidContext, GID, 'kid context in every request (§3.2)');
      assert.deepEqual(f.kid, h('01'));
      assert.equal(req.payload.length, 1 + 1 + 5 + 8 + 64, 'ciphertext (code, Uri-Path option, tag) ‖ 64-byte encrypted signature');
      const seen: string[] = [];
      for (const i of [1, 2, 3]) {
        const s = server(i);
        const v = unprotectRequest(resolverOf(s), req);
        assert.equal(v.message.code, CODES.GET);
        assert.equal(v.context.recipientId.toString('hex'), '01');
        const mode = i === 2 ? 'pairwise' : 'group';
        const res = wire(protectResponse(v.binding, reply(`s${i}`), { mode }));
        const rf = decodeOscoreOption(getOption(res, OPT.OSCORE)!);
        assert.deepEqual(rf.kid, all[i].id, 'kid in every response (§3.2)');
        assert.equal(rf.group === true, mode === 'group');
        const r = unprotectResponse(binding, res);
        assert.equal(r.responder.recipientId.toString('hex'), all[i].id.toString('hex'));
        assert.equal(r.responder.mode, mode);
        seen.push(r.message.payload.toString());
      }
      assert.deepEqual(seen, ['s1', 's2', 's3']);
    });

    it('§8: a pairwise-mode request to one server and its response (no Group Flag, kid context present, kid absent in the response allowed)', function () {
      const c = client();
      const s = server(1);
      const { message, binding } = protectRequest(c.peer(all[1].id, 'pairwise')!, get());
      const req = wire(message);
      const f = decodeOscoreOption(getOption(req, OPT.OSCORE)!);
      assert.equal(f.group, undefined);
      assert.deepEqual(f.kidContext, GID);
      assert.equal(req.payload.length, 1 + 1 + 5 + 8, 'no signature in pairwise mode');
      const v = unprotectRequest(resolverOf(s), req);
      assert.equal(v.context.mode, 'pairwise');
      const r = unprotectResponse(binding, wire(protectResponse(v.binding, reply('pw'))));
      assert.equal(r.message.payload.toString(), 'pw');
      assert.equal(r.responder.mode, 'pairwise');
    });

    it('a member that is not in the client\'s group (other keys, same Sender ID) cannot answer: its response is rejected', function () {
      const c = client();
      const { message, binding } = protectRequest(c.groupRequests(), get());
      const intruderKeys = keys(['11'], alg)[0];
      const intruder = groupOf([all[0], intruderKeys], 1);
      const v = unprotectRequest(resolverOf(intruder), wire(message)); // it knows the client's credential and the group keys
      const forged = wire(protectResponse(v.binding, reply('forged')));
      assert.throws(() => unprotectResponse(binding, forged), code('ERR_OSCORE_SIGNATURE'));
    });

    it('§5.3.1 ("Replay Protection of Responses"): a Response Number per server; a replayed response is rejected, a new Partial IV on every response but the first', function () {
      const c = client();
      const { message, binding } = protectRequest(c.groupRequests(), get(), { multipleResponses: true });
      const s1 = server(1);
      const s2 = server(2);
      const v1 = unprotectRequest(resolverOf(s1), wire(message));
      const v2 = unprotectRequest(resolverOf(s2), wire(message));
      const a = wire(protectResponse(v1.binding, reply('a')));
      const b = wire(protectResponse(v1.binding, reply('b')));
      assert.equal(decodeOscoreOption(getOption(a, OPT.OSCORE)!).piv, undefined, 'the first may reuse the request nonce');
      assert.ok(decodeOscoreOption(getOption(b, OPT.OSCORE)!).piv, 'every later one has its own Partial IV');
      const x = wire(protectResponse(v2.binding, reply('x')));
      unprotectResponse(binding, a);
      unprotectResponse(binding, b);
      unprotectResponse(binding, x); // s2's first response without Partial IV is accepted beside s1's
      assert.throws(() => unprotectResponse(binding, b), code('ERR_OSCORE_REPLAY'));
      assert.throws(() => unprotectResponse(binding, a), code('ERR_OSCORE_REPLAY'));
    });

    it('§7.4 per sender: a replayed request is 4.01; the same Partial IV from another member is accepted', function () {
      const others = groupOf(all, 2);
      const s = server(1);
      const c = client();
      const r1 = wire(protectRequest(c.groupRequests(), get()).message);
      const r2 = wire(protectRequest(others.groupRequests(), get()).message); // both Partial IV 0
      unprotectRequest(resolverOf(s), r1);
      unprotectRequest(resolverOf(s), r2);
      assert.throws(() => unprotectRequest(resolverOf(s), r1), (e: unknown) => code('ERR_OSCORE_REPLAY')(e) && (e as OscoreError).responseCode === CODES.UNAUTHORIZED);
    });
  });
}

describe('Group OSCORE §4.3 compression examples, byte for byte', function () {
  it('group-mode request (kid 25, PIV 5, kid context 44616c): 39 05 03 44 61 6c 25', function () {
    const v = encodeOscoreOption({ piv: h('05'), kidContext: h('44616c'), kid: h('25'), group: true });
    assert.equal(v.toString('hex'), '390503' + '44616c' + '25');
    assert.deepEqual(decodeOscoreOption(v), { piv: h('05'), kidContext: h('44616c'), kid: h('25'), group: true });
  });
  it('group-mode response (kid 52, no PIV): 28 52', function () {
    assert.equal(encodeOscoreOption({ kid: h('52'), group: true }).toString('hex'), '2852');
  });
  it('pairwise-mode request: 19 05 03 44 61 6c 25; pairwise-mode response without kid: empty', function () {
    assert.equal(encodeOscoreOption({ piv: h('05'), kidContext: h('44616c'), kid: h('25') }).toString('hex'), '19050344616c25');
    assert.equal(encodeOscoreOption({}).length, 0);
  });
});

describe('Group OSCORE tampering: every bound field, changed in turn, is rejected (RFC 10021 §3.4, §4, §7.2)', function () {
  const all = keys(['01', '11'], COSE_ALG.EdDSA);
  const fresh = () => ({ c: groupOf(all, 0), s: groupOf(all, 1) });
  const protectedRequest = (c: GroupContext): CoapMessage => wire(protectRequest(c.groupRequests(), get()).message);
  const withOption = (m: CoapMessage, f: (v: Buffer) => Buffer): CoapMessage => ({ ...m, options: m.options.map((o) => (o.number === OPT.OSCORE ? { number: o.number, value: f(Buffer.from(o.value)) } : o)) });

  it('untampered: accepted (so the rejections below are caused by the change)', function () {
    const { c, s } = fresh();
    assert.equal(unprotectRequest(resolverOf(s), protectedRequest(c)).message.code, CODES.GET);
  });

  // external_aad fields the verifier takes from its own context: a verifier whose value differs rejects the message
  // with the very same keys, so the only difference is in the external_aad.
  const aadVariants: [string, Partial<ConstructorParameters<typeof GroupContext>[0]>][] = [
    ['alg_aead (null instead of 10)', { aeadAlg: null }],
    ['alg_pairwise_key_agreement (null instead of -27)', { pairwiseKeyAgreementAlg: null, aeadAlg: 10 }],
    ['gm_cred (other Group Manager credential)', { gmCredential: h('a10475') }],
  ];
  for (const [what, change] of aadVariants) {
    it(`external_aad ${what}`, function () {
      const c = groupOf(all, 0);
      const s = groupOf(all, 1, change);
      assert.throws(() => unprotectRequest(resolverOf(s), protectedRequest(c)), code('ERR_OSCORE_SIGNATURE'));
    });
  }

  it('external_aad alg_group_enc and the Group Encryption key (AES-CCM-16-64-256 instead of -128)', function () {
    const c = groupOf(all, 0);
    const s = groupOf(all, 1, { groupEncryptionAlg: 11 });
    assert.throws(() => unprotectRequest(resolverOf(s), protectedRequest(c)), code('ERR_OSCORE_SIGNATURE'));
  });

  it('external_aad alg_signature (a verifier whose group uses ES256): rejected as a bad signature', function () {
    const c = groupOf(all, 0);
    // the verifier's group says ES256 and holds a P-256 credential for the client's Sender ID: the client's
    // EdDSA countersignature cannot verify under it
    const p256 = keys(['01', '11'], COSE_ALG.ES256);
    const s = groupOf(p256, 1);
    assert.equal(s.signatureAlg, COSE_ALG.ES256);
    assert.throws(() => unprotectRequest(resolverOf(s), protectedRequest(c)), code('ERR_OSCORE_SIGNATURE'));
  });

  it('a credential that does not fit the Signature Algorithm is a configuration error (own or a member\'s)', function () {
    assert.throws(() => groupOf(all, 0, { signatureAlg: COSE_ALG.ES256 }), code('ERR_OSCORE_CONFIG'));
    const p256 = keys(['11'], COSE_ALG.ES256)[0];
    assert.throws(() => groupOf([all[0], p256], 0), code('ERR_OSCORE_CONFIG'));
  });

  it('external_aad sender_cred: the same public key in a credential with other bytes (a sub claim) is rejected', function () {
    const c = groupOf(all, 0);
    const k = parseCcs(all[0].credential);
    const other = encodeCcs({ ...k, sub: 'x' });
    const s = new GroupContext({ masterSecret: SECRET, masterSalt: SALT, idContext: GID, senderId: all[1].id, privateKey: all[1].privateKey, credential: all[1].credential, members: [{ senderId: all[0].id, credential: other }], gmCredential: h('a10474') });
    assert.throws(() => unprotectRequest(resolverOf(s), protectedRequest(c)), code('ERR_OSCORE_SIGNATURE'));
  });

  it('external_aad request_piv / OSCORE_option: another Partial IV on the wire', function () {
    const { c, s } = fresh();
    const m = withOption(protectedRequest(c), (v) => {
      v[1] ^= 0x01; // PIV byte
      return v;
    });
    assert.throws(() => unprotectRequest(resolverOf(s), m), code('ERR_OSCORE_SIGNATURE'));
  });

  it('kid: the request attributed to another member is rejected (signature checked with that member\'s key)', function () {
    const three = keys(['01', '11', '12'], COSE_ALG.EdDSA);
    const c = groupOf(three, 0);
    const s = groupOf(three, 1);
    const m = withOption(protectedRequest(c), (v) => {
      v[v.length - 1] = 0x12;
      return v;
    });
    assert.throws(() => unprotectRequest(resolverOf(s), m), code('ERR_OSCORE_SIGNATURE'));
  });

  it('kid context: another Gid is "Security context not found" (4.01, Max-Age 0)', function () {
    const { c, s } = fresh();
    const m = withOption(protectedRequest(c), (v) => {
      v[3] ^= 0xff; // first Gid byte (flags, PIV, s, Gid...)
      return v;
    });
    let err: unknown;
    assert.throws(() => unprotectRequest(resolverOf(s), m), (e: unknown) => ((err = e), code('ERR_OSCORE_CONTEXT_NOT_FOUND')(e)));
    const res = oscoreErrorResponse(err)!;
    assert.equal(res.code, CODES.UNAUTHORIZED);
    assert.equal(decodeUint(res.options!.find((o) => o.number === OPT.MAX_AGE)!.value), 0);
  });

  it('Group Flag cleared: processed in pairwise mode, where it does not decrypt', function () {
    const { c, s } = fresh();
    const m = withOption(protectedRequest(c), (v) => {
      v[0] &= ~0x20;
      return v;
    });
    assert.throws(() => unprotectRequest(resolverOf(s), m), code('ERR_OSCORE_DECRYPT'));
  });

  it('signature: each flipped bit of the encrypted countersignature is rejected, and the replay window is not touched', function () {
    const { c, s } = fresh();
    const good = protectedRequest(c);
    for (const i of [0, 31, 63]) {
      const p = Buffer.from(good.payload);
      p[p.length - 64 + i] ^= 0x01;
      let err: unknown;
      assert.throws(() => unprotectRequest(resolverOf(s), { ...good, payload: p }), (e: unknown) => ((err = e), code('ERR_OSCORE_SIGNATURE')(e)));
      // §7.2: 4.00 with "Decryption failed", as if decryption had failed
      assert.equal((err as OscoreError).responseCode, CODES.BAD_REQUEST);
      assert.equal((err as OscoreError).diagnostic, 'Decryption failed');
    }
    // the window was not updated: the genuine request with the same Partial IV still goes through
    assert.equal(unprotectRequest(resolverOf(s), good).message.code, CODES.GET);
  });

  it('ciphertext: a flipped ciphertext byte breaks the countersignature', function () {
    const { c, s } = fresh();
    const good = protectedRequest(c);
    const p = Buffer.from(good.payload);
    p[0] ^= 0x01;
    assert.throws(() => unprotectRequest(resolverOf(s), { ...good, payload: p }), code('ERR_OSCORE_SIGNATURE'));
  });

  it('responses too: a flipped signature bit or a cleared Group Flag in a group-mode response is rejected by the client', function () {
    const { c, s } = fresh();
    const { message, binding } = protectRequest(c.groupRequests(), get());
    const v = unprotectRequest(resolverOf(s), wire(message));
    const res = wire(protectResponse(v.binding, reply('r')));
    const p = Buffer.from(res.payload);
    p[p.length - 1] ^= 0x80;
    assert.throws(() => unprotectResponse(binding, { ...res, payload: p }), code('ERR_OSCORE_SIGNATURE'));
    assert.throws(() => unprotectResponse(binding, withOption(res, (o) => ((o[0] &= ~0x20), o))), code('ERR_OSCORE_DECRYPT'));
    assert.equal(unprotectResponse(binding, res).message.payload.toString(), 'r', 'the genuine response is still accepted afterwards');
  });
});

describe('Group OSCORE errors, recovery and persistence', function () {
  const all = keys(['01', '11', '12'], COSE_ALG.EdDSA);

  it('§7.2: a member of the group without a credential here gets 5.03 (Service Unavailable)', function () {
    const c = groupOf(all, 0);
    const s = groupOf(all.slice(1), 0); // knows only 12
    let err: unknown;
    assert.throws(() => unprotectRequest(resolverOf(s), wire(protectRequest(c.groupRequests(), get()).message)), (e: unknown) => ((err = e), code('ERR_OSCORE_CREDENTIAL_UNKNOWN')(e)));
    assert.equal(oscoreErrorResponse(err)!.code, CODES.SERVICE_UNAVAILABLE);
  });

  it('§6 ("Message Reception"): the Group Flag towards a plain RFC 8613 context is discarded as 4.02', function () {
    const c = groupOf(all, 0);
    const plain = SecurityContext.derive({ masterSecret: SECRET, senderId: h('11'), recipientId: h('01'), idContext: GID });
    assert.throws(() => unprotectRequest(plain, wire(protectRequest(c.groupRequests(), get()).message)), code('ERR_OSCORE_DECODE'));
  });

  it('§9 Echo recovery: lost windows challenge each member with a protected 4.01 + Echo; the retry with Echo sets that member\'s window', function () {
    const c = groupOf(all, 0);
    const s = groupOf(all, 1, {}, { replayWindowInitialized: false });
    const first = protectRequest(c.peer(all[1].id, 'pairwise')!, get());
    let challenge: EchoRequiredError | undefined;
    assert.throws(() => unprotectRequest(resolverOf(s), wire(first.message)), (e: unknown) => ((challenge = e as EchoRequiredError), e instanceof EchoRequiredError));
    const res = unprotectResponse(first.binding, wire({ ...reply(''), ...echoChallenge(challenge!) }));
    assert.equal(res.message.code, CODES.UNAUTHORIZED);
    const echo = getOption(res.message, OPT.ECHO)!;
    const retry = protectRequest(c.peer(all[1].id, 'pairwise')!, { ...get(), options: [...get().options, { number: OPT.ECHO, value: echo }] });
    const v = unprotectRequest(resolverOf(s), wire(retry.message));
    assert.equal(v.message.code, CODES.GET);
    assert.throws(() => unprotectRequest(resolverOf(s), wire(first.message)), code('ERR_OSCORE_REPLAY'), 'the old request is now below the window');
  });

  it('persistence: the sequence number resumes past what was reserved, and replay windows survive a clean restart', function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'group-oscore-'));
    try {
      const file = path.join(dir, 'ssn.json');
      const c1 = groupOf(all, 0, {}, { sequenceStore: new FileSequenceStore(file), sequence: { blockSize: 4 } });
      const s1 = groupOf(all, 1);
      const m1 = wire(protectRequest(c1.groupRequests(), get()).message);
      unprotectRequest(resolverOf(s1), m1);
      const c2 = groupOf(all, 0, {}, { sequenceStore: new FileSequenceStore(file), sequence: { blockSize: 4 } });
      assert.equal(c2.sequence.peek(), 4, 'restart resumes at the reserved limit, never reusing a nonce');
      const s2 = groupOf(all, 1, {}, { replayWindows: JSON.parse(JSON.stringify(s1.replayWindows())) });
      assert.throws(() => unprotectRequest(resolverOf(s2), m1), code('ERR_OSCORE_REPLAY'));
      unprotectRequest(resolverOf(s2), wire(protectRequest(c2.groupRequests(), get()).message));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const [genc, aead, label] of [
    [1, 10, 'A128GCM (12-byte nonce) with AES-CCM-16-64-128 pairwise: Common IV of 13 bytes, group nonces from its first 12 (§2.1.4, §3.3)'],
    [24, 30, 'ChaCha20/Poly1305 with AES-CCM-16-128-128 pairwise'],
  ] as const) {
    it(`other algorithms: ${label}`, function () {
      const c = groupOf(all, 0, { groupEncryptionAlg: genc, aeadAlg: aead });
      const s = groupOf(all, 1, { groupEncryptionAlg: genc, aeadAlg: aead });
      assert.equal(c.commonIv.length, 13);
      for (const send of [c.groupRequests(), c.peer(all[1].id, 'pairwise')!]) {
        for (const answer of ['group', 'pairwise'] as const) {
          const { message, binding } = protectRequest(send, get());
          const v = unprotectRequest(resolverOf(s), wire(message));
          assert.equal(v.context.mode, send.mode);
          const r = unprotectResponse(binding, wire(protectResponse(v.binding, reply('ok'), { mode: answer })));
          assert.equal(r.message.payload.toString(), 'ok');
          assert.equal(r.responder.mode, answer);
        }
      }
    });
  }

  it('a pairwise-only group (no Group Encryption Algorithm) with X25519 credentials: requests and responses in pairwise mode; group mode is refused', function () {
    const x = ['01', '11'].map((id) => {
      const privateKey = require('node:crypto').randomBytes(32) as Buffer;
      return { id: h(id), privateKey, credential: encodeCcs({ ...publicKeyOf('X25519', privateKey) }) };
    });
    const mk = (i: number) => groupOf(x, i, { groupEncryptionAlg: null });
    const c = mk(0);
    const s = mk(1);
    assert.equal(parseCcs(x[0].credential).crv, COSE_CRV.X25519);
    assert.equal(parseCcs(x[0].credential).kty, COSE_KTY.OKP);
    assert.throws(() => c.groupRequests(), code('ERR_OSCORE_CONFIG'));
    const { message, binding } = protectRequest(c.peer(h('11'), 'pairwise')!, get());
    const v = unprotectRequest(resolverOf(s), wire(message));
    assert.equal(unprotectResponse(binding, wire(protectResponse(v.binding, reply('x')))).message.payload.toString(), 'x');
    // a Group Flag towards a pairwise-only group is discarded (RFC 10021 §6)
    const flagged = { ...wire(message), options: wire(message).options.map((o) => (o.number === OPT.OSCORE ? { number: o.number, value: Buffer.from([o.value[0] | 0x20, ...o.value.subarray(1)]) } : o)) };
    assert.throws(() => unprotectRequest(resolverOf(s), flagged), code('ERR_OSCORE_DECODE'));
  });

  it('key material stays out of inspect / JSON', function () {
    const g = groupOf(all, 0);
    const text = JSON.stringify(g) + require('node:util').inspect(g, { depth: 5 });
    assert.ok(!text.includes(all[0].privateKey.toString('hex')));
    assert.ok(!text.includes(SECRET.toString('hex')));
  });

  it('RFC 10020 §3.6.1 Leisure: 20 s with group mode, 13 s pairwise only', function () {
    assert.equal(groupOscoreLeisure(groupOf(all, 0)), 20000);
    assert.equal(groupOscoreLeisure(groupOf(all, 0, { groupEncryptionAlg: null })), 13000);
    assert.equal(groupOscoreLeisure(undefined), 5000);
  });

  it('a GroupContext is interchangeable inside nested layers: group-mode end to end, RFC 8613 to the proxy (oscore-capable-proxies-07 §2)', function () {
    const c = groupOf(all, 0);
    const s = groupOf(all, 1);
    const toProxy = SecurityContext.derive({ masterSecret: h('0f'.repeat(16)), senderId: h('c1'), recipientId: h('b0') });
    const atProxy = SecurityContext.derive({ masterSecret: h('0f'.repeat(16)), senderId: h('b0'), recipientId: h('c1') });
    const msg = { ...get(), options: [{ number: OPT.PROXY_URI, value: Buffer.from('coap://224.0.1.187/light') }] };
    const sent = protectRequestLayers(msg, [
      { context: c.groupRequests(), view: END_TO_END_VIEW },
      { context: toProxy, view: CLIENT_TO_PROXY_VIEW },
    ]);
    // the proxy removes its layer only: what is left is the group-mode request
    const atP = removeRequestLayers(wire(sent.message), { contexts: atProxy, proxyRelated: (m) => m.options.some((o) => o.number === OPT.PROXY_URI || o.number === OPT.PROXY_SCHEME) });
    assert.equal(atP.layers.length, 1);
    assert.equal(decodeOscoreOption(getOption(atP.message, OPT.OSCORE)!).group, true);
    // the server, with a registry holding the group beside an RFC 8613 context, removes the end-to-end layer
    const registry = new ContextRegistry().add(SecurityContext.derive({ masterSecret: SECRET, senderId: h('aa'), recipientId: h('bb') })).addGroup(GID, s);
    const stripped = { ...atP.message, options: atP.message.options.filter((o) => o.number !== OPT.PROXY_URI && o.number !== OPT.PROXY_SCHEME && o.number !== OPT.URI_HOST) };
    const atS = removeRequestLayers(wire(stripped), { contexts: registry });
    assert.equal(atS.layers[0].context.mode, 'group');
    assert.equal(getOption(atS.message, OPT.URI_PATH)!.toString(), 'light');
    // the answer comes back through both layers
    const back = protectResponseLayers(atS.layers, reply('on'));
    const relayed = protectResponseLayers(atP.layers, { ...wire(back), code: wire(back).code });
    const got = unprotectResponseLayers(wire(relayed), sent.layers.map((l) => ({ binding: l.binding, classE: l.classE })));
    assert.equal(got.message.payload.toString(), 'on');
    assert.equal(got.verified[1].responder.mode, 'group');
  });

  it('oscoreServerTransform (the group server\'s request transform) takes a GroupContext directly: verified request in, protected response out', function () {
    const c = groupOf(all, 0);
    const s = groupOf(all, 1);
    const transform = oscoreServerTransform({ contexts: s });
    const { message, binding } = protectRequest(c.groupRequests(), get());
    const out = transform({ message: wire(message), remote: { address: '127.0.0.1', port: 5683 }, multicast: true });
    assert.ok('request' in out && out.protect);
    assert.equal(getOption(out.request.message, OPT.URI_PATH)!.toString(), 'light');
    const res = out.protect!({ code: CODES.CONTENT, options: [], payload: Buffer.from('on') });
    const r = unprotectResponse(binding, wire({ ...reply(''), ...res }));
    assert.equal(r.message.payload.toString(), 'on');
    assert.equal(r.responder.recipientId.toString('hex'), '11');
    // a forged request gets the RFC 10021 §7.2 answer, unprotected: 4.00 "Decryption failed"
    const forged = wire(protectRequest(c.groupRequests(), get()).message);
    forged.payload[forged.payload.length - 1] ^= 1;
    const rej = transform({ message: forged, remote: { address: '127.0.0.1', port: 5683 }, multicast: true });
    assert.ok('reject' in rej && rej.reject);
    assert.equal(rej.reject.code, CODES.BAD_REQUEST);
  });

  it('bounded state: a client\'s Response Numbers are per member of the group, and unknown kids never create any', function () {
    const c = groupOf(all, 0);
    const { message, binding } = protectRequest(c.groupRequests(), get());
    const s = groupOf(all, 1);
    const v = unprotectRequest(resolverOf(s), wire(message));
    const res = wire(protectResponse(v.binding, reply('r')));
    const strange = { ...res, options: res.options.map((o) => (o.number === OPT.OSCORE ? { number: o.number, value: Buffer.concat([Buffer.from(o.value).subarray(0, 1), h('77')]) } : o)) };
    assert.throws(() => unprotectResponse(binding, strange), code('ERR_OSCORE_CONTEXT_NOT_FOUND'));
    assert.equal(binding.notificationNumberOf('77'), undefined);
  });
});

describe('Group OSCORE for multicast notifications (observe-multicast-notifications-15 §9)', function () {
  const all = keys(['01', '11', '12'], COSE_ALG.EdDSA);

  it('the server protects its phantom request in group mode (as FETCH); a late joiner verifies notifications through its binding, and a replayed notification is rejected', function () {
    const server = groupOf(all, 0);
    const phantom = wire({ ...get('alarm'), options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, ...get('alarm').options] });
    const p = protectRequest(server.groupRequests(), phantom);
    const phantomWire = wire(p.message);
    assert.equal(phantomWire.code, CODES.FETCH, 'Outer FETCH with Observe (RFC 8613 §4.1.3.5.1)');
    const own = bindOwnRequest(server.groupRequests(), phantomWire);
    const notify = (seq: number, text: string) => wire(protectResponse(own.server, { ...reply(text), options: [{ number: OPT.OBSERVE, value: Buffer.from([seq]) }] }));
    const n1 = notify(1, 'on');
    const n2 = notify(2, 'off');
    assert.ok(decodeOscoreOption(getOption(n1, OPT.OSCORE)!).piv, 'every notification has its own Partial IV');
    // a client that joined later and only saw the phantom request (e.g. in an informative response)
    const late = groupOf(all, 2);
    const b = bindOwnRequest(late.groupRequests(), phantomWire).client;
    const r2 = unprotectResponse(b, n2);
    assert.equal(r2.message.payload.toString(), 'off');
    assert.equal(r2.responder.recipientId.toString('hex'), '01');
    assert.equal(unprotectResponse(b, n1).newest, false, 'older notification: accepted, not newest');
    assert.throws(() => unprotectResponse(b, n2), code('ERR_OSCORE_REPLAY'));
    // bound to this phantom request: another request's binding does not verify it
    const other = bindOwnRequest(late.groupRequests(), wire(protectRequest(server.groupRequests(), phantom).message)).client;
    assert.throws(() => unprotectResponse(other, n1), code('ERR_OSCORE_SIGNATURE'));
  });
});

describe('Group OSCORE external signature checker (RFC 10021 §7.5)', function () {
  const all = keys(['01', '11', '12'], COSE_ALG.EdDSA);

  it('a checker without the group keys verifies group-mode requests and responses and names their senders; forged ones are rejected', function () {
    const c = groupOf(all, 0);
    const s = groupOf(all, 1);
    const checker = SignatureChecker.forGroup(groupOf(all, 2));
    const { message, binding } = protectRequest(c.groupRequests(), get());
    const req = wire(message);
    assert.deepEqual(checker.checkRequest(req), h('01'));
    const v = unprotectRequest(resolverOf(s), req);
    const res = wire(protectResponse(v.binding, reply('r')));
    assert.deepEqual(checker.checkResponse(res, binding), h('11'));
    const bad = Buffer.from(req.payload);
    bad[bad.length - 1] ^= 1;
    assert.throws(() => checker.checkRequest({ ...req, payload: bad }), code('ERR_OSCORE_SIGNATURE'));
    // a host outside the group (its own keys under a member's Sender ID) cannot pass the checker
    const outsider = groupOf([{ ...keys(['01'], COSE_ALG.EdDSA)[0] }, all[1]], 0);
    assert.throws(() => checker.checkRequest(wire(protectRequest(outsider.groupRequests(), get()).message)), code('ERR_OSCORE_SIGNATURE'));
    // pairwise-mode messages carry no signature to check
    assert.throws(() => checker.checkRequest(wire(protectRequest(c.peer(all[1].id, 'pairwise')!, get()).message)), code('ERR_OSCORE_DECODE'));
  });
});

describe('Group OSCORE bad input', function () {
  it('2000 random mutations of a group-mode request and response: every rejection is a typed OscoreError, nothing else escapes', function () {
    const all = keys(['01', '11'], COSE_ALG.EdDSA);
    const c = groupOf(all, 0);
    const s = groupOf(all, 1);
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    let rejected = 0;
    for (let i = 0; i < 1000; i++) {
      const { message, binding } = protectRequest(c.groupRequests(), get());
      const req = wire(message);
      const opt = Buffer.from(getOption(req, OPT.OSCORE)!);
      const payload = Buffer.from(req.payload);
      // mutate the option or the payload: flip, truncate or extend
      const target = rnd(2) === 0 ? opt : payload;
      const kind = rnd(3);
      let mutated: Buffer = target;
      if (kind === 0 && target.length) target[rnd(target.length)] ^= 1 << rnd(8);
      else if (kind === 1) mutated = target.subarray(0, rnd(target.length + 1));
      else mutated = Buffer.concat([target, Buffer.from([rnd(256)])]);
      const m = target === opt ? { ...req, options: req.options.map((o) => (o.number === OPT.OSCORE ? { number: o.number, value: mutated } : o)) } : { ...req, payload: mutated };
      try {
        const v = unprotectRequest(resolverOf(s), m);
        // a mutation may survive only where it changed nothing that is protected: never a different request
        assert.equal(v.message.code, CODES.GET);
        const res = wire(protectResponse(v.binding, reply('r')));
        const rp = Buffer.from(res.payload);
        rp[rnd(rp.length)] ^= 1 << rnd(8);
        assert.throws(() => unprotectResponse(binding, { ...res, payload: rp }), (e: unknown) => e instanceof OscoreError);
      } catch (err) {
        if (!(err instanceof OscoreError)) throw err;
        rejected++;
      }
    }
    assert.ok(rejected > 900, `${rejected} of 1000 mutated requests rejected`);
  });
});

void MemorySequenceStore;
