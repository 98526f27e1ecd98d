// Group-ETag revalidation of a group exchange protected end to end (groupcomm-proxy-07 §7.3, §7.4), on real sockets
// and loopback multicast: a member of a Group OSCORE group sends a Deterministic Request (draft-ietf-core-cacheable-
// oscore-02) through the caching group proxy, with the client-proxy OSCORE layer outside (oscore-capable-proxies-07
// §2.3), to 5 servers (127.0.0.2-6). The client keeps the verified responses with the Group-ETag the proxy gave them,
// offers it on the next identical request, and the proxy's single 2.03 makes it deliver the stored, verified
// responses again. The proxy and the client share a FakeClock (Max-Age, T', T), so the tests do not wait on time.

import assert from 'node:assert/strict';
import { decode } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { CoapMessage, getOption, getOptions } from '../../src/coap/message';
import { OPT, decodeUint, encodeUint, optionNumber } from '../../src/coap/options';
import { ContextRegistry, GroupContext } from '../../src/oscore';
import { PROXY_TO_CLIENT_VIEW, escalatedOptions, proxyInboundClassE, protectResponseLayers, removeRequestLayers } from '../../src/oscore/nested';
import { GroupEtagStore } from '../../src/proxy/group-etag-store';
import { ProxiedGroupExchange, RevalidatedResponse, requestViaProxy } from '../../src/proxy/proxy-client';
import { ProxyEvent } from '../../src/proxy/group-proxy';
import type { Datagram } from '../../src/transport/udp-transport';
import type { GroupResponse } from '../../src/group/group-client';
import { closeChecked } from '../support/endpoints';
import { FakeClock } from '../support/fake-clock';
import { GroupOscoreLamp, GroupMaterial, OscoreGroupProxy, endpointOn, groupMaterial, memberContext, openOscoreGroupProxy, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { GROUP_V4, freeGroupPort, stopAll } from '../support/lamps';
import { waitFor } from '../support/wait';

const GETAG = optionNumber('Group-ETag');
const T_PRIME = 1; // s
const T = 1500; // ms

describe('Group-ETag revalidation of a protected group exchange through the caching proxy (groupcomm-proxy-07 §7.3, §7.4)', function () {
  this.timeout(30000);
  let port: number;
  let material: GroupMaterial;
  let lamps: GroupOscoreLamp[];
  /** each lamp's brightness: the representation a member update changes */
  const levels = [10, 20, 30, 40, 50];
  let memberA: GroupContext;
  let memberB: GroupContext;
  let rig: OscoreGroupProxy;
  let clock: FakeClock;
  const events: ProxyEvent[] = [];
  const proxyAddr = () => rig.listen.transport.address();
  const group = () => `coap://${GROUP_V4}:${port}/level`;
  const seenByLamps = () => lamps.reduce((n, l) => n + l.seen.length + l.refused.length, 0);

  before(async function () {
    port = await freeGroupPort();
    material = { ...groupMaterial(['25', '26', ...serverIds(5)]), deterministicClient: { senderId: Buffer.from('dc', 'hex') } };
    lamps = await startGroupOscoreLamps(5, { groupPort: port, material });
    lamps.forEach((lamp, i) =>
      lamp.server.addResource('/level', (req) => {
        lamp.seen.push({ code: req.message.code, path: req.path });
        return { code: CODES.CONTENT, contentFormat: 50, payload: JSON.stringify({ name: lamp.name, level: levels[i] }) };
      }),
    );
    memberA = memberContext(material, '25');
    memberB = memberContext(material, '26');
    clock = new FakeClock();
    rig = await openOscoreGroupProxy({ cache: true, clock, members: { [`${GROUP_V4}:${port}`]: lamps.map((l) => `${l.address}:${l.server.address().port}`) } });
    rig.proxy.on('event', (e: ProxyEvent) => events.push(e));
  });

  after(async function () {
    await rig?.close();
    await stopAll(lamps.map((l) => l.server));
  });

  const viaProxy = (member: GroupContext, store?: GroupEtagStore) =>
    requestViaProxy(rig.client, { proxy: proxyAddr(), uri: group(), multicastTimeout: T_PRIME, timeout: T, clock, confirmable: false, groupEtag: store, oscore: { proxy: rig.alice.client, endToEnd: { context: member.deterministicRequests() } } });

  /** Wait for `n` responses, then let T' (the proxy) and T (the client) pass on the shared clock. */
  async function collect(ex: ProxiedGroupExchange, n: number) {
    await waitFor(() => ex.responses.length >= n, `${n} responses`);
    clock.advance(T);
    return ex.summary;
  }

  /** Every server once, verified with its own credential (RFC 10021 §8.4), with its current level. */
  function assertVerifiedSet(responses: readonly GroupResponse[], expectLevels = levels): void {
    assert.equal(responses.length, 5);
    assert.deepEqual(new Set(responses.map((r) => r.origin.address)), new Set(lamps.map((l) => l.address)));
    for (const r of responses) {
      const i = lamps.findIndex((l) => l.address === r.origin.address);
      assert.deepEqual(r.origin.oscore, { kid: lamps[i].kid, mode: 'group' }, 'attributed to the member that verified it');
      assert.equal(codeToString(r.message.code), '2.05');
      assert.deepEqual(JSON.parse(r.message.payload.toString()), { name: lamps[i].name, level: expectLevels[i] });
      assert.equal(getOption(r.message, OPT.OSCORE), undefined);
    }
  }

  const tagOf = (m: CoapMessage) => getOptions(m, GETAG).map((t) => t.toString('hex'));

  /** Datagrams the client's socket receives from the proxy. */
  function fromProxy(): { list: CoapMessage[]; stop(): void } {
    const list: CoapMessage[] = [];
    const on = (dg: Datagram) => {
      if (dg.remote.port === proxyAddr().port) list.push(decode(dg.data));
    };
    rig.client.transport.on('datagram', on);
    return { list, stop: () => rig.client.transport.off('datagram', on) };
  }

  it('a miss carries no Group-ETag (J is not complete), a hit carries one for the set, and the same request with it is answered by one 2.03 from the proxy, nothing to the group, every server\'s verified response delivered again', async function () {
    rig.proxy.cache!.clear();
    const store = new GroupEtagStore({ clock });
    const lampsBefore = seenByLamps();

    // 1. a miss: fanned out; the proxy's J was not complete when it forwarded, so no Group-ETag (§7.3)
    const miss = viaProxy(memberA, store);
    const s1 = await collect(miss, 5);
    assert.deepEqual(s1.errors, []);
    assertVerifiedSet(miss.responses);
    assert.ok(miss.responses.every((r) => tagOf(r.message).length === 0), 'no Group-ETag before J is complete');
    assert.equal(store.size, 0, 'nothing to revalidate: no Group-ETag');
    assert.equal(seenByLamps() - lampsBefore, 5);

    // 2. a hit: J is complete, the cached responses carry its one Group-ETag; the client keeps the verified set
    const hit = viaProxy(memberA, store);
    const s2 = await collect(hit, 5);
    assert.deepEqual(s2.errors, []);
    assertVerifiedSet(hit.responses);
    const tag = tagOf(hit.responses[0].message);
    assert.equal(tag.length, 1);
    assert.ok(hit.responses.every((r) => tagOf(r.message)[0] === tag[0]));
    assert.ok(hit.responses.every((r) => !(r as Partial<RevalidatedResponse>).revalidated));
    assert.equal(store.tagFor(hit.groupEtagKey!)?.toString('hex'), tag[0], 'the set is stored with its Group-ETag');
    assert.equal(store.peek(hit.groupEtagKey!)!.responses.length, 5);

    // 3. the same request offers the Group-ETag: one 2.03 from the proxy, nothing to the group, the stored set again
    clock.advance(10_000);
    const upSent = rig.upstream.transport.counters.sent;
    const lampsSeen = seenByLamps();
    const wire = fromProxy();
    const ev0 = events.length;
    const again = viaProxy(memberA, store);
    const s3 = await again.summary; // the single 2.03 ends the exchange: no wait for T
    wire.stop();
    assert.deepEqual(s3.errors, []);
    assert.equal(wire.list.length, 1, 'one datagram from the proxy');
    assert.deepEqual(events.slice(ev0).filter((e) => e.kind === 'response').map((e) => e.code), ['2.03'], 'the proxy sent one 2.03 (Valid)');
    assert.equal(rig.upstream.transport.counters.sent, upSent, 'no datagram to the group');
    assert.equal(seenByLamps(), lampsSeen, 'no server saw a request');
    assertVerifiedSet(again.responses);
    for (const r of again.responses) {
      assert.equal((r as RevalidatedResponse).revalidated, true);
      assert.equal(r.remote.port, proxyAddr().port, 'the datagram came from the proxy');
      assert.deepEqual(tagOf(r.message), tag);
      // RFC 7252 §5.9.1.3: refreshed with the 2.03's Max-Age, the least residual lifetime in J (60 - 1.5 - 1.5 - 10 s)
      assert.equal(decodeUint(getOption(r.message, OPT.MAX_AGE)!), 47);
    }
    assert.deepEqual(s3.responders.map((o) => o.oscore?.kid).sort(), lamps.map((l) => l.kid).sort());
    assert.ok(store.isFresh(again.groupEtagKey!), 'the stored set is fresh again');
  });

  it('a member update (J changes at the proxy): the old Group-ETag gets the new 2.05s with a new Group-ETag, which then revalidates', async function () {
    rig.proxy.cache!.clear();
    const store = new GroupEtagStore({ clock });
    await collect(viaProxy(memberA, store), 5); // miss
    const first = viaProxy(memberA, store);
    await collect(first, 5); // hit: tagged
    const oldTag = store.tagFor(first.groupEtagKey!)!;
    assert.ok(oldTag);

    // The lamps change; the proxy's entries go stale (Max-Age 60 s) and another member's request refreshes them.
    for (let i = 0; i < levels.length; i++) levels[i] += 1;
    clock.advance(61_000);
    const lampsBefore = seenByLamps();
    const b = viaProxy(memberB);
    assert.deepEqual((await collect(b, 5)).errors, []);
    assert.equal(seenByLamps() - lampsBefore, 5, 'the refresh went to the group');

    // A offers its old Group-ETag: J is complete with another tag, so the full responses come, with the new one
    const upSent = rig.upstream.transport.counters.sent;
    const changed = viaProxy(memberA, store);
    const s = await collect(changed, 5);
    assert.deepEqual(s.errors, []);
    assertVerifiedSet(changed.responses);
    const newTag = tagOf(changed.responses[0].message);
    assert.equal(newTag.length, 1);
    assert.notEqual(newTag[0], oldTag.toString('hex'), 'a new Group-ETag');
    assert.ok(changed.responses.every((r) => !(r as Partial<RevalidatedResponse>).revalidated), 'new 2.05s, not the stored set');
    assert.equal(rig.upstream.transport.counters.sent, upSent, 'served from the cache');
    assert.equal(store.tagFor(changed.groupEtagKey!)?.toString('hex'), newTag[0]);

    // and the new Group-ETag revalidates the new set
    const again = viaProxy(memberA, store);
    const s2 = await again.summary;
    assert.deepEqual(s2.errors, []);
    assertVerifiedSet(again.responses);
    assert.ok(again.responses.every((r) => (r as RevalidatedResponse).revalidated));
  });

  it('a 2.03 with a Group-ETag the client did not offer, a 2.03 when nothing is stored, and an unprotected 2.03 are refused and deliver nothing', async function () {
    // A proxy that answers every request with a 2.03 protected in its layer for the client (or, for `plain`, with
    // none), carrying the Group-ETag the test chooses.
    const fake = await endpointOn();
    const registry = new ContextRegistry().add(rig.alice.peer);
    let answer: { tag: Buffer; plain?: boolean } = { tag: Buffer.from('0badc0de', 'hex') };
    fake.setRequestHandler((req, ctx) => {
      const r = removeRequestLayers(req.message, { contexts: registry, source: req.remote, maxLayers: 1, proxyRelated: (_m, removed) => removed.length > 0, classE: () => proxyInboundClassE() });
      const valid = { code: CODES.VALID, options: [{ number: OPT.MAX_AGE, value: encodeUint(30) }, { number: GETAG, value: answer.tag }], payload: Buffer.alloc(0) };
      const out = answer.plain ? valid : protectResponseLayers(r.layers, valid, { classE: (_d, m) => escalatedOptions(m.options ?? [], PROXY_TO_CLIENT_VIEW) });
      ctx.respond({ code: out.code, options: out.options ?? [], payload: out.payload ?? Buffer.alloc(0) });
    });
    try {
      // the real proxy gives the client a tagged set first; the client holds it for the fake proxy too (the store
      // is keyed per proxy: a Group-ETag is that proxy's validator)
      rig.proxy.cache!.clear();
      const store = new GroupEtagStore({ clock });
      await collect(viaProxy(memberA, store), 5);
      const hit = viaProxy(memberA, store);
      await collect(hit, 5);
      const held = store.tagFor(hit.groupEtagKey!)!;
      assert.ok(held);
      const toFake = (s?: GroupEtagStore) =>
        requestViaProxy(rig.client, { proxy: fake.transport.address(), uri: group(), multicastTimeout: T_PRIME, timeout: T, clock, groupEtag: s, oscore: { proxy: rig.alice.client, endToEnd: { context: memberA.deterministicRequests() } } });
      const key = new ProxiedGroupExchange(rig.client, { proxy: fake.transport.address(), uri: group(), multicastTimeout: T_PRIME, timeout: T, groupEtag: store, oscore: { proxy: rig.alice.client, endToEnd: { context: memberA.deterministicRequests() } } }).groupEtagKey!;
      assert.notEqual(key, hit.groupEtagKey);
      assert.ok(store.put(key, held, hit.responses));
      const end = async (ex: ProxiedGroupExchange) => {
        const errs: Error[] = [];
        ex.on('error', (e: Error) => errs.push(e));
        const got: GroupResponse[] = [];
        ex.on('response', (r: GroupResponse) => got.push(r));
        await waitFor(() => errs.length > 0, 'the refusal');
        clock.advance(T);
        const s = await ex.summary;
        return { s, got, errs };
      };

      // a Group-ETag it did not offer
      const unmatched = await end(toFake(store));
      assert.deepEqual(unmatched.got, [], 'nothing delivered');
      assert.equal(unmatched.s.responses, 0);
      assert.match(unmatched.errs[0].message, /2\.03 \(Valid\) from the proxy with Group-ETag 0badc0de, not the one offered/);
      assert.equal(unmatched.s.errors[0].code, 'group-etag');
      assert.equal(store.tagFor(key), undefined, 'the set is forgotten: the next request fetches full responses');

      // nothing stored: no Group-ETag offered, yet a 2.03 comes (here with the tag the client once held)
      answer = { tag: held };
      const nothing = await end(toFake(store));
      assert.deepEqual(nothing.got, []);
      assert.match(nothing.errs[0].message, /offered none \(nothing stored\)/);

      // an unprotected 2.03 where the proxy's layer is expected: dropped, never taken for a validation
      assert.ok(store.put(key, held, hit.responses));
      answer = { tag: held, plain: true };
      const plain = await end(toFake(store));
      assert.deepEqual(plain.got, []);
      assert.match(plain.errs[0].message, /unprotected 2\.03 from the proxy dropped/);
      assert.ok(store.tagFor(key)?.equals(held), 'a forged datagram does not make the client forget its set');

      // and the matching 2.03, protected by the proxy: the stored set comes back, verified as it was stored
      answer = { tag: held };
      const ok = toFake(store);
      const s = await ok.summary;
      assert.deepEqual(s.errors, []);
      assertVerifiedSet(ok.responses);
      assert.ok(ok.responses.every((r) => (r as RevalidatedResponse).revalidated && decodeUint(getOption(r.message, OPT.MAX_AGE)!) === 30));
    } finally {
      await closeChecked(fake);
    }
  });

  it('refuses to revalidate a request protected end to end without a layer for the proxy (groupcomm-proxy-07 §10.3), and unsafe or observing requests', function () {
    const store = new GroupEtagStore({ clock });
    const base = { proxy: proxyAddr(), uri: group(), multicastTimeout: T_PRIME, timeout: T, clock, groupEtag: store };
    assert.throws(() => new ProxiedGroupExchange(rig.client, { ...base, oscore: { endToEnd: { context: memberA.deterministicRequests() } } }), /needs an OSCORE layer with the proxy/);
    assert.throws(() => new ProxiedGroupExchange(rig.client, { ...base, method: CODES.POST }), /needs GET or FETCH/);
    assert.throws(() => new ProxiedGroupExchange(rig.client, { ...base, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }] }), /Observe/);
  });
});
