// Unit tests of the HTTP front's pieces: RFC 9651 Lists of Byte Sequences, the groupcomm-proxy-07 §9.2-§9.3
// headers, RFC 8075 §7 status mapping (every row of Table 2, checked against the RFC text), the request side of RFC
// 8075 §5-§6 and RFC 7252 §10.2 (methods, media types, Accept, conditions), the RFC 8613 §11 OSCORE header, and the
// multipart batch read in pieces.

import assert from 'node:assert/strict';
import { encodeReplyFrom } from '../../src/cbor/cri';
import { CODES } from '../../src/coap/codes';
import { OPT, decodeUint, optionNumber } from '../../src/coap/options';
import { parseByteSequenceList, serializeByteSequenceList } from '../../src/http/structured-fields';
import { BatchReader, originOf, parseBatch } from '../../src/proxy/http-batch-client';
import {
  HttpStatusError, acceptOption, checkTarget, coapMethod, conditionalOptions, contentFormatOf, groupEtagOptions, httpStatus, multicastTimeoutOption, oscoreHeader, oscoreOption, replyFromItems, targetFromHostingUri,
  toHttpResponse,
} from '../../src/proxy/http-mapping';
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
  it('RFC 8075 §5.4.1.1 example 1 (?target_uri={+tu}): the target copied as it is, its own query, "&" and "+" kept', function () {
    assert.equal(targetFromHostingUri('/hc/?target_uri=coap://s.example.com/light', '/hc'), 'coap://s.example.com/light');
    assert.equal(targetFromHostingUri('/hc?target_uri=coap://224.0.1.187/light?a=1&b=x+y', '/hc'), 'coap://224.0.1.187/light?a=1&b=x+y');
    assert.throws(() => targetFromHostingUri('/hc?other=1&target_uri=coap://x/', '/hc'), (e: HttpStatusError) => e.status === 400);
  });
  it('RFC 8075 §5.3 default mapping: verbatim, only the brackets of an IPv6 literal reverted (§5.3.2)', function () {
    // §5.3.2: coap://[2001:db8::1]/light?on travels as /hc/coap://%5B2001:db8::1%5D/light?on
    assert.equal(targetFromHostingUri('/hc/coap://%5B2001:db8::1%5D/light?on', '/hc'), 'coap://[2001:db8::1]/light?on');
    // "everything else can be safely copied verbatim": an encoded slash stays inside its path segment
    assert.equal(targetFromHostingUri('/hc/coap://224.0.1.187/a%2Fb', '/hc'), 'coap://224.0.1.187/a%2Fb');
    // a target encoded as one segment is decoded
    assert.equal(targetFromHostingUri('/hc/coap%3A%2F%2F224.0.1.187%2Flight', '/hc'), 'coap://224.0.1.187/light');
  });
  it('RFC 8075 §5.3.1: a target without its scheme is a 4xx (400), as is one of another scheme; coaps, a CoAP URI this proxy cannot serve: 501 (RFC 7252 §10.2)', function () {
    for (const t of ['s.example.com/light', '//s.example.com/light', 'http://224.0.1.187/light', 'coap://']) {
      assert.throws(() => checkTarget(t), (e: HttpStatusError) => e.status === 400, t);
    }
    assert.throws(() => checkTarget('coaps://224.0.1.187/light'), (e: HttpStatusError) => e.status === 501);
    assert.equal(checkTarget('coap://[ff02::fd]:5683/light'), 'coap://[ff02::fd]:5683/light');
  });
});

describe('RFC 7252 §10.2 methods', function () {
  it('GET, POST, PUT, DELETE (and FETCH, PATCH of RFC 8132) map to their codes; HEAD is a GET (§10.2.3)', function () {
    const cases: [string, number][] = [['GET', CODES.GET], ['HEAD', CODES.GET], ['POST', CODES.POST], ['PUT', CODES.PUT], ['DELETE', CODES.DELETE], ['FETCH', CODES.FETCH], ['PATCH', CODES.PATCH]];
    for (const [m, c] of cases) assert.equal(coapMethod(m), c, m);
  });
  it('OPTIONS and TRACE (§10.2.1), CONNECT (§10.2.7) and anything else: 501', function () {
    for (const m of ['OPTIONS', 'TRACE', 'CONNECT', 'PROPFIND', '']) assert.throws(() => coapMethod(m), (e: HttpStatusError) => e.status === 501, m);
  });
});

