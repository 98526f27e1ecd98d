// The asymmetric algorithms of Group OSCORE on node:crypto (RFC 10021 §2.1.8, §2.1.10, §2.4, §2.5; RFC 9053 §2):
// countersignatures with EdDSA / Ed25519 (COSE -8) and ECDSA / P-256 with SHA-256 (COSE -7, r ‖ s, 64 bytes), and
// the static-static ECDH of the pairwise mode with X25519 and P-256, Ed25519 keys mapped to Montgomery form
// (RFC 10021 §2.5.2, RFC 7748 §4.1). Keys are raw bytes as a COSE Key carries them; node:crypto gets them as DER
// or JWK. The Edwards-to-Montgomery map is written here because node:crypto has none.

import crypto from 'node:crypto';
import { OscoreError } from '../errors';

/** COSE algorithm values (IANA "COSE Algorithms"). */
export const COSE_ALG = { EdDSA: -8, ES256: -7, ECDH_SS_HKDF_256: -27, ECDH_SS_HKDF_512: -28 } as const;
/** COSE key types and curves (IANA "COSE Key Types", "COSE Elliptic Curves"). */
export const COSE_KTY = { OKP: 1, EC2: 2 } as const;
export const COSE_CRV = { P256: 1, X25519: 4, Ed25519: 6 } as const;

export type SignatureAlgorithm = typeof COSE_ALG.EdDSA | typeof COSE_ALG.ES256;

/** A public key as a credential carries it: curve and raw coordinates. */
export interface PublicKeyInfo {
  kty: number;
  crv: number;
  x: Buffer;
  /** EC2 only */
  y?: Buffer;
}

const ED25519_PKCS8 = Buffer.from('302e020100300506032b657004220420', 'hex');
const X25519_PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const ED25519_SPKI = Buffer.from('302a300506032b6570032100', 'hex');
const X25519_SPKI = Buffer.from('302a300506032b656e032100', 'hex');
const b64u = (b: Buffer): string => b.toString('base64url');

function configError(why: string): OscoreError {
  return new OscoreError('ERR_OSCORE_CONFIG', why);
}

/** Signature length in bytes (RFC 8032 §5.1.6; RFC 9053 §2.1: ES256 = 2 * 32). */
export function signatureLength(alg: number): number {
  if (alg === COSE_ALG.EdDSA || alg === COSE_ALG.ES256) return 64;
  throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported Signature Algorithm ${alg}`);
}

export function isSignatureAlgorithm(alg: unknown): alg is SignatureAlgorithm {
  return alg === COSE_ALG.EdDSA || alg === COSE_ALG.ES256;
}

/** node:crypto private key from raw bytes: the Ed25519 seed (RFC 8032 §5.1.5) or the P-256 scalar d. */
export function privateKeyObject(pub: PublicKeyInfo, priv: Buffer): crypto.KeyObject {
  if (pub.kty === COSE_KTY.OKP && pub.crv === COSE_CRV.Ed25519) {
    if (priv.length !== 32) throw configError('an Ed25519 private key is 32 bytes');
    return crypto.createPrivateKey({ key: Buffer.concat([ED25519_PKCS8, priv]), format: 'der', type: 'pkcs8' });
  }
  if (pub.kty === COSE_KTY.EC2 && pub.crv === COSE_CRV.P256) {
    if (priv.length !== 32 || !pub.y) throw configError('a P-256 private key is 32 bytes');
    return crypto.createPrivateKey({ key: { kty: 'EC', crv: 'P-256', x: b64u(pub.x), y: b64u(pub.y), d: b64u(priv) }, format: 'jwk' });
  }
  if (pub.kty === COSE_KTY.OKP && pub.crv === COSE_CRV.X25519) {
    if (priv.length !== 32) throw configError('an X25519 private key is 32 bytes');
    return crypto.createPrivateKey({ key: Buffer.concat([X25519_PKCS8, priv]), format: 'der', type: 'pkcs8' });
  }
  throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported key type ${pub.kty} / curve ${pub.crv}`);
}

