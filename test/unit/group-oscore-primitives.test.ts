// The primitives under Group OSCORE (RFC 10021 §2.1.7, §2.5): RFC 8032 §7.1 Ed25519 and RFC 7748 §6.1 X25519
// vectors on node:crypto, the Ed25519-to-Montgomery map (§2.5.2), CCS credentials, and differential tests of
// Ed25519, ECDSA P-256, X25519 and P-256 ECDH between node:crypto and @noble/curves (an independent JavaScript
// implementation), on random keys and messages.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { ed25519, edwardsToMontgomeryPriv, edwardsToMontgomeryPub, x25519 } from '@noble/curves/ed25519';
import { p256 } from '@noble/curves/p256';
import {
  COSE_ALG,
  COSE_CRV,
  COSE_KTY,
  PublicKeyInfo,
  ed25519PrivateToX25519,
  ed25519PublicToX25519,
  encodeCcs,
  generateGroupKeyPair,
  parseCcs,
  privateKeyObject,
  publicKeyObject,
  publicKeyOf,
  sharedSecret,
  sign,
  verify,
} from '../../src/oscore/group';
import { OscoreError } from '../../src/oscore';

const h = (x: string): Buffer => Buffer.from(x, 'hex');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const ed = (x: Buffer): PublicKeyInfo => ({ kty: COSE_KTY.OKP, crv: COSE_CRV.Ed25519, x });
const xk = (x: Buffer): PublicKeyInfo => ({ kty: COSE_KTY.OKP, crv: COSE_CRV.X25519, x });