describe('RFC 8075 §6 media types', function () {
  it('§6.1 / §6.4: Content-Type -> Content-Format by the registry', function () {
    assert.equal(contentFormatOf('application/json'), 50);
    assert.equal(contentFormatOf('application/json; charset=utf-8'), 50);
    assert.equal(contentFormatOf('application/cbor'), 60);
    assert.equal(contentFormatOf('text/plain'), 0);
    assert.equal(contentFormatOf('text/plain; charset="UTF-8"'), 0);
    assert.equal(contentFormatOf('application/link-format'), 40);
    assert.equal(contentFormatOf(undefined), undefined);
  });
  it('§6.1: a Content-Type (and Content-Encoding) combination without a Content-Format SHALL elicit 415', function () {
    for (const ct of ['image/png', 'text/plain; charset=iso-8859-1', 'text/html', '*/*', 'not a media type']) {
      assert.throws(() => contentFormatOf(ct), (e: HttpStatusError) => e.status === 415, ct);
    }
    assert.throws(() => contentFormatOf('application/json', 'gzip'), (e: HttpStatusError) => e.status === 415);
    assert.equal(contentFormatOf('application/json', 'identity'), 50);
  });
  it('§6.2: application/coap-payload is not forwarded unless configured (it is not here): a client error', function () {
    assert.throws(() => contentFormatOf('application/coap-payload;cf=60'), (e: HttpStatusError) => e.status === 415);
    assert.throws(() => acceptOption('application/coap-payload;cf=60'), (e: HttpStatusError) => e.status === 406);
  });
  it('§6.2: a Content-Format the proxy has no name for becomes application/coap-payload;cf=N', function () {
    const r = toHttpResponse({ code: CODES.CONTENT, options: [{ number: OPT.CONTENT_FORMAT, value: Buffer.from([0x2d, 0x16]) }], payload: Buffer.from([1]) });
    assert.deepEqual(r.headers.find(([k]) => k === 'Content-Type'), ['Content-Type', 'application/coap-payload;cf=11542']);
  });
  it('Accept (RFC 7252 §10.2.2: the most-preferred type; RFC 8075 §6.1: unmappable is silently ignored, */* is no Accept option)', function () {
    const accept = (f: string) => {
      const o = acceptOption(f);
      return o && decodeUint(o.value);
    };
    assert.equal(acceptOption(undefined), undefined);
    assert.equal(accept('application/cbor'), 60);
    assert.equal(accept('application/json;q=0.2, application/cbor'), 60);
    assert.equal(accept('application/json, application/cbor'), 50, 'equal weights: the client\'s order');
    assert.equal(accept('text/html, application/json;q=0.5'), undefined, 'the most preferred has no Content-Format: ignored, not the next best');
    // a browser's default field: HTML most, XML less; no Accept option rather than XML
    assert.equal(accept('text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'), undefined);
    assert.equal(accept('*/*'), undefined);
    assert.equal(accept('*/*, application/json;q=0.5'), undefined, '*/* is the most preferred');
    assert.equal(accept('application/json;q=0.5, */*;q=0.1'), 50);
    assert.equal(accept('image/png'), undefined, 'no Content-Format: forwarded without Accept');
    assert.equal(accept('text/*'), undefined, 'ranges are not supported by the CoAP Accept option');
    assert.equal(accept('application/cbor;q=0, application/json'), 50, 'q=0 means not acceptable');
    assert.equal(acceptOption('text/plain')!.number, OPT.ACCEPT);
  });
});

