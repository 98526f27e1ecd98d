// The rest of draft-ietf-core-cacheable-oscore-02 on real sockets and loopback multicast: the protected 4.01 to a
// Deterministic Request with an unsafe method (§3.4.3), the Inner Observe of §3.1 at the servers (§3.4.4 steps 3
// and 8: a non-observing request; an observing one registers and gets protected notifications), and the Padding
// option (App. A): a group whose members pad their requests to 64 bytes, answered by 3 servers (127.0.0.2-4) that
// strip it. Then through the group proxy: clients observing one Deterministic Request share one upstream observation,
// and its notifications serve the non-observing request from the cache (§3.1).

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { decode } from '../../src/coap/codec';
import { CoapMessage, createMessage, getOption } from '../../src/coap/message';
import { OPT, decodeUint } from '../../src/coap/options';
import { GroupClient, GroupResponse } from '../../src/group/group-client';
import { CoapEndpoint, IncomingResponse } from '../../src/messaging/endpoint';
import { ClientBinding, GroupContext, PADDING_OPTION, RequestContext, protectRequest, unprotectResponse } from '../../src/oscore';
import type { DeterministicRequester } from '../../src/oscore/group/deterministic';
import { requestUnicastViaProxy, requestViaProxy } from '../../src/proxy/proxy-client';
import { GroupProxy } from '../../src/proxy/group-proxy';
import type { Datagram, RemoteAddress } from '../../src/transport/udp-transport';
import { GroupOscoreLamp, GroupMaterial, OscoreGroupProxy, endpointOn, groupMaterial, memberContext, openOscoreGroupProxy, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { GROUP_V4, freeGroupPort, stopAll } from '../support/lamps';
import { FakeClock } from '../support/fake-clock';
import { waitFor } from '../support/wait';

const DET_ID = 'dc';

/**
 * `member` observes /light of the group at `uri` through the proxy at `proxy` with its Deterministic Request (over the
 * client-proxy OSCORE layer `proxyLayer`, if given); every notification as it is heard.
 */
function observeThrough(client: CoapEndpoint, proxy: RemoteAddress, uri: string, member: GroupContext, proxyLayer?: RequestContext) {
  const ex = requestViaProxy(client, {
    proxy,
    uri,
    multicastTimeout: 1,
    timeout: 20000,
    options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }],
    oscore: { proxy: proxyLayer, endToEnd: { context: member.deterministicRequests() } },
  });
  const heard: GroupResponse[] = [];
  ex.on('response', (r: GroupResponse) => heard.push(r));
  return { ex, heard };
}

