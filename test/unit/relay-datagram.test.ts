// A relayed response patched from the server's datagram (src/proxy/relay-datagram.ts) against the full path the
// proxy takes otherwise (groupcomm-proxy-07 §5.4 step 1: the server's options without origin options of its own,
// Reply-From added, sorted, a new message on the client's token, encoded per RFC 7252 §3): byte for byte equal on
// many shapes of responses (option deltas and lengths in all three encodings, repeated options, payloads, tokens),
// through the client leg's two methods.

import assert from 'node:assert/strict';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, CoapOption, sortOptions } from '../../src/coap/message';
import { configureOptionNumbers, optionNumber } from '../../src/coap/options';
import { encodeReplyFrom, encodeResponseForwarding } from '../../src/cbor/cri';
import { CoapEndpoint, IncomingRequest, ResponseContext, SendOptions } from '../../src/messaging/endpoint';
import { CoapFront } from '../../src/proxy/front';
import { relayDatagram } from '../../src/proxy/relay-datagram';

/** A small deterministic generator (mulberry32), so that a failing shape can be reproduced from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const bytes = (r: () => number, n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256)));

/** A server's response with random options around `avoid` (numbers the proxy adds), as the datagram it sends. */
function serverResponse(r: () => number, avoid: number[]): Buffer {
  const options: CoapOption[] = [];
  let n = 0;
  const count = Math.floor(r() * 7);
  for (let i = 0; i < count; i++) {
    // deltas of all three encodings (< 13, 13-268, >= 269) and repeated numbers (delta 0)
    const pick = r();
    n += pick < 0.15 ? 0 : pick < 0.6 ? 1 + Math.floor(r() * 12) : pick < 0.9 ? 13 + Math.floor(r() * 256) : 269 + Math.floor(r() * 1500);
    if (avoid.includes(n)) n++;
    const lp = r();
    const len = lp < 0.5 ? Math.floor(r() * 13) : lp < 0.9 ? 13 + Math.floor(r() * 256) : 269 + Math.floor(r() * 400);
    options.push({ number: n, value: bytes(r, len) });
  }
  const pp = r();
  const payload = pp < 0.3 ? Buffer.alloc(0) : bytes(r, pp < 0.8 ? 1 + Math.floor(r() * 40) : 300 + Math.floor(r() * 900));
  const codes = [CODES.CONTENT, CODES.VALID, CODES.CHANGED, CODES.NOT_FOUND, CODES.INTERNAL_SERVER_ERROR];
  return encode({ type: r() < 0.5 ? 'NON' : 'CON', code: codes[Math.floor(r() * codes.length)], messageId: Math.floor(r() * 0x10000), token: bytes(r, Math.floor(r() * 9)), options, payload });
}

/** The client leg over an endpoint that records what it is asked to send, as bytes. */
function recordingLeg(token: Buffer) {
  const sent: Buffer[] = [];
  let mid = 0x1234;
  const endpoint = {
    newMessageId: () => mid,
    sendMessage: (m: CoapMessage, _to: unknown, _o?: SendOptions) => void sent.push(encode(m)),
    sendEncoded: (b: Buffer, _t: unknown, messageId: number) => {
      assert.equal(messageId, mid, 'the Message ID given is the one in the datagram');
      sent.push(Buffer.from(b));
    },
  } as unknown as CoapEndpoint;
  const front = new CoapFront(endpoint);
  const req: IncomingRequest = { message: { type: 'CON', code: CODES.GET, messageId: 1, token, options: [], payload: Buffer.alloc(0) }, remote: { address: '127.0.0.1', port: 40000 }, multicast: false };
  const ctx: ResponseContext = { respond: () => undefined, ignore: () => undefined };
  const leg = front.leg(req, ctx, { address: '127.0.0.1', port: 40000 }, []);
  return { leg, sent, setMid: (m: number) => (mid = m) };
}

