// Ticket requests (multicast-notifications-proxy-02 §4) on real loopback multicast: a server with a group
// observation on 127.0.0.41, a minimal proxy (listen + upstream endpoints, TicketListener only, no GroupProxy),
// clients that take the informative response from the server and then hand their tickets to the proxy.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { InformativeResponse, decodeInformativeResponse } from '../../src/cbor/informative-response';
import { decode } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { OPT } from '../../src/coap/options';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint } from '../../src/messaging/endpoint';
import { GroupObservation } from '../../src/observe/group-observation';
import { RelayedNotification, TicketClient } from '../../src/observe/ticket-request';
import { TicketListener } from '../../src/observe/ticket-listener';
import { GroupProxy } from '../../src/proxy/group-proxy';
import { FakeClock } from '../support/fake-clock';
import { UdpTransport } from '../../src/transport/udp-transport';
import { freeGroupPort } from '../support/lamps';
import { waitFor } from '../support/wait';

const NG = '239.255.0.91'; // a group the server owns (OMN-15 §2)
/** Wait for a condition that events make true (checked on every turn of the event loop), never a fixed time. */
const endpointOn = async () => new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }), { params: { ACK_TIMEOUT: 300 } });

interface Client {
  ep: CoapEndpoint;
  ir: InformativeResponse;
  tc?: TicketClient;
  got: RelayedNotification[];
  cancelled: boolean;
}

