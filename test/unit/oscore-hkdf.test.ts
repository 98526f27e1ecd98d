// HKDF (RFC 5869) as OSCORE derives keys with it (RFC 8613 §3.2.1) and Group OSCORE its countersignature keystream
// (RFC 10021 §4.2): the HMAC-over-crypto.hash form against RFC 5869 App. A and, differentially, against node:crypto's
// hkdfSync on random inputs (keys longer than a hash block, empty salts and infos, outputs of several blocks).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { hkdf, hkdfReference } from '../../src/oscore/hkdf';

const h = (hex: string): Buffer => Buffer.from(hex, 'hex');

describe('HKDF (RFC 5869)', function () {
  it('RFC 5869 A.1: basic test case with SHA-256', function () {
    const okm = hkdf('SHA-256', Buffer.alloc(22, 0x0b), h('000102030405060708090a0b0c'), h('f0f1f2f3f4f5f6f7f8f9'), 42);
    assert.equal(okm.toString('hex'), '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
  });

  it('RFC 5869 A.3: SHA-256 with zero-length salt and info', function () {
    const okm = hkdf('SHA-256', Buffer.alloc(22, 0x0b), Buffer.alloc(0), Buffer.alloc(0), 42);
    assert.equal(okm.toString('hex'), '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8');
  });

  for (const hash of ['SHA-256', 'SHA-512'] as const) {
    it(`${hash}: equals node:crypto's hkdfSync on random inputs`, function () {
      const lengths = [0, 1, 5, 16, 32, 64, 65, 128, 129, 200];
      for (let i = 0; i < 200; i++) {
        const ikm = crypto.randomBytes(lengths[i % lengths.length] || 1);
        const salt = crypto.randomBytes(lengths[(i * 3) % lengths.length]);
        const info = crypto.randomBytes(lengths[(i * 7) % lengths.length]);
        const length = 1 + crypto.randomInt(0, 300);
        assert.equal(hkdf(hash, ikm, salt, info, length).toString('hex'), hkdfReference(hash, ikm, salt, info, length).toString('hex'), `case ${i}`);
      }
    });
  }

  it('leaves no key material in Node\'s shared Buffer pool: neither the IKM (a Master Secret) nor the key ^ ipad / opad blocks', function () {
    // hkdf() builds its HMAC blocks with Buffer.allocUnsafe, which slices Node's shared pool; whatever pool(s) it
    // used are the one current before and the one current after (it allocates far less than a pool).
    const poolBefore = Buffer.allocUnsafe(1).buffer;
    const ikm = crypto.randomBytes(32);
    const salt = crypto.randomBytes(16);
    const okm = hkdf('SHA-256', ikm, salt, Buffer.from('info'), 16);
    const poolAfter = Buffer.allocUnsafe(1).buffer;
    assert.equal(okm.toString('hex'), hkdfReference('SHA-256', ikm, salt, Buffer.from('info'), 16).toString('hex'));
    const xored = (pad: number) => Uint8Array.from(salt, (b) => b ^ pad); // not a Buffer: not itself in the pool
    for (const pool of new Set([poolBefore, poolAfter])) {
      const bytes = Buffer.from(pool);
      assert.equal(bytes.indexOf(ikm), -1, 'the IKM is left in the pool');
      assert.equal(bytes.indexOf(xored(0x36)), -1, 'salt ^ ipad is left in the pool');
      assert.equal(bytes.indexOf(xored(0x5c)), -1, 'salt ^ opad is left in the pool');
    }
  });

  it('rejects output lengths outside 1..255 * HashLen', function () {
    assert.throws(() => hkdf('SHA-256', Buffer.alloc(16), Buffer.alloc(0), Buffer.alloc(0), 0), RangeError);
    assert.throws(() => hkdf('SHA-256', Buffer.alloc(16), Buffer.alloc(0), Buffer.alloc(0), 255 * 32 + 1), RangeError);
  });
});
