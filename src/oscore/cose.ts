// The compressed COSE_Encrypt0 of OSCORE (RFC 8613 §5, §6): the OSCORE option value (§6.1), Partial IV encoding
// (§5), the AEAD nonce (§5.2), and the external_aad / AAD (§5.4). Decoding never throws anything but
// OscoreError('ERR_OSCORE_DECODE'), so a malformed option from the network always maps to 4.02.

import { cborSize, cborWrite, encodeCbor, headSize, writeHead } from './cbor';
import { DIAGNOSTICS, OscoreError } from './errors';

/** §7.2.1: Partial IVs are at most 5 bytes, so sequence numbers stay below 2^40. */
export const MAX_PIV_LENGTH = 5;
export const MAX_SEQUENCE_NUMBER = 2 ** 40 - 1;
/** §5.4: oscore_version of this specification. */
export const OSCORE_VERSION = 1;

// §6.1 flag byte, bit 0 = most significant. Bits 0 and 1 are reserved (bit 0 flags an extension byte); bit 2 was
// unassigned in RFC 8613 and is the Group Flag of Group OSCORE (RFC 10021 §4.1).
export const FLAG_RESERVED = 0xc0;
export const FLAG_GROUP = 0x20;
export const FLAG_KID_CONTEXT = 0x10;
export const FLAG_KID = 0x08;
export const FLAG_PIV_LENGTH = 0x07;

const EMPTY = Buffer.alloc(0);

export interface OscoreOptionFields {
  /** Partial IV bytes as carried (1..5 bytes), absent when n = 0 */
  piv?: Buffer;
  kidContext?: Buffer;
  kid?: Buffer;
  /** Group Flag (bit 2); plain OSCORE rejects messages that set it */
  group?: boolean;
}

/** §5: the Sender Sequence Number in network byte order without leading zero bytes; 0 is encoded as 0x00. */
export function encodePartialIv(ssn: number): Buffer {
  if (!Number.isSafeInteger(ssn) || ssn < 0 || ssn > MAX_SEQUENCE_NUMBER) throw new RangeError(`sequence number out of range: ${ssn}`);
  const len = ssn < 0x100 ? 1 : ssn < 0x10000 ? 2 : ssn < 0x1000000 ? 3 : ssn < 0x100000000 ? 4 : 5;
  const b = Buffer.allocUnsafe(len);
  for (let i = len - 1, v = ssn; i >= 0; i--, v = Math.floor(v / 256)) b[i] = v % 256; // writes every byte
  return b;
}

export function decodePartialIv(piv: Uint8Array): number {
  if (piv.length < 1 || piv.length > MAX_PIV_LENGTH) throw new RangeError('Partial IV must be 1..5 bytes');
  let n = 0;
  for (let i = 0; i < piv.length; i++) n = n * 256 + piv[i]; // at most 2^40: exact in a double
  return n;
}

export function encodeOscoreOption(f: OscoreOptionFields): Buffer {
  const piv = f.piv ?? EMPTY;
  if (piv.length > MAX_PIV_LENGTH) throw new RangeError('Partial IV longer than 5 bytes');
  let flags = piv.length;
  let length = 1 + piv.length;
  if (f.group) flags |= FLAG_GROUP;
  if (f.kidContext !== undefined) {
    if (f.kidContext.length > 255) throw new RangeError('kid context longer than 255 bytes');
    flags |= FLAG_KID_CONTEXT;
    length += 1 + f.kidContext.length;
  }
  if (f.kid !== undefined) {
    flags |= FLAG_KID;
    length += f.kid.length;
  }
  // §6.1 (and §2): if all flag bits are zero the option value SHALL be empty.
  if (flags === 0) return Buffer.alloc(0);
  if (length > 255) throw new RangeError('OSCORE option value longer than 255 bytes');
  // One allocation, written in place: this runs for every protected message.
  const value = Buffer.allocUnsafe(length);
  value[0] = flags;
  value.set(piv, 1);
  let i = 1 + piv.length;
  if (f.kidContext !== undefined) {
    value[i++] = f.kidContext.length;
    value.set(f.kidContext, i);
    i += f.kidContext.length;
  }
  if (f.kid !== undefined) value.set(f.kid, i); // §6.1: kid MUST be the last field
  return value;
}

function malformed(why: string): OscoreError {
  return new OscoreError('ERR_OSCORE_DECODE', `malformed OSCORE option: ${why}`, DIAGNOSTICS.DECODE);
}

/** §6.1 decompression. Rejects reserved bits, reserved PIV lengths, truncation and trailing bytes. */
export function decodeOscoreOption(value: Uint8Array): OscoreOptionFields {
  const v = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (v.length === 0) return {};
  if (v.length > 255) throw malformed('longer than 255 bytes');
  const flags = v[0];
  // §6.1: "If the OSCORE flag bits are all zero (0x00), the option value SHALL be empty."
  if (flags === 0) throw malformed('zero flag byte in a non-empty value');
  if (flags & FLAG_RESERVED) throw malformed('reserved flag bit set');
  const n = flags & FLAG_PIV_LENGTH;
  if (n > MAX_PIV_LENGTH) throw malformed('reserved Partial IV length');
  const out: OscoreOptionFields = {};
  if (flags & FLAG_GROUP) out.group = true;
  // One copy of the value (the caller's datagram may be reused), and the fields as views into it.
  const own = Buffer.from(v);
  let i = 1;
  if (n > 0) {
    if (i + n > v.length) throw malformed('truncated Partial IV');
    out.piv = own.subarray(i, i + n);
    i += n;
  }
  if (flags & FLAG_KID_CONTEXT) {
    if (i >= v.length) throw malformed('missing kid context length');
    const s = v[i++];
    if (i + s > v.length) throw malformed('truncated kid context');
    out.kidContext = own.subarray(i, i + s);
    i += s;
  }
  if (flags & FLAG_KID) {
    out.kid = own.subarray(i);
  } else if (i !== v.length) {
    throw malformed('trailing bytes');
  }
  return out;
}

