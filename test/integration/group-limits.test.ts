// What one group exchange keeps (ResponseLimits, src/group/response-limits.ts): a group request is answered by any
// number of sources until its deadline (groupcomm-bis §3.1), so the group client and the proxy's fan-out cap the
// responses of one exchange (in all, per server, in bytes); what goes over is counted and dropped and said once.
// Real multicast on loopback, answered by a fleet of sockets on distinct loopback addresses; under Group OSCORE (RFC
// 10021) by members that protect their answers, whose responses over a cap are dropped before they are verified.

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { OPT } from '../../src/coap/options';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { DEFAULT_RESPONSE_LIMITS, GroupClient, GroupResponse, GroupSummary, ResponseLimitEvent, ResponseLimits, ResponseStream } from '../../src/group/group-client';
import { getOption } from '../../src/coap/message';
import type { GroupContext, MessageBinding, PeerContext, RequestContext } from '../../src/oscore';
import { GroupProxy, ProxyEvent } from '../../src/proxy/group-proxy';
import { requestViaProxy } from '../../src/proxy/proxy-client';
import { UdpTransport } from '../../src/transport/udp-transport';
import { closeChecked } from '../support/endpoints';
import { GroupMaterial, GroupOscoreLamp, endpointOn, groupMaterial, memberContext, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { GROUP_V4, freeGroupPort, stopAll } from '../support/lamps';
import { ResponderFleet, startResponderFleet } from '../support/responders';
import { waitFor } from '../support/wait';

async function clientEndpoint(): Promise<CoapEndpoint> {
  // room for a thousand responses arriving together
  return new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
}

/** Everything an exchange showed: its responses, its 'limit' events and its summary. */
async function collect(ex: ResponseStream): Promise<{ responses: GroupResponse[]; limits: ResponseLimitEvent[]; summary: GroupSummary }> {
  const responses: GroupResponse[] = [];
  const limits: ResponseLimitEvent[] = [];
  ex.on('response', (r: GroupResponse) => responses.push(r));
  ex.on('limit', (e: ResponseLimitEvent) => limits.push(e));
  const summary = await ex.summary;
  return { responses, limits, summary };
}

describe('responses kept per group exchange (ResponseLimits)', function () {
  this.timeout(30000);
  let port: number;
  let fleet: ResponderFleet | undefined;
  let client: CoapEndpoint | undefined;

  beforeEach(async function () {
    port = await freeGroupPort();
  });
  afterEach(async function () {
    await fleet?.close();
    await closeChecked(client);
    fleet = undefined;
    client = undefined;
  });

  it(`with the defaults, 1050 distinct servers answering one group request: the first ${DEFAULT_RESPONSE_LIMITS.maxResponses} are kept, 50 are counted and dropped, 'limit' fires once`, async function () {
    fleet = await startResponderFleet({ group: GROUP_V4, groupPort: port, members: 1050 });
    client = await clientEndpoint();
    const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/x`, timeout: 5000 });
    const got = collect(ex);
    // every answer has arrived (kept or dropped): stop collecting now rather than wait out the deadline
    await waitFor(() => ex.responses.length + ex.dropped >= 1050, 'all 1050 answers', 20000);
    ex.cancel();
    const { responses, limits, summary } = await got;
    assert.equal(responses.length, 1000);
    assert.equal(new Set(responses.map((r) => r.origin.uri)).size, 1000, 'a thousand distinct servers');
    assert.equal(summary.responses, 1000);
    assert.equal(summary.responders.length, 1000);
    assert.deepEqual(summary.limited, { dropped: 50, kinds: ['responses'] });
    assert.equal(limits.length, 1);
    assert.equal(limits[0].kind, 'responses');
    assert.equal(limits[0].limit, 1000);
  });

  it('maxResponses: 25 of 40 servers kept, in arrival order with indexes 1..25; the other 15 counted', async function () {
    fleet = await startResponderFleet({ group: GROUP_V4, groupPort: port, members: 40 });
    client = await clientEndpoint();
    const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/x`, timeout: 1500, limits: { maxResponses: 25 } });
    const { responses, limits, summary } = await collect(ex);
    assert.equal(fleet.requests, 1);
    assert.deepEqual(responses.map((r) => r.index), Array.from({ length: 25 }, (_, i) => i + 1));
    assert.deepEqual(summary.limited, { dropped: 15, kinds: ['responses'] });
    assert.deepEqual(limits.map((l) => [l.kind, l.limit]), [['responses', 25]]);
    assert.ok(fleet.addresses.includes(limits[0].origin.replace(/^coap:\/\/([^:]+):\d+$/, '$1')), 'the event names the dropped origin');
  });

  it('maxResponsesPerServer: a source that answers six times keeps two; a summary without a cap reached has no `limited`', async function () {
    fleet = await startResponderFleet({ group: GROUP_V4, groupPort: port, members: 5, perMember: 6 });
    client = await clientEndpoint();
    const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/x`, timeout: 1500, limits: { maxResponsesPerServer: 2 } });
    const { responses, limits, summary } = await collect(ex);
    const perServer = new Map<string, number>();
    for (const r of responses) perServer.set(r.origin.uri, (perServer.get(r.origin.uri) ?? 0) + 1);
    assert.deepEqual([...perServer.values()], [2, 2, 2, 2, 2]);
    assert.deepEqual(summary.limited, { dropped: 20, kinds: ['per-server'] });
    assert.deepEqual(limits.map((l) => l.kind), ['per-server']);

    // the same fleet under the default limits: nothing dropped
    const ex2 = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/x`, timeout: 1500 });
    const second = await collect(ex2);
    assert.equal(second.responses.length, 30);
    assert.equal(second.summary.limited, undefined);
    assert.equal(ex2.dropped, 0);
  });

  it('maxBytes: 100-byte payloads from 10 servers under a 450-byte cap keep 4', async function () {
    fleet = await startResponderFleet({ group: GROUP_V4, groupPort: port, members: 10, payload: () => Buffer.alloc(100, 0x61) });
    client = await clientEndpoint();
    const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/x`, timeout: 1500, limits: { maxBytes: 450 } });
    const { responses, summary } = await collect(ex);
    assert.equal(responses.length, 4);
    assert.deepEqual(summary.limited, { dropped: 6, kinds: ['bytes'] });
  });

  /**
   * A group server on `address` with an observable resource `path` (payload `body(n)`), and a group request from
   * `client` observing it under `limits`: `change()` sets the state to the next n and notifies the observers.
   */
  async function observeOne(address: string, path: string, body: (n: number) => string, limits: Partial<ResponseLimits>) {
    const server = await GroupServer.open({ address, port: 0, groups: [{ address: GROUP_V4, port }], leisure: 0 });
    let n = 0;
    server.addResource(path, () => ({ code: CODES.CONTENT, payload: body(n) }), { observable: true });
    client = await clientEndpoint();
    const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}${path}`, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }], timeout: 20000, limits });
    const got: GroupResponse[] = [];
    const limitEvents: ResponseLimitEvent[] = [];
    ex.on('response', (r: GroupResponse) => got.push(r));
    ex.on('limit', (e: ResponseLimitEvent) => limitEvents.push(e));
    const change = () => {
      n++;
      server.notify(path);
    };
    return { server, ex, got, limits: limitEvents, change };
  }

  it('an observation: each server\'s notifications are delivered past every cap and not kept (RFC 7641 §4.2, RFC 10020 §3.7)', async function () {
    const { server, ex, got, limits, change } = await observeOne('127.0.0.2', '/t', (n) => `n=${n}`, { maxResponses: 3, maxResponsesPerServer: 2 });
    try {
      await waitFor(() => got.length === 1, 'the registration answer');
      for (let i = 1; i <= 10; i++) {
        change();
        await waitFor(() => got.length === i + 1, `notification ${i}`);
      }
      assert.deepEqual(got.map((r) => r.message.payload.toString()), ['n=0', ...Array.from({ length: 10 }, (_, i) => `n=${i + 1}`)]);
      assert.deepEqual(got.map((r) => r.index), Array.from({ length: 11 }, (_, i) => i + 1));
      assert.equal(ex.responses.length, 1, 'only the first answer is kept');
      assert.equal(ex.dropped, 0);
      assert.deepEqual(limits, []);
      ex.cancel();
      assert.equal((await ex.summary).responses, 11);
    } finally {
      await closeChecked(server.endpoint);
    }
  });

  it('an observation with block-wise notifications under maxResponses 1 and a byte cap just above one body: every notification arrives whole (RFC 7959 §2.6)', async function () {
    // 1500 bytes: more than the server's 1024-byte block, so every answer comes block-wise
    const { server, ex, got, change } = await observeOne('127.0.0.3', '/big', (n) => `n=${n};`.padEnd(1500, 'x'), { maxResponses: 1, maxBytes: 2000 });
    try {
      await waitFor(() => got.length === 1, 'the registration answer, reassembled');
      for (let i = 1; i <= 6; i++) {
        change();
        await waitFor(() => got.length === i + 1, `notification ${i}`);
      }
      assert.ok(got.every((r) => r.reassembled === true && r.message.payload.length === 1500));
      assert.deepEqual(got.map((r) => r.message.payload.toString().split(';')[0]), Array.from({ length: 7 }, (_, i) => `n=${i}`));
      assert.equal(ex.dropped, 0);
      assert.equal(ex.responses.length, 1);
      ex.cancel();
      await ex.summary;
    } finally {
      await closeChecked(server.endpoint);
    }
  });

  it('limits that are not whole numbers >= 1 are refused before anything is sent', async function () {
    fleet = await startResponderFleet({ group: GROUP_V4, groupPort: port, members: 1 });
    client = await clientEndpoint();
    const gc = new GroupClient(client);
    assert.throws(() => gc.request({ uri: `coap://${GROUP_V4}:${port}/x`, limits: { maxResponses: 0 } }), /maxResponses must be a whole number >= 1/);
    assert.throws(() => gc.request({ uri: `coap://${GROUP_V4}:${port}/x`, limits: { maxBytes: 1.5 } }), /maxBytes must be a whole number >= 1/);
    assert.equal(fleet.requests, 0);
  });
});

