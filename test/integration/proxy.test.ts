// Group proxy on real sockets and loopback multicast (groupcomm-proxy-07 §5, §6, §8; RFC 10020 §3.5; RFC 8768):
// client -> proxy -> 5 lamps on 127.0.0.2-6.

import assert from 'node:assert/strict';
import { decodeReplyFrom, decodeResponseForwarding } from '../../src/cbor/cri';
import { CODES, codeToString } from '../../src/coap/codes';
import { getOption } from '../../src/coap/message';
import { OPT, configureOptionNumbers, decodeUint, encodeUint, optionNumber } from '../../src/coap/options';
import { GroupResponse } from '../../src/group/group-client';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupProxy, GroupProxyOptions, ProxyEvent } from '../../src/proxy/group-proxy';
import { ProxiedGroupExchange, RevalidatedResponse, requestUnicastViaProxy, requestViaProxy } from '../../src/proxy/proxy-client';
import { GroupEtagStore } from '../../src/proxy/group-etag-store';
import { UdpTransport } from '../../src/transport/udp-transport';
import { FakeClock } from '../support/fake-clock';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll } from '../support/lamps';
import { waitFor } from '../support/wait';

async function endpointOn(address = '127.0.0.1'): Promise<CoapEndpoint> {
  return new CoapEndpoint(await UdpTransport.open({ bindAddress: address }), { params: { ACK_TIMEOUT: 300 } });
}

async function startProxy(opts: Partial<GroupProxyOptions> = {}, address = '127.0.0.1'): Promise<{ proxy: GroupProxy; listen: CoapEndpoint; upstream: CoapEndpoint; events: ProxyEvent[]; close(): Promise<void> }> {
  const listen = await endpointOn(address);
  const upstream = await endpointOn(address);
  const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], ...opts });
  const events: ProxyEvent[] = [];
  proxy.on('event', (e: ProxyEvent) => events.push(e));
  let handlerErrors = 0;
  for (const e of [listen, upstream, proxy]) e.on('handler-error', () => handlerErrors++);
  return {
    proxy, listen, upstream, events,
    close: async () => {
      await proxy.close();
      await listen.close();
      await upstream.close();
      assert.equal(handlerErrors, 0, 'handler errors at the proxy');
    },
  };
}

async function collect(ex: ProxiedGroupExchange): Promise<{ responses: GroupResponse[]; errors: { code?: string; error: string }[] }> {
  const s = await ex.summary;
  return { responses: ex.responses, errors: s.errors };
}

