// The Node-RED nodes in a real runtime (node-red-node-test-helper) against a lighting group on real loopback
// multicast: what a flow author sees in msg.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { decode, encode } from '../../src/coap/codec';
import { CODES } from '../../src/coap/codes';
import { DoneCounter, Msg, WATCH_NODES, collect, completeWatch } from '../support/flow';
import { closeChecked } from '../support/endpoints';
import { coreNode, nodeRedRuntime } from '../support/node-red-runtime';
import { GROUP_V4, Lamp, freeGroupPort, startLamps } from '../support/lamps';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const endpointNode = require('../../nodes/coap-endpoint');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const groupRequestNode = require('../../nodes/coap-group-request');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const splitterNode = require('../../nodes/coap-response-splitter');
const joinNode = coreNode('sequence/17-split.js');

helper.init(nodeRedRuntime());


/** A group member that answers every request twice (two NON responses, distinct MIDs): a real duplicate. */
async function startChattyServer(groupPort: number, address: string): Promise<{ close(): Promise<void> }> {
  const rx = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  const tx = dgram.createSocket('udp4');
  await new Promise<void>((r) => rx.bind(groupPort, GROUP_V4, () => r()));
  rx.addMembership(GROUP_V4, '127.0.0.1');
  await new Promise<void>((r) => tx.bind(0, address, () => r()));
  tx.setMulticastInterface('127.0.0.1');
  tx.setMulticastTTL(1);
  rx.on('message', (data, rinfo) => {
    const req = decode(data);
    for (const [i, mid] of [0x100, 0x101].entries()) {
      const res = encode({ type: 'NON', code: CODES.CONTENT, messageId: mid, token: req.token, options: [], payload: Buffer.from(`chatty ${i}`) });
      tx.send(res, rinfo.port, rinfo.address);
    }
  });
  return {
    close: async () => {
      await new Promise<void>((r) => rx.close(() => r()));
      await new Promise<void>((r) => tx.close(() => r()));
    },
  };
}

