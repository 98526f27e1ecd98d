// AEAD backends: node:crypto and @noble/ciphers (with the hand-written CCM) give identical output for every
// supported COSE algorithm on random inputs and decrypt each other's output (differential, @noble style); the
// CCM mode reproduces RFC 3610 §8; every tag failure is AeadError('ERR_AEAD_AUTH').

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { AEAD_ALGORITHMS, Aead, AeadError, createAead, nobleAead, nodeAead } from '../../src/oscore';
import { RFC3610 } from '../fixtures/oscore/rfc8613-vectors';

const h = (hex: string): Buffer => Buffer.from(hex, 'hex');
const rand = (n: number): Buffer => crypto.randomBytes(n);
const ALGS = Object.values(AEAD_ALGORITHMS);

function isAuthError(err: unknown): boolean {
  return err instanceof AeadError && err.code === 'ERR_AEAD_AUTH';
}

describe('OSCORE AEAD backends', function () {
  describe('AES-CCM against RFC 3610 §8 (M = 8, L = 2: the parameters of AES-CCM-16-64-128)', function () {
    for (const backend of [nodeAead(10), nobleAead(10)]) {
      for (const v of RFC3610.vectors) {
        it(`${v.name} (${backend.backend})`, function () {
          const packet = h(v.packet);
          const aad = packet.subarray(0, 8);
          const pt = packet.subarray(8);
          assert.equal(backend.encrypt(h(RFC3610.key), h(v.nonce), aad, pt).toString('hex'), v.output);
          assert.deepEqual(backend.decrypt(h(RFC3610.key), h(v.nonce), aad, h(v.output)), pt);
        });
      }
    }
  });

  for (const p of ALGS) {
    describe(`${p.name} (COSE alg ${p.alg})`, function () {
      const node = nodeAead(p.alg);
      const noble = nobleAead(p.alg);

      it('node and noble agree on random keys, nonces, AAD and plaintexts, and decrypt each other', function () {
        // lengths around block boundaries, empty inputs, and AAD long enough for several CBC-MAC blocks
        const sizes = [0, 1, 15, 16, 17, 31, 32, 33, 100, 257];
        for (let i = 0; i < 60; i++) {
          const key = rand(p.keyLength);
          const nonce = rand(p.nonceLength);
          const aad = rand(i < sizes.length ? sizes[i] : crypto.randomInt(0, 80));
          const pt = rand(i < sizes.length ? sizes[sizes.length - 1 - i] : crypto.randomInt(0, 300));
          const a = node.encrypt(key, nonce, aad, pt);
          const b = noble.encrypt(key, nonce, aad, pt);
          assert.equal(a.toString('hex'), b.toString('hex'), `iteration ${i}`);
          assert.equal(a.length, pt.length + p.tagLength);
          assert.deepEqual(noble.decrypt(key, nonce, aad, a), pt);
          assert.deepEqual(node.decrypt(key, nonce, aad, b), pt);
        }
      });

      it('agree with an AAD longer than 0xff00 bytes (CCM six-byte AAD length encoding)', function () {
        const key = rand(p.keyLength);
        const nonce = rand(p.nonceLength);
        const aad = rand(0xff00 + 3);
        const pt = rand(40);
        const a = node.encrypt(key, nonce, aad, pt);
        assert.deepEqual(noble.encrypt(key, nonce, aad, pt), a);
        assert.deepEqual(noble.decrypt(key, nonce, aad, a), pt);
      });

      for (const backend of [node, noble]) {
        it(`tag failures throw AeadError ERR_AEAD_AUTH (${backend.backend})`, function () {
          const key = rand(p.keyLength);
          const nonce = rand(p.nonceLength);
          const aad = rand(20);
          const pt = rand(33);
          const ct = backend.encrypt(key, nonce, aad, pt);
          const flip = (b: Buffer, i: number): Buffer => {
            const c = Buffer.from(b);
            c[i] ^= 0x01;
            return c;
          };
          assert.throws(() => backend.decrypt(key, nonce, aad, flip(ct, 0)), isAuthError, 'ciphertext bit');
          assert.throws(() => backend.decrypt(key, nonce, aad, flip(ct, ct.length - 1)), isAuthError, 'tag bit');
          assert.throws(() => backend.decrypt(key, nonce, flip(aad, 5), ct), isAuthError, 'aad bit');
          assert.throws(() => backend.decrypt(key, flip(nonce, 3), aad, ct), isAuthError, 'nonce bit');
          assert.throws(() => backend.decrypt(flip(key, 0), nonce, aad, ct), isAuthError, 'key bit');
          assert.throws(() => backend.decrypt(key, nonce, aad, ct.subarray(0, p.tagLength - 1)), isAuthError, 'shorter than the tag');
          assert.throws(() => backend.decrypt(key, nonce, aad, Buffer.alloc(0)), isAuthError, 'empty');
          assert.throws(() => backend.decrypt(key, nonce, aad, ct.subarray(1)), isAuthError, 'truncated');
        });

        it(`rejects wrong key and nonce lengths with ERR_AEAD_INPUT (${backend.backend})`, function () {
          const isInput = (err: unknown) => err instanceof AeadError && err.code === 'ERR_AEAD_INPUT';
          assert.throws(() => backend.encrypt(rand(p.keyLength + 1), rand(p.nonceLength), Buffer.alloc(0), Buffer.alloc(1)), isInput);
          assert.throws(() => backend.encrypt(rand(p.keyLength), rand(p.nonceLength - 1), Buffer.alloc(0), Buffer.alloc(1)), isInput);
          assert.throws(() => backend.decrypt(rand(p.keyLength), rand(p.nonceLength + 1), Buffer.alloc(0), rand(40)), isInput);
        });
      }

      it('exposes the algorithm parameters of RFC 9053', function () {
        for (const a of [node, noble] as Aead[]) {
          assert.equal(a.alg, p.alg);
          assert.equal(a.keyLength, p.keyLength);
          assert.equal(a.nonceLength, p.nonceLength);
          assert.equal(a.tagLength, p.tagLength);
        }
      });
    });
  }

  describe('AES-CCM on ciphers kept per key (aead-node.ts) against OpenSSL\'s own CCM cipher', function () {
    /** node:crypto's aes-*-ccm, one cipher object per message: the reference. */
    function openSslCcm(bits: number, tagLength: number, key: Buffer, nonce: Buffer, aad: Buffer, pt: Buffer): Buffer {
      const c = crypto.createCipheriv(`aes-${bits}-ccm` as crypto.CipherCCMTypes, key, nonce, { authTagLength: tagLength });
      c.setAAD(aad, { plaintextLength: pt.length });
      return Buffer.concat([c.update(pt.length ? pt : Buffer.alloc(1).subarray(0, 0)), c.final(), c.getAuthTag()]);
    }

    for (const alg of [10, 11, 30, 31]) {
      const p = AEAD_ALGORITHMS[alg];
      it(`${p.name}: a run of messages on two interleaved keys, with failed decryptions between them, matches message by message`, function () {
        const aead = nodeAead(alg);
        const keys = [rand(p.keyLength), rand(p.keyLength)];
        for (let i = 0; i < 300; i++) {
          const key = keys[i % 3 === 0 ? 1 : 0]; // the MAC chain of each key's cipher carries over between its messages
          const nonce = rand(p.nonceLength);
          const aad = rand(crypto.randomInt(0, 60));
          const pt = rand(i % 17 === 0 ? 0 : crypto.randomInt(1, 200));
          const expected = openSslCcm(p.keyLength * 8, p.tagLength, key, nonce, aad, pt);
          const ct = aead.encrypt(key, nonce, aad, pt);
          assert.equal(ct.toString('hex'), expected.toString('hex'), `message ${i}`);
          if (i % 5 === 0) {
            const bad = Buffer.from(ct);
            bad[crypto.randomInt(0, bad.length)] ^= 0x10;
            assert.throws(() => aead.decrypt(key, nonce, aad, bad), isAuthError, `tampered message ${i}`);
          }
          assert.deepEqual(aead.decrypt(key, nonce, aad, expected), pt, `message ${i}`);
        }
      });
    }

    it('a key Buffer changed in place encrypts with its new bytes, not with ciphers made for the old ones', function () {
      const aead = nodeAead(10);
      const key = rand(16);
      const nonce = rand(13);
      const pt = rand(40);
      aead.encrypt(key, nonce, Buffer.alloc(0), pt);
      key[3] ^= 0xff;
      assert.deepEqual(aead.encrypt(key, nonce, Buffer.alloc(0), pt), openSslCcm(128, 8, key, nonce, Buffer.alloc(0), pt));
    });
  });

  it('covers the algorithms the brief names: 10, 30, 1, 3, 24', function () {
    for (const alg of [10, 30, 1, 3, 24]) assert.ok(AEAD_ALGORITHMS[alg], `alg ${alg}`);
  });

  it('an unknown algorithm is AeadError ERR_AEAD_UNSUPPORTED on both backends', function () {
    for (const backend of ['node', 'noble'] as const) {
      assert.throws(() => createAead(99, backend), (err: unknown) => err instanceof AeadError && err.code === 'ERR_AEAD_UNSUPPORTED');
    }
  });
});