describe('group proxy: forward, reverse, chains', function () {
  this.timeout(30000);
  let port: number;
  let lamps: Lamp[];
  let client: CoapEndpoint;
  const serverTokens: string[] = [];

  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(5, { groupPort: port, leisure: 80 });
    // record the tokens the servers see
    for (const l of lamps) {
      l.server.addResource('/token', (req) => {
        serverTokens.push(req.message.token.toString('hex'));
        return { code: CODES.CONTENT, payload: l.name };
      });
    }
    client = await endpointOn();
  });
  after(async function () {
    await stopAll(client, lamps.map((l) => l.server));
  });

  it('forward proxy: one unicast request, 5 relayed responses, each with Reply-From naming its server', async function () {
    const p = await startProxy();
    try {
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/token`, multicastTimeout: 1, timeout: 2500 });
      const { responses, errors } = await collect(ex);
      assert.deepEqual(errors, []);
      assert.equal(responses.length, 5);
      assert.deepEqual(new Set(responses.map((r) => r.origin.address)), new Set(lamps.map((l) => l.address)));
      for (const r of responses) {
        const lamp = lamps.find((l) => l.address === r.origin.address)!;
        assert.equal(r.origin.port, lamp.server.address().port);
        assert.equal(r.message.payload.toString(), lamp.name);
        // relayed by the proxy, on the client's token, carrying option 248
        assert.equal(r.remote.port, p.listen.transport.address().port);
        assert.ok(r.message.token.equals(ex.token));
        const rf = decodeReplyFrom(getOption(r.message, 248)!);
        assert.equal(rf.target.scheme, 'coap');
        assert.equal(rf.target.host, lamp.address);
        assert.equal(rf.reference, undefined); // a forward proxy never adds element 2
      }
      // the proxy used its own token towards the group, never the client's
      assert.ok(serverTokens.length >= 5);
      assert.ok(!serverTokens.includes(ex.token.toString('hex')));
      assert.equal(p.events.filter((e) => e.kind === 'response').length, 5);
      assert.equal(p.events.find((e) => e.kind === 'request')!.multicastTimeout, 1);
    } finally {
      await p.close();
    }
  });

  it('Proxy-Scheme with Uri-* options works like Proxy-Uri', async function () {
    const p = await startProxy();
    try {
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, targetStyle: 'proxy-scheme', multicastTimeout: 1, timeout: 2500 });
      const { responses } = await collect(ex);
      assert.equal(responses.length, 5);
    } finally {
      await p.close();
    }
  });

  it('missing Multicast-Timeout: 4.00 with an empty Multicast-Timeout and a diagnostic payload', async function () {
    const p = await startProxy();
    try {
      const res = await client.request({ code: CODES.GET, options: [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP_V4}:${port}/light`) }] }, p.listen.transport.address());
      assert.equal(codeToString(res.message.code), '4.00');
      const mt = getOption(res.message, optionNumber('Multicast-Timeout'));
      assert.ok(mt !== undefined && mt.length === 0);
      assert.match(res.message.payload.toString(), /Multicast-Timeout/);
    } finally {
      await p.close();
    }
  });

  it('a Proxy-Uri naming port 0 gets 4.00 and leaves no exchange behind', async function () {
    const p = await startProxy();
    try {
      const res = await client.request({ code: CODES.GET, options: [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP_V4}:0/x`) }, { number: optionNumber('Multicast-Timeout'), value: encodeUint(5) }] }, p.listen.transport.address());
      assert.equal(codeToString(res.message.code), '4.00');
      assert.equal(p.proxy.activeExchanges, 0);
    } finally {
      await p.close();
    }
  });

  it('allow-list: a client not on it gets 4.01 and nothing is sent to the group', async function () {
    const p = await startProxy({ allow: [{ address: '127.0.0.9' }] });
    try {
      const before = lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0);
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 1, timeout: 2000 });
      const { responses, errors } = await collect(ex);
      assert.equal(responses.length, 0);
      assert.equal(errors[0].code, '4.01');
      // the proxy sent nothing upstream at all (not a wait for something that does not come)
      assert.equal(p.upstream.counters.sent, 0);
      assert.equal(p.proxy.counters.groupRequests, 0);
      assert.equal(lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0), before);
    } finally {
      await p.close();
    }
  });

  it('group proxying disabled: 5.01; unicast targets are still proxied (a complete forward proxy)', async function () {
    const p = await startProxy({ groupProxying: false });
    try {
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 1, timeout: 2000 });
      assert.equal((await collect(ex)).errors[0].code, '5.01');
      const lamp = lamps[1];
      // the client's address is verified with Echo first (RFC 9175 §2.4), as for a fan-out
      const res = await requestUnicastViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${lamp.address}:${lamp.server.address().port}/light` });
      assert.equal(p.proxy.counters.echoChallenges, 1);
      assert.equal(codeToString(res.message.code), '2.05');
      assert.equal(JSON.parse(res.message.payload.toString()).name, lamp.name);
    } finally {
      await p.close();
    }
  });

  it('responses after T\' are dropped by the proxy and never reach the client', async function () {
    // The proxy's T' and the client's T on one fake clock; the slow server answers when the test lets it.
    const clock = new FakeClock();
    let answer!: () => void;
    const asked = new Promise<void>((resolve) => {
      answer = resolve;
    });
    let slowAsked = false;
    const slow = await GroupServer.open({ address: '127.0.0.21', port: 0, groups: [{ address: GROUP_V4, port }], leisure: 0 });
    slow.addResource('/light', async () => {
      slowAsked = true;
      await asked;
      return { code: CODES.CONTENT, payload: 'late' };
    });
    const p = await startProxy({ clock });
    try {
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 1, timeout: 3000, clock });
      await waitFor(() => ex.responses.length === 5 && slowAsked, 'the five lamps\' responses and the slow server asked', 10000);
      clock.advance(1000); // T' passes at the proxy
      assert.equal(p.proxy.activeExchanges, 0, 'the proxy ended the exchange at T\'');
      const late = p.upstream.counters.lateGroupResponses;
      answer();
      await waitFor(() => p.upstream.counters.lateGroupResponses > late, 'the late response at the proxy', 10000);
      clock.advance(2000); // T passes at the client
      const { responses } = await collect(ex);
      assert.equal(responses.length, 5);
      assert.ok(responses.every((r) => r.message.payload.toString() !== 'late'), 'the late response never reached the client');
    } finally {
      answer();
      await p.close();
      await slow.close();
    }
  });

  it('T\' = 0 with No-Response 26: the group gets the request, the client gets nothing', async function () {
    const p = await startProxy();
    try {
      const before = lamps[0].state.on;
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, method: CODES.PUT, payload: Buffer.from(before ? 'off' : 'on'), multicastTimeout: 0, timeout: 1000 });
      const s = await ex.summary;
      assert.equal(s.responses, 0);
      await waitFor(() => lamps.every((l) => l.state.on === !before), 'every lamp switched', 10000);
      for (const l of lamps) l.state.on = false;
      assert.equal(p.proxy.activeExchanges, 0);
    } finally {
      await p.close();
    }
  });

  it('reverse proxy (seed slides): 4.00 with empty option, retry, relayed responses (case 1), then one server through the proxy', async function () {
    const p = await startProxy({ forward: false, reverse: [{ host: 'group1.example', group: `coap://${GROUP_V4}:${port}`, standIn: 'servers' }] });
    try {
      const proxyAddr = p.listen.transport.address();
      // The client does not know it talks to a proxy: no Multicast-Timeout.
      const ex = requestViaProxy(client, { proxy: proxyAddr, uri: 'coap://group1.example/light', targetStyle: 'reverse', timeout: 4000 });
      const { responses, errors } = await collect(ex);
      assert.deepEqual(errors, []);
      assert.equal(ex.multicastTimeout! > 0, true, 'retried with Multicast-Timeout');
      assert.equal(p.events.filter((e) => e.kind === 'reject' && e.code === '4.00').length, 1);
      assert.equal(responses.length, 5);
      for (const r of responses) {
        const rf = decodeReplyFrom(getOption(r.message, 248)!);
        // case 1: element 1 reaches the proxy, element 2 names the server
        assert.equal(rf.target.host, '127.0.0.1');
        assert.equal(rf.target.port, proxyAddr.port);
        assert.ok(rf.reference && lamps.some((l) => l.address === rf.reference!.host));
        assert.deepEqual(r.origin.via, { address: '127.0.0.1', port: proxyAddr.port, uri: `coap://127.0.0.1:${proxyAddr.port}` });
      }
      // Follow-up to one server through the proxy: Uri-Host / Uri-Port from element 2.
      const one = responses[2].origin;
      const res = await client.request(
        { code: CODES.GET, options: [{ number: OPT.URI_HOST, value: Buffer.from(one.address) }, { number: OPT.URI_PORT, value: encodeUint(one.port) }, { number: OPT.URI_PATH, value: Buffer.from('light') }] },
        { address: one.via!.address, port: one.via!.port },
      );
      assert.equal(codeToString(res.message.code), '2.05');
      assert.equal(JSON.parse(res.message.payload.toString()).name, lamps.find((l) => l.address === one.address)!.name);
      // A server the proxy never relayed for is refused.
      const refused = await client.request({ code: CODES.GET, options: [{ number: OPT.URI_HOST, value: Buffer.from('127.0.0.99') }, { number: OPT.URI_PATH, value: Buffer.from('light') }] }, proxyAddr);
      assert.equal(codeToString(refused.message.code), '4.04');
    } finally {
      await p.close();
    }
  });

  it('reverse proxy case 2: Reply-From holds the server itself, which the client can reach directly', async function () {
    const p = await startProxy({ forward: false, reverse: [{ pathPrefix: ['gp', 'lights'], group: `coap://${GROUP_V4}:${port}`, standIn: 'group' }] });
    try {
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://127.0.0.1/gp/lights/light`, targetStyle: 'reverse', multicastTimeout: 1, timeout: 2500 });
      const { responses } = await collect(ex);
      assert.equal(responses.length, 5);
      const one = responses[0].origin;
      assert.equal(one.via, undefined);
      const res = await client.request({ code: CODES.GET, options: [{ number: OPT.URI_PATH, value: Buffer.from('light') }] }, { address: one.address, port: one.port });
      assert.equal(codeToString(res.message.code), '2.05');
    } finally {
      await p.close();
    }
  });

  it('reverse proxy: reusing a token while the proxy still collects stops the exchange with 4.00', async function () {
    const p = await startProxy({ forward: false, reverse: [{ host: 'g', group: `coap://${GROUP_V4}:${port}`, standIn: 'group' }] });
    try {
      const token = Buffer.from('0102030405060708', 'hex');
      const mt = { number: optionNumber('Multicast-Timeout'), value: encodeUint(3) };
      const req = { code: CODES.GET, options: [{ number: OPT.URI_HOST, value: Buffer.from('g') }, { number: OPT.URI_PATH, value: Buffer.from('light') }, mt] };
      // This address answers the proxy's Echo first (RFC 9175 §2.4), as any client must before a fan-out.
      await requestViaProxy(client, { proxy: p.listen.transport.address(), uri: 'coap://g/light', targetStyle: 'reverse', multicastTimeout: 0, timeout: 1000 }).summary;
      const collecting = new Promise<void>((resolve) => p.proxy.on('event', (e: ProxyEvent) => e.kind === 'request' && e.token === token.toString('hex') && resolve()));
      const stop = client.listen(token, () => undefined, p.listen.transport.address());
      client.sendMessage({ type: 'NON', code: CODES.GET, messageId: client.newMessageId(p.listen.transport.address()), token, options: req.options, payload: Buffer.alloc(0) }, p.listen.transport.address());
      // the proxy collects for T' = 3 s from here: the reuse below arrives while it does, whatever the load
      await collecting;
      stop();
      const res = await client.request({ ...req, token: undefined }, p.listen.transport.address(), { token: Buffer.from('0102030405060708', 'hex') }).catch((e) => e);
      assert.equal(codeToString(res.message.code), '4.00');
      assert.match(res.message.payload.toString(), /token/);
      assert.ok(p.events.some((e) => e.kind === 'end' && e.reason === 'token reused'));
    } finally {
      await p.close();
    }
  });

  it('chain of two proxies: the first rewrites T\' to T\'\', the last relays with Reply-From untouched', async function () {
    const last = await startProxy({}, '127.0.0.1');
    const first = await startProxy({ chain: { nextHop: last.listen.transport.address(), rttPrevious: 1, rttNext: 1 } }, '127.0.0.1');
    try {
      const ex = requestViaProxy(client, { proxy: first.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 5, timeout: 7000 });
      const { responses, errors } = await collect(ex);
      assert.deepEqual(errors, []);
      assert.equal(responses.length, 5);
      assert.deepEqual(new Set(responses.map((r) => r.origin.address)), new Set(lamps.map((l) => l.address)));
      // groupcomm-proxy-07 §8.1: T' = 5 at the first proxy, which collects until T' itself (its own T is 6) and
      // sends T'' = T' - RTT(previous hop) = 4 to the last one
      assert.equal(first.events.find((e) => e.kind === 'request')!.multicastTimeout, 5);
      assert.equal(last.events.find((e) => e.kind === 'request')!.multicastTimeout, 4);
    } finally {
      await first.close();
      await last.close();
    }
  });

  it('reverse chain standing in for servers: the first proxy replaces Reply-From with itself, and follow-ups travel the chain', async function () {
    const last = await startProxy();
    const first = await startProxy({ forward: false, reverse: [{ host: 'lights.example', group: `coap://${GROUP_V4}:${port}`, standIn: 'servers' }], chain: { nextHop: last.listen.transport.address(), rttPrevious: 1, rttNext: 1 } });
    try {
      const firstAddr = first.listen.transport.address();
      const ex = requestViaProxy(client, { proxy: firstAddr, uri: 'coap://lights.example/light', targetStyle: 'reverse', multicastTimeout: 4, timeout: 5500 });
      const { responses, errors } = await collect(ex);
      assert.deepEqual(errors, []);
      assert.equal(responses.length, 5);
      for (const r of responses) {
        const rf = decodeReplyFrom(getOption(r.message, 248)!);
        assert.equal(rf.target.port, firstAddr.port, 'element 1 is the first proxy (TARGET_NEW)');
        assert.ok(lamps.some((l) => l.address === rf.reference!.host && l.server.address().port === rf.reference!.port));
        assert.equal(r.origin.via!.port, firstAddr.port);
      }
      // a follow-up to one lamp, sent to the first proxy with that lamp in Uri-Host / Uri-Port
      const one = responses[1].origin;
      const res = await client.request(
        { code: CODES.GET, options: [{ number: OPT.URI_HOST, value: Buffer.from(one.address) }, { number: OPT.URI_PORT, value: encodeUint(one.port) }, { number: OPT.URI_PATH, value: Buffer.from('light') }] },
        firstAddr,
      );
      assert.equal(codeToString(res.message.code), '2.05');
      assert.equal(JSON.parse(res.message.payload.toString()).name, lamps.find((l) => l.address === one.address)!.name);
      assert.ok(last.events.some((e) => e.kind === 'request' && e.target === `coap://${one.address}:${one.port}/light`), 'the follow-up went through the last proxy');
    } finally {
      await first.close();
      await last.close();
    }
  });

  it('chain: no feasible T\'\' gives 5.05 with the minimum T\'; the client retries with it', async function () {
    const clock = new FakeClock();
    const last = await startProxy({ clock });
    const first = await startProxy({ clock, chain: { nextHop: last.listen.transport.address(), rttPrevious: 1, rttNext: 1 } });
    try {
      // T' = 2 leaves nothing for the next hop (minimum 3); the client's T of 5 s allows a retry with 3.
      const ex = requestViaProxy(client, { proxy: first.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 2, timeout: 5000, clock });
      await waitFor(() => ex.responses.length === 5, 'the responses to the retry', 10000);
      clock.advance(5000); // T' at both proxies, then T at the client
      const { responses } = await collect(ex);
      assert.equal(first.events.filter((e) => e.kind === 'reject' && e.code === '5.05').length, 1);
      assert.equal(ex.multicastTimeout, 3);
      assert.equal(responses.length, 5);
      // Without room for a retry, the client reports the 5.05.
      const ex2 = requestViaProxy(client, { proxy: first.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 1, timeout: 2000 });
      const r2 = await collect(ex2);
      assert.equal(r2.errors[0].code, '5.05');
      assert.match(r2.errors[0].error, />= 3 s/);
    } finally {
      await first.close();
      await last.close();
    }
  });

  it('Hop-Limit stops a proxy loop with 5.08 (RFC 8768)', async function () {
    const listen = await endpointOn();
    const upstream = await endpointOn();
    const loop = new GroupProxy({ listen, upstream, allow: [{ address: '*' }], chain: { nextHop: listen.transport.address(), rttPrevious: 0, rttNext: 0 }, maxPendingPerClient: 64 });
    try {
      const ex = requestViaProxy(client, { proxy: listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 3, timeout: 4000 });
      const { errors } = await collect(ex);
      assert.equal(errors[0].code, '5.08');
    } finally {
      await loop.close();
      await listen.close();
      await upstream.close();
    }
  });

  it('per-client limit on pending exchanges: 4.29 with Max-Age', async function () {
    const clock = new FakeClock();
    const p = await startProxy({ maxPendingPerClient: 1, clock });
    try {
      const a = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 1, timeout: 2500, clock });
      await waitFor(() => p.proxy.activeExchanges === 1, 'the first exchange at the proxy', 10000);
      const b = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 1, timeout: 2500, clock });
      const rb = await collect(b); // refused at once, while the first exchange holds the host's one slot
      await waitFor(() => a.responses.length === 5, 'the first exchange\'s responses', 10000);
      clock.advance(2500);
      const ra = await collect(a);
      assert.equal(ra.responses.length, 5);
      assert.equal(rb.errors[0].code, '4.29');
    } finally {
      await p.close();
    }
  });

  it('early stop: the Early Stop Request ends the relay at the proxy', async function () {
    const p = await startProxy();
    const slowish = await GroupServer.open({ address: '127.0.0.22', port: 0, groups: [{ address: GROUP_V4, port }], leisure: 0 });
    slowish.addResource('/light', () => new Promise((r) => setTimeout(() => r({ code: CODES.CONTENT, payload: 'after stop' }), 800)));
    try {
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 3, timeout: 5000 });
      await waitFor(() => ex.responses.length >= 5, 'the lamps\' responses', 10000);
      ex.cancel();
      const s = await ex.summary;
      assert.equal(s.cancelled, true);
      await waitFor(() => p.proxy.counters.earlyStops === 1, 'the Early Stop Request at the proxy', 10000);
      assert.equal(p.proxy.activeExchanges, 0);
      // the slow server's answer reaches the proxy after the stop, and goes no further
      await waitFor(() => p.upstream.counters.lateGroupResponses >= 1, 'the late answer at the proxy', 10000);
      assert.ok(ex.responses.every((r) => r.message.payload.toString() !== 'after stop'));
    } finally {
      await p.close();
      await slowish.close();
    }
  });

  it('Observe through the proxy: notifications from each server keep flowing after T\', until cancelled', async function () {
    const clock = new FakeClock();
    const p = await startProxy({ clock });
    try {
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 1, timeout: 2000, clock, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }] });
      const all: GroupResponse[] = [];
      ex.on('response', (r: GroupResponse) => all.push(r));
      await waitFor(() => ex.responses.length === 5, 'the five first responses', 10000);
      let ended = false;
      ex.on('end', () => (ended = true));
      clock.advance(1000); // T' passes at the proxy: §5.4.2, the observation stays
      clock.advance(1000); // and T at the client: GCP-07 §5.5.2, it keeps the token while an observation is active
      assert.equal(ended, false, 'the client still listens after T');
      assert.equal(p.proxy.activeExchanges, 1, 'the proxy still relays after T\'');
      assert.ok(lamps.every((l) => l.server.observerCount('/light') === 1));
      // a change at every lamp: 5 notifications, each with its origin
      for (const l of lamps) {
        l.state.on = true;
        l.server.notify('/light');
      }
      // notifications are delivered as events and not kept: the exchange holds each server's first answer only
      await waitFor(() => all.length === ex.responses.length + 5, 'five notifications', 10000);
      const notes = all.slice(all.length - 5);
      assert.equal(ex.responses.length, 5);
      assert.deepEqual(new Set(notes.map((n) => n.origin.address)), new Set(lamps.map((l) => l.address)));
      assert.ok(notes.every((n) => getOption(n.message, OPT.OBSERVE) !== undefined && JSON.parse(n.message.payload.toString()).on === true));
      ex.cancel();
      await ex.summary;
      // the proxy deregistered upstream (Observe = 1 to the group)
      await waitFor(() => lamps.every((l) => l.server.observerCount('/light') === 0), 'the deregistration at every lamp', 10000);
      for (const l of lamps) l.state.on = false;
    } finally {
      await p.close();
    }
  });

  it('legacy Response-Forwarding (tp_info with tag 260) when configured, decoded by the client', async function () {
    const prev = configureOptionNumbers({ 'Response-Forwarding': 96 });
    const p = await startProxy({ replyFrom: 'response-forwarding' });
    try {
      const ex = requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 1, timeout: 2500 });
      const { responses } = await collect(ex);
      assert.equal(responses.length, 5);
      for (const r of responses) {
        assert.equal(getOption(r.message, 248), undefined);
        const v = getOption(r.message, 96)!;
        assert.equal(v[0], 0x83); // [1, 260(h'...'), port]
        const lf = decodeResponseForwarding(v, port);
        assert.equal(lf.address, r.origin.address);
        assert.equal(lf.port, r.origin.port);
      }
    } finally {
      await p.close();
      configureOptionNumbers({ 'Response-Forwarding': prev['Response-Forwarding'] });
    }
  });

  it('a malformed Reply-From is reported, not thrown', async function () {
    // A fake proxy that relays one response with garbage in option 248.
    const fake = await endpointOn();
    fake.setRequestHandler((req, ctx) => {
      ctx.ignore();
      fake.sendMessage({ type: 'NON', code: CODES.CONTENT, messageId: fake.newMessageId(req.remote), token: req.message.token, options: [{ number: 248, value: Buffer.from('ffff01', 'hex') }], payload: Buffer.from('x') }, req.remote);
    });
    try {
      const ex = requestViaProxy(client, { proxy: fake.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 1, timeout: 1500 });
      const { responses, errors } = await collect(ex);
      assert.equal(responses.length, 0);
      assert.equal(errors[0].code, 'bad-reply-from');
      assert.equal(decodeUint(Buffer.alloc(0)), 0);
    } finally {
      await fake.close();
    }
  });
});