/**
 * §5.2: nonce = (S ‖ pad(ID_PIV, nonceLength - 6) ‖ pad(PIV, 5)) XOR Common IV, where ID_PIV is the Sender ID of
 * the endpoint that generated the Partial IV and S its length in bytes.
 */
export function computeNonce(idPiv: Uint8Array, piv: Uint8Array, commonIv: Uint8Array): Buffer {
  const len = commonIv.length;
  if (len < 7) throw new RangeError('OSCORE needs a nonce of at least 7 bytes');
  if (idPiv.length > len - 6) throw new RangeError(`ID_PIV longer than ${len - 6} bytes`);
  if (piv.length < 1 || piv.length > MAX_PIV_LENGTH) throw new RangeError('Partial IV must be 1..5 bytes');
  // Written byte by byte (no zero-fill, no set() calls): this runs twice per protected message exchange.
  const nonce = Buffer.allocUnsafe(len);
  const idAt = len - 5 - idPiv.length;
  const pivAt = len - piv.length;
  nonce[0] = idPiv.length ^ commonIv[0];
  for (let i = 1; i < len; i++) {
    const b = i >= pivAt ? piv[i - pivAt] : i >= idAt && i < len - 5 ? idPiv[i - idAt] : 0;
    nonce[i] = b ^ commonIv[i];
  }
  return nonce;
}

/** RFC 9052 §5.3 Enc_structure up to external_aad: array(3), "Encrypt0", h'' (empty protected header). */
const ENC_STRUCTURE_HEAD = Buffer.from('8368456e63727970743040', 'hex');

/** Length of the §5.4 aad_array = [oscore_version, [alg_aead], request_kid, request_piv, options]. */
function aadArraySize(alg: number | string, requestKid: Uint8Array, requestPiv: Uint8Array, classIOptions: Uint8Array): number {
  // 0x85, version 1 (one byte), 0x81 array(1), alg, three byte strings
  return 3 + cborSize(alg) + headSize(requestKid.length) + requestKid.length + headSize(requestPiv.length) + requestPiv.length + headSize(classIOptions.length) + classIOptions.length;
}

function writeAadArray(alg: number | string, requestKid: Uint8Array, requestPiv: Uint8Array, classIOptions: Uint8Array, out: Buffer, at: number): number {
  out[at++] = 0x85; // array(5)
  out[at++] = OSCORE_VERSION; // uint < 24: the value is its own head
  out[at++] = 0x81; // array(1)
  at = cborWrite(alg, out, at);
  at = writeBstr(requestKid, out, at);
  at = writeBstr(requestPiv, out, at);
  return writeBstr(classIOptions, out, at);
}

function writeBstr(b: Uint8Array, out: Buffer, at: number): number {
  at = writeHead(2, b.length, out, at);
  out.set(b, at);
  return at + b.length;
}

/** §5.4 aad_array = [oscore_version, [alg_aead], request_kid, request_piv, options]. `options` = class I (none). */
export function encodeAadArray(alg: number | string, requestKid: Uint8Array, requestPiv: Uint8Array, classIOptions: Uint8Array = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(aadArraySize(alg, requestKid, requestPiv, classIOptions));
  writeAadArray(alg, requestKid, requestPiv, classIOptions, out, 0);
  return out;
}

/**
 * §5.4 / RFC 9052 §5.3: AAD = Enc_structure = ["Encrypt0", h'' (empty protected), external_aad = bstr .cbor
 * aad_array], written straight into one buffer (it is built twice per protected message exchange).
 */
export function encodeAad(alg: number | string, requestKid: Uint8Array, requestPiv: Uint8Array, classIOptions: Uint8Array = EMPTY): Buffer {
  const inner = aadArraySize(alg, requestKid, requestPiv, classIOptions);
  const out = Buffer.allocUnsafe(ENC_STRUCTURE_HEAD.length + headSize(inner) + inner);
  out.set(ENC_STRUCTURE_HEAD, 0);
  const at = writeHead(2, inner, out, ENC_STRUCTURE_HEAD.length);
  writeAadArray(alg, requestKid, requestPiv, classIOptions, out, at);
  return out;
}

/** §3.2.1 info = [id, id_context / null, alg_aead, type ("Key" / "IV"; RFC 10021 §2.1.9 adds "SEKey"), L]. */
export function encodeInfo(id: Uint8Array, idContext: Uint8Array | undefined, alg: number | string, type: 'Key' | 'IV' | 'SEKey', length: number): Buffer {
  return encodeCbor([id, idContext ?? null, alg, type, length]);
}
