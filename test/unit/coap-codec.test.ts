// Codec, option table and URIs against the specs' examples (RFC 7252 §3.2 and §5.4.6, RFC 10020 App. B.1) and against coap-packet.

import assert from 'node:assert/strict';
import { parse as cpParse } from 'coap-packet';
import { CoapFormatError, decode, decodeCodeOptionsPayload, encode, encodeCodeOptionsPayload, encodeWithCoapPacket } from '../../src/coap/codec';
import { CODES, codeToString, parseCode } from '../../src/coap/codes';
import { CoapMessage, createMessage, getOptions, setOption } from '../../src/coap/message';
import { OPT, configureOptionNumbers, decodeUint, encodeUint, isCritical, isNoCacheKey, isUnsafe, optionDef, optionNumber } from '../../src/coap/options';
import { formatUri, isGroupUri, optionsToUri, originUri, parseUri, uriToOptions } from '../../src/coap/uri';

const hex = (b: Buffer) => b.toString('hex');

describe('option table', function () {
  it('derives C/U/N from the number (RFC 7252 §5.4.6) and agrees with the properties the drafts declare (groupcomm-proxy-07 and observe-multicast-notifications-15, IANA Considerations)', function () {
    assert.deepEqual([isCritical(2), isUnsafe(2), isNoCacheKey(2)], [false, true, false]); // Multicast-Timeout
    assert.deepEqual([isCritical(248), isUnsafe(248), isNoCacheKey(248)], [false, false, false]); // Reply-From
    assert.deepEqual([isCritical(24), isUnsafe(24), isNoCacheKey(24)], [false, false, false]); // Group-ETag
    assert.deepEqual([isCritical(18), isUnsafe(18)], [false, true]); // Feedback-Divider
    assert.deepEqual([isCritical(47), isUnsafe(47)], [true, true]); // Listen-To-Multicast-Responses
    assert.equal(isNoCacheKey(28), true); // Size2 (RFC 7959)
    assert.equal(isNoCacheKey(60), true); // Size1
    assert.equal(isCritical(OPT.URI_PATH), true);
    assert.equal(isUnsafe(OPT.PROXY_URI), true);
  });

  it('encodes uint 0 as the empty value (RFC 7252 §3.2) and uses minimal lengths', function () {
    assert.equal(encodeUint(0).length, 0);
    assert.equal(hex(encodeUint(255)), 'ff');
    assert.equal(hex(encodeUint(256)), '0100');
    assert.equal(hex(encodeUint(0x10000)), '010000');
    assert.equal(decodeUint(Buffer.alloc(0)), 0);
    assert.equal(decodeUint(Buffer.from('0005', 'hex')), 5); // leading zeros accepted
  });

  it('draft option numbers are overridable and restorable (the option numbers are only suggested by the drafts, not assigned: IANA Considerations)', function () {
    assert.equal(optionNumber('Reply-From'), 248);
    const prev = configureOptionNumbers({ 'Reply-From': 65000, 'Response-Forwarding': 96 });
    try {
      assert.equal(optionNumber('Reply-From'), 65000);
      assert.equal(optionDef(96)?.name, 'Response-Forwarding');
      assert.equal(optionDef(248), undefined);
    } finally {
      configureOptionNumbers({ 'Reply-From': prev['Reply-From'], 'Response-Forwarding': undefined });
    }
    assert.equal(optionNumber('Reply-From'), 248);
    assert.equal(optionDef(96), undefined);
    assert.throws(() => configureOptionNumbers({ 'Reply-From': 11 }), /used twice/);
    assert.equal(optionNumber('Reply-From'), 248);
  });
});

describe('codes', function () {
  it('formats and parses dotted codes and method names', function () {
    assert.equal(codeToString(0x45), '2.05');
    assert.equal(codeToString(1, true), 'GET');
    assert.equal(parseCode('2.05'), 0x45);
    assert.equal(parseCode('404'), 0x84);
    assert.equal(parseCode('ipatch'), 7);
    assert.throws(() => parseCode('2.99'));
  });
});

