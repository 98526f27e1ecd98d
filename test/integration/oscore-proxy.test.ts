// Group proxy as an OSCORE endpoint on real sockets and loopback multicast (oscore-capable-proxies-07 §2;
// groupcomm-proxy-07 §5.2.1 steps 1-2, §5.4, §5.5, §10; RFC 8613 §7.4, §8.2, App. B.1): client -> proxy -> 5 OSCORE
// lamps on 127.0.0.2-6, with a client-proxy layer (RFC 8613) and, inside it, the end-to-end Group OSCORE layer
// (RFC 10021 group mode) for the servers (test/support/group-oscore.ts).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode, encode } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { CoapMessage, getOption } from '../../src/coap/message';
import { OPT, optionNumber } from '../../src/coap/options';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { ContextRegistry, FileSequenceStore, MemorySequenceStore, SecurityContext, decodeOscoreOption, decodePartialIv } from '../../src/oscore';
import { encodeReplyFrom } from '../../src/cbor/cri';
import { protectResponseLayers, proxyRelatedKind, removeRequestLayers } from '../../src/oscore/nested';
import { GroupProxy, ProxyEvent } from '../../src/proxy/group-proxy';
import { ProxiedGroupExchange, ProxiedRequestOptions, requestViaProxy } from '../../src/proxy/proxy-client';
import { RemoteAddress, UdpTransport } from '../../src/transport/udp-transport';
import { GROUP_V4, freeGroupPort, stopAll } from '../support/lamps';
import { pairwise } from '../support/oscore-group';
import { GroupMaterial, GroupOscoreLamp, groupMaterial, memberContext, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { waitFor } from '../support/wait';

/** Wait for a condition that events make true (checked on every turn of the event loop), never a fixed time. */
async function endpointOn(address = '127.0.0.1'): Promise<CoapEndpoint> {
  return new CoapEndpoint(await UdpTransport.open({ bindAddress: address }), { params: { ACK_TIMEOUT: 300 } });
}

interface OscoreField {
  kid?: string;
  piv?: number;
}
function oscoreOf(m: CoapMessage): OscoreField | undefined {
  const v = getOption(m, OPT.OSCORE);
  if (v === undefined) return undefined;
  const f = decodeOscoreOption(v);
  return { ...(f.kid ? { kid: f.kid.toString('hex') } : {}), ...(f.piv ? { piv: decodePartialIv(f.piv) } : {}) };
}

/** Record what an endpoint sends and receives on the wire. */
function tap(ep: CoapEndpoint) {
  const t = ep.transport as UdpTransport & { send: UdpTransport['send'] };
  const sent: Buffer[] = [];
  const received: Buffer[] = [];
  const original = t.send;
  t.send = (data: Buffer, remote: RemoteAddress) => {
    sent.push(Buffer.from(data));
    original.call(t, data, remote);
  };
  const onDatagram = (dg: { data: Buffer }) => received.push(Buffer.from(dg.data));
  t.on('datagram', onDatagram);
  return {
    sent,
    received,
    stop() {
      delete (t as { send?: unknown }).send; // back to the prototype's method
      t.off('datagram', onDatagram);
    },
  };
}

describe('group proxy with OSCORE: client-proxy layer, end-to-end layer inside (oscore-capable-proxies-07)', function () {
  this.timeout(20000);
  let port: number;
  let material: GroupMaterial;
  let lamps: GroupOscoreLamp[];
  let client: CoapEndpoint;
  let roaming: CoapEndpoint;
  let listen: CoapEndpoint;
  let upstream: CoapEndpoint;
  let proxy: GroupProxy;
  let plainPort: number;
  let plain: GroupServer;
  const events: ProxyEvent[] = [];
  // Client <-> proxy associations. The proxy's Sender ID is 0x01 in each; the clients' ones name them.
  const alice = pairwise('a0', '01');
  const mallory = pairwise('b0', '01'); // known to the proxy, not on its allow-list
  const rebooted = pairwise('c0', '01', { peer: { replayWindowInitialized: false } }); // the proxy lost this window
  let restartFiles: { dir: string; cp: string; e2e: string };
  let restartMaster: Buffer;
  const proxyAddr = () => listen.transport.address();
  const group = (p = '/light') => `coap://${GROUP_V4}:${port}${p}`;

  before(async function () {
    port = await freeGroupPort();
    plainPort = await freeGroupPort();
    material = groupMaterial(['5f', '6f', ...serverIds(5)]);
    // Two client Sender IDs end to end: 0x5f for most tests, 0x6f for the restart test.
    lamps = await startGroupOscoreLamps(5, { groupPort: port, material });
    // A plain server on a second group for the client-proxy-only case; its response carries an unknown option.
    plain = await GroupServer.open({ address: '127.0.0.30', port: 0, groups: [{ address: GROUP_V4, port: plainPort }], leisure: 20 });
    plain.addResource('/odd', () => ({ code: CODES.CONTENT, payload: 'odd', options: [{ number: 65000, value: Buffer.from('x') }] }));
    plain.addResource('/light', () => ({ code: CODES.CONTENT, payload: 'plain' }));
    client = await endpointOn('127.0.0.1');
    roaming = await endpointOn('127.0.0.10');
    listen = await endpointOn('127.0.0.1');
    upstream = await endpointOn('127.0.0.1');
    restartFiles = (() => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oscore-proxy-'));
      return { dir, cp: path.join(dir, 'c-p.ssn'), e2e: path.join(dir, 'e2e.ssn') };
    })();
    restartMaster = Buffer.from('0102030405060708090a0b0c0d0e0f10', 'hex');
    const restartProxySide = SecurityContext.derive({ masterSecret: restartMaster, senderId: Buffer.from('01', 'hex'), recipientId: Buffer.from('d0', 'hex') });
    proxy = new GroupProxy({
      listen,
      upstream,
      allow: [
        { address: '*', kid: 'a0' },
        { address: '*', kid: 'c0' },
        { address: '*', kid: 'd0' },
      ],
      oscore: { contexts: new ContextRegistry().add(alice.peer).add(mallory.peer).add(rebooted.peer).add(restartProxySide) },
    });
    proxy.on('event', (e: ProxyEvent) => events.push(e));
  });

  after(async function () {
    await proxy.close();
    const handlerErrors = [listen, upstream, plain.endpoint, ...lamps.map((l) => l.server.endpoint)].reduce((a, e) => a + e.counters.handlerErrors, 0);
    await stopAll(client, roaming, listen, upstream, plain, lamps.map((l) => l.server));
    assert.equal(handlerErrors, 0, 'no handler threw at the proxy or the servers');
    fs.rmSync(restartFiles.dir, { recursive: true, force: true });
  });

  const e2e = () => memberContext(material, '5f');
  let e2eClient: ReturnType<typeof e2e>;
  const request = (ep: CoapEndpoint, o: Partial<ProxiedRequestOptions> & Pick<ProxiedRequestOptions, 'oscore'>): ProxiedGroupExchange =>
    requestViaProxy(ep, { proxy: proxyAddr(), uri: group(), multicastTimeout: 1, timeout: 1400, ...o });
  const bothLayers = (cp: SecurityContext = alice.client) => {
    e2eClient ??= e2e();
    return { proxy: cp, endToEnd: { context: e2eClient.groupRequests() } };
  };

  it('5 responses through both layers, each origin from Reply-From; only an outer OSCORE option on the wire; a Partial IV on every relayed response but at most the first', async function () {
    const wire = tap(client);
    const groupsBefore = proxy.counters.groupRequests;
    try {
      const ex = request(client, { oscore: bothLayers() });
      const s = await ex.summary;
      assert.deepEqual(s.errors, []);
      assert.equal(ex.responses.length, 5);
      assert.deepEqual(new Set(ex.responses.map((r) => r.origin.address)), new Set(lamps.map((l) => l.address)));
      for (const r of ex.responses) {
        const lamp = lamps.find((l) => l.address === r.origin.address)!;
        assert.equal(codeToString(r.message.code), '2.05');
        assert.equal(JSON.parse(r.message.payload.toString()).name, lamp.name);
        assert.equal(r.origin.port, lamp.server.address().port);
        assert.equal(getOption(r.message, OPT.OSCORE), undefined);
      }
      // The request on the wire: POST with nothing but the proxy's OSCORE option (kid 0xa0); Proxy-Uri and
      // Multicast-Timeout travel encrypted for the proxy (§2.2), the path encrypted for the servers.
      const out = wire.sent.map((b) => decode(b)).filter((m) => m.code !== 0);
      assert.equal(out.length, 1);
      assert.equal(out[0].code, CODES.POST);
      assert.deepEqual(out[0].options.map((o) => o.number), [OPT.OSCORE]);
      assert.equal(oscoreOf(out[0])!.kid, 'a0');
      assert.ok(!out[0].payload.includes(Buffer.from('light')));
      // Relayed responses on the wire: 2.04 with only the proxy's OSCORE option; Reply-From is inside (class E).
      const relayed = wire.received.map((b) => decode(b)).filter((m) => m.code !== 0 && m.token.equals(ex.token));
      assert.equal(relayed.length, 5);
      assert.ok(relayed.every((m) => m.code === CODES.CHANGED && m.options.length === 1 && m.options[0].number === OPT.OSCORE));
      const pivs = relayed.map((m) => oscoreOf(m)!.piv);
      assert.ok(pivs.filter((p) => p === undefined).length <= 1, `Partial IVs ${JSON.stringify(pivs)}`);
      const numbered = pivs.filter((p): p is number => p !== undefined);
      assert.equal(new Set(numbered).size, numbered.length);
      // The proxy identified the client by its context and forwarded the inner request: the path stayed end to end.
      const req = events.filter((e) => e.kind === 'request').at(-1)!;
      assert.equal(req.client.kid, 'a0');
      assert.equal(req.target, `coap://${GROUP_V4}:${port}`);
      assert.equal(proxy.counters.groupRequests, groupsBefore + 1);
      // Every lamp saw the inner GET /light after removing its layer.
      assert.ok(lamps.every((l) => l.seen.some((x) => x.code === CODES.GET && x.path === '/light')));
    } finally {
      wire.stop();
    }
  });

  it('allow-list by OSCORE identity: a known but not allowed context gets a protected 4.01, and nothing reaches the group', async function () {
    const before = lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0);
    const ex = request(client, { oscore: { proxy: mallory.client } });
    const s = await ex.summary;
    assert.equal(ex.responses.length, 0);
    assert.equal(s.errors[0].code, '4.01');
    assert.deepEqual(ex.proxyErrors[0], { code: '4.01', message: ex.proxyErrors[0].message, oscore: 'protected' });
    assert.match(ex.proxyErrors[0].message, /not allowed/);
    assert.equal(events.filter((e) => e.kind === 'reject').at(-1)!.client.kid, 'b0');
    // refused before any state: the proxy started no group exchange (a count, not a wait for nothing)
    assert.equal(proxy.activeExchanges, 0);
    assert.equal(lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0), before);
  });

  it('the same context from another source address still works (the identity is the context, not the address)', async function () {
    const ex = request(roaming, { oscore: bothLayers() });
    const s = await ex.summary;
    assert.deepEqual(s.errors, []);
    assert.equal(ex.responses.length, 5);
    const req = events.filter((e) => e.kind === 'request').at(-1)!;
    assert.equal(req.client.address, '127.0.0.10');
    assert.equal(req.client.kid, 'a0');
  });

  it('a replayed request (the same bytes again) is rejected with an unprotected 4.01 "Replay detected", Max-Age 0', async function () {
    const wire = tap(client);
    let captured: Buffer;
    try {
      await request(client, { oscore: { proxy: alice.client }, uri: `coap://${GROUP_V4}:${plainPort}/light`, timeout: 1200 }).summary;
      captured = wire.sent.map((b) => ({ b, m: decode(b) })).find((x) => x.m.code === CODES.POST)!.b;
    } finally {
      wire.stop();
    }
    const groupsBefore = proxy.counters.groupRequests;
    const requestsBefore = proxy.counters.requests;
    // From the same source the message layer already drops it as a duplicate (RFC 7252 §4.5).
    const dups = listen.counters.duplicates;
    client.transport.send(captured, proxyAddr());
    await waitFor(() => listen.counters.duplicates > dups, 'the duplicate at the message layer', 10000);
    assert.equal(proxy.counters.requests, requestsBefore);
    // From another source it reaches OSCORE, whose replay window refuses it (RFC 8613 §7.4).
    const replay = decode(captured);
    assert.ok(encode(replay).equals(captured));
    const answer = new Promise<CoapMessage>((resolve) => {
      const stop = roaming.listen(replay.token, (res) => {
        stop();
        resolve(res.message);
      }, proxyAddr());
    });
    roaming.sendMessage(replay, proxyAddr());
    const res = await answer;
    assert.equal(codeToString(res.code), '4.01');
    assert.equal(res.payload.toString(), 'Replay detected');
    assert.equal(getOption(res, OPT.OSCORE), undefined, 'OSCORE errors go back unprotected (RFC 8613 §8.2)');
    assert.equal(getOption(res, OPT.MAX_AGE)!.length, 0);
    assert.equal(proxy.counters.groupRequests, groupsBefore);
  });

  it('a wrong key gives 4.00 "Decryption failed"; an unknown Sender ID 4.01 "Security context not found" (unprotected)', async function () {
    // A fresh Partial IV range, so that the replay check does not answer first.
    const wrong = alice.wrongKey({ sequenceStore: new MemorySequenceStore(1_000_000) });
    const ex1 = request(client, { oscore: { proxy: wrong } });
    await ex1.summary;
    assert.deepEqual(ex1.proxyErrors, [{ code: '4.00', message: '4.00 from the proxy, unprotected: Decryption failed', oscore: 'unprotected' }]);
    const stranger = pairwise('e0', '01');
    const ex2 = request(client, { oscore: { proxy: stranger.client } });
    await ex2.summary;
    assert.deepEqual(ex2.proxyErrors, [{ code: '4.01', message: '4.01 from the proxy, unprotected: Security context not found', oscore: 'unprotected' }]);
    assert.ok(proxy.counters.oscoreFailures >= 2);
  });

  it('a request without OSCORE gets 4.01 when the proxy requires it', async function () {
    const ex = requestViaProxy(client, { proxy: proxyAddr(), uri: group(), multicastTimeout: 1, timeout: 1200 });
    const s = await ex.summary;
    assert.equal(s.errors[0].code, '4.01');
    assert.match(ex.proxyErrors[0].message, /OSCORE/);
  });

  it('a restart of the client (new context objects on the same sequence number files) keeps working without reusing a Partial IV', async function () {
    const derive = () => {
      const ids = (s: string, r: string) => ({ senderId: Buffer.from(s, 'hex'), recipientId: Buffer.from(r, 'hex') });
      const cp = SecurityContext.derive({ masterSecret: restartMaster, ...ids('d0', '01') }, { sequenceStore: new FileSequenceStore(restartFiles.cp) });
      const g = memberContext(material, '6f', { sequenceStore: new FileSequenceStore(restartFiles.e2e) });
      return { cp, g };
    };
    const run = async (c: ReturnType<typeof derive>) => {
      const wire = tap(client);
      try {
        const ex = request(client, { oscore: { proxy: c.cp, endToEnd: { context: c.g.groupRequests() } } });
        const s = await ex.summary;
        assert.deepEqual(s.errors, []);
        assert.equal(ex.responses.length, 5);
        return oscoreOf(wire.sent.map((b) => decode(b)).find((m) => m.code === CODES.POST)!)!.piv!;
      } finally {
        wire.stop();
      }
    };
    const first = derive();
    const piv1 = await run(first);
    const e2eUsed = first.g.sequence.peek();
    // "Restart": the old objects are dropped; new ones read the files, which hold a limit ahead of every number used.
    const second = derive();
    assert.ok(second.cp.sequence.peek() > piv1);
    assert.ok(second.g.sequence.peek() >= e2eUsed);
    const piv2 = await run(second);
    assert.ok(piv2 > piv1, `Partial IV ${piv2} after the restart, ${piv1} before`);
  });

  it('a proxy that lost its replay window answers with a protected 4.01 + Echo; the client repeats with the Echo and gets the responses', async function () {
    const before = events.filter((e) => e.kind === 'reject').length;
    const ex = request(client, { oscore: bothLayers(rebooted.client), timeout: 1800 });
    const s = await ex.summary;
    assert.deepEqual(s.errors, []);
    assert.equal(ex.responses.length, 5);
    const rejects = events.filter((e) => e.kind === 'reject').slice(before);
    assert.equal(rejects.length, 1);
    assert.equal(rejects[0].code, '4.01');
  });

  it('client-proxy layer only, to plain servers: an option the proxy cannot protect gives 5.02 naming the server (OCP-07 §2.2)', async function () {
    const ex = request(client, { oscore: { proxy: alice.client }, uri: `coap://${GROUP_V4}:${plainPort}/odd` });
    const s = await ex.summary;
    assert.deepEqual(s.errors, []);
    assert.equal(ex.responses.length, 1);
    const r = ex.responses[0];
    assert.equal(codeToString(r.message.code), '5.02');
    assert.match(r.message.payload.toString(), /option 65000/);
    assert.equal(r.origin.address, '127.0.0.30');
    // and a normal response from the same server passes, its Reply-From inside the proxy's layer
    const ok = request(client, { oscore: { proxy: alice.client }, uri: `coap://${GROUP_V4}:${plainPort}/light` });
    await ok.summary;
    assert.equal(ok.responses.length, 1);
    assert.equal(ok.responses[0].message.payload.toString(), 'plain');
    assert.ok(getOption(ok.responses[0].message, optionNumber('Reply-From')));
  });

  it('reverse proxy: Uri-Host stays Outer (§2.2 step 7), the proxy decrypts first, asks for Multicast-Timeout in its layer, then relays', async function () {
    const rl = await endpointOn('127.0.0.1');
    const ru = await endpointOn('127.0.0.1');
    const reverse = new GroupProxy({
      listen: rl,
      upstream: ru,
      forward: false,
      reverse: [{ host: 'group1.example', group: `coap://${GROUP_V4}:${port}`, standIn: 'group' }],
      allow: [{ address: '*', kid: 'a0' }],
      oscore: { contexts: new ContextRegistry().add(alice.peer) },
    });
    const rejects: ProxyEvent[] = [];
    reverse.on('event', (e: ProxyEvent) => e.kind === 'reject' && rejects.push(e));
    const wire = tap(client);
    try {
      // The client does not know it talks to a proxy: no Multicast-Timeout at first (GCP-07 §6.1).
      const ex = requestViaProxy(client, { proxy: rl.transport.address(), uri: 'coap://group1.example/light', targetStyle: 'reverse', timeout: 2600, oscore: bothLayers() });
      const s = await ex.summary;
      assert.deepEqual(s.errors, []);
      assert.equal(ex.multicastTimeout, 1, 'retried after the (protected) 4.00');
      assert.deepEqual(rejects.map((e) => e.code), ['4.00']);
      assert.equal(ex.responses.length, 5);
      assert.deepEqual(new Set(ex.responses.map((r) => r.origin.address)), new Set(lamps.map((l) => l.address)));
      const posts = wire.sent.map((b) => decode(b)).filter((m) => m.code === CODES.POST);
      assert.equal(posts.length, 2);
      for (const m of posts) {
        // Uri-Port too: the group's port differs from the proxy's; both stay class U without Proxy-Scheme.
        assert.deepEqual(m.options.map((o) => o.number), [OPT.URI_HOST, OPT.URI_PORT, OPT.OSCORE]);
        assert.equal(getOption(m, OPT.URI_HOST)!.toString(), 'group1.example');
      }
    } finally {
      wire.stop();
      await reverse.close();
      await rl.close();
      await ru.close();
    }
  });

  it('with an end-to-end layer expected, a relayed error without one is reported with its code, not delivered', async function () {
    // A stand-in proxy: removes the client's layer, then relays one 5.02 for 127.0.0.2 in that layer only.
    const fake = await endpointOn('127.0.0.1');
    const cp = pairwise('f0', '01');
    fake.setRequestHandler((req, ctx) => {
      ctx.ignore();
      const r = removeRequestLayers(req.message, { contexts: cp.peer, proxyRelated: (m) => proxyRelatedKind(m) === 'forward' });
      const parts = protectResponseLayers(r.layers, { code: CODES.BAD_GATEWAY, options: [{ number: optionNumber('Reply-From'), value: encodeReplyFrom({ scheme: 'coap', host: '127.0.0.2', port: 5683 }) }], payload: Buffer.from('cannot relay') });
      fake.sendMessage({ type: 'NON', messageId: fake.newMessageId(req.remote), token: req.message.token, ...parts }, req.remote);
    });
    try {
      const ex = requestViaProxy(client, { proxy: fake.transport.address(), uri: group(), multicastTimeout: 1, timeout: 1200, oscore: { proxy: cp.client, endToEnd: { context: e2e().groupRequests() } } });
      const s = await ex.summary;
      assert.equal(ex.responses.length, 0);
      assert.deepEqual(s.errors, [{ origin: 'coap://127.0.0.2', error: '5.02 without end-to-end protection: cannot relay', code: '5.02' }]);
    } finally {
      await fake.close();
    }
  });

  it('the Early Stop Request travels in the client\'s layer and ends the relay', async function () {
    const stops = proxy.counters.earlyStops;
    const ex = request(client, { oscore: bothLayers(), multicastTimeout: 3, timeout: 4000 });
    await waitFor(() => proxy.activeExchanges === 1, 'the exchange at the proxy', 10000);
    ex.cancel();
    await ex.summary;
    await waitFor(() => proxy.counters.earlyStops === stops + 1, 'the Early Stop Request at the proxy', 10000);
    assert.equal(proxy.activeExchanges, 0);
  });
});
