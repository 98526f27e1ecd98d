// Unit tests of the HTTP front's pieces: RFC 9651 Lists of Byte Sequences, the groupcomm-proxy-07 §9.2-§9.3
// headers, RFC 8075 §7 status mapping, RFC 8613 §11.1 OSCORE header, and the multipart batch read in pieces.

import assert from 'node:assert/strict';
import { encodeReplyFrom } from '../../src/cbor/cri';
import { CODES } from '../../src/coap/codes';
import { OPT, decodeUint, optionNumber } from '../../src/coap/options';
import { parseByteSequenceList, serializeByteSequenceList } from '../../src/http/structured-fields';
import { BatchReader, originOf, parseBatch } from '../../src/proxy/http-batch-client';
import { HttpStatusError, groupEtagOptions, httpStatus, multicastTimeoutOption, oscoreOption, replyFromItems, targetFromHostingUri, toHttpResponse } from '../../src/proxy/http-mapping';
import { multipartBody, newBoundary } from '../../src/proxy/multipart';

describe('RFC 9651 List of Byte Sequences', function () {
  it('RFC 9651 §3.3.5 example ":cHJldGVuZCB0aGlzIGlzIGJpbmFyeSBjb250ZW50Lg==:"', function () {
    const [b] = parseByteSequenceList(':cHJldGVuZCB0aGlzIGlzIGJpbmFyeSBjb250ZW50Lg==:')!;
    assert.equal(b.toString(), 'pretend this is binary content.');
  });
  it('lists over several field lines, parameters skipped, round trip', function () {
    const items = [Buffer.from([1, 2, 3]), Buffer.from([0xfb, 0xff])];
    const text = serializeByteSequenceList(items);
    assert.equal(text, ':AQID:, :+/8=:');
    assert.deepEqual(parseByteSequenceList(text), items);
    assert.deepEqual(parseByteSequenceList([':AQID:', ':+/8=:;a=1']), items);
  });
  it('anything else does not parse (the field is then ignored): tokens, base64url, trailing comma, unterminated', function () {
    for (const bad of ['abc', ':AQID:,', ':AQID', ':-_8:', ':AQID: :AQID:', '"s"', ':A:'] as const) assert.equal(parseByteSequenceList(bad), undefined, bad);
  });
});

describe('groupcomm-proxy-07 §9.2-§9.3 headers', function () {
  it('Multicast-Timeout: digits; empty means 0; other text is a 400', function () {
    assert.equal(decodeUint(multicastTimeoutOption('60')!.value), 60);
    assert.equal(decodeUint(multicastTimeoutOption('')!.value), 0);
    assert.equal(multicastTimeoutOption(undefined), undefined);
    assert.throws(() => multicastTimeoutOption('1s'), (e: HttpStatusError) => e.status === 400);
  });
  it('Group-ETag: N members -> N options in order; a malformed field -> none', function () {
    const o = groupEtagOptions(':AQ==:, :Ag==:');
    assert.deepEqual(o.map((x) => [x.number, x.value[0]]), [[optionNumber('Group-ETag'), 1], [optionNumber('Group-ETag'), 2]]);
    assert.deepEqual(groupEtagOptions('AQ'), []);
  });
  it('Reply-From: item i is CBOR array i (two elements for reverse case 1), decoded back to the origin', function () {
    const value = encodeReplyFrom({ scheme: 'coap', host: '192.0.2.1', port: 5683 }, { scheme: null, host: '127.0.0.2', port: 40000 });
    const items = replyFromItems(value)!;
    assert.equal(items.length, 2);
    assert.ok(Buffer.concat(items).equals(value));
    const o = originOf(serializeByteSequenceList(items))!;
    assert.equal(o.origin.address, '192.0.2.1');
    assert.deepEqual(o.origin.reference, { address: '127.0.0.2', port: 40000 });
  });
  it('the Hosting URI in both forms of RFC 8075 §5', function () {
    assert.equal(targetFromHostingUri('/hc?target_uri=coap%3A%2F%2F224.0.1.187%2Flight', '/hc'), 'coap://224.0.1.187/light');
    assert.equal(targetFromHostingUri('/hc/coap://224.0.1.187:5683/light', '/hc'), 'coap://224.0.1.187:5683/light');
    assert.throws(() => targetFromHostingUri('/hc', '/hc'), (e: HttpStatusError) => e.status === 400);
  });
});

describe('RFC 8075 §7 status and RFC 8613 §11.1', function () {
  it('codes', function () {
    assert.equal(httpStatus(CODES.CONTENT, true), 200);
    assert.equal(httpStatus(CODES.CHANGED, false), 204);
    assert.equal(httpStatus(CODES.CREATED, false), 201);
    assert.equal(httpStatus(CODES.UNAUTHORIZED, false), 403);
    assert.equal(httpStatus(CODES.PROXYING_NOT_SUPPORTED, false), 502);
    assert.equal(httpStatus(CODES.GATEWAY_TIMEOUT, false), 504);
    assert.equal(httpStatus(CODES.METHOD_NOT_ALLOWED, false), 400);
  });
  it('OSCORE: the header is the option value in base64url; a protected response is 200 application/oscore', function () {
    assert.deepEqual(oscoreOption('CSU')!.value, Buffer.from([0x09, 0x25]));
    assert.deepEqual(oscoreOption('')!.value, Buffer.alloc(0));
    const r = toHttpResponse({ code: CODES.CHANGED, options: [{ number: OPT.OSCORE, value: Buffer.alloc(0) }], payload: Buffer.from('ciphertext') });
    assert.equal(r.status, 200);
    assert.deepEqual(r.headers.filter(([k]) => k === 'OSCORE' || k === 'Content-Type'), [['OSCORE', ''], ['Content-Type', 'application/oscore']]);
  });
});

describe('multipart batch (RFC 2046 §5.1.1, application/http)', function () {
  const rf = (h: string) => ['Reply-From', serializeByteSequenceList(replyFromItems(encodeReplyFrom({ scheme: 'coap', host: h, port: 5683 }))!)] as [string, string];
  const parts = [1, 2, 3].map((i) => ({ status: 200, headers: [rf(`127.0.0.${i}`), ['Content-Type', 'text/plain']] as [string, string][], body: Buffer.from(`body ${i}\r\n--not a boundary`) }));

  it('written and read back whole', function () {
    const b = newBoundary();
    const got = parseBatch(`multipart/mixed; boundary=${b}`, multipartBody(b, parts));
    assert.deepEqual(got.map((p) => [p.status, p.origin!.address, p.body.toString()]), [1, 2, 3].map((i) => [200, `127.0.0.${i}`, `body ${i}\r\n--not a boundary`]));
  });
  it('read one byte at a time: every part once, in order', function () {
    const b = newBoundary();
    const body = multipartBody(b, parts);
    const r = new BatchReader(`multipart/mixed; boundary="${b}"`);
    const got = [];
    for (let i = 0; i < body.length; i++) got.push(...r.push(body.subarray(i, i + 1)));
    assert.equal(got.length, 3);
    assert.ok(r.complete);
    assert.deepEqual(got.map((p) => p.origin!.address), ['127.0.0.1', '127.0.0.2', '127.0.0.3']);
  });
  it('not multipart/mixed: a typed error', function () {
    assert.throws(() => parseBatch('text/plain', Buffer.alloc(0)), (e: Error & { code?: string }) => e.code === 'ERR_MULTIPART');
  });
});
