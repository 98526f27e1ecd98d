// RFC 8613 Appendix C byte for byte: key derivation (C.1-C.3) and protection of requests (C.4-C.6) and responses
// with and without Partial IV (C.7, C.8), on both AEAD backends, plus the §5.4 AAD and §6.3 compression examples.

import assert from 'node:assert/strict';
import { decode, decodeCodeOptionsPayload, encode } from '../../src/coap/codec';
import {
  AeadBackendName,
  ClientBinding,
  MemorySequenceStore,
  SecurityContext,
  computeNonce,
  decodeOscoreOption,
  deriveKeys,
  encodeAad,
  encodeAadArray,
  encodeInfo,
  encodeOscoreOption,
  protectRequest,
  protectResponse,
  unprotectRequest,
  unprotectResponse,
} from '../../src/oscore';
import { AAD_EXAMPLE, C1, C2, C3, C4, C5, C6, C7, C8, COMPRESSION_EXAMPLES, DerivationVector, MASTER_SECRET, RequestVector } from '../fixtures/oscore/rfc8613-vectors';

const h = (hex: string): Buffer => Buffer.from(hex, 'hex');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/** The message binding of a request vector (and of its responses, which reuse the request's nonce, kid and PIV). */
const binding = (nonce: string, kid: string, piv: string, isRequest: boolean) => ({ nonce: h(nonce), piv: h(piv), pivId: h(kid), isRequest, requestKid: h(kid), requestPiv: h(piv), oscoreOption: Buffer.alloc(0) });
const BACKENDS: AeadBackendName[] = ['node', 'noble'];

function params(v: DerivationVector, role: 'client' | 'server') {
  const { senderId, recipientId } = v.client;
  return {
    masterSecret: h(MASTER_SECRET),
    ...(v.masterSalt !== undefined ? { masterSalt: h(v.masterSalt) } : {}),
    ...(v.idContext !== undefined ? { idContext: h(v.idContext) } : {}),
    senderId: h(role === 'client' ? senderId : recipientId),
    recipientId: h(role === 'client' ? recipientId : senderId),
  };
}

function context(v: DerivationVector, role: 'client' | 'server', backend: AeadBackendName, ssn = 0): SecurityContext {
  return SecurityContext.derive(params(v, role), { aead: backend, sequenceStore: new MemorySequenceStore(ssn) });
}

describe('OSCORE: RFC 8613 Appendix C key derivation', function () {
  for (const v of [C1, C2, C3]) {
    describe(v.name, function () {
      const idContext = v.idContext !== undefined ? h(v.idContext) : undefined;

      it('encodes the info structures (§3.2.1) as in the vector', function () {
        assert.equal(hex(encodeInfo(h(v.client.senderId), idContext, 10, 'Key', 16)), v.info.clientSenderKey);
        assert.equal(hex(encodeInfo(h(v.client.recipientId), idContext, 10, 'Key', 16)), v.info.serverSenderKey);
        assert.equal(hex(encodeInfo(Buffer.alloc(0), idContext, 10, 'IV', 13)), v.info.commonIv);
      });

      it('derives Sender Key, Recipient Key and Common IV for client and server', function () {
        const client = deriveKeys(params(v, 'client'));
        assert.equal(hex(client.senderKey), v.clientSenderKey);
        assert.equal(hex(client.recipientKey), v.serverSenderKey);
        assert.equal(hex(client.commonIv), v.commonIv);
        const server = deriveKeys(params(v, 'server'));
        assert.equal(hex(server.senderKey), v.serverSenderKey);
        assert.equal(hex(server.recipientKey), v.clientSenderKey);
        assert.equal(hex(server.commonIv), v.commonIv);
      });

      it('computes the sender and recipient nonces for Partial IV 0 (§5.2)', function () {
        const iv = h(v.commonIv);
        assert.equal(hex(computeNonce(h(v.client.senderId), h('00'), iv)), v.clientNonce0);
        assert.equal(hex(computeNonce(h(v.client.recipientId), h('00'), iv)), v.serverNonce0);
        const client = context(v, 'client', 'node');
        assert.equal(hex(client.senderNonce(h('00'))), v.clientNonce0);
        assert.equal(hex(client.recipientNonce(h('00'))), v.serverNonce0);
      });
    });
  }

  it('RFC 8613 §5.4: aad_array, external_aad and AAD of the example', function () {
    assert.equal(hex(encodeAadArray(10, h(AAD_EXAMPLE.kid), h(AAD_EXAMPLE.piv))), AAD_EXAMPLE.aadArray);
    assert.equal(hex(encodeAad(10, h(AAD_EXAMPLE.kid), h(AAD_EXAMPLE.piv))), AAD_EXAMPLE.aad);
  });

  for (const ex of COMPRESSION_EXAMPLES) {
    it(`${ex.name}: OSCORE option value ${ex.value || '(empty)'}`, function () {
      const f = ex.fields as { kid?: string; piv?: string; kidContext?: string };
      const fields = {
        ...(f.piv !== undefined ? { piv: h(f.piv) } : {}),
        ...(f.kid !== undefined ? { kid: h(f.kid) } : {}),
        ...(f.kidContext !== undefined ? { kidContext: h(f.kidContext) } : {}),
      };
      assert.equal(hex(encodeOscoreOption(fields)), ex.value);
      assert.deepEqual(decodeOscoreOption(h(ex.value)), fields);
    });
  }
});

