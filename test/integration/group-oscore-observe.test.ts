// Multicast notifications protected with Group OSCORE (observe-multicast-notifications-15 §9; RFC 10021) on real
// loopback multicast: a server on 127.0.0.51 whose group observation protects the phantom request in group mode and
// every notification bound to it; observers that register with protected requests, verify ph_req without replay
// check and each notification through it. A sniffer on the group sees only protected notifications; a replayed
// notification, one forged by another member, and a tampered ph_req are refused; a late observer verifies what it
// gets through the phantom-request binding alone. Then the same through a proxy with end-to-end security
// (multicast-notifications-proxy-02 §4): the protected informative response crosses the proxy unread, the client
// hands the proxy the ticket request, and the proxy relays protected notifications it cannot read.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { InformativeResponse, decodeInformativeResponse } from '../../src/cbor/informative-response';
import { decode, decodeCodeOptionsPayload, encode } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { CoapMessage, getOption, sortOptions } from '../../src/coap/message';
import { OPT, encodeUint } from '../../src/coap/options';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupObservation } from '../../src/observe/group-observation';
import { groupObservationSecurity, multicastObserverSecurity } from '../../src/observe/group-oscore';
import { MulticastObserver, Notification } from '../../src/observe/multicast-observer';
import { RelayedNotification, TicketClient } from '../../src/observe/ticket-request';
import { GroupContext, OscoreError, ServerBinding, decodeOscoreOption, protectResponse } from '../../src/oscore';
import { oscoreServerTransform } from '../../src/oscore/nested';
import { TicketObserver } from '../../src/observe/ticket-observer';
import { GroupProxy } from '../../src/proxy/group-proxy';
import { FakeClock } from '../support/fake-clock';
import { answeringEcho } from '../../src/proxy/proxy-client';
import { UdpTransport } from '../../src/transport/udp-transport';
import { GroupMaterial, groupMaterial, memberContext } from '../support/group-oscore';
import { freeGroupPort, stopAll } from '../support/lamps';
import { waitForEvent } from '../support/wait';

const NG = '239.255.0.93'; // a group the server owns (OMN-15 §2)
const SERVER = '5e';
const MEMBERS = ['25', '26', '27', '28', SERVER, '77'];

const endpointOn = async () => new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }), { params: { ACK_TIMEOUT: 300 } });

const text = (m: CoapMessage) => m.payload.toString('utf8');