describe('ticket requests through a proxy (MNP-02 §4): one group listener, each client on its own token', function () {
  this.timeout(15000);
  let server: GroupServer;
  let observation: GroupObservation;
  let listen: CoapEndpoint;
  let upstream: CoapEndpoint;
  let tickets: TicketListener;
  let sniffer: dgram.Socket;
  const onWire: Buffer[] = [];
  let forwarded = 0;
  let target: string;
  const clients: Client[] = [];

  before(async function () {
    const ngPort = await freeGroupPort(NG);
    server = await GroupServer.open({ address: '127.0.0.41', port: 0, groups: [], leisure: 0 });
    observation = new GroupObservation({ server, path: '/alarm', group: { address: NG, port: ngPort }, initial: 'calm', contentFormat: 0, minInterval: 0 });
    target = `coap://127.0.0.41:${server.address().port}/alarm`;
    sniffer = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    sniffer.on('message', (m) => onWire.push(m));
    await new Promise<void>((r) => sniffer.bind(ngPort, NG, () => r()));
    sniffer.addMembership(NG, '127.0.0.1');
    // The proxy harness: tickets go to the TicketListener; anything else would be forwarded (counted, refused).
    listen = await endpointOn();
    upstream = await endpointOn();
    tickets = new TicketListener(listen, upstream, { groupInterface: '127.0.0.1', leisure: 50 });
    listen.setRequestHandler((req, ctx) => {
      if (tickets.wants(req.message, req.remote)) return tickets.handle(req, ctx);
      forwarded++;
      ctx.respond({ code: CODES.PROXYING_NOT_SUPPORTED });
    });
  });

  after(async function () {
    for (const c of clients) {
      c.tc?.cancel('forget');
      await c.ep.close();
    }
    tickets.close();
    await listen.close();
    await upstream.close();
    observation.close();
    await server.close();
    await new Promise<void>((r) => sniffer.close(() => r()));
  });

  async function newClient(): Promise<Client> {
    const ep = await endpointOn();
    // OMN-15 §5: the client registers with the server itself and gets the informative response (5.03).
    const res = await ep.request({ code: CODES.GET, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: OPT.URI_PATH, value: Buffer.from('alarm') }] }, server.address());
    assert.equal(codeToString(res.message.code), '5.03');
    const c: Client = { ep, ir: decodeInformativeResponse(res.message.payload), got: [], cancelled: false };
    clients.push(c);
    return c;
  }

  async function sendTicket(c: Client, ir = c.ir): Promise<void> {
    const tc = new TicketClient(c.ep, { proxy: listen.transport.address(), target, informative: ir });
    c.tc = tc;
    tc.on('notification', (n: RelayedNotification) => c.got.push(n));
    tc.on('cancelled', () => (c.cancelled = true));
    await tc.start();
  }

  it('3 clients present tickets: the proxy sends nothing to the server and listens once', async function () {
    for (let i = 0; i < 3; i++) await newClient();
    assert.equal(observation.count, 3);
    const requests = server.counters.requests;
    const upSent = upstream.transport.counters.sent;
    for (const c of clients) await sendTicket(c);
    assert.equal(server.counters.requests, requests, 'no request reached the server for the tickets');
    assert.equal(upstream.transport.counters.sent, upSent);
    assert.equal(forwarded, 0);
    assert.equal(tickets.observationCount, 1);
    assert.equal(tickets.clientCount(), 3);
    assert.ok(tickets.listening()[0].tpInfo.token.equals(observation.phantomToken));
    assert.ok(clients.every((c) => c.got.length === 0), 'nothing known yet: an empty ACK');
  });

  it('one change: exactly one multicast datagram, every client gets it on its own token, Observe order kept', async function () {
    const before = onWire.length;
    observation.update('ALARM');
    await waitFor(() => clients.every((c) => c.got.length === 1), 'the first notification at every client', 3000);
    // update() sends its multicast notification synchronously: a second datagram would already be on the wire
    assert.equal(onWire.length - before, 1);
    const onGroup = decode(onWire[onWire.length - 1]);
    for (const c of clients) {
      const n = c.got[0];
      assert.equal(n.message.payload.toString(), 'ALARM');
      assert.ok(n.message.token.equals(c.tc!.token));
      assert.ok(!n.message.token.equals(onGroup.token));
      assert.equal(n.sequence, onGroup.options.find((o) => o.number === OPT.OBSERVE)!.value.readUIntBE(0, onGroup.options.find((o) => o.number === OPT.OBSERVE)!.value.length));
    }
    observation.update('ALARM 2');
    await waitFor(() => clients.every((c) => c.got.length === 2), 'the second notification at every client', 3000);
    assert.equal(onWire.length - before, 2);
    assert.ok(clients.every((c) => c.got[1].sequence > c.got[0].sequence && c.got[1].message.payload.toString() === 'ALARM 2'));
  });

  it('a later ticket is answered with the latest notification at once', async function () {
    const late: Client = { ep: await endpointOn(), ir: clients[0].ir, got: [], cancelled: false };
    clients.push(late);
    await sendTicket(late);
    await waitFor(() => late.got.length === 1, 'the late client\'s first notification', 3000);
    assert.equal(late.got[0].message.payload.toString(), 'ALARM 2');
    assert.equal(tickets.observationCount, 1);
    assert.equal(tickets.clientCount(), 4);
  });

  it('a client leaving with RST (and one deregistering) does not stop the others', async function () {
    const [gone, , , dereg] = clients;
    gone.tc!.cancel('reset');
    observation.update('X');
    await waitFor(() => clients.slice(1).every((c) => c.got.at(-1)!.message.payload.toString() === 'X'), '"X" at clients 2-4', 3000);
    await waitFor(() => tickets.clientCount() === 3, 'three ticket clients', 3000);
    dereg.tc!.cancel('deregister');
    await waitFor(() => tickets.clientCount() === 2, 'two ticket clients', 3000);
    const gotBefore = gone.got.length;
    const deregBefore = dereg.got.length;
    const relayedBefore = tickets.counters.relayed;
    observation.update('Y');
    await waitFor(() => clients.slice(1, 3).every((c) => c.got.at(-1)!.message.payload.toString() === 'Y'), '"Y" at clients 2-3', 3000);
    // the listener relays to every holder in one pass: two holders left, two relays, none to the others
    assert.equal(tickets.counters.relayed - relayedBefore, 2);
    assert.equal(gone.got.length, gotBefore);
    assert.equal(dereg.got.length, deregBefore);
    assert.equal(tickets.observationCount, 1);
    assert.equal(tickets.counters.resets, 1);
    assert.equal(tickets.counters.deregistrations, 1);
  });

  it('Feedback-Divider (MNP-02 §5): the proxy answers the poll itself, as one client, and strips the option', async function () {
    const live = clients.slice(1, 3);
    const counts = live.map((c) => c.got.length);
    const requests = server.counters.requests;
    // Q = 0 (target >= count): every observer of the server answers; the proxy is the only one listening.
    const est = await observation.estimateObservers(10, 600);
    assert.equal(est.divider, 0);
    assert.equal(est.confirmations, 1);
    assert.equal(tickets.counters.feedback, 1);
    assert.equal(server.counters.requests, requests + 1);
    live.forEach((c, i) => {
      assert.equal(c.got.length, counts[i] + 1);
      assert.ok(!c.got.at(-1)!.message.options.some((o) => o.number === 18), 'Feedback-Divider stripped');
    });
  });

  it('cancellation: the server\'s multicast 5.03 reaches every remaining client, and the proxy stops listening', async function () {
    const before = onWire.length;
    observation.cancel();
    await waitFor(() => clients.slice(1, 3).every((c) => c.cancelled), 'clients 2-3 cancelled', 3000);
    assert.equal(onWire.length - before, 1);
    assert.equal(codeToString(decode(onWire[onWire.length - 1]).code), '5.03');
    assert.equal(tickets.observationCount, 0);
    assert.equal(tickets.clientCount(), 0);
    assert.ok(!clients[0].cancelled && !clients[3].cancelled, 'the clients that left hear nothing more');
  });

  it('the last client leaving ends the listening (RST), and a fresh ticket after it works again', async function () {
    const c = await newClient(); // the observation restarts on this registration (new token T)
    await sendTicket(c);
    assert.equal(tickets.observationCount, 1);
    observation.update('Z');
    await waitFor(() => c.got.length === 1, 'the first notification', 3000);
    c.tc!.cancel('reset');
    observation.update('Z2');
    await waitFor(() => tickets.observationCount === 0, 'no observation left at the listener', 3000);
    assert.equal(c.got.length, 1);
  });
});

