// Observe notifications as multicast responses (observe-multicast-notifications-15) on real loopback multicast:
// one server on 127.0.0.2, 50 observers, a sniffer on the group counting datagrams on the wire. Rough counting
// (§8.2) runs on its own server and observers, with the counting round and the poll leisure on a FakeClock.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { EventEmitter, once } from 'node:events';
import { decode } from '../../src/coap/codec';
import { getOption } from '../../src/coap/message';
import { OPT } from '../../src/coap/options';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { MulticastObserver, Notification } from '../../src/observe/multicast-observer';
import { Clock } from '../../src/messaging/parameters';
import { GroupObservation, updatedCount } from '../../src/observe/group-observation';
import { UdpTransport, canJoinGroups } from '../../src/transport/udp-transport';
import { closeChecked } from '../support/endpoints';
import { FakeClock } from '../support/fake-clock';
import { freeGroupPort } from '../support/lamps';
import { waitFor } from '../support/wait';

const NOTIF_GROUP = '239.255.0.77'; // a group address the server owns (not All-CoAP-Nodes, §2)

interface Observer {
  ep: CoapEndpoint;
  obs: MulticastObserver;
  notes: Notification[];
  cancelled: boolean;
}

async function observer(uri: string, clock?: Clock): Promise<Observer> {
  const ep = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
  const obs = new MulticastObserver(ep, { uri, leisure: 100, clock });
  const o: Observer = { ep, obs, notes: [], cancelled: false };
  obs.on('notification', (n: Notification) => o.notes.push(n));
  obs.on('cancelled', () => (o.cancelled = true));
  return o;
}


describe('multicast notifications: server, 50 observers, counting, cancellation', function () {
  this.timeout(30000);
  let server: GroupServer;
  let groupPort: number;
  let observation: GroupObservation;
  let observers: Observer[] = [];
  let sniffer: dgram.Socket;
  const onWire: Buffer[] = [];
  let uri: string;

  before(async function () {
    groupPort = await freeGroupPort(NOTIF_GROUP);
    server = await GroupServer.open({ address: '127.0.0.2', port: 0, groups: [], leisure: 0 });
    observation = new GroupObservation({ server, path: '/alarm', group: { address: NOTIF_GROUP, port: groupPort }, initial: 'ok', contentFormat: 0, minInterval: 0, dampener: 2 });
    uri = `coap://127.0.0.2:${server.address().port}/alarm`;
    sniffer = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    sniffer.on('message', (m) => onWire.push(m));
    await new Promise<void>((r) => sniffer.bind(groupPort, NOTIF_GROUP, () => r()));
    sniffer.addMembership(NOTIF_GROUP, '127.0.0.1');
  });
  after(async function () {
    for (const o of observers) o.obs.cancel();
    observation.close();
    await closeChecked(observers.map((o) => o.ep), server);
    await new Promise<void>((r) => sniffer.close(() => r()));
  });

  it('50 observers register and each gets the informative response (5.03) with tp_info, ph_req and last_notif', async function () {
    const informative: unknown[] = [];
    observers = await Promise.all(Array.from({ length: 50 }, () => observer(uri)));
    for (const o of observers) o.obs.on('informative', (ir) => informative.push(ir));
    const modes = await Promise.all(observers.map((o) => o.obs.start()));
    assert.ok(modes.every((m) => m === 'multicast'));
    assert.equal(informative.length, 50);
    assert.equal(observation.count, 50);
    for (const o of observers) {
      const ir = o.obs.informative!;
      assert.equal(ir.tpInfo!.server.host, '127.0.0.2');
      assert.equal(ir.tpInfo!.client.host, NOTIF_GROUP);
      assert.equal(ir.tpInfo!.client.port, groupPort);
      assert.ok(ir.tpInfo!.token.equals(observation.phantomToken));
      assert.equal(ir.phReq![0], 0x01); // GET
      // last_notif (INIT_NOTIF) delivered as the first notification, with the current state
      assert.equal(o.notes.length, 1);
      assert.equal(o.notes[0].via, 'last_notif');
      assert.equal(o.notes[0].message.payload.toString(), 'ok');
    }
  });

  it('one change: exactly one datagram on the wire, 50 delivered notifications with the phantom token', async function () {
    const before = onWire.length;
    const sentBefore = server.endpoint.transport.counters.sent;
    observation.update('ALARM');
    await waitFor(() => observers.every((o) => o.notes.length === 2) && onWire.length > before, 'the second notification at every observer, on the wire', 3000);
    assert.equal(onWire.length - before, 1);
    assert.equal(server.endpoint.transport.counters.sent - sentBefore, 1);
    const d = decode(onWire[onWire.length - 1]);
    assert.equal(d.type, 'NON');
    assert.ok(d.token.equals(observation.phantomToken));
    assert.ok(getOption(d, OPT.OBSERVE) !== undefined);
    for (const o of observers) {
      const n = o.notes[1];
      assert.equal(n.via, 'multicast');
      assert.equal(n.message.payload.toString(), 'ALARM');
      assert.equal(n.origin.address, '127.0.0.2');
      assert.ok(n.sequence > o.notes[0].sequence);
    }
  });

  it('a late joiner gets the latest state through last_notif', async function () {
    const late = await observer(uri);
    observers.push(late);
    assert.equal(await late.obs.start(), 'multicast');
    assert.equal(late.notes[0].via, 'last_notif');
    assert.equal(late.notes[0].message.payload.toString(), 'ALARM');
  });

  it('cancellation (multicast 5.03 with token T) reaches every client', async function () {
    const before = onWire.length;
    observation.cancel();
    await waitFor(() => observers.every((o) => o.cancelled), 'every observer cancelled', 3000);
    assert.equal(onWire.length - before, 1);
    const d = decode(onWire[onWire.length - 1]);
    assert.equal(d.code, 0xa3);
    assert.equal(d.payload.length, 0);
    assert.equal(getOption(d, OPT.OBSERVE), undefined);
  });
});

