// An observer of a Deterministic Request proves its address with Echo before a server registers it
// (draft-ietf-core-cacheable-oscore §3.1 keeps the Outer Echo for this; RFC 9175 §2.4 item 3), on real sockets and
// loopback multicast with 3 Group OSCORE servers (127.0.0.12-14): a registration replayed from an address that never
// asked (a raw socket on 127.0.0.30 stands for the spoofed source) registers nothing and gets only an unprotected
// 4.01 + Echo, never a notification; our group client answers the challenge and observes as before.

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { decode, encode } from '../../src/coap/codec';
import { createMessage, getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupClient, GroupResponse } from '../../src/group/group-client';
import { MAX_ECHO_ANSWERS } from '../../src/messaging/echo-verifier';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupContext, protectRequest } from '../../src/oscore';
import { requestViaProxy } from '../../src/proxy/proxy-client';
import dgram from 'node:dgram';
import { GroupOscoreLamp, OscoreGroupProxy, endpointOn, groupMaterial, memberContext, openOscoreGroupProxy, serverIds, startGroupOscoreLamps } from '../support/group-oscore';
import { GROUP_V4, RawProbe, freeGroupPort, rawProbe, stopAll } from '../support/lamps';
import { waitFor } from '../support/wait';

describe('Observers of a Deterministic Request prove their address with Echo before they are registered (draft-ietf-core-cacheable-oscore §3.1, RFC 9175 §2.4)', function () {
  this.timeout(30000);
  let port: number;
  let lamps: GroupOscoreLamp[];
  let member: GroupContext;
  let victim: RawProbe;
  let client: CoapEndpoint;
  const light = [{ number: OPT.URI_PATH, value: Buffer.from('light') }];
  const observers = () => lamps.map((l) => l.server.observerCount('/light'));
  /** Our group client observes /light with the Deterministic Request; every response lands in `heard`. */
  const observe = (ep: CoapEndpoint) => {
    const ex = new GroupClient(ep).request({ uri: `coap://${GROUP_V4}:${port}/light`, timeout: 5000, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }], oscore: { context: member.deterministicRequests() } });
    const heard: GroupResponse[] = [];
    ex.on('response', (r: GroupResponse) => heard.push(r));
    return { ex, heard };
  };
  /** Every lamp turns off and notifies; resolves once `heard` holds a registration answer and a notification of each. */
  const changeAll = async (heard: GroupResponse[]) => {
    for (const l of lamps) {
      l.on = false;
      l.server.notify('/light');
    }
    await waitFor(() => heard.length >= 6, 'a notification from each server');
  };
  const challenges = () => lamps.map((l) => l.server.counters.echoChallenges);

  before(async function () {
    port = await freeGroupPort();
    const material = { ...groupMaterial(['25', ...serverIds(3)]), deterministicClient: { senderId: Buffer.from('dc', 'hex'), innerObserve: true } };
    lamps = await startGroupOscoreLamps(3, { groupPort: port, material, observable: true, firstHost: 12 });
    member = memberContext(material, '25');
    victim = await rawProbe('127.0.0.30', { multicast: true });
    client = await endpointOn('127.0.0.1');
  });

  after(async function () {
    await stopAll(client, victim, lamps.map((l) => l.server));
  });

  it('a registration replayed from an unverified address registers nothing: each server answers it with an unprotected 4.01 + Echo, smaller than the request, and no notification ever goes there', async function () {
    // the registration as an eavesdropper saw it on the wire (Inner and Outer Observe 0, §3.1), sent again from the
    // victim's address: once to the group, once to the first server alone
    const reg = protectRequest(member.deterministicRequests(), { code: CODES.GET, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, ...light], payload: Buffer.alloc(0) });
    const token = Buffer.from('5eed0001', 'hex');
    const bytes = encode(createMessage({ type: 'NON', token, messageId: 0x1234, ...reg.message }));
    victim.send(bytes, { address: GROUP_V4, port });
    victim.send(encode(createMessage({ type: 'NON', token, messageId: 0x1235, ...reg.message })), { address: lamps[0].address, port: lamps[0].server.address().port });
    await waitFor(() => victim.replies.length >= 4, 'an answer to each replay');
    for (const d of victim.replies) {
      const m = decode(d);
      assert.equal(m.code, CODES.UNAUTHORIZED);
      assert.equal(getOption(m, OPT.OSCORE), undefined, 'the Outer Echo of §3.1: unprotected');
      assert.equal(getOption(m, OPT.ECHO)?.length, 12);
      assert.equal(getOption(m, OPT.OBSERVE), undefined);
      assert.ok(m.token.equals(token));
      assert.ok(d.length < bytes.length, `no amplification: ${d.length} bytes for ${bytes.length}`);
    }
    assert.deepEqual(challenges(), [2, 1, 1]);
    assert.deepEqual(observers(), [0, 0, 0], 'nothing registered');
    assert.deepEqual(lamps.map((l) => l.seen.length), [0, 0, 0], 'the resource handler never ran');

    // an Echo value issued to another address proves nothing for this one
    const other = lamps[0];
    const elsewhere = other.server['observerEcho']!.challenge({ address: '127.0.0.1', port: 5683 });
    victim.send(encode(createMessage({ type: 'NON', token, messageId: 0x1236, ...reg.message, options: [...reg.message.options, { number: OPT.ECHO, value: elsewhere }].sort((a, b) => a.number - b.number) })), { address: other.address, port: other.server.address().port });
    await waitFor(() => victim.replies.length >= 5, 'the answer to the replay with a foreign Echo');
    assert.equal(decode(victim.replies[4]).code, CODES.UNAUTHORIZED);
    assert.deepEqual(observers(), [0, 0, 0], 'still nothing registered');

    // a verified observer (our group client) registers and gets a change; the victim's address gets nothing of it
    const { ex, heard } = observe(client);
    try {
      await waitFor(() => heard.length >= 3, 'the verified observer\'s registrations answered');
      await changeAll(heard);
    } finally {
      ex.cancel();
      for (const l of lamps) l.on = undefined;
    }
    assert.equal(victim.replies.length, 5, 'only the challenges ever went to the victim');
    assert.deepEqual(lamps.map((l) => l.server.takeObservers('/light').map((o) => o.remote.address)), [['127.0.0.1'], ['127.0.0.1'], ['127.0.0.1']], 'only the verified observer was registered');
  });

  it('our group client answers each server\'s challenge with the Echo, to that server alone on the same token, and receives every notification, verified and attributed', async function () {
    const fresh = await endpointOn('127.0.0.1');
    const before = challenges();
    const { ex, heard } = observe(fresh);
    try {
      await waitFor(() => heard.length >= 3, 'each server\'s first notification');
      assert.deepEqual(challenges().map((n, i) => n - before[i]), [1, 1, 1], 'each server challenged the new address once');
      assert.deepEqual(observers(), [1, 1, 1]);
      await changeAll(heard);
    } finally {
      ex.cancel();
      for (const l of lamps) {
        l.on = undefined;
        l.server.takeObservers('/light');
      }
      await fresh.close();
    }
    const summary = await ex.summary;
    assert.deepEqual(summary.errors, [], 'no response refused: the challenges were answered, not delivered');
    assert.deepEqual(heard.map((r) => r.origin.oscore?.kid).sort(), [...lamps.map((l) => l.kid), ...lamps.map((l) => l.kid)].sort());
    assert.deepEqual(heard.slice(3).map((r) => JSON.parse(r.message.payload.toString()).on), [false, false, false]);
  });

  it('forged challenges on the exchange\'s token from many sources get at most MAX_ECHO_ANSWERS repeats in all, and an Echo of 0 or 41 bytes gets none (RFC 9175 §2.2.1)', async function () {
    const fresh = await endpointOn('127.0.0.1');
    const forgers: RawProbe[] = [];
    const { ex, heard } = observe(fresh);
    try {
      await waitFor(() => heard.length >= 3, 'each server\'s first notification');
      assert.deepEqual(ex.echoChallenges, { repeats: 3, refused: 0 }, 'the three real challenges answered');
      // anyone who saw the token: a ~15-byte unprotected 4.01 + Echo from a spoofed source (127.0.0.40-80 here)
      for (let h = 40; h <= 80; h++) forgers.push(await rawProbe(`127.0.0.${h}`));
      const to = fresh.transport.address();
      let mid = 0x4000;
      const forge = (p: RawProbe, echo: Buffer) =>
        p.send(encode(createMessage({ type: 'NON', code: CODES.UNAUTHORIZED, token: ex.token, messageId: mid++, options: [{ number: OPT.ECHO, value: echo }], payload: Buffer.alloc(0) })), to);
      forge(forgers[0], Buffer.alloc(0));
      forge(forgers[1], Buffer.alloc(41, 7));
      await waitFor(() => ex.echoChallenges.refused >= 2, 'both malformed challenges handled');
      assert.deepEqual(ex.echoChallenges, { repeats: 3, refused: 2 }, 'an Echo of 0 or 41 bytes is refused');
      for (const p of forgers) for (let i = 1; i <= 3; i++) forge(p, Buffer.from([i]));
      const total = forgers.length * 3;
      await waitFor(() => ex.echoChallenges.repeats + ex.echoChallenges.refused >= 3 + 2 + total, 'every forged challenge handled');
      assert.equal(ex.echoChallenges.repeats, MAX_ECHO_ANSWERS, 'the cap, real challenges included');
      // what reached the spoofed sources: distinct repeats (a CON may be retransmitted, with the same Message ID)
      const distinct = () => new Set(forgers.flatMap((p, i) => p.replies.map((d) => `${i}|${decode(d).messageId}`))).size;
      await waitFor(() => distinct() >= MAX_ECHO_ANSWERS - 3, 'the repeats sent to forged sources');
      for (const p of forgers) {
        for (const d of p.replies) {
          const m = decode(d);
          assert.equal(m.type, 'CON');
          assert.ok(m.token.equals(ex.token));
          assert.equal(getOption(m, OPT.ECHO)?.length, 1, 'only a 1-byte Echo (a valid one) was ever answered');
        }
      }
      assert.equal(new Set(forgers.flatMap((p) => (p.replies.length ? [p] : []))).size, MAX_ECHO_ANSWERS - 3, 'one repeat per answered source');
      assert.equal(distinct(), MAX_ECHO_ANSWERS - 3, `${total} forged challenges, ${MAX_ECHO_ANSWERS - 3} repeats`);
    } finally {
      ex.cancel();
      for (const l of lamps) l.server.takeObservers('/light');
      // the repeats to the forged sources are CONs nobody acknowledges: closing ends their retransmission
      await fresh.close();
      await stopAll(...forgers);
    }
  });
});