describe('multicast notifications protected with Group OSCORE (observe-multicast-notifications-15 §9)', function () {
  this.timeout(20000);
  let material: GroupMaterial;
  let server: GroupServer;
  let serverCtx: GroupContext;
  let observation: GroupObservation;
  let ngPort: number;
  let target: string;
  let sniffer: dgram.Socket;
  const onGroup: Buffer[] = [];
  const observers: { ep: CoapEndpoint; obs: MulticastObserver; got: Notification[]; errors: Error[] }[] = [];

  before(async function () {
    material = groupMaterial(MEMBERS);
    ngPort = await freeGroupPort(NG);
    serverCtx = memberContext(material, SERVER);
    server = await GroupServer.open({
      address: '127.0.0.51',
      port: 0,
      groups: [],
      leisure: 0,
      // registrations and every unicast response are protected too (§9)
      requestTransform: oscoreServerTransform({ contexts: serverCtx, maxLayers: 1 }),
    });
    server.endpoint.on('handler-error', () => undefined);
    observation = new GroupObservation({ server, path: '/alarm', group: { address: NG, port: ngPort }, initial: 'calm', contentFormat: 0, minInterval: 0, security: groupObservationSecurity(serverCtx) });
    target = `coap://127.0.0.51:${server.address().port}/alarm`;
    sniffer = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    sniffer.on('message', (m) => onGroup.push(m));
    await new Promise<void>((r) => sniffer.bind(ngPort, NG, () => r()));
    sniffer.addMembership(NG, '127.0.0.1');
  });

  after(async function () {
    for (const o of observers) {
      o.obs.cancel();
      await o.ep.close();
    }
    observation.close();
    await server.close();
    await new Promise<void>((r) => sniffer.close(() => r()));
  });

  async function observer(id: string) {
    const ep = await endpointOn();
    const obs = new MulticastObserver(ep, { uri: target, groupInterface: '127.0.0.1', security: multicastObserverSecurity(memberContext(material, id)) });
    const o = { ep, obs, got: [] as Notification[], errors: [] as Error[] };
    obs.on('notification', (n: Notification) => o.got.push(n));
    obs.on('error', (e: Error) => o.errors.push(e));
    observers.push(o);
    return o;
  }

  it('a protected registration gets the protected informative response; ph_req is a group-mode FETCH by the server; last_notif verifies', async function () {
    const o = await observer('25');
    assert.equal(await o.obs.start(), 'multicast');
    const ir = o.obs.informative!;
    const ph = decodeCodeOptionsPayload(ir.phReq!);
    assert.equal(ph.code, CODES.FETCH);
    const f = decodeOscoreOption(ph.options.find((x) => x.number === OPT.OSCORE)!.value);
    assert.equal(f.group, true);
    assert.equal(f.kid!.toString('hex'), SERVER);
    assert.ok(f.kidContext!.equals(material.gid));
    assert.ok(!ph.options.some((x) => x.number === OPT.URI_PATH), 'the path is inside the ciphertext');
    // last_notif went through the same verification as any notification
    assert.equal(o.got.length, 1);
    assert.equal(o.got[0].via, 'last_notif');
    assert.equal(text(o.got[0].message), 'calm');
    assert.equal(observation.count, 1);
  });

  it('a notification is one protected datagram on the group (no plaintext), verified by the observer', async function () {
    const o = observers[0];
    const before = onGroup.length;
    const got = waitForEvent<Notification>(o.obs, 'notification', (n) => n.via === 'multicast');
    observation.update('ALARM: smoke in hall B');
    const n = await got;
    assert.equal(text(n.message), 'ALARM: smoke in hall B');
    assert.equal(onGroup.length - before, 1);
    const wire = decode(onGroup[onGroup.length - 1]);
    assert.ok(!wire.payload.includes(Buffer.from('smoke')));
    assert.equal(wire.code, CODES.CONTENT, 'outer 2.05 for a notification');
    const f = decodeOscoreOption(getOption(wire, OPT.OSCORE)!);
    assert.equal(f.group, true);
    assert.equal(f.kid!.toString('hex'), SERVER);
    assert.ok(f.piv, 'every notification has its own Partial IV');
    assert.equal(o.obs.counters.rejectedMulticast, 0);
  });

  it('a replayed notification (the captured notification again, new Message ID, from the server\'s own address) is rejected by the OSCORE replay check', async function () {
    const o = observers[0];
    // The same bytes would be dropped as a duplicate by the message layer (RFC 7252 §4.5) before OSCORE sees them;
    // the Message ID is not protected, so an attacker changes it.
    const captured = decode(onGroup[onGroup.length - 1]);
    const count = o.got.length;
    const rejected = waitForEvent<Error>(o.obs, 'error');
    server.endpoint.transport.send(encode({ ...captured, messageId: (captured.messageId + 1000) & 0xffff }), { address: NG, port: ngPort });
    const err = await rejected;
    assert.ok(err instanceof OscoreError);
    assert.equal((err as OscoreError).code, 'ERR_OSCORE_REPLAY');
    assert.equal(o.obs.counters.rejectedMulticast, 1);
    assert.equal(o.got.length, count);
  });

  it('a notification forged by another member (bound to the same phantom request, signed with its own key) is rejected', async function () {
    const o = observers[0];
    const ir = o.obs.informative!;
    // Member 0x77 knows ph_req's kid / Partial IV / kid context from the (multicast-visible) informative response
    // of any client, and protects a notification bound to them with its own key.
    const rogue = memberContext(material, '77');
    const ph = decodeCodeOptionsPayload(ir.phReq!);
    const f = decodeOscoreOption(ph.options.find((x) => x.number === OPT.OSCORE)!.value);
    const peer = rogue.peer(f.kid!, 'group')!; // seals with 0x77's own Sender Context
    const binding = new ServerBinding({ context: peer, kid: f.kid!, piv: f.piv!, nonce: Buffer.alloc(13), kidContext: f.kidContext, observe: true, requestFresh: false });
    const forged = protectResponse(binding, { code: CODES.CONTENT, options: [{ number: OPT.OBSERVE, value: encodeUint(0xffff) }], payload: Buffer.from('all clear') });
    const count = o.got.length;
    const rejected = waitForEvent<Error>(o.obs, 'error');
    server.endpoint.transport.send(encode({ type: 'NON', messageId: 7, token: ir.tpInfo!.token, ...forged }), { address: NG, port: ngPort });
    const err = await rejected;
    assert.match(err.message, /another member/);
    assert.equal(o.got.length, count);
  });

  it('a late observer verifies the latest notification (last_notif) and the next one through the phantom-request binding', async function () {
    observation.update('ALARM: evacuate');
    await waitForEvent<Notification>(observers[0].obs, 'notification', (n) => text(n.message) === 'ALARM: evacuate');
    const late = await observer('26');
    assert.equal(await late.obs.start(), 'multicast');
    assert.equal(late.got.length, 1);
    assert.equal(late.got[0].via, 'last_notif');
    assert.equal(text(late.got[0].message), 'ALARM: evacuate');
    const next = waitForEvent<Notification>(late.obs, 'notification', (n) => n.via === 'multicast');
    observation.update('all clear');
    assert.equal(text((await next).message), 'all clear');
    assert.equal(late.obs.counters.rejectedMulticast, 0);
    assert.equal(observation.count, 2);
  });

  it('an unprotected registration is refused with 4.01; a tampered ph_req does not verify (§9.3.1), the real one verifies again and again (no replay check)', async function () {
    const ep = await endpointOn();
    try {
      const plain = await ep.request({ code: CODES.GET, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: OPT.URI_PATH, value: Buffer.from('alarm') }] }, server.address());
      assert.equal(codeToString(plain.message.code), '4.01');
    } finally {
      await ep.close();
    }
    const sec = multicastObserverSecurity(memberContext(material, '27'));
    const ph = decodeCodeOptionsPayload(observers[0].obs.informative!.phReq!);
    const tampered = Buffer.from(ph.payload);
    tampered[tampered.length - 1] ^= 1;
    assert.throws(() => sec.verifyPhantom({ code: ph.code, options: ph.options, payload: tampered }, server.address()), (e: OscoreError) => e.code === 'ERR_OSCORE_SIGNATURE');
    for (let i = 0; i < 3; i++) sec.verifyPhantom({ code: ph.code, options: ph.options, payload: Buffer.from(ph.payload) }, server.address());
  });

  it('cancellation: the protected multicast 5.03 ends every observation; a sniffer sees no plaintext 5.03', async function () {
    const waits = observers.filter((o) => o.obs.mode === 'multicast').map((o) => waitForEvent(o.obs, 'cancelled'));
    const before = onGroup.length;
    observation.cancel();
    await Promise.all(waits);
    const wire = decode(onGroup[before]);
    assert.notEqual(codeToString(wire.code), '5.03', 'the 5.03 is inside the ciphertext');
    assert.equal(decodeOscoreOption(getOption(wire, OPT.OSCORE)!).group, true);
  });
});