function checkRequestVector(v: RequestVector, backend: AeadBackendName): void {
  it(`protects the request byte for byte (${backend})`, function () {
    const client = context(v.context, 'client', backend, v.ssn);
    const { message, binding } = protectRequest(client, decode(h(v.unprotected)));
    assert.equal(hex(encode(message)), v.protected);
    assert.equal(hex(binding.piv), v.piv);
    assert.equal(hex(binding.kid), v.kid);
    assert.equal(hex(binding.nonce), v.nonce);
    assert.equal(hex(message.options.find((o) => o.number === 9)!.value), v.optionValue);
    assert.equal(hex(message.payload), v.ciphertext);
    assert.equal(client.sequence.peek(), v.ssn + 1);
  });

  it(`has the vector's intermediate values: aad_array, AAD, plaintext, key, nonce (${backend})`, function () {
    assert.equal(hex(encodeAadArray(10, h(v.kid), h(v.piv))), v.aadArray);
    assert.equal(hex(encodeAad(10, h(v.kid), h(v.piv))), v.aad);
    assert.equal(hex(deriveKeys(params(v.context, 'client')).senderKey), v.key);
    assert.equal(hex(computeNonce(h(v.kid), h(v.piv), h(v.context.commonIv))), v.nonce);
    // decrypting the vector's ciphertext with the vector's key, nonce and AAD gives the vector's plaintext
    const server = context(v.context, 'server', backend);
    assert.equal(hex(server.open(h(v.ciphertext), binding(v.nonce, v.kid, v.piv, true))), v.plaintext);
    const pt = decodeCodeOptionsPayload(h(v.plaintext));
    assert.equal(pt.code, 1);
  });

  it(`the server verifies it back into the unprotected request (${backend})`, function () {
    const server = context(v.context, 'server', backend);
    const { message, binding } = unprotectRequest(server, decode(h(v.protected)));
    assert.equal(hex(encode(message)), v.unprotected);
    assert.equal(hex(binding.kid), v.kid);
    assert.equal(hex(binding.piv), v.piv);
    assert.equal(hex(binding.nonce), v.nonce);
    assert.equal(server.replay.highest, v.ssn);
  });
}

describe('OSCORE: RFC 8613 Appendix C protected requests', function () {
  for (const v of [C4, C5, C6]) {
    describe(v.name, function () {
      for (const backend of BACKENDS) checkRequestVector(v, backend);
    });
  }
});

describe('OSCORE: RFC 8613 Appendix C protected responses', function () {
  for (const backend of BACKENDS) {
    it(`RFC 8613 C.7: response without Partial IV reuses the request nonce (${backend})`, function () {
      const server = context(C1, 'server', backend);
      const { binding } = unprotectRequest(server, decode(h(C4.protected)));
      const protectedResponse = protectResponse(binding, decode(h(C7.unprotected)), { partialIv: false });
      assert.equal(hex(encode(protectedResponse)), C7.protected);
      assert.equal(server.sequence.peek(), 0, 'no sequence number used');
      assert.equal(hex(binding.nonce), C7.nonce);
      assert.equal(binding.canReuseRequestNonce, false, 'the request nonce is used up');
      // client side
      const client = context(C1, 'client', backend, C4.ssn);
      const req = protectRequest(client, decode(h(C4.unprotected)));
      assert.equal(hex(encode(req.message)), C4.protected);
      const verified = unprotectResponse(req.binding, decode(h(C7.protected)));
      assert.equal(hex(encode(verified.message)), C7.unprotected);
      assert.equal(verified.piv, undefined);
      assert.equal(req.binding.done, true);
    });

    it(`RFC 8613 C.8: response with its own Partial IV 0 (${backend})`, function () {
      const server = context(C1, 'server', backend, 0);
      const { binding } = unprotectRequest(server, decode(h(C4.protected)));
      const protectedResponse = protectResponse(binding, decode(h(C8.unprotected)), { partialIv: true });
      assert.equal(hex(encode(protectedResponse)), C8.protected);
      assert.equal(hex(protectedResponse.options[0].value), C8.optionValue);
      assert.equal(hex(server.senderNonce(h(C8.piv!))), C8.nonce);
      assert.equal(hex(encodeAad(10, h(C4.kid), h(C4.piv))), C8.aad);
      assert.equal(server.sequence.peek(), 1);
      // The client checks it with a binding rebuilt from the stored request kid / Partial IV / nonce (§8.1 step 6).
      const client = context(C1, 'client', backend);
      const stored = new ClientBinding({ context: client, kid: h(C4.kid), piv: h(C4.piv), nonce: h(C4.nonce), observe: false });
      const verified = unprotectResponse(stored, decode(h(C8.protected)));
      assert.equal(hex(encode(verified.message)), C8.unprotected);
      assert.equal(verified.piv, 0);
    });
  }

  it('RFC 8613 C.7 / C.8: plaintext and ciphertext under the server Sender Key', function () {
    const server = context(C1, 'server', 'node');
    assert.equal(hex(server.seal(h(C7.plaintext), binding(C7.nonce, C4.kid, C4.piv, false))), C7.ciphertext);
    assert.equal(hex(server.seal(h(C8.plaintext), binding(C8.nonce, C4.kid, C4.piv, false))), C8.ciphertext);
    assert.equal(hex(deriveKeys(params(C1, 'server')).senderKey), C7.key);
  });
});
