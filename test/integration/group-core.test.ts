// Core group communication on real multicast over loopback (groupcomm-bis §3.1): 5 servers on 127.0.0.2-6.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { encode, decode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { getOption } from '../../src/coap/message';
import { OPT, decodeUint } from '../../src/coap/options';
import { GroupClient, GroupResponse } from '../../src/group/group-client';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { UdpTransport } from '../../src/transport/udp-transport';
import { once } from 'node:events';
import { closeChecked } from '../support/endpoints';
import { waitFor } from '../support/wait';

const EMPTY_PAYLOAD = Buffer.alloc(0);
import { GROUP_V4, Lamp, freeGroupPort, startLamps, rawProbe } from '../support/lamps';

describe('group client and group servers on loopback multicast', function () {
  let port: number;
  let lamps: Lamp[];
  let client: CoapEndpoint;

  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(5, { groupPort: port, leisure: 100 });
    client = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
  });
  after(async function () {
    await closeChecked(client, lamps.map((l) => l.server));
  });

  it('one NON group request yields one response per server, each with its own origin, then completion', async function () {
    const gc = new GroupClient(client);
    const ex = gc.request({ uri: `coap://${GROUP_V4}:${port}/light`, timeout: 600 });
    const got: GroupResponse[] = [];
    for await (const r of ex) got.push(r);
    const summary = await ex.summary;
    assert.equal(got.length, 5);
    assert.deepEqual(got.map((r) => r.origin.address).sort(), lamps.map((l) => l.address).sort());
    for (const r of got) {
      assert.equal(r.message.code, CODES.CONTENT);
      assert.equal(r.origin.port, lamps.find((l) => l.address === r.origin.address)!.server.address().port);
      assert.equal(JSON.parse(r.message.payload.toString()).name, lamps.find((l) => l.address === r.origin.address)!.name);
    }
    assert.equal(summary.responses, 5);
    assert.equal(summary.responders.length, 5);
    // the token is retired, not freed (groupcomm-bis §3.1.5)
    assert.equal(client.isTokenBusy(ex.token), true);
  });

  it('a held response reads the same message during the event and after the exchange ended (kept as the bytes of its datagram, RFC 7252 §3)', async function () {
    const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/light`, timeout: 600 });
    const seen = new Map<number, { code: number; messageId: number; payload: string; options: string }>();
    ex.on('response', (r: GroupResponse) => {
      // only every other response is read while the event runs; the rest are first read after the end
      if (r.index % 2 === 1) seen.set(r.index, { code: r.message.code, messageId: r.message.messageId, payload: r.message.payload.toString(), options: JSON.stringify(r.message.options) });
    });
    const s = await ex.summary;
    assert.equal(s.responses, 5);
    for (const r of ex.responses) {
      const m = r.message;
      assert.equal(r.message, m, 'read twice: the same object');
      assert.equal(m.code, CODES.CONTENT);
      assert.ok(m.token.equals(ex.token));
      assert.equal(JSON.parse(m.payload.toString()).name, lamps.find((l) => l.address === r.origin.address)!.name);
      assert.equal(getOption(m, OPT.CONTENT_FORMAT)?.length ?? 0, 1);
      const early = seen.get(r.index);
      if (early) assert.deepEqual({ code: m.code, messageId: m.messageId, payload: m.payload.toString(), options: JSON.stringify(m.options) }, early);
      assert.equal(r.remote.address, r.origin.address);
      assert.equal(r.remote.port, r.origin.port);
      // a JSON copy (a debug view, Node-RED's clone) shows the message and the origin with its URI
      const copy = JSON.parse(JSON.stringify(r));
      assert.equal(copy.message.code, CODES.CONTENT);
      assert.equal(copy.origin.uri, r.origin.uri);
    }
    assert.equal(seen.size, 3);
  });

  it('servers suppress error responses to group requests (4.04 for a missing resource)', async function () {
    const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/nothing-here`, timeout: 400 });
    const s = await ex.summary;
    assert.equal(s.responses, 0);
    assert.ok(lamps.every((l) => l.server.counters.suppressed >= 1));
  });

  it('a response arriving after the deadline is dropped without RST', async function () {
    const slow = await GroupServer.open({ address: '127.0.0.20', port: 0, groups: [{ address: GROUP_V4, port }], leisure: 0 });
    // the server answers only when the test lets it: after the client's deadline has passed
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    slow.addResource('/slow', () => released.then(() => ({ code: CODES.CONTENT, payload: 'late' })));
    try {
      const before = client.counters.lateGroupResponses;
      const resetsBefore = client.counters.resetsSent;
      const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/slow`, timeout: 150 });
      const s = await ex.summary;
      assert.equal(s.responses, 0);
      const arrived = once(client.transport, 'datagram');
      release();
      await arrived; // the late response reached the client (its endpoint handled it first: it listened first)
      assert.equal(client.counters.lateGroupResponses, before + 1);
      assert.equal(client.counters.resetsSent, resetsBefore);
    } finally {
      await closeChecked(slow);
    }
  });

  it('a follow-up unicast CON to one origin retransmits when the first datagram is lost', async function () {
    const target = lamps[2];
    const dest = target.server.address();
    // A lossy relay in front of lamp 3 drops the first datagram it sees.
    const relay = dgram.createSocket('udp4');
    let seen = 0;
    let clientAddr: dgram.RemoteInfo | undefined;
    relay.on('message', (m, rinfo) => {
      if (rinfo.address === dest.address && rinfo.port === dest.port) {
        if (clientAddr) relay.send(m, clientAddr.port, clientAddr.address);
        return;
      }
      clientAddr = rinfo;
      if (seen++ === 0) return; // lost
      relay.send(m, dest.port, dest.address);
    });
    await new Promise<void>((r) => relay.bind(0, '127.0.0.1', () => r()));
    const fast = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }), { params: { ACK_TIMEOUT: 100 } });
    try {
      const res = await new GroupClient(fast).unicast({ uri: `coap://127.0.0.1:${relay.address().port}/light`, confirmable: true });
      assert.equal(res.message.type, 'ACK');
      assert.equal(res.message.code, CODES.CONTENT);
      assert.equal(JSON.parse(res.message.payload.toString()).name, target.name);
      assert.equal(seen, 2);
      assert.equal(fast.counters.retransmissions, 1);
    } finally {
      await closeChecked(fast);
      await new Promise<void>((r) => relay.close(() => r()));
    }
  });

  it('Block2: a server with a large body starts block-wise and the client fetches the rest by unicast', async function () {
    const big = Buffer.alloc(3000, 'x');
    for (const l of lamps) l.server.addResource('/big', () => ({ code: CODES.CONTENT, payload: Buffer.concat([Buffer.from(l.name), big]) }));
    try {
      const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/big`, timeout: 500 });
      const s = await ex.summary;
      assert.equal(s.responses, 5);
      for (const r of ex.responses) {
        assert.equal(r.reassembled, true);
        assert.equal(r.message.payload.length, 3000 + 6);
        assert.equal(getOption(r.message, OPT.BLOCK2), undefined);
      }
    } finally {
      for (const l of lamps) l.server.removeResource('/big');
    }
  });

  it('answers a duplicate CON request from its dedup cache without re-running the handler', async function () {
    const sock = await rawProbe();
    const replies = sock.replies;
    const before = lamps[0].server.counters.requests;
    const req = encode({ type: 'CON', code: CODES.GET, messageId: 0x1234, token: Buffer.from([1, 2]), options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) });
    const dest = lamps[0].server.address();
    sock.send(req, dest);
    await sock.count(1);
    sock.send(req, dest);
    await sock.count(2);
    await sock.close();
    assert.equal(replies.length, 2);
    assert.deepEqual(replies[0], replies[1]);
    const m = decode(replies[0]);
    assert.equal(m.type, 'ACK');
    assert.equal(m.messageId, 0x1234);
    assert.equal(decodeUint(getOption(m, OPT.CONTENT_FORMAT)!), 50);
    assert.equal(lamps[0].server.counters.requests, before + 1);
  });
});

describe('message layer: duplicate detection', function () {
  it('the same Message ID with another token is a new request (a peer whose IDs wrapped), not a duplicate', async function () {
    const port = await freeGroupPort();
    const [lamp] = await startLamps(1, { groupPort: port, firstHost: 80 });
    const sock = await rawProbe();
    const replies = sock.replies;
    try {
      const dest = lamp.server.address();
      const req = (token: string) => encode({ type: 'CON', code: CODES.GET, messageId: 0x4321, token: Buffer.from(token, 'hex'), options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) });
      sock.send(req('01'), dest);
      await sock.count(1);
      sock.send(req('01'), dest); // a true retransmission
      await sock.count(2);
      sock.send(req('02'), dest); // same ID, new token
      await sock.count(3);
      assert.equal(lamp.server.counters.requests, 2);
      assert.deepEqual(replies.map((b) => decode(b).token.toString('hex')), ['01', '01', '02']);
    } finally {
      await sock.close();
      await closeChecked(lamp.server);
    }
  });
});

describe('message layer: duplicate NON responses (RFC 7252 §4.5)', function () {
  it('a duplicated NON response is delivered once and keeps no duplicate-cache entry; a new Message ID is a new response', async function () {
    const ep = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
    const server = await rawProbe();
    try {
      const token = Buffer.from('a1b2c3d4', 'hex');
      const got: number[] = [];
      const stop = ep.listen(token, (res) => got.push(res.message.messageId));
      const res = (messageId: number, t = token) => encode({ type: 'NON', code: CODES.CONTENT, messageId, token: t, options: [], payload: Buffer.from('on') });
      const me = ep.transport.address();
      server.send(res(0x100), me);
      server.send(res(0x100), me); // the network duplicated it
      server.send(res(0x101), me);
      server.send(res(0x100, Buffer.from('ffffffff', 'hex')), me); // matches no exchange: answered with RST
      await server.count(1);
      assert.equal(decode(server.replies[0]).type, 'RST');
      assert.deepEqual(got, [0x100, 0x101]);
      assert.equal(ep.counters.duplicates, 1);
      assert.equal(ep.dedupEntries, 0, 'NON responses are remembered per source, not per message');
      assert.deepEqual(ep.nonResponseSources, { size: 1, evictions: 0 }, 'only the response that matched made a window');
      stop();
    } finally {
      await server.close();
      await closeChecked(ep);
    }
  });
});

describe('message layer: a duplicated NON response after its request ended (RFC 7252 §4.5)', function () {
  it('is ignored, not answered with RST: the server sees nothing for it', async function () {
    const ep = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
    const server = dgram.createSocket('udp4');
    await new Promise<void>((r) => server.bind(0, '127.0.0.1', () => r()));
    const fromClient: Buffer[] = [];
    server.on('message', (m, rinfo) => {
      fromClient.push(m);
      const req = decode(m);
      if (req.code !== CODES.GET) return;
      const res = encode({ type: 'NON', code: CODES.CONTENT, messageId: 0x2222, token: req.token, options: [], payload: Buffer.from('x') });
      server.send(res, rinfo.port, rinfo.address);
      server.send(res, rinfo.port, rinfo.address); // the network duplicated it
      // a marker after the duplicate: a response for no request, which is reset (RFC 7252 §4.3)
      server.send(encode({ type: 'NON', code: CODES.CONTENT, messageId: 0x2223, token: Buffer.from('0bad0bad', 'hex'), options: [], payload: EMPTY_PAYLOAD }), rinfo.port, rinfo.address);
    });
    try {
      const res = await ep.request({ code: CODES.GET }, { address: '127.0.0.1', port: server.address().port }, { confirmable: false });
      assert.equal(res.message.payload.toString(), 'x');
      await waitFor(() => fromClient.length >= 2, 'the RST to the marker');
      // the request, then only the marker's RST: none for the duplicate
      assert.deepEqual(fromClient.slice(1).map((b) => [decode(b).type, decode(b).messageId]), [['RST', 0x2223]]);
      assert.equal(ep.counters.duplicates, 1);
    } finally {
      await closeChecked(ep);
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('message layer: a request never hangs', function () {
  it('an ACK that matches the Message ID but carries another token (a server replaying an old reply) ends in ERR_TIMEOUT', async function () {
    const server = dgram.createSocket('udp4');
    await new Promise<void>((r) => server.bind(0, '127.0.0.1', () => r()));
    server.on('message', (m, rinfo) => {
      const req = decode(m);
      server.send(encode({ type: 'ACK', code: CODES.CONTENT, messageId: req.messageId, token: Buffer.from('deadbeef', 'hex'), options: [], payload: Buffer.from('old') }), rinfo.port, rinfo.address);
    });
    const ep = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
    try {
      const err = await ep.request({ code: CODES.GET }, { address: '127.0.0.1', port: server.address().port }, { timeout: 300 }).then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      );
      assert.equal(err?.code, 'ERR_TIMEOUT');
    } finally {
      await closeChecked(ep);
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('endpoint close(): a group request started while it runs', function () {
  it("a group request started from a pending exchange's 'end' listener during close() is refused at once with ERR_CLOSED 'endpoint closing', and the first exchange ends", async function () {
    const port = await freeGroupPort();
    const ep = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
    const gc = new GroupClient(ep);
    // no server answers: the first exchange is still collecting when close() ends it
    const first = gc.request({ uri: `coap://${GROUP_V4}:${port}/light`, timeout: 60_000 });
    let second: Error & { code?: string } | undefined;
    let started: ReturnType<GroupClient['request']> | undefined;
    first.on('end', () => {
      try {
        started = gc.request({ uri: `coap://${GROUP_V4}:${port}/again`, timeout: 60_000 });
      } catch (err) {
        second = err as Error & { code?: string };
      }
    });
    // the callback form too, started from the 'closing' event
    let third: Error & { code?: string } | undefined;
    ep.once('closing', () => {
      try {
        ep.groupRequest({ code: CODES.GET }, { address: GROUP_V4, port }, 60_000, () => undefined, () => undefined);
      } catch (err) {
        third = err as Error & { code?: string };
      }
    });
    await closeChecked(ep);
    const s = await first.summary;
    assert.equal(s.responses, 0);
    assert.equal(started, undefined, 'the second request was accepted and would never end');
    assert.equal(second?.code, 'ERR_CLOSED');
    assert.equal(second?.message, 'endpoint closing');
    assert.equal(third?.code, 'ERR_CLOSED');
    assert.equal(third?.message, 'endpoint closing');
    // after close, the same refusal says 'endpoint closed'
    assert.throws(() => gc.request({ uri: `coap://${GROUP_V4}:${port}/light` }), { code: 'ERR_CLOSED', message: 'endpoint closed' });
  });
});
