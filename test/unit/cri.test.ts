// CRIs for Reply-From (groupcomm-proxy-07 §3, CRIs of draft-ietf-core-href) and the legacy Response-Forwarding
// tp_info (groupcomm-proxy-00 §3), against bytes derived by hand from the drafts' CDDL.

import assert from 'node:assert/strict';
import { CborStructureError, bytesToIp, decodeReplyFrom, decodeResponseForwarding, encodeCri, encodeReplyFrom, encodeResponseForwarding } from '../../src/cbor/cri';

const hex = (b: Buffer) => b.toString('hex');

describe('Reply-From CRIs (groupcomm-proxy-07 §3)', function () {
  it('one element: coap://[2001:db8::ab]:61616 (bytes derived from groupcomm-proxy-07 §3)', function () {
    const v = encodeReplyFrom({ scheme: 'coap', host: '2001:db8::ab', port: 61616 });
    assert.equal(hex(v), '8220825020010db80000000000000000000000ab19f0b0');
    assert.deepEqual(decodeReplyFrom(v), { target: { scheme: 'coap', host: '2001:db8::ab', zone: undefined, port: 61616 }, reference: undefined });
  });

  it('two elements: coap+tcp://[2001:db8::1] then //[2001:db8::ab]:61616 (bytes derived from groupcomm-proxy-07 §3)', function () {
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

  it('accepts the flat authority of some draft examples when decoding', function () {
    const flat = Buffer.from('8320447f000002199c40', 'hex'); // [-1, h'7f000002', 40000]
    assert.deepEqual(decodeReplyFrom(flat).target, { scheme: 'coap', host: '127.0.0.2', zone: undefined, port: 40000 });
  });

  it('a path-only second element (§3, §6.2): [null, true, path], [null, null, path] and [true, path] decode; it encodes as [null, true, path]', function () {
    const target = '822081447f000002'; // coap://127.0.0.2
    for (const ref of ['83f6f5826467727031616c', '83f6f6826467727031616c', '82f5826467727031616c']) {
      const d = decodeReplyFrom(Buffer.from(target + ref, 'hex'));
      assert.deepEqual(d.reference, { scheme: null, host: '', path: ['grp1', 'l'] }, ref);
      assert.equal(d.target.host, '127.0.0.2');
    }
    const v = encodeReplyFrom({ scheme: 'coap', host: '127.0.0.2' }, { scheme: null, host: '', path: ['grp1', 'l'] });
    assert.equal(hex(v), target + '83f6f5826467727031616c');
    // a host name in element 1 is fine when element 2 carries no authority
    assert.equal(decodeReplyFrom(Buffer.from('822081676578616d706c65' + '82f5816161', 'hex')).target.host, 'example');
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
    ['822081447f00000284f6f58161618161', 'a path-only second element with a query'],
    ['822081447f00000282f58101', 'a path-only second element whose path is not text'],
    ['822081676578616d706c6582f681447f000002', 'a host name in element 1 with an authority in element 2'],
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
