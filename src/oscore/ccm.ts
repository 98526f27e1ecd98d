// CCM mode (RFC 3610; NIST SP 800-38C) over any 128-bit block cipher: CBC-MAC over B0 ‖ encoded AAD ‖ message,
// then CTR encryption of the message and of the tag. Written by hand because @noble/ciphers 1.x ships GCM,
// GCM-SIV and ChaCha20/Poly1305 but no CCM, and AES-CCM-16-64-128 is OSCORE's mandatory algorithm
// (RFC 8613 §3.2); aead-noble.ts plugs in noble's AES block function. Checked against RFC 3610 §8 and RFC 8613 App. C.

/** Encrypts one 16-byte block in place. */
export type BlockEncrypt = (block: Uint8Array) => void;

const BLOCK = 16;

export class CcmAuthError extends Error {
  readonly code = 'ERR_CCM_AUTH';
}

function check(nonce: Uint8Array, tagLength: number, messageLength: number): number {
  // RFC 3610 §2: M in {4,6,...,16}, L in 2..8, nonce = 15 - L bytes.
  if (tagLength < 4 || tagLength > 16 || tagLength % 2) throw new RangeError(`CCM: invalid tag length ${tagLength}`);
  const L = 15 - nonce.length;
  if (L < 2 || L > 8) throw new RangeError(`CCM: invalid nonce length ${nonce.length}`);
  if (L < 6 && messageLength >= 2 ** (8 * L)) throw new RangeError('CCM: message too long for this nonce length');
  return L;
}

/** B0 and the counter blocks share the nonce; only the flags byte and the trailing L-byte field differ. */
function block0(flags: number, nonce: Uint8Array, L: number, value: number): Uint8Array {
  const b = new Uint8Array(BLOCK);
  b[0] = flags;
  b.set(nonce, 1);
  for (let i = 0, v = value; i < L && v > 0; i++, v = Math.floor(v / 256)) b[15 - i] = v & 0xff;
  return b;
}

function cbcMac(enc: BlockEncrypt, nonce: Uint8Array, L: number, tagLength: number, aad: Uint8Array, msg: Uint8Array): Uint8Array {
  // RFC 3610 §2.2: Flags = 64*Adata + 8*M' + L', M' = (M-2)/2, L' = L-1.
  const x = block0((aad.length > 0 ? 0x40 : 0) | (((tagLength - 2) / 2) << 3) | (L - 1), nonce, L, msg.length);
  enc(x);
  const absorb = (data: Uint8Array): void => {
    for (let off = 0; off < data.length; off += BLOCK) {
      const n = Math.min(BLOCK, data.length - off);
      for (let i = 0; i < n; i++) x[i] ^= data[off + i];
      enc(x); // a short last block is zero-padded, i.e. XORed with nothing
    }
  };
  if (aad.length > 0) {
    // RFC 3610 §2.2: l(a) as 2 bytes below 2^16 - 2^8, else 0xfffe + 4 bytes (AAD here is far below 2^32).
    const prefix = aad.length < 0xff00 ? [aad.length >> 8, aad.length & 0xff] : [0xff, 0xfe, (aad.length >>> 24) & 0xff, (aad.length >>> 16) & 0xff, (aad.length >>> 8) & 0xff, aad.length & 0xff];
    const a = new Uint8Array(prefix.length + aad.length);
    a.set(prefix, 0);
    a.set(aad, prefix.length);
    absorb(a);
  }
  absorb(msg);
  return x.subarray(0, tagLength);
}

/** CTR with A_i = flags(L-1) ‖ nonce ‖ i; A_0 encrypts the tag, A_1.. the message (RFC 3610 §2.3). */
function ctr(enc: BlockEncrypt, nonce: Uint8Array, L: number, data: Uint8Array, out: Uint8Array): Uint8Array {
  const s0 = block0(L - 1, nonce, L, 0);
  enc(s0);
  for (let off = 0, i = 1; off < data.length; off += BLOCK, i++) {
    const s = block0(L - 1, nonce, L, i);
    enc(s);
    const n = Math.min(BLOCK, data.length - off);
    for (let j = 0; j < n; j++) out[off + j] = data[off + j] ^ s[j];
  }
  return s0;
}

export function ccmEncrypt(enc: BlockEncrypt, nonce: Uint8Array, tagLength: number, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const L = check(nonce, tagLength, plaintext.length);
  const tag = cbcMac(enc, nonce, L, tagLength, aad, plaintext);
  const out = new Uint8Array(plaintext.length + tagLength);
  const s0 = ctr(enc, nonce, L, plaintext, out);
  for (let i = 0; i < tagLength; i++) out[plaintext.length + i] = tag[i] ^ s0[i];
  return out;
}

export function ccmDecrypt(enc: BlockEncrypt, nonce: Uint8Array, tagLength: number, aad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  if (ciphertext.length < tagLength) throw new CcmAuthError('CCM: authentication failed');
  const n = ciphertext.length - tagLength;
  const L = check(nonce, tagLength, n);
  const plaintext = new Uint8Array(n);
  const s0 = ctr(enc, nonce, L, ciphertext.subarray(0, n), plaintext);
  const expected = cbcMac(enc, nonce, L, tagLength, aad, plaintext);
  // Constant-time comparison: accumulate differences instead of returning at the first mismatch.
  let diff = 0;
  for (let i = 0; i < tagLength; i++) diff |= (ciphertext[n + i] ^ s0[i]) ^ expected[i];
  if (diff !== 0) {
    plaintext.fill(0); // RFC 3610 §2.5: release nothing of an unauthenticated message
    throw new CcmAuthError('CCM: authentication failed');
  }
  return plaintext;
}
