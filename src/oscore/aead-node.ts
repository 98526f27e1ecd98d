// AEAD backend on node:crypto (OpenSSL): AES-CCM (RFC 3610 as profiled by RFC 9053 §4.2), AES-GCM (RFC 9053
// §4.1) and ChaCha20/Poly1305 (RFC 9053 §4.3, RFC 8439). The faster of the two backends on this machine; the
// @noble backend (aead-noble.ts) is its differential twin. AES-CCM is the CCM mode written out over two OpenSSL
// AES ciphers kept per key (see KeyedCcm), because node's own CCM cipher costs a cipher object and five native
// calls per message, which profiling showed as most of an OSCORE operation (docs/BENCHMARKS.md, "OSCORE").

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

const BLOCK = 16;

/**
 * CCM (RFC 3610 §2) for one key over two long-lived OpenSSL ciphers: AES-CBC with a zero IV for the CBC-MAC and
 * AES-ECB for the counter blocks, each driven by one update() per message. The CBC cipher keeps chaining across
 * messages, so the first block of every MAC input is XORed with the cipher's last output block; the chain then
 * starts from zero as a fresh CBC-MAC does (E(x ^ c ^ c) = E(x)). ECB is stateless. Neither cipher is ever
 * finalised; both live as long as the key Buffer they were made for (a WeakMap entry).
 */
class KeyedCcm {
  private readonly cbc: crypto.Cipher;
  private readonly ecb: crypto.Cipher;
  /** the CBC cipher's last output block */
  private readonly chain = Buffer.alloc(BLOCK);
  readonly #key: Buffer;

  constructor(bits: number, key: Uint8Array) {
    this.#key = Buffer.from(key);
    this.cbc = crypto.createCipheriv(`aes-${bits}-cbc`, key, Buffer.alloc(BLOCK)).setAutoPadding(false);
    this.ecb = crypto.createCipheriv(`aes-${bits}-ecb`, key, null).setAutoPadding(false);
  }

  /** set when an update() threw: the CBC chain is then unknown, so these ciphers are never used again */
  private broken = false;

  isFor(key: Uint8Array): boolean {
    if (this.broken) return false;
    const own = this.#key;
    if (key.length !== own.length) return false;
    let d = 0;
    for (let i = 0; i < own.length; i++) d |= own[i] ^ key[i];
    return d === 0;
  }

  /**
   * RFC 3610 §2.2: the CBC-MAC T of B0 ‖ l(a) ‖ a ‖ pad ‖ m ‖ pad (L = 15 - nonce length), built in the shared
   * scratch buffer, which is all zeros between calls (so the padding is there already) and is zeroed again after.
   */
  private mac(nonce: Uint8Array, tagLength: number, aad: Uint8Array, m: Uint8Array): Buffer {
    const L = 15 - nonce.length;
    const lenBytes = aad.length === 0 ? 0 : aad.length < 0xff00 ? 2 : 6;
    const aadBlocks = Math.ceil((lenBytes + aad.length) / BLOCK);
    const size = BLOCK * (1 + aadBlocks + Math.ceil(m.length / BLOCK));
    const b = scratch(macScratch, size);
    // Flags = 64*Adata + 8*M' + L', M' = (M-2)/2, L' = L-1; then the nonce and l(m) in L bytes.
    b[0] = (aad.length > 0 ? 0x40 : 0) | (((tagLength - 2) / 2) << 3) | (L - 1);
    for (let i = 0; i < nonce.length; i++) b[1 + i] = nonce[i];
    for (let i = 0, v = m.length; i < L && v > 0; i++, v = Math.floor(v / 256)) b[15 - i] = v & 0xff;
    if (lenBytes === 2) {
      b[BLOCK] = aad.length >> 8;
      b[BLOCK + 1] = aad.length & 0xff;
    } else if (lenBytes === 6) {
      b[BLOCK] = 0xff;
      b[BLOCK + 1] = 0xfe;
      b.writeUInt32BE(aad.length, BLOCK + 2);
    }
    b.set(aad, BLOCK + lenBytes);
    b.set(m, BLOCK * (1 + aadBlocks));
    // The CBC cipher keeps chaining across messages: cancel its last output so this MAC starts from zero.
    const chain = this.chain;
    for (let i = 0; i < BLOCK; i++) b[i] ^= chain[i];
    let out: Buffer | undefined;
    try {
      out = this.cbc.update(b);
    } finally {
      b.fill(0);
      // An update() that threw or returned other than the whole input (neither happens without padding) leaves
      // the chain unknown: never MAC from it again; forKey() makes new ciphers.
      if (out === undefined || out.length !== size) this.broken = true;
    }
    if (this.broken) throw new AeadError('ERR_AEAD_INPUT', 'AES-CCM: the cipher lost its state');
    for (let i = 0; i < BLOCK; i++) chain[i] = out[size - BLOCK + i];
    return chain;
  }

  /** RFC 3610 §2.3: S_0, S_1, ... = E(A_i), A_i = flags(L-1) ‖ nonce ‖ i, for a message of `length` bytes. */
  private keystream(nonce: Uint8Array, length: number): Buffer {
    const L = 15 - nonce.length;
    const size = BLOCK * (1 + Math.ceil(length / BLOCK));
    const a = scratch(ctrScratch, size);
    for (let o = 0, k = 0; o < size; o += BLOCK, k++) {
      a[o] = L - 1;
      for (let i = 0; i < nonce.length; i++) a[o + 1 + i] = nonce[i];
      for (let i = 1 + nonce.length; i < BLOCK - 2; i++) a[o + i] = 0;
      a[o + 14] = (k >> 8) & 0xff; // L >= 2; fewer than 2^16 blocks (checkLength)
      a[o + 15] = k & 0xff;
    }
    return this.ecb.update(a);
  }