describe('Deterministic Requests on the wire: protected 4.01, Inner Observe, Padding (draft-ietf-core-cacheable-oscore-02 §3.1, §3.4.3, App. A)', function () {
  this.timeout(30000);
  let port: number;
  let material: GroupMaterial;
  let lamps: GroupOscoreLamp[];
  let member: GroupContext;
  let client: CoapEndpoint;

  before(async function () {
    port = await freeGroupPort();
    material = { ...groupMaterial(['25', ...serverIds(3)]), deterministicClient: { senderId: Buffer.from(DET_ID, 'hex'), innerObserve: true, padding: 64 } };
    lamps = await startGroupOscoreLamps(3, { groupPort: port, material, observable: true });
    member = memberContext(material, '25');
    client = await endpointOn('127.0.0.1');
  });

  after(async function () {
    await stopAll(client, lamps.map((l) => l.server));
  });

  const lampAddr = (l: GroupOscoreLamp) => ({ address: l.address, port: l.server.address().port });
  const light = [{ number: OPT.URI_PATH, value: Buffer.from('light') }];

  /** Send a protected request to one lamp on a token of our own and collect what verifies (and what does not). */
  function exchange(lamp: GroupOscoreLamp, message: { code: number; options: CoapMessage['options']; payload: Buffer }, binding: ClientBinding) {
    const got: { message: CoapMessage; kid: string; notification: boolean }[] = [];
    const raw: IncomingResponse[] = [];
    const errors: string[] = [];
    const challenges: IncomingResponse[] = [];
    const token = client.newToken();
    const stop = client.listen(token, (res) => {
      const echo = getOption(res.message, OPT.ECHO);
      if (res.message.code === CODES.UNAUTHORIZED && echo && !getOption(res.message, OPT.OSCORE) && challenges.length === 0) {
        // RFC 9175 §2.4: an observer of a Deterministic Request proves its address first (§3.1's Outer Echo)
        challenges.push(res);
        client.sendMessage(createMessage({ type: 'NON', token, messageId: client.newMessageId(lampAddr(lamp)), ...message, options: [...message.options, { number: OPT.ECHO, value: echo }].sort((a, b) => a.number - b.number) }), lampAddr(lamp));
        return;
      }
      raw.push(res);
      try {
        const v = unprotectResponse(binding, res.message);
        got.push({ message: v.message, kid: v.responder.recipientId.toString('hex'), notification: v.notification });
      } catch (err) {
        errors.push((err as Error).message);
      }
    });
    client.sendMessage(createMessage({ type: 'NON', token, messageId: client.newMessageId(lampAddr(lamp)), ...message }), lampAddr(lamp));
    return { got, raw, errors, challenges, stop };
  }

  it('§3.4.3: a Deterministic Request with an unsafe method (POST) from a member that ignores the rule is answered with a protected 4.01, verified as the server\'s and bound to that request; the resource never sees it', async function () {
    const lamp = lamps[0];
    const seen = lamp.seen.length;
    const sent = (member.deterministicRequests() as DeterministicRequester).compose({ code: CODES.POST, options: light, payload: Buffer.from('off') });
    const ex = exchange(lamp, sent.message, sent.binding);
    try {
      await waitFor(() => ex.raw.length >= 1, 'the lamp\'s answer');
    } finally {
      ex.stop();
    }
    assert.deepEqual(ex.errors, []);
    assert.equal(ex.got.length, 1);
    assert.equal(ex.got[0].message.code, CODES.UNAUTHORIZED, 'the inner code: 4.01');
    assert.equal(ex.got[0].kid, lamp.kid);
    // on the wire: protected like every response to a Deterministic Request (§3.4.4 steps 6, 9)
    assert.equal(ex.raw[0].message.code, CODES.CONTENT);
    assert.ok(getOption(ex.raw[0].message, OPT.OSCORE) !== undefined);
    assert.ok(getOption(ex.raw[0].message, OPT.MAX_AGE) !== undefined);
    assert.equal(lamp.seen.length, seen, 'discarded: never delivered to the resource');
    assert.equal(lamp.refused.length, 1);
  });

  it('App. A + §3.1: the group pads to 64 bytes and always sends an Inner Observe; one request to the group, three answers verified and attributed, no Observe reaching the application; the servers saw a plain GET without Padding', async function () {
    const before = lamps.map((l) => l.seen.length);
    const sent = protectRequest(member.deterministicRequests(), { code: CODES.GET, options: light, payload: Buffer.alloc(0) });
    assert.equal(sent.message.payload.length, 64 + 8, 'padded plaintext + the tag');
    assert.equal(getOption(sent.message, OPT.OBSERVE), undefined, 'no Outer Observe (§3.4.2 step 7)');
    const ex = new GroupClient(client).request({ uri: `coap://${GROUP_V4}:${port}/light`, timeout: 800, oscore: { context: member.deterministicRequests() } });
    const s = await ex.summary;
    assert.deepEqual(s.errors, []);
    assert.equal(ex.responses.length, 3);
    assert.deepEqual(new Set(ex.responses.map((r) => r.origin.oscore?.kid)), new Set(lamps.map((l) => l.kid)));
    for (const r of ex.responses) {
      assert.equal(r.message.code, CODES.CONTENT);
      assert.equal(getOption(r.message, OPT.OBSERVE), undefined, 'client step 4: the Inner Observe is ignored');
      assert.equal(getOption(r.message, PADDING_OPTION), undefined);
    }
    assert.deepEqual(lamps.map((l, i) => l.seen.length - before[i]), [1, 1, 1]);
    assert.deepEqual(lamps.map((l) => l.server.observerCount('/light')), [0, 0, 0], 'no observation registered without the Outer Observe');
  });

  it('§3.1: with the Outer Observe too, the server registers the observation and each change reaches the client as a protected notification (group mode, own Partial IV), in order', async function () {
    const lamp = lamps[1];
    const sent = protectRequest(member.deterministicRequests(), { code: CODES.GET, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, ...light], payload: Buffer.alloc(0) });
    // the same ciphertext as the non-observing request of the test before: one cache entry serves both (§3.1)
    const plain = protectRequest(member.deterministicRequests(), { code: CODES.GET, options: light, payload: Buffer.alloc(0) });
    assert.ok(sent.message.payload.equals(plain.message.payload));
    const ex = exchange(lamp, sent.message, sent.binding);
    try {
      await waitFor(() => ex.got.length >= 1, 'the registration\'s answer');
      assert.equal(ex.challenges.length, 1, 'registered after one Echo round (RFC 9175 §2.4)');
      assert.equal(lamp.server.observerCount('/light'), 1);
      lamp.on = false;
      lamp.server.notify('/light');
      await waitFor(() => ex.got.length >= 2, 'a notification');
      lamp.on = true;
      lamp.server.notify('/light');
      await waitFor(() => ex.got.length >= 3, 'a second notification');
    } finally {
      ex.stop();
      lamp.on = undefined;
    }
    assert.deepEqual(ex.errors, []);
    assert.deepEqual(ex.got.map((g) => [g.notification, g.kid, JSON.parse(g.message.payload.toString()).on]), [[true, lamp.kid, true], [true, lamp.kid, false], [true, lamp.kid, true]]);
    for (const r of ex.raw) {
      assert.equal(r.message.code, CODES.CONTENT);
      assert.ok(getOption(r.message, OPT.OBSERVE) !== undefined, 'Outer Observe on every notification');
    }
    // the client here forgets the observation without deregistering (a deregistration is the registration's bytes
    // with an Outer Observe 1, see the proxy test below); the test ends the registration at the server itself
    assert.equal(lamp.server.takeObservers('/light').length, 1);
  });
});

