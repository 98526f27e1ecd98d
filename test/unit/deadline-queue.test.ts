// DeadlineQueue: one clock timer for many deadlines (RFC 7252 §4.2 retransmissions, §5.2.2 waits, groupcomm-bis §3.1
// group deadlines), driven by the injected FakeClock.

import assert from 'node:assert/strict';
import { Deadline, DeadlineQueue } from '../../src/messaging/deadline-queue';
import { Clock } from '../../src/messaging/parameters';
import { FakeClock } from '../support/fake-clock';

interface Item extends Deadline {
  name: string;
}
const item = (name: string): Item => ({ name });

describe('DeadlineQueue', function () {
  it('fires every entry once, in the order of its due time, at that time', function () {
    const clock = new FakeClock();
    const fired: string[] = [];
    const q = new DeadlineQueue<Item>(clock, (e) => fired.push(`${e.name}@${clock.now() - 1_700_000_000_000}`));
    q.add(item('c'), 300);
    q.add(item('a'), 100);
    q.add(item('d'), 400);
    q.add(item('b'), 200);
    clock.advance(250);
    assert.deepEqual(fired, ['a@100', 'b@200']);
    clock.advance(1000);
    assert.deepEqual(fired, ['a@100', 'b@200', 'c@300', 'd@400']);
    assert.equal(q.size, 0);
  });

  it('a removed entry never fires, and re-adding an entry moves its deadline', function () {
    const clock = new FakeClock();
    const fired: string[] = [];
    const q = new DeadlineQueue<Item>(clock, (e) => fired.push(e.name));
    const a = item('a');
    const b = item('b');
    const c = item('c');
    q.add(a, 100);
    q.add(b, 200);
    q.add(c, 300);
    q.remove(b);
    q.remove(b); // twice is harmless
    q.add(a, 500); // moved behind c
    assert.equal(q.has(b), false);
    clock.advance(1000);
    assert.deepEqual(fired, ['c', 'a']);
  });

  it('keeps at most one clock timer, and none once it is empty (nothing holds the process open)', function () {
    const clock = new FakeClock();
    const q = new DeadlineQueue<Item>(clock, () => undefined);
    const items = Array.from({ length: 50 }, (_, i) => item(String(i)));
    items.forEach((e, i) => q.add(e, 1000 - i * 10)); // every new entry is the earliest so far
    assert.equal(clock.pending, 1);
    for (const e of items) q.remove(e);
    assert.equal(q.size, 0);
    assert.equal(clock.pending, 0);
    q.add(item('x'), 10);
    q.clear();
    assert.equal(clock.pending, 0);
  });

  it('a timer that fires before the clock reaches the deadline re-arms for the rest instead of firing early', function () {
    // a clock whose timers run early by 5 ms (real timers and Date.now() are not the same clock)
    let t = 0;
    const timers: { at: number; fn: () => void }[] = [];
    const early: Clock = {
      now: () => t,
      setTimeout: (fn, ms) => {
        const h = { at: t + ms - 5, fn };
        timers.push(h);
        return h;
      },
      clearTimeout: (h) => {
        const i = timers.indexOf(h as (typeof timers)[number]);
        if (i >= 0) timers.splice(i, 1);
      },
    };
    const fired: number[] = [];
    const q = new DeadlineQueue<Item>(early, () => fired.push(t));
    q.add(item('a'), 100);
    const run = () => {
      timers.sort((x, y) => x.at - y.at);
      const h = timers.shift()!;
      t = Math.max(t, h.at);
      h.fn();
    };
    run(); // at 95: not due, re-armed
    assert.deepEqual(fired, []);
    assert.equal(timers.length, 1);
    t = 100;
    timers[0].at = 100;
    run();
    assert.deepEqual(fired, [100]);
    assert.equal(timers.length, 0);
  });

  it('a throwing fire() does not strand the entries behind it, and a duration that is not a finite number is refused', function () {
    const clock = new FakeClock();
    const fired: string[] = [];
    const q = new DeadlineQueue<Item>(clock, (e) => {
      if (e.name === 'bad') throw new Error('listener failed');
      fired.push(e.name);
    });
    q.add(item('bad'), 100);
    q.add(item('b'), 100);
    q.add(item('c'), 200);
    assert.throws(() => clock.advance(150), /listener failed/);
    clock.advance(100);
    assert.deepEqual(fired, ['b', 'c']);
    assert.equal(q.size, 0);
    assert.throws(() => q.add(item('nan'), NaN), RangeError);
    assert.throws(() => q.add(item('neg'), -1), RangeError);
    assert.throws(() => q.add(item('inf'), Infinity), RangeError);
    assert.equal(q.size, 0);
  });
});