describe('protected multicast notifications through a proxy with end-to-end security (multicast-notifications-proxy-02 §4)', function () {
  this.timeout(20000);
  let material: GroupMaterial;
  let server: GroupServer;
  let observation: GroupObservation;
  let listen: CoapEndpoint;
  let upstream: CoapEndpoint;
  let proxy: GroupProxy;
  let client: CoapEndpoint;
  let target: string;
  let ngPort: number;

  before(async function () {
    material = groupMaterial(MEMBERS);
    ngPort = await freeGroupPort(NG);
    const serverCtx = memberContext(material, SERVER);
    server = await GroupServer.open({ address: '127.0.0.52', port: 0, groups: [], leisure: 0, requestTransform: oscoreServerTransform({ contexts: serverCtx, maxLayers: 1 }) });
    observation = new GroupObservation({ server, path: '/alarm', group: { address: NG, port: ngPort }, initial: 'calm', contentFormat: 0, minInterval: 0, security: groupObservationSecurity(serverCtx) });
    target = `coap://127.0.0.52:${server.address().port}/alarm`;
    listen = await endpointOn();
    upstream = await endpointOn();
    proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }] });
    client = await endpointOn();
  });

  after(async function () {
    await proxy.close();
    observation.close();
    await stopAll(client, listen, upstream, server);
  });

  it('the proxy forwards the protected registration and the protected informative response it cannot read; the ticket request makes it relay protected notifications, which the client verifies', async function () {
    const sec = multicastObserverSecurity(memberContext(material, '28'));
    // OMN-15 §9 / MNP-02 §4: the registration, protected end to end, through the proxy (Proxy-Uri is decomposed:
    // the path travels encrypted, RFC 8613 §4.1.3.3).
    const reg = sec.protectRequest({ type: 'CON', code: CODES.GET, messageId: 0, token: Buffer.alloc(0), options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: OPT.PROXY_URI, value: Buffer.from(target) }], payload: Buffer.alloc(0) });
    // the proxy verifies the client's address with Echo (RFC 9175 §2.4) before it forwards anything for it
    const res = await answeringEcho((echo) => client.request({ code: reg.message.code, options: sortOptions([...reg.message.options, ...echo]), payload: reg.message.payload }, listen.transport.address()));
    assert.equal(codeToString(res.message.code), '2.04', 'what the proxy saw: an OSCORE response, not a 5.03');
    assert.ok(!res.message.payload.includes(Buffer.from('alarm')));
    const inner = reg.responses.verify(res.message);
    assert.equal(codeToString(inner.code), '5.03');
    const ir: InformativeResponse = decodeInformativeResponse(inner.payload);
    const ph = decodeCodeOptionsPayload(ir.phReq!);
    const notifications = sec.verifyPhantom({ code: ph.code, options: ph.options, payload: Buffer.from(ph.payload) }, server.address());
    // The ticket request (MNP-02 §4): ph_req's outer parts, Observe 0, Proxy-Uri, Listen-To-Multicast-Responses.
    const tc = new TicketClient(client, { proxy: listen.transport.address(), target, informative: ir });
    const got: CoapMessage[] = [];
    const wire: CoapMessage[] = [];
    tc.on('notification', (n: RelayedNotification) => {
      wire.push(n.message);
      got.push(notifications.verify(n.message));
    });
    await tc.start();
    const requestsBefore = server.counters.requests;
    for (const [i, value] of ['ALARM 1', 'ALARM 2'].entries()) {
      const arrived = waitForEvent(tc, 'notification', () => got.length === i + 1);
      observation.update(value);
      await arrived;
    }
    assert.deepEqual(got.map(text), ['ALARM 1', 'ALARM 2']);
    assert.ok(wire.every((m) => getOption(m, OPT.OSCORE) !== undefined && !m.payload.includes(Buffer.from('ALARM'))), 'relayed as the protected notifications they were');
    assert.equal(server.counters.requests, requestsBefore, 'the ticket itself never reached the server');
    // A notification replayed to the client by the proxy (the same bytes on another token) is refused.
    assert.throws(() => notifications.verify(wire[1]), (e: OscoreError) => e.code === 'ERR_OSCORE_REPLAY');
    tc.cancel('forget');
  });
});


