// AEAD backend on @noble/ciphers 1.x (pure JS, audited): AES-GCM and ChaCha20/Poly1305 straight from noble
// (RFC 9053 §4.1, §4.3). noble 1.x has no CCM, so AES-CCM (RFC 9053 §4.2) is ccm.ts driven by noble's raw AES
// block function (`unsafe.expandKeyLE` + `unsafe.encryptBlock`): the mode is ours, the block cipher is noble's.
// The differential twin of aead-node.ts; useful where node:crypto lacks an algorithm or as a cross-check.

import { gcm, unsafe } from '@noble/ciphers/aes';
import { chacha20poly1305 } from '@noble/ciphers/chacha';
import { Aead, AeadError, aeadParams, checkAeadInput, toBuffer } from './aead';
import { ccmDecrypt, ccmEncrypt } from './ccm';

/** AES block encryption with a key schedule that is wiped after the operation. */
function withAesBlock<T>(key: Uint8Array, run: (enc: (block: Uint8Array) => void) => T): T {
  const xk = unsafe.expandKeyLE(key);
  // noble reads the block through a Uint32Array view, so it must be 4-byte aligned: use our own scratch block.
  const scratch = new Uint8Array(16);
  try {
    return run((block) => {
      scratch.set(block);
      unsafe.encryptBlock(xk, scratch);
      block.set(scratch);
    });
  } finally {
    xk.fill(0);
    scratch.fill(0);
  }
}

export function nobleAead(alg: number): Aead {
  const p = aeadParams(alg);
  const isCcm = p.name.startsWith('AES-CCM');
  const isChacha = p.alg === 24;
  return {
    ...p,
    backend: 'noble',
    encrypt(key, nonce, aad, plaintext) {
      checkAeadInput(p, key, nonce);
      if (isCcm) return toBuffer(withAesBlock(key, (enc) => ccmEncrypt(enc, nonce, p.tagLength, aad, plaintext)));
      const cipher = isChacha ? chacha20poly1305(key, nonce, aad) : gcm(key, nonce, aad);
      return toBuffer(cipher.encrypt(plaintext));
    },
    decrypt(key, nonce, aad, ciphertext) {
      checkAeadInput(p, key, nonce, ciphertext);
      try {
        if (isCcm) return toBuffer(withAesBlock(key, (enc) => ccmDecrypt(enc, nonce, p.tagLength, aad, ciphertext)));
        const cipher = isChacha ? chacha20poly1305(key, nonce, aad) : gcm(key, nonce, aad);
        return toBuffer(cipher.decrypt(ciphertext));
      } catch {
        // noble throws a plain Error('invalid tag'); inputs were checked above, so any failure here is the tag.
        throw new AeadError('ERR_AEAD_AUTH', `${p.name}: authentication failed`);
      }
    },
  };
}
