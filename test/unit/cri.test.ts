// CRIs for Reply-From and the legacy Response-Forwarding tp_info, against SPEC-DIGEST §1.1 [DERIVED] bytes.

import assert from 'node:assert/strict';
import { CborStructureError, bytesToIp, decodeReplyFrom, decodeResponseForwarding, encodeCri, encodeReplyFrom, encodeResponseForwarding } from '../../src/cbor/cri';

const hex = (b: Buffer) => b.toString('hex');

describe('Reply-From CRIs (groupcomm-proxy-07 §3)', function () {
  it('one element: coap://[2001:db8::ab]:61616 (SPEC-DIGEST §1.1 [DERIVED])', function () {
    const v = encodeReplyFrom({ scheme: 'coap', host: '2001:db8::ab', port: 61616 });
    assert.equal(hex(v), '8220825020010db80000000000000000000000ab19f0b0');
    assert.deepEqual(decodeReplyFrom(v), { target: { scheme: 'coap', host: '2001:db8::ab', zone: undefined, port: 61616 }, reference: undefined });
  });

  it('two elements: coap+tcp://[2001:db8::1] then //[2001:db8::ab]:61616 (SPEC-DIGEST §1.1 [DERIVED])', function () {
    const v = encodeReplyFrom({ scheme: 'coap+tcp', host: '2001:db8::1' }, { scheme: null, host: '2001:db8::ab', port: 61616 });
    assert.equal(hex(v), '8226815020010db800000000000000000000000182f6825020010db80000000000000000000000ab19f0b0');
    const d = decodeReplyFrom(v);
    assert.equal(d.target.scheme, 'coap+tcp');
    assert.equal(d.target.port, 5683); // default of the scheme
    assert.equal(d.reference!.host, '2001:db8::ab');
    assert.equal(d.reference!.port, 61616);
  });

  it('leaves out the default port and keeps IPv4 as 4 bytes', function () {
    assert.equal(hex(encodeCri({ scheme: 'coap', host: '127.0.0.2', port: 5683 })), '822081447f000002');
    assert.equal(hex(encodeCri({ scheme: 'coap', host: '127.0.0.2', port: 40000 })), '822082447f000002199c40');
  });

  it('accepts the flat authority of the draft examples when decoding (SPEC-DIGEST §6 item 1)', function () {
    const flat = Buffer.from('8320447f000002199c40', 'hex'); // [-1, h'7f000002', 40000]
    assert.deepEqual(decodeReplyFrom(flat).target, { scheme: 'coap', host: '127.0.0.2', zone: undefined, port: 40000 });
  });

  it('carries IPv6 zone ids', function () {
    const v = encodeReplyFrom({ scheme: 'coap', host: 'fe80::11', zone: 'veth0', port: 5683 });
    assert.equal(decodeReplyFrom(v).target.zone, 'veth0');
  });

  const bad: [string, string][] = [
    ['', 'empty'],
    ['ff', 'not CBOR'],
    ['8220', 'no authority'],
    ['82208143010203', 'a 3-byte address'],
    ['822081447f0000021a00010000', 'port 65536'],
    ['8201447f000002', 'positive scheme'],
    ['822081447f000002822081447f000002822081447f000002', 'three elements'],
    ['822081447f000002822081447f000002', 'second element with a scheme'],
  ];
  for (const [h, why] of bad) {
    it(`rejects ${why} with a typed error`, function () {
      assert.throws(() => decodeReplyFrom(Buffer.from(h, 'hex')), CborStructureError);
    });
  }

  it('formats IPv6 per RFC 5952', function () {
    assert.equal(bytesToIp(Buffer.from('20010db8000000000000000000000001', 'hex')), '2001:db8::1');
    assert.equal(bytesToIp(Buffer.from('fe800000000000000000000000000011', 'hex')), 'fe80::11');
    assert.equal(bytesToIp(Buffer.from('00000000000000000000000000000001', 'hex')), '::1');
  });
});

describe('legacy Response-Forwarding tp_info (groupcomm-proxy-00 §3)', function () {
  it('[1, 260(h\'...\')] with the port left out when it is 5683', function () {
    const v = encodeResponseForwarding('192.0.2.5', 5683);
    assert.equal(hex(v), '8201d9010444c0000205');
    assert.deepEqual(decodeResponseForwarding(v), { address: '192.0.2.5', port: 5683 });
  });
  it('null port means the group port of the request; other ports are given', function () {
    const n = encodeResponseForwarding('192.0.2.5', 7000, 7000);
    assert.equal(hex(n), '8301d9010444c0000205f6');
    assert.deepEqual(decodeResponseForwarding(n, 7000), { address: '192.0.2.5', port: 7000 });
    assert.throws(() => decodeResponseForwarding(n), CborStructureError);
    assert.deepEqual(decodeResponseForwarding(encodeResponseForwarding('192.0.2.5', 61616, 7000)), { address: '192.0.2.5', port: 61616 });
  });
  it('rejects a wrong tag or tp_id', function () {
    assert.throws(() => decodeResponseForwarding(Buffer.from('8202d9010444c0000205', 'hex')), CborStructureError);
    assert.throws(() => decodeResponseForwarding(Buffer.from('8201d9010544c0000205', 'hex')), CborStructureError);
  });
});
