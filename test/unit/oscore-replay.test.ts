// Replay protection (RFC 8613 §7.4): the sliding window (RFC 6347 §4.1.2.6 type, default 32) accepts new numbers
// inside and above the window, rejects duplicates and numbers that fell out of it; App. B.1.2 initialization; and
// the client's Notification Number (§7.4.1).

import assert from 'node:assert/strict';
import { NotificationTracker, OscoreError, ReplayWindow } from '../../src/oscore';

function isReplay(err: unknown): boolean {
  return err instanceof OscoreError && err.code === 'ERR_OSCORE_REPLAY';
}

function accept(w: ReplayWindow, seq: number): void {
  w.check(seq);
  w.update(seq);
}

describe('OSCORE replay window (RFC 8613 §7.4)', function () {
  it('defaults to 32 and accepts 0 as the first Partial IV', function () {
    const w = new ReplayWindow();
    assert.equal(w.size, 32);
    assert.equal(w.highest, undefined);
    accept(w, 0);
    assert.equal(w.highest, 0);
  });

  it('rejects a duplicate with 4.01 "Replay detected"', function () {
    const w = new ReplayWindow();
    accept(w, 5);
    assert.throws(
      () => w.check(5),
      (err: unknown) => isReplay(err) && (err as OscoreError).responseCode === 0x81 && (err as OscoreError).diagnostic === 'Replay detected',
    );
  });

  it('accepts new numbers inside the window in any order, once each', function () {
    const w = new ReplayWindow();
    accept(w, 40);
    for (const seq of [39, 20, 35, 41, 38]) accept(w, seq);
    for (const seq of [39, 20, 35, 41, 38, 40]) assert.throws(() => w.check(seq), isReplay, String(seq));
  });

  it('rejects numbers that fell out of the window as too old', function () {
    const w = new ReplayWindow();
    accept(w, 100);
    assert.equal(w.verdict(69), 'ok'); // 100 - 69 = 31 < 32
    assert.equal(w.verdict(68), 'too-old'); // 32 behind
    assert.throws(() => w.check(0), isReplay);
    accept(w, 69);
    assert.equal(w.verdict(69), 'duplicate');
  });

  it('slides: jumping ahead by more than the window forgets everything below', function () {
    const w = new ReplayWindow({ size: 8 });
    for (let s = 0; s < 8; s++) accept(w, s);
    accept(w, 100);
    assert.equal(w.verdict(93), 'ok');
    assert.equal(w.verdict(92), 'too-old');
    assert.equal(w.verdict(7), 'too-old');
  });

  it('keeps the bits of earlier numbers when shifting by less than the window', function () {
    const w = new ReplayWindow({ size: 16 });
    accept(w, 10);
    accept(w, 8);
    accept(w, 15); // shift by 5: 10 and 8 stay marked
    assert.equal(w.verdict(10), 'duplicate');
    assert.equal(w.verdict(8), 'duplicate');
    assert.equal(w.verdict(9), 'ok');
    assert.equal(w.verdict(0), 'ok'); // 15 - 0 = 15 < 16
  });

  it('size is configurable (large windows too) and validated', function () {
    const w = new ReplayWindow({ size: 1024 });
    accept(w, 2000);
    assert.equal(w.verdict(2000 - 1023), 'ok');
    assert.equal(w.verdict(2000 - 1024), 'too-old');
    accept(w, 1500);
    assert.equal(w.verdict(1500), 'duplicate');
    for (const size of [0, -1, 1.5, 1e6]) assert.throws(() => new ReplayWindow({ size }), RangeError);
  });

  it('matches a brute-force model on random sequences', function () {
    for (const size of [1, 7, 32, 64, 100]) {
      const w = new ReplayWindow({ size });
      const seen = new Set<number>();
      let top = -1;
      for (let i = 0; i < 3000; i++) {
        const seq = Math.max(0, top + Math.floor(Math.random() * (size * 2 + 4)) - size - 2);
        const expected = seq > top ? 'ok' : top - seq >= size ? 'too-old' : seen.has(seq) ? 'duplicate' : 'ok';
        assert.equal(w.verdict(seq), expected, `size ${size}, top ${top}, seq ${seq}`);
        if (expected === 'ok') {
          w.update(seq);
          seen.add(seq);
          top = Math.max(top, seq);
        }
      }
    }
  });

  it('App. B.1.2: an uninitialized window is initialized from a fresh request as the lower limit', function () {
    const w = new ReplayWindow({ initialized: false });
    assert.equal(w.initialized, false);
    w.initializeFrom(50);
    assert.equal(w.initialized, true);
    assert.equal(w.verdict(50), 'duplicate');
    assert.equal(w.verdict(49), 'duplicate', 'numbers below the limit may have been used before the reboot');
    assert.equal(w.verdict(51), 'ok');
    w.reset();
    assert.equal(w.initialized, false);
  });
});

describe('OSCORE Notification Number (RFC 8613 §7.4.1)', function () {
  it('is initialized by the first notification and follows the highest Partial IV', function () {
    const t = new NotificationTracker();
    assert.equal(t.notificationNumber, undefined);
    t.check(3);
    assert.deepEqual(t.accept(3), { newest: true });
    assert.equal(t.notificationNumber, 3);
    t.check(7);
    assert.deepEqual(t.accept(7), { newest: true });
    assert.equal(t.notificationNumber, 7);
  });

  it('rejects a Partial IV seen before; accepts an older unseen one as not newest', function () {
    const t = new NotificationTracker();
    t.accept(10);
    assert.throws(() => t.check(10), isReplay);
    t.check(8);
    assert.deepEqual(t.accept(8), { newest: false });
    assert.equal(t.notificationNumber, 10);
    assert.throws(() => t.check(8), isReplay);
  });

  it('onlyNewer drops notifications at or below the Notification Number', function () {
    const t = new NotificationTracker({ onlyNewer: true });
    t.accept(10);
    assert.throws(() => t.check(9), isReplay);
    t.check(11);
  });

  it('accepts at most one response without Partial IV, as the oldest', function () {
    const t = new NotificationTracker();
    t.check(undefined);
    assert.deepEqual(t.accept(undefined), { newest: true });
    assert.throws(() => t.check(undefined), isReplay);
    const u = new NotificationTracker();
    u.accept(4);
    assert.deepEqual(u.accept(undefined), { newest: false });
  });
});