describe('conditional requests (RFC 7252 §10.2.2, §5.10.6, §5.10.8)', function () {
  const opts = (h: Record<string, string>, code: number = CODES.GET) => conditionalOptions(h, code).map((o) => [o.number, o.value.toString('hex')]);
  it('If-Match: * -> one empty If-Match; If-Match with tags -> one If-Match each', function () {
    assert.deepEqual(opts({ 'if-match': '*' }, CODES.PUT), [[OPT.IF_MATCH, '']]);
    assert.deepEqual(opts({ 'if-match': '"0a0b", "ff"' }, CODES.PUT), [[OPT.IF_MATCH, '0a0b'], [OPT.IF_MATCH, 'ff']]);
  });
  it('If-None-Match: * -> If-None-Match; with tags on GET -> ETag options (validation); with tags on PUT -> 400', function () {
    assert.deepEqual(opts({ 'if-none-match': '*' }, CODES.PUT), [[OPT.IF_NONE_MATCH, '']]);
    assert.deepEqual(opts({ 'if-none-match': '"01020304", "aa"' }), [[OPT.ETAG, '01020304'], [OPT.ETAG, 'aa']]);
    assert.throws(() => conditionalOptions({ 'if-none-match': '"aa"' }, CODES.PUT), (e: HttpStatusError) => e.status === 400);
  });
  it('tags no CoAP ETag became (weak, not hex, longer than 8 bytes) cannot be mapped: 400', function () {
    for (const t of ['W/"aa"', '"xyz"', '"000102030405060708"', 'aa']) assert.throws(() => conditionalOptions({ 'if-match': t }, CODES.PUT), (e: HttpStatusError) => e.status === 400, t);
  });
  it('a CoAP ETag comes back as the entity-tag that maps to it again', function () {
    const r = toHttpResponse({ code: CODES.CONTENT, options: [{ number: OPT.ETAG, value: Buffer.from('c0ffee', 'hex') }], payload: Buffer.from('x') });
    const tag = r.headers.find(([k]) => k === 'ETag')![1];
    assert.deepEqual(opts({ 'if-none-match': tag }), [[OPT.ETAG, 'c0ffee']]);
  });
});

