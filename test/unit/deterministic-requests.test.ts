// Deterministic Requests (draft-ietf-core-cacheable-oscore-02, editor's copy at core-wg/cacheable-oscore a551d2a):
// the draft's test vectors (Appendix "Test Vectors") reproduced from the parameters, then the rules of §3.4:
// determinism, the per-request key, the server's checks (Request-Hash recomputed, safe methods only, no replay
// window), and the response (group mode, own Partial IV, Request-Hash bound as Class I, outer 2.05 + Max-Age).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { decode, decodeCodeOptionsPayload, encode, encodeCodeOptionsPayload } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, CoapOption, getOption } from '../../src/coap/message';
import { OPT, decodeUint, encodeUint, isCritical, isNoCacheKey, isUnsafe, optionDef } from '../../src/coap/options';
import {
  GroupContext,
  MemorySequenceStore,
  OscoreError,
  ServerBinding,
  UnsafeDeterministicRequestError,
  answerOscoreError,
  computeNonce,
  createAead,
  decodeOscoreOption,
  encodeInfo,
  encodeOscoreOption,
  generateGroupKeyPair,
  hkdf,
  oscoreErrorResponse,
  protectRequest,
  protectResponse,
  unprotectRequest,
  unprotectResponse,
} from '../../src/oscore';
import { PADDING_OPTION, REQUEST_HASH_OPTION, encodeGroupAad, encodeGroupAadArray, isDeterministicRequest, padOptions } from '../../src/oscore/group';
import type { DeterministicRequester } from '../../src/oscore/group/deterministic';
import { oscoreClass } from '../../src/oscore/option-classes';
import { DET } from '../fixtures/oscore/cacheable-oscore-vectors';

const h = (x: string): Buffer => Buffer.from(x, 'hex');
const CLIENT_KEYS = generateGroupKeyPair();
const CLIENT2_KEYS = generateGroupKeyPair();

function server(ssn = 0, det: { senderId?: string; hashAlg?: number } = {}): GroupContext {
  return new GroupContext(
    {
      masterSecret: h(DET.masterSecret),
      masterSalt: h(DET.masterSalt),
      idContext: h(DET.idContext),
      senderId: h(DET.serverSenderId),
      privateKey: h(DET.serverPrivateKey),
      credential: h(DET.serverCredential),
      gmCredential: h(DET.gmCredential),
      members: [
        { senderId: h('25'), credential: CLIENT_KEYS.credential },
        { senderId: h('26'), credential: CLIENT2_KEYS.credential },
      ],
      deterministicClient: { senderId: h(det.senderId ?? DET.detSenderId), hashAlg: det.hashAlg ?? DET.detHashAlg },
    },
    { sequenceStore: new MemorySequenceStore(ssn) },
  );
}

/** A client member (the vectors do not name one: its own keys take no part in a Deterministic Request). */
function client(id = '25', keys = CLIENT_KEYS, ssn = 7): GroupContext {
  return new GroupContext(
    {
      masterSecret: h(DET.masterSecret),
      masterSalt: h(DET.masterSalt),
      idContext: h(DET.idContext),
      senderId: h(id),
      privateKey: keys.privateKey,
      credential: keys.credential,
      gmCredential: h(DET.gmCredential),
      members: [{ senderId: h(DET.serverSenderId), credential: h(DET.serverCredential) }],
      deterministicClient: { senderId: h(DET.detSenderId), hashAlg: DET.detHashAlg },
    },
    { sequenceStore: new MemorySequenceStore(ssn) },
  );
}

const plainRequest = (): CoapMessage => decode(h(DET.plainRequest));
const asMessage = (m: { code: number; options: CoapOption[]; payload: Buffer }): CoapMessage => ({ type: 'CON', messageId: 1, token: h('01'), ...m }) as CoapMessage;
const resolver = (g: GroupContext) => (kid: Buffer, kidContext: Buffer | undefined, group: boolean) => g.resolve(kid, kidContext, group);

/** Everything a member of the group can compute for the Deterministic Client (it holds the group keys). */
const detSenderKey = (): Buffer => hkdf('SHA-256', h(DET.masterSecret), h(DET.masterSalt), encodeInfo(h(DET.detSenderId), h(DET.idContext), 10, 'Key', 16), 16);
const ALGS = { aead: 10, groupEncryption: 10, signature: -8, pairwiseKeyAgreement: -27 };

/**
 * A request under the Deterministic Client's kid built by hand: `hash` is what goes into Request-Hash, `keyHash` what
 * the key is derived from. A member that holds the group keys can do this; the server's checks must catch it.
 */
function forge(code: number, options: CoapOption[], payload: Buffer, opts: { hash?: Buffer; keyHash?: Buffer; piv?: Buffer } = {}): CoapMessage {
  const g = server();
  const piv = opts.piv ?? h('00');
  const oscore = encodeOscoreOption({ piv, kid: h(DET.detSenderId), kidContext: h(DET.idContext) });
  const m = { nonce: computeNonce(h(DET.detSenderId), piv, g.commonIv), piv, pivId: h(DET.detSenderId), isRequest: true, requestKid: h(DET.detSenderId), requestPiv: piv, requestKidContext: h(DET.idContext), oscoreOption: oscore };
  const aadArray = encodeGroupAadArray(ALGS, m, Buffer.alloc(0), h(DET.gmCredential));
  const plaintext = encodeCodeOptionsPayload(code, options, payload);
  const real = crypto.createHash('sha256').update(detSenderKey()).update(aadArray).update(plaintext).digest();
  const keyHash = opts.keyHash ?? opts.hash ?? real;
  const key = hkdf('SHA-256', keyHash, detSenderKey(), encodeInfo(h(DET.detSenderId), h(DET.idContext), 10, 'Key', 16), 16);
  const ciphertext = createAead(10).encrypt(key, m.nonce, encodeGroupAad(aadArray), plaintext);
  return {
    type: 'CON', code: CODES.FETCH, messageId: 1, token: h('01'),
    options: [{ number: OPT.OSCORE, value: oscore }, { number: REQUEST_HASH_OPTION, value: opts.hash ?? real }],
    payload: ciphertext,
  };
}

