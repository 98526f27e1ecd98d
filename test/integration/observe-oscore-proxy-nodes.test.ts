// coap-observe-multicast with a Group OSCORE context through a coap-group-proxy, in a Node-RED runtime, on real
// loopback multicast (multicast-notifications-proxy-02 §4, observe-multicast-notifications-15 §9): the node hands
// the proxy the ticket request and outputs each notification it verifies; its statuses say what it is doing; a
// notification forged by a host that is not a member and a replayed one are dropped, counted in the status and
// logged (boundedly), without disturbing the order of the real ones; a proxy that refuses the ticket makes a red
// status and one error line; a counting poll inside a protected notification is answered through the proxy. The core exchange itself (ticket, relay, verification) is covered by
// group-oscore-observe.test.ts and ticket-request.test.ts; this file is about the node.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { CoapMessage, createMessage, getOption } from '../../src/coap/message';
import { OPT, encodeUint } from '../../src/coap/options';
import { GroupServer } from '../../src/group/group-server';
import { CoapEndpoint, IncomingRequest, ResponseContext } from '../../src/messaging/endpoint';
import { GroupObservation } from '../../src/observe/group-observation';
import { groupObservationSecurity } from '../../src/observe/group-oscore';
import type { GroupObservationSecurity, ProtectedParts } from '../../src/observe/observe-security';
import { isTicketRequest } from '../../src/observe/ticket-request';
import { GroupContext, ServerBinding, decodeOscoreOption, generateGroupKeyPair, protectResponse } from '../../src/oscore';
import { oscoreServerTransform } from '../../src/oscore/nested';
import { UdpTransport } from '../../src/transport/udp-transport';
import { callsOf, Msg, statusOf } from '../support/flow';
import { GroupMaterial, groupMaterial, memberContext } from '../support/group-oscore';
import { freeGroupPort, stopAll } from '../support/lamps';
import { nodeRedRuntime } from '../support/node-red-runtime';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupContextNode = require('../../nodes/coap-group-oscore-context');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const observeModule = require('../../nodes/coap-observe-multicast');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const proxyNode = require('../../nodes/coap-group-proxy');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');

helper.init(nodeRedRuntime());

/**
 * The observe node with a RED._ that keeps the substitutions (the test helper's returns the bare key), so that a
 * status says its counts: "coap-observe-multicast.status.clientRejected {"received":2,"rejected":1,...}".
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const observeNode = (RED: any) => observeModule({ ...RED, _: (key: string, subs?: Record<string, unknown>) => (subs ? `${key} ${JSON.stringify(subs)}` : key) });

const NG = '239.255.0.96'; // the alarm server's own notification group (OMN-15 §2)
const SERVER_ADDRESS = '127.0.0.56';
const SERVER = '5e';
const hex = (b: Buffer) => b.toString('hex');

async function freeUnicastPort(address = '127.0.0.1'): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, address, () => r()));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/** The config node of member `id` (keys as Node-RED credentials), knowing `peers`. */
function member(g: GroupMaterial, nodeId: string, id: string, peers: string[]) {
  const own = g.keys.get(id)!;
  return {
    node: {
      id: nodeId, type: 'coap-group-oscore-context', name: `member ${id}`, gid: hex(g.gid), senderId: id, credential: hex(own.credential),
      members: peers.map((p) => ({ senderId: p, credential: hex(g.keys.get(p)!.credential) })),
      signatureAlg: String(g.signatureAlg), groupEncryptionAlg: '10', aeadAlg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: 'memory',
    },
    credentials: { masterSecret: hex(g.masterSecret), masterSalt: hex(g.masterSalt), privateKey: hex(own.privateKey) },
  };
}

function assertNoSecret(things: unknown[], g: GroupMaterial): void {
  const text = JSON.stringify(things, (_k, v) => (v && v.type === 'Buffer' && Array.isArray(v.data) ? Buffer.from(v.data).toString('hex') : v));
  for (const s of [hex(g.masterSecret), hex(g.masterSalt), ...[...g.keys.values()].map((k) => hex(k.privateKey))]) assert.ok(!text.includes(s), 'a secret appeared in a msg, status or log');
}

/** Messages a helper node receives, and a wait for a condition on them that each arrival re-checks (no sleeps). */
function collector(id: string) {
  const got: Msg[] = [];
  const waiters: (() => void)[] = [];
  helper.getNode(id).on('input', (m: Msg) => {
    got.push(m);
    for (const w of waiters.splice(0)) w();
  });
  const until = async (pred: (msgs: Msg[]) => boolean) => {
    while (!pred(got)) await new Promise<void>((r) => waiters.push(r));
  };
  return { got, until };
}