describe('multicast notifications: traditional observers below a threshold, moved when it is crossed', function () {
  this.timeout(20000);

  it('ordinary unicast observers work, and crossing the threshold moves them into the group observation', async function () {
    const groupPort = await freeGroupPort(NOTIF_GROUP);
    const server = await GroupServer.open({ address: '127.0.0.3', port: 0, groups: [], leisure: 0 });
    const observation = new GroupObservation({ server, path: '/scene', group: { address: NOTIF_GROUP, port: groupPort }, initial: 'calm', threshold: 3, minInterval: 0 });
    const uri = `coap://127.0.0.3:${server.address().port}/scene`;
    const obs: Observer[] = [];
    try {
      for (let i = 0; i < 2; i++) obs.push(await observer(uri));
      assert.deepEqual(await Promise.all(obs.map((o) => o.obs.start())), ['unicast', 'unicast']);
      assert.equal(server.observerCount('/scene'), 2);
      observation.update('party');
      await waitFor(() => obs.every((o) => o.notes.some((n) => n.message.payload.toString() === 'party' && n.via === 'unicast')), 'the unicast notification "party" at every observer', 3000);
      // the third crosses the threshold: all three end up on the group
      obs.push(await observer(uri));
      assert.equal(await obs[2].obs.start(), 'multicast');
      await waitFor(() => obs.every((o) => o.obs.mode === 'multicast'), 'every observer in multicast mode', 3000);
      assert.equal(observation.count, 3);
      assert.equal(server.observerCount('/scene'), 0);
      observation.update('quiet');
      await waitFor(() => obs.every((o) => o.notes.some((n) => n.message.payload.toString() === 'quiet' && n.via === 'multicast')), 'the multicast notification "quiet" at every observer', 3000);
    } finally {
      for (const o of obs) o.obs.cancel();
      observation.close();
      await closeChecked(obs.map((o) => o.ep), server);
    }
  });
});

describe('multicast notifications: rough counting (§8.2) on a FakeClock', function () {
  this.timeout(20000);
  const WAIT = 1000; // the counting round; advanced on the fake clock, never waited for
  let clock: FakeClock;
  let server: GroupServer;
  let observation: GroupObservation;
  let observers: Observer[];

  before(async function () {
    clock = new FakeClock();
    const groupPort = await freeGroupPort(NOTIF_GROUP);
    server = await GroupServer.open({ address: '127.0.0.4', port: 0, groups: [], leisure: 0, clock });
    observation = new GroupObservation({ server, path: '/count', group: { address: NOTIF_GROUP, port: groupPort }, initial: 'x', minInterval: 0, dampener: 2 });
    const uri = `coap://127.0.0.4:${server.address().port}/count`;
    observers = await Promise.all(Array.from({ length: 12 }, () => observer(uri, clock)));
    assert.deepEqual(new Set(await Promise.all(observers.map((o) => o.obs.start()))), new Set(['multicast']));
  });
  after(async function () {
    for (const o of observers) o.obs.cancel();
    observation.close();
    await closeChecked(observers.map((o) => o.ep), server);
  });

  /** One round: the poll goes out, every live observer decides, the confirmations arrive, the round ends. */
  async function round(target: number, live: Observer[]) {
    const decided: boolean[] = [];
    const allDecided = new Promise<void>((resolve) => {
      for (const o of live) {
        o.obs.once('feedback', (f: { answered: boolean }) => {
          decided.push(f.answered);
          if (decided.length === live.length) resolve();
        });
      }
    });
    const requestsBefore = server.counters.requests;
    const estimate = observation.estimateObservers(target, WAIT);
    await allDecided;
    clock.advance(100); // the observers' poll leisure (random in [0, 100) ms)
    const answered = decided.filter(Boolean).length;
    await waitFor(() => server.counters.requests - requestsBefore >= answered, 'the answered requests at the server', 3000);
    clock.advance(WAIT);
    return { est: await estimate, answered };
  }

  it('Q = 0: every live observer confirms, and each round halves the error exactly (D = 2): |count - L| = |N - L| / 2^k', async function () {
    // 12 registered, 5 go away silently: the counter says 12, the truth L is 7.
    for (const o of observers.slice(0, 5)) o.obs.cancel();
    const live = observers.slice(5);
    assert.equal(observation.count, 12);
    for (let k = 1; k <= 4; k++) {
      const { est, answered } = await round(1000, live);
      assert.equal(est.divider, 0);
      assert.equal(answered, 7);
      assert.equal(est.confirmations, 7);
      assert.ok(Math.abs(observation.count - 7 - (12 - 7) / 2 ** k) < 1e-9, `round ${k}: count ${observation.count}`);
    }
  });

  it('Q > 0: the new counter is exactly COUNT + (R * 2^Q - N) / D with 0 <= R <= L, so it lies in [COUNT - N/D, COUNT + (L * 2^Q - N)/D]', async function () {
    const live = observers.slice(5);
    const before = observation.count;
    const n = Math.max(before, 1);
    const { est, answered } = await round(Math.ceil(before / 4), live);
    assert.ok(est.divider >= 1);
    assert.equal(est.confirmations, answered);
    assert.ok(answered >= 0 && answered <= live.length);
    assert.equal(observation.count, updatedCount(before, n, answered, est.divider, 2));
    assert.ok(observation.count >= before - n / 2 && observation.count <= before + (live.length * 2 ** est.divider - n) / 2);
  });
});

