// The proxy's shared T' timers (src/proxy/deadlines.ts; groupcomm-proxy-07 §5.2.1 step 6): each item comes due
// exactly at its time on the clock, cancelled items never do and are let go at once, and a flood of cancelled
// entries does not pile up (state a client can create is bounded).

import assert from 'node:assert/strict';
import { Deadlines } from '../../src/proxy/deadlines';
import { FakeClock } from '../support/fake-clock';

describe('proxy deadlines (one timer per T\', groupcomm-proxy-07 §5.2.1 step 6)', function () {
  it('items come due at their own time, in order, across several durations, with one clock timer per duration', function () {
    const clock = new FakeClock();
    const due: string[] = [];
    const d = new Deadlines<string>(clock, (x) => due.push(x));
    d.add('a1', 1000);
    d.add('b5', 5000);
    clock.advance(500);
    d.add('c1', 1000); // due at 1500
    assert.equal(clock.pending, 2, 'one timer for 1 s, one for 5 s');
    clock.advance(499);
    assert.deepEqual(due, []);
    clock.advance(1);
    assert.deepEqual(due, ['a1']);
    clock.advance(500);
    assert.deepEqual(due, ['a1', 'c1']);
    assert.equal(clock.pending, 1);
    clock.advance(4000);
    assert.deepEqual(due, ['a1', 'c1', 'b5']);
    assert.equal(clock.pending, 0, 'no timer left once nothing waits');
    assert.equal(d.size, 0);
  });

  it('a cancelled item never comes due and is let go at once; the others keep their times', function () {
    const clock = new FakeClock();
    const due: object[] = [];
    const d = new Deadlines<object>(clock, (x) => due.push(x));
    const a = {};
    const b = {};
    const da = d.add(a, 1000);
    d.add(b, 1000);
    d.cancel(da);
    d.cancel(da); // twice is harmless
    assert.equal(da.item, undefined, 'the entry no longer holds the item');
    assert.equal(d.size, 1);
    clock.advance(1000);
    assert.deepEqual(due, [b]);
  });

  it('100,000 items added and cancelled keep at most a bounded number of entries, and the live ones still come due', function () {
    const clock = new FakeClock();
    let fired = 0;
    const d = new Deadlines<number>(clock, () => fired++);
    const keep = d.add(-1, 60_000);
    for (let i = 0; i < 100_000; i++) d.cancel(d.add(i, 60_000));
    const queue = keep.queue as unknown as { entries: unknown[]; head: number };
    assert.ok(queue.entries.length - queue.head <= 2 * 1 + 1024 + 1, `${queue.entries.length - queue.head} entries kept for 1 live item`);
    clock.advance(60_000);
    assert.equal(fired, 1);
  });

  it('an item whose handler throws does not stop the other items of that duration from coming due', function () {
    const clock = new FakeClock();
    const due: string[] = [];
    const d = new Deadlines<string>(clock, (x) => {
      if (x === 'bad') throw new Error('handler failed');
      due.push(x);
    });
    d.add('a', 1000);
    d.add('bad', 1000);
    d.add('c', 1000);
    d.add('e', 1000);
    assert.throws(() => clock.advance(1000), /handler failed/);
    assert.deepEqual(due, ['a']);
    assert.equal(clock.pending, 1, 'the timer is armed again for the rest');
    clock.advance(0);
    assert.deepEqual(due, ['a', 'c', 'e'], 'the rest come due at once, without a later add()');
    assert.equal(d.size, 0);
    assert.equal(clock.pending, 0);
  });

  it('close() clears every timer', function () {
    const clock = new FakeClock();
    const d = new Deadlines<number>(clock, () => assert.fail('nothing comes due after close'));
    d.add(1, 1000);
    d.add(2, 2000);
    d.close();
    assert.equal(clock.pending, 0);
    clock.advance(5000);
  });
});