describe('The proxy\'s shared observation answers a server\'s Echo challenge itself and never relays one (draft-ietf-core-cacheable-oscore §3.1, RFC 9175 §2.4)', function () {
  this.timeout(30000);
  let port: number;
  let lamps: GroupOscoreLamp[];
  let member: GroupContext;
  let rig: OscoreGroupProxy;

  before(async function () {
    port = await freeGroupPort();
    const material = { ...groupMaterial(['25', ...serverIds(3)]), deterministicClient: { senderId: Buffer.from('dc', 'hex'), innerObserve: true } };
    lamps = await startGroupOscoreLamps(3, { groupPort: port, material, observable: true, firstHost: 15 });
    member = memberContext(material, '25');
    rig = await openOscoreGroupProxy();
  });

  after(async function () {
    await rig?.close();
    await stopAll(lamps.map((l) => l.server));
  });

  it('a second challenge from the same server and forged ones over the cap are dropped and counted: the client sees no 4.01, and that server\'s latest notification stays', async function () {
    const ex = requestViaProxy(rig.client, {
      proxy: rig.listen.transport.address(),
      uri: `coap://${GROUP_V4}:${port}/light`,
      multicastTimeout: 1,
      timeout: 20000,
      options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }],
      oscore: { proxy: rig.alice.client, endToEnd: { context: member.deterministicRequests() } },
    });
    const heard: GroupResponse[] = [];
    ex.on('response', (r: GroupResponse) => heard.push(r));
    // a socket sharing the first server's address and port (it binds with SO_REUSEADDR), so that its datagrams come
    // from that server as far as the proxy can tell
    const lamp = lamps[0];
    const twin = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    twin.on('error', () => undefined);
    try {
      await waitFor(() => heard.length >= 3, 'each server\'s first notification through the proxy');
      assert.deepEqual(lamps.map((l) => l.server.counters.echoChallenges), [1, 1, 1]);
      const hub = rig.proxy['sharedHub']!;
      const [shared] = [...hub['byKey'].values()];
      assert.deepEqual(hub.echoChallenges(shared.key), { repeats: 3, refused: 0 });
      await new Promise<void>((r) => twin.bind(lamp.server.address().port, lamp.address, () => r()));
      const up = rig.upstream.transport.address();
      const challenge = (echo: Buffer, messageId: number) => encode(createMessage({ type: 'NON', code: CODES.UNAUTHORIZED, token: shared.request.token, messageId, options: [{ number: OPT.ECHO, value: echo }], payload: Buffer.alloc(0) }));
      // the same server challenges a second time within the registration
      twin.send(challenge(Buffer.alloc(12, 1), 0x7001), up.port, up.address);
      await waitFor(() => hub.echoChallenges(shared.key)!.refused >= 1, 'the second challenge handled');
      assert.ok(shared.latest.has(`${lamp.address}|${lamp.server.address().port}`), 'that server\'s latest notification is kept');
      // and forged ones from many other sources, more than the cap
      const forgers: RawProbe[] = [];
      try {
        for (let h = 40; h <= 59; h++) forgers.push(await rawProbe(`127.0.0.${h}`));
        forgers.forEach((p, i) => p.send(challenge(Buffer.from([i + 1]), 0x7100 + i), up));
        await waitFor(() => hub.echoChallenges(shared.key)!.repeats + hub.echoChallenges(shared.key)!.refused >= 3 + 1 + forgers.length, 'every forged challenge handled');
        assert.deepEqual(hub.echoChallenges(shared.key), { repeats: MAX_ECHO_ANSWERS, refused: 1 + forgers.length - (MAX_ECHO_ANSWERS - 3) });
      } finally {
        // the repeats' retransmissions towards the forgers end when the proxy closes (after)
        await stopAll(...forgers);
      }
      assert.equal(shared.latest.size, 3, 'every server\'s latest notification is kept');
    } finally {
      twin.close();
      ex.cancel();
    }
    // a relayed 4.01 would reach the client and fail its end-to-end verification there
    const summary = await ex.summary;
    assert.deepEqual(summary.errors, [], 'no 4.01 reached the client');
    assert.ok(heard.every((r) => r.message.code !== CODES.UNAUTHORIZED), 'the client heard no challenge');
    for (const l of lamps) l.server.takeObservers('/light');
  });
});
