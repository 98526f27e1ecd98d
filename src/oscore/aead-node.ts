// AEAD backend on node:crypto (OpenSSL): AES-CCM (RFC 3610 as profiled by RFC 9053 §4.2), AES-GCM (RFC 9053
// §4.1) and ChaCha20/Poly1305 (RFC 9053 §4.3, RFC 8439). The faster of the two backends on this machine; the
// @noble backend (aead-noble.ts) is its differential twin.

import crypto from 'node:crypto';
import { Aead, AeadError, AeadParams, aeadParams, checkAeadInput } from './aead';

function cipherName(p: AeadParams): crypto.CipherCCMTypes | crypto.CipherGCMTypes | crypto.CipherChaCha20Poly1305Types {
  if (p.alg === 24) return 'chacha20-poly1305';
  const bits = p.keyLength * 8;
  if (p.name.startsWith('AES-CCM')) return `aes-${bits}-ccm` as crypto.CipherCCMTypes;
  return `aes-${bits}-gcm` as crypto.CipherGCMTypes;
}

// OpenSSL's CCM treats update() with a NULL data pointer as "set the length", not "process 0 bytes", and a
// zero-length Buffer that owns no memory (e.g. randomBytes(0)) reaches it as NULL; then final() fails with "tag
// not set". An empty view into a real allocation avoids that.
const EMPTY_INPUT = Buffer.alloc(1).subarray(0, 0);
const input = (b: Uint8Array): Uint8Array => (b.length === 0 ? EMPTY_INPUT : b);

export function nodeAead(alg: number): Aead {
  const p = aeadParams(alg);
  const name = cipherName(p);
  return {
    ...p,
    backend: 'node',
    encrypt(key, nonce, aad, plaintext) {
      checkAeadInput(p, key, nonce);
      // The cast picks one overload; authTagLength is accepted for all three modes.
      const c = crypto.createCipheriv(name as crypto.CipherCCMTypes, key, nonce, { authTagLength: p.tagLength });
      // CCM needs the plaintext length before the AAD (it goes into block B0).
      c.setAAD(aad, { plaintextLength: plaintext.length });
      return Buffer.concat([c.update(input(plaintext)), c.final(), c.getAuthTag()]);
    },
    decrypt(key, nonce, aad, ciphertext) {
      checkAeadInput(p, key, nonce, ciphertext);
      const body = ciphertext.subarray(0, ciphertext.length - p.tagLength);
      const tag = ciphertext.subarray(ciphertext.length - p.tagLength);
      try {
        const d = crypto.createDecipheriv(name as crypto.CipherCCMTypes, key, nonce, { authTagLength: p.tagLength });
        d.setAuthTag(tag);
        d.setAAD(aad, { plaintextLength: body.length });
        const out = d.update(input(body));
        // CCM verifies inside update() and final() then throws on a bad tag; GCM/ChaCha verify in final().
        d.final();
        return out;
      } catch {
        throw new AeadError('ERR_AEAD_AUTH', `${p.name}: authentication failed`);
      }
    },
  };
}
