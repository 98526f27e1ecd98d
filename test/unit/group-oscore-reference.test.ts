// Group OSCORE (RFC 10021) against the reference exchange in test/fixtures/oscore/group-reference.ts: the context
// is derived from the RFC's rules, the messages protected by protect.ts through the GroupContext associations,
// and the bytes compared afterwards, never fed in.

import assert from 'node:assert/strict';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupContext, MemorySequenceStore, encodeCcs, parseCcs, protectRequest, protectResponse, publicKeyOf, sharedSecret, unprotectRequest, unprotectResponse } from '../../src/oscore';
import { COSE_ALG, COSE_CRV, COSE_KTY } from '../../src/oscore/group';
import { REF } from '../fixtures/oscore/group-reference';

const h = (x: string): Buffer => Buffer.from(x, 'hex');
type Name = keyof typeof REF.members;
const NAMES = Object.keys(REF.members) as Name[];
const ccs = (n: Name): Buffer => encodeCcs({ kty: COSE_KTY.OKP, alg: COSE_ALG.EdDSA, crv: COSE_CRV.Ed25519, x: h(REF.members[n].pub) });

function member(n: Name, ssn = 0): GroupContext {
  return new GroupContext(
    {
      masterSecret: h(REF.masterSecret),
      masterSalt: h(REF.masterSalt),
      idContext: h(REF.gid),
      senderId: h(REF.members[n].id),
      privateKey: h(REF.members[n].priv),
      credential: ccs(n),
      members: NAMES.filter((o) => o !== n).map((o) => ({ senderId: h(REF.members[o].id), credential: ccs(o) })),
      gmCredential: h(REF.gmCred),
    },
    { sequenceStore: new MemorySequenceStore(ssn) },
  );
}

const getLight = (): CoapMessage => ({ type: 'NON', code: CODES.GET, messageId: 0x1234, token: h('cafe0001'), options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) });
const content = (mid: number): CoapMessage => ({ type: 'NON', code: CODES.CONTENT, messageId: mid, token: h('cafe0001'), options: [{ number: OPT.CONTENT_FORMAT, value: Buffer.alloc(0) }], payload: Buffer.from('s1: on') });

describe('Group OSCORE reference exchange (RFC 10021)', function () {
  it('RFC 8032 public keys and the CCS layout: Ed25519 public keys from the seeds; CCS bytes as in the reference', function () {
    for (const n of NAMES) {
      assert.equal(publicKeyOf('Ed25519', h(REF.members[n].priv)).x.toString('hex'), REF.members[n].pub, n);
      assert.equal(ccs(n).toString('hex'), REF.ccsPrefix + REF.members[n].pub, n);
      assert.equal(parseCcs(ccs(n)).x.toString('hex'), REF.members[n].pub);
    }
  });

  it('§2.1.4 / §2.3: the Common IV', function () {
    assert.equal(member('client').commonIv.toString('hex'), REF.commonIv);
  });

  it('§2.5.1 / §2.5.2: the ECDH shared secret of Ed25519 keys mapped to X25519, the same from both ends', function () {
    const pub = (n: Name) => parseCcs(ccs(n));
    for (const s of ['s1', 's2', 's3'] as const) {
      assert.equal(sharedSecret(pub('client'), h(REF.members.client.priv), pub(s)).toString('hex'), REF.sharedSecret[s], s);
      assert.equal(sharedSecret(pub(s), h(REF.members[s].priv), pub('client')).toString('hex'), REF.sharedSecret[s], `${s} side`);
    }
  });

  it('§7.1: the group-mode request, byte for byte (OSCORE option 39 14 08 <Gid> 25, ciphertext ‖ encrypted countersignature)', function () {
    const client = member('client', 20);
    const { message } = protectRequest(client.groupRequests(), getLight());
    assert.equal(encode(message as CoapMessage).toString('hex'), REF.request);
  });

  it('§7.2 / §7.3: s1 verifies the request and answers in group mode, byte for byte', function () {
    const s1 = member('s1');
    const v = unprotectRequest((kid, kidContext, group) => s1.resolve(kid, kidContext, group), decode(h(REF.request)));
    assert.equal(v.context.mode, 'group');
    assert.equal(v.context.recipientId.toString('hex'), '25');
    assert.equal(v.message.code, CODES.GET);
    const res = protectResponse(v.binding, content(REF.groupResponseMid));
    assert.equal(encode(res as CoapMessage).toString('hex'), REF.groupResponse);
  });

  it('§8.5: s1 answers the group-mode request in pairwise mode, byte for byte (option 08 52, no Group Flag)', function () {
    const s1 = member('s1');
    const v = unprotectRequest((kid, kidContext, group) => s1.resolve(kid, kidContext, group), decode(h(REF.request)));
    const res = protectResponse(v.binding, content(REF.pairwiseResponseMid), { mode: 'pairwise' });
    assert.equal(encode(res as CoapMessage).toString('hex'), REF.pairwiseResponse);
  });

  it('§7.4 / §8.6: the client verifies both reference responses and attributes them to s1', function () {
    for (const wire of [REF.groupResponse, REF.pairwiseResponse]) {
      const client = member('client', 20);
      const { binding } = protectRequest(client.groupRequests(), getLight());
      const r = unprotectResponse(binding, decode(h(wire)));
      assert.equal(r.responder.recipientId.toString('hex'), '52');
      assert.equal(r.responder.mode, wire === REF.groupResponse ? 'group' : 'pairwise');
      assert.equal(r.message.code, CODES.CONTENT);
      assert.equal(r.message.payload.toString(), 's1: on');
    }
  });
});
