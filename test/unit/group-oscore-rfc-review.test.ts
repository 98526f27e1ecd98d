// Group OSCORE (RFC 10021) rules checked line by line against the RFC text in a review: the Sender Context's key
// pair (§2), the curve of every member's credential for the pairwise mode (§2.4, §2.5.1), the decoding of an Ed25519
// public key before its Montgomery map (§2.5.2 with RFC 8032 §5.1.3), and the external_aad of §3.4 field by field:
// its structure decoded, and each algorithm field changed alone under the very same keys.

import assert from 'node:assert/strict';
import { Decoder } from 'cbor-x';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupContext, OscoreError, decodeOscoreOption, oscoreErrorResponse, protectRequest, protectResponse, unprotectRequest, unprotectResponse } from '../../src/oscore';
import { COSE_ALG, SignatureChecker, ed25519PublicToX25519, encodeCcs, generateGroupKeyPair, publicKeyOf } from '../../src/oscore/group';
import type { MessageBinding } from '../../src/oscore/capabilities';

const h = (x: string): Buffer => Buffer.from(x, 'hex');
const GID = h('c0ffee');
const SECRET = h('0f0e0d0c0b0a09080706050403020100');
const code = (c: string) => (e: unknown) => e instanceof OscoreError && e.code === c;
const get = (): CoapMessage => ({ type: 'NON', code: CODES.GET, messageId: 7, token: h('77'), options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) });
const wire = (m: { code: number; options?: unknown; payload?: Buffer }): CoapMessage => decode(encode({ type: 'NON', messageId: 7, token: h('77'), ...m } as CoapMessage));

type Params = ConstructorParameters<typeof GroupContext>[0];
const base = (me: { id: string; privateKey: Buffer; credential: Buffer }, members: { id: string; credential: Buffer }[], extra: Partial<Params> = {}): GroupContext =>
  new GroupContext({
    masterSecret: SECRET,
    idContext: GID,
    senderId: h(me.id),
    privateKey: me.privateKey,
    credential: me.credential,
    members: members.map((m) => ({ senderId: h(m.id), credential: m.credential })),
    gmCredential: h('a10474'),
    ...extra,
  });

describe('Group OSCORE review: the Sender Context key pair (RFC 10021 §2)', function () {
  for (const [name, alg] of [
    ['Ed25519', COSE_ALG.EdDSA],
    ['P-256', COSE_ALG.ES256],
  ] as const) {
    it(`§2: a private key that is not the own credential's (${name}) is a configuration error, not silently unverifiable messages`, function () {
      const mine = generateGroupKeyPair({ signatureAlg: alg });
      const other = generateGroupKeyPair({ signatureAlg: alg });
      const peer = generateGroupKeyPair({ signatureAlg: alg });
      const members = [{ id: '02', credential: peer.credential }];
      // the matching pair is accepted (so the rejection below is caused by the mismatch alone)
      assert.ok(base({ id: '01', privateKey: mine.privateKey, credential: mine.credential }, members, { signatureAlg: alg }));
      assert.throws(() => base({ id: '01', privateKey: other.privateKey, credential: mine.credential }, members, { signatureAlg: alg }), code('ERR_OSCORE_CONFIG'));
    });
  }

  it('§2: the same check for an X25519 key pair of a pairwise-only group', function () {
    const x = (priv: Buffer) => encodeCcs({ ...publicKeyOf('X25519', priv) });
    const a = h('a8abababababababababababababababababababababababababababababab6b');
    const b = h('c8cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd4d');
    const members = [{ id: '02', credential: x(b) }];
    assert.ok(base({ id: '01', privateKey: a, credential: x(a) }, members, { groupEncryptionAlg: null }));
    assert.throws(() => base({ id: '01', privateKey: b, credential: x(a) }, members, { groupEncryptionAlg: null }), code('ERR_OSCORE_CONFIG'));
  });
});

describe('Group OSCORE review: credentials for the pairwise mode (RFC 10021 §2.4, §2.5.1)', function () {
  it('§2.5.1: a member whose credential is on another curve than ours cannot share pairwise keys: refused when the member is added', function () {
    const xPriv = h('58abababababababababababababababababababababababababababababab6b');
    const mine = { id: '01', privateKey: xPriv, credential: encodeCcs({ ...publicKeyOf('X25519', xPriv) }) };
    const p256 = generateGroupKeyPair({ signatureAlg: COSE_ALG.ES256 });
    const x2 = h('68abababababababababababababababababababababababababababababab6b');
    // an X25519 member is fine, a P-256 one is not (there is no ECDH between the two)
    assert.ok(base(mine, [{ id: '02', credential: encodeCcs({ ...publicKeyOf('X25519', x2) }) }], { groupEncryptionAlg: null }));
    assert.throws(() => base(mine, [{ id: '03', credential: p256.credential }], { groupEncryptionAlg: null }), code('ERR_OSCORE_CONFIG'));
    const g = base(mine, [], { groupEncryptionAlg: null });
    assert.throws(() => g.addMember({ senderId: h('03'), credential: p256.credential }), code('ERR_OSCORE_CONFIG'));
    assert.equal(g.memberIds.length, 0, 'nothing was added');
  });
});