describe('group proxy: caching (GCP-07 §7) and relayed multicast notifications (MNP-02 §3)', function () {
  this.timeout(30000);
  let port: number;
  let lamps: Lamp[];
  let client: CoapEndpoint;

  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(5, { groupPort: port, leisure: 50, firstHost: 50 });
    for (const l of lamps) l.server.addResource('/short', () => ({ code: CODES.CONTENT, payload: `${l.name} short`, options: [{ number: OPT.MAX_AGE, value: encodeUint(3) }] }));
    client = await endpointOn();
  });
  after(async function () {
    await stopAll(client, lamps.map((l) => l.server));
  });

  it('with every member cached: answered from the cache alone with Group-ETag, and 2.03 when the client has the current set', async function () {
    const members = { [`${GROUP_V4}:${port}`]: lamps.map((l) => `${l.address}:${l.server.address().port}`) };
    const p = await startProxy({ cache: true, members });
    try {
      const uri = `coap://${GROUP_V4}:${port}/light`;
      const first = await collect(requestViaProxy(client, { proxy: p.listen.transport.address(), uri, multicastTimeout: 1, timeout: 2000 }));
      assert.equal(first.responses.length, 5);
      assert.equal(p.proxy.cache!.count, 5);
      const seen = lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0);
      const second = await collect(requestViaProxy(client, { proxy: p.listen.transport.address(), uri, multicastTimeout: 1, timeout: 2000 }));
      assert.equal(second.responses.length, 5);
      assert.equal(lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0), seen, 'nothing was sent to the group');
      const tags = second.responses.map((r) => getOption(r.message, optionNumber('Group-ETag'))!);
      assert.ok(tags.every((t) => t && t.equals(tags[0])));
      assert.deepEqual(new Set(second.responses.map((r) => r.origin.address)), new Set(lamps.map((l) => l.address)));
      // the client offers the tag: one 2.03 (Valid), no payload, exactly one Group-ETag
      const third = await collect(requestViaProxy(client, { proxy: p.listen.transport.address(), uri, multicastTimeout: 1, timeout: 2000, options: [{ number: optionNumber('Group-ETag'), value: tags[0] }] }));
      assert.equal(third.responses.length, 1);
      assert.equal(codeToString(third.responses[0].message.code), '2.03');
      assert.equal(third.responses[0].message.payload.length, 0);
      assert.equal(third.responses[0].message.options.filter((o) => o.number === optionNumber('Group-ETag')).length, 1);
    } finally {
      await p.close();
    }
  });

  it('a client with a Group-ETag store keeps the tagged set and, on the proxy\'s 2.03, delivers it again with the 2.03\'s Max-Age (groupcomm-proxy-07 §7.3, RFC 7252 §5.9.1.3)', async function () {
    const members = { [`${GROUP_V4}:${port}`]: lamps.map((l) => `${l.address}:${l.server.address().port}`) };
    const p = await startProxy({ cache: true, members });
    try {
      const store = new GroupEtagStore();
      const uri = `coap://${GROUP_V4}:${port}/light`;
      const ask = () => requestViaProxy(client, { proxy: p.listen.transport.address(), uri, multicastTimeout: 1, timeout: 2000, groupEtag: store });
      const first = await collect(ask());
      assert.equal(first.responses.length, 5);
      assert.equal(store.size, 0, 'relayed responses without Group-ETag: nothing kept');
      const second = await collect(ask());
      assert.equal(second.responses.length, 5);
      assert.equal(store.size, 1, 'the tagged set is kept');
      const seen = lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0);
      const ex = ask();
      const third = await collect(ex);
      assert.deepEqual(third.errors, []);
      assert.equal(lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0), seen, 'nothing was sent to the group');
      assert.equal(third.responses.length, 5);
      assert.deepEqual(new Set(third.responses.map((r) => r.origin.address)), new Set(lamps.map((l) => l.address)));
      for (const r of third.responses) {
        assert.equal((r as RevalidatedResponse).revalidated, true);
        assert.equal(codeToString(r.message.code), '2.05');
        const kept = second.responses.find((x) => x.origin.address === r.origin.address)!;
        assert.ok(r.message.payload.equals(kept.message.payload));
        // the proxy's 2.03 carries the least residual lifetime in J: the entries are at least T = 2 s old, so below
        // the 60 s a 2.03 without Max-Age would mean
        const maxAge = decodeUint(getOption(r.message, OPT.MAX_AGE)!);
        assert.ok(maxAge > 0 && maxAge < 60, `Max-Age ${maxAge}`);
      }
    } finally {
      await p.close();
    }
  });

  it('members unknown: the request is forwarded, and cached responses whose lifetime ends before T\' are sent at once', async function () {
    const p = await startProxy({ cache: true });
    try {
      const uri = `coap://${GROUP_V4}:${port}/short`;
      // cached at about t = 0.05 s with Max-Age 3; the second request comes at about t = 1.5 s, so every entry is
      // still fresh (about 1.5 s left) and its lifetime ends before that request's T' of 4 s
      await collect(requestViaProxy(client, { proxy: p.listen.transport.address(), uri, multicastTimeout: 1, timeout: 1500 }));
      p.events.length = 0;
      const again = await collect(requestViaProxy(client, { proxy: p.listen.transport.address(), uri, multicastTimeout: 4, timeout: 5000 }));
      const fromCache = p.events.filter((e) => e.kind === 'response' && e.reason === 'from cache');
      const live = p.events.filter((e) => e.kind === 'response' && e.origin);
      assert.equal(fromCache.length, 5); // residual lifetime < T': sent at the earliest convenience
      assert.equal(live.length, 5);
      assert.equal(again.responses.length, 10);
      const maxAges = again.responses.map((r) => getOption(r.message, OPT.MAX_AGE)?.[0] ?? 0);
      assert.ok(maxAges.every((a) => a <= 3));
    } finally {
      await p.close();
    }
  });

  it('Observe through the proxy to a server with multicast notifications: one upstream observer, each client on its own token', async function () {
    const { GroupObservation } = await import('../../src/observe/group-observation');
    const NG = '239.255.0.90';
    const ngPort = await freeGroupPort(NG);
    const server = await GroupServer.open({ address: '127.0.0.40', port: 0, groups: [], leisure: 0 });
    const obs = new GroupObservation({ server, path: '/alarm', group: { address: NG, port: ngPort }, initial: 'calm', minInterval: 0 });
    const p = await startProxy();
    const clients: { ep: CoapEndpoint; token: Buffer; got: string[]; codes: string[] }[] = [];
    try {
      const target = `coap://127.0.0.40:${server.address().port}/alarm`;
      for (let i = 0; i < 3; i++) {
        const ep = await endpointOn();
        const c = { ep, token: ep.newToken(), got: [] as string[], codes: [] as string[], echo: undefined as Buffer | undefined };
        ep.listen(c.token, (res) => {
          c.got.push(res.message.payload.toString());
          c.codes.push(codeToString(res.message.code));
          c.echo ??= getOption(res.message, OPT.ECHO);
        }, p.listen.transport.address());
        const register = (echo?: Buffer) =>
          ep.sendMessage({ type: 'CON', code: CODES.GET, messageId: ep.newMessageId(p.listen.transport.address()), token: c.token, payload: Buffer.alloc(0), options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: OPT.PROXY_URI, value: Buffer.from(target) }, ...(echo ? [{ number: OPT.ECHO, value: echo }] : [])] }, p.listen.transport.address());
        clients.push(c);
        // RFC 9175 §2.4: a relay sends notifications for as long as it lives, so the proxy first verifies the
        // address: 4.01 with Echo, and the registration again with it.
        register();
        await waitFor(() => c.got.length >= 1, 'the answer to the registration', 10000);
        assert.equal(c.codes[0], '4.01');
        assert.ok(c.echo);
        c.got.length = 0;
        c.codes.length = 0;
        register(c.echo);
        await waitFor(() => c.got.length >= 1, 'the latest notification for the new client', 10000);
      }
      assert.ok(clients.every((c) => c.got[0] === 'calm'), JSON.stringify(clients.map((c) => c.got)));
      assert.equal(obs.count, 1, 'the proxy counts as one observer');
      assert.equal(p.proxy.relayedObservations, 1);
      obs.update('ALARM');
      await waitFor(() => clients.every((c) => c.got[c.got.length - 1] === 'ALARM'), 'the relayed notification at every client', 10000);
      assert.ok(clients.every((c) => c.got.length === 2));
    } finally {
      for (const c of clients) await c.ep.close();
      await p.close();
      obs.close();
      await server.close();
    }
  });

  it('a ticket request (Listen-To-Multicast-Responses, MNP-02 §4) is not forwarded: the proxy listens to the group and relays', async function () {
    const { GroupObservation } = await import('../../src/observe/group-observation');
    const { TicketClient } = await import('../../src/observe/ticket-request');
    const { decodeInformativeResponse } = await import('../../src/cbor/informative-response');
    const NG = '239.255.0.92';
    const ngPort = await freeGroupPort(NG);
    const server = await GroupServer.open({ address: '127.0.0.42', port: 0, groups: [], leisure: 0 });
    const obs = new GroupObservation({ server, path: '/alarm', group: { address: NG, port: ngPort }, initial: 'calm', minInterval: 0 });
    const p = await startProxy();
    const ep = await endpointOn();
    try {
      const target = `coap://127.0.0.42:${server.address().port}/alarm`;
      // the client got the informative response itself (with end-to-end security the proxy could not read it)
      const res = await ep.request({ code: CODES.GET, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: OPT.URI_PATH, value: Buffer.from('alarm') }] }, server.address());
      const ir = decodeInformativeResponse(res.message.payload);
      const requestsBefore = server.counters.requests;
      const tc = new TicketClient(ep, { proxy: p.listen.transport.address(), target, informative: ir });
      const got: string[] = [];
      tc.on('notification', (n: { message: { payload: Buffer } }) => got.push(n.message.payload.toString()));
      await tc.start();
      assert.ok(p.events.some((e) => e.kind === 'request' && e.reason === 'ticket (MNP §4)'));
      obs.update('ALARM');
      await waitFor(() => got[got.length - 1] === 'ALARM', 'the relayed multicast notification', 10000);
      assert.equal(server.counters.requests, requestsBefore, 'the ticket never reached the server');
      tc.cancel('forget');
    } finally {
      await ep.close();
      await p.close();
      obs.close();
      await server.close();
    }
  });
});