/**
 * `ctx` as the group client sees it, with a count of the responses it verified: the calls of open() (RFC 10021 §8.4:
 * the countersignature, then the decryption) on the member contexts it finds for them.
 */
function countingVerifications(ctx: RequestContext): { context: RequestContext; verified: () => number } {
  let verified = 0;
  // every other property reads from the wrapped object itself (its methods bound to it)
  const wrap = <T extends object>(target: T, name: string | symbol, replacement: unknown): T =>
    new Proxy(target, {
      get(t, p) {
        if (p === name) return replacement;
        const v = Reflect.get(t, p, t);
        return typeof v === 'function' ? v.bind(t) : v;
      },
    });
  const counted = (peer: PeerContext): PeerContext =>
    wrap(peer, 'open', (payload: Buffer, m: MessageBinding) => {
      verified++;
      return peer.open(payload, m);
    });
  const context = wrap(ctx, 'responder', (kid: Buffer | undefined, group: boolean) => {
    const peer = ctx.responder(kid, group);
    return peer && counted(peer);
  });
  return { context, verified: () => verified };
}

describe('the caps under Group OSCORE: what goes over one is dropped before its signature is checked (RFC 10021 §8.4)', function () {
  this.timeout(30000);
  const CLIENT = '25';
  let port: number;
  let material: GroupMaterial;
  let lamps: GroupOscoreLamp[];
  let client: CoapEndpoint;
  /** the client's context: one for every request, so that each has a Partial IV of its own */
  let clientGroup: GroupContext;

  before(async function () {
    port = await freeGroupPort();
    material = groupMaterial([CLIENT, ...serverIds(4)]);
    clientGroup = memberContext(material, CLIENT);
    lamps = await startGroupOscoreLamps(4, { groupPort: port, material, observable: true, leisure: 0 });
    client = await endpointOn();
  });
  after(async function () {
    await closeChecked(client);
    await stopAll(lamps.map((l) => l.server));
  });

  /** A group-mode request of the client for /light (RFC 10021 §8.1), its responses verified through a counting context. */
  function request(limits: Partial<ResponseLimits>, observe: boolean) {
    const counting = countingVerifications(clientGroup.groupRequests());
    const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/light`, timeout: 20000, limits, options: observe ? [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }] : [], oscore: { context: counting.context } });
    const got: GroupResponse[] = [];
    ex.on('response', (r: GroupResponse) => got.push(r));
    return { ex, got, verified: counting.verified };
  }

  it('four members answer under maxResponses 2: two responses verified and delivered, two counted in `dropped` without a verification', async function () {
    const { ex, got, verified } = request({ maxResponses: 2 }, false);
    await waitFor(() => ex.responses.length + ex.dropped + ex.rejected >= 4, 'all four answers');
    ex.cancel();
    const summary = await ex.summary;
    assert.equal(got.length, 2);
    assert.equal(new Set(got.map((r) => r.origin.oscore?.kid)).size, 2, 'two members, each verified as itself');
    assert.ok(got.every((r) => lamps.some((l) => l.kid === r.origin.oscore?.kid && l.address === r.origin.address)));
    assert.equal(ex.rejected, 0);
    assert.deepEqual(summary.limited, { dropped: 2, kinds: ['responses'] });
    assert.equal(verified(), 2, 'the two responses over the cap cost no verification');
  });

  it('an observation under maxResponses 3 and maxResponsesPerServer 1: every kept member\'s notifications still arrive, verified; the fourth member\'s are dropped unverified', async function () {
    const { ex, got, verified } = request({ maxResponses: 3, maxResponsesPerServer: 1 }, true);
    try {
      await waitFor(() => got.length === 3 && ex.dropped === 1, 'three registrations kept, one dropped');
      const kept = new Set(got.map((r) => r.origin.address));
      const outside = lamps.find((l) => !kept.has(l.address))!;
      for (let round = 1; round <= 3; round++) {
        for (const l of lamps) {
          l.on = round % 2 === 0;
          l.server.notify('/light');
        }
        await waitFor(() => got.length === 3 + 3 * round && ex.dropped === 1 + round, `round ${round} of notifications`);
      }
      // each kept member: its registration answer, then three notifications with the states it changed to, in order
      for (const address of kept) {
        const mine = got.filter((r) => r.origin.address === address);
        assert.deepEqual(mine.map((r) => JSON.parse(r.message.payload.toString()).on), [true, false, true, false]);
        assert.ok(mine.slice(1).every((r) => getOption(r.message, OPT.OBSERVE) !== undefined), 'notifications');
      }
      assert.equal(ex.responses.length, 3, 'each kept member\'s first answer only');
      assert.ok(!got.some((r) => r.origin.address === outside.address));
      assert.equal(ex.rejected, 0);
      assert.equal(verified(), 3 + 3 * 3, 'only what was delivered was verified');
    } finally {
      ex.cancel();
      for (const l of lamps) {
        l.on = undefined;
        l.server.takeObservers('/light');
      }
    }
    assert.deepEqual((await ex.summary).limited, { dropped: 4, kinds: ['responses'] });
  });
});

describe("the proxy's fan-out is bounded the same way (maxResponsesPerExchange)", function () {
  this.timeout(30000);

  it('40 servers answer a proxied group request with a cap of 25: the proxy relays 25, counts 15 in capDropped and says so once; the client keeps what came, or its own cap', async function () {
    const port = await freeGroupPort();
    const fleet = await startResponderFleet({ group: GROUP_V4, groupPort: port, members: 40 });
    const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
    const upstream = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1', recvBufferSize: 4 << 20 }));
    const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], maxResponsesPerExchange: 25 });
    const events: ProxyEvent[] = [];
    proxy.on('event', (e: ProxyEvent) => events.push(e));
    const client = await clientEndpoint();
    try {
      const ex = requestViaProxy(client, { proxy: listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/x`, multicastTimeout: 1, timeout: 2500 });
      const { responses, summary } = await collect(ex);
      assert.equal(fleet.requests, 1);
      assert.equal(proxy.counters.relayed, 25);
      assert.equal(proxy.counters.capDropped, 15);
      assert.equal(responses.length, 25);
      assert.equal(new Set(responses.map((r) => r.origin.uri)).size, 25, 'each from its own server (Reply-From)');
      assert.equal(summary.limited, undefined, 'the client itself dropped nothing');
      const drops = events.filter((e) => e.kind === 'drop' && /responses in one exchange/.test(e.reason ?? ''));
      assert.equal(drops.length, 1);

      // the client's own cap through the proxy (ProxiedGroupExchange): 10 of the 25 relayed kept
      const ex2 = requestViaProxy(client, { proxy: listen.transport.address(), uri: `coap://${GROUP_V4}:${port}/x`, multicastTimeout: 1, timeout: 2500, limits: { maxResponses: 10 } });
      const second = await collect(ex2);
      assert.equal(proxy.counters.relayed, 50);
      assert.equal(second.responses.length, 10);
      assert.deepEqual(second.summary.limited, { dropped: 15, kinds: ['responses'] });
    } finally {
      await proxy.close();
      await closeChecked(client, listen, upstream);
      await fleet.close();
    }
  });
});