describe('nodes: coap-group-request and coap-response-splitter in a Node-RED runtime', function () {
  let port: number;
  let lamps: Lamp[];

  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(5, { groupPort: port, leisure: 100 });
  });
  after(async function () {
    await closeChecked(lamps.map((l) => l.server));
  });
  afterEach(async function () {
    await helper.unload();
  });

  const endpoint = { id: 'ep', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1', multicastTtl: 1 };

  it('emits one message per lamp with msg.coap.origin and msg.topic, then a completion message', async function () {
    const flow = [
      endpoint,
      { id: 'req', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.6, payloadMode: 'auto', wires: [['out']] },
      { id: 'out', type: 'helper' },
      ...completeWatch(['req']),
    ];
    await helper.load([endpointNode, groupRequestNode, ...WATCH_NODES], flow);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const done = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const input: Msg = { payload: '' };
    helper.getNode('req').receive(input);
    const msgs = await done;
    const responses = msgs.filter((m) => !m.complete);
    const completion = msgs[msgs.length - 1];
    assert.equal(responses.length, 5);
    assert.deepEqual(new Set(responses.map((m) => m.coap.origin.address)), new Set(lamps.map((l) => l.address)));
    for (const m of responses) {
      const lamp = lamps.find((l) => l.address === m.coap.origin.address)!;
      assert.equal(m.topic, `coap://${lamp.address}:${lamp.server.address().port}`);
      assert.equal(m.coap.origin.uri, m.topic);
      assert.equal(m.coap.code, '2.05');
      assert.equal(m.coap.options['Content-Format'], 50);
      assert.deepEqual(m.payload, { name: lamp.name, on: false, brightness: 0 }); // decoded JSON
      assert.equal(m.parts.id, completion.parts.id);
    }
    assert.equal(completion.complete, true);
    assert.equal(completion.payload, undefined);
    assert.equal(completion.coap.responses, 5);
    assert.equal(completion.responders.length, 5);
    assert.equal(completion.parts.count, 5);
    await dones.assertOncePer([input._msgid]);
  });

  it('a stock Join node in automatic mode collects one exchange into an array', async function () {
    const flow = [
      endpoint,
      { id: 'req', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.5, payloadMode: 'auto', wires: [['j1']] },
      { id: 'j1', type: 'join', mode: 'auto', wires: [['out']] },
      { id: 'out', type: 'helper' },
    ];
    await helper.load([endpointNode, groupRequestNode, joinNode], flow);
    const got = collect(helper.getNode('out'), (m) => m.length >= 1);
    helper.getNode('req').receive({});
    const [joined] = await got;
    assert.ok(Array.isArray(joined.payload));
    assert.equal(joined.payload.length, 5);
    assert.deepEqual(joined.payload.map((p: any) => p.name).sort(), lamps.map((l) => l.name).sort());
  });

  it('PUT with a payload changes every lamp; a follow-up to one origin via msg.url reads one lamp back', async function () {
    const flow = [
      endpoint,
      { id: 'req', type: 'coap-group-request', endpoint: 'ep', method: 'PUT', url: `coap://${GROUP_V4}:${port}/light`, contentFormat: 'text/plain', timeout: 0.5, payloadMode: 'auto', wires: [['out']] },
      { id: 'get', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.5, payloadMode: 'auto', wires: [['out2']] },
      { id: 'out', type: 'helper' },
      { id: 'out2', type: 'helper' },
    ];
    await helper.load([endpointNode, groupRequestNode], flow);
    const put = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    helper.getNode('req').receive({ payload: 'on' });
    const putMsgs = await put;
    assert.equal(putMsgs.filter((m) => m.coap.code === '2.04').length, 5);
    assert.ok(lamps.every((l) => l.state.on));
    const target = lamps[3];
    const one = collect(helper.getNode('out2'), (m) => m.some((x) => x.complete));
    helper.getNode('get').receive({ url: `coap://${target.address}:${target.server.address().port}/light` });
    const msgs = await one;
    assert.equal(msgs.length, 2);
    assert.equal(msgs[0].coap.origin.address, target.address);
    assert.equal(msgs[0].coap.type, 'ACK'); // a confirmable unicast request, piggybacked response
    assert.deepEqual(msgs[0].payload, { name: target.name, on: true, brightness: 100 });
    for (const l of lamps) l.state.on = false;
  });

  it('splitter: routes by origin, drops a duplicate from the same server, reports missing members', async function () {
    const chatty = await startChattyServer(port, '127.0.0.30');
    try {
      const members = lamps.slice(0, 4).map((l) => ({ name: l.name, match: l.address }));
      members.push({ name: 'chatty', match: '127.0.0.30' }, { name: 'absent', match: '127.0.0.99' });
      const flow = [
        endpoint,
        { id: 'req', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.6, payloadMode: 'string', wires: [['split']] },
        { id: 'split', type: 'coap-response-splitter', servers: members, dedup: 'first', outputs: members.length + 2, wires: [...members.map((_, i) => [`o${i}`]), ['unknown'], ['report']] },
        ...members.map((_, i) => ({ id: `o${i}`, type: 'helper' })),
        { id: 'unknown', type: 'helper' },
        { id: 'report', type: 'helper' },
      ];
      await helper.load([endpointNode, groupRequestNode, splitterNode], flow);
      const perOutput: Msg[][] = members.map(() => []);
      members.forEach((_, i) => helper.getNode(`o${i}`).on('input', (m: Msg) => perOutput[i].push(m)));
      const unknown: Msg[] = [];
      helper.getNode('unknown').on('input', (m: Msg) => unknown.push(m));
      const report = collect(helper.getNode('report'), (m) => m.length >= 1);
      helper.getNode('req').receive({});
      const [r] = await report;
      for (let i = 0; i < 4; i++) {
        assert.equal(perOutput[i].length, 1, `${members[i].name} output`);
        assert.equal(perOutput[i][0].coap.origin.address, lamps[i].address);
      }
      assert.equal(perOutput[4].length, 1, 'chatty answered twice, the duplicate is dropped');
      assert.equal(perOutput[4][0].payload, 'chatty 0');
      assert.equal(perOutput[5].length, 0);
      assert.equal(unknown.length, 1);
      assert.equal(unknown[0].coap.origin.address, lamps[4].address);
      assert.deepEqual(r.payload.answered.sort(), ['chatty', 'lamp-1', 'lamp-2', 'lamp-3', 'lamp-4']);
      assert.deepEqual(r.payload.missing, ['absent']);
      assert.deepEqual(r.payload.unexpected, [`coap://${lamps[4].address}:${lamps[4].server.address().port}`]);
      assert.equal(r.payload.duplicatesDropped, 1);
      assert.equal(r.payload.responses, 7);
    } finally {
      await chatty.close();
    }
  });

  it('a response after the timeout never reaches the flow', async function () {
    const { GroupServer } = await import('../../src/group/group-server');
    const slow = await GroupServer.open({ address: '127.0.0.40', port: 0, groups: [{ address: GROUP_V4, port }], leisure: 0 });
    // the slow server answers only once the exchange is complete: its response is late by construction
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    slow.addResource('/light', () => released.then(() => ({ code: CODES.CONTENT, payload: 'too late' })));
    try {
      const flow = [
        endpoint,
        { id: 'req', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.4, payloadMode: 'string', wires: [['out']] },
        { id: 'out', type: 'helper' },
      ];
      await helper.load([endpointNode, groupRequestNode], flow);
      const all: Msg[] = [];
      helper.getNode('out').on('input', (m: Msg) => all.push(m));
      const completed = new Promise<void>((r) => helper.getNode('out').on('input', (m: Msg) => m.complete && r()));
      helper.getNode('req').receive({});
      await completed;
      const ep = await helper.getNode('ep').getEndpoint();
      const late = ep.counters.lateGroupResponses;
      const arrived = new Promise<void>((r) => ep.transport.on('datagram', (d: { remote: { address: string } }) => d.remote.address === '127.0.0.40' && setImmediate(r)));
      release();
      await arrived; // the late response reached the node's endpoint, which dropped it
      assert.equal(ep.counters.lateGroupResponses, late + 1);
      assert.equal(all.filter((m) => m.complete).length, 1);
      assert.equal(all.filter((m) => !m.complete).length, 5);
      assert.ok(all.every((m) => m.payload !== 'too late'));
      assert.ok(all.findIndex((m) => m.complete) === all.length - 1);
    } finally {
      await closeChecked(slow);
    }
  });

  it('bad input: an invalid URI is reported through done(err) and a red status, and the node keeps working', async function () {
    const flow = [
      endpoint,
      { id: 'req', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.3, wires: [['out']] },
      { id: 'out', type: 'helper' },
      ...completeWatch(['req']),
    ];
    await helper.load([endpointNode, groupRequestNode, ...WATCH_NODES], flow);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const req = helper.getNode('req');
    const errored = new Promise<any>((resolve) => req.on('call:error', (call: any) => resolve(call)));
    const statuses: any[] = [];
    req.on('call:status', (c: any) => statuses.push(c.args[0]));
    const bad: Msg = { url: 'http://not-coap/x' };
    req.receive(bad);
    const call = await errored;
    assert.match(String(call.args[0]), /unsupported URI scheme/);
    assert.ok(statuses.some((s) => s.fill === 'red'));
    const ok = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const good: Msg = { options: { 'Uri-Query': ['x=1'] } };
    req.receive(good);
    assert.equal((await ok).filter((m) => !m.complete).length, 5);
    await dones.assertOncePer([bad._msgid, good._msgid]); // done(err) once, done() once
  });

  it('msg.cancel stops a running exchange early and completes it', async function () {
    const flow = [
      endpoint,
      { id: 'req', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 30, wires: [['out']] },
      { id: 'out', type: 'helper' },
      ...completeWatch(['req']),
    ];
    await helper.load([endpointNode, groupRequestNode, ...WATCH_NODES], flow);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const done = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const start = Date.now();
    const first: Msg = {};
    const cancel: Msg = { cancel: true };
    helper.getNode('req').receive(first);
    // cancel once the responses are in (an event, not a fixed wait)
    await collect(helper.getNode('out'), (m) => m.filter((x) => !x.complete).length >= 5);
    helper.getNode('req').receive(cancel);
    const msgs = await done;
    assert.ok(Date.now() - start < 5000);
    assert.equal(msgs[msgs.length - 1].coap.cancelled, true);
    await dones.assertOncePer([first._msgid, cancel._msgid]);
  });
});