describe('codec', function () {
  it('encodes the groupcomm-bis App. B.1 request byte for byte (RFC 10020 App. B.1)', function () {
    const uri = parseUri('coap://grp.example:5685/gp/gp1/light?foo=bar');
    const msg = createMessage({ type: 'NON', code: CODES.GET, messageId: 0x7d41, options: uriToOptions(uri, { includeHost: true }) });
    assert.equal(hex(encode(msg)), '50017d413b6772702e6578616d706c6582677003677031056c6967687447666f6f3d626172');
  });

  it('round-trips and agrees with coap-packet on well-formed messages (differential)', function () {
    for (let i = 0; i < 300; i++) {
      const options = [];
      const n = i % 7;
      for (let k = 0; k < n; k++) options.push({ number: [1, 4, 11, 12, 15, 23, 35, 248, 258, 2049, 65000][(i + k) % 11], value: Buffer.alloc((i * 7 + k * 13) % 300, k) });
      const msg = createMessage({ type: (['CON', 'NON', 'ACK', 'RST'] as const)[i % 3], code: [1, 2, 0x45, 0x84, 0xa3][i % 5], messageId: (i * 977) & 0xffff, token: Buffer.alloc(i % 9, 0xab), options, payload: Buffer.alloc(i % 4 === 0 ? 0 : i, 7) });
      const bytes = encode(msg);
      // byte for byte the same as coap-packet's generate (the reference encoder)
      assert.equal(hex(bytes), hex(encodeWithCoapPacket(msg)));
      const back = decode(bytes);
      assert.deepEqual(back.options.map((o) => [o.number, hex(o.value)]), msg.options.map((o) => [o.number, hex(o.value)]));
      assert.equal(hex(back.payload), hex(msg.payload));
      assert.equal(back.code, msg.code);
      assert.equal(back.messageId, msg.messageId);
      const cp = cpParse(bytes);
      assert.equal(cp.messageId, back.messageId);
      assert.equal(hex(cp.payload), hex(back.payload));
      assert.equal(cp.options.length, back.options.length);
    }
  });

  const bad: [string, string, string][] = [
    ['too-short', '4001', 'fewer than 4 bytes'],
    ['bad-version', '80010001', 'version 2'],
    ['bad-token-length', '49010001' + '00'.repeat(9), 'TKL 9 (RFC 7252 §3: reserved, format error)'],
    ['truncated-token', '44010001aabb', 'token shorter than TKL'],
    ['empty-message-not-empty', '40000001ff', 'Empty message with bytes after the header'],
    ['reserved-code-class', '40200001', 'code class 1'],
    ['reserved-option-delta', '40010001f0', 'option delta 15 without payload marker'],
    ['reserved-option-length', '400100010f', 'option length 15'],
    ['truncated-option', '40010001b5616263', 'option value runs past the end'],
    ['truncated-option', '40010001d0', 'extended delta byte missing'],
    ['empty-payload', '40010001ff', 'payload marker with no payload'],
  ];
  for (const [reason, bytes, why] of bad) {
    it(`rejects ${why} as ${reason}`, function () {
      assert.throws(() => decode(Buffer.from(bytes, 'hex')), (err: unknown) => err instanceof CoapFormatError && err.reason === reason);
    });
  }

  it('reports type and message ID of a malformed CON so the layer can RST it (RFC 7252 §4.2)', function () {
    try {
      decode(Buffer.from('4001abcdff', 'hex'));
      assert.fail('should throw');
    } catch (err) {
      assert.ok(err instanceof CoapFormatError);
      assert.equal(err.type, 'CON');
      assert.equal(err.messageId, 0xabcd);
    }
  });

  it('encodes the transport-independent "Code | options | payload" form (OSCORE plaintext, ph_req)', function () {
    const opts = [{ number: OPT.URI_PATH, value: Buffer.from('tv1') }];
    const b = encodeCodeOptionsPayload(CODES.GET, opts, Buffer.alloc(0));
    assert.equal(hex(b), '01b3747631'); // RFC 8613 C.4 plaintext
    const d = decodeCodeOptionsPayload(Buffer.from('45ff48656c6c6f20576f726c6421', 'hex')); // RFC 8613 C.7 plaintext
    assert.equal(d.code, 0x45);
    assert.equal(d.payload.toString(), 'Hello World!');
  });

  it('encodes an unsorted option list in number order without reordering the caller\'s array', function () {
    const options = [{ number: 15, value: Buffer.from('q') }, { number: 11, value: Buffer.from('a') }, { number: 11, value: Buffer.from('b') }];
    const msg: CoapMessage = { type: 'NON', code: CODES.GET, messageId: 1, token: Buffer.alloc(0), options, payload: Buffer.alloc(0) };
    assert.equal(hex(encode(msg)), hex(encodeWithCoapPacket(msg)));
    assert.deepEqual(decode(encode(msg)).options.map((o) => o.value.toString()), ['a', 'b', 'q']);
    assert.equal(options[0].number, 15);
  });

  it('keeps repeated options in order when setting and sorting', function () {
    const m: CoapMessage = createMessage({ code: CODES.GET });
    setOption(m, 'Uri-Query', 'b=2', 'a=1');
    setOption(m, 'Uri-Path', 'x', 'y');
    assert.deepEqual(getOptions(m, OPT.URI_PATH).map(String), ['x', 'y']);
    assert.deepEqual(getOptions(m, OPT.URI_QUERY).map(String), ['b=2', 'a=1']);
  });
});

describe('URIs', function () {
  it('parses group URIs with IPv4, default port 5683 (groupcomm-bis §2.2.1.1)', function () {
    const u = parseUri('coap://224.0.1.187/light');
    assert.equal(u.port, 5683);
    assert.equal(isGroupUri(u), true);
    assert.deepEqual(u.path, ['light']);
  });

  it('parses IPv6 zone ids, bare and RFC 6874 encoded', function () {
    for (const text of ['coap://[ff02::fd%eth0]/x', 'coap://[ff02::fd%25eth0]:5683/x']) {
      const u = parseUri(text);
      assert.equal(u.host, 'ff02::fd');
      assert.equal(u.zone, 'eth0');
      assert.equal(u.family, 6);
      assert.equal(isGroupUri(u), true);
    }
    assert.equal(formatUri(parseUri('coap://[ff02::fd%eth0]:61616/a/b?c=d')), 'coap://[ff02::fd%25eth0]:61616/a/b?c=d');
    assert.equal(originUri('fe80::1%lo', 5683), 'coap://[fe80::1%25lo]');
  });

  it('rejects fragments, unknown schemes and bad literals', function () {
    assert.throws(() => parseUri('coap://224.0.1.187/x#frag'), /fragment/);
    assert.throws(() => parseUri('http://a/b'), /scheme/);
    assert.throws(() => parseUri('coap://[zz::1]/'), /IPv6/);
    assert.throws(() => parseUri('coap://h:70000/'), /port/);
  });

  it('maps URIs to options and back (RFC 7252 §6.4, §6.5)', function () {
    const u = parseUri('coap://example.org:61616/a%20b/c?x=1&y');
    const opts = uriToOptions(u, { destinationPort: 5683 });
    const back = optionsToUri(opts, 'coap', '192.0.2.1', 5683);
    assert.equal(back.host, 'example.org');
    assert.equal(back.port, 61616);
    assert.deepEqual(back.path, ['a b', 'c']);
    assert.deepEqual(back.query, ['x=1', 'y']);
  });
});