// RFC 8032 §7.1 TEST 1-3.
const RFC8032 = [
  { sk: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', pk: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', msg: '', sig: 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b' },
  { sk: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb', pk: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c', msg: '72', sig: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00' },
  { sk: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7', pk: 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025', msg: 'af82', sig: '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a' },
];

// RFC 7748 §6.1.
const RFC7748 = {
  alicePriv: '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a',
  alicePub: '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
  bobPriv: '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb',
  bobPub: 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f',
  shared: '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742',
};

describe('Group OSCORE primitives', function () {
  describe('vectors', function () {
    for (const [i, v] of RFC8032.entries()) {
      it(`RFC 8032 §7.1 TEST ${i + 1}: Ed25519 public key, signature and verification on node:crypto`, function () {
        assert.equal(hex(publicKeyOf('Ed25519', h(v.sk)).x), v.pk);
        const sig = sign(COSE_ALG.EdDSA, privateKeyObject(ed(h(v.pk)), h(v.sk)), h(v.msg));
        assert.equal(hex(sig), v.sig);
        assert.equal(verify(COSE_ALG.EdDSA, publicKeyObject(ed(h(v.pk))), h(v.msg), sig), true);
        const bad = Buffer.from(sig);
        bad[10] ^= 1;
        assert.equal(verify(COSE_ALG.EdDSA, publicKeyObject(ed(h(v.pk))), h(v.msg), bad), false);
      });
    }

    it('RFC 7748 §6.1: X25519 public keys and the shared secret from both sides', function () {
      assert.equal(hex(publicKeyOf('X25519', h(RFC7748.alicePriv)).x), RFC7748.alicePub);
      assert.equal(hex(publicKeyOf('X25519', h(RFC7748.bobPriv)).x), RFC7748.bobPub);
      assert.equal(hex(sharedSecret(xk(h(RFC7748.alicePub)), h(RFC7748.alicePriv), xk(h(RFC7748.bobPub)))), RFC7748.shared);
      assert.equal(hex(sharedSecret(xk(h(RFC7748.bobPub)), h(RFC7748.bobPriv), xk(h(RFC7748.alicePub)))), RFC7748.shared);
    });

    it('RFC 10021 §2.5.2: y = 1 and y = -1 have no usable Montgomery form and are refused', function () {
      const one = Buffer.alloc(32);
      one[0] = 1;
      assert.throws(() => ed25519PublicToX25519(one), OscoreError);
      // -1 mod p = p - 1 = 2^255 - 20, little-endian
      const minusOne = Buffer.from('ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', 'hex');
      assert.throws(() => ed25519PublicToX25519(minusOne), OscoreError);
    });
  });

  describe('authentication credentials (CCS)', function () {
    it('a generated Ed25519 key pair: 32-byte private key, a CCS that parses back to the same public key, and signatures that verify', function () {
      const kp = generateGroupKeyPair({ subject: 'lamp-1' });
      const info = parseCcs(kp.credential);
      assert.equal(info.kty, COSE_KTY.OKP);
      assert.equal(info.crv, COSE_CRV.Ed25519);
      assert.equal(info.alg, COSE_ALG.EdDSA);
      assert.equal(info.sub, 'lamp-1');
      assert.equal(kp.privateKey.length, 32);
      assert.deepEqual(info.x, publicKeyOf('Ed25519', kp.privateKey).x);
      const sig = sign(COSE_ALG.EdDSA, privateKeyObject(info, kp.privateKey), Buffer.from('m'));
      assert.ok(verify(COSE_ALG.EdDSA, publicKeyObject(info), Buffer.from('m'), sig));
    });

    it('a generated P-256 key pair: EC2 COSE key with x and y, ES256 signatures of 64 bytes that verify', function () {
      const kp = generateGroupKeyPair({ signatureAlg: COSE_ALG.ES256 });
      const info = parseCcs(kp.credential);
      assert.equal(info.kty, COSE_KTY.EC2);
      assert.equal(info.crv, COSE_CRV.P256);
      assert.equal(info.y?.length, 32);
      const sig = sign(COSE_ALG.ES256, privateKeyObject(info, kp.privateKey), Buffer.from('m'));
      assert.equal(sig.length, 64);
      assert.ok(verify(COSE_ALG.ES256, publicKeyObject(info), Buffer.from('m'), sig));
    });

    it('malformed or unsupported credentials are typed errors, never crashes', function () {
      for (const bad of [Buffer.alloc(0), h('ff'), h('a0'), h('a108a0'), encodeCcs({ kty: 1, crv: 7, x: Buffer.alloc(57) }), h('a108a101a3010120062158' + '1f' + '00'.repeat(31))]) {
        assert.throws(() => parseCcs(bad), (e: unknown) => e instanceof OscoreError, hex(bad));
      }
    });
  });

  describe('differential: node:crypto against @noble/curves', function () {
    const N = 25;

    it(`Ed25519: ${N} random keys and messages give identical public keys and signatures, and each side verifies the other's`, function () {
      for (let i = 0; i < N; i++) {
        const sk = crypto.randomBytes(32);
        const msg = crypto.randomBytes(i * 7);
        const pub = publicKeyOf('Ed25519', sk);
        assert.equal(hex(pub.x), hex(ed25519.getPublicKey(sk)));
        const ours = sign(COSE_ALG.EdDSA, privateKeyObject(pub, sk), msg);
        assert.equal(hex(ours), hex(ed25519.sign(msg, sk)));
        assert.ok(ed25519.verify(ours, msg, pub.x));
        const flipped = Buffer.from(msg.length ? msg : Buffer.from([0]));
        flipped[0] ^= 0x80;
        assert.equal(verify(COSE_ALG.EdDSA, publicKeyObject(pub), flipped, ours), false);
      }
    });

    it(`ECDSA P-256 / SHA-256: ${N} random keys; noble verifies node's signatures and node verifies noble's`, function () {
      for (let i = 0; i < N; i++) {
        const sk = Buffer.from(p256.utils.randomPrivateKey());
        const msg = crypto.randomBytes(1 + i * 5);
        const pub = publicKeyOf('P-256', sk);
        const nobleUncompressed = Buffer.from(p256.getPublicKey(sk, false));
        assert.equal(hex(Buffer.concat([h('04'), pub.x, pub.y!])), hex(nobleUncompressed));
        const digest = crypto.createHash('sha256').update(msg).digest();
        const ours = sign(COSE_ALG.ES256, privateKeyObject(pub, sk), msg);
        assert.ok(p256.verify(ours, digest, nobleUncompressed, { lowS: false }), 'noble verifies node');
        const theirs = Buffer.from(p256.sign(digest, sk).toCompactRawBytes());
        assert.ok(verify(COSE_ALG.ES256, publicKeyObject(pub), msg, theirs), 'node verifies noble');
        assert.equal(verify(COSE_ALG.ES256, publicKeyObject(pub), Buffer.concat([msg, h('00')]), theirs), false);
      }
    });

    it(`X25519: ${N} random key pairs give the same shared secret as noble`, function () {
      for (let i = 0; i < N; i++) {
        const a = crypto.randomBytes(32);
        const b = crypto.randomBytes(32);
        const bPub = publicKeyOf('X25519', b);
        assert.equal(hex(bPub.x), hex(x25519.getPublicKey(b)));
        assert.equal(hex(sharedSecret(publicKeyOf('X25519', a), a, bPub)), hex(x25519.getSharedSecret(a, bPub.x)));
      }
    });

    it(`Ed25519 keys mapped to Montgomery form (RFC 10021 §2.5.2): ${N} random pairs agree with noble's maps and with each other`, function () {
      for (let i = 0; i < N; i++) {
        const a = crypto.randomBytes(32);
        const b = crypto.randomBytes(32);
        const aPub = publicKeyOf('Ed25519', a);
        const bPub = publicKeyOf('Ed25519', b);
        assert.equal(hex(ed25519PublicToX25519(bPub.x)), hex(edwardsToMontgomeryPub(bPub.x)));
        // noble returns the clamped scalar; X25519 clamps anyway, so compare the results of using them
        const ours = sharedSecret(aPub, a, bPub);
        assert.equal(hex(ours), hex(x25519.getSharedSecret(edwardsToMontgomeryPriv(a), edwardsToMontgomeryPub(bPub.x))));
        assert.equal(hex(ours), hex(x25519.getSharedSecret(ed25519PrivateToX25519(a), edwardsToMontgomeryPub(bPub.x))));
        assert.equal(hex(ours), hex(sharedSecret(bPub, b, aPub)), 'symmetric');
      }
    });

    it(`P-256 ECDH: ${N} random key pairs give noble's x-coordinate`, function () {
      for (let i = 0; i < N; i++) {
        const a = Buffer.from(p256.utils.randomPrivateKey());
        const b = Buffer.from(p256.utils.randomPrivateKey());
        const bPub = publicKeyOf('P-256', b);
        const theirs = p256.getSharedSecret(a, Buffer.concat([h('04'), bPub.x, bPub.y!]), true).subarray(1);
        assert.equal(hex(sharedSecret(publicKeyOf('P-256', a), a, bPub)), hex(theirs));
      }
    });
  });
});
