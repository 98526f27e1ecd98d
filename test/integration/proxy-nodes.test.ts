// coap-group-proxy and coap-group-request in proxy mode inside a Node-RED runtime, against 5 lamps on loopback.

import assert from 'node:assert/strict';
import { CODES } from '../../src/coap/codes';
import { DoneCounter, Msg, WATCH_NODES, collect as until, completeWatch } from '../support/flow';
import { nodeRedRuntime } from '../support/node-red-runtime';
import { GROUP_V4, freeGroupPort, lampsForSuite, startLamps } from '../support/lamps';
import { waitFor } from '../support/wait';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupRequestNode = require('../../nodes/coap-group-request');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const proxyNode = require('../../nodes/coap-group-proxy');

helper.init(nodeRedRuntime());

/**
 * helper.load with a Complete and a Catch node watching the request nodes; input() gives each message its own id,
 * and checkDones() asserts that each input was finished (done() or done(err)) exactly once.
 */
let watched: { dones: DoneCounter; ids: string[] } | undefined;
let msgCounter = 0;
async function load(nodes: unknown[], flow: Record<string, unknown>[], credentials?: unknown): Promise<void> {
  const scope = flow.filter((n) => n.type === 'coap-group-request').map((n) => n.id as string);
  await helper.load([...nodes, ...WATCH_NODES], [...flow, ...completeWatch(scope)], credentials);
  watched = { dones: new DoneCounter(helper.getNode('cmp-out')), ids: [] };
}
function input(id: string, msg: Msg): void {
  const m = { ...msg, _msgid: `in-${++msgCounter}` };
  watched!.ids.push(m._msgid);
  helper.getNode(id).receive(m);
}
async function checkDones(): Promise<void> {
  const w = watched;
  watched = undefined;
  if (w) await w.dones.assertOncePer(w.ids);
}

/** After each test: every input was finished exactly once (checked twice: a late done() shows on the second), then unload. */
function unloadAfterEach(): void {
  afterEach(async function () {
    try {
      await checkDones();
      await checkDones();
    } finally {
      watched = undefined;
      await helper.unload();
    }
  });
}


