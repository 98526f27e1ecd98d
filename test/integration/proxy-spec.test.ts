// Spec-exact behaviour of the group proxy on real sockets, one rule per test: groupcomm-proxy-07 §5.2.1 (order of
// the checks, step 4), §5.1.1 step 3 (No-Response 26 with T' = 0, seen by the servers), §8.1 (a chain's 5.05),
// §3 (Reply-From never names an unspecified address), RFC 8768 §3 (the 5.08 names the proxy).

import assert from 'node:assert/strict';
import { CODES, codeToString } from '../../src/coap/codes';
import { getOption } from '../../src/coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../../src/coap/options';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupProxy, GroupProxyOptions, ProxyEvent } from '../../src/proxy/group-proxy';
import { requestViaProxy } from '../../src/proxy/proxy-client';
import { UdpTransport } from '../../src/transport/udp-transport';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll } from '../support/lamps';
import { FakeClock } from '../support/fake-clock';
import { waitFor } from '../support/wait';

const MT = optionNumber('Multicast-Timeout');

async function endpointOn(address = '127.0.0.1'): Promise<CoapEndpoint> {
  return new CoapEndpoint(await UdpTransport.open({ bindAddress: address }), { params: { ACK_TIMEOUT: 300 } });
}

async function startProxy(opts: Partial<GroupProxyOptions> = {}): Promise<{ proxy: GroupProxy; listen: CoapEndpoint; events: ProxyEvent[]; close(): Promise<void> }> {
  const listen = await endpointOn();
  const upstream = await endpointOn();
  const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], ...opts });
  const events: ProxyEvent[] = [];
  let handlerErrors = 0;
  for (const e of [listen, upstream, proxy]) e.on('handler-error', () => handlerErrors++);
  proxy.on('event', (e: ProxyEvent) => events.push(e));
  return {
    proxy, listen, events,
    close: async () => {
      await proxy.close();
      await listen.close();
      await upstream.close();
      assert.equal(handlerErrors, 0, 'handler errors at the proxy');
    },
  };
}

