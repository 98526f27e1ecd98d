// Authentication credentials as CWT Claims Sets (RFC 8392 §7, "CCS") carrying a COSE Key in the 'cnf' claim
// (RFC 8747 §3.1), the format of RFC 10021 §2.4's examples: {? 2 (sub): tstr, 8 (cnf): {1 (COSE_Key): {1 (kty),
// ? 3 (alg), -1 (crv), -2 (x), ? -3 (y)}}}. Encoded with cbor-x (integer keys via Map, byte strings untagged).
// RFC 10021 §2.4: a credential is opaque bytes once made; it is parsed only to find the public key, never
// re-encoded. Also a key-pair generator that returns the private key and the public CCS.

import crypto from 'node:crypto';
import { Decoder, Encoder } from 'cbor-x';
import { OscoreError } from '../errors';
import { COSE_ALG, COSE_CRV, COSE_KTY, PublicKeyInfo, publicKeyOf } from './algorithms';

const encoder = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: false, variableMapSize: true } as never);
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false } as never);

/** IANA "Authentication Credential Format" for a CCS (COSE_KCCS), as in RFC 10021's examples. */
export const CRED_FORMAT_KCCS = 14;

export interface CredentialInfo extends PublicKeyInfo {
  /** the COSE Key's alg, when present */
  alg?: number;
  sub?: string;
}

/** Build the CCS bytes for a public key (RFC 8392 §7, RFC 8747 §3.1). */
export function encodeCcs(key: CredentialInfo): Buffer {
  const coseKey = new Map<number, unknown>([[1, key.kty]]);
  if (key.alg !== undefined) coseKey.set(3, key.alg);
  coseKey.set(-1, key.crv);
  coseKey.set(-2, Buffer.from(key.x));
  if (key.y) coseKey.set(-3, Buffer.from(key.y));
  const ccs = new Map<number, unknown>();
  if (key.sub !== undefined) ccs.set(2, key.sub);
  ccs.set(8, new Map([[1, coseKey]]));
  return Buffer.from(encoder.encode(ccs));
}

function bad(why: string): OscoreError {
  return new OscoreError('ERR_OSCORE_CONFIG', `malformed authentication credential: ${why}`);
}

const asMap = (v: unknown): Map<unknown, unknown> | undefined => (v instanceof Map ? v : undefined);
const asBytes = (v: unknown): Buffer | undefined => (v instanceof Uint8Array ? Buffer.from(v) : undefined);

/** Find the public key in CCS bytes (a tagged CCS is not accepted: RFC 10021 §2.4 stores the untagged one). */
export function parseCcs(bytes: Uint8Array): CredentialInfo {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0 || bytes.length > 4096) throw bad('not 1..4096 bytes');
  let ccs: Map<unknown, unknown> | undefined;
  try {
    ccs = asMap(decoder.decode(Buffer.from(bytes)));
  } catch {
    throw bad('not CBOR');
  }
  if (!ccs) throw bad('not a CBOR map');
  const key = asMap(asMap(ccs.get(8))?.get(1));
  if (!key) throw bad('no cnf / COSE_Key');
  const kty = key.get(1);
  const crv = key.get(-1);
  const x = asBytes(key.get(-2));
  const y = asBytes(key.get(-3));
  if (typeof kty !== 'number' || typeof crv !== 'number' || !x) throw bad('COSE_Key without kty, crv or x');
  const alg = key.get(3);
  const sub = ccs.get(2);
  const okp = kty === COSE_KTY.OKP && (crv === COSE_CRV.Ed25519 || crv === COSE_CRV.X25519) && x.length === 32;
  const ec2 = kty === COSE_KTY.EC2 && crv === COSE_CRV.P256 && x.length === 32 && y?.length === 32;
  if (!okp && !ec2) throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported COSE key (kty ${kty}, crv ${crv})`);
  return { kty, crv, x, ...(y ? { y } : {}), ...(typeof alg === 'number' ? { alg } : {}), ...(typeof sub === 'string' ? { sub } : {}) };
}

export interface GeneratedKeyPair {
  /** the private key: Ed25519 seed or P-256 scalar, 32 bytes. A secret: store it as a Node-RED credential. */
  privateKey: Buffer;
  /** the public authentication credential (CCS bytes) to hand to the other members */
  credential: Buffer;
}

/** A new key pair for a group member, for EdDSA / Ed25519 (default) or ECDSA / P-256 (RFC 10021 §2.1.8, §10). */
export function generateGroupKeyPair(opts: { signatureAlg?: number; subject?: string } = {}): GeneratedKeyPair {
  const alg = opts.signatureAlg ?? COSE_ALG.EdDSA;
  let privateKey: Buffer;
  let pub: PublicKeyInfo;
  if (alg === COSE_ALG.EdDSA) {
    privateKey = crypto.randomBytes(32);
    pub = publicKeyOf('Ed25519', privateKey);
  } else if (alg === COSE_ALG.ES256) {
    const ecdh = crypto.createECDH('prime256v1');
    ecdh.generateKeys();
    privateKey = Buffer.from(ecdh.getPrivateKey().toString('hex').padStart(64, '0'), 'hex');
    pub = publicKeyOf('P-256', privateKey);
  } else {
    throw new OscoreError('ERR_OSCORE_UNSUPPORTED_ALGORITHM', `unsupported Signature Algorithm ${alg}`);
  }
  return { privateKey, credential: encodeCcs({ ...pub, alg, ...(opts.subject !== undefined ? { sub: opts.subject } : {}) }) };
}