describe('Group OSCORE review: public key validation (RFC 10021 "Cryptographic Considerations")', function () {
  it('a member\'s P-256 credential whose point is not on the curve is refused ("received public keys MUST be successfully validated")', function () {
    const me = generateGroupKeyPair({ signatureAlg: COSE_ALG.ES256 });
    const peer = generateGroupKeyPair({ signatureAlg: COSE_ALG.ES256 });
    const pub = publicKeyOf('P-256', peer.privateKey);
    const y = Buffer.from(pub.y!);
    y[31] ^= 1;
    const offCurve = encodeCcs({ ...pub, y, alg: COSE_ALG.ES256 });
    const g = base({ id: '01', ...me }, [], { signatureAlg: COSE_ALG.ES256 });
    g.addMember({ senderId: h('02'), credential: peer.credential });
    assert.throws(() => g.addMember({ senderId: h('03'), credential: offCurve }), code('ERR_OSCORE_CONFIG'));
    assert.deepEqual(g.memberIds.map((i) => i.toString('hex')), ['02']);
  });
});

describe('Group OSCORE review: the Montgomery map of an Ed25519 public key (RFC 10021 §2.5.2)', function () {
  const P = (1n << 255n) - 19n;
  const le = (v: bigint): Buffer => Buffer.from(v.toString(16).padStart(64, '0'), 'hex').reverse();

  it('§2.5.2 decodes y as RFC 8032 §5.1.3 does: a y-coordinate >= p is not reduced but refused', function () {
    // y = 2 is a valid encoding; p + 2 encodes the same residue non-canonically and MUST fail to decode
    assert.equal(ed25519PublicToX25519(le(2n)).length, 32);
    assert.throws(() => ed25519PublicToX25519(le(P + 2n)), code('ERR_OSCORE_CONFIG'));
    // p + 1 would otherwise slip past the "y = 1" abort of §2.5.2 as well
    assert.throws(() => ed25519PublicToX25519(le(P + 1n)), code('ERR_OSCORE_CONFIG'));
  });

  it('§2.5.2: y = 1 and y = -1 abort', function () {
    assert.throws(() => ed25519PublicToX25519(le(1n)), code('ERR_OSCORE_CONFIG'));
    assert.throws(() => ed25519PublicToX25519(le(P - 1n)), code('ERR_OSCORE_CONFIG'));
  });
});

