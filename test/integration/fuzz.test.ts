// Fuzz-style robustness: thousands of malformed datagrams (seeded, reproducible) at a group server (unicast and
// group address) and at a client endpoint, interleaved with valid requests that must still get correct answers.
// Nothing may throw out of a socket callback, and the endpoints' state must stay bounded.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupClient } from '../../src/group/group-client';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { UdpTransport } from '../../src/transport/udp-transport';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll, rawProbe } from '../support/lamps';

/** xorshift32: reproducible pseudo-random bytes for the mutations. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

function validRequest(rand: () => number): CoapMessage {
  return {
    type: rand() < 0.5 ? 'CON' : 'NON', code: CODES.GET, messageId: Math.floor(rand() * 0x10000), token: Buffer.from([1, 2, 3]),
    options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }, { number: OPT.ACCEPT, value: Buffer.from([50]) }], payload: Buffer.alloc(0),
  };
}

/** One malformed (or hostile) datagram. */
function mutate(rand: () => number): Buffer {
  const base = encode(validRequest(rand));
  const kind = Math.floor(rand() * 9);
  const b = Buffer.from(base);
  switch (kind) {
    case 0: // random garbage of random length
      return Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256)));
    case 1: // truncated
      return b.subarray(0, Math.floor(rand() * b.length));
    case 2: // random byte flips
      for (let i = 0; i < 3; i++) b[Math.floor(rand() * b.length)] ^= 1 << Math.floor(rand() * 8);
      return b;
    case 3: // token length 9..15
      b[0] = (b[0] & 0xf0) | (9 + Math.floor(rand() * 7));
      return b;
    case 4: // option delta/length nibble 15
      return Buffer.concat([b.subarray(0, 7), Buffer.from([rand() < 0.5 ? 0xf1 : 0x1f, 0x41])]);
    case 5: // payload marker without payload
      return Buffer.concat([b, Buffer.from([0xff])]);
    case 6: // unknown critical option 65001 (4.02 for unicast CON/NON, silence for group)
      return encode({ ...validRequest(rand), options: [{ number: 65001, value: Buffer.from('x') }] });
    case 7: // responses, ACKs and RSTs nobody asked for
      return encode({ type: (['CON', 'NON', 'ACK', 'RST'] as const)[Math.floor(rand() * 4)], code: rand() < 0.5 ? 0 : CODES.CONTENT, messageId: Math.floor(rand() * 0x10000), token: Buffer.alloc(rand() < 0.5 ? 0 : 4, 9), options: [], payload: Buffer.alloc(0) });
    default: // a huge option length claim
      return Buffer.concat([b.subarray(0, 4), Buffer.from([0xbe, 0xff, 0xff])]);
  }
}

