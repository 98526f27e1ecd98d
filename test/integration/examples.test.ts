// Every example flow, deployed alone in a Node-RED runtime exactly as Import > Examples would give it (only its
// fixed ports moved to free ones, so that parallel runs cannot meet): it brings its own group members, and its
// debug nodes (replaced by test helpers with the same ids) see one message per member.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Msg, collect, statusOf } from '../support/flow';
import { freeGroupPort } from '../support/lamps';
import { coreNode, nodeRedRuntime } from '../support/node-red-runtime';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const helper = require('node-red-node-test-helper');
const root = path.resolve(__dirname, '..', '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const OURS = Object.values<string>(pkg['node-red'].nodes).map((f) => require(path.join(root, f)));
const CORE = ['common/20-inject.js', 'common/90-comment.js', 'common/24-complete.js', 'function/10-switch.js', 'function/15-change.js', 'sequence/17-split.js', 'network/21-httprequest.js'].map((f) => coreNode(f));

helper.init(nodeRedRuntime());

async function freeUnicastPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

function freeTcpPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** fixed port in the example -> the free port the test moved it to */
const ports: Record<number, number> = {};

/** The example as shipped, its fixed ports moved to free ones and its debug nodes turned into helpers. */
async function example(file: string): Promise<Msg[]> {
  let text = fs.readFileSync(path.join(root, 'examples', file), 'utf8');
  const groupPort = await freeGroupPort();
  text = text.replace(/\b5683\b/g, String(groupPort));
  for (const fixed of [5690, 5691, 5692, 5693, 5695, 5696]) {
    ports[fixed] = await freeUnicastPort();
    text = text.replace(new RegExp(`\\b${fixed}\\b`, 'g'), String(ports[fixed]));
  }
  // the HTTP front's TCP port (HTTP example)
  ports[5694] = await freeTcpPort();
  text = text.replace(/\b5694\b/g, String(ports[5694]));
  return JSON.parse(text).map((n: Msg) => (n.type === 'debug' ? { id: n.id, z: n.z, name: n.name, type: 'helper', wires: [] } : n));
}

const byName = (flow: Msg[], name: string) => {
  const n = flow.find((x) => x.name === name);
  if (!n) throw new Error(`no node named ${name}`);
  return helper.getNode(n.id);
};
const responsesFrom = (msgs: Msg[]) => msgs.filter((m) => !m.complete).map((m) => m.coap.origin.address).sort();

describe('examples: each one deployed alone works with nothing else running', function () {
  this.timeout(20000);
  afterEach(async function () {
    await helper.unload();
  });

  it('every example file is covered here', function () {
    const files = fs.readdirSync(path.join(root, 'examples')).filter((f) => f.endsWith('.json'));
    assert.deepEqual(files.sort(), Object.keys(CASES).sort());
  });

  const CASES: Record<string, () => Promise<void>> = {
    'Lighting group - one message per lamp.json': async () => {
      const flow = await example('Lighting group - one message per lamp.json');
      await helper.load([...OURS, ...CORE], flow);
      // the "read all lamps" inject fires once at deploy: no click needed
      const every = await collect(byName(flow, 'every response'), (m) => m.some((x) => x.complete));
      assert.deepEqual(responsesFrom(every), ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7']);
      for (const m of every.filter((x) => !x.complete)) assert.equal(m.payload.on, false);
      // all lamps on: one PUT, six 2.04, six lamp outputs
      const changed = collect(byName(flow, 'lamps changed'), (m) => m.length >= 6);
      const put = collect(byName(flow, 'PUT results'), (m) => m.some((x) => x.complete));
      byName(flow, 'all lamps on').receive({});
      assert.deepEqual((await put).filter((m) => !m.complete).map((m) => m.coap.code), Array(6).fill('2.04'));
      assert.deepEqual((await changed).map((m) => m.payload.on), Array(6).fill(true));
      // the follow-up reads lamp-3 alone
      const again = collect(byName(flow, 'every response'), (m) => m.some((x) => x.complete));
      byName(flow, 'follow-up: lamp-3 only').receive({});
      const one = (await again).filter((m) => !m.complete);
      assert.equal(one.length, 1);
      assert.deepEqual(one[0].payload, { name: 'lamp-3', on: true });
    },
    'Group proxy - forward proxy to a lighting group.json': async () => {
      const flow = await example('Group proxy - forward proxy to a lighting group.json');
      await helper.load([...OURS, ...CORE], flow);
      const relayed = await collect(byName(flow, 'relayed responses'), (m) => m.some((x) => x.complete));
      assert.deepEqual(responsesFrom(relayed), ['127.0.1.2', '127.0.1.3', '127.0.1.4']);
      // Observe through the proxy, then a lamp changes: its notification names it
      const notes = collect(byName(flow, 'notifications'), (m) => m.length >= 3);
      byName(flow, 'observe all lamps via proxy').receive({});
      assert.deepEqual((await notes).map((m) => m.coap.origin.address).sort(), ['127.0.1.2', '127.0.1.3', '127.0.1.4']);
      const changed = collect(byName(flow, 'notifications'), (m) => m.some((x) => x.payload?.on === true));
      byName(flow, 'lamp-2 127.0.1.3').receive({ payload: { name: 'lamp-2', on: true } });
      const n = (await changed).find((x) => x.payload?.on === true)!;
      assert.equal(n.coap.origin.address, '127.0.1.3');
      byName(flow, 'stop observing').receive({});
    },
    'Group proxy - reverse proxy standing in for each lamp.json': async () => {
      const flow = await example('Group proxy - reverse proxy standing in for each lamp.json');
      await helper.load([...OURS, ...CORE], flow);
      const one = collect(byName(flow, 'one lamp via the reverse proxy'), (m) => m.some((x) => x.complete));
      const relayed = await collect(byName(flow, 'relayed (origin.via = proxy)'), (m) => m.some((x) => x.complete));
      assert.deepEqual(responsesFrom(relayed), ['127.0.2.2', '127.0.2.3', '127.0.2.4']);
      const followUp = (await one).filter((m) => !m.complete);
      assert.equal(followUp.length, 1);
      assert.equal(followUp[0].coap.code, '2.05');
      assert.match(followUp[0].payload.name, /^lamp-[123]$/);
      // the follow-up's topic names the lamp, not the proxy that answered for it
      assert.match(followUp[0].topic, /^coap:\/\/127\.0\.2\.[234]:/);
      assert.equal(followUp[0].coap.origin.via.address, '127.0.0.1');
    },
    'Group proxy - chain of two proxies.json': async () => {
      const flow = await example('Group proxy - chain of two proxies.json');
      await helper.load([...OURS, ...CORE], flow);
      const relayed = collect(byName(flow, 'relayed through two proxies'), (m) => m.some((x) => x.complete));
      byName(flow, "T' = 5").receive({});
      assert.deepEqual(responsesFrom(await relayed), ['127.0.3.2', '127.0.3.3', '127.0.3.4']);
    },
    'Group OSCORE - protected lighting group through a proxy, protected alarms.json': async () => {
      const flow = await example('Group OSCORE - protected lighting group through a proxy, protected alarms.json');
      await helper.load([...OURS, ...CORE], flow);
      // the observers register at deploy: listen from the start
      // observer 3 goes through the proxy with a ticket request (multicast-notifications-proxy-02 §4)
      const observers = ['observer 1 notifications', 'observer 2 notifications', 'observer 3 notifications (relayed by the proxy)'];
      const registered = Promise.all(observers.map((o) => collect(byName(flow, o), (m) => m.length >= 1)));
      // every lamp's response verified with its own credential: the signer is the lamp the origin names
      const verified = await collect(byName(flow, 'verified responses (origin.oscore = signer)'), (m) => m.some((x) => x.complete));
      assert.deepEqual(responsesFrom(verified), ['127.0.4.2', '127.0.4.3', '127.0.4.4']);
      for (const m of verified.filter((x) => !x.complete)) {
        assert.deepEqual(m.coap.origin.oscore, { kid: `a${Number(m.coap.origin.address.split('.')[3]) - 1}`, mode: 'group' });
        assert.equal(m.payload.on, false);
      }
      assert.deepEqual(verified.find((x) => x.complete)!.coap.errors, []);
      // protected alarms: both observers get the state, then the ALARM, each verified through the phantom request
      for (const got of await registered) assert.deepEqual(got[0].payload, { alarm: false });
      // the proxy has accepted observer 3's ticket (and listens to the group) once that node says it receives
      await statusOf(byName(flow, 'observer 3 via proxy (ticket)'), (x) => x.text === 'coap-observe-multicast.status.client');
      const alarms = Promise.all(observers.map((o) => collect(byName(flow, o), (m) => m.some((x) => x.payload?.alarm === true))));
      byName(flow, 'ALARM').receive({});
      const vias = (await alarms).map((got) => got.find((x) => x.payload?.alarm === true)!.coap.via);
      assert.deepEqual(vias, ['multicast', 'multicast', 'proxy']);
    },
    'Multicast notifications - alarm server and observers.json': async () => {
      const flow = await example('Multicast notifications - alarm server and observers.json');
      await helper.load([...OURS, ...CORE], flow);
      const observers = ['observer 1 notifications', 'observer 2 notifications', 'observer 3 notifications'];
      // wait until all three registered (each gets the current state first), then raise the alarm
      await Promise.all(observers.map((o) => collect(byName(flow, o), (m) => m.length >= 1)));
      const alarms = Promise.all(observers.map((o) => collect(byName(flow, o), (m) => m.some((x) => x.payload?.alarm === true))));
      byName(flow, 'ALARM').receive({});
      for (const got of await alarms) assert.equal(got.find((x) => x.payload?.alarm === true)!.coap.origin.address, '127.0.0.10');
      // the proxy relaying observer 4's observation says so (never "0 relayed" while it relays)
      const relayed = collect(byName(flow, 'observer 4 notifications (relayed)'), (m) => m.some((x) => x.payload?.alarm === true));
      await relayed;
      const proxyNode = byName(flow, 'proxy :5695 next to the server'.replace('5695', String(ports[5695])));
      const observing = await statusOf(proxyNode, (x) => x.text === 'coap-group-proxy.status.observing');
      assert.equal(observing.fill, 'blue');
      // counting: four observers (three direct, one proxy answering for its client) give an estimate of 4
      const est = collect(byName(flow, 'registrations and estimates'), (m) => m.some((x) => x.topic === 'estimate'));
      byName(flow, 'count observers').receive({});
      const e = (await est).find((x) => x.topic === 'estimate')!;
      assert.deepEqual([e.payload.confirmations, e.payload.estimate, e.payload.count], [4, 4, 4], JSON.stringify(e.payload));
    },
    'HTTP to a CoAP group - http request through the cross-proxy.json': async () => {
      const flow = await example('HTTP to a CoAP group - http request through the cross-proxy.json');
      await helper.load([...OURS, ...CORE], flow);
      const unknown: Msg[] = [];
      byName(flow, 'unknown servers').on('input', (m: Msg) => unknown.push(m));
      // the inject fires once at deploy: http request -> HTTP front -> group -> splitter, one message per lamp
      const perLamp = collect(byName(flow, 'one message per lamp'), (m) => m.length >= 3);
      const report = collect(byName(flow, 'who answered'), (m) => m.length >= 1);
      const msgs = await perLamp;
      assert.deepEqual(msgs.map((m) => m.coap.origin.address).sort(), ['127.0.5.2', '127.0.5.3', '127.0.5.4']);
      // msg.topic names the lamp (from the part's Reply-From), not the proxy or the group
      for (const m of msgs) assert.equal(m.topic, `coap://${m.coap.origin.address}:${m.coap.origin.port}`);
      assert.deepEqual(msgs.map((m) => JSON.parse(m.payload.toString()).name).sort(), ['lamp-1', 'lamp-2', 'lamp-3']);
      const [r] = await report;
      assert.deepEqual(r.payload.missing, []);
      assert.deepEqual(r.payload.answered, ['lamp-1', 'lamp-2', 'lamp-3']);
      assert.deepEqual(unknown, [], 'no part came from a server the splitter does not know');
      // the streamed variant (Prefer: stream): the same three lamps, each once
      const streamed = collect(byName(flow, 'one message per lamp'), (m) => m.length >= 3);
      const report2 = collect(byName(flow, 'who answered'), (m) => m.length >= 1);
      byName(flow, 'streamed (Prefer: stream)').receive({});
      assert.deepEqual((await streamed).map((m) => m.coap.origin.address).sort(), ['127.0.5.2', '127.0.5.3', '127.0.5.4']);
      assert.deepEqual((await report2)[0].payload.missing, []);
    },
  };

  for (const [file, run] of Object.entries(CASES)) it(`${file.replace(/\.json$/, '')}: per-member messages`, run);
});