describe('Through the group proxy: clients observing one Deterministic Request share one upstream observation (draft-ietf-core-cacheable-oscore-02 §3.1)', function () {
  this.timeout(30000);
  let port: number;
  let material: GroupMaterial;
  let lamps: GroupOscoreLamp[];
  let rig: OscoreGroupProxy;
  const members: Record<string, GroupContext> = {};
  const proxyAddr = () => rig.listen.transport.address();
  const uri = () => `coap://${GROUP_V4}:${port}/light`;
  const seen = () => lamps.map((l) => l.seen.length);
  const observers = () => lamps.map((l) => l.server.observerCount('/light'));

  before(async function () {
    port = await freeGroupPort();
    material = { ...groupMaterial(['25', '26', '27', ...serverIds(3)]), deterministicClient: { senderId: Buffer.from(DET_ID, 'hex'), innerObserve: true } };
    lamps = await startGroupOscoreLamps(3, { groupPort: port, material, observable: true, firstHost: 5 });
    for (const id of ['25', '26', '27']) members[id] = memberContext(material, id);
    rig = await openOscoreGroupProxy({ cache: true, members: { [`${GROUP_V4}:${port}`]: lamps.map((l) => `${l.address}:${l.server.address().port}`) } });
  });

  after(async function () {
    await rig?.close();
    await stopAll(lamps.map((l) => l.server));
  });

  const viaProxy = (member: GroupContext, observe: boolean, timeout = 1500) =>
    requestViaProxy(rig.client, {
      proxy: proxyAddr(),
      uri: uri(),
      multicastTimeout: 1,
      timeout,
      options: observe ? [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }] : [],
      oscore: { proxy: rig.alice.client, endToEnd: { context: member.deterministicRequests() } },
    });

  const states = (rs: { message: CoapMessage; origin: { oscore?: { kid: string } } }[]) => rs.map((r) => `${r.origin.oscore?.kid}:${JSON.parse(r.message.payload.toString()).on}`).sort();

  it('the second observer registers nothing upstream and gets the latest notifications at once; a change reaches both; a non-observing member is served from the cache the notifications filled; the last to leave deregisters', async function () {
    const before = seen();
    // an observation keeps each server's first answer in `responses`; every notification is a 'response' event
    const heard = (x: ReturnType<typeof viaProxy>) => {
      const got: GroupResponse[] = [];
      x.on('response', (r: GroupResponse) => got.push(r));
      return got;
    };
    const a = viaProxy(members['25'], true, 20000);
    const aAll = heard(a);
    await waitFor(() => aAll.length >= 3, 'the first observer\'s three notifications');
    assert.deepEqual(observers(), [1, 1, 1], 'one registration per server');
    // RFC 9175 §2.4, §3.1 of the draft: each server verified the proxy's address before registering it; the proxy
    // answered the challenge itself, and none reached the client
    assert.deepEqual(lamps.map((l) => l.server.counters.echoChallenges), [1, 1, 1]);
    assert.deepEqual(seen().map((n, i) => n - before[i]), [1, 1, 1]);
    assert.equal(rig.proxy.sharedObservationCount, 1);

    const upstreamSent = rig.upstream.transport.counters.sent;
    const b = viaProxy(members['26'], true, 20000);
    const bAll = heard(b);
    try {
      await waitFor(() => bAll.length >= 3, 'the latest notifications, replayed to the second observer');
      assert.equal(rig.upstream.transport.counters.sent, upstreamSent, 'nothing went to the group for the second observer');
      assert.deepEqual(observers(), [1, 1, 1]);
      assert.deepEqual(seen().map((n, i) => n - before[i]), [1, 1, 1]);
      assert.equal(rig.proxy.sharedObservationCount, 1);
      // verified end to end by member 26 with each server's credential (the proxy only relayed the bytes)
      assert.deepEqual(states(b.responses), lamps.map((l) => `${l.kid}:true`).sort());

      lamps[0].on = false;
      lamps[0].server.notify('/light');
      await waitFor(() => aAll.length >= 4 && bAll.length >= 4, 'the change at both observers');
      for (const x of [aAll, bAll]) {
        const last = x[x.length - 1];
        assert.equal(last.origin.oscore?.kid, lamps[0].kid);
        assert.equal(JSON.parse(last.message.payload.toString()).on, false);
        assert.ok(getOption(last.message, OPT.OBSERVE) !== undefined, 'a notification');
      }

      // §3.1: the non-observing request has the same bytes (Inner Observe 0, no Outer): the cache answers it
      const sentBefore = rig.upstream.transport.counters.sent;
      const c = viaProxy(members['27'], false);
      const s = await c.summary;
      assert.deepEqual(s.errors, []);
      assert.equal(rig.upstream.transport.counters.sent, sentBefore, 'served from the cache alone');
      assert.deepEqual(states(c.responses), [`${lamps[0].kid}:false`, `${lamps[1].kid}:true`, `${lamps[2].kid}:true`].sort());
      assert.ok(c.responses.every((r) => getOption(r.message, OPT.OBSERVE) === undefined));
    } finally {
      a.cancel();
      await waitFor(() => rig.proxy.activeExchanges === 1, 'the first observer gone');
      assert.deepEqual(observers(), [1, 1, 1], 'the observation stays for the second observer');
      b.cancel();
      lamps[0].on = undefined;
    }
    // the last one left: the proxy deregistered upstream (Outer Observe 1 on the same bytes and token)
    await waitFor(() => observers().every((n) => n === 0), 'the upstream deregistration');
    assert.equal(rig.proxy.sharedObservationCount, 0);
  });
});