  encrypt(nonce: Uint8Array, tagLength: number, aad: Uint8Array, plaintext: Uint8Array): Buffer {
    checkLength(nonce, plaintext.length);
    const t = this.mac(nonce, tagLength, aad, plaintext);
    const s = this.keystream(nonce, plaintext.length);
    const out = Buffer.allocUnsafe(plaintext.length + tagLength);
    for (let i = 0; i < plaintext.length; i++) out[i] = plaintext[i] ^ s[BLOCK + i];
    for (let i = 0; i < tagLength; i++) out[plaintext.length + i] = t[i] ^ s[i];
    return out;
  }

  decrypt(nonce: Uint8Array, tagLength: number, aad: Uint8Array, ciphertext: Uint8Array): Buffer {
    const n = ciphertext.length - tagLength;
    checkLength(nonce, n);
    const s = this.keystream(nonce, n);
    const plaintext = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) plaintext[i] = ciphertext[i] ^ s[BLOCK + i];
    const t = this.mac(nonce, tagLength, aad, plaintext);
    // Constant time over the tag: accumulate the differences instead of returning at the first one.
    let diff = 0;
    for (let i = 0; i < tagLength; i++) diff |= ciphertext[n + i] ^ s[i] ^ t[i];
    if (diff !== 0) {
      plaintext.fill(0); // RFC 3610 §2.5: release nothing of an unauthenticated message
      throw new AeadError('ERR_AEAD_AUTH', 'AES-CCM: authentication failed');
    }
    return plaintext;
  }
}

// Scratch buffers shared by every KeyedCcm (all work is synchronous, so one call at a time uses them), one per
// length in blocks up to SCRATCH_BLOCKS (at most 33 KiB each kind, made on first use): update() needs a Buffer of
// the exact length, and a kept one costs neither an allocation nor a view. MAC scratch buffers are zero at rest.
const SCRATCH_BLOCKS = 64;
const macScratch: Buffer[] = [];
const ctrScratch: Buffer[] = [];

function scratch(kept: Buffer[], size: number): Buffer {
  const blocks = size / BLOCK;
  if (blocks > SCRATCH_BLOCKS) return Buffer.alloc(size);
  return (kept[blocks] ??= Buffer.alloc(size));
}

function checkLength(nonce: Uint8Array, length: number): void {
  // RFC 3610 §2: l(m) < 2^(8L) (L = 2 for OSCORE's 13-byte nonces: 65,535 bytes); the counter written above covers
  // 2^16 blocks, far above a CoAP message.
  const L = 15 - nonce.length;
  if (length >= (L === 2 ? 0x10000 : BLOCK * 0xffff)) throw new RangeError('CCM: message too long for this nonce length');
}

function ccmAead(p: AeadParams): Aead {
  // One KeyedCcm per key Buffer: contexts pass the same Buffer for every message, so the ciphers are made once
  // per key. The entry remembers the key bytes, so a Buffer changed in place gets new ciphers, never stale ones.
  const cache = new WeakMap<Uint8Array, KeyedCcm>();
  const bits = p.keyLength * 8;
  const forKey = (key: Uint8Array): KeyedCcm => {
    let k = cache.get(key);
    if (!k || !k.isFor(key)) cache.set(key, (k = new KeyedCcm(bits, key)));
    return k;
  };
  return {
    ...p,
    backend: 'node',
    encrypt(key, nonce, aad, plaintext) {
      checkAeadInput(p, key, nonce);
      return forKey(key).encrypt(nonce, p.tagLength, aad, plaintext);
    },
    decrypt(key, nonce, aad, ciphertext) {
      checkAeadInput(p, key, nonce, ciphertext);
      try {
        return forKey(key).decrypt(nonce, p.tagLength, aad, ciphertext);
      } catch (err) {
        if (err instanceof RangeError) throw err;
        throw new AeadError('ERR_AEAD_AUTH', `${p.name}: authentication failed`);
      }
    },
  };
}

export function nodeAead(alg: number): Aead {
  const p = aeadParams(alg);
  if (p.name.startsWith('AES-CCM')) return ccmAead(p);
  const name = cipherName(p);
  return {
    ...p,
    backend: 'node',
    encrypt(key, nonce, aad, plaintext) {
      checkAeadInput(p, key, nonce);
      // The cast picks one overload; authTagLength is accepted for all three modes.
      const c = crypto.createCipheriv(name as crypto.CipherGCMTypes, key, nonce, { authTagLength: p.tagLength });
      c.setAAD(aad, { plaintextLength: plaintext.length });
      return Buffer.concat([c.update(input(plaintext)), c.final(), c.getAuthTag()]);
    },
    decrypt(key, nonce, aad, ciphertext) {
      checkAeadInput(p, key, nonce, ciphertext);
      const body = ciphertext.subarray(0, ciphertext.length - p.tagLength);
      const tag = ciphertext.subarray(ciphertext.length - p.tagLength);
      try {
        const d = crypto.createDecipheriv(name as crypto.CipherGCMTypes, key, nonce, { authTagLength: p.tagLength });
        d.setAuthTag(tag);
        d.setAAD(aad, { plaintextLength: body.length });
        const out = d.update(input(body));
        // GCM/ChaCha verify in final().
        d.final();
        return out;
      } catch {
        throw new AeadError('ERR_AEAD_AUTH', `${p.name}: authentication failed`);
      }
    },
  };
}