describe('nodes: coap-group-proxy with coap-group-request in proxy mode', function () {
  this.timeout(20000);
  const group = lampsForSuite(5, { leisure: 80 });
  unloadAfterEach();

  const base = (allow: string, reverse: unknown[] = []) => [
    { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', allow, reverse, events: true, outputs: 1, wires: [['events']] },
    { id: 'events', type: 'helper' },
    { id: 'req', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${group.port}/light`, timeout: 2, multicastTimeout: 1, payloadMode: 'auto', wires: [['out']] },
    { id: 'out', type: 'helper' },
  ];

  async function proxyUri(): Promise<string> {
    // the listen endpoint is bound to an ephemeral port: ask the config node where
    const ep = await helper.getNode('pl').getEndpoint();
    return `coap://127.0.0.1:${ep.transport.address().port}`;
  }

  it('one request through the proxy node: 5 messages whose origin is the lamp named in Reply-From, then completion', async function () {
    await load([endpointNode, groupRequestNode, proxyNode], base('127.0.0.1'));
    const proxy = await proxyUri();
    const done = until(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const events = until(helper.getNode('events'), (m) => m.filter((x) => x.topic === 'response').length >= 5);
    input('req', { proxy });
    const msgs = await done;
    const responses = msgs.filter((m) => !m.complete);
    assert.equal(responses.length, 5);
    assert.deepEqual(new Set(responses.map((m) => m.coap.origin.address)), new Set(group.lamps.map((l) => l.address)));
    for (const m of responses) {
      assert.ok(m.coap.options['Reply-From'], 'option 248 shown by name');
      assert.equal(m.topic, m.coap.origin.uri);
      assert.equal(m.payload.name, group.lamps.find((l) => l.address === m.coap.origin.address)!.name);
    }
    const ev = await events;
    // RFC 9175 §2.4: the proxy first verified the client's address (4.01 with Echo), then fanned out once.
    assert.equal(ev[0].topic, 'challenge');
    assert.equal(ev[0].payload.code, '4.01');
    const requests = ev.filter((x) => x.topic === 'request');
    assert.equal(requests.length, 1);
    assert.equal(requests[0].payload.multicastTimeout, 1);
  });

  it('a client outside the allow-list: completion reports 4.01 and the proxy emits a reject event', async function () {
    await load([endpointNode, groupRequestNode, proxyNode], base('127.0.0.200'));
    const proxy = await proxyUri();
    const done = until(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const events = until(helper.getNode('events'), (m) => m.some((x) => x.topic === 'reject'));
    input('req', { proxy });
    const msgs = await done;
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0].coap.errors[0].code, '4.01');
    const ev = await events;
    assert.equal(ev.find((e) => e.topic === 'reject')!.payload.code, '4.01');
  });

  it('reverse proxy case 1 via the node: a relayed origin carries `via`, and wiring it back reaches that lamp through the proxy', async function () {
    await load([endpointNode, groupRequestNode, proxyNode], base('127.0.0.1', [{ host: 'lights.example', group: `coap://${GROUP_V4}:${group.port}`, standIn: 'servers' }]));
    const proxy = await proxyUri();
    const done = until(helper.getNode('out'), (m) => m.some((x) => x.complete));
    input('req', { proxy, url: 'coap://lights.example/light', targetStyle: 'reverse', multicastTimeout: 1 });
    const msgs = await done;
    const responses = msgs.filter((m) => !m.complete);
    assert.equal(responses.length, 5);
    const pick = responses[1];
    assert.equal(pick.coap.origin.via.uri, proxy);
    const follow = until(helper.getNode('out'), (m) => m.some((x) => x.complete));
    input('req', { ...pick, url: `${pick.coap.origin.uri}/light`, proxy: '' });
    const after = await follow;
    assert.equal(after.length, 2);
    // answered by the proxy standing in for the lamp: the origin is the lamp (msg.topic names it), reached via the proxy
    assert.equal(after[0].coap.origin.address, pick.coap.origin.address);
    assert.equal(after[0].topic, pick.coap.origin.uri);
    assert.equal(after[0].coap.origin.via.address, '127.0.0.1');
    assert.equal(after[0].payload.name, group.lamps.find((l) => l.address === pick.coap.origin.address)!.name);
  });
});

describe('nodes: OSCORE between coap-group-request and coap-group-proxy', function () {
  this.timeout(20000);
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const oscoreContextNode = require('../../nodes/coap-oscore-context');
  const group = lampsForSuite(3, { leisure: 50, firstHost: 60 });
  const secret = require('node:crypto').randomBytes(16).toString('hex');
  unloadAfterEach();

  const flow = (allow: string) => [
    { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    { id: 'cC', type: 'coap-oscore-context', name: 'client to proxy', senderId: 'c1', recipientId: '01', alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: 'memory' },
    { id: 'cP', type: 'coap-oscore-context', name: 'proxy to client', senderId: '01', recipientId: 'c1', alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: 'memory' },
    { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', allow, oscoreContexts: ['cP'], oscoreRequired: true, events: true, outputs: 1, wires: [['events']] },
    { id: 'events', type: 'helper' },
    { id: 'req', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${group.port}/light`, timeout: 2, multicastTimeout: 1, payloadMode: 'auto', oscoreProxy: 'cC', wires: [['out']] },
    { id: 'plain', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${group.port}/light`, timeout: 2, multicastTimeout: 1, wires: [['out2']] },
    { id: 'out', type: 'helper' },
    { id: 'out2', type: 'helper' },
  ];
  const credentials = { cC: { masterSecret: secret }, cP: { masterSecret: secret } };

  it('the proxy removes the client\'s OSCORE layer, allow-lists it by kid, and relays protected responses the node verifies', async function () {
    await load([endpointNode, groupRequestNode, proxyNode, oscoreContextNode], flow('kid:c1'), credentials);
    const ep = await helper.getNode('pl').getEndpoint();
    const proxy = `coap://127.0.0.1:${ep.transport.address().port}`;
    const done = until(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const events: Msg[] = [];
    helper.getNode('events').on('input', (m: Msg) => events.push(m));
    input('req', { proxy });
    const msgs = await done;
    const responses = msgs.filter((m) => !m.complete);
    assert.equal(responses.length, 3);
    assert.deepEqual(new Set(responses.map((m) => m.coap.origin.address)), new Set(group.lamps.map((l) => l.address)));
    assert.ok(responses.every((m) => typeof m.payload === 'object' && m.payload.name));
    assert.equal(events.find((e) => e.topic === 'request')!.payload.client.kid, 'c1');
    // without OSCORE the same client is refused
    const refused = until(helper.getNode('out2'), (m) => m.some((x) => x.complete));
    input('plain', { proxy });
    const r = await refused;
    assert.equal(r[0].coap.errors[0].code, '4.01');
    // no secret in any message
    assert.ok(!JSON.stringify([...msgs, ...r, ...events]).includes(secret));
  });

  it('a client whose OSCORE identity is not on the allow-list gets 4.01', async function () {
    await load([endpointNode, groupRequestNode, proxyNode, oscoreContextNode], flow('kid:77'), credentials);
    const ep = await helper.getNode('pl').getEndpoint();
    const done = until(helper.getNode('out'), (m) => m.some((x) => x.complete));
    input('req', { proxy: `coap://127.0.0.1:${ep.transport.address().port}` });
    const msgs = await done;
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0].coap.errors[0].code, '4.01');
  });
});

describe('nodes: two OSCORE layers (client-proxy outside, end to end inside) through coap-group-proxy', function () {
  this.timeout(20000);
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const oscoreContextNode = require('../../nodes/coap-oscore-context');
  it('the server sees the inner request, the proxy only its own layer, and the node verifies both layers of every response', async function () {
    const { groupKeys, startOscoreLamps } = await import('../support/oscore-group');
    const port = await freeGroupPort();
    const keys = groupKeys(1);
    const [lamp] = await startOscoreLamps(1, { groupPort: port, keys, clientIds: ['c7'] });
    const cpSecret = require('node:crypto').randomBytes(16).toString('hex');
    try {
      const flow = [
        { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
        { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
        { id: 'cC', type: 'coap-oscore-context', senderId: 'c1', recipientId: '01', alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: 'memory' },
        { id: 'cP', type: 'coap-oscore-context', senderId: '01', recipientId: 'c1', alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: 'memory' },
        { id: 'cE', type: 'coap-oscore-context', senderId: 'c7', recipientId: keys.serverIds[0], alg: '10', hkdf: 'SHA-256', replayWindow: 32, sequenceStore: 'memory' },
        { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', allow: 'kid:c1', oscoreContexts: ['cP'], wires: [] },
        { id: 'req', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 2, multicastTimeout: 1, payloadMode: 'auto', oscoreProxy: 'cC', oscoreEndToEnd: 'cE', wires: [['out']] },
        { id: 'out', type: 'helper' },
      ];
      const credentials = {
        cC: { masterSecret: cpSecret }, cP: { masterSecret: cpSecret },
        cE: { masterSecret: keys.masterSecret.toString('hex'), masterSalt: keys.masterSalt.toString('hex') },
      };
      await load([endpointNode, groupRequestNode, proxyNode, oscoreContextNode], flow, credentials);
      const ep = await helper.getNode('pl').getEndpoint();
      const done = until(helper.getNode('out'), (m) => m.some((x) => x.complete));
      input('req', { proxy: `coap://127.0.0.1:${ep.transport.address().port}` });
      const msgs = await done;
      const responses = msgs.filter((m) => !m.complete);
      assert.deepEqual(msgs[msgs.length - 1].coap.errors, []);
      assert.equal(responses.length, 1);
      assert.deepEqual(responses[0].payload, { name: lamp.name });
      assert.equal(responses[0].coap.origin.address, lamp.address);
      assert.deepEqual(lamp.seen, [{ code: CODES.GET, path: '/light' }]);
      await checkDones();
    } finally {
      watched = undefined;
      await helper.unload();
      await lamp.server.close();
    }
  });
});

describe('nodes: Multicast-Timeout 0 through the proxy node', function () {
  this.timeout(10000);
  it('T\' = 0 (relay nothing) still completes the exchange: completion message and status', async function () {
    const port = await freeGroupPort();
    const [lamp] = await startLamps(1, { groupPort: port, firstHost: 95 });
    try {
      const flow = [
        { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
        { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
        { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', allow: '127.0.0.1', wires: [] },
        { id: 'req', type: 'coap-group-request', endpoint: 'ce', method: 'PUT', url: `coap://${GROUP_V4}:${port}/light`, contentFormat: 'text/plain', timeout: 2, multicastTimeout: 0, wires: [['out']] },
        { id: 'out', type: 'helper' },
      ];
      await load([endpointNode, groupRequestNode, proxyNode], flow);
      const ep = await helper.getNode('pl').getEndpoint();
      const req = helper.getNode('req');
      // the exchange ended in the node: its status turns from waiting (blue) to done (green)
      const done = new Promise<void>((resolve) => req.on('call:status', (c: { args: { fill?: string }[] }) => c.args[0].fill === 'green' && resolve()));
      const out = until(helper.getNode('out'), (m) => m.some((x) => x.complete));
      input('req', { proxy: `coap://127.0.0.1:${ep.transport.address().port}`, payload: 'on' });
      const msgs = await out;
      await done;
      assert.equal(msgs.length, 1);
      assert.equal(msgs[0].coap.responses, 0);
      // the forwarded request reaches the lamp on its own: wait for that event, not for a fixed time
      await waitFor(() => lamp.state.on, 'the group to get the request', 5000);
      await checkDones();
    } finally {
      watched = undefined;
      await helper.unload();
      await lamp.server.close();
    }
  });
});
