// Fuzz-style robustness: thousands of malformed datagrams (seeded, reproducible) at a group server (unicast and
// group address) and at a client endpoint, interleaved with valid requests that must still get correct answers.
// Nothing may throw out of a socket callback, and the endpoints' state must stay bounded: the duplicate cache holds
// at most its entry and byte caps under a flood and is empty EXCHANGE_LIFETIME later (on a FakeClock). OSCORE
// unprotect (RFC 8613 §8.2) gets mutated protected requests: each fails with a typed OscoreError or CoapFormatError
// and never moves the replay window, while the genuine requests between them still verify.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import crypto from 'node:crypto';
import { CoapFormatError, decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, createMessage } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupClient } from '../../src/group/group-client';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint, DEDUP_ENTRY_OVERHEAD, DEDUP_SOURCE_OVERHEAD } from '../../src/messaging/endpoint';
import { DEFAULT_PARAMS, exchangeLifetime } from '../../src/messaging/parameters';
import { OscoreError, SecurityContext, protectRequest, unprotectRequest } from '../../src/oscore';
import { UdpTransport } from '../../src/transport/udp-transport';
import { closeChecked } from '../support/endpoints';
import { FakeClock } from '../support/fake-clock';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, rawProbe } from '../support/lamps';

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
    // A receive buffer that holds the bursts of 500 malformed datagrams below: with the default one (212,992 B) the
    // kernel dropped about 430 datagrams per run, now and then a lamp's answer among them, which no code of ours sees.
    client = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }), { params: { ACK_TIMEOUT: 200 } });
    attacker = dgram.createSocket('udp4');
    await new Promise<void>((r) => attacker.bind(0, '127.0.0.1', () => r()));
    attacker.setMulticastInterface('127.0.0.1');
    attacker.setMulticastTTL(1);
  });
  after(async function () {
    await new Promise<void>((r) => attacker.close(() => r()));
    await closeChecked(client, lamps.map((l) => l.server));
  });

  it('survives 6000 malformed datagrams while answering every interleaved valid request correctly', async function () {
    const rand = prng(0xc0a9);
    const target = lamps[0].server.address();
    const gc = new GroupClient(client);
    let answered = 0;
    const checks: Promise<void>[] = [];
    for (let i = 0; i < 6000; i++) {
      const dest = i % 3 === 0 ? { address: GROUP_V4, port } : i % 3 === 1 ? target : client.transport.address();
      attacker.send(mutate(rand), dest.port, dest.address === '0.0.0.0' ? '127.0.0.1' : dest.address);
      if (i % 100 === 0) {
        checks.push(
          gc.unicast({ uri: `coap://${target.address}:${target.port}/light`, confirmable: true }).then((res) => {
            assert.equal(res.message.code, CODES.CONTENT);
            assert.equal(JSON.parse(res.message.payload.toString()).name, lamps[0].name);
            answered++;
          }),
        );
        await new Promise((r) => setImmediate(r));
      }
    }
    await Promise.all(checks);
    assert.equal(answered, 60, 'every valid request got its correct answer');

    // A group request still reaches every lamp, with malformed traffic still aimed at the client.
    // (ended by the fifth answer; the deadline only bounds a failure, so that a loaded machine does not fail it)
    const ex = gc.request({ uri: `coap://${GROUP_V4}:${port}/light`, timeout: 5000 });
    let answers = 0;
    ex.on('response', () => {
      if (++answers === 5) ex.cancel();
    });
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
    // bounded state: nothing pending; the duplicate cache accounts each entry and kept reply
    assert.equal(client.activeExchanges, 0);
    assert.ok(server.dedupBytes >= server.dedupEntries * DEDUP_ENTRY_OVERHEAD);
    assert.ok(server.dedupBytes <= server.dedupEntries * (DEDUP_ENTRY_OVERHEAD + DEDUP_SOURCE_OVERHEAD + 1152), `dedup ${server.dedupEntries} entries, ${server.dedupBytes} bytes`);
  });

  it('answers a unicast request with an unknown critical option with 4.02, and a CON format error with RST', async function () {
    const target = lamps[1].server.address();
    const sock = await rawProbe();
    const got = sock.replies;
    sock.send(encode({ type: 'CON', code: CODES.GET, messageId: 0x4242, token: Buffer.from([7]), options: [{ number: 65001, value: Buffer.from('x') }], payload: Buffer.alloc(0) }), target);
    sock.send(Buffer.from('40019999ff', 'hex'), target); // CON, payload marker, no payload
    await sock.count(2);
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
      await sock.count(1);
      sock.send(encode({ type: 'CON', code: CODES.GET, messageId: 8, token: Buffer.from([2]), options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) }), dest);
      await sock.count(2);
      const codes = replies.map((b) => b[1]);
      assert.deepEqual(codes, [0x82, 0x45]);
    } finally {
      await sock.close();
      await closeChecked(lamp.server);
    }
  });
});

