// HKDF (RFC 5869) with SHA-256 or SHA-512 on node:crypto, the key derivation function of an OSCORE security
// context (RFC 8613 §3.2.1; HKDF SHA-256 is mandatory to implement). An empty salt is HashLen zero bytes
// (RFC 5869 §2.2), which is what RFC 8613's default empty Master Salt relies on.

import crypto from 'node:crypto';

export type HkdfHash = 'SHA-256' | 'SHA-512';

export const DEFAULT_HKDF: HkdfHash = 'SHA-256';

const DIGEST: Record<HkdfHash, { name: string; length: number }> = {
  'SHA-256': { name: 'sha256', length: 32 },
  'SHA-512': { name: 'sha512', length: 64 },
};

export function isHkdfHash(value: unknown): value is HkdfHash {
  return value === 'SHA-256' || value === 'SHA-512';
}

export function hkdf(hash: HkdfHash, ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  const d = DIGEST[hash];
  if (!d) throw new RangeError(`unsupported HKDF hash ${JSON.stringify(hash)}`);
  // RFC 5869 §2.3: L <= 255 * HashLen.
  if (!Number.isInteger(length) || length < 1 || length > 255 * d.length) throw new RangeError(`invalid HKDF output length ${length}`);
  return Buffer.from(crypto.hkdfSync(d.name, ikm, salt, info, length));
}