export function publicKeyObject(pub: PublicKeyInfo): crypto.KeyObject {
  try {
    if (pub.kty === COSE_KTY.OKP && pub.crv === COSE_CRV.Ed25519 && pub.x.length === 32) return crypto.createPublicKey({ key: Buffer.concat([ED25519_SPKI, pub.x]), format: 'der', type: 'spki' });
    if (pub.kty === COSE_KTY.OKP && pub.crv === COSE_CRV.X25519 && pub.x.length === 32) return crypto.createPublicKey({ key: Buffer.concat([X25519_SPKI, pub.x]), format: 'der', type: 'spki' });
    // RFC 10021 "Cryptographic Considerations": public keys are validated; JWK import checks the point.
    if (pub.kty === COSE_KTY.EC2 && pub.crv === COSE_CRV.P256 && pub.x.length === 32 && pub.y?.length === 32) return crypto.createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b64u(pub.x), y: b64u(pub.y) }, format: 'jwk' });
  } catch {
    throw configError('invalid public key');
  }
  throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported key type ${pub.kty} / curve ${pub.crv}`);
}

/** The public key of a raw private key. */
export function publicKeyOf(kind: 'Ed25519' | 'P-256' | 'X25519', priv: Buffer): PublicKeyInfo {
  if (kind === 'P-256') {
    const ecdh = crypto.createECDH('prime256v1');
    ecdh.setPrivateKey(priv);
    const point = ecdh.getPublicKey(); // 04 ‖ x ‖ y
    return { kty: COSE_KTY.EC2, crv: COSE_CRV.P256, x: point.subarray(1, 33), y: point.subarray(33, 65) };
  }
  const crv = kind === 'Ed25519' ? COSE_CRV.Ed25519 : COSE_CRV.X25519;
  const key = privateKeyObject({ kty: COSE_KTY.OKP, crv, x: Buffer.alloc(32) }, priv);
  const spki = crypto.createPublicKey(key).export({ format: 'der', type: 'spki' });
  return { kty: COSE_KTY.OKP, crv, x: Buffer.from(spki.subarray(spki.length - 32)) };
}

/** RFC 9338 §3.3 countersignature with the Signature Algorithm (RFC 10021 §3.1). */
export function sign(alg: number, key: crypto.KeyObject, data: Buffer): Buffer {
  if (alg === COSE_ALG.EdDSA) return crypto.sign(null, data, key);
  if (alg === COSE_ALG.ES256) return crypto.sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' });
  throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported Signature Algorithm ${alg}`);
}

export function verify(alg: number, key: crypto.KeyObject, data: Buffer, signature: Buffer): boolean {
  try {
    if (alg === COSE_ALG.EdDSA) return crypto.verify(null, data, key, signature);
    if (alg === COSE_ALG.ES256) return crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
  } catch {
    return false;
  }
  return false;
}

// RFC 7748 §4.1: p = 2^255 - 19; u = (1 + y) / (1 - y) mod p.
const P25519 = (1n << 255n) - 19n;

function modPow(b: bigint, e: bigint, m: bigint): bigint {
  let r = 1n;
  b %= m;
  while (e > 0n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
    e >>= 1n;
  }
  return r;
}

/** RFC 10021 §2.5.2: the X25519 u-coordinate of an Ed25519 public key; aborts for y = 1 or y = -1 (mod p). */
export function ed25519PublicToX25519(pub: Buffer): Buffer {
  if (pub.length !== 32) throw configError('an Ed25519 public key is 32 bytes');
  // RFC 8032 §5.1.3: little-endian y with the sign of x in the top bit.
  const le = Buffer.from(pub);
  le[31] &= 0x7f;
  const y = BigInt(`0x${Buffer.from(le).reverse().toString('hex')}`);
  // RFC 8032 §5.1.3: "If the resulting value is >= p, decoding fails" (a non-canonical y is not reduced).
  if (y >= P25519) throw configError('Ed25519 public key with a non-canonical y-coordinate');
  if (y === 1n || y === P25519 - 1n) throw configError('Ed25519 public key with y = 1 or -1 has no usable Montgomery form');
  const u = ((1n + y) * modPow((1n - y + P25519) % P25519, P25519 - 2n, P25519)) % P25519;
  return Buffer.from(u.toString(16).padStart(64, '0'), 'hex').reverse();
}

/** RFC 10021 §2.5.2: the X25519 scalar of an Ed25519 seed is the lower 32 bytes of SHA-512(seed) (RFC 8032 §5.1.5 step 1). */
export function ed25519PrivateToX25519(seed: Buffer): Buffer {
  return crypto.createHash('sha512').update(seed).digest().subarray(0, 32);
}

/**
 * RFC 10021 §2.5.1: the cofactor static-static ECDH shared secret between our private key and the peer's public
 * key. Ed25519 keys go through the Montgomery map first; P-256 gives the x-coordinate (32 bytes).
 */
export function sharedSecret(ownPub: PublicKeyInfo, ownPriv: Buffer, peer: PublicKeyInfo): Buffer {
  const toX = (p: PublicKeyInfo): PublicKeyInfo => (p.kty === COSE_KTY.OKP && p.crv === COSE_CRV.Ed25519 ? { kty: COSE_KTY.OKP, crv: COSE_CRV.X25519, x: ed25519PublicToX25519(p.x) } : p);
  const mine = toX(ownPub);
  const theirs = toX(peer);
  if (mine.kty !== theirs.kty || mine.crv !== theirs.crv) throw configError('the two credentials are on different curves');
  const priv = ownPub.kty === COSE_KTY.OKP && ownPub.crv === COSE_CRV.Ed25519 ? ed25519PrivateToX25519(ownPriv) : ownPriv;
  const secret = crypto.diffieHellman({ privateKey: privateKeyObject(mine, priv), publicKey: publicKeyObject(theirs) });
  // RFC 7748 §6.1: an all-zero output means a low-order point; refuse it.
  if (secret.every((b) => b === 0)) throw configError('degenerate ECDH shared secret');
  return secret;
}
