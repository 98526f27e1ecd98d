// Saving and resuming a replay window across a clean restart (RFC 8613 §7.4; App. B.1.2 applies only when the
// window was lost), and the binding table the coap-oscore-layer nodes share per context (§8: Token -> request
// data until the response is handled), with its lazy expiry after EXCHANGE_LIFETIME (RFC 7252 §4.8.2).

import assert from 'node:assert/strict';
import { ReplayWindow } from '../../src/oscore';
import { BindingTable, EXCHANGE_LIFETIME_MS } from '../../nodes/lib/oscore-exchanges';

describe('replay window snapshot / restore (RFC 8613 §7.4)', function () {
  it('a restored window rejects exactly what the saved one rejected', function () {
    const w = new ReplayWindow({ size: 32 });
    for (const n of [0, 1, 2, 5, 40, 38]) w.update(n);
    const state = JSON.parse(JSON.stringify(w.snapshot()));
    const r = new ReplayWindow({ size: 32, initialized: false });
    r.restore(state);
    assert.equal(r.initialized, true);
    assert.equal(r.highest, 40);
    for (let n = 0; n <= 45; n++) assert.equal(r.verdict(n), w.verdict(n), `sequence number ${n}`);
  });

  it('an empty window stays empty; an uninitialized one has no snapshot', function () {
    const fresh = new ReplayWindow();
    const r = new ReplayWindow({ initialized: false });
    r.restore(fresh.snapshot()!);
    assert.equal(r.verdict(0), 'ok');
    assert.equal(new ReplayWindow({ initialized: false }).snapshot(), undefined);
  });

  it('a state from a smaller window marks the positions it did not cover as seen', function () {
    const small = new ReplayWindow({ size: 8 });
    small.update(100);
    const big = new ReplayWindow({ size: 32, initialized: false });
    big.restore(small.snapshot()!);
    assert.equal(big.verdict(99), 'ok', 'inside the old window and unseen');
    assert.equal(big.verdict(92), 'duplicate', 'outside the old window: unknown, so treated as seen');
    assert.equal(big.verdict(60), 'too-old');
  });

  it('refuses a malformed state and keeps its own', function () {
    const w = new ReplayWindow({ initialized: false });
    for (const bad of [null, {}, { size: 32, highest: -2, seen: '1' }, { size: 32, highest: 3, seen: 'xyz' }, { size: 0, highest: 3, seen: '1' }]) {
      assert.throws(() => w.restore(bad as never), RangeError);
    }
    assert.equal(w.initialized, false);
  });
});

describe('binding table of the OSCORE layer nodes', function () {
  it('finds bindings by token, replaces a reused token, expires after EXCHANGE_LIFETIME unless long-lived', function () {
    let now = 1000;
    const t = new BindingTable<string>(() => now);
    const a = Buffer.from('01', 'hex');
    const b = Buffer.from('02', 'hex');
    t.set(a, 'first');
    t.set(a, 'second');
    t.set(b, 'observation', true);
    assert.equal(t.get(a), 'second');
    assert.equal(t.size, 2);
    now += EXCHANGE_LIFETIME_MS;
    assert.equal(t.get(a), undefined);
    assert.equal(t.get(b), 'observation');
  });

  it('is capped: the oldest binding goes first', function () {
    const t = new BindingTable<number>(Date.now, EXCHANGE_LIFETIME_MS, 3);
    for (let i = 0; i < 5; i++) t.set(Buffer.from([i]), i);
    assert.equal(t.size, 3);
    assert.equal(t.get(Buffer.from([0])), undefined);
    assert.equal(t.get(Buffer.from([4])), 4);
  });
});