describe('Group OSCORE review: external_aad (RFC 10021 §3.4)', function () {
  const decoder = new Decoder({ useRecords: false, mapsAsObjects: false } as never);
  const kp = [generateGroupKeyPair(), generateGroupKeyPair()];
  const m: MessageBinding = { nonce: Buffer.alloc(13), piv: h('05'), pivId: h('01'), isRequest: true, requestKid: h('01'), requestPiv: h('05'), requestKidContext: GID, oscoreOption: h('390503c0ffee01') };

  it('aad_array = [1, [alg_aead, alg_group_enc, alg_signature, alg_pairwise_key_agreement], request_kid, request_piv, options, request_kid_context, OSCORE_option, sender_cred, gm_cred]', function () {
    const g = base({ id: '01', ...kp[0] }, [{ id: '02', credential: kp[1].credential }]);
    const a = decoder.decode(g.aadArray(m, kp[0].credential)) as unknown[];
    assert.equal(a.length, 9);
    assert.equal(a[0], 1, 'oscore_version');
    assert.deepEqual(a[1], [10, 10, -8, -27], 'AES-CCM-16-64-128 both modes, EdDSA, ECDH-SS + HKDF-256');
    const bytes = (v: unknown) => Buffer.from(v as Uint8Array).toString('hex');
    assert.deepEqual(a.slice(2).map(bytes), ['01', '05', '', 'c0ffee', '390503c0ffee01', kp[0].credential.toString('hex'), 'a10474']);
  });

  it('an algorithm that is not set is CBOR null (0xf6): a pairwise-only group has [10, null, null, -27], a group-mode-only one [null, 10, -8, null]', function () {
    const x = (priv: Buffer) => encodeCcs({ ...publicKeyOf('X25519', priv) });
    const xa = h('78abababababababababababababababababababababababababababababab6b');
    const xb = h('88abababababababababababababababababababababababababababababab6b');
    const pw = base({ id: '01', privateKey: xa, credential: x(xa) }, [{ id: '02', credential: x(xb) }], { groupEncryptionAlg: null });
    assert.deepEqual((decoder.decode(pw.aadArray(m, x(xa))) as unknown[])[1], [10, null, null, -27]);
    const gm = base({ id: '01', ...kp[0] }, [{ id: '02', credential: kp[1].credential }], { aeadAlg: null });
    assert.deepEqual((decoder.decode(gm.aadArray(m, kp[0].credential)) as unknown[])[1], [null, 10, -8, null]);
    // no Group Manager credential: an empty byte string, not null
    const noGm = new GroupContext({ masterSecret: SECRET, idContext: GID, senderId: h('01'), privateKey: kp[0].privateKey, credential: kp[0].credential, members: [] });
    assert.equal(Buffer.from((decoder.decode(noGm.aadArray(m, kp[0].credential)) as Uint8Array[])[8]).length, 0);
  });

  it('alg_group_enc alone (same Signature Encryption Key, same credentials): a checker whose external_aad says 11 instead of 10 rejects the countersignature', function () {
    const c = base({ id: '01', ...kp[0] }, [{ id: '02', credential: kp[1].credential }]);
    const req = wire(protectRequest(c.groupRequests(), get()).message);
    const params = { idContext: GID, signatureEncryptionKey: c.signatureEncryptionKey()!, members: [{ senderId: h('01'), credential: kp[0].credential }], gmCredential: h('a10474') };
    // the honest checker accepts, so the rejection is caused by the one changed field
    assert.deepEqual(new SignatureChecker({ ...params, algorithms: c.algorithms }).checkRequest(req), h('01'));
    for (const changed of [{ groupEncryption: 11 }, { aead: null }, { pairwiseKeyAgreement: null }, { groupEncryption: null }]) {
      const checker = new SignatureChecker({ ...params, algorithms: { ...c.algorithms, ...changed } });
      assert.throws(() => checker.checkRequest(req), code('ERR_OSCORE_SIGNATURE'), JSON.stringify(changed));
    }
  });

  it('the server side agrees: a member whose group omits the pairwise algorithms (same keys for the group mode) rejects the request as a bad signature', function () {
    const c = base({ id: '01', ...kp[0] }, [{ id: '02', credential: kp[1].credential }]);
    const s = base({ id: '02', ...kp[1] }, [{ id: '01', credential: kp[0].credential }], { aeadAlg: null });
    const req = wire(protectRequest(c.groupRequests(), get()).message);
    assert.throws(() => unprotectRequest((kid, kc, g) => s.resolve(kid, kc, g), req), code('ERR_OSCORE_SIGNATURE'));
  });
});

describe('Group OSCORE review: responses (RFC 10021 §3.2, §5.3.1, §7.3)', function () {
  const kp = [generateGroupKeyPair(), generateGroupKeyPair()];
  const client = () => base({ id: '01', ...kp[0] }, [{ id: '02', credential: kp[1].credential }]);
  const server = () => base({ id: '02', ...kp[1] }, [{ id: '01', credential: kp[0].credential }]);
  const reply = (text: string) => ({ code: CODES.CONTENT, options: [], payload: Buffer.from(text) });

  it('§7.3 step 3: only the first response may reuse the request nonce, whatever mode each response is in', function () {
    const c = client();
    const s = server();
    const { message, binding } = protectRequest(c.groupRequests(), get());
    const v = unprotectRequest((kid, kc, g) => s.resolve(kid, kc, g), wire(message));
    const first = wire(protectResponse(v.binding, reply('a'), { mode: 'group' }));
    assert.equal(decodeOscoreOption(getOption(first, OPT.OSCORE)!).piv, undefined);
    // a second response in the other mode still needs its own Partial IV (another key, but the rule is per request)
    assert.throws(() => protectResponse(v.binding, reply('b'), { mode: 'pairwise', partialIv: false }), code('ERR_OSCORE_INVALID_INPUT'));
    const second = wire(protectResponse(v.binding, reply('b'), { mode: 'pairwise' }));
    assert.ok(decodeOscoreOption(getOption(second, OPT.OSCORE)!).piv);
    assert.equal(unprotectResponse(binding, first).message.payload.toString(), 'a');
    assert.equal(unprotectResponse(binding, second).message.payload.toString(), 'b');
    // §5.3.1: at most one response without Partial IV per server
    assert.throws(() => unprotectResponse(binding, first), code('ERR_OSCORE_REPLAY'));
  });

  it('§3.2: a response to a group-mode request without kid is not attributed to anyone and is rejected', function () {
    const c = client();
    const s = server();
    const { message, binding } = protectRequest(c.groupRequests(), get());
    const v = unprotectRequest((kid, kc, g) => s.resolve(kid, kc, g), wire(message));
    const res = wire(protectResponse(v.binding, reply('a')));
    // flag byte with k cleared and the kid removed: 0x28 52 -> 0x20
    const noKid = { ...res, options: res.options.map((o) => (o.number === OPT.OSCORE ? { number: o.number, value: Buffer.from([o.value[0] & ~0x08]) } : o)) };
    assert.throws(() => unprotectResponse(binding, noKid), code('ERR_OSCORE_CONTEXT_NOT_FOUND'));
    assert.equal(unprotectResponse(binding, res).message.payload.toString(), 'a', 'the genuine one still verifies');
  });
});

