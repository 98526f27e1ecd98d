// coap-group-server and coap-group-response in a Node-RED runtime: Node-RED as members of a group on real loopback
// multicast, asked by a coap-group-request node in the same flow, as a user would wire them.

import assert from 'node:assert/strict';
import { DoneCounter, Msg, WATCH_NODES, callsOf, collect, completeWatch, statusOf } from '../support/flow';
import { GROUP_V4, freeGroupPort } from '../support/lamps';
import { coreNode, nodeRedRuntime } from '../support/node-red-runtime';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupRequestNode = require('../../nodes/coap-group-request');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupServerNode = require('../../nodes/coap-group-server');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupResponseNode = require('../../nodes/coap-group-response');
const changeNode = coreNode('function/15-change.js');

helper.init(nodeRedRuntime());

const NODES = [endpointNode, groupRequestNode, groupServerNode, groupResponseNode, changeNode, ...WATCH_NODES];


describe('nodes: coap-group-server (Node-RED as a group member)', function () {
  this.timeout(15000);
  let port: number;

  before(async function () {
    port = await freeGroupPort();
  });
  afterEach(async function () {
    await helper.unload();
  });

  const client = { id: 'ep', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1', multicastTtl: 1 };
  const member = (n: number, extra: Record<string, unknown> = {}) => ({
    id: `m${n}`,
    type: 'coap-group-server',
    address: `127.0.0.${n + 1}`,
    port: 0,
    group: GROUP_V4,
    groupPort: port,
    multicastInterface: '127.0.0.1',
    path: '/light',
    leisure: 0.1,
    mode: 'state',
    writable: true,
    observable: true,
    contentFormat: 'application/json',
    initial: JSON.stringify({ name: `lamp-${n}`, on: false }),
    wires: [['written']],
    ...extra,
  });
  const request = (extra: Record<string, unknown> = {}) => ({ id: 'req', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.8, payloadMode: 'auto', wires: [['out']], ...extra });

  async function ready(ids: string[]): Promise<void> {
    // a member is serving once it shows its green status
    await Promise.all(ids.map((id) => statusOf(helper.getNode(id), (s) => s.fill === 'green')));
  }

  it('three members in state mode: a group GET gets one response per member, from its own unicast address, with its state', async function () {
    const flow = [client, member(1), member(2), member(3), request(), { id: 'out', type: 'helper' }, { id: 'written', type: 'helper' }, ...completeWatch(['req'])];
    await helper.load(NODES, flow);
    await ready(['m1', 'm2', 'm3']);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const input: Msg = {};
    helper.getNode('req').receive(input);
    const msgs = await got;
    const responses = msgs.filter((m) => !m.complete);
    assert.equal(responses.length, 3);
    assert.deepEqual(responses.map((m) => m.coap.origin.address).sort(), ['127.0.0.2', '127.0.0.3', '127.0.0.4']);
    for (const m of responses) {
      const n = Number(m.coap.origin.address.split('.')[3]) - 1;
      assert.deepEqual(m.payload, { name: `lamp-${n}`, on: false });
      assert.equal(m.coap.code, '2.05');
      assert.equal(m.coap.options['Content-Format'], 50);
    }
    await dones.assertOncePer([input._msgid]);
  });

  it('a group PUT changes every member: 2.04 from each, the new state on each member output, merged into the object state', async function () {
    const flow = [client, member(1), member(2), request({ method: 'PUT', contentFormat: 'application/json' }), { id: 'get', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.6, payloadMode: 'auto', wires: [['out2']] }, { id: 'out', type: 'helper' }, { id: 'out2', type: 'helper' }, { id: 'written', type: 'helper' }, ...completeWatch(['req', 'get'])];
    await helper.load(NODES, flow);
    await ready(['m1', 'm2']);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const written = collect(helper.getNode('written'), (m) => m.length >= 2);
    const put = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const putMsg: Msg = { payload: { on: true } };
    helper.getNode('req').receive(putMsg);
    const putMsgs = await put;
    assert.deepEqual(putMsgs.filter((m) => !m.complete).map((m) => m.coap.code), ['2.04', '2.04']);
    const w = await written;
    assert.deepEqual(w.map((m) => m.payload.name).sort(), ['lamp-1', 'lamp-2']);
    for (const m of w) {
      assert.equal(m.payload.on, true);
      assert.equal(m.coap.method, 'PUT');
      assert.equal(m.coap.multicast, true);
      assert.equal(m.coap.origin.address, '127.0.0.1');
    }
    const get = collect(helper.getNode('out2'), (m) => m.some((x) => x.complete));
    const getMsg: Msg = {};
    helper.getNode('get').receive(getMsg);
    const states = (await get).filter((m) => !m.complete).map((m) => m.payload);
    assert.deepEqual(states.sort((a, b) => a.name.localeCompare(b.name)), [{ name: 'lamp-1', on: true }, { name: 'lamp-2', on: true }]);
    await dones.assertOncePer([putMsg._msgid, getMsg._msgid]);
  });

  it('a member that is not writable answers PUT with 4.05, which a group request never sees (RFC 10020 §3.1.2) but a unicast one does', async function () {
    const flow = [client, member(1, { writable: false }), request({ method: 'PUT', contentFormat: 'text/plain', timeout: 0.5 }), { id: 'out', type: 'helper' }, { id: 'written', type: 'helper' }, ...completeWatch(['req'])];
    await helper.load(NODES, flow);
    await ready(['m1']);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const group = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const g: Msg = { payload: 'on' };
    helper.getNode('req').receive(g);
    const gm = await group;
    assert.equal(gm.filter((m) => !m.complete).length, 0);
    // every member rejected it, silently: the completion and the status say "no answer", not a green "0"
    assert.equal(gm.at(-1)!.coap.outcome, 'no answer');
    assert.equal((await statusOf(helper.getNode('req'), (x) => x.fill !== 'blue')).fill, 'yellow');
    const memberPort = (await waitServer('m1')).port;
    const uni = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const u: Msg = { payload: 'on', url: `coap://127.0.0.2:${memberPort}/light` };
    helper.getNode('req').receive(u);
    const um = (await uni).filter((m) => !m.complete);
    assert.equal(um.length, 1);
    assert.equal(um[0].coap.code, '4.05');
    await dones.assertOncePer([g._msgid, u._msgid]);
  });

  it('flow mode: each request reaches the flow with who asked, and a coap-group-response node answers it', async function () {
    const flow = [
      client,
      member(1, { mode: 'flow', wires: [['ch1']] }),
      member(2, { mode: 'flow', wires: [['ch1']] }),
      { id: 'ch1', type: 'change', rules: [{ t: 'set', p: 'payload', pt: 'msg', to: '{"from":coap.path,"method":coap.method}', tot: 'jsonata' }], wires: [['resp']] },
      { id: 'resp', type: 'coap-group-response', code: '2.05', contentFormat: '' },
      request(),
      { id: 'out', type: 'helper' },
      ...completeWatch(['req', 'resp', 'm1', 'm2']),
    ];
    await helper.load(NODES, flow);
    await ready(['m1', 'm2']);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const input: Msg = {};
    helper.getNode('req').receive(input);
    const responses = (await got).filter((m) => !m.complete);
    assert.equal(responses.length, 2);
    for (const r of responses) {
      assert.deepEqual(r.payload, { from: '/light', method: 'GET' });
      assert.equal(r.coap.options['Content-Format'], 50);
    }
    // done: the request node once, the response node once per answer it sent
    await dones.waitFor(3);
    assert.equal(dones.counts.get(input._msgid), 1);
  });

  it('flow mode: a unicast request the flow never answers gets 5.03 after the response timeout', async function () {
    const flow = [client, member(1, { mode: 'flow', responseTimeout: 0.3, wires: [['sink']] }), { id: 'sink', type: 'helper' }, request({ url: '', timeout: 3 }), { id: 'out', type: 'helper' }];
    await helper.load(NODES, flow);
    await ready(['m1']);
    const memberPort = (await waitServer('m1')).port;
    const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const asked = collect(helper.getNode('sink'), (m) => m.length >= 1);
    helper.getNode('req').receive({ url: `coap://127.0.0.2:${memberPort}/light` });
    const [reqMsg] = await asked;
    assert.equal(reqMsg.coap.multicast, false);
    assert.equal(typeof reqMsg._coapReply.id, 'string');
    const res = (await got).filter((m) => !m.complete);
    assert.equal(res[0].coap.code, '5.03');
  });

  it('Observe: a group registration gets a notification from the member whose state the flow changed', async function () {
    const flow = [client, member(1), member(2), request({ timeout: 3, options: JSON.stringify({ Observe: 0 }) }), { id: 'out', type: 'helper' }, { id: 'written', type: 'helper' }];
    await helper.load(NODES, flow);
    await ready(['m1', 'm2']);
    const first = collect(helper.getNode('out'), (m) => m.filter((x) => !x.complete).length >= 2);
    helper.getNode('req').receive({});
    await first;
    const notified = collect(helper.getNode('out'), (m) => m.some((x) => !x.complete && x.payload?.on === 'blinking'));
    helper.getNode('m2').receive({ payload: { name: 'lamp-2', on: 'blinking' } });
    const msgs = await notified;
    const n = msgs.find((x) => x.payload?.on === 'blinking')!;
    assert.equal(n.coap.origin.address, '127.0.0.3');
    assert.equal(typeof n.coap.options.Observe, 'number');
    helper.getNode('req').receive({ cancel: true });
  });

  it('a bad configuration (port "abc", port 70000, leisure "x") fails the node with a red status and errors its input', async function () {
    for (const bad of [{ port: 'abc' }, { port: 70000 }, { groupPort: -1 }, { leisure: 'x' }]) {
      const flow = [member(1, { ...bad, wires: [[]] }), ...completeWatch(['m1'])];
      await helper.load(NODES, flow);
      const m1 = helper.getNode('m1');
      // the status was set during construction; the helper records calls
      assert.ok(callsOf(m1, 'status').some((x) => x.fill === 'red'), `no red status for ${JSON.stringify(bad)}`);
      assert.ok(callsOf(m1, 'error').length > 0, `no error logged for ${JSON.stringify(bad)}`);
      await helper.unload();
    }
  });

  it('a member whose address cannot be bound shows a red status instead of a green one', async function () {
    // 192.0.2.1 (TEST-NET-1, RFC 5737) is not an address of this machine: bind fails, nothing is sent.
    const flow = [member(1, { address: '192.0.2.1' })];
    await helper.load(NODES, flow);
    const s = await statusOf(helper.getNode('m1'), (x) => x.fill === 'red' || x.fill === 'green');
    assert.equal(s.fill, 'red');
  });

  async function waitServer(id: string): Promise<{ address: string; port: number }> {
    const n = helper.getNode(id);
    return n.serverAddress();
  }
});

