// What coap-group-request tells a user when things are not fine (issue 10, "honest status"): silence is a yellow
// "no answer" and a completion that says so, a proxy's 4.xx shows in the status, times are seconds everywhere,
// bad msg fields are errors that name the field, and Reply-From reads as the server it names. The test helper's
// RED._ returns message keys, so statuses are checked by key here and the English texts in the last test.

import assert from 'node:assert/strict';
import { DoneCounter, Msg, Status, WATCH_NODES, callsOf, collect, completeWatch, statusOf } from '../support/flow';
import { GROUP_V4, Lamp, freeGroupPort, startLamps, stopAll } from '../support/lamps';
import { nodeRedRuntime } from '../support/node-red-runtime';
import { startResponderFleet } from '../support/responders';

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

helper.init(nodeRedRuntime());
const NODES = [endpointNode, groupRequestNode, proxyNode, ...WATCH_NODES];


describe('nodes: honest status and errors of coap-group-request', function () {
  this.timeout(15000);
  let port: number;
  let lamps: Lamp[];
  before(async function () {
    port = await freeGroupPort();
    lamps = await startLamps(2, { groupPort: port, leisure: 50, firstHost: 120 });
  });
  after(async function () {
    await stopAll(lamps.map((l) => l.server));
  });
  afterEach(async function () {
    await helper.unload();
  });

  const ep = { id: 'ep', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' };
  const req = (extra: Record<string, unknown> = {}) => ({ id: 'req', type: 'coap-group-request', endpoint: 'ep', method: 'GET', url: `coap://${GROUP_V4}:${port}/light`, timeout: 0.5, payloadMode: 'auto', wires: [['out']], ...extra });

  it('no member answers: yellow "no answer", a completion with outcome "no answer", a warning, done once', async function () {
    const empty = await freeGroupPort(); // nobody listens on this group port
    await helper.load(NODES, [ep, req({ url: `coap://${GROUP_V4}:${empty}/light`, timeout: 0.3 }), { id: 'out', type: 'helper' }, ...completeWatch(['req'])]);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const n = helper.getNode('req');
    const input: Msg = {};
    n.receive(input);
    const [completion] = await got;
    assert.equal(completion.complete, true);
    assert.equal(completion.coap.outcome, 'no answer');
    assert.deepEqual(completion.responders, []);
    const s = await statusOf(n, (x) => x.fill === 'yellow' || x.fill === 'green');
    assert.deepEqual(s, { fill: 'yellow', shape: 'ring', text: 'coap-group-request.status.no-answer' });
    assert.ok(callsOf(n, 'warn').includes('coap-group-request.warn.no-answer'), 'a warning is logged');
    await dones.assertOncePer([input._msgid]);
  });

  it('members answer: green status "answered: 2" (no "1 responses" plurals), outcome "answered"', async function () {
    await helper.load(NODES, [ep, req(), { id: 'out', type: 'helper' }]);
    const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    helper.getNode('req').receive({});
    const msgs = await got;
    assert.equal(msgs.at(-1)!.coap.outcome, 'answered');
    const s = await statusOf(helper.getNode('req'), (x) => x.fill === 'green');
    assert.equal(s.text, 'coap-group-request.status.done');
  });

  it('msg.timeout is in seconds like the dialog: msg.timeout = 1 collects both members (it was 1 ms before)', async function () {
    await helper.load(NODES, [ep, req({ timeout: 30 }), { id: 'out', type: 'helper' }]);
    const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const t0 = Date.now();
    helper.getNode('req').receive({ timeout: 1 });
    const msgs = await got;
    assert.equal(msgs.filter((m) => !m.complete).length, 2);
    const took = Date.now() - t0;
    assert.ok(took >= 900 && took < 5000, `took ${took} ms`);
  });

  it('msg.timeout "300ms" names its unit; a bad msg.timeout is an error naming the field, never "undefined"', async function () {
    await helper.load(NODES, [ep, req({ timeout: 30 }), { id: 'out', type: 'helper' }, ...completeWatch(['req'])]);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const t0 = Date.now();
    const ok: Msg = { timeout: '300ms' };
    helper.getNode('req').receive(ok);
    await got;
    assert.ok(Date.now() - t0 < 3000);
    const n = helper.getNode('req');
    const bads: Msg[] = ['abc', -1, {}].map((timeout) => ({ timeout }));
    for (const m of bads) n.receive(m);
    await dones.assertOncePer([ok._msgid, ...bads.map((m) => m._msgid)]);
    const errs = callsOf(n, 'error').map(String);
    assert.equal(errs.length, 3);
    assert.ok(errs.every((e: string) => /msg\.timeout/.test(e) && !/undefined/.test(e)), errs.join(' | '));
    const reds = callsOf(n, 'status').filter((x: Status) => x.fill === 'red');
    assert.ok(reds.length >= 3 && reds.every((x: Status) => /msg\.timeout/.test(String(x.text)) && x.text!.length <= 32));
  });

  it('a numeric msg.url is an error (it was silently ignored)', async function () {
    await helper.load(NODES, [ep, req(), { id: 'out', type: 'helper' }]);
    const n = helper.getNode('req');
    n.receive({ url: 5683 });
    await statusOf(n, (x) => x.fill === 'red');
    assert.ok(callsOf(n, 'error').some((e) => String(e).includes('coap-group-request.errors.url-type')));
  });

  it('msg.cancel ends a unicast follow-up that is still waiting: a completion with outcome "cancelled", done once each', async function () {
    // a member that hands requests to a flow that never answers (within the test)
    const member = { id: 'm', type: 'coap-group-server', address: '127.0.0.125', port: 0, group: GROUP_V4, groupPort: port, multicastInterface: '127.0.0.1', path: '/slow', leisure: 0.05, mode: 'flow', responseTimeout: 30, wires: [['asked']] };
    await helper.load([...NODES, groupServerNode], [ep, member, { id: 'asked', type: 'helper' }, req({ timeout: 20 }), { id: 'out', type: 'helper' }, ...completeWatch(['req'])]);
    const dones = new DoneCounter(helper.getNode('cmp-out'));
    const memberPort = (await helper.getNode('m').serverAddress()).port;
    const asked = collect(helper.getNode('asked'), (m) => m.length >= 1);
    const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
    const first: Msg = { url: `coap://127.0.0.125:${memberPort}/slow` };
    helper.getNode('req').receive(first);
    await asked; // the request is at the member, waiting for its flow
    const cancel: Msg = { cancel: true };
    helper.getNode('req').receive(cancel);
    const [completion] = await got;
    assert.equal(completion.coap.outcome, 'cancelled');
    assert.equal(completion.coap.responses, 0);
    await dones.assertOncePer([first._msgid, cancel._msgid]);
  });

  describe('through a proxy', function () {
    const flow = (allow: string) => [
      { id: 'pl', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'pu', type: 'coap-endpoint', bindAddress: '127.0.0.1', port: 0, multicastInterface: '127.0.0.1' },
      { id: 'proxy', type: 'coap-group-proxy', listen: 'pl', upstream: 'pu', allow, events: false, wires: [] },
      ep,
      req({ timeout: 2, multicastTimeout: 1 }),
      { id: 'out', type: 'helper' },
    ];
    async function proxyUri(): Promise<string> {
      const e = await helper.getNode('pl').getEndpoint();
      return `coap://127.0.0.1:${e.transport.address().port}`;
    }

    it('Reply-From in msg.coap.options is the server it names ({address, port, uri}), not CBOR bytes', async function () {
      await helper.load(NODES, flow('127.0.0.1'));
      const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
      helper.getNode('req').receive({ proxy: await proxyUri() });
      const responses = (await got).filter((m) => !m.complete);
      assert.equal(responses.length, 2);
      for (const m of responses) {
        const rf = m.coap.options['Reply-From'];
        assert.ok(!Buffer.isBuffer(rf) && rf.type !== 'Buffer');
        assert.deepEqual(rf, { address: m.coap.origin.address, port: m.coap.origin.port, uri: m.coap.origin.uri });
      }
    });

    it('a proxy that refuses (4.01) shows in the status and the completion outcome', async function () {
      await helper.load(NODES, flow('127.0.0.250'));
      const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
      helper.getNode('req').receive({ proxy: await proxyUri() });
      const [completion] = await got;
      assert.equal(completion.coap.outcome, 'proxy error');
      const s = await statusOf(helper.getNode('req'), (x) => x.fill === 'red');
      assert.equal(s.text, 'coap-group-request.status.proxy-error');
      assert.equal(completion.coap.errors[0].code, '4.01');
    });
  });

  it('more servers answer than "Max responses" keeps: the rest are dropped, a warning names the cap once, the completion counts them (coap.limited), the status is yellow', async function () {
    const fleetPort = await freeGroupPort();
    const fleet = await startResponderFleet({ group: GROUP_V4, groupPort: fleetPort, members: 6 });
    try {
      await helper.load(NODES, [ep, req({ url: `coap://${GROUP_V4}:${fleetPort}/x`, maxResponses: '3' }), { id: 'out', type: 'helper' }]);
      const got = collect(helper.getNode('out'), (m) => m.some((x) => x.complete));
      const n = helper.getNode('req');
      n.receive({});
      const msgs = await got;
      assert.equal(msgs.filter((m) => !m.complete).length, 3);
      const completion = msgs.at(-1)!;
      assert.equal(completion.coap.responses, 3);
      assert.deepEqual(completion.coap.limited, { dropped: 3, kinds: ['responses'] });
      const s = await statusOf(n, (x) => x.fill === 'yellow');
      assert.deepEqual(s, { fill: 'yellow', shape: 'dot', text: 'coap-group-request.status.limited' });
      assert.equal(callsOf(n, 'warn').filter((w: unknown) => w === 'coap-group-request.warn.limit').length, 1);
    } finally {
      await fleet.close();
    }
  });

  it('the English status texts are short, and say "no answer" and "answered: N" without plurals to get wrong', function () {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const texts = require('../../nodes/locales/en-US/coap-group-request.json')['coap-group-request'].status;
    const render = (t: string) => t.replace(/__\w+__/g, '1000');
    for (const t of Object.values<string>(texts)) assert.ok(render(t).length <= 24, `${t} is too long for a status`);
    assert.equal(texts['no-answer'], 'no answer');
    assert.equal(render(texts.done), 'answered: 1000');
    assert.match(texts['proxy-error'], /__code__/);
  });
});
