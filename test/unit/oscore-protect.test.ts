// OSCORE message processing (RFC 8613 §4, §8): option classes and the Inner / Outer split, Proxy-Uri decomposition
// (§4.1.3.3), Observe with Partial IVs (§4.1.3.5, §7.4.1), Max-Age and Block options, response Partial IV rules
// (§8.3), the errors of §8.2 / §8.4 as typed errors with their response codes, App. B.1.2 Echo recovery, and
// layer-by-layer nesting as in oscore-capable-proxies-07 App. B.1.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { inspect } from 'node:util';
import { decode, decodeCodeOptionsPayload, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapResponseError, isResponseError, toErrorResponse } from '../../src/coap/errors';
import { CoapMessage, CoapOption, createMessage, getOption, getOptions } from '../../src/coap/message';
import { OPT, configureOptionNumbers, decodeUint, encodeUint, optionNumber } from '../../src/coap/options';
import {
  AEAD_ALGORITHMS,
  ClientBinding,
  ContextRegistry,
  EchoRequiredError,
  OscoreError,
  SecurityContext,
  SecurityContextParams,
  answerOscoreError,
  deriveKeys,
  encodeAad,
  echoChallenge,
  isProtected,
  layerClass,
  oscoreClass,
  oscoreErrorResponse,
  protectRequest,
  protectResponse,
  splitProxyUri,
  unprotectRequest,
  unprotectResponse,
} from '../../src/oscore';

const h = (hex: string): Buffer => Buffer.from(hex, 'hex');
const opt = (number: number, value: string | number | Buffer): CoapOption => ({
  number,
  value: Buffer.isBuffer(value) ? value : typeof value === 'number' ? encodeUint(value) : Buffer.from(value, 'utf8'),
});

function pair(extra: Partial<SecurityContextParams> = {}, serverOpts: Parameters<typeof SecurityContext.derive>[1] = {}) {
  const base = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8), ...extra };
  const client = SecurityContext.derive({ ...base, senderId: h('c1'), recipientId: h('5e') });
  const server = SecurityContext.derive({ ...base, senderId: h('5e'), recipientId: h('c1') }, serverOpts);
  return { client, server };
}

function request(options: CoapOption[], code: number = CODES.GET, payload = Buffer.alloc(0)): CoapMessage {
  return createMessage({ type: 'CON', code, messageId: 0x1234, token: h('cafe'), options, payload });
}

function errorWith(code: string, responseCode?: number, diagnostic?: string) {
  return (err: unknown) => {
    assert.ok(err instanceof OscoreError, `not an OscoreError: ${String(err)}`);
    assert.equal(err.code, code);
    // undefined = RFC 8613 §8.4 "stop processing" or a programming error: no response of its own
    if (responseCode === undefined) assert.equal(err.noResponse, true, `${code} should answer nothing`);
    else assert.deepEqual({ noResponse: err.noResponse, responseCode: err.responseCode }, { noResponse: false, responseCode });
    if (diagnostic !== undefined) assert.equal(err.diagnostic, diagnostic);
    return true;
  };
}

/** What travels on the wire: encode and decode, so tests see exactly what a peer would parse. */
const wire = (m: CoapMessage): CoapMessage => decode(encode(m));

