// The group proxy under attack, on real sockets: reflection (RFC 9000 §8.1's 3x limit towards a source that is
// not identified), a spoofed allow-listed address (RFC 9175 §2.4: no fan-out before Echo is answered from that
// address; groupcomm-proxy-07 §4 REQ2, §10), limits per host whatever the source port (groupcomm-proxy-07 §10,
// RFC 8516 §3 for the 4.29 with Max-Age), T' = 0 floods and unicast forwards (RFC 7252 §5.7) hitting their limits.
// Memory is read after a full GC obtained without --expose-gc (bench/common's forceGc sets the V8 flag at run time),
// so the file runs under the project's ordinary mocha configuration.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { decode, encode } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { createMessage, getOption } from '../../src/coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../../src/coap/options';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupProxy, GroupProxyOptions, ProxyEvent } from '../../src/proxy/group-proxy';
import { requestUnicastViaProxy, requestViaProxy } from '../../src/proxy/proxy-client';
import { UdpTransport } from '../../src/transport/udp-transport';
import { forceGc } from '../../bench/common';
import { FakeClock } from '../support/fake-clock';
import { GROUP_V4, lampsForSuite, stopAll } from '../support/lamps';
import { waitFor, waitForEvent } from '../support/wait';

async function endpointOn(address = '127.0.0.1', port = 0): Promise<CoapEndpoint> {
  return new CoapEndpoint(await UdpTransport.open({ bindAddress: address, port }), { params: { ACK_TIMEOUT: 300 } });
}

interface Harness {
  proxy: GroupProxy;
  listen: CoapEndpoint;
  upstream: CoapEndpoint;
  handlerErrors: () => number;
  close(): Promise<void>;
}

async function startProxy(opts: Partial<GroupProxyOptions>): Promise<Harness> {
  const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
  const upstream = await endpointOn();
  const proxy = new GroupProxy({ listen, upstream, ...opts });
  let errors = 0;
  for (const e of [listen, upstream, proxy]) e.on('handler-error', () => errors++);
  return {
    proxy, listen, upstream,
    handlerErrors: () => errors,
    close: async () => {
      await proxy.close();
      await listen.close();
      await upstream.close();
      // every endpoint of the proxy ran without an unexpected exception
      assert.equal(errors, 0, 'handler errors at the proxy');
    },
  };
}