function expectOscoreError(fn: () => unknown, code: string, responseCode?: string): OscoreError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof OscoreError, `expected OscoreError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (responseCode !== undefined) {
    const r = oscoreErrorResponse(caught);
    assert.equal(r && `${r.code >> 5}.${String(r.code & 31).padStart(2, '0')}`, responseCode);
  }
  return caught;
}

describe('Deterministic Requests (draft-ietf-core-cacheable-oscore-02)', function () {
  describe('Appendix "Test Vectors", derived then compared', function () {
    it('§3.4.1: the Deterministic Client\'s Sender Key (RFC 10021 §2.3 with its Sender ID), the aad_array with empty sender_cred, the hash H and the key K', function () {
      assert.equal(detSenderKey().toString('hex'), DET.detSenderKey);
      const oscore = encodeOscoreOption({ piv: h('00'), kid: h(DET.detSenderId), kidContext: h(DET.idContext) });
      assert.equal(oscore.toString('hex'), DET.requestOscoreOption);
      const m = { nonce: Buffer.alloc(0), piv: h('00'), pivId: h('dc'), isRequest: true, requestKid: h('dc'), requestPiv: h('00'), requestKidContext: h('dd11'), oscoreOption: oscore };
      const aadArray = encodeGroupAadArray(ALGS, m, Buffer.alloc(0), h(DET.gmCredential));
      assert.equal(aadArray.toString('hex'), DET.requestAadArray);
      const hash = crypto.createHash('sha256').update(detSenderKey()).update(aadArray).update(h(DET.requestPlaintext)).digest();
      assert.equal(hash.toString('hex'), DET.requestHash);
      assert.equal(hkdf('SHA-256', hash, detSenderKey(), encodeInfo(h('dc'), h('dd11'), 10, 'Key', 16), 16).toString('hex'), DET.requestKey);
      assert.equal(computeNonce(h('dc'), h('00'), server().commonIv).toString('hex'), DET.requestNonce);
    });

    it('§3.4.2: the Deterministic Request, byte for byte (outer FETCH, OSCORE 19 00 02 dd11 dc, Request-Hash, ciphertext)', function () {
      const { message, binding } = protectRequest(client().deterministicRequests(), plainRequest());
      assert.equal(encode(message as CoapMessage).toString('hex'), DET.request);
      assert.equal(binding.requestHash!.toString('hex'), DET.requestHash);
      assert.ok(isDeterministicRequest(message));
    });

    it('§3.4.3 / §3.4.4: the server verifies it and answers in group mode with its own Partial IV, Request-Hash elided, outer Max-Age 3600: byte for byte', function () {
      const s = server(0);
      const v = unprotectRequest(resolver(s), decode(h(DET.request)));
      assert.equal(v.message.code, CODES.GET);
      assert.deepEqual(v.message.options.map((o) => [o.number, o.value.toString()]), [[OPT.URI_PATH, 'helloWorld']]);
      assert.equal(v.context.recipientId.toString('hex'), DET.detSenderId);
      // the unprotected response of the vectors carries Request-Hash (step 2); protecting elides it (step 7)
      const plain = decode(h(DET.plainResponse));
      const res = protectResponse(v.binding, plain);
      const wire = encode(res as CoapMessage).toString('hex');
      assert.equal(wire, DET.response);
      assert.equal(getOption(res as CoapMessage, OPT.OSCORE)!.toString('hex'), DET.responseOscoreOption);
    });

    it('§3.4.4 (client): the client verifies the response of the vectors and attributes it to the server 0x52', function () {
      const { binding } = protectRequest(client().deterministicRequests(), plainRequest());
      const r = unprotectResponse(binding, decode(h(DET.response)));
      assert.equal(r.responder.recipientId.toString('hex'), DET.serverSenderId);
      assert.equal(r.responder.mode, 'group');
      assert.equal(r.message.code, CODES.CONTENT);
      assert.equal(r.message.payload.toString(), '. ID: 42');
      assert.equal(decodeUint(getOption(r.message, OPT.MAX_AGE)!), 3600);
      assert.equal(getOption(r.message, REQUEST_HASH_OPTION), undefined);
    });
  });

  describe('§3.4.2 composition', function () {
    it('determinism: two protections of the same plain request, by one member or by two different members, are byte-identical, and use no sequence number', function () {
      const a = client('25', CLIENT_KEYS, 7);
      const b = client('26', CLIENT2_KEYS, 500);
      const one = encode(protectRequest(a.deterministicRequests(), plainRequest()).message as CoapMessage);
      const two = encode(protectRequest(a.deterministicRequests(), plainRequest()).message as CoapMessage);
      const three = encode(protectRequest(b.deterministicRequests(), plainRequest()).message as CoapMessage);
      assert.ok(one.equals(two));
      assert.ok(one.equals(three));
      assert.equal(a.sequence.peek(), 7);
      assert.equal(b.sequence.peek(), 500);
    });

    it('a different plain request gives different bytes and a different Request-Hash (path, query, ETag, FETCH body, method)', function () {
      const det = client().deterministicRequests();
      const base: CoapMessage = { ...plainRequest() };
      const variants: CoapMessage[] = [
        base,
        { ...base, options: [{ number: OPT.URI_PATH, value: Buffer.from('helloworld') }] },
        { ...base, options: [...base.options, { number: OPT.URI_QUERY, value: Buffer.from('a=1') }] },
        { ...base, options: [{ number: OPT.ETAG, value: h('01') }, ...base.options] },
        { ...base, options: [{ number: OPT.ETAG, value: h('02') }, ...base.options] },
        { ...base, code: CODES.FETCH, payload: Buffer.from('x') },
        { ...base, code: CODES.FETCH, payload: Buffer.from('y') },
      ];
      const out = variants.map((m) => protectRequest(det, m));
      const wires = new Set(out.map((o) => o.message.payload.toString('hex')));
      const hashes = new Set(out.map((o) => o.binding.requestHash!.toString('hex')));
      assert.equal(wires.size, variants.length);
      assert.equal(hashes.size, variants.length);
    });

    it('a non-safe method is refused (POST, PUT, DELETE, PATCH, iPATCH), as are Echo and an Observe other than 0 or 1', function () {
      const det = client().deterministicRequests();
      for (const code of [CODES.POST, CODES.PUT, CODES.DELETE, 0x06, 0x07]) {
        expectOscoreError(() => protectRequest(det, { ...plainRequest(), code }), 'ERR_OSCORE_INVALID_INPUT');
      }
      expectOscoreError(() => protectRequest(det, { ...plainRequest(), options: [...plainRequest().options, { number: OPT.ECHO, value: h('0102') }] }), 'ERR_OSCORE_INVALID_INPUT');
      expectOscoreError(() => protectRequest(det, { ...plainRequest(), options: [{ number: OPT.OBSERVE, value: encodeUint(2) }, ...plainRequest().options] }), 'ERR_OSCORE_INVALID_INPUT');
      // a registration is a Deterministic Request like any other (§3.1)
      assert.equal(protectRequest(det, { ...plainRequest(), options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, ...plainRequest().options] }).message.code, CODES.FETCH);
    });

    it('configuration: the Deterministic Client\'s Sender ID is no member\'s and not our own; the group needs both modes; a known hash', function () {
      assert.throws(() => server(0, { senderId: '25' }), /Deterministic Client's Sender ID/);
      assert.throws(() => server(0, { senderId: DET.serverSenderId }), /our own/);
      assert.throws(() => server(0, { hashAlg: -999 }), /hash algorithm/);
      assert.throws(
        () => new GroupContext({ masterSecret: h(DET.masterSecret), idContext: h('dd11'), senderId: h('52'), privateKey: h(DET.serverPrivateKey), credential: h(DET.serverCredential), members: [], aeadAlg: null, deterministicClient: { senderId: h('dc') } }),
        /both the pairwise mode and the group mode/,
      );
      const plain = new GroupContext({ masterSecret: h(DET.masterSecret), idContext: h('dd11'), senderId: h('52'), privateKey: h(DET.serverPrivateKey), credential: h(DET.serverCredential), members: [] });
      assert.throws(() => plain.deterministicRequests(), /no Deterministic Client/);
      assert.equal(plain.deterministicClient, undefined);
    });
  });

  describe('§3.4.3 server processing', function () {
    it('a flipped byte anywhere in the Request-Hash is rejected: 4.00 "Decryption failed"', function () {
      const wire = h(DET.request);
      const at = wire.indexOf(h(DET.requestHash));
      for (const i of [0, 13, 31]) {
        const bad = Buffer.from(wire);
        bad[at + i] ^= 0x01;
        expectOscoreError(() => unprotectRequest(resolver(server()), decode(bad)), 'ERR_OSCORE_DECRYPT', '4.00');
      }
    });

    it('a flipped ciphertext byte is rejected: 4.00 "Decryption failed"', function () {
      for (const i of [1, 10, 20]) {
        const bad = Buffer.from(h(DET.request));
        bad[bad.length - i] ^= 0x80;
        expectOscoreError(() => unprotectRequest(resolver(server()), decode(bad)), 'ERR_OSCORE_DECRYPT', '4.00');
      }
    });

    it('a request encrypted under a key from another hash than its Request-Hash (a guessed tag) is rejected after decryption: 4.00 with Max-Age 0', function () {
      const other = crypto.randomBytes(32);
      const bad = forge(CODES.GET, [{ number: OPT.URI_PATH, value: Buffer.from('helloWorld') }], Buffer.alloc(0), { hash: other, keyHash: other });
      const err = expectOscoreError(() => unprotectRequest(resolver(server()), bad), 'ERR_OSCORE_DECRYPT', '4.00');
      assert.match(err.message, /Request-Hash does not match/);
      const r = oscoreErrorResponse(err)!;
      assert.equal(decodeUint(r.options.find((o) => o.number === OPT.MAX_AGE)!.value), 0);
      assert.equal(r.payload.toString(), 'Decryption failed');
    });

    it('a correctly built Deterministic Request with an unsafe method (POST) is discarded and answered with a protected 4.01 that the client verifies (§3.4.3)', function () {
      // sanity: the same forgery with GET is accepted, so the refusal is about the method
      const ok = forge(CODES.GET, [{ number: OPT.URI_PATH, value: Buffer.from('x') }], Buffer.alloc(0));
      assert.equal(unprotectRequest(resolver(server()), ok).message.code, CODES.GET);
      const post = forge(CODES.POST, [{ number: OPT.URI_PATH, value: Buffer.from('x') }], Buffer.from('on'));
      const err = expectOscoreError(() => unprotectRequest(resolver(server()), post), 'ERR_OSCORE_NOT_SAFE');
      assert.ok(err instanceof UnsafeDeterministicRequestError);
      // no unprotected answer exists for it: the SHOULD is a protected 4.01
      assert.equal(oscoreErrorResponse(err), undefined);
      // a member that ignores §3.4.3 (compose skips the client's own check) sends POST; the server's answer is a
      // response to a Deterministic Request (§3.4.4): group mode, its kid and own Partial IV, outer 2.05 + Max-Age
      const det = client().deterministicRequests() as DeterministicRequester;
      const sent = det.compose({ code: CODES.POST, options: [{ number: OPT.URI_PATH, value: Buffer.from('x') }], payload: Buffer.from('on') });
      let caught: unknown;
      try {
        unprotectRequest(resolver(server(9)), asMessage(sent.message));
      } catch (e) {
        caught = e;
      }
      const answer = answerOscoreError(caught) as CoapMessage;
      assert.equal(answer.code, CODES.CONTENT);
      assert.equal(decodeUint(getOption(answer, OPT.MAX_AGE)!), 60);
      const f = decodeOscoreOption(getOption(answer, OPT.OSCORE)!);
      assert.deepEqual([f.group, f.kid!.toString('hex'), f.piv!.toString('hex')], [true, DET.serverSenderId, '09']);
      const v = unprotectResponse(sent.binding, answer);
      assert.equal(v.message.code, CODES.UNAUTHORIZED);
      assert.equal(v.responder.recipientId.toString('hex'), DET.serverSenderId);
      assert.equal(v.responder.mode, 'group');
      // and it is bound to that request: another member's binding for a GET does not take it
      expectOscoreError(() => unprotectResponse(protectRequest(det, plainRequest()).binding, answer), 'ERR_OSCORE_SIGNATURE');
    });

    it('the Deterministic Client\'s kid without Request-Hash finds no context (4.01); with the Group Flag it is not processed (4.02)', function () {
      const m = decode(h(DET.request));
      const noHash = { ...m, options: m.options.filter((o) => o.number !== REQUEST_HASH_OPTION) };
      expectOscoreError(() => unprotectRequest(resolver(server()), noHash), 'ERR_OSCORE_CONTEXT_NOT_FOUND', '4.01');
      const grouped = { ...m, options: m.options.map((o) => (o.number === OPT.OSCORE ? { number: OPT.OSCORE, value: encodeOscoreOption({ piv: h('00'), kid: h('dc'), kidContext: h('dd11'), group: true }) } : o)) };
      expectOscoreError(() => unprotectRequest(resolver(server()), grouped), 'ERR_OSCORE_DECODE', '4.02');
    });

    it('§3.4.2 step 1: a Deterministic Request whose Partial IV is not 0 is rejected, even one correctly built on that Partial IV: 4.00 "Decryption failed"', function () {
      const path = [{ number: OPT.URI_PATH, value: Buffer.from('x') }];
      // sanity: the same forgery with Partial IV 0 is accepted, so the refusal is about the Partial IV
      assert.equal(unprotectRequest(resolver(server()), forge(CODES.GET, path, Buffer.alloc(0))).message.code, CODES.GET);
      for (const piv of [h('01'), h('0000'), h('ff')]) {
        const bad = forge(CODES.GET, path, Buffer.alloc(0), { piv });
        const err = expectOscoreError(() => unprotectRequest(resolver(server()), bad), 'ERR_OSCORE_DECRYPT', '4.00');
        assert.match(err.message, /Partial IV other than 0/);
      }
    });

    it('bad input under the Deterministic Client\'s kid (2000 random mutations of Request-Hash, ciphertext and OSCORE option, truncations, extensions): only typed OscoreErrors, and nothing but the original is accepted', function () {
      const s = server();
      const original = decode(h(DET.request));
      // a fixed seed, so a failure can be replayed
      let seed = 0x9e3779b9;
      const rnd = (n: number) => {
        seed = (seed * 1103515245 + 12345) >>> 0;
        return seed % n;
      };
      const mutate = (b: Buffer): Buffer => {
        const out = Buffer.from(b);
        switch (rnd(3)) {
          case 0:
            if (out.length) out[rnd(out.length)] ^= 1 << rnd(8);
            return out;
          case 1:
            return out.subarray(0, rnd(out.length + 1));
          default:
            return Buffer.concat([out, Buffer.from([rnd(256)])]);
        }
      };
      let accepted = 0;
      for (let i = 0; i < 2000; i++) {
        const which = rnd(3);
        const m: CoapMessage = {
          ...original,
          options: original.options.map((o) => ((which === 0 && o.number === REQUEST_HASH_OPTION) || (which === 1 && o.number === OPT.OSCORE) ? { number: o.number, value: mutate(o.value) } : o)),
          payload: which === 2 ? mutate(original.payload) : original.payload,
        };
        try {
          unprotectRequest(resolver(s), m);
          accepted++;
        } catch (err) {
          assert.ok(err instanceof OscoreError, `mutation ${i}: ${String(err)}`);
        }
      }
      // a truncation to the full length leaves the bytes as they were: exactly those (replayed from the same seed)
      // may be accepted, nothing else
      const originalAccepted = (() => {
        let n = 0;
        seed = 0x9e3779b9;
        for (let i = 0; i < 2000; i++) {
          const which = rnd(3);
          const value = which === 0 ? original.options.find((o) => o.number === REQUEST_HASH_OPTION)!.value : which === 1 ? original.options.find((o) => o.number === OPT.OSCORE)!.value : original.payload;
          if (mutate(value).equals(value)) n++;
        }
        return n;
      })();
      assert.equal(accepted, originalAccepted);
    });

    it('no replay window: the same Deterministic Request is served again, and every response carries a new Partial IV of the server', function () {
      const s = server(40);
      const pivs: number[] = [];
      for (let i = 0; i < 3; i++) {
        const v = unprotectRequest(resolver(s), decode(h(DET.request)));
        const res = protectResponse(v.binding, { code: CODES.CONTENT, options: [], payload: Buffer.from('x') });
        const f = decodeOscoreOption(getOption(res as CoapMessage, OPT.OSCORE)!);
        assert.equal(f.group, true);
        assert.equal(f.kid!.toString('hex'), DET.serverSenderId);
        pivs.push(f.piv!.readUIntBE(0, f.piv!.length));
      }
      assert.deepEqual(pivs, [40, 41, 42]);
      // the Recipient Contexts of real members are untouched (their windows saw nothing)
      const windows = s.replayWindows();
      assert.deepEqual(Object.keys(windows).sort(), ['25', '26']);
      assert.ok(Object.values(windows).every((w) => w.highest === null));
    });
  });

  describe('§3.1 Inner Observe (§3.4.2 step 5, §3.4.4 steps 3 and 8, client step 4)', function () {
    const observed = (o: boolean) => ({ ...plainRequest(), options: [...(o ? [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }] : []), ...plainRequest().options] });
    const withInnerObserve = (id = '25', keys = CLIENT_KEYS) => {
      const c = client(id, keys);
      return new GroupContext(
        { masterSecret: h(DET.masterSecret), masterSalt: h(DET.masterSalt), idContext: h(DET.idContext), senderId: h(id), privateKey: keys.privateKey, credential: keys.credential, gmCredential: h(DET.gmCredential), members: [{ senderId: h(DET.serverSenderId), credential: h(DET.serverCredential) }], deterministicClient: { senderId: h(DET.detSenderId), hashAlg: DET.detHashAlg, innerObserve: true } },
        { sequenceStore: new MemorySequenceStore(c.sequence.peek()) },
      );
    };
    /** The plaintext of a response, decrypted by hand (unprotectResponse drops an Inner-only Observe, client step 4). */
    function responsePlaintext(binding: ReturnType<typeof protectRequest>['binding'], res: CoapMessage): Buffer {
      const f = decodeOscoreOption(getOption(res, OPT.OSCORE)!);
      const peer = binding.context.responder(f.kid, true)!;
      return peer.open(res.payload, { nonce: peer.recipientNonce(f.piv!), piv: f.piv!, pivId: f.kid!, isRequest: false, requestKid: binding.kid, requestPiv: binding.piv, requestKidContext: binding.kidContext, oscoreOption: getOption(res, OPT.OSCORE)!, classI: binding.classI });
    }

    it('with innerObserve, an observing and a non-observing member send the same ciphertext and Request-Hash; only the observer adds an Outer Observe 0 (step 7)', function () {
      const a = protectRequest(withInnerObserve().deterministicRequests(), observed(false));
      const b = protectRequest(withInnerObserve('26', CLIENT2_KEYS).deterministicRequests(), observed(true));
      assert.ok(a.message.payload.equals(b.message.payload));
      assert.ok(a.binding.requestHash!.equals(b.binding.requestHash!));
      assert.equal(getOption(a.message, OPT.OBSERVE), undefined);
      assert.equal(getOption(b.message, OPT.OBSERVE)!.length, 0);
      assert.equal(a.binding.observe, false);
      assert.equal(b.binding.observe, true);
      // without innerObserve (the default, as in the draft's vectors) the two differ
      const c = protectRequest(client().deterministicRequests(), observed(false));
      const d = protectRequest(client('26', CLIENT2_KEYS).deterministicRequests(), observed(true));
      assert.ok(!c.message.payload.equals(d.message.payload));
      assert.ok(c.message.payload.equals(h(DET.requestCiphertext)));
    });

    it('server: Inner Observe only = no observation; a successful response of an observable resource carries an Inner Observe and no Outer one; the client ignores it', function () {
      const sent = protectRequest(withInnerObserve().deterministicRequests(), observed(false));
      const v = unprotectRequest(resolver(server(3)), asMessage(sent.message));
      assert.equal(getOption(v.message, OPT.OBSERVE), undefined, 'the application sees a plain GET');
      assert.equal(v.binding.observe, false);
      const res = protectResponse(v.binding, { code: CODES.CONTENT, options: [], payload: Buffer.from('on') }, { observable: true }) as CoapMessage;
      assert.equal(getOption(res, OPT.OBSERVE), undefined, 'step 8: no Outer Observe');
      assert.equal(res.code, CODES.CONTENT);
      assert.deepEqual(decodeCodeOptionsPayload(responsePlaintext(sent.binding, res)).options.filter((o) => o.number === OPT.OBSERVE).length, 1, 'step 3: an Inner Observe');
      const got = unprotectResponse(sent.binding, res);
      assert.equal(getOption(got.message, OPT.OBSERVE), undefined, 'client step 4: silently ignored');
      assert.equal(got.message.payload.toString(), 'on');
      // not observable, or an error: no Inner Observe
      const v2 = unprotectRequest(resolver(server(4)), asMessage(sent.message));
      const plain = protectResponse(v2.binding, { code: CODES.CONTENT, options: [], payload: Buffer.from('on') }) as CoapMessage;
      const sent2 = protectRequest(withInnerObserve().deterministicRequests(), observed(false));
      assert.equal(decodeCodeOptionsPayload(responsePlaintext(sent2.binding, plain)).options.some((o) => o.number === OPT.OBSERVE), false);
    });

    it('server: Inner and Outer Observe = a registration; notifications have outer 2.05, Max-Age and Observe, each its own Partial IV; the observing client takes them in order and refuses a replay', function () {
      const s = server(20);
      const sent = protectRequest(withInnerObserve().deterministicRequests(), observed(true));
      const v = unprotectRequest(resolver(s), asMessage(sent.message));
      assert.equal(getOption(v.message, OPT.OBSERVE)!.length, 0, 'the application sees Observe 0');
      assert.equal(v.binding.observe, true);
      const notes = [5, 6, 7].map((n) => protectResponse(v.binding, { code: CODES.CONTENT, options: [{ number: OPT.OBSERVE, value: encodeUint(n) }], payload: Buffer.from(`n${n}`) }) as CoapMessage);
      for (const n of notes) {
        assert.equal(n.code, CODES.CONTENT);
        assert.ok(getOption(n, OPT.OBSERVE) !== undefined);
        assert.equal(decodeUint(getOption(n, OPT.MAX_AGE)!), 60);
      }
      const got = notes.map((n) => unprotectResponse(sent.binding, n));
      assert.deepEqual(got.map((g) => [g.notification, g.message.payload.toString(), g.piv]), [[true, 'n5', 20], [true, 'n6', 21], [true, 'n7', 22]]);
      expectOscoreError(() => unprotectResponse(sent.binding, notes[1]), 'ERR_OSCORE_REPLAY');
      // a non-observing member's binding for the same bytes refuses a notification (Outer Observe): a proxy strips it
      const plainBinding = protectRequest(withInnerObserve('26', CLIENT2_KEYS).deterministicRequests(), observed(false)).binding;
      expectOscoreError(() => unprotectResponse(plainBinding, notes[2]), 'ERR_OSCORE_UNEXPECTED_OBSERVE');
      const stripped = { ...notes[2], options: notes[2].options.filter((o) => o.number !== OPT.OBSERVE) };
      assert.equal(unprotectResponse(plainBinding, stripped).message.payload.toString(), 'n7');
    });

    it('a deregistration (Observe 1) has the registration\'s bytes with an Outer Observe 1 (the Inner one stays 0); the server sees Observe 1 and registers nothing', function () {
      const reg = protectRequest(withInnerObserve().deterministicRequests(), observed(true));
      const dereg = protectRequest(withInnerObserve().deterministicRequests(), { ...plainRequest(), options: [{ number: OPT.OBSERVE, value: encodeUint(1) }, ...plainRequest().options] });
      assert.ok(dereg.message.payload.equals(reg.message.payload));
      assert.equal(decodeUint(getOption(dereg.message, OPT.OBSERVE)!), 1);
      assert.equal(dereg.binding.observe, false);
      const v = unprotectRequest(resolver(server(2)), asMessage(dereg.message));
      assert.equal(decodeUint(getOption(v.message, OPT.OBSERVE)!), 1);
      assert.equal(v.binding.observe, false);
      // without innerObserve in the group, an observer still puts the Inner Observe 0 in (step 5), and so does its deregistration
      const a = protectRequest(client().deterministicRequests(), observed(true));
      const b = protectRequest(client().deterministicRequests(), { ...plainRequest(), options: [{ number: OPT.OBSERVE, value: encodeUint(1) }, ...plainRequest().options] });
      assert.ok(a.message.payload.equals(b.message.payload));
    });
  });

  describe('App. A the Padding option', function () {
    const padded = (block: number, id = '25', keys = CLIENT_KEYS) =>
      new GroupContext({ masterSecret: h(DET.masterSecret), masterSalt: h(DET.masterSalt), idContext: h(DET.idContext), senderId: h(id), privateKey: keys.privateKey, credential: keys.credential, gmCredential: h(DET.gmCredential), members: [{ senderId: h(DET.serverSenderId), credential: h(DET.serverCredential) }], deterministicClient: { senderId: h(DET.detSenderId), hashAlg: DET.detHashAlg, padding: block } });
    const get = (path: string, query: string[] = []) => ({ code: CODES.GET, options: [{ number: OPT.URI_PATH, value: Buffer.from(path) }, ...query.map((q) => ({ number: OPT.URI_QUERY, value: Buffer.from(q) }))], payload: Buffer.alloc(0) });

    it('App. A.1: option 64988, Elective, Safe-to-Forward, NoCacheKey, repeatable, Class E; one empty Padding option after Uri-Path costs 3 bytes (header + 2-byte extended delta)', function () {
      assert.equal(PADDING_OPTION, 64988);
      assert.equal(isCritical(PADDING_OPTION), false);
      assert.equal(isUnsafe(PADDING_OPTION), false);
      assert.equal(isNoCacheKey(PADDING_OPTION), true);
      assert.equal(optionDef('Padding')!.repeatable, true);
      assert.equal(oscoreClass(PADDING_OPTION), 'E');
      const bare = encodeCodeOptionsPayload(CODES.GET, [{ number: OPT.URI_PATH, value: Buffer.from('x') }], Buffer.alloc(0));
      const one = encodeCodeOptionsPayload(CODES.GET, [{ number: OPT.URI_PATH, value: Buffer.from('x') }, { number: PADDING_OPTION, value: Buffer.alloc(0) }], Buffer.alloc(0));
      // delta 64988 - 11 = 64977 = 269 + 0xfcc4: nibble 14, then 0xfcc4; length 0
      assert.equal(one.toString('hex'), bare.toString('hex') + 'e0fcc4');
    });

    it('App. A.2: padOptions reaches the next multiple of the block for every length (with a second Padding where one cannot), all values zero', function () {
      for (const block of [1, 2, 7, 16, 32, 64, 100]) {
        for (let len = 0; len < 300; len += 1) {
          const payload = Buffer.alloc(len, 0x41);
          const options = padOptions(CODES.GET, [{ number: OPT.URI_PATH, value: Buffer.from('p') }], payload, block);
          const pads = options.filter((o) => o.number === PADDING_OPTION);
          assert.ok(pads.length >= 1 && pads.length <= 2);
          assert.ok(pads.every((o) => o.value.every((b) => b === 0)));
          const bare = encodeCodeOptionsPayload(CODES.GET, [{ number: OPT.URI_PATH, value: Buffer.from('p') }], payload).length;
          const total = encodeCodeOptionsPayload(CODES.GET, options, payload).length;
          assert.equal(total % block, 0, `block ${block}, length ${len}: ${total}`);
          assert.ok(total > bare && total - bare <= block + 15, `block ${block}, length ${len}: ${bare} -> ${total}`);
        }
      }
      // 16 extra bytes need two options (one reaches 15 with 12 bytes of value, then 17 with 13)
      const twoNeeded = padOptions(CODES.GET, [], Buffer.alloc(0), 17);
      assert.equal(encodeCodeOptionsPayload(CODES.GET, twoNeeded, Buffer.alloc(0)).length, 17);
      assert.equal(twoNeeded.length, 2);
    });

    it('requests of different plaintext lengths give ciphertexts of one length with padding 32, of different lengths without; the server strips the option and still checks H over the padded plaintext', function () {
      const requests = [get('a'), get('helloWorld'), get('light', ['on']), get('lights', ['room=1', 'x'])];
      const lengths = (g: GroupContext) => requests.map((r) => protectRequest(g.deterministicRequests(), r).message.payload.length);
      assert.deepEqual(new Set(lengths(padded(32))), new Set([32 + 8]), 'one ciphertext length (32 + the 8-byte tag)');
      assert.equal(new Set(lengths(client())).size, 4, 'without padding the lengths differ');
      // every member with the same block size sends the same bytes
      const a = protectRequest(padded(32).deterministicRequests(), requests[1]);
      const b = protectRequest(padded(32, '26', CLIENT2_KEYS).deterministicRequests(), requests[1]);
      assert.ok(a.message.payload.equals(b.message.payload));
      const v = unprotectRequest(resolver(server(1)), asMessage(a.message));
      assert.equal(v.message.options.some((o) => o.number === PADDING_OPTION), false, 'App. A.2: ignored (removed) at the server');
      assert.deepEqual(v.message.options.filter((o) => o.number === OPT.URI_PATH).map((o) => o.value.toString()), ['helloWorld']);
      // a padded request answers like the unpadded one, and the client verifies the answer
      const res = protectResponse(v.binding, { code: CODES.CONTENT, options: [], payload: Buffer.from('hi') }) as CoapMessage;
      assert.equal(unprotectResponse(a.binding, res).message.payload.toString(), 'hi');
    });

    it('configuration: the block size is an integer from 0 to 1024', function () {
      for (const bad of [-1, 1.5, 1025]) assert.throws(() => padded(bad), /padding block size/);
      assert.equal(padded(0).deterministicClient!.padding, 0);
    });
  });

  describe('§3.4.4 the response', function () {
    function answer(options: CoapOption[], ssn = 0) {
      const v = unprotectRequest(resolver(server(ssn)), decode(h(DET.request)));
      return { v, res: protectResponse(v.binding, { code: CODES.CONTENT, options, payload: Buffer.from('body') }) as CoapMessage };
    }

    it('outer code 2.05 and an outer Max-Age equal to the inner one, or 60 without one; an inner Max-Age 0 is refused', function () {
      const a = answer([]).res;
      assert.equal(a.code, CODES.CONTENT);
      assert.equal(decodeUint(getOption(a, OPT.MAX_AGE)!), 60);
      const b = answer([{ number: OPT.MAX_AGE, value: encodeUint(5) }]).res;
      assert.equal(decodeUint(getOption(b, OPT.MAX_AGE)!), 5);
      const v = unprotectRequest(resolver(server()), decode(h(DET.request)));
      expectOscoreError(() => protectResponse(v.binding, { code: CODES.CONTENT, options: [{ number: OPT.MAX_AGE, value: encodeUint(0) }], payload: Buffer.alloc(0) }), 'ERR_OSCORE_INVALID_INPUT');
      expectOscoreError(() => protectResponse(v.binding, { code: CODES.CONTENT, options: [], payload: Buffer.alloc(0) }, { partialIv: false }), 'ERR_OSCORE_INVALID_INPUT');
      expectOscoreError(() => protectResponse(v.binding, { code: CODES.CONTENT, options: [], payload: Buffer.alloc(0) }, { mode: 'pairwise' }), 'ERR_OSCORE_INVALID_INPUT');
    });

    it('the client rejects a response whose Request-Hash is another request\'s, a response bound to another Deterministic Request, a response without kid, and one without the Group Flag', function () {
      const det = client().deterministicRequests();
      const { res } = answer([]);
      // a carried Request-Hash equal to the request's is accepted and removed; another value is rejected
      const same = { ...res, options: [...res.options, { number: REQUEST_HASH_OPTION, value: h(DET.requestHash) }] };
      assert.equal(unprotectResponse(protectRequest(det, plainRequest()).binding, same).message.payload.toString(), 'body');
      const other = { ...res, options: [...res.options, { number: REQUEST_HASH_OPTION, value: Buffer.alloc(32, 1) }] };
      expectOscoreError(() => unprotectResponse(protectRequest(det, plainRequest()).binding, other), 'ERR_OSCORE_DECODE');
      // the response to "helloWorld" offered as the response to another deterministic request: Request-Hash is in the AAD
      const otherRequest = protectRequest(det, { ...plainRequest(), options: [{ number: OPT.URI_PATH, value: Buffer.from('other') }] });
      expectOscoreError(() => unprotectResponse(otherRequest.binding, res), 'ERR_OSCORE_SIGNATURE');
      // no kid: the client cannot tell which server answered (§3.4.5)
      const f = decodeOscoreOption(getOption(res, OPT.OSCORE)!);
      const noKid = { ...res, options: res.options.map((o) => (o.number === OPT.OSCORE ? { number: OPT.OSCORE, value: encodeOscoreOption({ piv: f.piv, group: true }) } : o)) };
      expectOscoreError(() => unprotectResponse(protectRequest(det, plainRequest()).binding, noKid), 'ERR_OSCORE_CONTEXT_NOT_FOUND');
      // without the Group Flag (a pairwise-mode response): §3.4.4 step 4 says group mode, so no Recipient Context takes it
      const pairwiseFlag = { ...res, options: res.options.map((o) => (o.number === OPT.OSCORE ? { number: OPT.OSCORE, value: encodeOscoreOption({ piv: f.piv, kid: f.kid }) } : o)) };
      expectOscoreError(() => unprotectResponse(protectRequest(det, plainRequest()).binding, pairwiseFlag), 'ERR_OSCORE_CONTEXT_NOT_FOUND');
      // Request-Hash is not repeatable (§3.3): a second copy (either value) is rejected, not passed on unauthenticated
      for (const second of [h(DET.requestHash), Buffer.alloc(32, 2)]) {
        const twice = { ...res, options: [...res.options, { number: REQUEST_HASH_OPTION, value: h(DET.requestHash) }, { number: REQUEST_HASH_OPTION, value: second }] };
        const err = expectOscoreError(() => unprotectResponse(protectRequest(det, plainRequest()).binding, twice), 'ERR_OSCORE_DECODE');
        assert.match(err.message, /more than one Request-Hash/);
      }
      // and the genuine response still verifies on a fresh binding (the rejections above were about the changes)
      assert.equal(unprotectResponse(protectRequest(det, plainRequest()).binding, res).responder.recipientId.toString('hex'), DET.serverSenderId);
    });

    it('§3.4.4 step 5: the client rejects a response without the server\'s own Partial IV (on the request nonce), even one genuinely signed by the server', function () {
      // A server member that ignores step 5: its binding lets it reuse the request nonce; the response is otherwise
      // correct (group mode, kid, Request-Hash as Class I), so only the missing Partial IV is wrong with it.
      const { v } = answer([]);
      const b = v.binding;
      const rogue = new ServerBinding({ context: b.context, kid: b.kid, piv: b.piv, nonce: b.nonce, ...(b.kidContext ? { kidContext: b.kidContext } : {}), observe: false, requestFresh: true, ...(b.classI ? { classI: b.classI } : {}) });
      const res = protectResponse(rogue, { code: CODES.CONTENT, options: [], payload: Buffer.from('body') }, { partialIv: false }) as CoapMessage;
      assert.equal(decodeOscoreOption(getOption(res, OPT.OSCORE)!).piv, undefined);
      const det = client().deterministicRequests();
      const binding = protectRequest(det, plainRequest()).binding;
      const err = expectOscoreError(() => unprotectResponse(binding, res), 'ERR_OSCORE_DECODE');
      assert.match(err.message, /without the server's Partial IV/);
      assert.equal(binding.done, false);
    });
  });
});
