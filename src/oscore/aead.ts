// The AEAD interface OSCORE encrypts through (RFC 8613 §5, COSE algorithms of RFC 9053 §4), the parameters of the
// algorithms this package supports, and the typed error every backend throws. Two backends implement it
// (aead-node.ts, aead-noble.ts); they are tested against each other, and the caller picks one per context.

export interface AeadParams {
  /** COSE algorithm identifier (RFC 9053 / IANA "COSE Algorithms") */
  readonly alg: number;
  readonly name: string;
  /** bytes */
  readonly keyLength: number;
  readonly nonceLength: number;
  readonly tagLength: number;
}

export interface Aead extends AeadParams {
  readonly backend: string;
  /** Returns ciphertext ‖ tag (the COSE "ciphertext", RFC 9052 §5.3). */
  encrypt(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Buffer;
  /** Takes ciphertext ‖ tag; throws AeadError('ERR_AEAD_AUTH') when the tag does not verify. */
  decrypt(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Buffer;
}

export type AeadErrorCode = 'ERR_AEAD_AUTH' | 'ERR_AEAD_INPUT' | 'ERR_AEAD_UNSUPPORTED';

export class AeadError extends Error {
  override readonly name = 'AeadError';
  constructor(
    readonly code: AeadErrorCode,
    message: string,
  ) {
    super(message);
  }
}

// RFC 9053 §4.1 (AES-GCM), §4.2 (AES-CCM, "AES-CCM-16-*" = 13-byte nonce, L = 2), §4.3 (ChaCha20/Poly1305).
export const AEAD_ALGORITHMS: Readonly<Record<number, AeadParams>> = {
  1: { alg: 1, name: 'A128GCM', keyLength: 16, nonceLength: 12, tagLength: 16 },
  2: { alg: 2, name: 'A192GCM', keyLength: 24, nonceLength: 12, tagLength: 16 },
  3: { alg: 3, name: 'A256GCM', keyLength: 32, nonceLength: 12, tagLength: 16 },
  10: { alg: 10, name: 'AES-CCM-16-64-128', keyLength: 16, nonceLength: 13, tagLength: 8 },
  11: { alg: 11, name: 'AES-CCM-16-64-256', keyLength: 32, nonceLength: 13, tagLength: 8 },
  24: { alg: 24, name: 'ChaCha20/Poly1305', keyLength: 32, nonceLength: 12, tagLength: 16 },
  30: { alg: 30, name: 'AES-CCM-16-128-128', keyLength: 16, nonceLength: 13, tagLength: 16 },
  31: { alg: 31, name: 'AES-CCM-16-128-256', keyLength: 32, nonceLength: 13, tagLength: 16 },
};

/** RFC 8613 §3.2: AES-CCM-16-64-128 is the default and mandatory to implement. */
export const DEFAULT_AEAD_ALG = 10;

export function aeadParams(alg: number): AeadParams {
  const p = AEAD_ALGORITHMS[alg];
  if (!p) throw new AeadError('ERR_AEAD_UNSUPPORTED', `unsupported AEAD algorithm ${alg}`);
  return p;
}

/** Shared argument check, so both backends reject the same inputs the same way. */
export function checkAeadInput(p: AeadParams, key: Uint8Array, nonce: Uint8Array, ciphertextForDecrypt?: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== p.keyLength) throw new AeadError('ERR_AEAD_INPUT', `${p.name}: key must be ${p.keyLength} bytes`);
  if (!(nonce instanceof Uint8Array) || nonce.length !== p.nonceLength) throw new AeadError('ERR_AEAD_INPUT', `${p.name}: nonce must be ${p.nonceLength} bytes`);
  // A ciphertext shorter than the tag cannot be authentic: that is an authentication failure, not a usage error.
  if (ciphertextForDecrypt && ciphertextForDecrypt.length < p.tagLength) throw new AeadError('ERR_AEAD_AUTH', `${p.name}: authentication failed`);
}

export function toBuffer(u8: Uint8Array): Buffer {
  return Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}
