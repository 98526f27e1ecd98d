// The coap-endpoint config node owns its socket and its users (as Node-RED's MQTT broker node does): a bad
// configuration fails its users, users share one socket, server-role users share it through a router, nodes
// without an endpoint share one visible default endpoint, and the socket closes with its last user.

import assert from 'node:assert/strict';
import { DoneCounter, Msg, WATCH_NODES, callsOf, collect, completeWatch, statusOf } from '../support/flow';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll } from '../support/lamps';
import { nodeRedRuntime } from '../support/node-red-runtime';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupRequestNode = require('../../nodes/coap-group-request');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const proxyNode = require('../../nodes/coap-group-proxy');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupServerNode = require('../../nodes/coap-group-server');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupResponseNode = require('../../nodes/coap-group-response');

helper.init(nodeRedRuntime());
const NODES = [endpointNode, groupRequestNode, proxyNode, groupServerNode, groupResponseNode, ...WATCH_NODES];


describe('nodes: coap-endpoint owns its socket and its users', function () {
  this.timeout(15000);
  let port: number;
  let lamps: Lamp[];
  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(2, { groupPort: port, leisure: 50, firstHost: 140 });
  });
  after(async function () {
    await stopAll(lamps.map((l) => l.server));
  });
  afterEach(async function () {
    await helper.unload();
  });

  const req = (id: string, extra: Record<string, unknown> = {}) => ({ id, type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.5, payloadMode: 'auto', wires: [['out']], ...extra });

  for (const badPort of ['abc', 70000, '1.5']) {
    it(`an endpoint with port ${JSON.stringify(badPort)} fails its users with a red status; nothing is sent from another socket`, async function () {
      const flow = [{ id: 'ep', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: badPort, multicastInterface: '127.0.0.1' }, req('req'), { id: 'out', type: 'helper' }, ...completeWatch(['req'])];
      await helper.load(NODES, flow);
      assert.ok(callsOf(helper.getNode('ep'), 'error').length > 0, 'the endpoint logs its configuration error');
      const n = helper.getNode('req');
      // broadcast at registration, before any message
      const s = await statusOf(n, (x) => x.fill === 'red');
      assert.equal(s.text, 'coap-endpoint.status.bad-config');
      const dones = new DoneCounter(helper.getNode('cmp-out'));
      const out: Msg[] = [];
      helper.getNode('out').on('input', (m: Msg) => out.push(m));
      const input: Msg = {};
      n.receive(input);
      await dones.assertOncePer([input._msgid]);
      assert.deepEqual(out, [], 'no response and no completion: the request never left');
      assert.match(String(callsOf(n, 'error').at(-1)), /invalid port/);
    });
  }

  it('an endpoint whose socket cannot open (an address this machine does not have) turns its users red at deploy', async function () {
    // 192.0.2.1 is TEST-NET-1 (RFC 5737): not an address of this machine, so bind fails and nothing is sent
    const flow = [{ id: 'ep', type: 'coap-endpoint', bindAddress: '192.0.2.1', port: 0, multicastInterface: '127.0.0.1' }, req('a'), req('b'), { id: 'out', type: 'helper' }];
    await helper.load(NODES, flow);
    for (const id of ['a', 'b']) assert.equal((await statusOf(helper.getNode(id), (x) => x.fill === 'red')).text, 'coap-endpoint.status.failed');
  });

  it('two request nodes on one endpoint use one socket (a member sees one source port)', async function () {
    const member = { id: 'm', type: 'coap-group-server', address: '127.0.0.150', port: 0, group: GROUP_V4, groupPort: port, multicastInterface: '127.0.0.1', path: '/who', leisure: 0.05, mode: 'flow', wires: [['seen', 'resp']] };
    const flow = [{ id: 'ep', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' }, member, { id: 'resp', type: 'coap-group-response' }, { id: 'seen', type: 'helper' }, req('a', { url: `coap://${GROUP_V4}:${port}/who` }), req('b', { url: `coap://${GROUP_V4}:${port}/who` }), { id: 'out', type: 'helper' }];
    await helper.load(NODES, flow);
    await statusOf(helper.getNode('m'), (x) => x.fill === 'green');
    const seen = collect(helper.getNode('seen'), (m) => m.length >= 2);
    const ends = collect(helper.getNode('out'), (m) => m.filter((x) => x.complete).length >= 2);
    helper.getNode('a').receive({});
    helper.getNode('b').receive({});
    const [x, y] = await seen;
    await ends;
    assert.equal(x.coap.origin.uri, y.coap.origin.uri);
    assert.equal(x.coap.origin.address, '127.0.0.1');
  });

  it('nodes without an endpoint share the one default endpoint, whose multicast interface is logged', async function () {
    const member = { id: 'm', type: 'coap-group-server', address: '127.0.0.151', port: 0, group: GROUP_V4, groupPort: port, multicastInterface: '127.0.0.1', path: '/who', leisure: 0.05, mode: 'flow', wires: [['seen', 'resp']] };
    const flow = [member, { id: 'resp', type: 'coap-group-response' }, { id: 'seen', type: 'helper' }, req('a', { endpoint: '', url: `coap://${GROUP_V4}:${port}/who` }), req('b', { endpoint: '', url: `coap://${GROUP_V4}:${port}/who` }), { id: 'out', type: 'helper' }];
    await helper.load(NODES, flow);
    await statusOf(helper.getNode('m'), (x) => x.fill === 'green');
    const seen = collect(helper.getNode('seen'), (m) => m.length >= 2);
    const ends = collect(helper.getNode('out'), (m) => m.filter((x) => x.complete).length >= 2);
    helper.getNode('a').receive({});
    await new Promise<void>((r) => helper.getNode('out').on('input', (m: Msg) => m.complete && r()));
    helper.getNode('b').receive({});
    const [x, y] = await seen;
    await ends;
    assert.equal(x.coap.origin.port, y.coap.origin.port);
    const logs = [...callsOf(helper.getNode('a'), 'log'), ...callsOf(helper.getNode('b'), 'log')].map(String);
    assert.ok(logs.includes('coap-endpoint.log.default'), logs.join(' | '));
  });

  it('a forward and a reverse proxy on one listen endpoint both work (the router, not the last one, decides)', async function () {
    const flow = [
      { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'ep', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'fwd', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', forward: true, allow: '127.0.0.1', wires: [] },
      { id: 'rev', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', forward: false, reverse: [{ host: 'lights.example', group: `coap://${GROUP_V4}:${port}`, standIn: 'group' }], allow: '127.0.0.1', wires: [] },
      req('f', { timeout: 2, multicastTimeout: 1 }),
      req('r', { timeout: 2, url: 'coap://lights.example/light', targetStyle: 'reverse', multicastTimeout: 1 }),
      { id: 'out', type: 'helper' },
    ];
    await helper.load(NODES, flow);
    const e = await helper.getNode('pl').getEndpoint();
    const proxy = `coap://127.0.0.1:${e.transport.address().port}`;
    for (const id of ['f', 'r']) {
      const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
      helper.getNode(id).receive({ proxy });
      const msgs = await got;
      assert.equal(msgs.filter((m) => !m.complete).length, 2, `${id}: ${JSON.stringify(msgs.at(-1)!.coap.errors)}`);
    }
  });

  it('a partial redeploy of a proxy on a fixed listen port: the old proxy lets go of the port before the new one takes it', async function () {
    const listenPort = await freeGroupPort('224.0.1.187'); // any free UDP port
    const flow = (allow: string) => [
      { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: listenPort, multicastInterface: '127.0.0.1' },
      { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', allow, wires: [] },
      req('r', { timeout: 2, multicastTimeout: 1 }),
      { id: 'out', type: 'helper' },
      { id: 'ep', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    ];
    await helper.load(NODES, flow('127.0.0.250'));
    const proxy = `coap://127.0.0.1:${listenPort}`;
    const refused = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    helper.getNode('r').receive({ proxy });
    assert.equal((await refused).at(-1)!.coap.errors[0]?.code, '4.01');
    // only the proxy changes (its allow-list): Node-RED stops and starts that node alone
    await helper.setFlows(flow('127.0.0.1'), 'nodes');
    await statusOf(helper.getNode('proxy'), (x) => x.fill === 'green');
    const ok = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    helper.getNode('r').receive({ proxy });
    const msgs = await ok;
    assert.equal(msgs.filter((m) => !m.complete).length, 2, JSON.stringify(msgs.at(-1)!.coap.errors));
    assert.equal(callsOf(helper.getNode('pl'), 'error').length, 0, 'no bind error on the listen port');
  });

  it('the socket closes with its last user, before that user\'s close completes', async function () {
    await helper.load(NODES, [{ id: 'ep', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' }]);
    const cfg = helper.getNode('ep');
    const users = [{ id: 'u1', status() {} }, { id: 'u2', status() {} }];
    for (const u of users) cfg.register(u);
    const first = await cfg.getEndpoint();
    let closed = false;
    first.transport.once('close', () => (closed = true));
    await new Promise<void>((r) => cfg.deregister(users[0], r, false));
    assert.equal(closed, false, 'still one user');
    await new Promise<void>((r) => cfg.deregister(users[1], r, false));
    assert.equal(closed, true, 'closed before done()');
    // a new user opens a new socket
    cfg.register(users[0]);
    const second = await cfg.getEndpoint();
    assert.notEqual(second, first);
    await new Promise<void>((r) => cfg.deregister(users[0], r, true));
  });
});
