// The compressed COSE object (RFC 8613 §5, §6.1): Partial IV encoding, OSCORE option value encoding and strict
// decoding (every malformed value is OscoreError ERR_OSCORE_DECODE with 4.02 "Failed to decode COSE"), the nonce
// (§5.2), and the hand-written deterministic CBOR writer against cbor-x (differential).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Encoder } from 'cbor-x';
import { CborValue, encodeCbor } from '../../src/oscore/cbor';
import { OscoreError, computeNonce, decodeOscoreOption, decodePartialIv, encodeOscoreOption, encodePartialIv } from '../../src/oscore';

const h = (hex: string): Buffer => Buffer.from(hex, 'hex');

function isDecodeError(err: unknown): boolean {
  return err instanceof OscoreError && err.code === 'ERR_OSCORE_DECODE' && err.responseCode === 0x82 && err.diagnostic === 'Failed to decode COSE';
}

describe('OSCORE COSE object', function () {
  describe('Partial IV (RFC 8613 §5)', function () {
    it('encodes the sequence number without leading zeros, 0 as 0x00', function () {
      const cases: [number, string][] = [
        [0, '00'],
        [1, '01'],
        [20, '14'],
        [255, 'ff'],
        [256, '0100'],
        [65535, 'ffff'],
        [65536, '010000'],
        [2 ** 32, '0100000000'],
        [2 ** 40 - 1, 'ffffffffff'],
      ];
      for (const [n, hex] of cases) {
        assert.equal(encodePartialIv(n).toString('hex'), hex, String(n));
        assert.equal(decodePartialIv(h(hex)), n);
      }
    });

    it('refuses numbers outside 0 .. 2^40 - 1 (§7.2.1)', function () {
      for (const n of [-1, 2 ** 40, 1.5, NaN]) assert.throws(() => encodePartialIv(n), RangeError);
    });
  });

  describe('OSCORE option value (RFC 8613 §6.1)', function () {
    it('round-trips random fields', function () {
      for (let i = 0; i < 500; i++) {
        const fields = {
          ...(i % 2 ? { piv: encodePartialIv(crypto.randomInt(0, 2 ** 40 - 1)) } : {}),
          ...(i % 3 ? { kid: crypto.randomBytes(crypto.randomInt(0, 8)) } : {}),
          ...(i % 5 === 0 ? { kidContext: crypto.randomBytes(crypto.randomInt(0, 20)) } : {}),
        };
        assert.deepEqual(decodeOscoreOption(encodeOscoreOption(fields)), fields);
      }
    });

    it('all flags zero means an empty value', function () {
      assert.equal(encodeOscoreOption({}).length, 0);
      assert.deepEqual(decodeOscoreOption(Buffer.alloc(0)), {});
    });

    it('decodes the Group Flag (bit 2, 0x20) for Group OSCORE to see', function () {
      // Group-mode request of RFC 10021 §4.3 (kid 0x25, PIV 5, kid context 0x44616c)
      assert.deepEqual(decodeOscoreOption(h('39050344616c25')), { group: true, piv: h('05'), kidContext: h('44616c'), kid: h('25') });
      assert.equal(encodeOscoreOption({ group: true, piv: h('05'), kid: h('25') }).toString('hex'), '290525');
    });

    const malformed: [string, string][] = [
      ['00', 'a zero flag byte in a non-empty value'],
      ['0005', 'zero flags followed by bytes'],
      ['8105', 'reserved bit 0 set'],
      ['4105', 'reserved bit 1 set'],
      ['06010203040506', 'reserved Partial IV length 6'],
      ['07', 'reserved Partial IV length 7'],
      ['03 0102'.replace(' ', ''), 'Partial IV shorter than n'],
      ['01', 'n = 1 without the Partial IV byte'],
      ['1101', 'h set but no kid context length'],
      ['110105aabb', 'kid context shorter than s'],
      ['0105aa', 'bytes after the Partial IV without k'],
      ['10', 'h set, nothing follows'],
    ];
    for (const [hex, why] of malformed) {
      it(`rejects ${hex} (${why}) with ERR_OSCORE_DECODE / 4.02`, function () {
        assert.throws(() => decodeOscoreOption(h(hex)), isDecodeError);
      });
    }

    it('rejects a value longer than 255 bytes', function () {
      assert.throws(() => decodeOscoreOption(Buffer.concat([h('09'), Buffer.alloc(300)])), isDecodeError);
    });

    it('never throws anything but OscoreError on random input (fuzz)', function () {
      for (let i = 0; i < 20000; i++) {
        const v = crypto.randomBytes(crypto.randomInt(0, 24));
        try {
          decodeOscoreOption(v);
        } catch (err) {
          assert.ok(isDecodeError(err), `${v.toString('hex')}: ${String(err)}`);
        }
      }
    });

    it('refuses to encode more than 255 bytes or a 6-byte Partial IV', function () {
      assert.throws(() => encodeOscoreOption({ piv: Buffer.alloc(6, 1) }), RangeError);
      assert.throws(() => encodeOscoreOption({ piv: h('01'), kidContext: Buffer.alloc(256) }), RangeError);
    });
  });

  describe('nonce (RFC 8613 §5.2)', function () {
    it('places S, the padded ID_PIV and the padded Partial IV before XOR with the Common IV', function () {
      const zeroIv = Buffer.alloc(13);
      assert.equal(computeNonce(h('0102'), h('0304'), zeroIv).toString('hex'), '02' + '0000000000' + '0102' + '0000000304');
      assert.equal(computeNonce(Buffer.alloc(0), h('14'), zeroIv).toString('hex'), '00' + '00000000000000' + '0000000014');
      assert.equal(computeNonce(h('0102030405060708'.slice(0, 14)), h('ffffffffff'), zeroIv).toString('hex'), '07' + '01020304050607' + 'ffffffffff');
      // 12-byte nonce (AES-GCM, ChaCha20/Poly1305): ID_PIV padded to 6 bytes
      assert.equal(computeNonce(h('aa'), h('01'), Buffer.alloc(12)).toString('hex'), '01' + '0000000000aa' + '0000000001');
    });

    it('rejects an ID_PIV longer than nonce length - 6', function () {
      assert.throws(() => computeNonce(Buffer.alloc(8), h('00'), Buffer.alloc(13)), RangeError);
      assert.throws(() => computeNonce(Buffer.alloc(7), h('00'), Buffer.alloc(12)), RangeError);
    });
  });

  describe('deterministic CBOR writer', function () {
    const cborx = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: false });

    function randomValue(depth: number): CborValue {
      const r = crypto.randomInt(0, depth > 2 ? 5 : 6);
      switch (r) {
        case 0: {
          // integers across every head size; cbor-x switches to float64 above 2^32, so stay below it here
          const bits = crypto.randomInt(0, 33);
          const n = Math.floor(Math.random() * 2 ** bits);
          return Math.random() < 0.5 ? n : -n - 1;
        }
        case 1:
          return crypto.randomBytes(crypto.randomInt(0, 300));
        case 2:
          return crypto.randomBytes(crypto.randomInt(0, 40)).toString('base64');
        case 3:
          return null;
        case 4:
          return ['Key', 'IV', 'Encrypt0', ''][crypto.randomInt(0, 4)];
        default:
          return Array.from({ length: crypto.randomInt(0, 30) }, () => randomValue(depth + 1));
      }
    }

    it('agrees with cbor-x (untagged byte strings) on random values', function () {
      for (let i = 0; i < 2000; i++) {
        const v = randomValue(0);
        assert.equal(encodeCbor(v).toString('hex'), Buffer.from(cborx.encode(v)).toString('hex'), JSON.stringify(v));
      }
    });

    it('writes integers at and above 2^32 as integers (where cbor-x would write float64)', function () {
      assert.equal(encodeCbor(2 ** 32).toString('hex'), '1b0000000100000000');
      assert.equal(encodeCbor(2 ** 40).toString('hex'), '1b0000010000000000');
      assert.equal(encodeCbor(-(2 ** 32) - 1).toString('hex'), '3b0000000100000000');
    });

    it('rejects non-integers', function () {
      assert.throws(() => encodeCbor(1.5), RangeError);
      assert.throws(() => encodeCbor({} as unknown as CborValue), TypeError);
    });
  });
});