describe('group proxy, spec-exact (groupcomm-proxy-07 §5.2.1, §8.1; RFC 8768 §3)', function () {
  this.timeout(30000);
  let port: number;
  let lamps: Lamp[];
  let client: CoapEndpoint;
  const seen: { options: { number: number; value: Buffer }[] }[] = [];

  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(4, { groupPort: port, leisure: 20, firstHost: 50 });
    for (const l of lamps) {
      l.server.addResource('/seen', (req) => {
        seen.push({ options: req.message.options });
        return { code: CODES.CHANGED };
      });
    }
    client = await endpointOn();
  });
  after(async function () {
    await stopAll(client, lamps.map((l) => l.server));
  });

  it('§5.2.1: errors about the target come only after the allow-list: a client not on it gets 4.01 whatever the target', async function () {
    const p = await startProxy({ allow: [{ address: '127.0.0.9' }], hosts: {} });
    const open = await startProxy({ hosts: {} });
    try {
      const targets = [
        [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://unknown.example/x`) }], // 5.02 for a client on the list
        [{ number: OPT.PROXY_URI, value: Buffer.from(`coaps://${GROUP_V4}/x`) }], // 5.05
        [{ number: OPT.PROXY_URI, value: Buffer.from('coap://[zz/x') }], // 4.00
        [{ number: OPT.URI_PATH, value: Buffer.from('nothing') }], // 4.04
      ];
      const expected = ['5.02', '5.05', '4.00', '4.04'];
      for (let i = 0; i < targets.length; i++) {
        const refused = await client.request({ code: CODES.GET, options: [...targets[i], { number: MT, value: encodeUint(1) }] }, p.listen.transport.address());
        assert.equal(codeToString(refused.message.code), '4.01', `not allow-listed, target ${i}`);
        assert.equal(refused.message.payload.toString(), 'not allowed');
        const told = await client.request({ code: CODES.GET, options: [...targets[i], { number: MT, value: encodeUint(1) }] }, open.listen.transport.address());
        assert.equal(codeToString(told.message.code), expected[i], `allow-listed, target ${i}`);
      }
    } finally {
      await p.close();
      await open.close();
    }
  });

  it('§5.2.1 step 4: a T\' above the proxy\'s maximum gets 4.00 with Multicast-Timeout carrying the maximum', async function () {
    const p = await startProxy({ maxMulticastTimeout: 30 });
    try {
      const res = await client.request({ code: CODES.GET, options: [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP_V4}:${port}/light`) }, { number: MT, value: encodeUint(31) }] }, p.listen.transport.address());
      assert.equal(codeToString(res.message.code), '4.00');
      assert.equal(decodeUint(getOption(res.message, MT)!), 30);
    } finally {
      await p.close();
    }
  });

  it('§5.1.1 step 3: T\' = 0 goes out with No-Response 26, and the servers receive it with the request', async function () {
    const p = await startProxy();
    try {
      seen.length = 0;
      const s = await requestViaProxy(client, { proxy: p.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/seen`, method: CODES.POST, multicastTimeout: 0, timeout: 1000 }).summary;
      assert.equal(s.responses, 0);
      assert.deepEqual(s.errors, []);
      await waitFor(() => seen.length >= lamps.length, 'the request at every lamp', 10000);
      for (const r of seen) {
        const nr = r.options.find((o) => o.number === OPT.NO_RESPONSE);
        assert.ok(nr, 'No-Response on the wire at the server');
        assert.equal(decodeUint(nr.value), 26);
        assert.equal(r.options.find((o) => o.number === MT), undefined, 'Multicast-Timeout removed (step 4)');
      }
    } finally {
      await p.close();
    }
  });

  it('§8.1: a next hop\'s 5.05 is never passed through: this proxy answers its own 5.05 with its own minimum, and the client retries with it', async function () {
    // last <- middle (servers need 4 s: its minimum T' is 4 + 1 + 1 = 6) <- first (its minimum for that: 6 + 1 = 7)
    // The three proxies and the client share one fake clock: T', T'' and the client's T pass when the test says so.
    const clock = new FakeClock();
    const last = await startProxy({ clock });
    const middle = await startProxy({ clock, chain: { nextHop: last.listen.transport.address(), rttPrevious: 1, rttNext: 1, serverAnswerTime: 4 } });
    const first = await startProxy({ clock, chain: { nextHop: middle.listen.transport.address(), rttPrevious: 1, rttNext: 1 } });
    try {
      const ex = requestViaProxy(client, { proxy: first.listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/light`, multicastTimeout: 4, timeout: 9500, clock });
      await waitFor(() => ex.responses.length === lamps.length, 'every member\'s response through the chain', 10000);
      // no time has passed: the exchanges are still collecting at every hop, and the client still waits
      assert.equal(last.proxy.activeExchanges + middle.proxy.activeExchanges + first.proxy.activeExchanges, 3);
      let ended = false;
      ex.on('end', () => (ended = true));
      clock.advance(9499);
      assert.equal(first.proxy.activeExchanges, 0, 'T\' = 7 passed at the first proxy');
      assert.equal(ended, false, 'the client keeps its token until T');
      clock.advance(1);
      const s = await ex.summary;
      // the middle refused T'' = 3 with 5.05 carrying 6; the first proxy answered its own 5.05 carrying 7
      assert.ok(middle.events.some((e) => e.kind === 'reject' && e.code === '5.05'));
      const own = first.events.find((e) => e.kind === 'response' && e.code === '5.05');
      assert.ok(own, 'the first proxy sent a 5.05 of its own');
      assert.equal(ex.multicastTimeout, 7, 'the client retried with the first proxy\'s minimum');
      assert.deepEqual(s.errors, []);
      assert.equal(s.responses, lamps.length);
      assert.equal(last.events.find((e) => e.kind === 'request')!.multicastTimeout, 5, 'T\' 7 -> T\'\' 6 -> 5');
    } finally {
      await first.close();
      await middle.close();
      await last.close();
    }
  });

  it('RFC 8768 §3: the 5.08 (Hop Limit Reached) names the proxy that stopped the request', async function () {
    const p = await startProxy();
    try {
      const res = await client.request({ code: CODES.GET, options: [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP_V4}:${port}/light`) }, { number: OPT.HOP_LIMIT, value: encodeUint(1) }, { number: MT, value: encodeUint(1) }] }, p.listen.transport.address());
      assert.equal(codeToString(res.message.code), '5.08');
      const a = p.listen.transport.address();
      assert.equal(res.message.payload.toString(), `${a.address}:${a.port}`);
    } finally {
      await p.close();
    }
  });

  it('groupcomm-proxy-07 §3: a proxy that stands in for servers never puts an unspecified address in Reply-From: bound to 0.0.0.0 it needs selfAuthority', async function () {
    const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: '0.0.0.0' }));
    const upstream = await endpointOn();
    try {
      assert.throws(() => new GroupProxy({ listen, upstream, forward: false, reverse: [{ host: 'g', group: `coap://${GROUP_V4}:${port}`, standIn: 'servers' }] }), /selfAuthority/);
      const ok = new GroupProxy({ listen, upstream, forward: false, reverse: [{ host: 'g', group: `coap://${GROUP_V4}:${port}`, standIn: 'servers' }], selfAuthority: { host: '127.0.0.1', port: listen.transport.address().port } });
      await ok.close();
    } finally {
      await listen.close();
      await upstream.close();
    }
  });
});