describe('Group OSCORE review: error responses (RFC 10021 §7.2)', function () {
  it('5.03 for a member without credential carries no Max-Age 0: its Max-Age is the retry time, absent = 60 s (RFC 7252 §5.10.5)', function () {
    const kp = [generateGroupKeyPair(), generateGroupKeyPair()];
    const c = base({ id: '01', ...kp[0] }, [{ id: '02', credential: kp[1].credential }]);
    const s = base({ id: '02', ...kp[1] }, []); // does not know 01's credential
    let err: unknown;
    assert.throws(() => unprotectRequest((kid, kc, g) => s.resolve(kid, kc, g), wire(protectRequest(c.groupRequests(), get()).message)), (e: unknown) => ((err = e), code('ERR_OSCORE_CREDENTIAL_UNKNOWN')(e)));
    const res = oscoreErrorResponse(err)!;
    assert.equal(res.code, CODES.SERVICE_UNAVAILABLE);
    assert.equal(res.options.find((o) => o.number === OPT.MAX_AGE), undefined);
    // the other errors keep the Outer Max-Age 0 of RFC 8613 §4.1.3.1 / §8.2
    const other = base({ id: '02', ...kp[1] }, [{ id: '01', credential: kp[0].credential }], { idContext: h('0bad') });
    assert.throws(() => unprotectRequest((kid, kc, g) => other.resolve(kid, kc, g), wire(protectRequest(c.groupRequests(), get()).message)), (e: unknown) => ((err = e), code('ERR_OSCORE_CONTEXT_NOT_FOUND')(e)));
    assert.deepEqual(oscoreErrorResponse(err)!.options, [{ number: OPT.MAX_AGE, value: Buffer.alloc(0) }]);
  });
});

describe('Group OSCORE review: kid context in requests (RFC 10021 §3.2)', function () {
  it('a request without kid context is not verified by a Group OSCORE association given directly (not only through resolve)', function () {
    const kp = [generateGroupKeyPair(), generateGroupKeyPair()];
    const c = base({ id: '01', ...kp[0] }, [{ id: '02', credential: kp[1].credential }]);
    const s = base({ id: '02', ...kp[1] }, [{ id: '01', credential: kp[0].credential }]);
    const peer = s.peer(h('01'), 'pairwise')!;
    const req = wire(protectRequest(c.peer(h('02'), 'pairwise')!, get()).message);
    assert.equal(unprotectRequest(peer, req).message.code, CODES.GET, 'with its kid context it verifies');
    // the same request with the kid context removed from the option (flags 0x19 -> 0x09, no s / Gid)
    const f = decodeOscoreOption(getOption(req, OPT.OSCORE)!);
    const stripped = { ...req, options: req.options.map((o) => (o.number === OPT.OSCORE ? { number: o.number, value: Buffer.concat([Buffer.from([0x08 | f.piv!.length]), f.piv!, f.kid!]) } : o)) };
    // a fresh server (no replay state), so only the missing kid context can reject it
    const fresh = base({ id: '02', ...kp[1] }, [{ id: '01', credential: kp[0].credential }]).peer(h('01'), 'pairwise')!;
    assert.throws(() => unprotectRequest(fresh, stripped), code('ERR_OSCORE_CONTEXT_NOT_FOUND'));
  });
});
