// Informative response payload (observe-multicast-notifications-15 §4.2, CDDL and keys of -15) and the counting
// arithmetic (§8.2, worked example §8.3.3), against hand-computed bytes.

import assert from 'node:assert/strict';
import { decodeCbor, encodeCbor, toPlain } from '../../src/cbor/cbor';
import { CborStructureError } from '../../src/cbor/cri';
import { IR_KEYS, decodeInformativeResponse, encodeInformativeResponse, encodeTpInfo } from '../../src/cbor/informative-response';
import { encodeCodeOptionsPayload } from '../../src/coap/codec';
import { feedbackDivider, updatedCount } from '../../src/observe/group-observation';

const hex = (b: Buffer) => b.toString('hex');
const TP = { server: { host: '2001:db8::ab', port: 5683 }, client: { host: 'ff35:30:2001:db8::23', port: 61616 }, token: Buffer.from([0x7b]) };

describe('informative response (observe-multicast-notifications-15 §4.2)', function () {
  it('pins the -15 keys (§11): tp_info 0, ph_req 1, last_notif 2, next_not_before 3, ending 4', function () {
    assert.deepEqual([IR_KEYS.tp_info, IR_KEYS.ph_req, IR_KEYS.last_notif, IR_KEYS.next_not_before, IR_KEYS.ending], [0, 1, 2, 3, 4]);
  });

  it('tp_info of §4.2.1.1 with nested authorities (bytes derived from the §4.2.1.1 CDDL)', function () {
    const bytes = encodeCbor(encodeTpInfo(TP));
    assert.equal(hex(bytes), '838220815020010db80000000000000000000000ab82208250ff35003020010db8000000000000002319f0b0417b');
  });

  it('a whole payload, by hand: {0: tp_info, 1: ph_req GET Observe 0 /r, 2: last_notif 2.05 "5678"}', function () {
    const phReq = encodeCodeOptionsPayload(0x01, [{ number: 6, value: Buffer.alloc(0) }, { number: 11, value: Buffer.from('r') }], Buffer.alloc(0));
    assert.equal(hex(phReq), '01605172'); // code GET | Observe (delta 6, len 0) | Uri-Path (delta 5, len 1) "r"
    const lastNotif = Buffer.from('45ff35363738', 'hex'); // 2.05 | 0xff | "5678" (the §7 example payload)
    const payload = encodeInformativeResponse({ tpInfo: TP, phReq, lastNotif });
    // a3 (map of 3) | 00 tp_info | 01 44 ph_req | 02 46 last_notif
    assert.equal(hex(payload), 'a300838220815020010db80000000000000000000000ab82208250ff35003020010db8000000000000002319f0b0417b' + '014401605172' + '024645ff35363738');
    const d = decodeInformativeResponse(payload);
    assert.deepEqual(d.tpInfo, { server: { host: '2001:db8::ab', port: 5683, zone: undefined }, client: { host: 'ff35:30:2001:db8::23', port: 61616, zone: undefined }, token: Buffer.from([0x7b]) });
    assert.equal(hex(d.phReq!), '01605172');
    assert.equal(hex(d.lastNotif!), '45ff35363738');
  });

  it('a tp_info of [tpi_server] alone (§4.2.1: tpi_details is optional) decodes to tpServer without tpInfo', function () {
    // {0: [[-1, [h'20010db8...ab']]]}
    const d = decodeInformativeResponse(Buffer.from('a100818220815020010db80000000000000000000000ab', 'hex'));
    assert.deepEqual(d.tpServer, { host: '2001:db8::ab', port: 5683, zone: undefined });
    assert.equal(d.tpInfo, undefined);
    // a complete one sets both
    const full = decodeInformativeResponse(encodeInformativeResponse({ tpInfo: TP }));
    assert.deepEqual(full.tpServer, full.tpInfo!.server);
  });

  it('decodes the flat tp_info printed in the draft, keeps unknown keys, reads next_not_before and ending', function () {
    const flat = Buffer.from('a400' + '8382205020010db80000000000000000000000ab832050ff35003020010db8000000000000002319f0b0417b' + '030a' + '041a6a000000' + '6178f5', 'hex');
    const d = decodeInformativeResponse(flat);
    assert.equal(d.tpInfo!.client.port, 61616);
    assert.equal(d.nextNotBefore, 10);
    assert.equal(d.ending, 0x6a000000);
    assert.equal(d.other!.get('x'), true);
  });

  const bad: [string, string][] = [
    ['ff', 'not CBOR'],
    ['80', 'not a map'],
    ['a10080', 'tp_info without elements'],
    ['a100818221815020010db80000000000000000000000ab', 'a tpi_server that is not coap'],
    ['a10161ff', 'ph_req as text'],
    ['a10320', 'negative next_not_before'],
    ['a100838220815020010db80000000000000000000000ab82208250ff35003020010db8000000000000002319f0b0' + '49' + '000102030405060708', 'a 9-byte token'],
  ];
  for (const [h, why] of bad) {
    it(`rejects ${why}`, function () {
      assert.throws(() => decodeInformativeResponse(Buffer.from(h, 'hex')), CborStructureError);
    });
  }
});

describe('rough counting arithmetic (§8.2)', function () {
  it('worked example §8.3.3: N = 32, M = 8 gives Q = 2; R = 4, D = 1 gives 16', function () {
    assert.equal(feedbackDivider(32, 8), 2);
    assert.equal(updatedCount(32, 32, 4, 2, 1), 16);
    assert.equal(feedbackDivider(5, 8), 0);
    assert.equal(feedbackDivider(0, 8), 0);
  });
});

describe('one cbor-x configuration (src/cbor/cbor.ts)', function () {
  it('integer map keys stay integers, byte strings carry no typed-array tag, a CBOR sequence is not one item', function () {
    const m = new Map<number, unknown>([[0, Buffer.from([1, 2])], [-1, 'x']]);
    const bytes = encodeCbor(m);
    assert.equal(hex(bytes), 'a200420102206178'); // {0: h'0102', -1: "x"}
    const back = decodeCbor(bytes) as Map<number, unknown>;
    assert.ok(back instanceof Map);
    assert.deepEqual([...back.keys()], [0, -1]);
    assert.throws(() => decodeCbor(Buffer.from('0102', 'hex')));
  });

  it('flow payloads read as plain objects, with "__proto__" as an own key, never the prototype', function () {
    const plain = toPlain(decodeCbor(Buffer.from('a2616101695f5f70726f746f5f5fa1617802', 'hex'))) as Record<string, unknown>;
    assert.equal(plain.a, 1);
    assert.deepEqual(Object.getOwnPropertyDescriptor(plain, '__proto__')?.value, { x: 2 });
    assert.equal(Object.getPrototypeOf(plain), Object.prototype);
  });
});