/** A plain UDP socket that counts the bytes it sends and receives (the attacker's, or the victim's, view). */
async function socketOn(address: string, port = 0): Promise<{ sock: dgram.Socket; port: number; sent: number; received: number; replies: Buffer[]; close(): Promise<void> }> {
  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  await new Promise<void>((r) => sock.bind(port, address, () => r()));
  const s = {
    sock,
    port: sock.address().port,
    sent: 0,
    received: 0,
    replies: [] as Buffer[],
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
  sock.on('message', (m) => {
    s.received += m.length;
    s.replies.push(m);
  });
  return s;
}

const MT = optionNumber('Multicast-Timeout');

describe('group proxy under attack (real sockets)', function () {
  this.timeout(60000);
  const group = lampsForSuite(5, { leisure: 20 });

  it('reflection: 20,000 CON requests with 255-byte garbage Uri-Path segments from a source not allow-listed get at most 3x their bytes back, and the proxy grows < 50 MB (RFC 9000 §8.1)', async function () {
    const p = await startProxy({ allow: [{ address: '127.0.0.9' }] });
    const attacker = await socketOn('127.0.0.1');
    try {
      const dest = p.listen.transport.address();
      const garbage = Buffer.alloc(255, 0xff);
      const groupBefore = group.groupRequests();
      forceGc();
      const m0 = process.memoryUsage();
      const before = m0.heapUsed + m0.external;
      const N = 20_000;
      const batch = 500;
      let mid = 1;
      for (let sent = 0; sent < N; sent += batch) {
        for (let i = 0; i < batch; i++) {
          const n = sent + i;
          // three shapes: reverse-style Uri-Path garbage, a Proxy-Uri of control bytes, Proxy-Scheme + garbage host
          const options =
            n % 3 === 0
              ? [{ number: OPT.URI_PATH, value: garbage }, { number: OPT.URI_PATH, value: garbage }, { number: OPT.URI_PATH, value: garbage }, { number: OPT.URI_PATH, value: garbage }]
              : n % 3 === 1
                ? [{ number: OPT.PROXY_URI, value: Buffer.alloc(1034, 0x01) }]
                : [{ number: OPT.URI_HOST, value: garbage }, { number: OPT.URI_PATH, value: garbage }, { number: OPT.PROXY_SCHEME, value: Buffer.from('coap') }, { number: MT, value: encodeUint(5) }];
          const data = encode(createMessage({ type: 'CON', code: CODES.GET, messageId: mid++ & 0xffff, token: Buffer.from([n & 0xff, (n >> 8) & 0xff, 1, 2]), options: options.sort((a, b) => a.number - b.number) }));
          attacker.sock.send(data, dest.port, dest.address);
          attacker.sent += data.length;
        }
        // every CON gets exactly one answer (an ACK): wait for this batch's before sending the next
        await waitFor(() => attacker.replies.length >= sent + batch, `the answers to ${sent + batch} requests`, 15000);
      }
      assert.equal(attacker.replies.length, N);
      assert.ok(attacker.received <= 3 * attacker.sent, `bytes out ${attacker.received} <= 3 x bytes in ${attacker.sent}`);
      // in fact far less: short fixed diagnostics, never the client's bytes
      assert.ok(attacker.received < attacker.sent / 10, `bytes out ${attacker.received} are a small fraction of ${attacker.sent}`);
      assert.ok(attacker.replies.every((r) => !r.includes(garbage.subarray(0, 8))), 'no answer echoes the client\'s bytes');
      assert.ok(attacker.replies.every((r) => r.length <= 1152), 'no datagram over RFC 7252 §4.6 without Block');
      assert.equal(group.groupRequests(), groupBefore, 'nothing from a source not allow-listed reached the group');
      forceGc();
      const m1 = process.memoryUsage();
      const grew = m1.heapUsed + m1.external - before;
      assert.ok(grew < 50e6, `heap + external grew by ${(grew / 1e6).toFixed(1)} MB`);
      assert.equal(p.proxy.activeExchanges, 0);
      assert.equal(p.proxy.counters.rejected, N);
    } finally {
      await attacker.close();
      await p.close();
    }
  });

  it('a spoofed allow-listed address gets no relayed response (and the group no request) until Echo is answered from that address (RFC 9175 §2.4)', async function () {
    const p = await startProxy({ allow: [{ address: '127.0.0.5' }] });
    const dest = p.listen.transport.address();
    const groupBefore = group.groupRequests();
    // The spoofer sends from the victim's address and port, then is gone; the victim owns that address.
    const spoofer = await socketOn('127.0.0.5');
    const victimPort = spoofer.port;
    const req = createMessage({ type: 'NON', code: CODES.GET, messageId: 7, token: Buffer.from('spoofed!'), options: [{ number: MT, value: encodeUint(2) }, { number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP_V4}:${group.port}/light`) }] });
    const challenged = waitForEvent<ProxyEvent>(p.proxy, 'event', (e) => e.kind === 'challenge' && e.code === '4.01', 15000);
    spoofer.sock.send(encode(req), dest.port, dest.address);
    await challenged;
    const challenge = await waitFor(() => spoofer.replies.length > 0, 'the challenge', 15000).then(() => spoofer.replies[0]);
    await spoofer.close();
    const victim = await endpointOn('127.0.0.5', victimPort);
    try {
      assert.equal(p.proxy.counters.echoChallenges, 1);
      assert.ok(challenge.length <= 3 * encode(req).length, 'the 4.01 with Echo is within 3x the request');
      assert.equal(group.groupRequests(), groupBefore, 'nothing went to the group for the spoofed request');
      assert.equal(p.proxy.activeExchanges, 0);
      // The owner of the address now asks for itself: it answers the Echo from that address and gets the relays.
      const ex = requestViaProxy(victim, { proxy: dest, uri: `coap://${GROUP_V4}:${group.port}/light`, multicastTimeout: 1, timeout: 2500 });
      const s = await ex.summary;
      assert.equal(s.responses, 5);
      assert.equal(p.proxy.counters.echoChallenges, 2, 'the owner was challenged too, and answered');
      assert.equal(group.groupRequests(), groupBefore + 5, 'one fan-out: the owner\'s');
    } finally {
      await victim.close();
      await p.close();
    }
  });

  it('a unicast forward from an address not yet verified reaches no target until Echo is answered from that address; then it is forwarded (RFC 9175 §2.4, RFC 7252 §5.7)', async function () {
    const p = await startProxy({ allow: [{ address: '127.0.0.5' }] });
    const dest = p.listen.transport.address();
    // the target records every request that reaches it, by path
    const lamp = group.lamps[0];
    const reached: string[] = [];
    for (const path of ['/spoofed', '/owner']) {
      lamp.server.addResource(path, () => {
        reached.push(path);
        return { code: CODES.CONTENT, payload: path };
      });
    }
    const target = (path: string) => `coap://${lamp.address}:${lamp.server.address().port}${path}`;
    // The spoofer sends as the allow-listed address (CON and NON), then is gone; the owner of the address comes next.
    const spoofer = await socketOn('127.0.0.5');
    const ownerPort = spoofer.port;
    let owner: CoapEndpoint | undefined;
    let spooferOpen = true;
    try {
      const spoofed = [
        createMessage({ type: 'CON', code: CODES.GET, messageId: 11, token: Buffer.from('spoof-1'), options: [{ number: OPT.PROXY_URI, value: Buffer.from(target('/spoofed')) }] }),
        createMessage({ type: 'NON', code: CODES.GET, messageId: 12, token: Buffer.from('spoof-2'), options: [{ number: OPT.PROXY_URI, value: Buffer.from(target('/spoofed')) }] }),
      ];
      for (const m of spoofed) spoofer.sock.send(encode(m), dest.port, dest.address);
      await waitFor(() => spoofer.replies.length === 2 && p.proxy.counters.echoChallenges === 2, 'the two Echo challenges', 15000);
      spooferOpen = false;
      await spoofer.close();
      owner = await endpointOn('127.0.0.5', ownerPort);
      for (const [i, r] of spoofer.replies.entries()) {
        const m = decode(r);
        assert.equal(codeToString(m.code), '4.01');
        assert.ok(getOption(m, OPT.ECHO), 'the 4.01 carries Echo');
        assert.ok(r.length <= 3 * encode(spoofed[i]).length, 'the challenge is within 3x the request');
      }
      assert.equal(p.proxy.counters.unicastRequests, 0, 'nothing forwarded for the unverified address');
      assert.equal(p.proxy.limits.inUse, 0, 'the spoofer holds no slot');
      // The owner asks for itself through the same upstream socket: had the spoofed requests gone out, the target
      // would have seen them first (loopback keeps the order of one socket's datagrams).
      const res = await requestUnicastViaProxy(owner, { proxy: dest, uri: target('/owner'), timeout: 5000 });
      assert.equal(codeToString(res.message.code), '2.05');
      assert.equal(res.message.payload.toString(), '/owner');
      assert.deepEqual(reached, ['/owner'], 'only the verified request reached the target');
      assert.equal(p.proxy.counters.echoChallenges, 3, 'the owner was challenged too, and answered');
      assert.equal(p.proxy.counters.unicastRequests, 1);
      // verified now: the next forward goes out at once
      const again = await requestUnicastViaProxy(owner, { proxy: dest, uri: target('/owner'), timeout: 5000 });
      assert.equal(codeToString(again.message.code), '2.05');
      assert.equal(p.proxy.counters.echoChallenges, 3);
      assert.deepEqual(reached, ['/owner', '/owner']);
    } finally {
      if (owner) await owner.close();
      if (spooferOpen) await spoofer.close();
      await p.close();
    }
  });

  it('with unsafeTrustAddresses an allow-listed address is forwarded for at once, unicast as before (no Echo)', async function () {
    const p = await startProxy({ allow: [{ address: '127.0.0.1' }], unsafeTrustAddresses: true });
    const client = await endpointOn();
    try {
      const lamp = group.lamps[1];
      const res = await client.request({ code: CODES.GET, options: [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://${lamp.address}:${lamp.server.address().port}/light`) }] }, p.listen.transport.address());
      assert.equal(codeToString(res.message.code), '2.05');
      assert.equal(p.proxy.counters.echoChallenges, 0);
      assert.equal(p.proxy.counters.unicastRequests, 1);
    } finally {
      await client.close();
      await p.close();
    }
  });

  it('per-host limits hold across 40 source ports: 16 pending exchanges, the rest 4.29 with Max-Age (groupcomm-proxy-07 §10)', async function () {
    const clock = new FakeClock();
    const p = await startProxy({ allow: [{ address: '127.0.0.1' }], clock, maxPendingPerClient: 16 });
    const clients: CoapEndpoint[] = [];
    try {
      for (let i = 0; i < 40; i++) clients.push(await endpointOn());
      const dest = p.listen.transport.address();
      // The proxy's T' never passes (fake clock): every accepted exchange stays pending.
      const exchanges = clients.map((c) => requestViaProxy(c, { proxy: dest, uri: `coap://${GROUP_V4}:${group.port}/light`, multicastTimeout: 5, timeout: 8000, clock }));
      await waitFor(() => p.proxy.counters.groupRequests + p.proxy.limits.refused.pending >= 40, 'all 40 requests admitted or refused', 15000);
      assert.equal(p.proxy.limits.held('ip:127.0.0.1', 'pending'), 16);
      assert.equal(p.proxy.activeExchanges, 16);
      assert.equal(p.proxy.limits.refused.pending, 24);
      await waitFor(() => exchanges.filter((e) => e.proxyErrors.some((x) => x.code === '4.29')).length === 24, 'the 4.29 answers', 15000);
      assert.equal(p.proxy.counters.limited, 24);
      for (const e of exchanges) e.cancel();
    } finally {
      await stopAll(clients);
      await p.close();
    }
  });

  it('4.29 carries Max-Age, and a T\' = 0 flood from one host is cut at its rate (20/s) on the proxy\'s clock', async function () {
    const clock = new FakeClock();
    const p = await startProxy({ allow: [{ address: '127.0.0.1' }], clock });
    const client = await endpointOn();
    try {
      const dest = p.listen.transport.address();
      const groupBefore = group.groupRequests();
      const flood = async (n: number) => {
        const out: string[] = [];
        for (let i = 0; i < n; i++) {
          const s = await requestViaProxy(client, { proxy: dest, uri: `coap://${GROUP_V4}:${group.port}/light`, multicastTimeout: 0, timeout: 1000 }).summary;
          out.push(s.errors[0]?.code ?? 'forwarded');
        }
        return out;
      };
      const first = await flood(30);
      assert.equal(first.filter((c) => c === 'forwarded').length, 20);
      assert.equal(first.filter((c) => c === '4.29').length, 10);
      assert.equal(p.proxy.limits.refused.tZero, 10);
      clock.advance(1000);
      // a new second on the proxy's clock: 20 more, then the limit again
      const second = await flood(20);
      assert.equal(second.filter((c) => c === 'forwarded').length, 20);
      await waitFor(() => group.groupRequests() >= groupBefore + 40 * 5, 'the forwarded requests at the lamps', 15000);
      // and the 4.29 names when to come back
      const raw = await client.request({ code: CODES.GET, options: [{ number: OPT.PROXY_URI, value: Buffer.from(`coap://${GROUP_V4}:${group.port}/light`) }, { number: MT, value: encodeUint(0) }] }, dest);
      assert.equal(codeToString(raw.message.code), '4.29');
      assert.ok(decodeUint(getOption(raw.message, OPT.MAX_AGE)!) >= 1);
    } finally {
      await client.close();
      await p.close();
    }
  });

  it('unicast forwards to a silent host stop at 16 per host; the rest get 4.29 (RFC 7252 §5.7 forwarding, bounded)', async function () {
    const p = await startProxy({ allow: [{ address: '127.0.0.1' }], unicastTimeout: 60_000 });
    const silent = await socketOn('127.0.0.31');
    const client = await endpointOn();
    try {
      const dest = p.listen.transport.address();
      const results = Array.from({ length: 40 }, () =>
        requestUnicastViaProxy(client, { proxy: dest, uri: `coap://127.0.0.31:${silent.port}/x`, confirmable: false, timeout: 1500 }).then(
          (r) => codeToString(r.message.code),
          () => 'no answer',
        ),
      );
      const codes = await Promise.all(results);
      assert.equal(codes.filter((c) => c === '4.29').length, 24);
      assert.equal(codes.filter((c) => c === 'no answer').length, 16);
      assert.equal(p.proxy.limits.refused.unicast, 24);
      // the silent host saw 16 requests (first transmissions: distinct Message IDs)
      const mids = new Set(silent.replies.map((d) => d.readUInt16BE(2)));
      assert.equal(mids.size, 16);
    } finally {
      await client.close();
      await p.close();
      await silent.close();
    }
  });
});
