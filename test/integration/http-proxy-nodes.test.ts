// The HTTP front of the coap-group-proxy node in a Node-RED runtime (groupcomm-proxy-07 §9): Node-RED's own
// `http request` node -> the proxy's HTTP front -> 5 lamps; coap-response-splitter turns the batch into one
// message per member with its origin. Also the front served on Node-RED's httpNode app.

import assert from 'node:assert/strict';
import http from 'node:http';
import { AddressInfo } from 'node:net';
import { parseBatch } from '../../src/proxy/http-batch-client';
import { collect } from '../support/flow';
import { httpRequest } from '../support/http-client';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll } from '../support/lamps';
import { coreNode, nodeRedRuntime } from '../support/node-red-runtime';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const proxyNode = require('../../nodes/coap-group-proxy');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const splitterNode = require('../../nodes/coap-response-splitter');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const httpRequestNode = coreNode('network/21-httprequest.js');

helper.init(nodeRedRuntime());

/** A node module that only hands out the httpNode app Node-RED gives to nodes. */
let httpNodeApp: ((req: http.IncomingMessage, res: http.ServerResponse) => void) | undefined;
const captureNode = (RED: { httpNode: typeof httpNodeApp; nodes: { registerType(t: string, f: unknown): void; createNode(n: unknown, d: unknown): void } }) => {
  httpNodeApp = RED.httpNode;
  RED.nodes.registerType('capture-httpnode', function (this: unknown, def: unknown) {
    RED.nodes.createNode(this, def);
  });
};

describe('nodes: coap-group-proxy HTTP front, http request -> coap-response-splitter', function () {
  this.timeout(20000);
  let port: number;
  let lamps: Lamp[];

  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(5, { groupPort: port, leisure: 50, firstHost: 70 });
  });
  after(async function () {
    await stopAll(lamps.map((l) => l.server));
  });
  afterEach(async function () {
    await helper.unload();
  });

  const endpoints = [
    { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
  ];

  it("http request node -> HTTP front on its own port -> splitter: one message per member, msg.topic = its origin, then the report", async function () {
    const members = lamps.map((l, i) => ({ name: `lamp ${i + 1}`, match: l.address }));
    const flow = [
      ...endpoints,
      { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', allow: '127.0.0.1', httpMode: 'port', httpPort: 0, httpHost: '127.0.0.1', httpPath: '/hc' },
      { id: 'req', type: 'http request', method: 'GET', ret: 'bin', url: '', paytoqs: 'ignore', wires: [['split']] },
      { id: 'split', type: 'coap-response-splitter', servers: members, dedup: 'first', wires: [['o0'], ['o1'], ['o2'], ['o3'], ['o4'], ['unknown'], ['report']] },
      ...[0, 1, 2, 3, 4].map((i) => ({ id: `o${i}`, type: 'helper' })),
      { id: 'unknown', type: 'helper' },
      { id: 'report', type: 'helper' },
    ];
    await helper.load([endpointNode, proxyNode, splitterNode, httpRequestNode], flow);
    const addr = (await helper.getNode('proxy').httpAddress()) as AddressInfo;
    assert.ok(addr && addr.port > 0);
    const perMember = [0, 1, 2, 3, 4].map((i) => collect(helper.getNode(`o${i}`), (m) => m.length >= 1));
    const report = collect(helper.getNode('report'), (m) => m.length >= 1);
    helper.getNode('req').receive({
      url: `http://127.0.0.1:${addr.port}/hc?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`,
      headers: { 'Multicast-Timeout': '1' },
    });
    const got = await Promise.all(perMember);
    got.forEach((msgs, i) => {
      assert.equal(msgs[0].coap.origin.address, lamps[i].address);
      assert.equal(msgs[0].topic, `coap://${lamps[i].address}:${lamps[i].server.address().port}`);
      assert.equal(msgs[0].statusCode, 200);
      assert.equal(JSON.parse(msgs[0].payload.toString()).name, lamps[i].name);
    });
    const [r] = await report;
    assert.deepEqual(r.payload.missing, []);
    assert.equal(r.payload.answered.length, 5);
  });

  it('served on Node-RED\'s httpNode app under the configured path; removed again on redeploy', async function () {
    const flow = [...endpoints, { id: 'cap', type: 'capture-httpnode' }, { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', allow: '127.0.0.1', httpMode: 'node-red', httpPath: '/groups' }];
    await helper.load([endpointNode, proxyNode, captureNode], flow);
    await helper.getNode('proxy').httpAddress();
    const app = httpNodeApp!;
    // as in Node-RED, the httpNode app is mounted under httpNodeRoot (here /api) in an outer Express app
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const outer = require('express')();
    outer.use('/api', app);
    const server = http.createServer(outer);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/groups`;
      const r = await httpRequest(`${base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, { headers: { 'Multicast-Timeout': '1' } });
      assert.equal(r.status, 200);
      assert.equal(new Set(parseBatch(r.headers['content-type'], r.body).map((p) => p.origin!.address)).size, 5);
      // the path form of RFC 8075 §5.4 under the mount too
      const pathForm = await httpRequest(`${base}/coap://${GROUP_V4}:${port}/light`, { headers: { 'Multicast-Timeout': '1' } });
      assert.equal(pathForm.status, 200);
      assert.equal(parseBatch(pathForm.headers['content-type'], pathForm.body).length, 5);
      await helper.unload();
      const after = await httpRequest(`${base}?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`, { headers: { 'Multicast-Timeout': '1' } });
      assert.equal(after.status, 404, 'the route is gone with the node');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
