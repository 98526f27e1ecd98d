// The group view's state (nodes/lib/group-view.ts) on its own, with a fake clock and a recording comms: what a
// sender can make it keep is bounded, updates are throttled, and "missing" means missing from the same target.

import assert from 'node:assert/strict';
import { FakeClock } from '../support/fake-clock';
import { GroupView, MAX_EXCHANGES, MAX_MEMBERS, NodeView, PUBLISH_INTERVAL } from '../../nodes/lib/group-view';

function setup() {
  const clock = new FakeClock();
  const sent: { topic: string; data: NodeView | null; retain?: boolean }[] = [];
  const view = new GroupView({ comms: { publish: (topic, data, retain) => sent.push({ topic, data: data as NodeView | null, retain }) } }, { id: 'n1', name: 'kitchen' }, 'request', clock);
  return { clock, sent, view };
}

describe('group view state (the sidebar tab\'s data)', function () {
  it('latency is the time from the request to a member\'s first response; repeats are counted, not re-timed', function () {
    const { clock, sent, view } = setup();
    view.started('a', 'coap://224.0.1.187/light');
    clock.advance(40);
    view.response('a', 'coap://127.0.0.2', '2.05');
    clock.advance(30);
    view.response('a', 'coap://127.0.0.2', '2.05');
    view.response('a', 'coap://127.0.0.3', '4.04');
    view.ended('a');
    clock.advance(PUBLISH_INTERVAL);
    assert.equal(sent.length, 1, 'one update for the whole burst');
    const ex = sent[0].data!.exchanges[0];
    assert.deepEqual(ex.cells, [
      { member: 'coap://127.0.0.2', code: '2.05', latency: 40, count: 2 },
      { member: 'coap://127.0.0.3', code: '4.04', latency: 70, count: 1 },
    ]);
    assert.equal(sent[0].topic, 'coap-group-view/n1');
    assert.equal(sent[0].retain, true);
  });

  it('missing: members that answered an earlier exchange to the same target, not to another one', function () {
    const { clock, sent, view } = setup();
    view.started('a', 'coap://224.0.1.187/light');
    view.response('a', 'coap://127.0.0.2', '2.05');
    view.response('a', 'coap://127.0.0.3', '2.05');
    view.ended('a');
    view.started('b', 'coap://224.0.1.188/other');
    view.response('b', 'coap://127.0.0.9', '2.05');
    view.ended('b');
    view.started('c', 'coap://224.0.1.187/light');
    view.response('c', 'coap://127.0.0.3', '2.05');
    view.ended('c', { errors: [{ code: '5.04', error: 'proxy timeout' }] });
    clock.advance(PUBLISH_INTERVAL);
    const [a, b, c] = sent.at(-1)!.data!.exchanges;
    assert.deepEqual(a.missing, []);
    assert.deepEqual(b.missing, []);
    assert.deepEqual(c.missing, ['coap://127.0.0.2']);
    assert.deepEqual(c.errors, [{ code: '5.04', reason: 'proxy timeout' }]);
  });

  it(`bounded: ${MAX_EXCHANGES} exchanges, ${MAX_MEMBERS} members per exchange (the rest counted), responses to forgotten exchanges ignored`, function () {
    const { clock, sent, view } = setup();
    for (let i = 0; i < MAX_EXCHANGES + 5; i++) view.started(`x${i}`, 't');
    for (let m = 0; m < MAX_MEMBERS + 10; m++) view.response(`x${MAX_EXCHANGES + 4}`, `coap://10.0.${m >> 8}.${m & 255}`, '2.05');
    view.response('x0', 'coap://127.0.0.2', '2.05');
    view.error(`x${MAX_EXCHANGES + 4}`, '4.01', 'x'.repeat(1000));
    clock.advance(PUBLISH_INTERVAL);
    const data = sent.at(-1)!.data!;
    assert.equal(data.exchanges.length, MAX_EXCHANGES);
    assert.equal(data.exchanges[0].id, 'x5', 'the oldest are dropped');
    const last = data.exchanges.at(-1)!;
    assert.equal(last.cells.length, MAX_MEMBERS);
    assert.equal(last.overflow, 10);
    assert.ok(last.errors[0].reason.length <= 120, 'reasons are cut');
  });

  it('a proxy\'s events: one exchange per client and token, counters with rate-limited = rate drops + 4.29 refusals', function () {
    const { clock, sent, view } = setup();
    const client = { address: '127.0.0.1', port: 40000 };
    const counters = { relayed: 1, rejected: 1, rateDropped: 2 };
    view.proxyEvent({ kind: 'request', client, token: '01', target: 'coap://224.0.1.187/light' }, counters, 1);
    view.proxyEvent({ kind: 'response', client, token: '01', code: '2.05', origin: { address: '127.0.0.2', port: 5683 } }, counters, 1);
    view.proxyEvent({ kind: 'reject', client, token: '02', code: '4.29', reason: 'too many pending exchanges' }, counters, 1);
    view.proxyEvent({ kind: 'end', client, token: '01' }, counters, 0);
    clock.advance(PUBLISH_INTERVAL);
    const data = sent.at(-1)!.data!;
    assert.deepEqual(data.counters, { active: 0, relayed: 1, rejected: 1, rateLimited: 3 });
    assert.equal(data.exchanges.length, 2);
    assert.equal(data.exchanges[0].client, 'coap://127.0.0.1:40000');
    assert.deepEqual(data.exchanges[0].cells.map((c) => c.member), ['coap://127.0.0.2:5683']);
    assert.equal(data.exchanges[1].errors[0].code, '4.29');
    assert.ok(data.exchanges.every((e) => e.ended));
  });

  it('close: a pending update is sent at once (or an empty one when the node was removed), then nothing more and no timer', function () {
    const a = setup();
    a.view.started('a', 't');
    a.view.close(false);
    assert.equal(a.sent.length, 1);
    assert.equal(a.clock.pending, 0);
    a.view.started('b', 't');
    a.clock.advance(PUBLISH_INTERVAL * 2);
    assert.equal(a.sent.length, 1);

    const b = setup();
    b.view.started('a', 't');
    b.view.close(true);
    assert.deepEqual(b.sent, [{ topic: 'coap-group-view/n1', data: null, retain: false }]);
    assert.equal(b.clock.pending, 0);
  });
});