describe('group membership is a capability of the Transport interface', function () {
  it('leaving a group after the transport closed is a no-op: a proxy closing its observers after its endpoint never throws', async function () {
    const groupPort = await freeGroupPort(NOTIF_GROUP);
    const t = await UdpTransport.open({ bindAddress: '127.0.0.1' });
    await t.joinGroup({ address: NOTIF_GROUP, port: groupPort });
    // close() and leaveGroup() racing, as on a redeploy that closes the endpoint while a relay still leaves its group
    const closing = t.close();
    await t.leaveGroup(NOTIF_GROUP, groupPort);
    await closing;
    await t.leaveGroup(NOTIF_GROUP, groupPort);
  });

  it('an observer whose transport cannot join groups reports it and ends; the same observer on a UdpTransport joins', async function () {
    const groupPort = await freeGroupPort(NOTIF_GROUP);
    const server = await GroupServer.open({ address: '127.0.0.5', port: 0, groups: [], leisure: 0 });
    const observation = new GroupObservation({ server, path: '/cap', group: { address: NOTIF_GROUP, port: groupPort }, initial: 'v', minInterval: 0 });
    const uri = `coap://127.0.0.5:${server.address().port}/cap`;
    const udp = await UdpTransport.open({ bindAddress: '127.0.0.1' });
    // A Transport without joinGroup / leaveGroup: everything else is the UDP transport's.
    const plain = Object.assign(new EventEmitter(), {
      family: udp.family,
      counters: udp.counters,
      send: (d: Buffer, r: { address: string; port: number }) => udp.send(d, r),
      address: () => udp.address(),
      close: () => udp.close(),
    });
    udp.on('datagram', (dg) => plain.emit('datagram', dg));
    assert.equal(canJoinGroups(plain), false);
    assert.equal(canJoinGroups(udp), true);
    const ep = new CoapEndpoint(plain);
    const obs = new MulticastObserver(ep, { uri });
    const failed = once(obs, 'error');
    const started = obs.start().then(
      () => 'started',
      (e: Error) => e.message,
    );
    const [err] = (await failed) as [Error];
    assert.match(err.message, /cannot join groups/);
    assert.match(await started, /cannot join groups/);
    assert.equal(obs.mode, 'ended');
    const ok = await observer(uri);
    try {
      assert.equal(await ok.obs.start(), 'multicast');
    } finally {
      ok.obs.cancel();
      observation.close();
      await closeChecked(ep, ok.ep, server);
    }
  });
});

describe('tp_info never names an unspecified address (observe-multicast-notifications-15 §4.2.1.1)', function () {
  it('a group observation on a server bound to 0.0.0.0 is refused with a clear error', async function () {
    const server = await GroupServer.open({ address: '0.0.0.0', port: 0, groups: [], leisure: 0 });
    try {
      assert.throws(() => new GroupObservation({ server, path: '/x', group: { address: NOTIF_GROUP, port: 5683 }, initial: 'v' }), /own unicast address/);
      assert.equal(server.observerCount('/x'), 0);
    } finally {
      await closeChecked(server);
    }
  });
});