describe('fuzz: malformed datagrams at a group server and a client endpoint', function () {
  this.timeout(60000);
  let port: number;
  let lamps: Lamp[];
  let client: CoapEndpoint;
  let attacker: dgram.Socket;

  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(5, { groupPort: port, leisure: 20 });
    client = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }), { params: { ACK_TIMEOUT: 200 } });
    attacker = dgram.createSocket('udp4');
    await new Promise<void>((r) => attacker.bind(0, '127.0.0.1', () => r()));
    attacker.setMulticastInterface('127.0.0.1');
    attacker.setMulticastTTL(1);
  });
  after(async function () {
    await new Promise<void>((r) => attacker.close(() => r()));
    await stopAll(client, lamps.map((l) => l.server));
  });

  it('survives 6000 malformed datagrams while answering every interleaved valid request correctly', async function () {
    const rand = prng(0xc0a9);
    const target = lamps[0].server.address();
    const gc = new GroupClient(client);
    let valid = 0;
    const checks: Promise<void>[] = [];
    for (let i = 0; i < 6000; i++) {
      const dest = i % 3 === 0 ? { address: GROUP_V4, port } : i % 3 === 1 ? target : client.transport.address();
      attacker.send(mutate(rand), dest.port, dest.address === '0.0.0.0' ? '127.0.0.1' : dest.address);
      if (i % 100 === 0) {
        valid++;
        checks.push(
          gc.unicast({ uri: `coap://${target.address}:${target.port}/light`, confirmable: true }).then((res) => {
            assert.equal(res.message.code, CODES.CONTENT);
            assert.equal(JSON.parse(res.message.payload.toString()).name, lamps[0].name);
          }),
        );
        await new Promise((r) => setImmediate(r));
      }
    }
    await Promise.all(checks);
    assert.equal(valid, 60);

    // A group request still reaches every lamp, with malformed traffic still aimed at the client.
    const ex = gc.request({ uri: `coap://${GROUP_V4}:${port}/light`, timeout: 400 });
    for (let i = 0; i < 500; i++) attacker.send(mutate(rand), client.transport.address().port, '127.0.0.1');
    const s = await ex.summary;
    assert.equal(s.responders.length, 5);

    const malformed = (e: CoapEndpoint) => Object.values(e.counters.malformed).reduce((a, b) => a + b, 0);
    const server = lamps[0].server.endpoint;
    assert.ok(malformed(server) > 500, `server counted ${malformed(server)} malformed`);
    assert.ok(server.counters.unknownCriticalOptions > 50);
    assert.ok(malformed(client) > 200, `client counted ${malformed(client)} malformed`);
    assert.ok(client.counters.unmatchedResponses > 0);
    assert.equal(client.counters.handlerErrors, 0);
    assert.equal(server.counters.handlerErrors, 0);
    // bounded state: nothing pending, dedup entries no more than datagrams seen
    assert.equal(client.activeExchanges, 0);
    assert.ok(server.dedupEntries <= server.counters.received);
  });

  it('answers a unicast request with an unknown critical option with 4.02, and a CON format error with RST', async function () {
    const target = lamps[1].server.address();
    const sock = await rawProbe();
    const got = sock.replies;
    sock.send(encode({ type: 'CON', code: CODES.GET, messageId: 0x4242, token: Buffer.from([7]), options: [{ number: 65001, value: Buffer.from('x') }], payload: Buffer.alloc(0) }), target);
    sock.send(Buffer.from('40019999ff', 'hex'), target); // CON, payload marker, no payload
    await new Promise((r) => setTimeout(r, 200));
    await sock.close();
    const hexes = got.map((b) => b.toString('hex'));
    assert.ok(hexes.some((h) => h.startsWith('6182' + '4242')), `4.02 ACK expected, got ${hexes}`);
    assert.ok(hexes.includes('70009999'), `RST expected, got ${hexes}`);
  });
});

describe('bad input that used to escape: port 0, over-long option values', function () {
  it('a send to port 0 is counted as a send error, never thrown', async function () {
    const t = await UdpTransport.open({ bindAddress: '127.0.0.1' });
    const errors: Error[] = [];
    t.on('error', (e: Error) => errors.push(e));
    try {
      t.send(Buffer.from([0x40, 0, 0, 0]), { address: '127.0.0.1', port: 0 });
      assert.equal(t.counters.sendErrors, 1);
      assert.equal(errors.length, 1);
    } finally {
      await t.close();
    }
  });

  it('a request with a 7-byte Observe value gets 4.02 from a group server, and the server keeps serving', async function () {
    const port = await freeGroupPort();
    const [lamp] = await startLamps(1, { groupPort: port, firstHost: 90 });
    const sock = await rawProbe();
    const replies = sock.replies;
    try {
      const dest = lamp.server.address();
      sock.send(encode({ type: 'CON', code: CODES.GET, messageId: 7, token: Buffer.from([1]), options: [{ number: OPT.OBSERVE, value: Buffer.alloc(7, 1) }, { number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) }), dest);
      await new Promise((r) => setTimeout(r, 150));
      sock.send(encode({ type: 'CON', code: CODES.GET, messageId: 8, token: Buffer.from([2]), options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) }), dest);
      await new Promise((r) => setTimeout(r, 150));
      const codes = replies.map((b) => b[1]);
      assert.deepEqual(codes, [0x82, 0x45]);
    } finally {
      await sock.close();
      await lamp.server.close();
    }
  });
});
