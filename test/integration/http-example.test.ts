// The HTTP cross-proxy example flow (docs/examples/, to move to examples/ once the coap-group-server node is on the
// branch) deployed in a Node-RED runtime: its three coap-group-server lamps are stood in for by GroupServers on the
// same addresses (127.0.1.2-4) here, the rest runs as shipped (fixed ports moved to free ones): the inject fires at
// deploy, http request -> HTTP front -> group -> splitter gives one message per lamp and a report with none missing.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { CODES } from '../../src/coap/codes';
import { GroupServer } from '../../src/group/group-server';
import { Msg, collect } from '../support/flow';
import { freeGroupPort } from '../support/lamps';
import { coreNode, nodeRedRuntime } from '../support/node-red-runtime';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
const root = path.resolve(__dirname, '..', '..', '..');
const FILE = path.join(root, 'docs', 'examples', 'HTTP to a CoAP group - http request through the cross-proxy.json');
const NODES = ['coap-endpoint', 'coap-group-proxy', 'coap-response-splitter'].map((n) => require(path.join(root, 'dist', 'nodes', n)));
const CORE = ['common/20-inject.js', 'common/90-comment.js', 'network/21-httprequest.js'].map((f) => coreNode(f));

helper.init(nodeRedRuntime());

function freeTcpPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

describe('example: HTTP to a CoAP group through the cross-proxy (Node-RED http request -> splitter)', function () {
  this.timeout(20000);
  const lamps: GroupServer[] = [];
  afterEach(async function () {
    await helper.unload();
    await Promise.all(lamps.splice(0).map((l) => l.close()));
  });

  it('deployed as shipped: one message per lamp with msg.topic = that lamp, and a report with none missing', async function () {
    const groupPort = await freeGroupPort('239.255.1.1');
    const httpPort = await freeTcpPort();
    const text = fs.readFileSync(FILE, 'utf8').replace(/\b5683\b/g, String(groupPort)).replace(/\b5694\b/g, String(httpPort));
    const shipped: Msg[] = JSON.parse(text);
    for (const n of shipped.filter((x) => x.type === 'coap-group-server')) {
      const s = await GroupServer.open({ address: n.address, port: 0, groups: [{ address: n.group, port: groupPort }], leisure: 50 });
      const initial = JSON.parse(n.initial);
      s.addResource(n.path, () => ({ code: CODES.CONTENT, contentFormat: 50, payload: JSON.stringify(initial) }));
      lamps.push(s);
    }
    assert.equal(lamps.length, 3);
    const flow = shipped.filter((x) => x.type !== 'coap-group-server').map((n) => (n.type === 'debug' ? { id: n.id, z: n.z, name: n.name, type: 'helper', wires: [] } : n));
    const byName = (name: string) => helper.getNode(flow.find((x) => x.name === name)!.id);
    await helper.load([...NODES, ...CORE], flow);
    const perLamp = collect(byName('one message per lamp'), (m) => m.length >= 3);
    const report = collect(byName('who answered'), (m) => m.length >= 1);
    const msgs = await perLamp;
    assert.deepEqual(msgs.map((m) => m.topic).sort(), lamps.map((l) => `coap://${l.address().address}:${l.address().port}`).sort());
    assert.deepEqual(msgs.map((m) => JSON.parse(m.payload.toString()).name).sort(), ['lamp-1', 'lamp-2', 'lamp-3']);
    const [r] = await report;
    assert.deepEqual(r.payload.missing, []);
    assert.deepEqual(r.payload.answered, ['lamp-1', 'lamp-2', 'lamp-3']);
  });
});
