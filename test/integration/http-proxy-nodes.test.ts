// The HTTP front of the coap-group-proxy node in a Node-RED runtime (groupcomm-proxy-07 §9): Node-RED's own
// `http request` node -> the proxy's HTTP front -> 5 lamps; coap-response-splitter turns the batch into one
// message per member with its origin. Also the front served on Node-RED's httpNode app, and behind Node-RED's own
// httpNodeAuth in a Node-RED started as a user starts it (red.js with a settings file).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseBatch } from '../../src/proxy/http-batch-client';
import { collect } from '../support/flow';
import { httpRequest } from '../support/http-client';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll } from '../support/lamps';
import { coreNode, nodeRedRuntime } from '../support/node-red-runtime';
import { ROOT, startNodeRed } from '../browser/packed-node-red';

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

  it('httpNodeAuth (basic) in a Node-RED started from red.js, the front on its httpNode root: no credentials -> 401 and nothing reaches the group; with them, the batch', async function () {
    this.timeout(60000);
    // a user directory with this checkout as an installed package (a symlink, as `npm link` makes it)
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'coap-httpnodeauth-'));
    const userDir = path.join(work, 'user');
    fs.mkdirSync(path.join(userDir, 'node_modules'), { recursive: true });
    fs.writeFileSync(path.join(userDir, 'package.json'), JSON.stringify({ name: 'node-red-project', private: true }));
    const pkgName = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).name;
    fs.symlinkSync(ROOT, path.join(userDir, 'node_modules', pkgName), 'dir');
    const redDir = process.env.COAP_NODE_RED_DIR || ROOT;
    // the password as Node-RED's settings want it: a bcrypt hash (bcryptjs comes with Node-RED)
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const bcrypt = require(require.resolve('bcryptjs', { paths: [path.dirname(require.resolve('node-red/package.json', { paths: [redDir] }))] }));
    const password = `test-${process.pid}`;
    const settings = {
      uiHost: '127.0.0.1',
      flowFile: 'flows.json',
      credentialSecret: false,
      httpNodeAuth: { user: 'lamps', pass: bcrypt.hashSync(password, 8) },
      editorTheme: { tours: false, palette: { catalogues: [] } },
      telemetry: { enabled: false, updateNotification: false },
      logging: { console: { level: 'info' } },
    };
    fs.writeFileSync(path.join(userDir, 'settings.js'), `module.exports = ${JSON.stringify(settings)};\n`);
    fs.writeFileSync(
      path.join(userDir, 'flows.json'),
      JSON.stringify([
        { id: 't1', type: 'tab', label: 'auth' },
        { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: '0', multicastInterface: '127.0.0.1', multicastTtl: '1' },
        { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: '0', multicastInterface: '127.0.0.1', multicastTtl: '1' },
        { id: 'proxy', z: 't1', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', forward: true, groupProxying: true, allow: '127.0.0.1', httpMode: 'node-red', httpPath: '/hc', wires: [] },
      ]),
    );
    const none = { wrap: (cmd: string, args: string[]): [string, string[]] => [cmd, args], close: async () => undefined };
    const nr = await startNodeRed(userDir, none, redDir, process.execPath);
    try {
      const url = `${nr.url}hc?target_uri=${encodeURIComponent(`coap://${GROUP_V4}:${port}/light`)}`;
      // Node-RED listens before it starts the flows: wait for its "Started flows" line
      await new Promise<void>((resolve) => {
        const seen = () => nr.log.some((l) => /Started flows/.test(l));
        if (seen()) return resolve();
        const push = nr.log.push.bind(nr.log);
        nr.log.push = (...lines: string[]) => {
          const n = push(...lines);
          if (seen()) resolve();
          return n;
        };
      });
      // the proxy node mounts its front once its endpoints are open: T' = 0 requests until one is served (204)
      const groupRequests = () => lamps.reduce((a, l) => a + l.server.counters.groupRequests, 0);
      const first = groupRequests();
      for (let i = 0; ; i++) {
        const r = await httpRequest(url, { headers: { 'Multicast-Timeout': '0', Authorization: `Basic ${Buffer.from(`lamps:${password}`).toString('base64')}` } });
        if (r.status === 204) break;
        assert.ok(i < 500 && r.status === 404, `the front did not come up (${r.status})`);
      }
      await new Promise<void>((resolve) => {
        const check = () => (groupRequests() >= first + 5 ? resolve() : setImmediate(check));
        check();
      });
      const before = groupRequests();
      const anonymous = await httpRequest(url, { headers: { 'Multicast-Timeout': '1' } });
      assert.equal(anonymous.status, 401);
      assert.match(anonymous.headers['www-authenticate']!, /^Basic /);
      const wrong = await httpRequest(url, { headers: { 'Multicast-Timeout': '1', Authorization: `Basic ${Buffer.from('lamps:wrong').toString('base64')}` } });
      assert.equal(wrong.status, 401);
      const ok = await httpRequest(url, { headers: { 'Multicast-Timeout': '1', Authorization: `Basic ${Buffer.from(`lamps:${password}`).toString('base64')}` } });
      assert.equal(ok.status, 200);
      const parts = parseBatch(ok.headers['content-type'], ok.body);
      assert.deepEqual(parts.map((p) => p.origin!.address).sort(), lamps.map((l) => l.address).sort());
      // the two refused requests sent nothing: only the admitted one reached the members
      assert.equal(groupRequests(), before + 5);
    } finally {
      await nr.stop();
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
});
