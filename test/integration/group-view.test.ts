// The live group view's data as the editor receives it: what coap-group-request and coap-group-proxy nodes
// publish over RED.comms while they run in a Node-RED runtime against lamps on loopback multicast.

import assert from 'node:assert/strict';
import { collect } from '../support/flow';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll } from '../support/lamps';
import { nodeRedRuntime } from '../support/node-red-runtime';
import { MAX_EXCHANGES, NodeView, VIEW_TOPIC } from '../../nodes/lib/group-view';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupRequestNode = require('../../nodes/coap-group-request');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const proxyNode = require('../../nodes/coap-group-proxy');

helper.init(nodeRedRuntime());

interface Published {
  topic: string;
  data: NodeView | null;
  retain?: boolean;
}

/** Every comms message the runtime sends to editors on the view's topics, as a websocket client would get it. */
function watchView(): { got: Published[]; until(pred: (p: Published) => boolean): Promise<Published>; stop(): void } {
  const got: Published[] = [];
  const waiters: { pred: (p: Published) => boolean; resolve: (p: Published) => void }[] = [];
  const listener = (e: Published) => {
    if (!e.topic.startsWith(`${VIEW_TOPIC}/`)) return;
    // what goes over the websocket is JSON: check the data survives it
    const p = { topic: e.topic, data: JSON.parse(JSON.stringify(e.data)), retain: e.retain };
    got.push(p);
    for (const w of [...waiters]) if (w.pred(p)) waiters.splice(waiters.indexOf(w), 1), w.resolve(p);
  };
  helper._events.on('comms', listener);
  return {
    got,
    until: (pred) => {
      const hit = got.find(pred);
      return hit ? Promise.resolve(hit) : new Promise((resolve) => waiters.push({ pred, resolve }));
    },
    stop: () => helper._events.removeListener('comms', listener),
  };
}