describe('relayed response patched from the server datagram (groupcomm-proxy-07 §5.4)', function () {
  const RF = optionNumber('Reply-From');

  it('is byte for byte what the full path encodes, on 3,000 shapes of responses (Reply-From only, and with Response-Forwarding)', function () {
    const before = configureOptionNumbers({ 'Response-Forwarding': 96 });
    try {
      const rfw = optionNumber('Response-Forwarding');
      for (let seed = 1; seed <= 3000; seed++) {
        const r = rng(seed);
        const data = serverResponse(r, [RF, rfw]);
        const m = decode(data);
        const clientToken = bytes(r, Math.floor(r() * 9));
        const added: CoapOption[] = [{ number: RF, value: encodeReplyFrom({ scheme: 'coap', host: `127.0.0.${1 + (seed % 200)}`, port: 1 + (seed % 65535) }) }];
        if (seed % 3 === 0) added.push({ number: rfw, value: encodeResponseForwarding('127.0.0.2', 5683, 5683) });
        const { leg, sent, setMid } = recordingLeg(clientToken);
        setMid(seed & 0xffff);
        // the full path (GroupProxy.relay): the server's options without origin options of its own, the proxy's
        // added, sorted (stably), then a NON on the client's token
        const parts = { code: m.code, options: sortOptions([...m.options.filter((o) => o.number !== RF && o.number !== rfw), ...added]), payload: m.payload };
        assert.equal(leg.relay(parts, added, false, () => undefined), true);
        assert.equal(leg.relayDatagram!(data, m, added, () => undefined), true, `seed ${seed}: the patch applies`);
        assert.equal(sent.length, 2);
        assert.deepEqual(sent[1], sent[0], `seed ${seed}: patched datagram differs from the full path`);
        // and it decodes to the message the client is meant to get
        const got = decode(sent[1]);
        assert.equal(got.type, 'NON');
        assert.deepEqual(got.token, clientToken);
        assert.deepEqual(got.options.filter((o) => o.number === RF).map((o) => o.value), [added[0].value]);
        assert.deepEqual(got.payload, m.payload);
      }
    } finally {
      configureOptionNumbers(before);
    }
  });

  it('declines (the full path runs instead) when the server sent an option of the number it would add, or the message is not a view of the datagram', function () {
    const data = encode({ type: 'NON', code: CODES.CONTENT, messageId: 9, token: Buffer.from('ab'), options: [{ number: 12, value: Buffer.from([0]) }, { number: RF, value: Buffer.alloc(6, 1) }], payload: Buffer.from('x') });
    const added = [{ number: RF, value: encodeReplyFrom({ scheme: 'coap', host: '127.0.0.2', port: 5683 }) }];
    assert.equal(relayDatagram(data, decode(data), 1, 1, Buffer.from('t'), added), undefined);
    const plain = encode({ type: 'NON', code: CODES.CONTENT, messageId: 9, token: Buffer.from('ab'), options: [{ number: 12, value: Buffer.from([0]) }], payload: Buffer.from('x') });
    const copy = decode(Buffer.from(plain));
    assert.equal(relayDatagram(plain, copy, 1, 1, Buffer.from('t'), added), undefined);
    assert.ok(relayDatagram(plain, decode(plain), 1, 1, Buffer.from('t'), added));
  });

  it('a client leg with OSCORE layers to put back declines: its responses are protected in full (oscore-capable-proxies-07 §2.5)', function () {
    const endpoint = { newMessageId: () => 1, sendEncoded: () => assert.fail('nothing may be sent') } as unknown as CoapEndpoint;
    const front = new CoapFront(endpoint);
    const req: IncomingRequest = { message: { type: 'CON', code: CODES.GET, messageId: 1, token: Buffer.from('t'), options: [], payload: Buffer.alloc(0) }, remote: { address: '127.0.0.1', port: 1 }, multicast: false };
    const leg = front.leg(req, { respond: () => undefined, ignore: () => undefined }, { address: '127.0.0.1', port: 1, kid: '01' }, [{} as never]);
    const data = encode({ type: 'NON', code: CODES.CONTENT, messageId: 9, token: Buffer.from('ab'), options: [], payload: Buffer.from('x') });
    assert.equal(leg.relayDatagram!(data, decode(data), [{ number: RF, value: Buffer.alloc(6) }], () => undefined), false);
  });
});
