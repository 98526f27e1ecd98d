// coap-observe-multicast in a Node-RED runtime: a server node fed by the flow and three client nodes.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { freeGroupPort } from '../support/lamps';
import { DoneCounter, Msg, WATCH_NODES, completeWatch } from '../support/flow';
import { nodeRedRuntime } from '../support/node-red-runtime';
import { waitFor } from '../support/wait';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const observeNode = require('../../nodes/coap-observe-multicast');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const proxyNode = require('../../nodes/coap-group-proxy');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');

helper.init(nodeRedRuntime());

async function freeUnicastPort(address: string): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, address, () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * A coap-observe-multicast server on 127.0.0.8 (notifications to `group`, threshold 1, initial state "calm") with its
 * events on helper 'events', and two client nodes c1, c2 that share the coap-endpoint 'ep' and start on input, wired
 * to helpers o1 and o2.
 */
async function twoClientsOneEndpoint(group: string): Promise<Record<string, unknown>[]> {
  const port = await freeUnicastPort('127.0.0.8');
  const groupPort = await freeGroupPort(group);
  const uri = `coap://127.0.0.8:${port}/alarm`;
  const client = (i: number) => ({ id: `c${i}`, type: 'coap-observe-multicast', mode: 'client', uri, endpoint: 'ep', autoStart: false, payloadMode: 'string', wires: [[`o${i}`]] });
  return [
    { id: 'srv', type: 'coap-observe-multicast', mode: 'server', address: '127.0.0.8', port, path: '/alarm', group, groupPort, threshold: 1, contentFormat: 'text/plain', minInterval: 0, initial: 'calm', wires: [['events']] },
    { id: 'events', type: 'helper' },
    { id: 'ep', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    client(1),
    client(2),
    { id: 'o1', type: 'helper' },
    { id: 'o2', type: 'helper' },
  ];
}

describe('nodes: coap-observe-multicast (server and client modes)', function () {
  this.timeout(15000);
  afterEach(async function () {
    await helper.unload();
  });

  it('each state sent into the server node reaches every client node as one notification with origin and sequence', async function () {
    const port = await freeUnicastPort('127.0.0.6');
    const groupPort = await freeGroupPort('239.255.0.78');
    const uri = `coap://127.0.0.6:${port}/alarm`;
    const flow = [
      { id: 'srv', type: 'coap-observe-multicast', mode: 'server', address: '127.0.0.6', port, path: '/alarm', group: '239.255.0.78', groupPort, threshold: 1, contentFormat: 'application/json', minInterval: 0, initial: '{"armed":false}', wires: [['events']] },
      { id: 'events', type: 'helper' },
      ...[1, 2, 3].map((i) => ({ id: `c${i}`, type: 'coap-observe-multicast', mode: 'client', uri, bindAddress: '127.0.0.1', autoStart: false, payloadMode: 'auto', wires: [[`o${i}`]] })),
      ...[1, 2, 3].map((i) => ({ id: `o${i}`, type: 'helper' })),
      ...completeWatch(['srv', 'c1', 'c2', 'c3']),
    ];
    await helper.load([observeNode, ...WATCH_NODES], flow);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const inputs: Msg[] = [];
    const input = (id: string, msg: Msg) => {
      inputs.push(msg);
      helper.getNode(id).receive(msg);
    };
    const got: Record<string, any[]> = { o1: [], o2: [], o3: [] };
    for (const k of Object.keys(got)) helper.getNode(k).on('input', (m: any) => got[k].push(m));
    const registrations: any[] = [];
    helper.getNode('events').on('input', (m: any) => m.topic === 'registration' && registrations.push(m));
    // start the clients (they register and take the informative response)
    for (const i of [1, 2, 3]) input(`c${i}`, {});
    await waitFor(() => Object.values(got).every((a) => a.length === 1) && registrations.length === 3, 'the first notification and the registration of every client', 3000);
    for (const a of Object.values(got)) {
      assert.equal(a[0].coap.via, 'last_notif');
      assert.deepEqual(a[0].payload, { armed: false });
    }
    input('srv', { payload: { armed: true } });
    await waitFor(() => Object.values(got).every((a) => a.length === 2), 'the second notification at every client', 3000);
    for (const a of Object.values(got)) {
      assert.equal(a[1].coap.via, 'multicast');
      assert.deepEqual(a[1].payload, { armed: true });
      assert.equal(a[1].topic, `coap://127.0.0.6:${port}`);
      assert.ok(a[1].coap.sequence > a[0].coap.sequence);
    }
    assert.equal(registrations[2].payload.count, 3);
    await dones.assertOncePer(inputs.map((m) => m._msgid));
  });

  it('a client node registering through a coap-group-proxy gets every notification relayed on its own token; the server counts the proxy once', async function () {
    const port = await freeUnicastPort('127.0.0.7');
    const groupPort = await freeGroupPort('239.255.0.79');
    const flow = [
      { id: 'srv', type: 'coap-observe-multicast', mode: 'server', address: '127.0.0.7', port, path: '/alarm', group: '239.255.0.79', groupPort, threshold: 1, contentFormat: 'text/plain', minInterval: 0, initial: 'calm', wires: [['events']] },
      { id: 'events', type: 'helper' },
      { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', allow: '127.0.0.1', wires: [] },
      ...[1, 2].map((i) => ({ id: `c${i}`, type: 'coap-observe-multicast', mode: 'client', uri: `coap://127.0.0.7:${port}/alarm`, bindAddress: '127.0.0.1', autoStart: false, payloadMode: 'string', wires: [[`o${i}`]] })),
      { id: 'o1', type: 'helper' },
      { id: 'o2', type: 'helper' },
    ];
    await helper.load([observeNode, proxyNode, endpointNode], flow);
    const ep = await helper.getNode('pl').getEndpoint();
    const proxy = `coap://127.0.0.1:${ep.transport.address().port}`;
    // the proxy's port is only known now: msg.proxy gives it to the client nodes
    for (const i of [1, 2]) helper.getNode(`c${i}`).receive({ url: `coap://127.0.0.7:${port}/alarm`, proxy });
    const got: Record<string, any[]> = { o1: [], o2: [] };
    for (const k of Object.keys(got)) helper.getNode(k).on('input', (m: any) => got[k].push(m));
    const registrations: any[] = [];
    helper.getNode('events').on('input', (m: any) => m.topic === 'registration' && registrations.push(m));
    await waitFor(() => got.o1.length >= 1 && got.o2.length >= 1, 'a notification at both observers', 3000);
    helper.getNode('srv').receive({ payload: 'ALARM' });
    await waitFor(() => got.o1.some((m) => m.payload === 'ALARM') && got.o2.some((m) => m.payload === 'ALARM'), '"ALARM" at both observers', 3000);
    assert.equal(registrations.length, 1, 'the proxy registered once for both clients');
    assert.ok([...got.o1, ...got.o2].every((m) => m.coap.via === 'unicast'));
    assert.notEqual(got.o1[0].coap.token, got.o2[0].coap.token);
  });

  it('two client nodes on one coap-endpoint observe one group resource through its socket: each gets every notification once, and removing one keeps the other going', async function () {
    const flow = [...(await twoClientsOneEndpoint('239.255.0.81')), ...completeWatch(['c1', 'c2'])];
    await helper.load([observeNode, endpointNode, ...WATCH_NODES], flow);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const got: Record<string, Msg[]> = { o1: [], o2: [] };
    const waiters: (() => void)[] = [];
    for (const k of Object.keys(got))
      helper.getNode(k).on('input', (m: Msg) => {
        got[k].push(m);
        for (const w of waiters.splice(0)) w();
      });
    const until = async (pred: () => boolean) => {
      while (!pred()) await new Promise<void>((r) => waiters.push(r));
    };
    const payloads = (k: string) => got[k].map((m) => m.payload);
    const registrations: Msg[] = [];
    helper.getNode('events').on('input', (m: Msg) => m.topic === 'registration' && registrations.push(m));
    const starts = [{ _msgid: 's1' }, { _msgid: 's2' }];
    helper.getNode('c1').receive(starts[0]);
    helper.getNode('c2').receive(starts[1]);
    await until(() => got.o1.length === 1 && got.o2.length === 1);
    await dones.assertOncePer(['s1', 's2']);
    // both registered from the endpoint's own socket: no private socket behind either node
    const ep = await helper.getNode('ep').getEndpoint();
    const epPort = ep.transport.address().port;
    assert.deepEqual(registrations.map((r) => r.payload.client.port), [epPort, epPort]);
    assert.equal(got.o1[0].coap.via, 'last_notif');

    // Each state reaches each node once: a duplicate of 'A' would be delivered before 'B' (one datagram each).
    helper.getNode('srv').receive({ payload: 'A' });
    helper.getNode('srv').receive({ payload: 'B' });
    await until(() => payloads('o1').includes('B') && payloads('o2').includes('B'));
    assert.deepEqual(payloads('o1'), ['calm', 'A', 'B']);
    assert.deepEqual(payloads('o2'), ['calm', 'A', 'B']);
    assert.ok([...got.o1, ...got.o2].slice(1).every((m) => m.coap.via !== 'unicast'));
    assert.ok(got.o1.slice(1).every((m) => m.coap.via === 'multicast') && got.o2.slice(1).every((m) => m.coap.via === 'multicast'));

    // A deploy that removes c1: c1 leaves the group and the shared token, c2 keeps both.
    await helper.setFlows(flow.filter((n) => n.id !== 'c1'), 'nodes');
    helper.getNode('srv').receive({ payload: 'C' });
    helper.getNode('srv').receive({ payload: 'D' });
    await until(() => payloads('o2').includes('D'));
    assert.deepEqual(payloads('o2'), ['calm', 'A', 'B', 'C', 'D']);
    assert.deepEqual(payloads('o1'), ['calm', 'A', 'B'], 'the removed node sends nothing more');
  });

  it('a start overtaken while it waits for the endpoint (by a second start or by msg.cancel) registers nothing', async function () {
    const flow = await twoClientsOneEndpoint('239.255.0.82');
    await helper.load([observeNode, endpointNode], flow);
    const got: Record<string, Msg[]> = { o1: [], o2: [] };
    for (const k of Object.keys(got)) helper.getNode(k).on('input', (m: Msg) => got[k].push(m));
    const registrations: Msg[] = [];
    helper.getNode('events').on('input', (m: Msg) => m.topic === 'registration' && registrations.push(m));
    // c1: a start cancelled in the same turn, before its endpoint await returns
    helper.getNode('c1').receive({});
    helper.getNode('c1').receive({ cancel: true });
    // c2: two starts in the same turn; only the second may register
    helper.getNode('c2').receive({});
    helper.getNode('c2').receive({});
    await waitFor(() => got.o2.length === 1, 'the first notification at c2', 3000);
    // a notification after every registration sent so far was answered: a stray registration would have arrived
    helper.getNode('srv').receive({ payload: 'A' });
    await waitFor(() => got.o2.length === 2, 'the notification A at c2', 3000);
    assert.equal(registrations.length, 1, 'one registration: the overtaken starts installed no observer');
    assert.deepEqual(got.o1, []);
    assert.deepEqual(got.o2.map((m) => m.payload), ['calm', 'A']);
  });
});