/** The counts a status carries (see observeNode), or undefined for a status without them. */
function countsOf(text: string | undefined): Record<string, unknown> | undefined {
  const i = text?.indexOf(' {') ?? -1;
  return i < 0 ? undefined : JSON.parse(text!.slice(i + 1));
}

/** A group server with a protected group observation of /alarm; `phantom` is the protected ph_req once it exists. */
async function alarmServer(material: GroupMaterial, ngPort: number) {
  const ctx = memberContext(material, SERVER);
  const server = await GroupServer.open({ address: SERVER_ADDRESS, port: 0, groups: [], leisure: 0, requestTransform: oscoreServerTransform({ contexts: ctx, maxLayers: 1 }) });
  server.endpoint.on('handler-error', () => undefined);
  const sec = groupObservationSecurity(ctx);
  const out: { server: GroupServer; observation: GroupObservation; phantom?: ProtectedParts; target: string } = { server, observation: undefined as unknown as GroupObservation, target: '' };
  const security: GroupObservationSecurity = {
    protectPhantom(plain) {
      const r = sec.protectPhantom(plain);
      out.phantom = r.phantom;
      return r;
    },
  };
  out.observation = new GroupObservation({ server, path: '/alarm', group: { address: NG, port: ngPort }, initial: 'calm', contentFormat: 0, minInterval: 0, security });
  out.target = `coap://${SERVER_ADDRESS}:${server.address().port}/alarm`;
  return out;
}

/**
 * A notification bound to ph_req (its kid, Partial IV and kid context) by a host that is not a member: it knows the
 * group's Master Secret and claims the server's Sender ID, but signs with a key pair of its own (RFC 10021 §8.4: the
 * countersignature does not verify with the server's credential).
 */
function forgedByOutsider(material: GroupMaterial, phantom: ProtectedParts, observe: number, text: string): { code: number; options: CoapMessage['options']; payload: Buffer } {
  const own = generateGroupKeyPair({ signatureAlg: material.signatureAlg });
  const outsider = new GroupContext({
    masterSecret: material.masterSecret, masterSalt: material.masterSalt, idContext: material.gid, senderId: Buffer.from(SERVER, 'hex'),
    privateKey: own.privateKey, credential: own.credential, signatureAlg: material.signatureAlg,
    members: [{ senderId: Buffer.from('28', 'hex'), credential: material.keys.get('28')!.credential }],
  });
  const f = decodeOscoreOption(phantom.options.find((o) => o.number === OPT.OSCORE)!.value);
  const binding = new ServerBinding({ context: outsider.peer(Buffer.from('28', 'hex'), 'group')!, kid: f.kid!, piv: f.piv!, nonce: Buffer.alloc(13), kidContext: f.kidContext, observe: true, requestFresh: false });
  const p = protectResponse(binding, { code: CODES.CONTENT, options: [{ number: OPT.OBSERVE, value: encodeUint(observe) }, { number: OPT.CONTENT_FORMAT, value: Buffer.alloc(0) }], payload: Buffer.from(text) }, { partialIv: true });
  return { code: p.code, options: p.options, payload: p.payload };
}

const observeValue = (m: CoapMessage) => {
  const v = getOption(m, OPT.OBSERVE)!;
  return v.length ? v.readUIntBE(0, v.length) : 0;
};