describe('RFC 8075 §7: every row of Table 2 (CoAP-HTTP Response Code Mappings)', function () {
  // [CoAP code, payload?, HTTP status, the row of the RFC's table]
  const ROWS: [number, boolean, number, string][] = [
    [CODES.CREATED, false, 201, '2.01 Created | 201 Created | note 1'],
    [CODES.CREATED, true, 201, '2.01 Created | 201 Created | note 1 (a payload is returned as the entity)'],
    [CODES.DELETED, true, 200, '2.02 Deleted | 200 OK | note 2 (with payload)'],
    [CODES.DELETED, false, 204, '2.02 Deleted | 204 No Content | note 2 (without payload)'],
    [CODES.VALID, false, 304, '2.03 Valid | 304 Not Modified | note 3 (the client made a conditional request)'],
    [CODES.CHANGED, true, 200, '2.04 Changed | 200 OK | note 2'],
    [CODES.CHANGED, false, 204, '2.04 Changed | 204 No Content | note 2'],
    [CODES.CONTENT, true, 200, '2.05 Content | 200 OK'],
    [CODES.CONTINUE, false, 502, '2.31 Continue | N/A | note 10 (never translated; from a server this proxy sent no Block1 to: not understood, RFC 7252 §10.2)'],
    [CODES.BAD_REQUEST, false, 400, '4.00 Bad Request | 400 Bad Request'],
    [CODES.UNAUTHORIZED, false, 403, '4.01 Unauthorized | 403 Forbidden | note 5 (no WWW-Authenticate in CoAP)'],
    [CODES.BAD_OPTION, false, 500, '4.02 Bad Option | 500 Internal Server Error | note 6 (the proxy cannot tell it came from a client header)'],
    [CODES.FORBIDDEN, false, 403, '4.03 Forbidden | 403 Forbidden'],
    [CODES.NOT_FOUND, false, 404, '4.04 Not Found | 404 Not Found'],
    [CODES.METHOD_NOT_ALLOWED, false, 400, '4.05 Method Not Allowed | 400 Bad Request | note 7'],
    [CODES.NOT_ACCEPTABLE, false, 406, '4.06 Not Acceptable | 406 Not Acceptable'],
    [CODES.REQUEST_ENTITY_INCOMPLETE, false, 502, '4.08 Request Entity Incomplete | N/A | note 10 (as 2.31)'],
    [CODES.PRECONDITION_FAILED, false, 412, '4.12 Precondition Failed | 412 Precondition Failed'],
    [CODES.REQUEST_ENTITY_TOO_LARGE, false, 413, '4.13 Request Entity Too Large | 413 Payload Too Large | note 11'],
    [CODES.UNSUPPORTED_CONTENT_FORMAT, false, 415, '4.15 Unsupported Content-Format | 415 Unsupported Media Type'],
    [CODES.INTERNAL_SERVER_ERROR, false, 500, '5.00 Internal Server Error | 500 Internal Server Error'],
    [CODES.NOT_IMPLEMENTED, false, 501, '5.01 Not Implemented | 501 Not Implemented'],
    [CODES.BAD_GATEWAY, false, 502, '5.02 Bad Gateway | 502 Bad Gateway'],
    [CODES.SERVICE_UNAVAILABLE, false, 503, '5.03 Service Unavailable | 503 Service Unavailable | note 8'],
    [CODES.GATEWAY_TIMEOUT, false, 504, '5.04 Gateway Timeout | 504 Gateway Timeout'],
    [CODES.PROXYING_NOT_SUPPORTED, false, 502, '5.05 Proxying Not Supported | 502 Bad Gateway | note 9'],
  ];
  for (const [code, payload, status, row] of ROWS) {
    it(row, function () {
      assert.equal(httpStatus(code, payload), status);
      assert.equal(toHttpResponse({ code, options: [], payload: payload ? Buffer.from('x') : Buffer.alloc(0) }).status, status);
    });
  }
  it('codes after RFC 8075 (not in Table 2): 4.09 -> 409, 4.29 -> 429, 5.08 -> 508; unknown codes by class', function () {
    assert.equal(httpStatus(CODES.CONFLICT, false), 409);
    assert.equal(httpStatus(CODES.TOO_MANY_REQUESTS, false), 429);
    assert.equal(httpStatus(CODES.HOP_LIMIT_REACHED, false), 508);
    assert.deepEqual([httpStatus(0x46, false), httpStatus(0x9f, false), httpStatus(0xa7, false)], [200, 400, 500]);
  });
  it('note 7: 4.05 carries a reason phrase starting "CoAP server returned 4.05"', function () {
    assert.match(toHttpResponse({ code: CODES.METHOD_NOT_ALLOWED, options: [], payload: Buffer.alloc(0) }).reason!, /^CoAP server returned 4\.05/);
  });
  it('note 8: 5.03 with Max-Age -> Retry-After (and 4.29 alike); elsewhere Max-Age -> Cache-Control max-age (RFC 7252 §10.2.2), a 2.05 without it -> 60 s', function () {
    const maxAge = [{ number: OPT.MAX_AGE, value: Buffer.from([30]) }];
    assert.deepEqual(toHttpResponse({ code: CODES.SERVICE_UNAVAILABLE, options: maxAge, payload: Buffer.alloc(0) }).headers, [['Retry-After', '30']]);
    assert.deepEqual(toHttpResponse({ code: CODES.TOO_MANY_REQUESTS, options: maxAge, payload: Buffer.alloc(0) }).headers, [['Retry-After', '30']]);
    assert.deepEqual(toHttpResponse({ code: CODES.CONTENT, options: maxAge, payload: Buffer.from('x') }).headers, [['Cache-Control', 'max-age=30']]);
    assert.deepEqual(toHttpResponse({ code: CODES.CONTENT, options: [], payload: Buffer.from('x') }).headers, [['Cache-Control', 'max-age=60']]);
  });
  it('§6.5.3: a diagnostic payload goes to the body (as UTF-8 text), never into the reason phrase', function () {
    const r = toHttpResponse({ code: CODES.BAD_REQUEST, options: [], payload: Buffer.from('bad\r\nthing') });
    assert.equal(r.body.toString(), 'bad\r\nthing');
    assert.equal(r.reason, undefined);
    assert.deepEqual(r.headers, [['Content-Type', 'text/plain; charset=utf-8']]);
  });
  it('RFC 7252 §10.2.4: Location-Path / Location-Query -> Location, percent-encoded as §6.5 composes a URI', function () {
    const loc = (o: [number, string][]) => toHttpResponse({ code: CODES.CREATED, options: o.map(([number, v]) => ({ number, value: Buffer.from(v) })), payload: Buffer.alloc(0) }).headers;
    assert.deepEqual(loc([[OPT.LOCATION_PATH, 'a b'], [OPT.LOCATION_PATH, 'c'], [OPT.LOCATION_QUERY, 'x=1']]), [['Location', '/a%20b/c?x=1']]);
    // a "/" inside one segment, a "&" inside one query item, stay encoded; ":" "@" "=" need not be
    assert.deepEqual(loc([[OPT.LOCATION_PATH, 'a/b'], [OPT.LOCATION_PATH, 'u@h:1'], [OPT.LOCATION_QUERY, 'p=a&b'], [OPT.LOCATION_QUERY, 'q=/x?']]), [['Location', '/a%2Fb/u@h:1?p=a%26b&q=/x?']]);
  });
});