describe('OSCORE protect / unprotect (RFC 8613 §8)', function () {
  describe('option classes (RFC 8613 §4.1 Figure 5 and the drafts)', function () {
    it('follows RFC 8613 Figure 5', function () {
      const expected: Record<number, string> = {
        1: 'E', 3: 'U', 4: 'E', 5: 'E', 6: 'EU', 7: 'U', 8: 'E', 9: 'U', 11: 'E', 12: 'E', 14: 'EU', 15: 'E', 17: 'E',
        20: 'E', 23: 'EU', 27: 'EU', 28: 'EU', 35: 'U', 39: 'U', 60: 'EU', 258: 'EU',
      };
      for (const [num, cls] of Object.entries(expected)) assert.equal(oscoreClass(Number(num)), cls, `option ${num}`);
    });

    it('classes of the drafts: Hop-Limit, Multicast-Timeout, Reply-From, Group-ETag, Listen-To-Multicast-Responses U; Feedback-Divider E', function () {
      assert.equal(oscoreClass(OPT.HOP_LIMIT), 'U');
      for (const name of ['Multicast-Timeout', 'Reply-From', 'Group-ETag', 'Listen-To-Multicast-Responses']) assert.equal(oscoreClass(optionNumber(name)), 'U', name);
      assert.equal(oscoreClass(optionNumber('Feedback-Divider')), 'E');
      assert.equal(oscoreClass(OPT.ECHO), 'E');
      assert.equal(oscoreClass(OPT.REQUEST_TAG), 'E');
    });

    it('unknown options are class E (§4.1)', function () {
      for (const num of [65000, 65001, 2048, 100]) assert.equal(oscoreClass(num), 'E');
    });

    it('follows a reconfigured draft option number', function () {
      const previous = configureOptionNumbers({ 'Multicast-Timeout': 65004 });
      try {
        assert.equal(oscoreClass(65004), 'U');
        assert.equal(oscoreClass(2), 'E');
      } finally {
        configureOptionNumbers(previous);
      }
      assert.equal(oscoreClass(2), 'U');
    });

    it('per layer: escalation to E, and an inner OSCORE option is E for the next layer', function () {
      assert.equal(layerClass(OPT.URI_HOST, new Set([OPT.URI_HOST])), 'E');
      assert.equal(layerClass(OPT.URI_PORT, new Set([OPT.URI_HOST])), 'U');
      assert.equal(layerClass(OPT.OSCORE), 'E');
    });
  });

  describe('requests', function () {
    it('round-trips a request; header fields stay Outer, Code and payload go Inner (§4.2)', function () {
      const { client, server } = pair();
      const original = request(
        [opt(OPT.URI_HOST, 'example.com'), opt(OPT.URI_PATH, 'a'), opt(OPT.URI_PATH, 'b'), opt(OPT.URI_QUERY, 'x=1'), opt(OPT.CONTENT_FORMAT, 60), opt(OPT.ACCEPT, 50), opt(OPT.IF_MATCH, h('0102'))],
        CODES.PUT,
        Buffer.from('{"on":true}'),
      );
      const { message } = protectRequest(client, original);
      assert.equal(message.code, CODES.POST);
      assert.equal(message.type, 'CON');
      assert.equal(message.messageId, 0x1234);
      assert.deepEqual(message.token, h('cafe'));
      assert.deepEqual(message.options.map((o) => o.number), [OPT.URI_HOST, OPT.OSCORE]);
      assert.ok(!message.payload.includes(Buffer.from('"on"')));
      const { message: verified } = unprotectRequest(server, wire(message));
      assert.deepEqual(encode(verified), encode(original));
    });

    it('puts class U options Outer and class E ones Inner, E+U ones Inner unless asked for an Outer copy', function () {
      const { client, server } = pair();
      const mt = optionNumber('Multicast-Timeout');
      const ltmr = optionNumber('Listen-To-Multicast-Responses');
      const fd = optionNumber('Feedback-Divider');
      const original = request([
        opt(OPT.IF_MATCH, h('aa')),
        opt(OPT.URI_HOST, 'h'),
        opt(OPT.URI_PORT, 61616),
        opt(OPT.HOP_LIMIT, 16),
        opt(OPT.PROXY_SCHEME, 'coap'),
        opt(mt, 5),
        opt(ltmr, h('818300')),
        opt(fd, 2),
        opt(OPT.MAX_AGE, 30),
        opt(OPT.BLOCK2, 0x02),
        opt(OPT.NO_RESPONSE, 26),
        opt(OPT.ECHO, h('0011')),
        opt(65000, 'unknown'),
      ]);
      const { message } = protectRequest(client, original, { outerOptions: [opt(OPT.NO_RESPONSE, 26), opt(OPT.BLOCK1, 0x0e)] });
      const outer = message.options.map((o) => o.number);
      assert.deepEqual(outer, [mt, OPT.URI_HOST, OPT.URI_PORT, OPT.OSCORE, OPT.HOP_LIMIT, OPT.BLOCK1, OPT.PROXY_SCHEME, ltmr, OPT.NO_RESPONSE].sort((a, b) => a - b));
      const { message: verified, discarded } = unprotectRequest(server, wire(message));
      assert.deepEqual(encode(verified), encode(original));
      assert.deepEqual(discarded.map((o) => o.number).sort((a, b) => a - b), [OPT.BLOCK1, OPT.NO_RESPONSE]);
    });

    it('Outer copies of class E options are discarded (§8.2 step 1)', function () {
      const { client, server } = pair();
      const { message } = protectRequest(client, request([opt(OPT.URI_PATH, 'real')]));
      const tampered = wire({ ...message, options: [...message.options, opt(OPT.IF_MATCH, h('01')), opt(OPT.URI_PATH, 'fake')].sort((a, b) => a.number - b.number) });
      const { message: verified, discarded } = unprotectRequest(server, tampered);
      assert.deepEqual(getOptions(verified, OPT.URI_PATH).map(String), ['real']);
      assert.equal(getOption(verified, OPT.IF_MATCH), undefined);
      assert.equal(discarded.length, 2);
    });

    it('sends kid context when the context has an ID Context (RFC 8613 §5.1), unless told not to', function () {
      const { client, server } = pair({ idContext: h('37cbf3210017a2d3') });
      const a = protectRequest(client, request([])).message;
      assert.equal(getOption(a, OPT.OSCORE)!.toString('hex'), '19' + '00' + '08' + '37cbf3210017a2d3' + 'c1');
      const b = protectRequest(client, request([]), { kidContext: false }).message;
      assert.equal(getOption(b, OPT.OSCORE)!.toString('hex'), '09' + '01' + 'c1');
      unprotectRequest(server, wire(a));
      unprotectRequest(server, wire(b));
    });

    it('refuses a non-request code', function () {
      const { client } = pair();
      assert.throws(() => protectRequest(client, { code: CODES.CONTENT }), errorWith('ERR_OSCORE_INVALID_INPUT'));
    });

    for (const p of Object.values(AEAD_ALGORITHMS)) {
      it(`round-trips request and response with ${p.name} (alg ${p.alg})`, function () {
        const { client, server } = pair({ alg: p.alg });
        const req = protectRequest(client, request([opt(OPT.URI_PATH, 'x')], CODES.POST, Buffer.from('hello')));
        const v = unprotectRequest(server, wire(req.message));
        assert.equal(v.message.payload.toString(), 'hello');
        const res = protectResponse(v.binding, { code: CODES.CONTENT, payload: Buffer.from('world') });
        const back = unprotectResponse(req.binding, wire({ ...req.message, ...res, type: 'ACK' }));
        assert.equal(back.message.code, CODES.CONTENT);
        assert.equal(back.message.payload.toString(), 'world');
      });
    }
  });

  describe('Proxy-Uri (RFC 8613 §4.1.3.3)', function () {
    const cases: [string, string, string[], string[]][] = [
      ['coap://example.com/resource?q=1', 'coap://example.com', ['resource'], ['q=1']], // the RFC's example
      ['coap://EXAMPLE.com:5683/a/b', 'coap://example.com', ['a', 'b'], []],
      ['coap://[2001:db8::1]:61616/a/b%20c?x=1&y=2', 'coap://[2001:db8::1]:61616', ['a', 'b c'], ['x=1', 'y=2']],
      ['coaps://example.com', 'coaps://example.com', [], []],
      ['http://example.org:8080/p/q?z', 'http://example.org:8080', ['p', 'q'], ['z']],
    ];
    for (const [proxyUri, outer, path, query] of cases) {
      it(`splits ${proxyUri} into Outer ${outer} and Inner Uri-Path / Uri-Query`, function () {
        const { client, server } = pair();
        const first = protectRequest(client, request([opt(OPT.PROXY_URI, proxyUri)]));
        assert.equal(getOption(first.message, OPT.PROXY_URI)!.toString(), outer);
        assert.deepEqual(getOptions(first.message, OPT.URI_PATH), []);
        assert.deepEqual(getOptions(first.message, OPT.URI_QUERY), []);
        // what went Inner: verify with the Outer Proxy-Uri taken away
        const plain = unprotectRequest(server, wire({ ...first.message, options: first.message.options.filter((o) => o.number !== OPT.PROXY_URI) })).message;
        assert.deepEqual(getOptions(plain, OPT.URI_PATH).map(String), path);
        assert.deepEqual(getOptions(plain, OPT.URI_QUERY).map(String), query);
        // the OSCORE endpoint that receives the Outer Proxy-Uri (a forward proxy) gets one whole URI back
        const second = protectRequest(client, request([opt(OPT.PROXY_URI, proxyUri)]));
        const full = unprotectRequest(server, wire(second.message)).message;
        assert.deepEqual(getOptions(full, OPT.URI_PATH), []);
        const back = splitProxyUri(getOption(full, OPT.PROXY_URI)!.toString());
        assert.equal(back.outer, outer);
        assert.deepEqual(back.inner.filter((o) => o.number === OPT.URI_PATH).map((o) => o.value.toString()), path);
        assert.deepEqual(back.inner.filter((o) => o.number === OPT.URI_QUERY).map((o) => o.value.toString()), query);
      });
    }

    it('keeps the whole Proxy-Uri Inner when the layer escalates it to E', function () {
      const { client, server } = pair();
      const { message } = protectRequest(client, request([opt(OPT.PROXY_URI, 'coap://example.com/r')]), { classE: [OPT.PROXY_URI] });
      assert.equal(getOption(message, OPT.PROXY_URI), undefined);
      const { message: verified } = unprotectRequest(server, wire(message), { classE: [OPT.PROXY_URI] });
      assert.equal(getOption(verified, OPT.PROXY_URI)!.toString(), 'coap://example.com/r');
    });

    it('rejects a Proxy-Uri that is not an absolute URI, or one next to Uri-Path', function () {
      const { client } = pair();
      assert.throws(() => protectRequest(client, request([opt(OPT.PROXY_URI, '/relative')])), errorWith('ERR_OSCORE_INVALID_INPUT'));
      assert.throws(() => protectRequest(client, request([opt(OPT.PROXY_URI, 'coap://h/%zz')])), errorWith('ERR_OSCORE_INVALID_INPUT'));
      assert.throws(() => protectRequest(client, request([opt(OPT.URI_PATH, 'a'), opt(OPT.PROXY_URI, 'coap://h/b')])), errorWith('ERR_OSCORE_INVALID_INPUT'));
    });
  });

  describe('responses (RFC 8613 §8.3, §8.4)', function () {
    function exchange(options: CoapOption[] = []) {
      const { client, server } = pair();
      const req = protectRequest(client, request(options));
      const srv = unprotectRequest(server, wire(req.message));
      return { client, server, req, srv };
    }
    const asResponse = (req: CoapMessage, parts: { code: number; options: CoapOption[]; payload: Buffer }): CoapMessage =>
      wire({ type: 'ACK', messageId: req.messageId, token: req.token, ...parts });

    it('first response reuses the request nonce, later ones need their own Partial IV', function () {
      const { server, req, srv } = exchange();
      const first = protectResponse(srv.binding, { code: CODES.CONTENT, payload: Buffer.from('1') });
      assert.equal(getOption(first, OPT.OSCORE)!.length, 0);
      assert.equal(first.code, CODES.CHANGED);
      assert.throws(() => protectResponse(srv.binding, { code: CODES.CONTENT }, { partialIv: false }), errorWith('ERR_OSCORE_INVALID_INPUT'));
      const second = protectResponse(srv.binding, { code: CODES.CONTENT, payload: Buffer.from('2') });
      assert.equal(getOption(second, OPT.OSCORE)!.toString('hex'), '0100');
      assert.equal(server.sequence.peek(), 1);
      const verified = unprotectResponse(req.binding, asResponse(req.message, first));
      assert.equal(verified.message.payload.toString(), '1');
      // §7.4: only one response is accepted for a non-Observe request
      assert.throws(() => unprotectResponse(req.binding, asResponse(req.message, second)), errorWith('ERR_OSCORE_REPLAY'));
    });

    it('a request may be set up for several responses (oscore-capable-proxies-07 §2.6.1)', function () {
      const { client, server } = pair();
      const req = protectRequest(client, request([]), { multipleResponses: true });
      const srv = unprotectRequest(server, wire(req.message));
      const r = [0, 1, 2].map((i) => protectResponse(srv.binding, { code: CODES.CONTENT, payload: Buffer.from(String(i)) }));
      assert.equal(unprotectResponse(req.binding, asResponse(req.message, r[0])).piv, undefined);
      assert.equal(unprotectResponse(req.binding, asResponse(req.message, r[2])).piv, 1);
      assert.equal(unprotectResponse(req.binding, asResponse(req.message, r[1])).piv, 0);
      assert.throws(() => unprotectResponse(req.binding, asResponse(req.message, r[2])), errorWith('ERR_OSCORE_REPLAY'));
      assert.throws(() => unprotectResponse(req.binding, asResponse(req.message, r[0])), errorWith('ERR_OSCORE_REPLAY'));
    });

    it('Max-Age: Inner end to end; an Outer Max-Age only on request, and discarded by the client (§4.1.3.1)', function () {
      const { req, srv } = exchange();
      const res = protectResponse(srv.binding, { code: CODES.CONTENT, options: [opt(OPT.MAX_AGE, 60)] }, { outerOptions: [opt(OPT.MAX_AGE, 0)] });
      assert.equal(decodeUint(getOption(res, OPT.MAX_AGE)!), 0);
      const verified = unprotectResponse(req.binding, asResponse(req.message, res));
      assert.equal(decodeUint(getOption(verified.message, OPT.MAX_AGE)!), 60);
      assert.deepEqual(verified.discarded.map((o) => o.number), [OPT.MAX_AGE]);
    });

    it('Block options: Inner for end-to-end block-wise, Outer ones are hop-by-hop (§4.1.3.4)', function () {
      const { req, srv } = exchange();
      const block2 = opt(OPT.BLOCK2, (3 << 4) | 0x08 | 2);
      const res = protectResponse(srv.binding, { code: CODES.CONTENT, options: [block2, opt(OPT.SIZE2, 1000)], payload: Buffer.alloc(64, 1) });
      assert.equal(getOption(res, OPT.BLOCK2), undefined, 'no Outer Block2 unless asked');
      const verified = unprotectResponse(req.binding, asResponse(req.message, res));
      assert.deepEqual(getOption(verified.message, OPT.BLOCK2), block2.value);
      assert.equal(decodeUint(getOption(verified.message, OPT.SIZE2)!), 1000);
    });

    it('refuses a request code in a response, and protects error responses like any other', function () {
      const { req, srv } = exchange();
      assert.throws(() => protectResponse(srv.binding, { code: CODES.GET }), errorWith('ERR_OSCORE_INVALID_INPUT'));
      const res = protectResponse(srv.binding, { code: CODES.NOT_FOUND });
      assert.equal(res.code, CODES.CHANGED);
      assert.equal(unprotectResponse(req.binding, asResponse(req.message, res)).message.code, CODES.NOT_FOUND);
    });
  });

  describe('Observe (RFC 8613 §4.1.3.5, §7.4.1)', function () {
    function observe() {
      const { client, server } = pair();
      const req = protectRequest(client, request([opt(OPT.OBSERVE, 0), opt(OPT.URI_PATH, 'temp')]));
      const srv = unprotectRequest(server, wire(req.message));
      const notify = (n: number, seqValue: number) =>
        wire({ type: 'NON', messageId: 100 + n, token: req.message.token, ...protectResponse(srv.binding, { code: CODES.CONTENT, options: [opt(OPT.OBSERVE, seqValue)], payload: Buffer.from(`t${n}`) }) });
      return { client, server, req, srv, notify };
    }

    it('a registration goes out as FETCH with the same Observe Inner and Outer', function () {
      const { req, srv } = observe();
      assert.equal(req.message.code, CODES.FETCH);
      assert.equal(decodeUint(getOption(req.message, OPT.OBSERVE)!), 0);
      assert.equal(srv.binding.observe, true);
      assert.equal(req.binding.observe, true);
      assert.equal(decodeUint(getOption(srv.message, OPT.OBSERVE)!), 0);
      assert.equal(srv.message.code, CODES.GET);
    });

    it('notifications: Outer 2.05 with the Observe value, empty Inner Observe, a Partial IV on all but the first', function () {
      const { client, server, req, srv, notify } = observe();
      const n0 = notify(0, 7);
      assert.equal(n0.code, CODES.CONTENT);
      assert.equal(decodeUint(getOption(n0, OPT.OBSERVE)!), 7);
      assert.equal(getOption(n0, OPT.OSCORE)!.length, 0, 'the first may reuse the request nonce');
      const n1 = notify(1, 8);
      assert.equal(getOption(n1, OPT.OSCORE)!.toString('hex'), '0100');
      const n2 = notify(2, 9);
      assert.equal(getOption(n2, OPT.OSCORE)!.toString('hex'), '0101');
      assert.equal(server.sequence.peek(), 2);
      // §4.1.3.5.2: the Inner Observe is empty; decrypt n1 by hand to see the plaintext
      const piv = h('00');
      const plaintext = client.open(n1.payload, { nonce: client.recipientNonce(piv), piv, pivId: client.recipientId, isRequest: false, requestKid: req.binding.kid, requestPiv: req.binding.piv, oscoreOption: h('0100') });
      const inner = decodeCodeOptionsPayload(plaintext);
      assert.equal(inner.code, CODES.CONTENT);
      assert.deepEqual(inner.options, [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }]);
      void srv;
    });

    it('the client orders by Partial IV: copies it into Observe, keeps the Notification Number, rejects replays', function () {
      const { req, notify } = observe();
      const [n0, n1, n2, n3] = [0, 1, 2, 3].map((i) => notify(i, 100 - i)); // Outer Observe deliberately decreasing
      const v0 = unprotectResponse(req.binding, n0);
      assert.equal(v0.notification, true);
      assert.equal(v0.piv, undefined);
      assert.equal(decodeUint(getOption(v0.message, OPT.OBSERVE)!), 0);
      const v2 = unprotectResponse(req.binding, n2);
      assert.equal(v2.piv, 1);
      assert.equal(v2.newest, true);
      assert.equal(decodeUint(getOption(v2.message, OPT.OBSERVE)!), 1, 'Observe carries the Partial IV, not the Outer value');
      assert.equal(req.binding.notificationNumber, 1);
      const v1 = unprotectResponse(req.binding, n1);
      assert.equal(v1.piv, 0);
      assert.equal(v1.newest, false, 'older than the Notification Number');
      assert.equal(req.binding.notificationNumber, 1);
      assert.throws(() => unprotectResponse(req.binding, n2), errorWith('ERR_OSCORE_REPLAY'));
      assert.throws(() => unprotectResponse(req.binding, n0), errorWith('ERR_OSCORE_REPLAY'), 'a second notification without Partial IV');
      assert.equal(unprotectResponse(req.binding, n3).message.payload.toString(), 't3');
      assert.equal(req.binding.done, false);
    });

    it('a final response without Observe ends the observation', function () {
      const { req, srv, notify } = observe();
      unprotectResponse(req.binding, notify(0, 1));
      const last = protectResponse(srv.binding, { code: CODES.NOT_FOUND });
      assert.equal(last.code, CODES.CHANGED);
      const v = unprotectResponse(req.binding, wire({ type: 'NON', messageId: 9, token: req.message.token, ...last }));
      assert.equal(v.notification, false);
      assert.equal(v.message.code, CODES.NOT_FOUND);
      assert.equal(req.binding.done, true);
      assert.throws(() => unprotectResponse(req.binding, notify(1, 2)), errorWith('ERR_OSCORE_REPLAY'));
    });

    it('a response with Observe to a non-Observe request is rejected (§8.4)', function () {
      const { client, server } = pair();
      const req = protectRequest(client, request([]));
      const srv = unprotectRequest(server, wire(req.message));
      assert.throws(() => protectResponse(srv.binding, { code: CODES.CONTENT, options: [opt(OPT.OBSERVE, 1)] }), errorWith('ERR_OSCORE_INVALID_INPUT'));
      const res = protectResponse(srv.binding, { code: CODES.CONTENT });
      const forged = wire({ type: 'ACK', messageId: 1, token: req.message.token, ...res, options: [opt(OPT.OBSERVE, 5), ...res.options] });
      assert.throws(() => unprotectResponse(req.binding, forged), errorWith('ERR_OSCORE_UNEXPECTED_OBSERVE'));
    });

    it('a proxy that strips the Outer Observe turns the request into a non-Observe one (§4.1.3.5.1)', function () {
      const { client, server } = pair();
      const req = protectRequest(client, request([opt(OPT.OBSERVE, 0)]));
      const stripped = wire({ ...req.message, options: req.message.options.filter((o) => o.number !== OPT.OBSERVE) });
      const srv = unprotectRequest(server, stripped);
      assert.equal(getOption(srv.message, OPT.OBSERVE), undefined);
      assert.equal(srv.binding.observe, false);
      // and the client verifies the plain response as the final one
      const res = protectResponse(srv.binding, { code: CODES.CONTENT, payload: Buffer.from('once') });
      const v = unprotectResponse(req.binding, wire({ type: 'ACK', messageId: 1, token: req.message.token, ...res }));
      assert.equal(v.notification, false);
      assert.equal(req.binding.done, true);
    });

    it('a deregistration (Observe 1) is not an observation', function () {
      const { client, server } = pair();
      const req = protectRequest(client, request([opt(OPT.OBSERVE, 1)]));
      assert.equal(req.message.code, CODES.FETCH);
      const srv = unprotectRequest(server, wire(req.message));
      assert.equal(srv.binding.observe, false);
      assert.equal(decodeUint(getOption(srv.message, OPT.OBSERVE)!), 1);
    });
  });

  describe('errors (RFC 8613 §8.2, §7.4, §8.4)', function () {
    it('a malformed OSCORE option is 4.02 "Failed to decode COSE", with an Outer Max-Age 0 error response', function () {
      const { client, server } = pair();
      const { message } = protectRequest(client, request([]));
      const bad = wire({ ...message, options: message.options.map((o) => (o.number === OPT.OSCORE ? opt(OPT.OSCORE, h('8901c1')) : o)) });
      let caught: unknown;
      assert.throws(() => unprotectRequest(server, bad), (err) => ((caught = err), errorWith('ERR_OSCORE_DECODE', CODES.BAD_OPTION, 'Failed to decode COSE')(err)));
      const response = oscoreErrorResponse(caught)!;
      assert.equal(response.code, CODES.BAD_OPTION);
      assert.deepEqual(response.options, [opt(OPT.MAX_AGE, 0)]);
      assert.equal(response.payload.toString(), 'Failed to decode COSE');
    });

    it('a request without kid, without Partial IV, without payload or with the Group Flag is 4.02', function () {
      const { client, server } = pair();
      const { message } = protectRequest(client, request([]));
      const withValue = (v: string, payload = message.payload) =>
        wire({ ...message, payload, options: message.options.map((o) => (o.number === OPT.OSCORE ? opt(OPT.OSCORE, h(v)) : o)) });
      for (const v of ['0100', '08c1', '', '290100c1']) assert.throws(() => unprotectRequest(server, withValue(v)), errorWith('ERR_OSCORE_DECODE', CODES.BAD_OPTION), v);
      assert.throws(() => unprotectRequest(server, { ...message, payload: Buffer.alloc(0) }), errorWith('ERR_OSCORE_DECODE', CODES.BAD_OPTION));
    });

    it('an unknown kid or kid context is 4.01 "Security context not found"', function () {
      const { client, server } = pair();
      const other = SecurityContext.derive({ masterSecret: crypto.randomBytes(16), senderId: h('77'), recipientId: h('5e') });
      const { message } = protectRequest(other, request([]));
      assert.throws(() => unprotectRequest(server, wire(message)), errorWith('ERR_OSCORE_CONTEXT_NOT_FOUND', CODES.UNAUTHORIZED, 'Security context not found'));
      const withCtx = SecurityContext.derive({ masterSecret: crypto.randomBytes(16), senderId: h('c1'), recipientId: h('5e'), idContext: h('01') });
      assert.throws(() => unprotectRequest(server, wire(protectRequest(withCtx, request([])).message)), errorWith('ERR_OSCORE_CONTEXT_NOT_FOUND', CODES.UNAUTHORIZED));
      assert.throws(() => unprotectRequest(() => undefined, wire(protectRequest(client, request([])).message)), errorWith('ERR_OSCORE_CONTEXT_NOT_FOUND', CODES.UNAUTHORIZED));
    });

    it('a replayed request is 4.01 "Replay detected"', function () {
      const { client, server } = pair();
      const { message } = protectRequest(client, request([]));
      unprotectRequest(server, wire(message));
      assert.throws(() => unprotectRequest(server, wire(message)), errorWith('ERR_OSCORE_REPLAY', CODES.UNAUTHORIZED, 'Replay detected'));
    });

    it('a tampered ciphertext is 4.00 "Decryption failed" and does not touch the replay window', function () {
      const { client, server } = pair();
      const { message } = protectRequest(client, request([opt(OPT.URI_PATH, 'x')]));
      const payload = Buffer.from(message.payload);
      payload[0] ^= 0x80;
      assert.throws(() => unprotectRequest(server, wire({ ...message, payload })), errorWith('ERR_OSCORE_DECRYPT', CODES.BAD_REQUEST, 'Decryption failed'));
      assert.equal(server.replay.highest, undefined);
      unprotectRequest(server, wire(message)); // the genuine one still goes through
    });

    it('a ciphertext shorter than the tag is 4.00 as well', function () {
      const { client, server } = pair();
      const { message } = protectRequest(client, request([]));
      assert.throws(() => unprotectRequest(server, wire({ ...message, payload: message.payload.subarray(0, 3) })), errorWith('ERR_OSCORE_DECRYPT', CODES.BAD_REQUEST));
    });

    it('an OscoreError is a CoapResponseError: it renders as its §8.2 response, or is reported as a fault when it has none', function () {
      const { client, server } = pair();
      const { message } = protectRequest(client, request([]));
      unprotectRequest(server, wire(message));
      let replay: unknown;
      assert.throws(() => unprotectRequest(server, wire(message)), (e) => ((replay = e), true));
      assert.ok(replay instanceof CoapResponseError);
      assert.equal(isResponseError(replay), true);
      // the generic rendering of the message layer is the one oscoreErrorResponse gives: 4.01, Max-Age 0, diagnostic
      assert.deepEqual(toErrorResponse(replay), oscoreErrorResponse(replay));
      assert.deepEqual(toErrorResponse(replay), { code: CODES.UNAUTHORIZED, options: [opt(OPT.MAX_AGE, 0)], payload: Buffer.from('Replay detected') });
      const silent = new OscoreError('ERR_OSCORE_INVALID_INPUT', 'a programming error');
      assert.equal(isResponseError(silent), false, 'a handler that throws it is reported, not answered with a chosen code');
      assert.deepEqual(toErrorResponse(silent), { code: CODES.INTERNAL_SERVER_ERROR, options: [], payload: Buffer.alloc(0) });
      assert.equal(answerOscoreError(silent), undefined);
    });

    it('a message without OSCORE option is ERR_OSCORE_NOT_PROTECTED (not a response-worthy error)', function () {
      const { server } = pair();
      const plain = request([opt(OPT.URI_PATH, 'x')]);
      assert.equal(isProtected(plain), false);
      assert.throws(() => unprotectRequest(server, plain), errorWith('ERR_OSCORE_NOT_PROTECTED'));
      assert.equal(oscoreErrorResponse(new OscoreError('ERR_OSCORE_NOT_PROTECTED', 'x')), undefined);
    });

    it('never throws anything but OscoreError on mutated option values and ciphertexts (fuzz)', function () {
      const { client, server } = pair({ idContext: h('aabb') });
      for (let i = 0; i < 3000; i++) {
        const { message } = protectRequest(client, request([opt(OPT.URI_PATH, 'p')], CODES.POST, crypto.randomBytes(crypto.randomInt(0, 40))));
        const oscore = Buffer.from(getOption(message, OPT.OSCORE)!);
        let payload: Buffer = Buffer.from(message.payload);
        let value: Buffer = oscore;
        switch (i % 4) {
          case 0:
            value = crypto.randomBytes(crypto.randomInt(0, 16));
            break;
          case 1:
            value[crypto.randomInt(0, value.length)] ^= 1 << crypto.randomInt(0, 8);
            break;
          case 2:
            payload = crypto.randomBytes(crypto.randomInt(0, 40));
            break;
          default:
            payload[crypto.randomInt(0, payload.length)] ^= 1 << crypto.randomInt(0, 8);
        }
        const mutated = { ...message, payload, options: message.options.map((o) => (o.number === OPT.OSCORE ? { number: OPT.OSCORE, value } : o)) };
        try {
          unprotectRequest(server, mutated);
        } catch (err) {
          assert.ok(err instanceof OscoreError && !err.noResponse, `untyped: ${String(err)}`);
        }
      }
    });

    it('an authentic plaintext that is not a CoAP request is ERR_OSCORE_INNER_FORMAT with 4.00', function () {
      // truncated option, a response code in a request, a payload marker without payload
      for (const plaintext of [h('01d0'), h('45'), h('01ff')]) {
        const { client, server } = pair();
        const req = protectRequest(client, request([]));
        const forged = { ...req.message, payload: client.seal(plaintext, { nonce: req.binding.nonce, piv: req.binding.piv, pivId: req.binding.kid, isRequest: true, requestKid: req.binding.kid, requestPiv: req.binding.piv, oscoreOption: getOption(req.message, OPT.OSCORE)! }) };
        assert.throws(() => unprotectRequest(server, wire(forged)), errorWith('ERR_OSCORE_INNER_FORMAT', CODES.BAD_REQUEST), plaintext.toString('hex'));
      }
    });

    it('client side: failures stop processing and carry no response code (§8.4)', function () {
      const { client, server } = pair();
      const req = protectRequest(client, request([]));
      const srv = unprotectRequest(server, wire(req.message));
      const res = protectResponse(srv.binding, { code: CODES.CONTENT, payload: Buffer.from('ok') });
      const asMsg = (parts: Partial<CoapMessage>) => wire({ type: 'ACK', messageId: 1, token: req.message.token, ...res, ...parts });
      const flipped = Buffer.from(res.payload);
      flipped[1] ^= 4;
      assert.throws(() => unprotectResponse(req.binding, asMsg({ payload: flipped })), errorWith('ERR_OSCORE_DECRYPT', undefined));
      assert.throws(() => unprotectResponse(req.binding, asMsg({ options: [opt(OPT.OSCORE, h('c0'))] })), errorWith('ERR_OSCORE_DECODE', undefined));
      assert.throws(() => unprotectResponse(req.binding, asMsg({ options: [opt(OPT.OSCORE, h('110100'))] })), errorWith('ERR_OSCORE_DECODE', undefined), 'kid context in a response');
      assert.throws(() => unprotectResponse(req.binding, asMsg({ options: [opt(OPT.OSCORE, h('0901ff'))] })), errorWith('ERR_OSCORE_CONTEXT_NOT_FOUND', undefined), 'wrong kid');
      assert.throws(() => unprotectResponse(req.binding, asMsg({ options: [] })), errorWith('ERR_OSCORE_NOT_PROTECTED'));
      assert.equal(req.binding.done, false, 'failed responses do not end the exchange');
      assert.equal(unprotectResponse(req.binding, asMsg({})).message.payload.toString(), 'ok');
    });
  });

  describe('Echo recovery of a lost replay window (RFC 8613 App. B.1.2)', function () {
    it('challenges the first request with a protected 4.01 + Echo and accepts the retry that returns it', function () {
      const { client, server } = pair({}, { replayWindowInitialized: false });
      assert.equal(server.awaitingEchoRecovery, true);
      const first = protectRequest(client, request([opt(OPT.URI_PATH, 'door')], CODES.POST, Buffer.from('open')));
      let challenge: EchoRequiredError | undefined;
      assert.throws(
        () => unprotectRequest(server, wire(first.message)),
        (err: unknown) => {
          challenge = err as EchoRequiredError;
          return err instanceof EchoRequiredError && err.responseCode === CODES.UNAUTHORIZED && err.echo.length === 8;
        },
      );
      assert.equal(challenge!.binding.requestFresh, false);
      // The server MUST use its own Partial IV for this response.
      assert.throws(() => protectResponse(challenge!.binding, { code: CODES.UNAUTHORIZED }, { partialIv: false }), errorWith('ERR_OSCORE_INVALID_INPUT'));
      const res = echoChallenge(challenge!);
      assert.equal(getOption(res, OPT.OSCORE)!.toString('hex'), '0100');
      assert.equal(oscoreErrorResponse(challenge), undefined, 'the challenge is protected, not a plain error');
      // answerOscoreError gives the protected 4.01 + Echo (its own Partial IV: '0101' after the one above)
      const answer = answerOscoreError(challenge)!;
      assert.equal(answer.code, CODES.CHANGED, 'the Outer code of a protected response');
      assert.equal(getOption(answer, OPT.OSCORE)!.toString('hex'), '0101');
      const seen = unprotectResponse(first.binding, wire({ type: 'ACK', messageId: 1, token: first.message.token, ...res }));
      assert.equal(seen.message.code, CODES.UNAUTHORIZED);
      const echo = getOption(seen.message, OPT.ECHO)!;
      assert.deepEqual(echo, challenge!.echo);
      // the retry carries the Echo Inner
      const retry = protectRequest(client, request([opt(OPT.URI_PATH, 'door'), opt(OPT.ECHO, echo)], CODES.POST, Buffer.from('open')));
      const ok = unprotectRequest(server, wire(retry.message));
      assert.equal(ok.message.payload.toString(), 'open');
      assert.equal(getOption(ok.message, OPT.ECHO), undefined, 'consumed by the OSCORE layer');
      assert.equal(ok.binding.requestFresh, true);
      assert.equal(server.awaitingEchoRecovery, false);
      assert.equal(server.replay.highest, 1);
      // the first request and the retry are now replays
      assert.throws(() => unprotectRequest(server, wire(first.message)), errorWith('ERR_OSCORE_REPLAY', CODES.UNAUTHORIZED));
      assert.throws(() => unprotectRequest(server, wire(retry.message)), errorWith('ERR_OSCORE_REPLAY', CODES.UNAUTHORIZED));
      // later requests proceed normally
      unprotectRequest(server, wire(protectRequest(client, request([])).message));
    });

    it('a wrong or reused Echo value is challenged again; requireEchoRecovery() re-arms it', function () {
      const { client, server } = pair();
      unprotectRequest(server, wire(protectRequest(client, request([])).message));
      server.requireEchoRecovery();
      const fake = protectRequest(client, request([opt(OPT.ECHO, h('0000000000000000'))]));
      assert.throws(() => unprotectRequest(server, wire(fake.message)), EchoRequiredError);
      let echo: Buffer | undefined;
      try {
        unprotectRequest(server, wire(protectRequest(client, request([])).message));
      } catch (err) {
        echo = (err as EchoRequiredError).echo;
      }
      unprotectRequest(server, wire(protectRequest(client, request([opt(OPT.ECHO, echo!)])).message));
      server.requireEchoRecovery();
      assert.throws(() => unprotectRequest(server, wire(protectRequest(client, request([opt(OPT.ECHO, echo!)])).message)), EchoRequiredError, 'an Echo value works once');
    });
  });

  describe('nested layers (oscore-capable-proxies-07 App. B.1 shape)', function () {
    it('client -> proxy -> server with an end-to-end layer and a client-proxy layer', function () {
      const e2e = pair();
      const hop = pair();
      const original = request([opt(OPT.URI_HOST, 'example.com'), opt(OPT.URI_PATH, 'alarm_status'), opt(OPT.PROXY_SCHEME, 'coap')]);
      // Client: end-to-end layer first, then the layer for the proxy (OCP §2.3), with Uri-Host and Proxy-Scheme
      // escalated to E for the proxy (§2.2 steps 1-8).
      const inner = protectRequest(e2e.client, original);
      assert.deepEqual(inner.message.options.map((o) => o.number), [OPT.URI_HOST, OPT.OSCORE, OPT.PROXY_SCHEME]);
      const forProxy = [OPT.URI_HOST, OPT.PROXY_SCHEME];
      const outer = protectRequest(hop.client, inner.message, { classE: forProxy });
      assert.deepEqual(outer.message.options.map((o) => o.number), [OPT.OSCORE], 'only the outer OSCORE option is visible');
      assert.equal(outer.message.code, CODES.POST);
      // Proxy: removes its layer and finds the proxy options and the inner OSCORE option (not an error, OCP §2.4 step 6).
      const atProxy = unprotectRequest(hop.server, wire(outer.message), { classE: forProxy });
      assert.equal(atProxy.message.code, CODES.POST);
      assert.deepEqual(atProxy.message.options.map((o) => o.number), [OPT.URI_HOST, OPT.OSCORE, OPT.PROXY_SCHEME]);
      assert.equal(isProtected(atProxy.message), true);
      // Proxy forwards: consumes Proxy-Scheme and sends to the server.
      const forwarded = wire({ ...atProxy.message, token: h('7b'), options: atProxy.message.options.filter((o) => o.number !== OPT.PROXY_SCHEME) });
      const atServer = unprotectRequest(e2e.server, forwarded);
      assert.equal(atServer.message.code, CODES.GET);
      assert.deepEqual(getOptions(atServer.message, OPT.URI_PATH).map(String), ['alarm_status']);
      // Server responds 2.05 "0"; the proxy adds its layer over the protected response (reverse order, OCP §2.5).
      const fromServer = protectResponse(atServer.binding, { code: CODES.CONTENT, payload: Buffer.from('0') });
      assert.equal(fromServer.code, CODES.CHANGED);
      const fromProxy = protectResponse(atProxy.binding, { ...fromServer });
      assert.equal(fromProxy.code, CODES.CHANGED);
      assert.deepEqual(fromProxy.options.map((o) => o.number), [OPT.OSCORE]);
      // Client removes the layers in reverse order (OCP §2.6).
      const r1 = unprotectResponse(outer.binding, wire({ type: 'ACK', messageId: 1, token: outer.message.token, ...fromProxy }));
      assert.equal(r1.message.code, CODES.CHANGED);
      assert.equal(isProtected(r1.message), true);
      const r2 = unprotectResponse(inner.binding, r1.message);
      assert.equal(r2.message.code, CODES.CONTENT);
      assert.equal(r2.message.payload.toString(), '0');
    });
  });

  describe('security contexts (RFC 8613 §3)', function () {
    const base = { masterSecret: h('0102030405060708090a0b0c0d0e0f10'), senderId: h('01'), recipientId: h('02') };

    it('checks ID lengths against nonce length - 6 (§3.3), distinct IDs and a non-empty secret', function () {
      assert.throws(() => SecurityContext.derive({ ...base, senderId: Buffer.alloc(8) }), errorWith('ERR_OSCORE_CONFIG'));
      SecurityContext.derive({ ...base, senderId: Buffer.alloc(7) });
      assert.throws(() => SecurityContext.derive({ ...base, alg: 1, recipientId: Buffer.alloc(7) }), errorWith('ERR_OSCORE_CONFIG'));
      SecurityContext.derive({ ...base, alg: 24, recipientId: Buffer.alloc(6) });
      assert.throws(() => SecurityContext.derive({ ...base, recipientId: h('01') }), errorWith('ERR_OSCORE_CONFIG'));
      assert.throws(() => SecurityContext.derive({ ...base, masterSecret: Buffer.alloc(0) }), errorWith('ERR_OSCORE_CONFIG'));
      assert.throws(() => SecurityContext.derive({ ...base, alg: 12345 }), errorWith('ERR_OSCORE_UNSUPPORTED_ALGORITHM'));
      assert.throws(() => SecurityContext.derive({ ...base, hkdf: 'SHA-1' as never }), errorWith('ERR_OSCORE_UNSUPPORTED_ALGORITHM'));
    });

    it('HKDF SHA-512 derives other keys and still interoperates', function () {
      const a = SecurityContext.derive({ ...base, hkdf: 'SHA-512' });
      const b = SecurityContext.derive({ ...base, senderId: h('02'), recipientId: h('01'), hkdf: 'SHA-512' });
      const c = SecurityContext.derive(base);
      assert.notDeepEqual(a.commonIv, c.commonIv);
      const { message } = protectRequest(a, request([opt(OPT.URI_PATH, 'x')]));
      assert.equal(getOptions(unprotectRequest(b, wire(message)).message, OPT.URI_PATH).map(String)[0], 'x');
    });

    it('never shows key material: inspect, JSON and error messages', function () {
      const secret = h('a1a2a3a4a5a6a7a8a9aaabacadaeafb0');
      const ctx = SecurityContext.derive({ ...base, masterSecret: secret });
      const keys = deriveKeys({ ...base, masterSecret: secret });
      const shown = inspect(ctx, { depth: 10, showHidden: true }) + JSON.stringify(ctx) + String(Object.values(ctx));
      for (const k of [secret, keys.senderKey, keys.recipientKey]) assert.ok(!shown.includes(k.toString('hex')), 'key material visible');
      assert.ok(shown.includes('AES-CCM-16-64-128'));
      assert.deepEqual(secret, h('a1a2a3a4a5a6a7a8a9aaabacadaeafb0'), "the caller's buffer is untouched");
      const errors: string[] = [];
      for (const bad of [{ senderId: Buffer.alloc(9) }, { recipientId: h('01') }, { alg: 77 }]) {
        try {
          SecurityContext.derive({ ...base, masterSecret: secret, ...bad });
        } catch (err) {
          errors.push(String((err as Error).message));
        }
      }
      assert.equal(errors.length, 3);
      for (const e of errors) assert.ok(!e.includes(secret.toString('hex')));
    });

    it('a registry finds contexts by kid and kid context', function () {
      const reg = new ContextRegistry();
      const a = SecurityContext.derive({ ...base, senderId: h('aa'), recipientId: h('01') });
      const b = SecurityContext.derive({ ...base, senderId: h('aa'), recipientId: h('01'), idContext: h('ff') });
      const c = SecurityContext.derive({ ...base, senderId: h('aa'), recipientId: h('02'), idContext: h('ee') });
      reg.add(a).add(b).add(c);
      assert.equal(reg.find(h('01')), a);
      assert.equal(reg.find(h('01'), h('ff')), b);
      assert.equal(reg.find(h('02')), c);
      assert.equal(reg.find(h('02'), h('ff')), undefined);
      assert.throws(() => reg.add(a), RangeError);
      const client = SecurityContext.derive({ ...base, senderId: h('01'), recipientId: h('aa'), idContext: h('ff') });
      assert.equal(unprotectRequest(reg.resolver, wire(protectRequest(client, request([])).message)).context, b);
    });

    it('a ClientBinding can be rebuilt from stored request data (§8.1 step 6)', function () {
      const { client, server } = pair();
      const req = protectRequest(client, request([]));
      const srv = unprotectRequest(server, wire(req.message));
      const res = protectResponse(srv.binding, { code: CODES.CONTENT, payload: Buffer.from('z') }, { partialIv: true });
      const stored = new ClientBinding({ context: client, kid: req.binding.kid, piv: req.binding.piv, nonce: req.binding.nonce, observe: false });
      assert.equal(unprotectResponse(stored, wire({ type: 'ACK', messageId: 1, token: req.message.token, ...res })).message.payload.toString(), 'z');
    });
  });
});
