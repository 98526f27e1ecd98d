// HKDF (RFC 5869) with SHA-256 or SHA-512 on node:crypto, the key derivation function of an OSCORE security
// context (RFC 8613 §3.2.1; HKDF SHA-256 is mandatory to implement) and of the Group OSCORE countersignature
// keystream, derived for every group-mode message (RFC 10021 §4.2). An empty salt is HashLen zero bytes
// (RFC 5869 §2.2), which is what RFC 8613's default empty Master Salt relies on. Where node:crypto has the one-shot
// crypto.hash (Node >= 20.12), HMAC (RFC 2104) is written over it: about 1.5x the speed of crypto.hkdfSync, which
// turns its key into a KeyObject on every call (docs/BENCHMARKS.md, "Group OSCORE"); elsewhere hkdfSync is used.

import crypto from 'node:crypto';

export type HkdfHash = 'SHA-256' | 'SHA-512';

export const DEFAULT_HKDF: HkdfHash = 'SHA-256';

const DIGEST: Record<HkdfHash, { name: string; length: number; block: number }> = {
  'SHA-256': { name: 'sha256', length: 32, block: 64 },
  'SHA-512': { name: 'sha512', length: 64, block: 128 },
};

type OneShotHash = (algorithm: string, data: Uint8Array, outputEncoding: 'buffer') => Buffer;
const oneShot = (crypto as unknown as { hash?: OneShotHash }).hash;

export function isHkdfHash(value: unknown): value is HkdfHash {
  return value === 'SHA-256' || value === 'SHA-512';
}

/** RFC 2104: H((K ^ opad) ‖ H((K ^ ipad) ‖ data...)), K zero-padded to the block (hashed first if longer). */
function hmac(d: { name: string; block: number }, hash: OneShotHash, key: Uint8Array, data: Uint8Array[]): Buffer {
  const k = key.length > d.block ? hash(d.name, key, 'buffer') : key;
  let length = d.block;
  for (const part of data) length += part.length;
  const inner = Buffer.allocUnsafe(length);
  for (let i = 0; i < d.block; i++) inner[i] = (i < k.length ? k[i] : 0) ^ 0x36;
  let at = d.block;
  for (const part of data) {
    inner.set(part, at);
    at += part.length;
  }
  const innerHash = hash(d.name, inner, 'buffer');
  // inner and outer come from Node's shared allocation pool and hold K ^ ipad / K ^ opad, and the IKM (the secret
  // Master Secret of RFC 8613 §3.1, or H of a Deterministic Request): zero them so no key material lingers there.
  inner.fill(0);
  const outer = Buffer.allocUnsafe(d.block + innerHash.length);
  for (let i = 0; i < d.block; i++) outer[i] = (i < k.length ? k[i] : 0) ^ 0x5c;
  outer.set(innerHash, d.block);
  const mac = hash(d.name, outer, 'buffer');
  outer.fill(0);
  return mac;
}

/** RFC 5869 §2.2-§2.3 over hmac() above. */
function hkdfHmac(d: { name: string; length: number; block: number }, hash: OneShotHash, ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  const prk = hmac(d, hash, salt, [ikm]); // an empty salt: the zero padding of the key is the HashLen zeros
  const out = Buffer.allocUnsafe(length);
  let t: Uint8Array = new Uint8Array(0);
  for (let i = 1, at = 0; at < length; i++) {
    t = hmac(d, hash, prk, [t, info, Uint8Array.of(i)]);
    const n = Math.min(t.length, length - at);
    for (let j = 0; j < n; j++) out[at + j] = t[j];
    at += n;
  }
  return out;
}

export function hkdf(hash: HkdfHash, ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  const d = DIGEST[hash];
  if (!d) throw new RangeError(`unsupported HKDF hash ${JSON.stringify(hash)}`);
  // RFC 5869 §2.3: L <= 255 * HashLen.
  if (!Number.isInteger(length) || length < 1 || length > 255 * d.length) throw new RangeError(`invalid HKDF output length ${length}`);
  if (oneShot) return hkdfHmac(d, oneShot, ikm, salt, info, length);
  return Buffer.from(crypto.hkdfSync(d.name, ikm, salt, info, length));
}

/** node:crypto's own HKDF, the reference the tests compare hkdf() with. */
export function hkdfReference(hash: HkdfHash, ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  return Buffer.from(crypto.hkdfSync(DIGEST[hash].name, ikm, salt, info, length));
}