describe('RFC 8613 §11: the OSCORE header field', function () {
  it('§11.3: the header (base64url, no padding) -> the option; "AA" -> the empty option; §11.5 example "CSU" -> 09 25', function () {
    assert.deepEqual(oscoreOption('CSU')!.value, Buffer.from([0x09, 0x25]));
    assert.deepEqual(oscoreOption('AA')!.value, Buffer.alloc(0));
    assert.equal(oscoreOption(undefined), undefined);
  });
  it('§11.1: OSCORE = 2*base64url-char, only in POST: an empty or non-base64url header, or another method, is a 400', function () {
    for (const bad of ['', 'A', 'CS+', 'CSU=']) assert.throws(() => oscoreOption(bad), (e: HttpStatusError) => e.status === 400, JSON.stringify(bad));
    assert.throws(() => oscoreOption('CSU', 'GET'), (e: HttpStatusError) => e.status === 400);
  });
  it('§11.2: the option -> the header, "AA" for the empty option; a protected response is 200 application/oscore', function () {
    assert.equal(oscoreHeader(Buffer.alloc(0)), 'AA');
    assert.equal(oscoreHeader(Buffer.from([0x09, 0x25])), 'CSU');
    const r = toHttpResponse({ code: CODES.CHANGED, options: [{ number: OPT.OSCORE, value: Buffer.alloc(0) }], payload: Buffer.from('ciphertext') });
    assert.equal(r.status, 200);
    assert.deepEqual(r.headers, [['OSCORE', 'AA'], ['Content-Type', 'application/oscore']]);
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
  it('a part keeps its own reason phrase (RFC 8075 §7 note 7)', function () {
    const b = newBoundary();
    const r = toHttpResponse({ code: CODES.METHOD_NOT_ALLOWED, options: [], payload: Buffer.alloc(0) });
    const [part] = parseBatch(`multipart/mixed; boundary=${b}`, multipartBody(b, [r]));
    assert.deepEqual([part.status, part.reason], [400, 'CoAP server returned 4.05']);
  });
  it('not multipart/mixed: a typed error', function () {
    assert.throws(() => parseBatch('text/plain', Buffer.alloc(0)), (e: Error & { code?: string }) => e.code === 'ERR_MULTIPART');
  });
});