describe('fuzz: the duplicate cache under a flood stays within its caps and is swept (FakeClock)', function () {
  this.timeout(60000);

  it('10,000 distinct CON requests with 1 KiB replies: entries and bytes within the caps, every request answered, empty after EXCHANGE_LIFETIME', async function () {
    const clock = new FakeClock();
    const port = await freeGroupPort();
    const maxDedupEntries = 2000;
    const maxDedupBytes = 256 * 1024;
    const server = await GroupServer.open({ address: '127.0.0.1', port: 0, groups: [{ address: GROUP_V4, port }], leisure: 0, clock, maxDedupEntries, maxDedupBytes });
    server.addResource('/big', () => ({ payload: Buffer.alloc(1024, 0x62) }));
    const sock = await rawProbe();
    try {
      const dest = server.address();
      const rand = prng(0xdedb);
      let sent = 0;
      let maxEntries = 0;
      let maxBytes = 0;
      for (let batch = 0; batch < 100; batch++) {
        for (let i = 0; i < 100; i++) {
          const token = Buffer.alloc(4);
          token.writeUInt32BE(Math.floor(rand() * 0x100000000));
          sock.send(encode(createMessage({ type: 'CON', code: CODES.GET, messageId: sent & 0xffff, token, options: [{ number: OPT.URI_PATH, value: Buffer.from('big') }] })), dest);
          sent++;
        }
        await sock.count(sent); // every request answered (a lost datagram would stop the test here)
        maxEntries = Math.max(maxEntries, server.endpoint.dedupEntries);
        maxBytes = Math.max(maxBytes, server.endpoint.dedupBytes);
      }
      assert.equal(sock.replies.length, 10_000);
      assert.ok(sock.replies.every((r) => decode(r).code === CODES.CONTENT && decode(r).payload.length === 1024));
      assert.ok(maxBytes <= maxDedupBytes, `dedup bytes ${maxBytes} > ${maxDedupBytes}`);
      assert.ok(maxEntries <= maxDedupEntries, `dedup entries ${maxEntries} > ${maxDedupEntries}`);
      // the byte cap is what binds here: about maxDedupBytes / (reply + overhead) entries, not the entry cap
      assert.ok(maxEntries <= Math.ceil(maxDedupBytes / (1024 + DEDUP_ENTRY_OVERHEAD)), `entries ${maxEntries}`);
      assert.ok(server.endpoint.counters.dedupEvictions >= 10_000 - maxEntries);
      assert.equal(server.endpoint.counters.handlerErrors, 0);
      clock.advance(exchangeLifetime(DEFAULT_PARAMS));
      server.endpoint.sweep();
      assert.equal(server.endpoint.dedupEntries, 0);
      assert.equal(server.endpoint.dedupBytes, 0);
    } finally {
      await sock.close();
      await closeChecked(server);
    }
  });
});

describe('fuzz: OSCORE unprotect (RFC 8613 §8.2) with mutated protected requests', function () {
  it("5,000 mutations: a typed error and an untouched replay window, or (header bytes only) the genuine request; the genuine requests between them verify", function () {
    const base = { masterSecret: crypto.randomBytes(16), masterSalt: crypto.randomBytes(8) };
    const client = SecurityContext.derive({ ...base, senderId: Buffer.from('c1', 'hex'), recipientId: Buffer.from('5e', 'hex') });
    const server = SecurityContext.derive({ ...base, senderId: Buffer.from('5e', 'hex'), recipientId: Buffer.from('c1', 'hex') });
    const rand = prng(0x05c0);
    const request = () => createMessage({ type: 'CON', code: CODES.POST, messageId: 1, token: Buffer.from([1]), options: [{ number: OPT.URI_PATH, value: Buffer.from('door') }], payload: Buffer.from('open') });
    const kinds = new Map<string, number>();
    let genuine = 0;
    for (let i = 0; i < 5000; i++) {
      const wire = encode(protectRequest(client, request()).message);
      const b = Buffer.from(wire);
      const kind = Math.floor(rand() * 5);
      if (kind === 0) for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) b[Math.floor(rand() * b.length)] ^= 1 << Math.floor(rand() * 8);
      else if (kind === 1) b[4 + Math.floor(rand() * (b.length - 4))] = Math.floor(rand() * 256);
      else if (kind === 2) b[b.length - 1 - Math.floor(rand() * 8)] ^= 0x01; // the tag
      let mutated: Buffer = b;
      if (kind === 3) mutated = b.subarray(0, 4 + Math.floor(rand() * (b.length - 4)));
      if (kind === 4) mutated = Buffer.concat([b, Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 16) }, () => Math.floor(rand() * 256)))]);
      const highest = server.replay.highest;
      if (!mutated.equals(wire)) {
        try {
          const v = unprotectRequest(server, decode(mutated));
          // Only bytes OSCORE leaves unprotected changed (type, Message ID, token): the request is the genuine one.
          assert.equal(v.message.code, CODES.POST);
          assert.equal(v.message.payload.toString(), 'open');
          assert.deepEqual(v.message.options.map((o) => [o.number, o.value.toString()]), [[OPT.URI_PATH, 'door']]);
          kinds.set('accepted', (kinds.get('accepted') ?? 0) + 1);
        } catch (err) {
          if (err instanceof assert.AssertionError) throw err;
          assert.ok(err instanceof OscoreError || err instanceof CoapFormatError, `untyped error ${String(err)}`);
          const name = err instanceof OscoreError ? err.code : 'format';
          kinds.set(name, (kinds.get(name) ?? 0) + 1);
          assert.equal(server.replay.highest, highest, 'a failed request must not move the replay window');
        }
      }
      // every 10th round the genuine request follows and verifies
      if (i % 10 === 0) {
        const ok = unprotectRequest(server, decode(encode(protectRequest(client, request()).message)));
        assert.equal(ok.message.payload.toString(), 'open');
        genuine++;
      }
    }
    assert.equal(genuine, 500);
    // nothing but the unprotected header fields can change without failing the AEAD check (asserted above)
    assert.ok((kinds.get('accepted') ?? 0) < 250, JSON.stringify([...kinds]));
    assert.ok((kinds.get('ERR_OSCORE_DECRYPT') ?? 0) > 1000, JSON.stringify([...kinds]));
  });
});