describe('A Deterministic Request with the Outer Observe to one server through the proxy (draft-ietf-core-cacheable-oscore-02 §3.1)', function () {
  this.timeout(30000);
  it('is forwarded without its Outer Observe and answered once, protected: the server registers nothing and asks no Echo', async function () {
    const port = await freeGroupPort();
    const material: GroupMaterial = { ...groupMaterial(['25', ...serverIds(1)]), deterministicClient: { senderId: Buffer.from(DET_ID, 'hex'), innerObserve: true } };
    const [lamp] = await startGroupOscoreLamps(1, { groupPort: port, material, observable: true, firstHost: 12 });
    const member = memberContext(material, '25');
    const [client, listen, upstream] = [await endpointOn(), await endpointOn(), await endpointOn()];
    const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }] });
    try {
      const sent = protectRequest(member.deterministicRequests(), { code: CODES.GET, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: OPT.URI_PATH, value: Buffer.from('light') }], payload: Buffer.alloc(0) });
      const res = await requestUnicastViaProxy(client, { proxy: listen.transport.address(), uri: `coap://${lamp.address}:${lamp.server.address().port}`, method: sent.message.code, options: sent.message.options, payload: sent.message.payload });
      assert.equal(res.message.code, CODES.CONTENT, `the outer code (${res.message.code})`);
      const v = unprotectResponse(sent.binding, res.message);
      assert.equal(v.responder.recipientId.toString('hex'), lamp.kid);
      assert.equal(typeof JSON.parse(v.message.payload.toString()).on, 'boolean', 'the lamp\'s state, decrypted');
      assert.equal(lamp.server.observerCount('/light'), 0);
      assert.equal(lamp.server.counters.echoChallenges, 0);
    } finally {
      await proxy.close();
      await stopAll(client, listen, upstream, lamp.server);
    }
  });
});