describe('group view: what the sidebar tab is sent', function () {
  this.timeout(20000);
  let port: number;
  let lamps: Lamp[];
  let stopped: Lamp[] = [];

  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(4, { groupPort: port, leisure: 60 });
  });
  after(async function () {
    await stopAll(lamps.filter((l) => !stopped.includes(l)).map((l) => l.server));
  });
  afterEach(async function () {
    await helper.unload();
  });

  const flow = (allow: string) => [
    { id: 'ce', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
    { id: 'req', type: 'coap-group-request', name: 'kitchen', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 1, wires: [['out']] },
    { id: 'viaProxy', type: 'coap-group-request', endpoint: 'ce', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 2, multicastTimeout: 1, wires: [['out2']] },
    { id: 'proxy', type: 'coap-group-proxy', name: 'the proxy', listen: 'pl', upstream: 'pu', allow },
    { id: 'out', type: 'helper' },
    { id: 'out2', type: 'helper' },
  ];

  it('a group request node publishes one exchange per request: a cell per member with its code and latency, then who is missing', async function () {
    const view = watchView();
    try {
      await helper.load([endpointNode, groupRequestNode, proxyNode], flow('127.0.0.1'));
      const req = helper.getNode('req');
      const ended = (n: number) => view.until((p) => p.topic === `${VIEW_TOPIC}/req` && !!p.data && p.data.exchanges.filter((e) => e.ended).length >= n);
      let complete = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
      req.receive({});
      const answers = (await complete).filter((m) => !m.complete);
      assert.equal(answers.length, lamps.length);
      const first = (await ended(1)).data!;
      assert.equal(first.kind, 'request');
      assert.equal(first.name, 'kitchen');
      assert.equal(first.exchanges.length, 1);
      const ex1 = first.exchanges[0];
      assert.equal(ex1.target, `coap://${GROUP_V4}:${port}/light`);
      assert.deepEqual(new Set(ex1.cells.map((c) => c.member)), new Set(answers.map((m) => m.topic)), 'one cell per member that answered, named as msg.topic names it');
      for (const c of ex1.cells) {
        assert.equal(c.code, '2.05');
        assert.ok(c.latency >= 0 && c.latency < 1000, `latency ${c.latency} within the 1 s exchange`);
      }
      assert.deepEqual(ex1.missing, []);
      assert.equal((await view.until((p) => p.topic === `${VIEW_TOPIC}/req`)).retain, true, 'retained for editors that connect later');

      // one lamp goes away: the next exchange shows it missing
      const gone = lamps[3];
      await gone.server.close();
      stopped.push(gone);
      complete = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
      req.receive({});
      await complete;
      const second = (await ended(2)).data!;
      assert.equal(second.exchanges.length, 2);
      const ex2 = second.exchanges[1];
      assert.equal(ex2.cells.length, 3);
      const goneUri = answers.find((m) => m.coap.origin.address === gone.address)!.topic;
      assert.deepEqual(ex2.missing, [goneUri]);
    } finally {
      view.stop();
    }
  });

  it(`history is bounded: at most ${MAX_EXCHANGES} exchanges per node, the newest kept`, async function () {
    this.timeout(30000);
    const view = watchView();
    try {
      await helper.load([endpointNode, groupRequestNode, proxyNode], flow('127.0.0.1'));
      const req = helper.getNode('req');
      const n = MAX_EXCHANGES + 2;
      const complete = collect(helper.getNode('out'), (m) => m.filter((x) => x.complete).length >= n);
      for (let i = 0; i < n; i++) req.receive({ timeout: '300ms' });
      await complete;
      const last = (await view.until((p) => p.topic === `${VIEW_TOPIC}/req` && !!p.data && p.data.exchanges.filter((e) => e.ended).length >= MAX_EXCHANGES)).data!;
      assert.equal(last.exchanges.length, MAX_EXCHANGES);
    } finally {
      view.stop();
    }
  });

  it('a proxy node publishes its exchanges per client and its counters: relayed, rejected', async function () {
    const view = watchView();
    try {
      await helper.load([endpointNode, groupRequestNode, proxyNode], flow('127.0.0.1'));
      const ep = await helper.getNode('pl').getEndpoint();
      const proxyUri = `coap://127.0.0.1:${ep.transport.address().port}`;
      const complete = collect(helper.getNode('out2'), (m) => m.some((x) => x.complete));
      helper.getNode('viaProxy').receive({ proxy: proxyUri });
      const msgs = await complete;
      const members = msgs.filter((m) => !m.complete).length;
      assert.ok(members >= 3);
      const p = (await view.until((x) => x.topic === `${VIEW_TOPIC}/proxy` && !!x.data?.counters && x.data.counters.relayed >= members && x.data.exchanges.some((e) => e.ended))).data!;
      assert.equal(p.kind, 'proxy');
      assert.equal(p.counters!.rejected, 0);
      assert.equal(p.counters!.rateLimited, 0);
      const ex = p.exchanges[0];
      assert.match(ex.client!, /^coap:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(ex.cells.length, members);
      assert.ok(ex.cells.every((c) => c.code === '2.05'));
    } finally {
      view.stop();
    }
  });

  it('a proxy that refuses a client: rejected counted, the exchange carries the 4.01', async function () {
    const view = watchView();
    try {
      await helper.load([endpointNode, groupRequestNode, proxyNode], flow('127.0.0.200'));
      const ep = await helper.getNode('pl').getEndpoint();
      const complete = collect(helper.getNode('out2'), (m) => m.some((x) => x.complete));
      helper.getNode('viaProxy').receive({ proxy: `coap://127.0.0.1:${ep.transport.address().port}` });
      await complete;
      const p = (await view.until((x) => x.topic === `${VIEW_TOPIC}/proxy` && (x.data?.counters?.rejected ?? 0) >= 1)).data!;
      assert.equal(p.counters!.relayed, 0);
      assert.equal(p.exchanges[0].errors[0].code, '4.01');
      const r = (await view.until((x) => x.topic === `${VIEW_TOPIC}/viaProxy` && !!x.data?.exchanges[0]?.ended)).data!;
      assert.equal(r.exchanges[0].errors[0].code, '4.01', 'the requesting node shows the proxy\'s answer too');
      assert.equal(r.exchanges[0].cells.length, 0);
    } finally {
      view.stop();
    }
  });

  it('a node removed by a redeploy is dropped from the view (an empty retained state)', async function () {
    const view = watchView();
    try {
      await helper.load([endpointNode, groupRequestNode, proxyNode], flow('127.0.0.1'));
      const complete = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
      helper.getNode('req').receive({ timeout: '300ms' });
      await complete;
      await view.until((p) => p.topic === `${VIEW_TOPIC}/req` && !!p.data?.exchanges[0]?.ended);
      await helper.setFlows(flow('127.0.0.1').filter((n) => n.id !== 'req' && n.id !== 'out'), 'full');
      const removed = await view.until((p) => p.topic === `${VIEW_TOPIC}/req` && p.data === null);
      assert.equal(removed.retain, false);
    } finally {
      view.stop();
    }
  });
});