describe('a deregistration through a GroupProxy whose Echo interval has passed (RFC 9175 §2.4, RFC 7641 §3.6)', function () {
  this.timeout(15000);

  it('the client answers the proxy\'s new 4.01 + Echo and the proxy stops listening for it', async function () {
    const ngPort = await freeGroupPort(NG);
    const server = await GroupServer.open({ address: '127.0.0.42', port: 0, groups: [], leisure: 0 });
    const observation = new GroupObservation({ server, path: '/alarm', group: { address: NG, port: ngPort }, initial: 'calm', contentFormat: 0, minInterval: 0 });
    const target = `coap://127.0.0.42:${server.address().port}/alarm`;
    const clock = new FakeClock();
    const listen = await endpointOn();
    const upstream = await endpointOn();
    const proxy = new GroupProxy({ listen, upstream, allow: [{ address: '127.0.0.1' }], clock, echoInterval: 60_000 });
    const challenges: string[] = [];
    proxy.on('event', (e: { kind: string }) => e.kind === 'challenge' && challenges.push(e.kind));
    const ep = await endpointOn();
    try {
      const res = await ep.request({ code: CODES.GET, options: [{ number: OPT.OBSERVE, value: Buffer.alloc(0) }, { number: OPT.URI_PATH, value: Buffer.from('alarm') }] }, server.address());
      const tc = new TicketClient(ep, { proxy: listen.transport.address(), target, informative: decodeInformativeResponse(res.message.payload) });
      await tc.start(); // answers the first challenge itself
      assert.equal(challenges.length, 1);
      assert.equal(proxy.relayedObservations, 1, 'the proxy listens to the group for the client');
      clock.advance(60_001); // the proxy's verification of this address is stale now
      tc.cancel('deregister');
      await waitFor(() => proxy.relayedObservations === 0, 'the proxy took the deregistration', 5000);
      assert.equal(challenges.length, 2, 'it was challenged again, and answered');
    } finally {
      await proxy.close();
      await ep.close();
      await listen.close();
      await upstream.close();
      observation.close();
      await server.close();
    }
  });
});