describe('a counting poll answered through a proxy whose Echo interval has passed (observe-multicast-notifications-15 §8.2, RFC 9175 §2.4)', function () {
  this.timeout(20000);

  it('the observer answers the proxy\'s new 4.01 + Echo and its protected confirmation reaches the server', async function () {
    const material = groupMaterial(MEMBERS);
    const ngPort = await freeGroupPort(NG);
    const serverCtx = memberContext(material, SERVER);
    const server = await GroupServer.open({ address: '127.0.0.53', port: 0, groups: [], leisure: 0, requestTransform: oscoreServerTransform({ contexts: serverCtx, maxLayers: 1 }) });
    const observation = new GroupObservation({ server, path: '/alarm', group: { address: NG, port: ngPort }, initial: 'calm', contentFormat: 0, minInterval: 0, security: groupObservationSecurity(serverCtx) });
    const clock = new FakeClock();
    const listen = await endpointOn();
    const upstream = await endpointOn();
    const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], clock, echoInterval: 60_000 });
    let challenges = 0;
    proxy.on('event', (e: { kind: string }) => e.kind === 'challenge' && challenges++);
    const client = await endpointOn();
    const obs = new TicketObserver(client, { uri: `coap://127.0.0.53:${server.address().port}/alarm`, proxy: listen.transport.address(), security: multicastObserverSecurity(memberContext(material, '28')), leisure: 0 });
    obs.on('error', () => undefined);
    try {
      await obs.start();
      assert.equal(challenges, 1, 'the registration answered the first challenge');
      clock.advance(60_001); // the proxy's verification of this address is stale now
      // Q = 0: every observer answers the poll
      const est = await observation.estimateObservers(10, 1500);
      assert.equal(est.divider, 0);
      assert.equal(challenges, 2, 'the poll answer was challenged');
      assert.equal(est.confirmations, 1, 'the confirmation reached the server after the Echo');
    } finally {
      obs.cancel();
      await proxy.close();
      observation.close();
      await stopAll(client, listen, upstream, server);
    }
  });
});