describe('A client that joins a shared observation later: what the proxy stored ages (RFC 7641 §3.3.1, RFC 7252 §5.7.1)', function () {
  this.timeout(30000);
  let port: number;
  let material: GroupMaterial;
  let lamps: GroupOscoreLamp[];
  let rig: OscoreGroupProxy;
  /** a proxy that admits clients without the client-proxy layer: what it sends a client shows its outer Max-Age */
  let plain: OscoreGroupProxy;
  const clock = new FakeClock();
  const members: Record<string, GroupContext> = {};
  const uri = () => `coap://${GROUP_V4}:${port}/light`;

  before(async function () {
    port = await freeGroupPort();
    material = { ...groupMaterial(['25', '26', ...serverIds(3)]), deterministicClient: { senderId: Buffer.from(DET_ID, 'hex'), innerObserve: true } };
    lamps = await startGroupOscoreLamps(3, { groupPort: port, material, observable: true, firstHost: 9 });
    for (const id of ['25', '26']) members[id] = memberContext(material, id);
    // the proxies' time is the test's: their stored notifications age only when the test says so
    rig = await openOscoreGroupProxy({ clock });
    plain = await openOscoreGroupProxy({ clock, allow: [{ address: '127.0.0.1' }], oscore: undefined });
  });

  after(async function () {
    await rig?.close();
    await plain?.close();
    await stopAll(lamps.map((l) => l.server));
  });

  const observe = (member: GroupContext) => observeThrough(rig.client, rig.listen.transport.address(), uri(), member, rig.alice.client);
  const deregistered = () => waitFor(() => lamps.every((l) => l.server.observerCount('/light') === 0), 'the upstream deregistration');

  it('the proxy registers again upstream, and the late client gets every server\'s current state', async function () {
    const a = observe(members['25']);
    try {
      await waitFor(() => a.heard.length >= 3, 'the first observer\'s three notifications');
      assert.equal(rig.proxy.sharedObservationCount, 1);
      // every stored notification is past its Max-Age now
      clock.advance(24 * 3600 * 1000);
      const sent = rig.upstream.transport.counters.sent;
      const b = observe(members['26']);
      try {
        await waitFor(() => b.heard.length >= 3, 'the current state of each server, for the late client');
        assert.equal(rig.upstream.transport.counters.sent, sent + 1, 'one registration again, on the shared token');
        assert.deepEqual(new Set(b.heard.map((r) => r.origin.oscore?.kid)), new Set(lamps.map((l) => l.kid)), 'verified and attributed by the late client');
        assert.equal(rig.proxy.sharedObservationCount, 1, 'still one upstream observation');
        assert.deepEqual(lamps.map((l) => l.server.observerCount('/light')), [1, 1, 1]);
      } finally {
        b.ex.cancel();
      }
    } finally {
      a.ex.cancel();
    }
    await deregistered();
  });

  it('a client that joins while the stored notifications are fresh gets each with only the Max-Age left: the server\'s less the time stored, in whole seconds', async function () {
    // the outer Max-Age of every datagram the client gets, by the token of its exchange
    const maxAges = new Map<string, number[]>();
    const onDatagram = (dg: Datagram) => {
      const m = decode(dg.data);
      const v = getOption(m, OPT.MAX_AGE);
      const token = m.token.toString('hex');
      if (v !== undefined) maxAges.set(token, [...(maxAges.get(token) ?? []), decodeUint(v)]);
    };
    plain.client.transport.on('datagram', onDatagram);
    const a = observeThrough(plain.client, plain.listen.transport.address(), uri(), members['25']);
    try {
      await waitFor(() => a.heard.length >= 3, 'the first observer\'s three notifications');
      clock.advance(17_400);
      const sent = plain.upstream.transport.counters.sent;
      const b = observeThrough(plain.client, plain.listen.transport.address(), uri(), members['26']);
      try {
        await waitFor(() => b.heard.length >= 3, 'the stored notifications, replayed to the late client');
        assert.equal(plain.upstream.transport.counters.sent, sent, 'served from what the proxy stored: nothing went upstream');
        assert.deepEqual(new Set(b.heard.map((r) => r.origin.oscore?.kid)), new Set(lamps.map((l) => l.kid)), 'verified and attributed by the late client');
        // cacheable-oscore-02 §3.4.4 step 9: the servers' outer Max-Age (the default 60 s here), as relayed live
        assert.deepEqual(maxAges.get(a.ex.token.toString('hex')), [60, 60, 60]);
        assert.deepEqual(maxAges.get(b.ex.token.toString('hex')), [42, 42, 42], '60 s less the 17.4 s they were stored, rounded down');
      } finally {
        b.ex.cancel();
      }
    } finally {
      a.ex.cancel();
      plain.client.transport.off('datagram', onDatagram);
    }
    await deregistered();
  });
});