describe('nodes: coap-observe-multicast with Group OSCORE through a coap-group-proxy (multicast-notifications-proxy-02 §4)', function () {
  this.timeout(20000);
  let material: GroupMaterial;
  let ngPort: number;
  let alarm: Awaited<ReturnType<typeof alarmServer>>;
  let sniffer: dgram.Socket;
  const onGroup: Buffer[] = [];

  beforeEach(async function () {
    material = groupMaterial(['28', '29', SERVER]);
    ngPort = await freeGroupPort(NG);
    alarm = await alarmServer(material, ngPort);
    sniffer = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    sniffer.on('message', (m) => onGroup.push(m));
    await new Promise<void>((r) => sniffer.bind(ngPort, NG, () => r()));
    sniffer.addMembership(NG, '127.0.0.1');
  });
  afterEach(async function () {
    await helper.unload();
    alarm.observation.close();
    await stopAll(alarm.server);
    await new Promise<void>((r) => sniffer.close(() => r()));
  });

  /** The proxy (listen on a port known in advance, so the client node's dialog names it) and the protected client. */
  async function deploy() {
    const proxyPort = await freeUnicastPort();
    const c = member(material, 'gc', '28', [SERVER]);
    const c2 = member(material, 'gc2', '29', [SERVER]);
    const flow = [
      c.node,
      c2.node,
      { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: proxyPort, multicastInterface: '127.0.0.1' },
      { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', allow: '127.0.0.1', events: true, outputs: 1, wires: [['events']] },
      { id: 'events', type: 'helper' },
      { id: 'cl', type: 'coap-observe-multicast', mode: 'client', uri: alarm.target, proxy: `coap://127.0.0.1:${proxyPort}`, endpoint: 'ce', autoStart: false, payloadMode: 'string', groupOscore: 'gc', leisure: '0.2', wires: [['out']] },
      { id: 'out', type: 'helper' },
      { id: 'cl2', type: 'coap-observe-multicast', mode: 'client', uri: alarm.target, proxy: `coap://127.0.0.1:${proxyPort}`, autoStart: false, payloadMode: 'string', groupOscore: 'gc2', wires: [['out2']] },
      { id: 'out2', type: 'helper' },
    ];
    await helper.load([groupContextNode, endpointNode, proxyNode, observeNode], flow, { gc: c.credentials, gc2: c2.credentials });
    return { out: collector('out'), out2: collector('out2'), events: collector('events'), cl: helper.getNode('cl'), cl2: helper.getNode('cl2') };
  }

  /**
   * A stand-in forward proxy on two endpoints of its own: a registration goes on to the alarm server without the proxy
   * options and its answer comes back without Observe (the protected registration's outer Proxy-Uri is scheme and
   * authority only, RFC 8613 §4.1.3.3: the path is encrypted); a ticket request goes to `onTicket`.
   */
  async function relayingProxy(onTicket: (req: IncomingRequest, ctx: ResponseContext, listen: CoapEndpoint) => void): Promise<{ listen: CoapEndpoint; upstream: CoapEndpoint }> {
    const listen = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
    const upstream = new CoapEndpoint(await UdpTransport.open({ bindAddress: '127.0.0.1' }));
    listen.setRequestHandler((req, ctx) => {
      if (isTicketRequest(req.message)) return onTicket(req, ctx, listen);
      const proxyOpts: number[] = [OPT.PROXY_URI, OPT.PROXY_SCHEME, OPT.URI_HOST, OPT.URI_PORT];
      upstream
        .request({ code: req.message.code, options: req.message.options.filter((o) => !proxyOpts.includes(o.number)), payload: req.message.payload }, alarm.server.address())
        .then((res) => ctx.respond({ code: res.message.code, options: res.message.options.filter((o) => o.number !== OPT.OBSERVE), payload: res.message.payload }), () => ctx.ignore());
    });
    return { listen, upstream };
  }

  /** Load a client node 'cl' (member `id`, started at deploy) that observes the alarm through `proxy`, output on 'out'. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async function clientVia(proxy: CoapEndpoint, id: string): Promise<any> {
    const c = member(material, 'gc', id, [SERVER]);
    const flow = [
      c.node,
      { id: 'cl', type: 'coap-observe-multicast', mode: 'client', uri: alarm.target, proxy: `coap://127.0.0.1:${proxy.transport.address().port}`, autoStart: true, payloadMode: 'string', groupOscore: 'gc', wires: [['out']] },
      { id: 'out', type: 'helper' },
    ];
    await helper.load([groupContextNode, observeNode], flow, { gc: c.credentials });
    return helper.getNode('cl');
  }

  it('registers through the proxy, hands it the ticket, and outputs each verified notification (plaintext, the server as origin); the statuses tell each step; a later observer joins the same listening; no secret anywhere', async function () {
    const { out, out2, events, cl, cl2 } = await deploy();
    cl.receive({});
    await out.until((g) => g.length === 1);
    assert.equal(out.got[0].payload, 'calm');
    assert.equal(out.got[0].coap.via, 'last_notif', 'the latest state, verified through ph_req (OMN-15 §9.3.1)');
    await statusOf(cl, (s) => countsOf(s.text)?.mode === 'coap-observe-multicast.status.viaProxy');
    // the steps, in order: registering, ticket, listening via the proxy
    const keys = callsOf(cl, 'status').map((s: { text?: string }) => (s.text ?? '').split(' ')[0]);
    const step = (k: string) => keys.indexOf(`coap-observe-multicast.status.${k}`);
    assert.ok(step('registeringProxy') >= 0 && step('registeringProxy') < step('ticket') && step('ticket') < step('client'), keys.join(', '));
    // the proxy took a ticket (MNP-02 §4) and did not forward it: one registration reached the server
    assert.ok(events.got.some((m) => m.topic === 'request' && /ticket/.test(m.payload.reason)));
    assert.equal(alarm.observation.count, 1);

    for (const [i, value] of ['ALARM: smoke in hall B', 'all clear'].entries()) {
      const before = onGroup.length;
      alarm.observation.update(value);
      await out.until((g) => g.length === i + 2);
      const m = out.got[i + 1];
      assert.equal(m.payload, value);
      assert.equal(m.coap.via, 'proxy');
      assert.equal(m.coap.code, '2.05');
      const port = alarm.server.address().port;
      assert.deepEqual(m.coap.origin, { address: SERVER_ADDRESS, port, uri: `coap://${SERVER_ADDRESS}:${port}` });
      assert.equal(m.topic, `coap://${SERVER_ADDRESS}:${port}`);
      assert.ok(m.coap.sequence > out.got[i].coap.sequence);
      // what went over the group (and so through the proxy) was ciphertext
      assert.equal(onGroup.length - before, 1);
      assert.ok(!decode(onGroup.at(-1)!).payload.includes(Buffer.from(value)));
    }
    assert.equal(countsOf(callsOf(cl, 'status').at(-1).text)?.received, 3);

    // A second observer node (another member, on the default endpoint) joins later: its informative response carries
    // the latest state (last_notif), and the proxy, which already listens, answers its ticket with that same
    // notification: recognized, not counted as a replay. Then both get the next one, each on its own token.
    cl2.receive({});
    await out2.until((g) => g.length === 1);
    assert.deepEqual([out2.got[0].payload, out2.got[0].coap.via], ['all clear', 'last_notif']);
    await statusOf(cl2, (s) => countsOf(s.text)?.mode === 'coap-observe-multicast.status.viaProxy');
    alarm.observation.update('ALARM again');
    await out.until((g) => g.length === 4);
    await out2.until((g) => g.length === 2);
    assert.deepEqual([out.got[3].payload, out2.got[1].payload], ['ALARM again', 'ALARM again']);
    assert.notEqual(out.got[3].coap.token, out2.got[1].coap.token);
    for (const node of [cl, cl2]) {
      assert.ok(callsOf(node, 'status').every((s: { text?: string }) => countsOf(s.text)?.rejected === undefined), 'nothing was dropped');
      assert.deepEqual(callsOf(node, 'warn'), []);
    }
    assertNoSecret([out.got, out2.got, events.got, ...[cl, cl2].flatMap((n) => ['status', 'warn', 'error', 'log'].map((k) => callsOf(n, k as 'status')))], material);
  });

  it('a replayed notification and one forged by a non-member (on the proxy\'s hop and on the group) are dropped, counted in the status and logged once; the real ones keep their order', async function () {
    const { out, cl } = await deploy();
    cl.receive({});
    await out.until((g) => g.length === 1);
    await statusOf(cl, (s) => countsOf(s.text)?.mode === 'coap-observe-multicast.status.viaProxy');
    alarm.observation.update('A');
    await out.until((g) => g.length === 2);
    const captured = decode(onGroup.at(-1)!); // the protected notification 'A' as the group saw it
    const seqA = observeValue(captured);
    const token = Buffer.from(out.got[1].coap.token, 'hex'); // the ticket's token, on which the proxy relays
    const client = (await helper.getNode('ce').getEndpoint() as CoapEndpoint).transport.address();
    const proxyTransport = (await helper.getNode('pl').getEndpoint() as CoapEndpoint).transport;
    const rejectedStatus = (n: number) => statusOf(cl, (s) => countsOf(s.text)?.rejected === n);

    // 1. 'A' again, on the hop from the proxy, with a new Message ID and a higher outer Observe (neither is protected)
    proxyTransport.send(encode({ ...captured, token, messageId: (captured.messageId + 1000) & 0xffff, options: captured.options.map((o) => (o.number === OPT.OBSERVE ? { number: o.number, value: encodeUint(seqA + 1000) } : o)) }), client);
    await rejectedStatus(1);
    // 2. forged by a non-member, on the same hop, with an Observe far ahead
    proxyTransport.send(encode({ type: 'NON', messageId: 4242, token, ...forgedByOutsider(material, alarm.phantom!, seqA + 5000, 'all clear') }), client);
    await rejectedStatus(2);
    // the next real notification is still fresh: what did not verify never set the Observe order (RFC 8613 §7.4.1)
    alarm.observation.update('B');
    await out.until((g) => g.length === 3);
    assert.equal(out.got[2].payload, 'B');
    // 3. forged by a non-member on the group, from the server's address on the phantom token: the proxy cannot tell
    // and relays it; the node drops it
    const seqB = observeValue(decode(onGroup.at(-1)!));
    alarm.server.endpoint.transport.send(encode({ type: 'NON', messageId: 4343, token: alarm.observation.phantomToken, ...forgedByOutsider(material, alarm.phantom!, seqB + 1, 'all clear') }), { address: NG, port: ngPort });
    await rejectedStatus(3);

    assert.deepEqual(out.got.map((m) => m.payload), ['calm', 'A', 'B']);
    const last = callsOf(cl, 'status').at(-1);
    assert.equal(last.fill, 'yellow');
    assert.deepEqual([countsOf(last.text)?.received, countsOf(last.text)?.rejected], [3, 3]);
    // one log line for three rejections (the 1st, 10th, 100th ... are logged), naming why, with no key material
    const warns: string[] = callsOf(cl, 'warn');
    assert.equal(warns.length, 1, warns.join(' | '));
    assert.match(warns[0], /^1 notification dropped \(did not verify\); latest: ERR_OSCORE_REPLAY/);
    assertNoSecret([out.got, warns, callsOf(cl, 'status'), callsOf(cl, 'error')], material);
  });

  it('a counting poll inside a protected notification (Feedback-Divider, observe-multicast-notifications-15 §8.2) is answered through the proxy, which cannot see it: the server counts the node', async function () {
    const { out, cl } = await deploy();
    cl.receive({});
    await out.until((g) => g.length === 1);
    await statusOf(cl, (s) => countsOf(s.text)?.mode === 'coap-observe-multicast.status.viaProxy');
    const requests = alarm.server.counters.requests;
    // Q = 0 (target >= count): every observer answers, after a random part of its leisure (0.2 s here); the round
    // lasts longer than that
    const est = await alarm.observation.estimateObservers(10, 1500);
    assert.equal(est.divider, 0);
    assert.equal(est.confirmations, 1, 'the node\'s protected confirmation reached the server through the proxy');
    assert.ok(alarm.server.counters.requests > requests);
    // the poll's notification itself was output like any other, verified
    await out.until((g) => g.length === 2);
    assert.equal(out.got[1].coap.via, 'proxy');
  });

  it('a proxy that refuses the ticket: a red status with its code and one error line; nothing is output and the flow keeps running', async function () {
    // A forward proxy that relays the registration (it cannot read it) and answers every ticket 4.03.
    let tickets = 0;
    const { listen, upstream } = await relayingProxy((req, ctx) => {
      tickets++;
      ctx.respond({ code: CODES.FORBIDDEN, payload: Buffer.from('no tickets here') });
    });
    try {
      const cl = await clientVia(listen, '28');
      const out = collector('out');
      const refused = await statusOf(cl, (s) => (s.text ?? '').startsWith('coap-observe-multicast.status.ticketRefused'));
      assert.deepEqual([refused.fill, countsOf(refused.text)?.code], ['red', '4.03']);
      assert.equal(tickets, 1);
      const errors: string[] = callsOf(cl, 'error');
      assert.equal(errors.length, 1);
      assert.match(errors[0], /refused the ticket \(4\.03\)/);
      assert.ok(!errors[0].includes('no tickets here'), 'the proxy\'s diagnostic is not echoed into the log');
      assert.equal(out.got.length, 0, 'nothing unverified or unrelayed is output');
      // still a working node: a cancel is handled like any input
      cl.receive({ cancel: true });
      await statusOf(cl, (s) => s.text === 'coap-observe-multicast.status.cancelled');
    } finally {
      await stopAll(listen, upstream);
    }
  });

  it('a relay that ends with an error after the ticket was accepted: the status says ended (red), not the last count', async function () {
    // A forward proxy that relays the registration, accepts the ticket (empty ACK), then ends the relay with a 4.04
    // of its own on the ticket's token (unprotected, no Observe: this hop's error, RFC 7641 §3.2).
    const { listen, upstream } = await relayingProxy((req, ctx, listen) => {
      ctx.ignore();
      setImmediate(() => listen.sendMessage(createMessage({ type: 'NON', code: CODES.NOT_FOUND, token: req.message.token, messageId: listen.newMessageId(req.remote), options: [], payload: Buffer.alloc(0) }), req.remote));
    });
    try {
      const cl = await clientVia(listen, '29');
      const ended = await statusOf(cl, (s) => s.text === 'coap-observe-multicast.status.ended');
      assert.equal(ended.fill, 'red');
      assert.equal(callsOf(cl, 'status').at(-1).text, 'coap-observe-multicast.status.ended', 'nothing overwrote it');
    } finally {
      await stopAll(listen, upstream);
    }
  });
});
