// ExpiringMap: the duplicate cache (RFC 7252 §4.5) and retired tokens (groupcomm-bis §3.1.5).

import assert from 'node:assert/strict';
import { ExpiringMap } from '../../src/messaging/expiring-map';

describe('ExpiringMap', function () {
  it('forgets entries at their expiry and keeps a replaced entry alive', function () {
    const m = new ExpiringMap<number>();
    m.set('a', 1, 100);
    m.set('b', 2, 200);
    m.set('a', 3, 300); // replaced with a later expiry
    m.sweep(150);
    assert.equal(m.get('a', 150), 3);
    assert.equal(m.get('b', 150), 2);
    m.sweep(250);
    assert.equal(m.get('b', 250), undefined);
    assert.equal(m.size, 1);
    assert.equal(m.has('a', 300), false); // expired at 300 even before a sweep
  });

  it('evicts the oldest beyond its capacity', function () {
    const m = new ExpiringMap<number>(3);
    for (let i = 0; i < 10; i++) m.set(String(i), i, 1000 + i);
    assert.equal(m.size, 3);
    assert.deepEqual([7, 8, 9].map((i) => m.get(String(i), 0)), [7, 8, 9]);
    assert.equal(m.get('6', 0), undefined);
  });

  it('stays small under a long steady stream (the queue is compacted)', function () {
    const m = new ExpiringMap<true>();
    for (let t = 0; t < 200_000; t++) {
      m.sweep(t);
      m.set(String(t), true, t + 100);
    }
    assert.ok(m.size <= 101);
    assert.ok((m as unknown as { queue: unknown[] }).queue.length < 5000);
  });

  it('keeps the total weight within maxWeight, evicting the oldest; weights follow replace, delete, expiry and addWeight', function () {
    const m = new ExpiringMap<number>(Infinity, 100);
    for (let i = 0; i < 10; i++) m.set(String(i), i, 1000 + i, 30);
    assert.equal(m.size, 3); // 3 x 30 <= 100 < 4 x 30
    assert.equal(m.weight, 90);
    assert.equal(m.evicted, 7);
    m.set('9', 9, 2000, 10); // replaced: its old weight no longer counts
    assert.equal(m.weight, 70);
    m.addWeight('8', 50); // 120 > 100: the oldest (7) goes
    assert.equal(m.get('7', 0), undefined);
    assert.equal(m.weight, 90);
    m.delete('8');
    assert.equal(m.weight, 10);
    m.sweep(3000);
    assert.equal(m.weight, 0);
    assert.equal(m.size, 0);
  });
});
